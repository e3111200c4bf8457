"""Independent PyTorch reference of the loss terms, written from METHOD.md section 3, and their
clean-division weighting from section 7 ("Beyond both"): with weights `w` [B] (and `mlm_w` [M],
each masked token's pair's), every mean over rows or samples or tokens becomes
sum(w * row) / max(sum(w), 1).
usage: loss_ref.py INPUTS.safetensors OUTPUTS.safetensors SCALE
Writes, for each term, `<term>` (the value) and `<term>.grad.<input>` (gradients)."""
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

EPS = 1e-8
inp = {k: v.double().requires_grad_(True) if v.is_floating_point() else v for k, v in load_file(sys.argv[1]).items()}
s = float(sys.argv[3])
pid = inp["pids"]
y = (pid[:, None] == pid[None, :]).double()
B = pid.shape[0]
w = inp["w"].detach() if "w" in inp else torch.ones(B, dtype=torch.double)
mlm_w = inp["mlm_w"].detach() if "mlm_w" in inp else torch.ones(inp["mlm_labels"].shape[0], dtype=torch.double)


def mean(rows, weights=None):
    weights = w if weights is None else weights
    return (rows * weights).sum() / torch.clamp(weights.sum(), min=1.0)


def kl_rows(logits, q):
    p = F.softmax(logits, 1)
    return mean((p * (F.log_softmax(logits, 1) - torch.log(q + EPS))).sum(1))


def sdm(fi, ft):
    i, t = F.normalize(fi, dim=1), F.normalize(ft, dim=1)
    q = y / y.sum(1, keepdim=True)
    return kl_rows(s * i @ t.t(), q) + kl_rows(s * t @ i.t(), q)


def itc(fi, ft):
    logits = s * F.normalize(fi, dim=1) @ F.normalize(ft, dim=1).t()
    target = torch.arange(B)
    ce = lambda l: mean(F.cross_entropy(l, target, reduction="none"))
    return (ce(logits) + ce(logits.t())) / 2


def cmpm(fi, ft):
    q = y / y.norm(dim=1, keepdim=True)
    return kl_rows(fi @ F.normalize(ft, dim=1).t(), q) + kl_rows(ft @ F.normalize(fi, dim=1).t(), q)


def imal(gi, gt, tau=0.5, gamma=0.05, kappa=0.005):
    a, b = F.normalize(gi, dim=1), F.normalize(gt, dim=1)
    E = torch.exp(a @ b.t() / tau)
    pos = y > 0
    l_cm = 0.5 * (-mean(torch.log((E * pos).sum(1) / E.sum(1))) - mean(torch.log((E * pos).sum(0) / E.sum(0))))
    if B > 1:
        off = ~torch.eye(B, dtype=torch.bool)
        na = F.softmax((s * a @ a.t())[off].view(B, B - 1), 1)
        nb = F.softmax((s * b @ b.t())[off].view(B, B - 1), 1)
        kl = lambda p, q: mean((p * (p.log() - q.log())).sum(1))
        l_im = 0.5 * (kl(na, nb) + kl(nb, na))
    else:
        l_im = torch.zeros((), dtype=torch.double)
    u = 1.0 / B ** 2
    p_row = E / E.sum(1, keepdim=True)
    p_col = E.t() / E.t().sum(1, keepdim=True)
    l_kl = 0.5 * (mean((u * (torch.log(torch.tensor(u)) - torch.log(p_row + EPS))).sum(1))
                  + mean((u * (torch.log(torch.tensor(u)) - torch.log(p_col + EPS))).sum(1)))
    return l_cm + gamma * l_im + kappa * l_kl


terms = {
    "sdm": (lambda: sdm(inp["f_i"], inp["f_t"]), ["f_i", "f_t"]),
    "itc": (lambda: itc(inp["f_i"], inp["f_t"]), ["f_i", "f_t"]),
    "cmpm": (lambda: cmpm(inp["f_i"], inp["f_t"]), ["f_i", "f_t"]),
    "id": (lambda: (mean(F.cross_entropy(inp["logits_i"], pid, reduction="none"))
                    + mean(F.cross_entropy(inp["logits_t"], pid, reduction="none"))) / 2, ["logits_i", "logits_t"]),
    "mlm": (lambda: mean(F.cross_entropy(inp["mlm_logits"], inp["mlm_labels"], reduction="none"), mlm_w), ["mlm_logits"]),
    "imal": (lambda: imal(inp["g_i"], inp["g_t"]), ["g_i", "g_t"]),
}
out = {}
for name, (fn, wrt) in terms.items():
    value = fn()
    grads = torch.autograd.grad(value, [inp[k] for k in wrt])
    out[name] = value.detach().float().reshape(1)
    for k, g in zip(wrt, grads):
        out[f"{name}.grad.{k}"] = g.detach().float().contiguous()
save_file(out, sys.argv[2])
