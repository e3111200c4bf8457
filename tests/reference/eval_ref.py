"""Independent reference of the retrieval protocol (METHOD.md section 4): full descending sort,
match matrix, CMC, AP from the cumulative matches, INP from the last match. Prints JSON.
usage: eval_ref.py QUERIES.safetensors GALLERY.safetensors [--i2t]"""
import json
import sys

import torch
from safetensors.torch import load_file


def protocol(qf, gf, qp, gp):
    qf = torch.nn.functional.normalize(qf.double(), dim=1)
    gf = torch.nn.functional.normalize(gf.double(), dim=1)
    sim = qf @ gf.t()
    order = torch.argsort(sim, dim=1, descending=True, stable=True)
    matches = (gp[order] == qp[:, None]).double()
    keep = matches.sum(1) > 0
    matches = matches[keep]
    cmc = (matches.cumsum(1) >= 1).double()
    num_rel = matches.sum(1)
    positions = torch.arange(1, matches.shape[1] + 1, dtype=torch.double)
    ap = ((matches.cumsum(1) / positions) * matches).sum(1) / num_rel
    last = matches.shape[1] - 1 - torch.argmax(matches.flip(1), dim=1)
    inp = num_rel / (last + 1).double()
    return {"R1": 100 * cmc[:, 0].mean().item(), "R5": 100 * cmc[:, 4].mean().item(),
            "R10": 100 * cmc[:, 9].mean().item(), "mAP": 100 * ap.mean().item(),
            "mINP": 100 * inp.mean().item(), "excluded": int((~keep).sum().item())}


q, g = load_file(sys.argv[1]), load_file(sys.argv[2])
out = {"t2i": protocol(q["features"], g["features"], q["pids"], g["pids"])}
if "--i2t" in sys.argv:
    out["i2t"] = protocol(g["features"], q["features"], g["pids"], q["pids"])
print(json.dumps(out))
