"""Files for the restricted torch.save reader, written by torch itself.

usage: pickle_ref.py OUT_DIR
Writes, in OUT_DIR:
  state.pth          torch.save of a checkpoint-like dict: an OrderedDict state dict with fp16,
                     fp32, bf16 and i64 tensors (one a transposed view, two sharing a storage, one
                     a Parameter, one empty), and optimizer / scheduler entries with ints, floats,
                     strings, lists, tuples, None and booleans
  expected.safetensors  the state dict's tensors, contiguous, for comparison
  evil.pth           torch.save of an object whose unpickling would call os.system
"""
import collections
import os
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1]
torch.manual_seed(0)
base = torch.randn(6, 4)
state = torch.nn.Linear(2, 2).state_dict()  # a real state dict: an OrderedDict with `_metadata`
state.clear()
state["a.weight"] = base.half()
state["a.bias"] = torch.randn(4)
state["b.transposed"] = base.t()  # a strided view of a 6x4 storage
state["b.row"] = base[2]  # shares the storage with b.transposed, at an offset
state["c.bf16"] = torch.randn(3, 2).bfloat16()
state["c.param"] = torch.nn.Parameter(torch.randn(5))
state["d.ids"] = torch.arange(7)
state["d.empty"] = torch.zeros(0, 3)
checkpoint = {
    "model": state,
    "optimizer": {"state": {}, "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.999), "params": [0, 1, 2], "amsgrad": False}]},
    "scheduler": {"last_epoch": 3, "name": "cosine", "milestones": [20, 50], "target": None},
    "num_epoch": 3,
    "iteration": 12345678901,
}
torch.save(checkpoint, os.path.join(out, "state.pth"))
save_file({k: v.detach().contiguous() for k, v in state.items()}, os.path.join(out, "expected.safetensors"))


class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + os.path.join(out, "pwned"),))


torch.save({"model": Evil()}, os.path.join(out, "evil.pth"))
