"""Calibration and power of the slice search (issue 16): how often a search on data with no
planted effect reports a significant slice (family-wise, BH at q), and how often a planted
slice is found, for the skewness-corrected Welch test and plain Welch.

    PYTHONPATH=. python bench/slice_calibration.py --seeds 400 --dist exponential
    PYTHONPATH=. python bench/slice_calibration.py --seeds 400 --dist accurate --planted 0.5

Distributions (n rows, columns region (4 values), device (3), tier (3), depth 2: 43 slices):
``exponential`` (mean 0.7), ``accurate`` (losses of an accurate model: 97% near 0, 3%
confident mistakes uniform in [1, 16.1] nats: skewness ~7), ``lognormal`` (sigma 1.2).
``--planted D`` adds D nats to region=LATAM & device=web (about 1/12 of the rows).
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa

from evalkit.aggregate.slices import SliceStats, assess_slices

TARGET = "region=LATAM, device=web"


def data(seed: int, n: int, dist: str, planted: float = 0.0):
    rng = np.random.default_rng(seed)
    cols = {"region": rng.choice(["EU", "US", "APAC", "LATAM"], n),
            "device": rng.choice(["ios", "android", "web"], n),
            "tier": rng.integers(0, 3, n)}
    if dist == "exponential":
        loss = rng.exponential(0.7, n)
    elif dist == "accurate":
        big = rng.random(n) < 0.03
        loss = np.where(big, rng.uniform(1.0, 16.1, n), rng.exponential(0.02, n))
    elif dist == "lognormal":
        loss = rng.lognormal(-1.0, 1.2, n)
    else:
        raise SystemExit(f"unknown --dist {dist}")
    loss[(cols["region"] == "LATAM") & (cols["device"] == "web")] += planted
    return cols, loss


def run(seed: int, n: int, dist: str, planted: float, correct_skew: bool):
    cols, loss = data(seed, n, dist, planted)
    stats = SliceStats(list(cols), 2)
    stats.update({k: pa.array(v) for k, v in cols.items()}, loss, rows=np.arange(len(loss)))
    table, _ = assess_slices(stats, correct_skew=correct_skew)
    return table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=400)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--dist", default="exponential")
    ap.add_argument("--planted", type=float, default=0.0)
    ap.add_argument("--first-seed", type=int, default=100)
    a = ap.parse_args()
    for correct in (False, True):
        any_sig = any_worse = found = 0
        for seed in range(a.first_seed, a.first_seed + a.seeds):
            t = run(seed, a.n, a.dist, a.planted, correct)
            any_sig += bool(t["significant"].any())
            any_worse += bool(t["worse"].any())
            found += bool(t.loc[t["slice"] == TARGET, "worse"].any())
        name = "skew-corrected" if correct else "plain Welch"
        head = f"{a.dist} n={a.n} seeds={a.seeds} {name:15s}"
        if a.planted:  # slices containing the planted one are true positives too: power only
            print(f"{head} power (planted +{a.planted:g} found worse) = {found / a.seeds:.3f}", flush=True)
        else:
            print(f"{head} P(any significant) = {any_sig / a.seeds:.3f}, "
                  f"P(any significantly worse) = {any_worse / a.seeds:.3f}", flush=True)


if __name__ == "__main__":
    main()
