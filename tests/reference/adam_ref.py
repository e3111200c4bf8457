"""Reference for the optimiser: torch.optim.Adam (or AdamW) with one parameter group per
parameter, each with the learning rate and weight decay METHOD.md's rules give it.
usage: adam_ref.py IN.safetensors OUT.safetensors GROUPS.json [Adam|AdamW]
IN holds `param.<name>` (initial values) and `grad.<k>.<name>` (the gradient at step k; a
parameter without one has no gradient at that step)."""
import json
import sys

import torch
from safetensors.torch import load_file, save_file

data = load_file(sys.argv[1])
groups = json.load(open(sys.argv[3]))  # {name: [lr, weight_decay]}, plus "_": [beta1, beta2, eps, steps]
beta1, beta2, eps, steps = groups.pop("_")
params = {n: data[f"param.{n}"].clone().requires_grad_(True) for n in groups}
kind = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[sys.argv[4] if len(sys.argv) > 4 else "Adam"]
opt = kind([{"params": [params[n]], "lr": lr, "weight_decay": wd} for n, (lr, wd) in groups.items()],
                       betas=(beta1, beta2), eps=eps, foreach=False)
for k in range(int(steps)):
    for n, p in params.items():
        g = data.get(f"grad.{k}.{n}")
        p.grad = None if g is None else g.clone()
    opt.step()
save_file({n: p.detach().contiguous() for n, p in params.items()}, sys.argv[2])
