"""Exact token counts from a Hugging Face `tokenizer.json` (issue 3, §4).

A custom base model folder (and the stand-in's local models) carries the model's own tokenizer in
Hugging Face layout; with it the report counts tokens exactly instead of estimating them. The
`tokenizers` package is imported only when a tokenizer is actually loaded, so nothing else in the
library pays for it.
"""

from pathlib import Path

from droptune.datasets.tokens import TokenCounter

TOKENIZER_FILE_NAME = "tokenizer.json"
# A bound on what a function downloads and holds in memory for one validation: the largest
# tokenizer.json files of the catalog's models (Gemma 3's, with its 262k-entry vocabulary) are
# about 33 MB, so twice that leaves room without letting an arbitrary object exhaust memory.
MAX_TOKENIZER_BYTES = 64 * 1024 * 1024
_GIT_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


class TokenizerFileError(ValueError):
    """The bytes are not a tokenizer.json that can be loaded here; the message says why."""


def find_tokenizer_file(path: Path) -> Path | None:
    """The tokenizer.json of a model folder in Hugging Face layout, or `path` itself when it is a
    file; None when there is none."""
    if path.is_dir():
        candidate = path / TOKENIZER_FILE_NAME
        return candidate if candidate.is_file() else None
    return path if path.is_file() else None


def read_tokenizer_file(path: Path) -> tuple[Path, bytes] | None:
    """The tokenizer.json at `path` (the file itself, or in a model folder) and its bytes; None
    when there is none. Raises TokenizerFileError, before reading, for a file over the bound."""
    found = find_tokenizer_file(path)
    if found is None:
        return None
    if found.stat().st_size > MAX_TOKENIZER_BYTES:
        raise TokenizerFileError(
            f"{found} is larger than {MAX_TOKENIZER_BYTES >> 20} MiB: not a tokenizer.json"
        )
    return found, found.read_bytes()


def token_counter_from_json(data: bytes) -> TokenCounter:
    """A counter of the tokens the model sees for a text, without special tokens (BOS/EOS and
    chat-template tokens are the service's to add, and the report says they are not counted)."""
    if len(data) > MAX_TOKENIZER_BYTES:
        raise TokenizerFileError(
            f"The tokenizer file is {len(data)} bytes, over the {MAX_TOKENIZER_BYTES >> 20} MiB droptune "
            "loads; use the model's tokenizer.json."
        )
    if data.startswith(_GIT_LFS_POINTER):
        raise TokenizerFileError(
            "The tokenizer file is a Git LFS pointer, not the file itself; fetch it with `git lfs pull`."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TokenizerFileError(
            f"The tokenizer file is not UTF-8 JSON (byte {error.start}); "
            "expected a Hugging Face tokenizer.json."
        ) from None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TokenizerFileError(
            "Exact token counts need the tokenizers package: pip install tokenizers"
        ) from None
    try:
        tokenizer = Tokenizer.from_str(text)
    # The Rust binding raises a bare Exception for every parse and schema error.
    except Exception as error:  # noqa: BLE001
        raise TokenizerFileError(f"Not a loadable Hugging Face tokenizer.json: {error}.") from None
    # A tokenizer.json may enable truncation or padding; either would make every count wrong
    # (an over-long example would look short), so both are switched off.
    tokenizer.no_truncation()
    tokenizer.no_padding()

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    return count_tokens
