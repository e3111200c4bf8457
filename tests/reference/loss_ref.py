"""Independent PyTorch reference of the loss terms, written from METHOD.md section 3.
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


def kl_rows(logits, q):
    p = F.softmax(logits, 1)
    return (p * (F.log_softmax(logits, 1) - torch.log(q + EPS))).sum(1).mean()


def sdm(fi, ft):
    i, t = F.normalize(fi, dim=1), F.normalize(ft, dim=1)
    q = y / y.sum(1, keepdim=True)
    return kl_rows(s * i @ t.t(), q) + kl_rows(s * t @ i.t(), q)


def itc(fi, ft):
    logits = s * F.normalize(fi, dim=1) @ F.normalize(ft, dim=1).t()
    target = torch.arange(B)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def cmpm(fi, ft):
    q = y / y.norm(dim=1, keepdim=True)
    return kl_rows(fi @ F.normalize(ft, dim=1).t(), q) + kl_rows(ft @ F.normalize(fi, dim=1).t(), q)


def imal(gi, gt, tau=0.5, gamma=0.05, kappa=0.005):
    a, b = F.normalize(gi, dim=1), F.normalize(gt, dim=1)
    E = torch.exp(a @ b.t() / tau)
    pos = y > 0
    l_cm = 0.5 * (-torch.log((E * pos).sum(1) / E.sum(1)).mean() - torch.log((E * pos).sum(0) / E.sum(0)).mean())
    if B > 1:
        off = ~torch.eye(B, dtype=torch.bool)
        na = F.softmax((s * a @ a.t())[off].view(B, B - 1), 1)
        nb = F.softmax((s * b @ b.t())[off].view(B, B - 1), 1)
        kl = lambda p, q: (p * (p.log() - q.log())).sum(1).mean()
        l_im = 0.5 * (kl(na, nb) + kl(nb, na))
    else:
        l_im = torch.zeros((), dtype=torch.double)
    u = 1.0 / B ** 2
    p_row = E / E.sum(1, keepdim=True)
    p_col = E.t() / E.t().sum(1, keepdim=True)
    l_kl = 0.5 * ((u * (torch.log(torch.tensor(u)) - torch.log(p_row + EPS))).sum(1).mean()
                  + (u * (torch.log(torch.tensor(u)) - torch.log(p_col + EPS))).sum(1).mean())
    return l_cm + gamma * l_im + kappa * l_kl


terms = {
    "sdm": (lambda: sdm(inp["f_i"], inp["f_t"]), ["f_i", "f_t"]),
    "itc": (lambda: itc(inp["f_i"], inp["f_t"]), ["f_i", "f_t"]),
    "cmpm": (lambda: cmpm(inp["f_i"], inp["f_t"]), ["f_i", "f_t"]),
    "id": (lambda: (F.cross_entropy(inp["logits_i"], pid) + F.cross_entropy(inp["logits_t"], pid)) / 2, ["logits_i", "logits_t"]),
    "mlm": (lambda: F.cross_entropy(inp["mlm_logits"], inp["mlm_labels"]), ["mlm_logits"]),
    "imal": (lambda: imal(inp["g_i"], inp["g_t"]), ["g_i", "g_t"]),
}
out = {}
for name, (fn, wrt) in terms.items():
    value = fn()
    grads = torch.autograd.grad(value, [inp[w] for w in wrt])
    out[name] = value.detach().float().reshape(1)
    for w, g in zip(wrt, grads):
        out[f"{name}.grad.{w}"] = g.detach().float().contiguous()
save_file(out, sys.argv[2])
