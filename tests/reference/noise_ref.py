"""NumPy's side of tests/noise.rs.

`npy DIR`: writes .npy files with NumPy (good ones, and bad ones for each refusal) and prints the
good files' values as JSON.
`draw N RATE SEED OUT`: draws a noise index by RDE's rule (datasets/bases.py,
inject_noisy_correspondence) after np.random.seed(SEED), saves it to OUT and prints its clean count.
"""
import json
import os
import sys

import numpy as np


def npy(d):
    values = {}
    base = np.array([0, 5, -3, 2**31 - 1, -(2**31), 7], dtype=np.int64)
    for name, dtype in [("i8_le", "<i8"), ("i8_be", ">i8"), ("i4_le", "<i4"), ("i4_be", ">i4")]:
        a = base.astype(dtype)
        np.save(os.path.join(d, name + ".npy"), a)
        values[name] = [int(v) for v in a]
    big = np.arange(100_000, dtype=np.int64) * 3 - 7
    np.save(os.path.join(d, "big.npy"), big)
    values["big"] = [int(v) for v in big]
    with open(os.path.join(d, "v2.npy"), "wb") as f:
        np.lib.format.write_array(f, base, version=(2, 0))
    values["v2"] = [int(v) for v in base]
    np.save(os.path.join(d, "empty.npy"), np.array([], dtype=np.int64))
    values["empty"] = []

    # Refusals.
    np.save(os.path.join(d, "float.npy"), base.astype(np.float64))
    np.save(os.path.join(d, "uint8.npy"), base.astype(np.uint8))
    np.save(os.path.join(d, "rank2.npy"), np.zeros((2, 3), dtype=np.int64))
    np.save(os.path.join(d, "rank0.npy"), np.array(4, dtype=np.int64))
    with open(os.path.join(d, "fortran.npy"), "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<i8", "fortran_order": True, "shape": (6,)})
        f.write(base.tobytes())
    good = open(os.path.join(d, "i8_le.npy"), "rb").read()
    open(os.path.join(d, "truncated.npy"), "wb").write(good[:-3])
    open(os.path.join(d, "trailing.npy"), "wb").write(good + b"\0" * 8)
    open(os.path.join(d, "cut_header.npy"), "wb").write(good[:40])
    open(os.path.join(d, "not_npy.npy"), "wb").write(b"PK\x03\x04 a zip, say")
    # A header longer than NumPy's own limit (10,000 bytes), as format 2.0 allows.
    with open(os.path.join(d, "huge_header.npy"), "wb") as f:
        header = "{'descr': '<i8', 'fortran_order': False, 'shape': (6,), }" + " " * 20_000 + "\n"
        f.write(b"\x93NUMPY\x02\x00" + len(header).to_bytes(4, "little") + header.encode())
        f.write(base.tobytes())
    # A shape whose byte count overflows 64 bits.
    with open(os.path.join(d, "huge_shape.npy"), "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<i8", "fortran_order": False, "shape": (2**62,)})
    print(json.dumps(values))


def draw(n, rate, seed, out):
    np.random.seed(seed)
    noisy_inx = np.arange(n)
    inx = np.arange(n)
    np.random.shuffle(inx)
    c_noisy_inx = inx[0: int(rate * n)]
    shuffle_noisy_inx = np.array(c_noisy_inx)
    np.random.shuffle(shuffle_noisy_inx)
    noisy_inx[c_noisy_inx] = shuffle_noisy_inx
    np.save(out, noisy_inx.astype(np.int64))
    print(int(np.sum(noisy_inx == np.arange(n))))


if __name__ == "__main__":
    if sys.argv[1] == "npy":
        npy(sys.argv[2])
    else:
        draw(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
