"""Deterministic result files: real PNGs written with zlib + struct, and a tiny MP4 placeholder.

Results must be real files so providers can test downloading, sniffing and storing them, yet cheap and
reproducible: the picture is a gradient with diagonal stripes whose colours come from sha256(prompt, seed), so
the same prompt and seed give byte-identical files (like a seeded model would) and a new seed a new picture.
No Pillow at runtime: rows are assembled with slice assignment, which keeps a 512x512 image at a few ms.
"""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Shrink (never enlarge) so the long side fits ``max_side``, keeping the aspect ratio."""
    width, height = max(1, int(width)), max(1, int(height))
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def content_key(prompt: str, seed: object) -> bytes:
    """The identity of a picture: what a seeded model would reproduce exactly."""
    return hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _ramp(start: int, end: int, length: int) -> bytes:
    if length <= 1:
        return bytes([start])
    return bytes(start + (end - start) * i // (length - 1) for i in range(length))


@functools.lru_cache(maxsize=256)
def render_png(width: int, height: int, key: bytes) -> bytes:
    """An 8-bit RGB PNG: red ramps across, green ramps down, blue carries diagonal stripes."""
    k = key
    red = _ramp(k[0], k[1], width)
    green = _ramp(k[2], k[3], height)
    stripe = 4 + k[4] % 28
    light, dark = k[5] | 0x80, k[6] & 0x7F
    blue_cycle = bytes([light]) * stripe + bytes([dark]) * stripe
    blue = (blue_cycle * ((width + height) // len(blue_cycle) + 2))[: width + height]

    row = bytearray(3 * width)
    row[0::3] = red
    rows = []
    for y in range(height):
        row[1::3] = bytes([green[y]]) * width
        row[2::3] = blue[y : y + width]
        rows.append(b"\x00" + bytes(row))
    raw = b"".join(rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"tEXt", b"Software\x00liangxin-simulator")
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


@functools.lru_cache(maxsize=256)
def render_mp4_placeholder(key: bytes) -> bytes:
    """A structurally valid ISO-BMFF file (``ftyp`` + ``free``), not a playable video: enough for clients to
    download, size-check and store a "video" result without shipping an encoder."""
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2mp41")
    free = _box(b"free", b"liangxin-simulator placeholder " + key.hex().encode())
    return ftyp + free
