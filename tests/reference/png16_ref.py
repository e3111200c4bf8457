#!/usr/bin/env python3
"""16-bit PNGs and what Pillow makes of them (the reference for ccma's image decoding).

Usage: png16_ref.py OUT_DIR

Writes into OUT_DIR, for each kind below, `<kind>.png`: a 16-bit PNG written here byte by byte
(zlib + CRC, no image library), whose samples run over the whole 16-bit range and, in its top
half, over 0..1023 (where clipping and scaling to 8 bits differ); then `<kind>.pil.png`: the
8-bit RGB PNG of `Image.open(<kind>.png).convert('RGB')`, and `pil.safetensors` with each of those
as uint8 [H, W, 3] named `<kind>`. Kinds: grey, grey_trns (grey with a tRNS colour), grey_alpha,
rgb, rgb_trns, rgba.
"""
import os
import struct
import sys
import zlib

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

W, H = 37, 24

# PNG colour types.
GREY, RGB, GREY_ALPHA, RGBA = 0, 2, 4, 6


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, samples, colour_type, trns=None):
    """samples: uint16 [H, W, C]; written big-endian, 16 bits per sample, filter 0 on every row."""
    h, w = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
    if trns is not None:
        png += chunk(b"tRNS", struct.pack(">" + "H" * len(trns), *trns))
    png += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def plane(seed):
    rng = np.random.default_rng(seed)
    full = rng.integers(0, 65536, size=(H - H // 2, W), dtype=np.uint16)
    low = rng.integers(0, 1024, size=(H // 2, W), dtype=np.uint16)
    low[0, :6] = [0, 1, 255, 256, 257, 1023]
    full[-1, :4] = [65535, 65280, 65279, 32768]
    return np.concatenate([low, full], 0)


def main():
    out = sys.argv[1]
    r, g, b, a = (plane(s) for s in range(4))
    kinds = {
        "grey": (r[..., None], GREY, None),
        "grey_trns": (r[..., None], GREY, (int(r[0, 2]),)),
        "grey_alpha": (np.stack([r, a], -1), GREY_ALPHA, None),
        "rgb": (np.stack([r, g, b], -1), RGB, None),
        "rgb_trns": (np.stack([r, g, b], -1), RGB, (int(r[0, 2]), int(g[0, 2]), int(b[0, 2]))),
        "rgba": (np.stack([r, g, b, a], -1), RGBA, None),
    }
    arrays = {}
    for kind, (samples, colour_type, trns) in kinds.items():
        path = os.path.join(out, f"{kind}.png")
        write_png(path, samples, colour_type, trns)
        arrays[kind] = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8).copy()
        Image.fromarray(arrays[kind], "RGB").save(os.path.join(out, f"{kind}.pil.png"))
    save_file(arrays, os.path.join(out, "pil.safetensors"))


if __name__ == "__main__":
    main()
