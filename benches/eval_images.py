#!/usr/bin/env python3
"""Evaluation image features at full size: images per second of `ccma embed` (the image path of
`ccma test` and of training's evaluation) for one or more ccma binaries, side by side with IRRA's
evaluator image loop on the same images, in rounds, each side in turn.

    python3 benches/eval_images.py --irra IRRA_DIR [--images N] [--batch B] [--rounds R] \
        NAME=CCMA_BINARY [NAME=CCMA_BINARY ...]

IRRA_DIR is a checkout of anosorae/IRRA: its `model/clip_model.py`, `datasets/` (ImageDataset,
build_transforms) and the image loop of `utils/metrics.py` (`Evaluator._compute_embedding`) are
imported or followed from there, not copied. Its loader needs torchvision (0.26.0 for torch 2.11)
and prettytable on PYTHONPATH. Both sides run a full-size random CLIP ViT-B/16
(`tests/reference/full_size_clip.py`) at 384x128 in fp32 (IRRA casts its weights to fp16, which
a CPU does not run fast), on N random-content JPEGs of CUHK-PEDES-like sizes (60-90 x 160-240
px), in batches of B, on the CPU. A ccma figure is (N - B) / (t(N) - t(B)): the difference of
two whole commands, over all N images and over the first batch alone, so that starting libtorch
and loading the model cancel. IRRA's is timed in-process from the end of its first batch to the
end of its loop (its DataLoader with IRRA's default 8 workers). Prints a JSON line per round and
the medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))


def write_images(folder, n):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        w, h = int(rng.integers(60, 91)), int(rng.integers(160, 241))
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def ccma_seconds(binary, archive, paths, batch, out):
    cmd = [binary, "embed", "--pretrained", archive, "--img-size", "384x128", "--device", "cpu",
           "--batch-size", str(batch), "--out", out, "--force", "--images", *paths]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def ccma_rate(binary, archive, paths, batch, out):
    whole = ccma_seconds(binary, archive, paths, batch, out)
    first = ccma_seconds(binary, archive, paths[:batch], batch, out)
    return (len(paths) - batch) / (whole - first)


def irra_model(irra, archive):
    sys.path.insert(0, irra)
    from model.clip_model import build_CLIP_from_openai_pretrained

    model, _ = build_CLIP_from_openai_pretrained(archive, (384, 128), 16)
    return model.float().eval()


def irra_rate(irra, model, paths, batch):
    import torch
    from torch.utils.data import DataLoader

    sys.path.insert(0, irra)
    from datasets.bases import ImageDataset
    from datasets.build import build_transforms

    dataset = ImageDataset(list(range(len(paths))), paths, build_transforms((384, 128), is_train=False))
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=8)
    feats, t0, after_first = [], None, 0
    for _, img in loader:  # as Evaluator._compute_embedding's image loop
        with torch.no_grad():
            feats.append(model.encode_image(img))
        if t0 is None:
            t0 = time.perf_counter()
        else:
            after_first += img.shape[0]
    return after_first / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--irra", required=True)
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("binaries", nargs="+", help="NAME=PATH of a ccma binary")
    a = ap.parse_args()
    binaries = [b.split("=", 1) for b in a.binaries]
    with tempfile.TemporaryDirectory() as tmp:
        archive = os.path.join(tmp, "ViT-B-16.pt")
        subprocess.run([sys.executable, os.path.join(HERE, "../tests/reference/full_size_clip.py"), archive],
                       check=True)
        paths = write_images(tmp, a.images)
        model = irra_model(a.irra, archive)
        out = os.path.join(tmp, "features.safetensors")
        rates = {name: [] for name, _ in binaries}
        rates["IRRA"] = []
        for r in range(a.rounds):
            for name, binary in binaries:
                rates[name].append(ccma_rate(binary, archive, paths, a.batch, out))
            rates["IRRA"].append(irra_rate(a.irra, model, paths, a.batch))
            print(json.dumps({"round": r + 1, **{k: round(v[-1], 2) for k, v in rates.items()}}), flush=True)
        print(json.dumps({"median images/s": {k: round(statistics.median(v), 2) for k, v in rates.items()},
                          "images": a.images, "batch": a.batch, "rounds": a.rounds}))


if __name__ == "__main__":
    main()
