"""Streaming line reader for JSONL datasets: constant memory whatever the file size (issue 3, §5).

The reader splits bytes, not text: decoding and JSON parsing happen per line in the caller, so a
bad byte is reported with its line and offset instead of aborting the whole file. It accepts the
line endings people actually upload (LF, CRLF, lone CR), a UTF-8 BOM, blank lines and a last line
without a newline, and records each of them so the report can mention them.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

UTF8_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 20
# One example with a few inline data: images is a few MB; 32 MiB bounds memory for a file that
# has no line breaks at all (a binary file, or one giant JSON document) without rejecting any
# realistic example.
MAX_LINE_BYTES = 32 << 20
SNIFF_BYTES = 4096

# (line number, byte offset of the line in the file, the line without its terminator; None when
# the line was longer than the reader's limit and was skipped)
RawLine = tuple[int, int, bytes | None]


@dataclass(frozen=True)
class ContentProblem:
    """A file that is not JSONL at all: one clear error instead of one per line."""

    code: str
    message: str
    remedy: str


_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed", "Decompress it (gunzip FILE) and upload the .jsonl itself."),
    (b"PK\x03\x04", "a ZIP archive", "Extract the .jsonl from the archive and upload it."),
    (b"BZh", "bzip2-compressed", "Decompress it (bunzip2 FILE) and upload the .jsonl itself."),
    (b"\xfd7zXZ\x00", "xz-compressed", "Decompress it (unxz FILE) and upload the .jsonl itself."),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "Decompress it (unzstd FILE) and upload the .jsonl itself."),
    (b"PAR1", "a Parquet file", "Convert it to JSONL: one JSON object per line, UTF-8."),
    (b"\xff\xfe", "UTF-16 (little-endian) text", "Re-save the file as UTF-8 without BOM."),
    (b"\xfe\xff", "UTF-16 (big-endian) text", "Re-save the file as UTF-8 without BOM."),
)


def sniff_content(head: bytes) -> ContentProblem | None:
    """Recognise, from the first bytes, a file that cannot be JSONL (M1.3: one example per line)."""
    for magic, what, remedy in _MAGIC:
        if head.startswith(magic):
            return ContentProblem("not_jsonl_binary", f"The file is {what}, not JSONL text.", remedy)
    if b"\x00" in head[:SNIFF_BYTES]:
        return ContentProblem(
            "not_jsonl_binary",
            "The file holds NUL bytes: it is binary, or text in UTF-16/UTF-32, not UTF-8 JSONL.",
            "Upload a UTF-8 text file with one JSON object per line.",
        )
    text = head.removeprefix(UTF8_BOM).lstrip()
    if text.startswith(b"["):
        return ContentProblem(
            "json_array_not_jsonl",
            "The file is a JSON array ([ {...}, {...} ]), not JSONL.",
            "Write one JSON object per line with no enclosing brackets, e.g. "
            "jq -c '.[]' data.json > data.jsonl",
        )
    return None


@dataclass
class ReadingFacts:
    """What the reader saw about the file's shape, for the report."""

    bytes_read: int = 0
    bom: bool = False
    crlf_lines: int = 0
    lone_cr_lines: int = 0
    first_lone_cr_line: int | None = None
    ends_with_newline: bool = True
    overlong_lines: int = 0


class LineReader:
    """Iterate over the lines of a binary stream, reading it in fixed-size chunks.

    The first chunk is read on construction so the caller can sniff it (`head`) before iterating.
    """

    def __init__(
        self, stream: BinaryIO, *, chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = MAX_LINE_BYTES
    ) -> None:
        self._stream = stream
        self._chunk_bytes = chunk_bytes
        self._max_line_bytes = max_line_bytes
        self.head = stream.read(chunk_bytes)
        self.facts = ReadingFacts()

    # The hot loop of a 1 GB file: kept in one function on purpose (no per-line calls).
    def __iter__(self) -> Iterator[RawLine]:  # noqa: PLR0912, PLR0915
        facts = self.facts
        chunk = self.head
        offset = 0  # file offset of the first byte of `pending`
        number = 0
        pending = b""
        skipping = False  # inside a line longer than the limit: drop bytes up to the next LF
        if chunk.startswith(UTF8_BOM):
            facts.bom = True
            chunk = chunk[len(UTF8_BOM) :]
            offset = len(UTF8_BOM)
        facts.bytes_read = offset
        while chunk:
            facts.bytes_read += len(chunk)
            data = pending + chunk if pending else chunk
            parts = data.split(b"\n")
            pending = parts.pop()
            if skipping and parts:
                offset += len(parts[0]) + 1
                del parts[0]
                skipping = False
            if b"\r" in data:
                for part in parts:
                    for raw in self._split_carriage_returns(part, number + 1, offset):
                        number = raw[0]
                        yield raw
                    offset += len(part) + 1
            else:
                # The common case, kept lean: LF-terminated lines with no CR anywhere.
                for part in parts:
                    number += 1
                    yield number, offset, part
                    offset += len(part) + 1
            if len(pending) > self._chunk_bytes and b"\r" in pending[:-1]:
                # No LF for a whole chunk but CRs: lone-CR line endings. Emit the complete lines
                # now; a CR at the very end may be half of a CRLF split across chunks, keep it.
                cut = pending.rfind(b"\r", 0, len(pending) - 1)
                for raw in self._split_carriage_returns(
                    pending[:cut], number + 1, offset, cr_terminated=True
                ):
                    number = raw[0]
                    yield raw
                offset += cut + 1
                pending = pending[cut + 1 :]
            if skipping:
                offset += len(pending)
                pending = b""
            elif len(pending) > self._max_line_bytes:
                number += 1
                facts.overlong_lines += 1
                yield number, offset, None
                offset += len(pending)
                pending = b""
                skipping = True
            chunk = self._stream.read(self._chunk_bytes)
        if pending and not skipping:
            if pending.endswith(b"\r"):  # the file ends with a lone CR: a terminator, not data
                yield from self._split_carriage_returns(pending[:-1], number + 1, offset, cr_terminated=True)
            else:
                facts.ends_with_newline = False
                yield from self._split_carriage_returns(pending, number + 1, offset)

    def _split_carriage_returns(
        self, part: bytes, number: int, offset: int, *, cr_terminated: bool = False
    ) -> Iterator[RawLine]:
        """One piece ended by LF (or by a lone CR when `cr_terminated`): strip a CRLF's CR, split
        what remains at lone CRs."""
        if not cr_terminated and part.endswith(b"\r"):
            part = part[:-1]
            self.facts.crlf_lines += 1
        if b"\r" not in part and not cr_terminated:
            yield number, offset, part
            return
        pieces = part.split(b"\r")
        if self.facts.first_lone_cr_line is None:
            self.facts.first_lone_cr_line = number
        self.facts.lone_cr_lines += len(pieces) - (0 if cr_terminated else 1)
        for piece in pieces:
            yield number, offset, piece
            offset += len(piece) + 1
            number += 1
