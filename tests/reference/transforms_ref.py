#!/usr/bin/env python3
"""Independent reference for ccma's image transforms (METHOD.md section 1, "Images").

Reads a job (JSON), writes the results as safetensors:
  {"image": "x.png", "out": "y.safetensors",
   "resize": [[H, W], ...],                       # -> "resize_{H}x{W}": uint8 [H, W, 3]
   "pipelines": [{"name": "p0", "size": [H, W], "flip": bool, "shift": [dy, dx],
                  "erase": [top, left, h, w] or null}, ...]}   # -> name: float32 [3, H, W]

Resize is PIL's `Image.resize((W, H), Image.BILINEAR)` on `Image.open(..).convert('RGB')`.
A pipeline applies, as torchvision does for IRRA: resize; optional horizontal flip; 10-px zero
padding and a crop whose top-left corner in the padded image is (10 + dy, 10 + dx); ToTensor
(/255 in float32); Normalize with CLIP's mean/std (float32); erasing (the rectangle set to the
mean values) -- written here with numpy, from the description, not from ccma.
"""
import json
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
PAD = 10


def pipeline(img, spec):
    h, w = spec["size"]
    arr = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.uint8)
    if spec["flip"]:
        arr = arr[:, ::-1, :]
    padded = np.zeros((h + 2 * PAD, w + 2 * PAD, 3), dtype=np.uint8)
    padded[PAD : PAD + h, PAD : PAD + w] = arr
    dy, dx = spec["shift"]
    crop = padded[PAD + dy : PAD + dy + h, PAD + dx : PAD + dx + w]
    chw = np.ascontiguousarray(crop.transpose(2, 0, 1)).astype(np.float32) / np.float32(255)
    chw = (chw - MEAN[:, None, None]) / STD[:, None, None]
    if spec["erase"] is not None:
        top, left, eh, ew = spec["erase"]
        chw[:, top : top + eh, left : left + ew] = MEAN[:, None, None]
    return chw.astype(np.float32)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        job = json.load(f)
    img = Image.open(job["image"]).convert("RGB")
    tensors = {"original": np.asarray(img, dtype=np.uint8).copy()}
    for h, w in job.get("resize", []):
        tensors[f"resize_{h}x{w}"] = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.uint8).copy()
    for spec in job.get("pipelines", []):
        tensors[spec["name"]] = pipeline(img, spec)
    save_file(tensors, job["out"])


if __name__ == "__main__":
    main()
