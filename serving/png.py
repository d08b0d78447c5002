"""A grey-scale PNG grid of images, written with zlib alone (no imaging library)."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np


def grid(
    images: np.ndarray, padding: int = 2, scale: int = 1, columns: int | None = None
) -> np.ndarray:
    """Tile [N, H, W(, 1)] values in [0, 1] into one uint8 picture, as square as possible
    unless ``columns`` is given.

    ``scale`` repeats every pixel into a ``scale`` × ``scale`` block: 28-pixel digits are
    too small to see on a screen, and blocks keep the model's pixels sharp.
    """
    images = images.reshape(images.shape[0], images.shape[1], images.shape[2])
    count, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.zeros(
        (rows * (height + padding) + padding, columns * (width + padding) + padding), np.uint8
    )
    pixels = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    for index, image in enumerate(pixels):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        canvas[top : top + height, left : left + width] = image
    return canvas.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else canvas


def encode_png(picture: np.ndarray) -> bytes:
    """8-bit grey-scale PNG of a 2-D uint8 array."""
    height, width = picture.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + picture[y].tobytes() for y in range(height))  # filter: none
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 6))
        + chunk(b"IEND", b"")
    )
