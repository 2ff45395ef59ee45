"""Image files that cannot be decoded, as a careless or hostile user leaves them in a folder."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

#: file name -> what load_rgb's problem says about it
PROBLEMS = {
    "notes.jpg": "cannot identify image file",
    "cut.jpg": "image file is truncated",
    "huge.png": "400,000,000 pixels, above the limit of 89,478,485",
    "empty.jpg": "an empty file (0 bytes)",
}


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (RGB), with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def write_bad_images(folder: Path, photo: Path) -> list[Path]:
    """A text file named ``.jpg``, a truncated JPEG (half of ``photo``), a 20000 x 20000 PNG and a zero-byte
    file in ``folder``, in the order of :data:`PROBLEMS`."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {"notes.jpg": b"these are notes, not a picture\n",
                "cut.jpg": photo.read_bytes()[:photo.stat().st_size // 2],
                "huge.png": png_header(20000, 20000), "empty.jpg": b""}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in PROBLEMS]
