"""The streaming line reader (issue 3, §5): line endings, BOM, limits, constant memory."""

import io
import random

from droptune.datasets.reading import LineReader, sniff_content


def read(data: bytes, **kwargs: int) -> tuple[list[tuple[int, int, bytes | None]], LineReader]:
    reader = LineReader(io.BytesIO(data), **kwargs)
    return list(reader), reader


def test_lf_lines_with_numbers_and_offsets() -> None:
    lines, reader = read(b'{"a":1}\n\n{"b":2}\n')
    assert lines == [(1, 0, b'{"a":1}'), (2, 8, b""), (3, 9, b'{"b":2}')]
    assert reader.facts.ends_with_newline


def test_bom_is_skipped_and_recorded_offsets_stay_true() -> None:
    lines, reader = read(b'\xef\xbb\xbf{"a":1}\n')
    assert lines == [(1, 3, b'{"a":1}')]
    assert reader.facts.bom


def test_crlf_split_across_chunks_gives_no_phantom_line() -> None:
    """Malformed case 3: a CRLF cut between two reads must not make an empty row."""
    lines, reader = read(b"ab\r\ncd\r\n", chunk_bytes=3)
    assert [line[2] for line in lines] == [b"ab", b"cd"]
    assert reader.facts.crlf_lines == 2 and reader.facts.lone_cr_lines == 0


def test_lone_cr_file_is_split_into_lines_and_recorded() -> None:
    """Malformed case 4: classic-Mac endings, even with no LF in a whole chunk."""
    lines, reader = read(b"a\rb\rc\r", chunk_bytes=2)
    assert [(n, d) for n, _, d in lines] == [(1, b"a"), (2, b"b"), (3, b"c")]
    assert reader.facts.lone_cr_lines == 3 and reader.facts.first_lone_cr_line == 1


def test_last_line_without_newline_is_read() -> None:
    lines, reader = read(b'{"a":1}\n{"b":2}')
    assert lines[-1] == (2, 8, b'{"b":2}')
    assert not reader.facts.ends_with_newline


def test_overlong_line_is_skipped_and_the_next_line_keeps_its_number() -> None:
    lines, reader = read(b"ok\n" + b"x" * 100 + b"\nnext\n", chunk_bytes=8, max_line_bytes=20)
    assert lines == [(1, 0, b"ok"), (2, 3, None), (3, 104, b"next")]
    assert reader.facts.overlong_lines == 1


def test_random_splits_match_python_splitlines() -> None:
    """Property: for any mix of LF, CRLF and CR and any chunk size, the reader yields the same
    lines as str.splitlines, with offsets pointing at each line's first byte."""
    rng = random.Random(20261122)
    for _ in range(300):
        pieces = []
        for _ in range(rng.randint(0, 12)):
            pieces.append(rng.choice([b"", b"x", b'{"k": "v"}', b"\xc3\xa9t\xc3\xa9"]))
            pieces.append(rng.choice([b"\n", b"\r\n", b"\r"]))
        if rng.random() < 0.5 and pieces:
            pieces.pop()  # no terminator on the last line
        data = b"".join(pieces)
        lines, _ = read(data, chunk_bytes=rng.randint(1, 16))
        assert [d for _, _, d in lines] == data.splitlines(), data
        assert [n for n, _, _ in lines] == list(range(1, len(lines) + 1))
        for _, offset, line in lines:
            assert line is not None and data[offset : offset + len(line)] == line


def test_memory_is_bounded_by_the_chunk_not_the_file() -> None:
    """Constant memory: a reader never holds more than a chunk plus one line."""

    class CountingStream(io.RawIOBase):
        def __init__(self, lines: int) -> None:
            self.remaining = lines
            self.largest_read = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            assert size > 0, "the reader must never read the whole stream at once"
            self.largest_read = max(self.largest_read, size)
            if self.remaining == 0:
                return b""
            count = min(self.remaining, size // 16)
            self.remaining -= count
            return b'{"prompt":"ab"}\n' * count

    stream = CountingStream(200_000)
    reader = LineReader(stream, chunk_bytes=4096)  # type: ignore[arg-type]
    assert sum(1 for _ in reader) == 200_000
    assert stream.largest_read == 4096


def test_sniff_recognises_files_that_are_not_jsonl() -> None:
    assert sniff_content(b"\x1f\x8b\x08\x00") is not None
    assert sniff_content(b"PK\x03\x04") is not None
    assert sniff_content(b'\xff\xfe{\x00"\x00') is not None
    assert sniff_content(b'{\x00"\x00a\x00') is not None  # UTF-16 without BOM
    array = sniff_content(b'  \n[{"prompt": "a"}]')
    assert array is not None and array.code == "json_array_not_jsonl"
    assert sniff_content(b'{"prompt": "a"}\n') is None
