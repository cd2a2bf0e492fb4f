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
# (byte offset of the run's first line, the run: whole lines joined by LF; None for one line that
# was longer than the reader's limit and was skipped)
Run = tuple[int, bytes | None]


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
    first_lone_cr_line: int | None = None  # set by whoever numbers the lines (see LineReader.runs)
    first_lone_cr_offset: int | None = None
    ends_with_newline: bool = True
    overlong_lines: int = 0


class LineReader:
    """Iterate over the lines of a binary stream, reading it in fixed-size chunks.

    The first chunk is read on construction so the caller can sniff it (`head`) before iterating.
    Iterating gives numbered lines; `runs()` gives whole runs of lines, for the validator's loop.
    """

    def __init__(
        self, stream: BinaryIO, *, chunk_bytes: int = CHUNK_BYTES, max_line_bytes: int = MAX_LINE_BYTES
    ) -> None:
        self._stream = stream
        self._chunk_bytes = chunk_bytes
        self._max_line_bytes = max_line_bytes
        head = stream.read(chunk_bytes)
        # A short first read (a tiny chunk, or a raw stream that returns less) must not cut a BOM
        # in two: its first bytes would then be read as content.
        while head and len(head) < len(UTF8_BOM) and UTF8_BOM.startswith(head):
            more = stream.read(chunk_bytes)
            if not more:
                break
            head += more
        self.head = head
        self.facts = ReadingFacts()

    def __iter__(self) -> Iterator[RawLine]:
        """(number, offset, line) for each line: the runs of `runs()` split at LF."""
        number = 1
        for offset, run in self.runs():
            self.note_run_start(number, offset)
            if run is None:
                yield number, offset, None
                number += 1
                continue
            position = offset
            for line in run.split(b"\n"):
                yield number, position, line
                number += 1
                position += len(line) + 1

    def note_run_start(self, number: int, offset: int) -> None:
        """Tell the reader the number of a run's first line, so that the facts can name the first
        lone-CR line. The reader does not count lines itself: counting the LFs of a run costs a
        sixth of the validator's whole time, and the caller walks the lines anyway."""
        if offset == self.facts.first_lone_cr_offset and self.facts.first_lone_cr_line is None:
            self.facts.first_lone_cr_line = number

    # The hot loop of a 1 GB file: kept in one function on purpose (no per-line calls).
    def runs(self) -> Iterator[Run]:  # noqa: PLR0912, PLR0915
        """The file as runs of whole lines: (offset of the first line, its bytes).

        A run is one or more lines joined by LF, without the last one's terminator and with no CR
        anywhere, so line k + 1 of a run starts one byte after the LF that ends line k. Every line
        of the file comes in exactly one run, in order: the caller numbers them, one per line
        (None counts as one line). Lines with CRs (CRLF, lone CR) and the last line of the file
        come one per run. Runs let the caller decode and parse a whole chunk with a few C calls
        instead of a Python round trip per line.
        """
        facts = self.facts
        chunk = self.head
        offset = 0  # file offset of the first byte of `pending`
        pending = b""
        skipping = False  # inside a line longer than the limit: drop bytes up to the next LF
        if chunk.startswith(UTF8_BOM):
            facts.bom = True
            # A head that is only the BOM must not end the loop below before the content.
            chunk = chunk[len(UTF8_BOM) :] or self._stream.read(self._chunk_bytes)
            offset = len(UTF8_BOM)
        facts.bytes_read = offset
        while chunk:
            facts.bytes_read += len(chunk)
            data = pending + chunk if pending else chunk
            last = data.rfind(b"\n")
            if last < 0:
                pending = data
            else:
                first = 0
                if skipping:
                    first = data.find(b"\n") + 1
                    offset += first
                    skipping = False
                pending = data[last + 1 :]
                if first <= last:
                    run = data[first:last]
                    if b"\r" in run:
                        for part in run.split(b"\n"):
                            yield from self._split_carriage_returns(part, offset)
                            offset += len(part) + 1
                    else:
                        # The common case, kept lean: LF-terminated lines with no CR anywhere.
                        yield offset, run
                        offset += len(run) + 1
            if len(pending) > self._chunk_bytes and b"\r" in pending[:-1]:
                # No LF for a whole chunk but CRs: lone-CR line endings. Emit the complete lines
                # now; a CR at the very end may be half of a CRLF split across chunks, keep it.
                cut = pending.rfind(b"\r", 0, len(pending) - 1)
                yield from self._split_carriage_returns(pending[:cut], offset, cr_terminated=True)
                offset += cut + 1
                pending = pending[cut + 1 :]
            if skipping:
                offset += len(pending)
                pending = b""
            elif len(pending) > self._max_line_bytes:
                facts.overlong_lines += 1
                yield offset, None
                offset += len(pending)
                pending = b""
                skipping = True
            chunk = self._stream.read(self._chunk_bytes)
        if pending and not skipping:
            if pending.endswith(b"\r"):  # the file ends with a lone CR: a terminator, not data
                yield from self._split_carriage_returns(pending[:-1], offset, cr_terminated=True)
            else:
                facts.ends_with_newline = False
                yield from self._split_carriage_returns(pending, offset)

    def _split_carriage_returns(
        self, part: bytes, offset: int, *, cr_terminated: bool = False
    ) -> Iterator[Run]:
        """One piece ended by LF (or by a lone CR when `cr_terminated`): strip a CRLF's CR, split
        what remains at lone CRs, one line per run."""
        if not cr_terminated and part.endswith(b"\r"):
            part = part[:-1]
            self.facts.crlf_lines += 1
        if b"\r" not in part and not cr_terminated:
            yield offset, part
            return
        pieces = part.split(b"\r")
        if self.facts.first_lone_cr_offset is None:
            self.facts.first_lone_cr_offset = offset
        self.facts.lone_cr_lines += len(pieces) - (0 if cr_terminated else 1)
        for piece in pieces:
            yield offset, piece
            offset += len(piece) + 1
