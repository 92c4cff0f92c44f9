"""Dask engine benchmark: local engine vs Dask on 1 and N workers, as ratios.

Generates (or reuses, ``--data-dir``) the ``wide10`` dataset of ``--rows`` rows (default
10M: 10 classes, 1M-row row groups, see ``_datagen.py``), then times
``evalkit.evaluate`` with the local engine and with ``engine="dask"`` on a
``distributed.LocalCluster`` (worker processes, one thread each, loopback only) of each
size in ``--workers``. The cluster is started outside the timed runs; its start-up time
is reported separately and also added to one run ("with start-up": what a one-off
``evalkit evaluate --engine dask`` without ``--scheduler`` pays).

    .venv/bin/python bench/dask_bench.py --rows 2000000 --data-dir bench/_data
    .venv/bin/python bench/dask_bench.py --workers 1,2 --repeat 3 --json /tmp/dask.json

Every run's overall statistics are checked against the local engine's (counts exact,
sums / means to 1e-12 relative).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _datagen  # noqa: E402

import evalkit  # noqa: E402
from evalkit.engines import dask as dask_engine  # noqa: E402


def _timed(fn, repeat: int, warmup: int) -> tuple[list[float], evalkit.EvalResult]:  # noqa: ANN001
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    assert result is not None
    return times, result


def _check(local: evalkit.EvalResult, other: evalkit.EvalResult, what: str) -> None:
    a, b = local.overall, other.overall
    assert int(a["count"]) == int(b["count"]), what
    for k in ("sum", "mean"):
        assert math.isclose(float(a[k]), float(b[k]), rel_tol=1e-12), (what, k, a[k], b[k])
    for k in ("p50", "p90", "p99"):
        if k in a:
            assert math.isclose(float(a[k]), float(b[k]), rel_tol=1e-3), (what, k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="keep / reuse the generated dataset here (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", default="1,2", help="cluster sizes, comma-separated")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-rows", action="store_true", help="do not write per-row output")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import distributed

    tmp = tempfile.TemporaryDirectory(prefix="evalkit-dask-bench-")
    data_dir = args.data_dir or Path(tmp.name)
    t0 = time.perf_counter()
    path, generated = _datagen.ensure(data_dir, "wide10", args.rows, args.seed)
    print(f"data: {path} ({args.rows:,} rows, {os.path.getsize(path) / 2**20:.0f} MiB, "
          f"{'generated' if generated else 'reused'} in {time.perf_counter() - t0:.1f}s)")
    spool = Path(tmp.name)
    kw = {"write_rows": not args.no_rows, "spool_dir": spool}

    out: dict[str, object] = {"rows": args.rows, "cpus": os.cpu_count(),
                              "write_rows": not args.no_rows}
    times, local = _timed(lambda: evalkit.evaluate(path, **kw), args.repeat, args.warmup)
    local_s = statistics.median(times)
    out["local_s"] = local_s
    print(f"local engine: median {local_s:.2f}s  (runs: {', '.join(f'{t:.2f}' for t in times)})")

    dask_runs: dict[int, dict[str, float]] = {}
    for n in [int(x) for x in args.workers.split(",") if x]:
        t0 = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, silence_logs=40,
                                           **dask_engine.LOCAL_CLUSTER_OPTIONS)
        client = distributed.Client(cluster)
        client.wait_for_workers(n)
        startup = time.perf_counter() - t0
        try:
            times, res = _timed(
                lambda c=client: evalkit.evaluate(path, engine="dask", client=c, **kw),
                args.repeat, args.warmup)
            _check(local, res, f"dask x{n}")
        finally:
            t1 = time.perf_counter()
            client.close()
            cluster.close()
            shutdown = time.perf_counter() - t1
        run_s = statistics.median(times)
        dask_runs[n] = {"run_s": run_s, "startup_s": startup, "shutdown_s": shutdown,
                        "with_startup_s": startup + run_s + shutdown}
        print(f"dask x{n} workers: median {run_s:.2f}s  (runs: "
              f"{', '.join(f'{t:.2f}' for t in times)}); cluster start {startup:.2f}s, "
              f"close {shutdown:.2f}s")
    out["dask"] = dask_runs

    print("\nratios (time / local engine time; < 1 is faster than local):")
    ratios: dict[str, float] = {}
    for n, r in dask_runs.items():
        ratios[f"dask{n}_vs_local"] = r["run_s"] / local_s
        ratios[f"dask{n}_with_startup_vs_local"] = r["with_startup_s"] / local_s
        print(f"  dask x{n} / local            {r['run_s'] / local_s:6.2f}")
        print(f"  dask x{n} (+cluster) / local {r['with_startup_s'] / local_s:6.2f}")
    if 1 in dask_runs:
        for n, r in dask_runs.items():
            if n != 1:
                ratios[f"speedup_{n}_vs_1_workers"] = dask_runs[1]["run_s"] / r["run_s"]
                print(f"  speed-up x{n} vs x1 workers  {dask_runs[1]['run_s'] / r['run_s']:6.2f}")
    out["ratios"] = ratios
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
