"""Dataset validation throughput: droptune's validator against a naive baseline, side by side.

Generates a synthetic chat JSONL of --size-mb in a temp dir, then measures, each in a fresh child
process so peak RSS is its own: (a) the baseline, json.loads per line plus key checks; (b)
validate_dataset. Prints MB/s, examples/s, peak RSS and the ratio.

    python bench/validate_throughput.py --size-mb 200
    python bench/validate_throughput.py --size-mb 1024   # the 1 GB case
"""

import argparse
import io
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def generate(path: Path, size_mb: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    target = size_mb * 1024 * 1024
    written = 0
    lines = 0
    with path.open("wb") as out:
        while written < target:
            block = []
            for _ in range(1000):
                user = " ".join(rng.choices(WORDS, k=rng.randint(20, 200)))
                answer = " ".join(rng.choices(WORDS, k=rng.randint(20, 200)))
                example = {
                    "messages": [
                        {"role": "system", "content": "You are helpful."},
                        {"role": "user", "content": user},
                        {"role": "assistant", "content": answer},
                    ]
                }
                block.append(json.dumps(example))
            data = ("\n".join(block) + "\n").encode()
            out.write(data)
            written += len(data)
            lines += len(block)
    return lines


def run_baseline(path: Path) -> int:
    """What a careful user script does: json.loads per line and the key checks."""
    examples = 0
    with path.open("rb") as stream:
        for raw in stream:
            example = json.loads(raw)
            messages = example["messages"]
            for message in messages:
                if "role" not in message or not message.get("content"):
                    raise ValueError("bad message")
            examples += 1
    return examples


def run_droptune(path: Path) -> int:
    sys.path.insert(0, str(ROOT / "shared"))
    from droptune.datasets import resolve_options, validate_dataset

    options = resolve_options({"base_model": "meta/llama3_1@llama-3.1-8b"}, {}, None)
    with path.open("rb", buffering=0) as raw:
        report = validate_dataset(io.BufferedReader(raw), options=options, source_name=str(path))
    assert report.valid, report.summary()
    return report.training.counts.examples


def measure(kind: str, path: Path) -> None:
    """Child mode: run one validator and print its figures as JSON."""
    start = time.perf_counter()
    examples = run_baseline(path) if kind == "baseline" else run_droptune(path)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "examples": examples, "peak_rss_mib": peak_kib / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--measure", choices=["baseline", "droptune"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.path)
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.jsonl"
        lines = generate(path, args.size_mb)
        size_mb = path.stat().st_size / (1024 * 1024)
        print(f"dataset: {size_mb:.0f} MB, {lines} chat examples, python {sys.version.split()[0]}")
        results = {}
        for kind in ("baseline", "droptune"):
            child = subprocess.run(
                [sys.executable, __file__, "--measure", kind, "--path", str(path)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[kind] = json.loads(child.stdout)
        print(f"{'validator':<44} {'MB/s':>8} {'examples/s':>12} {'peak RSS MiB':>13} {'seconds':>8}")
        labels = {
            "baseline": "baseline (json.loads per line + key checks)",
            "droptune": "droptune validate_dataset",
        }
        for kind, figures in results.items():
            print(
                f"{labels[kind]:<44} {size_mb / figures['seconds']:>8.1f} "
                f"{figures['examples'] / figures['seconds']:>12.0f} {figures['peak_rss_mib']:>13.1f} "
                f"{figures['seconds']:>8.2f}"
            )
        ratio = results["baseline"]["seconds"] / results["droptune"]["seconds"]
        print(f"droptune speed relative to baseline: {ratio:.2f}x")


if __name__ == "__main__":
    main()
