"""Reference for the learning-rate schedule (METHOD.md section 5): a torch LRScheduler over a
torch.optim.Adam whose parameter groups have the base rates METHOD.md's rules give them, stepped
once per epoch as the IRRA recipe does; prints each group's lr for epochs 1..num_epoch as JSON
`[[lr of group 0, lr of group 1, ...] for epoch 1, ...]`.
usage: schedule_ref.py SETTINGS.json
SETTINGS holds `bases` (each group's base rate) and the schedule keys of the config: lrscheduler,
num_epoch, warmup_epochs, warmup_factor, warmup_method, milestones, gamma, target_lr, power."""
import json
import math
import sys

import torch

s = json.load(open(sys.argv[1]))


class WarmupThenDecay(torch.optim.lr_scheduler.LRScheduler):
    """Warm-up for `warmup_epochs` epochs (linear from `warmup_factor`, or constant), then the
    chosen decay; `last_epoch` counts completed epochs, so epoch e (1-based) uses e - 1."""

    def get_lr(self):
        e, warm = self.last_epoch, s["warmup_epochs"]
        if e < warm:
            if s["warmup_method"] == "constant":
                f = s["warmup_factor"]
            else:
                f = s["warmup_factor"] + (1 - s["warmup_factor"]) * (e / warm)
            return [b * f for b in self.base_lrs]
        mode = s["lrscheduler"]
        if mode == "step":
            drops = sum(1 for m in s["milestones"] if m <= e)
            return [b * s["gamma"] ** drops for b in self.base_lrs]
        r = (e - warm) / (s["num_epoch"] - warm)
        t = s["target_lr"]
        if mode == "exp":
            return [b * s["power"] ** r for b in self.base_lrs]
        if mode == "linear":
            return [b * (1 - r) for b in self.base_lrs]
        if mode == "poly":
            return [t + (b - t) * s["power"] ** (1 - r) for b in self.base_lrs]
        if mode == "cosine":
            return [t + (b - t) * (1 + math.cos(math.pi * r)) / 2 for b in self.base_lrs]
        raise ValueError(mode)


groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": b} for b in s["bases"]]
opt = torch.optim.Adam(groups)
sched = WarmupThenDecay(opt)
out = []
for _ in range(s["num_epoch"]):
    out.append([g["lr"] for g in opt.param_groups])
    opt.step()
    sched.step()
print(json.dumps(out))
