"""ICFG-PEDES-sized evaluation benchmark: `ccma rank` against a straightforward PyTorch
implementation of the protocol (full descending argsort of the similarity matrix, then a Python
loop for mINP), on 19,848 x 19,848 random 512-d features with ICFG's id structure (1,000 ids).

usage: python3 benches/eval_icfg.py PATH/TO/ccma [N]
Prints the timings, their ratios, the peak memory of `ccma rank` (through GNU time) and the largest
difference between the two sides' metrics. `ccma rank --log debug` reports how its time splits
between the similarity products and the ranking, the part the reference's metrics time measures."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import save_file

ccma = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 19848
torch.manual_seed(0)
pids = torch.randint(0, 1000, (n,))
gallery = torch.nn.functional.normalize(torch.randn(n, 512), dim=1)
# Each query is a noisy copy of its own gallery image, so the metrics are far from trivial.
queries = torch.nn.functional.normalize(torch.randn(n, 512) + 2.0 * gallery, dim=1)
qpids = pids.clone()

tmp = tempfile.mkdtemp()
qpath, gpath = os.path.join(tmp, "q.safetensors"), os.path.join(tmp, "g.safetensors")
save_file({"features": queries.contiguous(), "pids": qpids}, qpath)
save_file({"features": gallery.contiguous(), "pids": pids}, gpath)

# `ccma rank` first, while this process is still small (forking a large parent costs time).
gnu_time = shutil.which("time") or "/usr/bin/time"
t0 = time.perf_counter()
out = subprocess.run([gnu_time, "-f", "peak_rss_kib %M", ccma, "--log", "debug", "rank", "--queries", qpath,
                      "--gallery", gpath, "--json"], capture_output=True, check=True, text=True)
t_ours = time.perf_counter() - t0
peak_mib = int(re.search(r"peak_rss_kib (\d+)", out.stderr).group(1)) / 1024
split = re.search(r"similarity products ([\d.]+) s, ranking ([\d.]+) s", out.stderr)
t_products, t_ranking = float(split.group(1)), float(split.group(2))
ours = json.loads(out.stdout)["t2i"]
t0 = time.perf_counter()
sim = queries @ gallery.t()
t_matmul = time.perf_counter() - t0
t0 = time.perf_counter()
order = torch.argsort(sim, dim=1, descending=True)
matches = (pids[order] == qpids[:, None])
cmc = matches.cumsum(1).clamp(max=1).float()
num_rel = matches.sum(1).float()
tmp_cmc = matches.cumsum(1).float() / torch.arange(1, n + 1).float()
ap = (tmp_cmc * matches).sum(1) / num_rel
inp = []
for row in matches:
    last = torch.nonzero(row)[-1].item()
    inp.append(row.sum().item() / (last + 1))
ref = {"R1": 100 * cmc[:, 0].mean().item(), "R5": 100 * cmc[:, 4].mean().item(), "R10": 100 * cmc[:, 9].mean().item(),
       "mAP": 100 * ap.mean().item(), "mINP": 100 * sum(inp) / len(inp)}
t_ref = time.perf_counter() - t0

worst = max(abs(ours[k] - ref[k]) for k in ref)
print(json.dumps({"n": n, "reference_metrics_s": round(t_ref, 2), "reference_matmul_s": round(t_matmul, 2),
                  "ccma_rank_total_s": round(t_ours, 2), "ccma_products_s": t_products, "ccma_ranking_s": t_ranking,
                  "ratio_ranking_vs_reference_metrics": round(t_ref / t_ranking, 1),
                  "ratio_total_vs_reference_metrics": round(t_ref / t_ours, 1),
                  "ratio_total_vs_reference_with_matmul": round((t_ref + t_matmul) / t_ours, 1),
                  "ccma_rank_peak_rss_mib": round(peak_mib), "max_metric_difference": worst, "metrics": ours}))
