"""The spool's on-disk record format: encode one record, read one back, find the next record after damage.

Pure functions over a file descriptor (``os.pread``), no state. A record is::

    head    <4sHHIIId   magic b"JSP1", meta_len, flags (0), payload_len, items, payload_crc32, created (unix)
    meta    meta_len bytes of UTF-8 JSON: {"s": signal, "k": idempotency key, "r": route, "x": {extra}}
    hcrc    <I          CRC-32 of head + meta: a header that passes it can be trusted for its payload length
    payload payload_len bytes; payload_crc32 is checked when the payload is read

Two CRCs, because a damaged *header* loses the way to the next record (resync: scan for the magic and accept the
first candidate whose header CRC holds), while a damaged *payload* loses only that record.

An ack file holds one 12-byte entry per settled record: ``<QI`` = the record's offset in its segment and the CRC-32
of those 8 bytes (a torn or flipped ack entry is ignored, which at worst resends one payload).
"""

from __future__ import annotations

import enum
import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from ._envelope import Envelope

__all__ = [
    "ACK",
    "HEAD",
    "MAGIC",
    "Header",
    "Status",
    "decode_acks",
    "encode_ack",
    "encode_record",
    "read_header",
    "read_payload",
    "record_size",
    "resync",
]

MAGIC = b"JSP1"
HEAD = struct.Struct("<4sHHIIId")
_HCRC = struct.Struct("<I")
ACK = struct.Struct("<QI")
_MAX_META = 0xFFFF
_RESYNC_CHUNK = 1 << 20


class Status(enum.Enum):
    """What reading one record at an offset found."""

    OK = "ok"
    BAD_HEADER = "bad_header"  # no trustworthy header here: the next record must be searched for
    TRUNCATED = "truncated"  # a valid header whose payload runs past the end of the file
    BAD_PAYLOAD = "bad_payload"  # a valid header whose payload fails its CRC


@dataclass(frozen=True, slots=True)
class Header:
    """A header that passed its CRC; ``payload_at``/``next_at``: where its payload and the next record start."""

    offset: int
    payload_at: int
    next_at: int
    payload_len: int
    payload_crc: int
    items: int
    created: float
    signal: str
    idempotency_key: str
    route: str
    extra: Mapping[str, str]


def encode_record(env: Envelope) -> tuple[bytes, bytes, bytes]:
    """The three buffers of one record (head+meta+hcrc, then the payload untouched), for one ``os.writev``."""
    meta = json.dumps(
        {"s": env.signal, "k": env.idempotency_key, "r": env.route, "x": dict(env.extra)},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8", "surrogatepass")
    if len(meta) > _MAX_META:
        raise ValueError("spool record metadata is larger than 64 KiB")
    head = HEAD.pack(MAGIC, len(meta), 0, len(env.payload), env.items, zlib.crc32(env.payload), env.created)
    hcrc = _HCRC.pack(zlib.crc32(meta, zlib.crc32(head)))
    return head, meta + hcrc, env.payload


def record_size(env: Envelope, encoded: tuple[bytes, bytes, bytes]) -> int:
    """Bytes the encoded record takes on disk."""
    return len(encoded[0]) + len(encoded[1]) + len(env.payload)


def read_header(fd: int, offset: int, end: int) -> tuple[Status, Header | None]:
    """Read and check the header at ``offset`` (the segment's valid data ends at ``end``).

    Returns ``(OK, header)``, ``(TRUNCATED, header)`` when the payload runs past ``end``, or ``(BAD_HEADER, None)``.
    Never raises on bad data; an ``OSError`` from the read itself propagates.
    """
    if end - offset < HEAD.size + _HCRC.size:
        return Status.BAD_HEADER, None
    raw = os.pread(fd, HEAD.size, offset)
    if len(raw) < HEAD.size:
        return Status.BAD_HEADER, None
    magic, meta_len, _flags, payload_len, items, payload_crc, created = HEAD.unpack(raw)
    if magic != MAGIC:
        return Status.BAD_HEADER, None
    meta_at = offset + HEAD.size
    payload_at = meta_at + meta_len + _HCRC.size
    if payload_at > end:
        return Status.BAD_HEADER, None
    tail = os.pread(fd, meta_len + _HCRC.size, meta_at)
    if len(tail) < meta_len + _HCRC.size:
        return Status.BAD_HEADER, None
    meta = tail[:meta_len]
    (hcrc,) = _HCRC.unpack_from(tail, meta_len)
    if zlib.crc32(meta, zlib.crc32(raw)) != hcrc:
        return Status.BAD_HEADER, None
    try:
        fields = json.loads(meta.decode("utf-8", "surrogatepass"))
        extra = fields.get("x") or {}
        header = Header(
            offset=offset,
            payload_at=payload_at,
            next_at=payload_at + payload_len,
            payload_len=payload_len,
            payload_crc=payload_crc,
            items=items,
            created=created,
            signal=str(fields["s"]),
            idempotency_key=str(fields["k"]),
            route=str(fields["r"]),
            extra={str(k): str(v) for k, v in extra.items()},
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        # The CRC held, so this is a writer bug rather than damage; treat it as damage anyway.
        return Status.BAD_HEADER, None
    if header.next_at > end:
        return Status.TRUNCATED, header
    return Status.OK, header


def read_payload(fd: int, header: Header) -> bytes | None:
    """The record's payload, or None when it is short or fails its CRC."""
    payload = os.pread(fd, header.payload_len, header.payload_at)
    if len(payload) != header.payload_len or zlib.crc32(payload) != header.payload_crc:
        return None
    return payload


def resync(fd: int, offset: int, end: int) -> int:
    """The offset of the first valid header after ``offset`` (exclusive), or ``end`` if there is none."""
    at = offset + 1
    while at < end:
        chunk = os.pread(fd, min(_RESYNC_CHUNK, end - at) + len(MAGIC) - 1, at)
        if not chunk:
            return end
        start = 0
        while True:
            hit = chunk.find(MAGIC, start)
            if hit < 0:
                break
            candidate = at + hit
            status, _ = read_header(fd, candidate, end)
            if status is not Status.BAD_HEADER:
                return candidate
            start = hit + 1
        at += _RESYNC_CHUNK
    return end


def encode_ack(offset: int) -> bytes:
    """One ack-file entry for the record at ``offset``."""
    packed = struct.pack("<Q", offset)
    return ACK.pack(offset, zlib.crc32(packed))


def decode_acks(data: bytes) -> set[int]:
    """Offsets acknowledged in an ack file's contents; a torn last entry or a damaged one is ignored."""
    acked: set[int] = set()
    for i in range(0, len(data) - ACK.size + 1, ACK.size):
        offset, crc = ACK.unpack_from(data, i)
        if zlib.crc32(struct.pack("<Q", offset)) == crc:
            acked.add(offset)
    return acked
