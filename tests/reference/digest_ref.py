"""The parameter digest ccma's data-parallel ranks compare, computed from a checkpoint.

Usage: digest_ref.py STATE.safetensors  ->  prints 16 hex digits.
The first 8 bytes of SHA-256 over, for every parameter (entries not starting with `optimizer.`)
sorted by name, its name in UTF-8 followed by its raw little-endian bytes.
"""
import hashlib
import sys

from safetensors.numpy import load_file

tensors = load_file(sys.argv[1])
h = hashlib.sha256()
for name in sorted(k for k in tensors if not k.startswith("optimizer.")):
    h.update(name.encode())
    h.update(tensors[name].tobytes())
print(h.hexdigest()[:16])
