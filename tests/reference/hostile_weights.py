"""Hostile and edge-case weight files for tests/hostile_weights.rs, written by torch itself where
torch can write them, patched byte by byte where it cannot.

usage: hostile_weights.py OUT_DIR          writes the files below into OUT_DIR
       hostile_weights.py pth IN OUT       torch.save({"model": tensors of IN.safetensors}) to OUT

  archive.pt / archive_state.safetensors
                  a small traced module tree in OpenAI's TorchScript layout (a list of blocks, fp16
                  and fp32 parameters, a buffer) and its state_dict as torch.jit.load reads it
  setstate.pt     a scripted module whose __setstate__ prints MARKER (what loading it with
                  TorchScript runs)
  short.pth       torch.save of {"w": 1024 floats} whose storage entry is deflated to 8 bytes
                  while its headers declare 4096
  bomb.pth        torch.save of {"w": 16M zero floats} with the storage deflated (64 MiB from
                  about 64 KB)
  stride0.pth     torch.save of {"w": a 1-element storage viewed as 2^20 x 2^20 (stride 0)}
  deep.pth        a pickle of 200,000 lists, each inside the one before (400 KB)
  memo.pth        a pickle of 40 lists, each holding the one before twice through the memo (330 B)
"""
import io
import os
import struct
import sys
import zipfile

import torch
from safetensors.torch import load_file, save_file

MARKER = "SETSTATE-RAN-7f3a"


def rezip(src, dst, deflate, patch=None):
    """Copies the zip `src` to `dst`, deflating the entries whose names end with one of
    `deflate`; `patch(name, data)` may replace an entry's bytes."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if patch:
                data = patch(info.filename, data)
            method = zipfile.ZIP_DEFLATED if info.filename.endswith(deflate) else zipfile.ZIP_STORED
            zout.writestr(info.filename, data, compress_type=method)


def declare_size(path, name, size):
    """Rewrites the uncompressed size of entry `name` in its local and central headers."""
    b = bytearray(open(path, "rb").read())
    key = name.encode()
    for sig, size_at, name_len_at, name_at in [(b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46)]:
        at = 0
        while (at := b.find(sig, at)) >= 0:
            (n,) = struct.unpack_from("<H", b, at + name_len_at)
            if bytes(b[at + name_at: at + name_at + n]) == key:
                struct.pack_into("<I", b, at + size_at, size)
            at += 4
    open(path, "wb").write(bytes(b))


def pickle_zip(path, pickle):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle)
        z.writestr("archive/byteorder", "little")


class Block(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.lin = torch.nn.Linear(w, w)
        self.ln = torch.nn.LayerNorm(w)

    def forward(self, x):
        return self.ln(self.lin(x))


class Tree(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.Sequential(Block(4), Block(4))
        self.proj = torch.nn.Parameter(torch.randn(4, 3))
        self.register_buffer("size", torch.tensor(7))

    def forward(self, x):
        return self.blocks(x) @ self.proj


class SetState(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        print("SETSTATE-RAN-7f3a")
        self.w = state[0]
        self.training = state[1]

    def forward(self, x):
        return x + self.w


def main(out):
    torch.manual_seed(0)
    tree = Tree().eval()
    traced = torch.jit.trace(tree, torch.zeros(2, 4))
    getattr(traced.blocks, "1").half()
    traced.save(os.path.join(out, "archive.pt"))
    state = torch.jit.load(os.path.join(out, "archive.pt")).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(out, "archive_state.safetensors"))

    torch.jit.script(SetState()).save(os.path.join(out, "setstate.pt"))

    tmp = os.path.join(out, "tmp.pth")
    torch.save({"w": torch.ones(1024)}, tmp)
    short = os.path.join(out, "short.pth")
    rezip(tmp, short, deflate="data/0", patch=lambda n, d: d[:8] if n.endswith("data/0") else d)
    declare_size(short, "tmp/data/0", 4096)

    torch.save({"w": torch.zeros(16 << 20)}, tmp)
    rezip(tmp, os.path.join(out, "bomb.pth"), deflate="data/0")

    torch.save({"w": torch.zeros(1).expand(1 << 20, 1 << 20)}, os.path.join(out, "stride0.pth"))
    os.remove(tmp)

    n = 200_000
    pickle_zip(os.path.join(out, "deep.pth"), b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".")
    memo = bytearray(b"\x80\x02]r\x00\x00\x00\x00")
    for i in range(40):
        memo += b"(j" + struct.pack("<I", i) + b"j" + struct.pack("<I", i) + b"lr" + struct.pack("<I", i + 1)
    pickle_zip(os.path.join(out, "memo.pth"), bytes(memo + b"."))


if __name__ == "__main__":
    if sys.argv[1] == "pth":
        torch.save({"model": load_file(sys.argv[2])}, sys.argv[3])
    else:
        main(sys.argv[1])
