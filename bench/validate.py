"""Dataset validation speed and memory: droptune's validator against a naive baseline, side by side
(issue 3 §9).

For each format (chat messages, prompt/completion) and each size, generates a synthetic JSONL in a
temp dir, then measures, each in a fresh child process so peak RSS is its own: (a) the baseline,
json.loads per line plus the key checks a careful script does; (b) validate_dataset, every check
and the report. The clock starts after the imports and the option resolution, for both: it times
reading and checking the file, not the interpreter's start. Prints MB/s, examples/s, peak RSS and
the speed ratio.

    python bench/validate.py                      # 100 MB of each format
    python bench/validate.py --sizes 100,1024     # and the 1 GB case
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("chat", "prompt_completion")
WORDS = [
    "the",
    "model",
    "learns",
    "to",
    "answer",
    "questions",
    "about",
    "tuning",
    "data",
    "sets",
    "with",
    "care",
    "and",
    "speed",
]


def make_example(rng: random.Random, fmt: str) -> dict[str, object]:
    question = " ".join(rng.choices(WORDS, k=rng.randint(20, 200)))
    answer = " ".join(rng.choices(WORDS, k=rng.randint(20, 200)))
    if fmt == "chat":
        return {
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
            ]
        }
    return {"prompt": question, "completion": answer}


def generate(path: Path, fmt: str, size_mb: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    target = size_mb * 1024 * 1024
    written = 0
    lines = 0
    with path.open("wb") as out:
        while written < target:
            block = [json.dumps(make_example(rng, fmt)) for _ in range(1000)]
            data = ("\n".join(block) + "\n").encode()
            out.write(data)
            written += len(data)
            lines += len(block)
    return lines


def run_baseline(path: Path, fmt: str) -> int:
    """What a careful user script does: json.loads per line and the key checks."""
    examples = 0
    with path.open("rb") as stream:
        for raw in stream:
            example = json.loads(raw)
            if fmt == "chat":
                for message in example["messages"]:
                    if "role" not in message or not message.get("content"):
                        raise ValueError("bad message")
            elif not example.get("prompt") or not example.get("completion"):
                raise ValueError("bad example")
            examples += 1
    return examples


def measure(kind: str, fmt: str, path: Path) -> None:
    """Child mode: run one validator and print its figures as JSON."""
    if kind == "baseline":
        start = time.perf_counter()
        examples = run_baseline(path, fmt)
    else:
        sys.path.insert(0, str(ROOT / "shared"))
        from droptune.datasets import resolve_options, validate_dataset

        options = resolve_options({"base_model": "meta/llama3_1@llama-3.1-8b"}, {}, None)
        start = time.perf_counter()
        with path.open("rb") as stream:
            report = validate_dataset(stream, options=options, source_name=str(path))
        assert report.valid, report.summary()
        examples = report.training.counts.examples
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "examples": examples, "peak_rss_mib": peak_kib / 1024}))


def run_child(kind: str, fmt: str, path: Path) -> dict[str, float]:
    child = subprocess.run(
        [sys.executable, __file__, "--measure", kind, "--format", fmt, "--path", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, float] = json.loads(child.stdout)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100", help="comma-separated sizes in MB (default: 100)")
    parser.add_argument(
        "--formats", default=",".join(FORMATS), help="comma-separated, of: " + ", ".join(FORMATS)
    )
    parser.add_argument("--measure", choices=["baseline", "droptune"], help=argparse.SUPPRESS)
    parser.add_argument("--format", choices=FORMATS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.format, args.path)
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    formats = args.formats.split(",")
    print(f"python {sys.version.split()[0]}; each figure from its own child process")
    header = (
        f"{'format':<18} {'size MB':>7} {'examples':>9} | {'baseline MB/s':>13} {'RSS MiB':>8} | "
        f"{'droptune MB/s':>13} {'RSS MiB':>8} | {'ratio':>5}"
    )
    print(header)
    for fmt in formats:
        for size in sizes:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{fmt}.jsonl"
                lines = generate(path, fmt, size)
                size_mb = path.stat().st_size / (1024 * 1024)
                base = run_child("baseline", fmt, path)
                ours = run_child("droptune", fmt, path)
            assert base["examples"] == ours["examples"] == lines
            print(
                f"{fmt:<18} {size_mb:>7.0f} {lines:>9} | {size_mb / base['seconds']:>13.1f} "
                f"{base['peak_rss_mib']:>8.1f} | {size_mb / ours['seconds']:>13.1f} "
                f"{ours['peak_rss_mib']:>8.1f} | {base['seconds'] / ours['seconds']:>5.2f}",
                flush=True,
            )
    print("ratio: droptune's speed / the baseline's (above 1: droptune is faster)")


if __name__ == "__main__":
    main()
