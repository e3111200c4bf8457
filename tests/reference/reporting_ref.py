"""Independent reference of ccma's reporting: the metrics as means of a per-query file, the paired
bootstrap interval of `ccma compare`, and the mean and standard deviation of `ccma summarize`.
Prints JSON.

usage: reporting_ref.py means QUERIES.jsonl
       reporting_ref.py bootstrap A.jsonl B.jsonl RESAMPLES SEED
       reporting_ref.py summarize RUN_DIR...

`means` sums each record's values in file order and divides, as the protocol defines the metrics
(R@k: the share of queries whose first true match ranks at most k; mAP, mINP: mean AP, INP; all
x100). `bootstrap` draws the resamples the way README's "Reporting results" documents (numpy's
PCG64 given the state that rand_pcg's Pcg64::new(seed, STREAM) starts from; index =
floor(u * n / 2^64)), takes each metric's mean per-query difference B - A over each resample, and
its 2.5th and 97.5th percentiles by numpy's median_unbiased rule. `summarize` reads each run's
results.json and gives numpy's mean and standard deviation (ddof=1) of its test metrics.
"""
import json
import sys

import numpy as np

METRICS = ["R1", "R5", "R10", "mAP", "mINP"]
STREAM = 0xA02BDBF7BB3C0A7AC28FA16A64ABF96
MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
MASK = (1 << 128) - 1


def records(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def values(recs):
    """Per-query values in percent, one array per metric."""
    rank = np.array([r["rank"] for r in recs])
    return {"R1": 100.0 * (rank <= 1), "R5": 100.0 * (rank <= 5), "R10": 100.0 * (rank <= 10),
            "mAP": 100.0 * np.array([r["AP"] for r in recs]),
            "mINP": 100.0 * np.array([r["INP"] for r in recs])}


def means(recs):
    n = len(recs)
    hits = {k: 0 for k in (1, 5, 10)}
    ap = inp = 0.0
    for r in recs:
        for k in hits:
            hits[k] += r["rank"] <= k
        ap += r["AP"]
        inp += r["INP"]
    return {"R1": 100 * hits[1] / n, "R5": 100 * hits[5] / n, "R10": 100 * hits[10] / n,
            "mAP": 100 * ap / n, "mINP": 100 * inp / n}


def resample_indices(n, resamples, seed):
    inc = (STREAM << 1) | 1
    state = (((seed + inc) & MASK) * MULTIPLIER + inc) & MASK
    bg = np.random.PCG64()
    st = bg.state
    st["state"] = {"state": state, "inc": inc}
    st["has_uint32"], st["uinteger"] = 0, 0
    bg.state = st
    u = bg.random_raw(n * resamples).astype(np.uint64)
    hi, lo = u >> np.uint64(32), u & np.uint64(0xFFFFFFFF)
    nn = np.uint64(n)
    idx = (hi * nn + ((lo * nn) >> np.uint64(32))) >> np.uint64(32)
    return idx.astype(np.int64).reshape(resamples, n)


def bootstrap(a, b, resamples, seed):
    va, vb = values(a), values(b)
    ma, mb = means(a), means(b)
    idx = resample_indices(len(a), resamples, seed)
    out = {}
    for k in METRICS:
        stats = (vb[k] - va[k])[idx].mean(axis=1)
        low, high = np.quantile(stats, [0.025, 0.975], method="median_unbiased")
        out[k] = {"A": ma[k], "B": mb[k], "diff": mb[k] - ma[k], "low": float(low), "high": float(high)}
    return out


def summarize(runs):
    t2i = []
    for run in runs:
        with open(f"{run}/results.json", encoding="utf-8") as f:
            t2i.append(json.load(f)["t2i"])
    table = np.array([[m[k] for k in METRICS] for m in t2i])
    return {"mean": dict(zip(METRICS, table.mean(axis=0).tolist())),
            "std": dict(zip(METRICS, table.std(axis=0, ddof=1).tolist()))}


cmd = sys.argv[1]
if cmd == "means":
    print(json.dumps(means(records(sys.argv[2]))))
elif cmd == "bootstrap":
    a, b = records(sys.argv[2]), records(sys.argv[3])
    print(json.dumps(bootstrap(a, b, int(sys.argv[4]), int(sys.argv[5]))))
elif cmd == "summarize":
    print(json.dumps(summarize(sys.argv[2:])))
else:
    sys.exit(f"unknown command {cmd!r}")
