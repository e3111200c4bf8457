#!/usr/bin/env python3
"""Queries per second of `ccma serve`'s search API over a 10,000-image gallery, 1 and 8 clients.

    python3 benches/serve_qps.py target/release/ccma [WORK_DIR]

The model is a full-size CLIP ViT-B/16 (random weights, Hugging Face layout, so no download is
needed: a query costs what it costs with OpenAI's weights): 12-layer 512-wide text encoder, 77
tokens. The gallery is a feature file of 10,000 random unit 512-d image features (the image files
themselves are not read by the API). Each client sends `GET /api/search?q=...&k=10` one after the
other, with captions of 12-40 words drawn from a fixed vocabulary; the figure is all answers over
the wall time, the median of 3 rounds, after 8 warm-up queries. Prints a markdown table.
"""
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

GALLERY = 10_000
ROUNDS = 3
QUERIES_PER_CLIENT = {1: 24, 8: 12}
WORDS = ("a man woman wearing black white red blue green grey jacket coat shirt pants jeans shorts "
         "skirt shoes bag backpack carrying holding long short hair walking with and the in of "
         "dark light striped sleeves hat glasses").split()


def full_size_clip(path):
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=16, hidden_act="quick_gelu"),
        projection_dim=512,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(path, safe_serialization=True)


def gallery(path, images_dir):
    torch.manual_seed(1)
    f = torch.nn.functional.normalize(torch.randn(GALLERY, 512), dim=1)
    names = [os.path.join(images_dir, f"{i:05d}.jpg") for i in range(GALLERY)]
    save_file({"image_features": f.contiguous()}, path, metadata={"images": json.dumps(names)})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def caption(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 40)))


def ask(port, text):
    q = urllib.parse.urlencode({"q": text, "k": 10})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/search?{q}", timeout=600) as r:
        body = json.load(r)
    assert len(body["results"]) == 10, body


def round_qps(port, clients, per_client, seed):
    def client(i):
        rng = random.Random(seed * 100 + i)
        for _ in range(per_client):
            ask(port, caption(rng))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return clients * per_client / (time.perf_counter() - t0)


def main():
    binary = os.path.abspath(sys.argv[1])
    work = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="serve_qps_")
    os.makedirs(work, exist_ok=True)
    model, feats = os.path.join(work, "clip-vit-b16"), os.path.join(work, "gallery.safetensors")
    if not os.path.isdir(model):
        full_size_clip(model)
    if not os.path.isfile(feats):
        gallery(feats, os.path.join(work, "images"))
    port = free_port()
    server = subprocess.Popen([binary, "serve", "--pretrained", model, "--gallery", feats,
                               "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 600
        while True:
            try:
                ask(port, "a woman in a red coat carrying a black bag")
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    sys.exit(f"ccma serve did not start: {server.stderr.read()}")
                time.sleep(1)
        rng = random.Random(0)
        for _ in range(8):
            ask(port, caption(rng))
        rows = []
        for clients, per_client in QUERIES_PER_CLIENT.items():
            runs = [round_qps(port, clients, per_client, r) for r in range(ROUNDS)]
            rows.append((clients, clients * per_client, statistics.median(runs), min(runs), max(runs)))
    finally:
        server.terminate()
        server.wait()
    print(f"{GALLERY:,}-image gallery (feature file), full-size CLIP ViT-B/16 text encoder, k = 10, CPU")
    print()
    print("| clients | queries per round | queries/s (median of 3) | range |")
    print("|---|---|---|---|")
    for clients, n, med, lo, hi in rows:
        print(f"| {clients} | {n} | {med:.1f} | {lo:.1f}-{hi:.1f} |")


if __name__ == "__main__":
    main()
