"""Benchmark evalkit against hand-written baselines on synthetic prediction data.

Example::

    .venv/bin/python bench/run_bench.py --rows 10000000 --datasets wide10
    .venv/bin/python bench/run_bench.py --rows 200000 --repeat 1 --json /tmp/bench.json

Every implementation runs in its own subprocess, ``--warmup`` times unmeasured and
then ``--repeat`` times measured; wall time and peak RSS are per process (see
``_harness``).  The OS page cache is not dropped (that needs root), so inputs are
*warm*: all figures are for data already in memory, which favours no implementation.
See ``bench/README.md`` for what each implementation and column means.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import _datagen
import _harness

BENCH_DIR = Path(__file__).resolve().parent
IMPL_SCRIPT = BENCH_DIR / "_impl.py"
ALL_IMPLS = ("read-proxy", "duckdb", "polars", "pandas", "evalkit")
GROUPED_IMPLS = ("duckdb", "polars", "pandas", "evalkit")  # produce by_class/by_split
REFERENCE_ORDER = ("pandas", "duckdb", "polars", "evalkit")


def default_evalkit_cmd() -> str:
    """The ``evalkit`` console script next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "evalkit"
    if beside.exists():
        return str(beside)
    return shutil.which("evalkit") or str(beside)


def impl_command(
    impl: str, data: Path, out: Path, evalkit_cmd: str, evalkit_args: list[str]
) -> list[str]:
    """Command line running ``impl`` on ``data`` with outputs in ``out``."""
    if impl == "evalkit":
        return [
            evalkit_cmd,
            "evaluate",
            str(data),
            "--out",
            str(out),
            "--by",
            "split",
            "--overwrite",
            "--quiet",
            # Plots and terminal tables are not part of the benchmarked job.
            "--no-plots",
            "--format",
            "none",
            *evalkit_args,
        ]
    return [sys.executable, str(IMPL_SCRIPT), impl, str(data), str(out)]


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--datasets",
        type=_csv,
        default=list(_datagen.DATASETS),
        help=f"comma list of {','.join(_datagen.DATASETS)} (default: all)",
    )
    p.add_argument(
        "--rows",
        type=int,
        default=10_000_000,
        help="rows of wide10/list10; list1000 gets rows/10 (default 10M)",
    )
    p.add_argument(
        "--impls",
        type=_csv,
        default=list(ALL_IMPLS),
        help=f"comma list of {','.join(ALL_IMPLS)} (default: all)",
    )
    p.add_argument("--repeat", type=int, default=3, help="measured runs per implementation")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs first (default 1)")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where datasets live; reused if present (default: temp dir, deleted)",
    )
    p.add_argument(
        "--out-dir", type=Path, default=None, help="where outputs go (default: temp dir, deleted)"
    )
    p.add_argument("--seed", type=int, default=0, help="data generation seed")
    p.add_argument(
        "--evalkit-cmd",
        default=default_evalkit_cmd(),
        help="evalkit executable (default: the venv's console script)",
    )
    p.add_argument(
        "--evalkit-args",
        default="",
        help="extra flags for 'evalkit evaluate', one shell-quoted string",
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    p.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance of the check")
    p.add_argument("--json", type=Path, default=None, help="write results as JSON here")
    args = p.parse_args(argv)
    for name in args.datasets:
        if name not in _datagen.DATASETS:
            p.error(f"unknown dataset {name!r}")
    for name in args.impls:
        if name not in ALL_IMPLS:
            p.error(f"unknown implementation {name!r}")
    if args.repeat < 1 or args.warmup < 0:
        p.error("--repeat must be >= 1 and --warmup >= 0")
    return args


def run_impl(
    impl: str, data: Path, out: Path, args: argparse.Namespace, expected_rows: int
) -> dict[str, object]:
    """Warm-up and measured runs of one implementation; stops at its first failure."""
    cmd = impl_command(impl, data, out, args.evalkit_cmd, shlex.split(args.evalkit_args))
    runs: list[dict[str, object]] = []
    outputs: list[_harness.GroupedOutputs] = []
    error = None
    for i in range(args.warmup + args.repeat):
        warm = i < args.warmup
        shutil.rmtree(out, ignore_errors=True)
        if impl != "evalkit":
            out.mkdir(parents=True)
        res = _harness.run_measured(cmd, timeout_s=args.timeout)
        label = "warm-up" if warm else f"run {i - args.warmup + 1}"
        status = "ok" if res.ok else ("TIMEOUT" if res.timed_out else f"rc={res.returncode}")
        print(
            f"    {impl:<11} {label:<8} {res.wall_s:8.2f} s  "
            f"{_harness.fmt_bytes(res.peak_rss_bytes):>10}  {status}",
            flush=True,
        )
        if not res.ok:
            error = f"{status}: {res.stderr_tail.strip()[-1500:]}"
            runs.append({**res.to_dict(), "warmup": warm})
            break
        entry = {**res.to_dict(), "warmup": warm}
        try:
            if impl in GROUPED_IMPLS:
                outputs.append(_harness.read_outputs(out))
            else:
                rows = _harness.read_rows_count(out)
                if rows != expected_rows:
                    raise ValueError(f"rows.parquet has {rows} rows, expected {expected_rows}")
        except Exception as exc:  # noqa: BLE001 - any unreadable output is a failure
            error = f"bad output: {type(exc).__name__}: {exc}"
            runs.append(entry)
            break
        runs.append(entry)
    measured = [r for r in runs if not r["warmup"] and r["ok"]]
    walls = [r["wall_s"] for r in measured]
    rss = [r["peak_rss_bytes"] for r in measured]
    return {
        "ok": error is None,
        "error": error,
        "cmd": cmd,
        "runs": runs,
        "wall_median_s": _harness.median(walls),
        "wall_min_s": min(walls, default=math.nan),
        "wall_max_s": max(walls, default=math.nan),
        "peak_rss_median_bytes": _harness.median(rss),
        "rss_source": sorted({r["rss_source"] for r in measured}),
        "_outputs": outputs,
    }


def check_agreement(results: dict[str, dict], expected_rows: int, rtol: float) -> str | None:
    """Fill ``check``/``problems``/``max_rel_diff`` of each result; return the reference."""
    ref_name = next(
        (
            n
            for n in REFERENCE_ORDER
            if n in results and results[n]["ok"] and results[n]["_outputs"]
        ),
        None,
    )
    for name, r in results.items():
        r["problems"], r["max_rel_diff"] = [], {}
        if not r["ok"]:
            r["check"] = "FAILED"
            continue
        if name not in GROUPED_IMPLS:
            r["check"] = "n/a (proxy)"
            continue
        if ref_name is None:
            r["check"] = "no reference"
            continue
        ref = results[ref_name]["_outputs"][-1]
        for got in r["_outputs"]:
            problems, diffs = _harness.compare(got, ref, expected_rows, rtol)
            r["problems"].extend(p for p in problems if p not in r["problems"])
            for k, v in diffs.items():
                r["max_rel_diff"][k] = max(r["max_rel_diff"].get(k, 0.0), v)
        if r["problems"]:
            r["check"] = "MISMATCH!"
        else:
            r["check"] = "reference" if name == ref_name else f"ok vs {ref_name}"
    return ref_name


def _ratio(a: float, b: float) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def print_table(dataset: str, rows: int, results: dict[str, dict]) -> None:
    """Print the per-dataset result table, then failures and mismatches in detail."""
    proxy = results.get("read-proxy", {})
    ek = results.get("evalkit", {})
    proxy_wall = proxy.get("wall_median_s", math.nan) if proxy.get("ok") else math.nan
    proxy_rss = proxy.get("peak_rss_median_bytes", math.nan) if proxy.get("ok") else math.nan
    ek_wall = ek.get("wall_median_s", math.nan) if ek.get("ok") else math.nan
    header = (
        "impl",
        "wall s median (min-max)",
        "peak RSS",
        "wall/proxy",
        "wall/evalkit",
        "RSS/proxy",
        "check",
    )
    lines = []
    for name, r in results.items():
        if r["ok"]:
            wall = f"{r['wall_median_s']:.2f} ({r['wall_min_s']:.2f}-{r['wall_max_s']:.2f})"
            rss = _harness.fmt_bytes(r["peak_rss_median_bytes"])
            if "tree-sampled" in r["rss_source"]:
                rss += "*"
        else:
            wall, rss = "FAILED", "-"
        lines.append(
            (
                name,
                wall,
                rss,
                _ratio(r["wall_median_s"], proxy_wall) if r["ok"] else "-",
                _ratio(r["wall_median_s"], ek_wall) if r["ok"] else "-",
                _ratio(r["peak_rss_median_bytes"], proxy_rss) if r["ok"] else "-",
                r["check"],
            )
        )
    widths = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
    print(f"\n== {dataset}: {rows:,} rows (inputs warm in page cache) ==")
    for row in [header, tuple("-" * w for w in widths), *lines]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if any("tree-sampled" in r.get("rss_source", []) for r in results.values()):
        print("  * peak RSS is the sampled sum over a multi-process tree")
    for name, r in results.items():
        if not r["ok"]:
            print(f"\n  {name} FAILED: {r['error']}")
        elif r["problems"]:
            print(f"\n  {name} MISMATCH:")
            for prob in r["problems"]:
                print(f"    - {prob}")
        if r.get("max_rel_diff") and r["check"] != "reference":
            diffs = ", ".join(f"{k}={v:.1e}" for k, v in r["max_rel_diff"].items())
            print(f"  {name}: max relative diff per statistic: {diffs}")


def environment() -> dict[str, object]:
    """Machine and library versions for the JSON record."""
    versions = {}
    for pkg in ("numpy", "pandas", "pyarrow", "duckdb", "polars", "evalkit"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "mem_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "versions": versions,
        "page_cache": "warm (not dropped; needs root)",
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 1 if any implementation failed or mismatched."""
    args = parse_args(argv)
    _harness.compile_bytecode(shlex.split(args.evalkit_cmd))
    tmp_root = Path(tempfile.mkdtemp(prefix="evalkit-bench-"))
    data_dir = args.data_dir or tmp_root / "data"
    out_root = args.out_dir or tmp_root / "out"
    report: dict[str, object] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": environment(),
        "datasets": {},
    }
    bad = False
    try:
        for dataset in args.datasets:
            rows = _datagen.dataset_rows(dataset, args.rows)
            t0 = time.perf_counter()
            data, generated = _datagen.ensure(data_dir, dataset, rows, args.seed)
            gen_s = time.perf_counter() - t0
            size = data.stat().st_size
            how = f"generated in {gen_s:.1f} s" if generated else "reused"
            print(f"\n{dataset}: {data} ({_harness.fmt_bytes(size)}, {how})", flush=True)
            results = {
                impl: run_impl(impl, data, out_root / dataset / impl, args, rows)
                for impl in args.impls
            }
            ref = check_agreement(results, rows, args.rtol)
            print_table(dataset, rows, results)
            bad |= any(not r["ok"] or r["problems"] for r in results.values())
            for r in results.values():
                r.pop("_outputs")
            report["datasets"][dataset] = {
                "rows": rows,
                "path": str(data),
                "file_bytes": size,
                "generated": generated,
                "generation_s": gen_s,
                "reference": ref,
                "impls": results,
            }
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(_harness.json_safe(report), indent=2, default=str))
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    if args.json:
        print(f"\nresults written to {args.json}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
