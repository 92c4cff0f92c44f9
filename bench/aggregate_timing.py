"""Micro-benchmark of the accumulators: GroupStats.update / finalize and TopK.update on 1M rows.

Prints one line per variant (key type x quantile mode); asserts nothing. It used to run
inside the test suite, where it measured the machine rather than checking behaviour.

    PYTHONPATH=. python bench/aggregate_timing.py [--rows 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pyarrow as pa

from evalkit.aggregate import GroupStats, TopK

EPS = 1e-7
LO = -math.log1p(-EPS)
HI = -math.log(EPS)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant; the best is shown")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(12)
    n = args.rows
    g = rng.integers(0, 10, n)
    loss = np.clip(rng.exponential(1.0, n), LO, HI)
    clipped = loss >= HI
    correct = rng.random(n) < 0.7
    names = np.array([f"class_{i}" for i in range(10)])
    variants = {
        "10 int64 keys": [pa.array(g)],
        "10 string keys": [pa.array(names[g])],
        "10 dictionary keys": [pa.DictionaryArray.from_arrays(pa.array(g.astype(np.int32)),
                                                           pa.array(names))],
        "no keys (1 group)": [],
    }
    for mode in ("auto", "sketch"):
        for label, keys in variants.items():
            best = math.inf
            for _ in range(args.repeat):
                gs = GroupStats(["k"] if keys else [], quantile_mode=mode)
                t0 = time.perf_counter()
                gs.update(keys, loss, clipped, correct)
                best = min(best, time.perf_counter() - t0)
            t0 = time.perf_counter()
            gs.finalize()
            fin = time.perf_counter() - t0
            print(f"GroupStats.update {n:,} rows, {label}, {mode}: {best * 1e3:.1f} ms "
                  f"(finalize {fin * 1e3:.1f} ms, {gs.quantile_method})")
    tk = TopK(10, ["k"])
    payload = pa.table({"row": np.arange(n)})
    t0 = time.perf_counter()
    tk.update(variants["10 string keys"], loss, payload)
    print(f"TopK(10).update {n:,} rows, 10 groups: {(time.perf_counter() - t0) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
