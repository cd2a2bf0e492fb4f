"""A TensorBoard event-file writer with no TensorFlow or tensorboard dependency.

An event file is a TFRecord stream of `tensorflow.Event` protos; scalars need only four fields,
so they are encoded by hand here (https://github.com/tensorflow/tensorboard/blob/master/
tensorboard/compat/proto/event.proto, summary.proto).
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import google_crc32c


def _masked_crc(data: bytes) -> int:
    crc = int(google_crc32c.value(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(
    wall_time: float, step: int, *, file_version: str | None = None, scalars: dict[str, float] | None = None
) -> bytes:
    body = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3 | 0) + _varint(step)
    if file_version is not None:
        body += _length_delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _length_delimited(
                1, _length_delimited(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)
            )
            for tag, value in scalars.items()
        )
        body += _length_delimited(5, values)
    return body


class ScalarEventWriter:
    """Appends scalar summaries to one `events.out.tfevents.*` file in `folder`."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        self.path = folder / f"events.out.tfevents.{int(now)}.{socket.gethostname()}"
        self._write(_event(now, 0, file_version="brain.Event:2"))

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self._write(_event(time.time(), step, scalars=scalars))

    def _write(self, record: bytes) -> None:
        header = struct.pack("<Q", len(record))
        with self.path.open("ab") as handle:
            handle.write(
                header
                + struct.pack("<I", _masked_crc(header))
                + record
                + struct.pack("<I", _masked_crc(record))
            )


def read_scalar_tags(path: Path) -> set[str]:
    """The scalar tags in an event file (checks the record framing; used by tests and tools)."""
    data = path.read_bytes()
    tags: set[str] = set()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack_from("<Q", data, offset)
        record = data[offset + 12 : offset + 12 + length]
        (crc,) = struct.unpack_from("<I", data, offset + 12 + length)
        if crc != _masked_crc(record):
            raise ValueError(f"{path}: corrupt record at byte {offset}")
        tags.update(_tags_in(record))
        offset += 12 + length + 4
    return tags


def _tags_in(record: bytes) -> list[str]:
    # Walk only what _event writes: the summary (field 5) holds values whose field 1 is the tag.
    found: list[str] = []
    for field, payload in _fields(record):
        if field == 5:
            for value_field, value in _fields(payload):
                if value_field == 1:
                    found.extend(tag.decode() for tag_field, tag in _fields(value) if tag_field == 1)
    return found


def _fields(message: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset < len(message):
        key, offset = _read_varint(message, offset)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, offset = _read_varint(message, offset)
            continue
        if wire == 1:
            offset += 8
            continue
        if wire == 5:
            offset += 4
            continue
        length, offset = _read_varint(message, offset)
        out.append((field, message[offset : offset + length]))
        offset += length
    return out


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
