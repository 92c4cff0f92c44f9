"""Scaling axes other than rows, measured side by side in one run, next to their targets.

Example::

    .venv/bin/python bench/axes.py --data-dir bench/_data             # every axis, full size
    .venv/bin/python bench/axes.py --axes groups,rowgroups --repeat 3
    .venv/bin/python bench/axes.py --scale 0.01 --repeat 1            # quick smoke run

Each axis runs evalkit (and, where the target is relative to DuckDB, the DuckDB baseline of
``_impl.py``) in its own measured subprocess (``_harness.run_measured``: whole-process wall
time and peak RSS, interpreter start-up included), ``--repeat`` times after ``--warmup``
unmeasured runs, and reports medians. Ratios are formed within this one run, so a loaded
machine slows both sides of a ratio; absolute seconds are only comparable within a run.

Axes (full size; ``--scale`` multiplies every row count):

============  ==========================================================  =====================
axis          what runs                                                   target
============  ==========================================================  =====================
groups        ``--by user`` over 2M rows with 10 and 200k distinct users;  200k: < 1 GiB and
              1M distinct users over 10M rows                             <= 3x the 10-group
                                                                          time; 1M: < 2 GiB
classes       2,000 rows x 20k classes and x 50k classes (list layout)    20k: < 1 GiB;
                                                                          50k: runs
rowgroups     40,000 rows in 1 row group and in 4,000 row groups          4k <= 3x (+2 s) of 1
topk          ``--top-k 100000`` and ``--top-k 1000000`` over 6M rows     bounded by k x row
                                                                          payload, or refused
                                                                          (exit 2) up front
list1000      1M x 1000 list column: evalkit and DuckDB, whole job        <= 1.25x DuckDB,
                                                                          < 1 GiB
default       6M x 10 wide, ``evaluate FILE --by split --out DIR`` as a   plots on <= 1.1x
              user types it (plots and terminal tables on), the same      DuckDB; --no-plots
              with ``--no-plots``, and DuckDB's whole job                 < DuckDB
============  ==========================================================  =====================

Datasets are generated deterministically into ``--data-dir`` (reused when present) from
``_datagen``'s row generator: ``wide10``-shaped rows plus a ``user`` column for the groups
axis, and ``list<float32>`` probabilities for the classes axis.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _datagen
import _harness
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
IMPL_SCRIPT = BENCH_DIR / "_impl.py"
GIB = 1 << 30
AXES = ("groups", "classes", "rowgroups", "topk", "list1000", "default")


def default_evalkit_cmd() -> list[str]:
    """The venv's ``evalkit`` console script, else ``python -m evalkit`` from this checkout."""
    beside = Path(sys.executable).parent / "evalkit"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-m", "evalkit"]


# --------------------------------------------------------------------------- data


def _write_chunks(path: Path, chunks: Callable[[], object], meta: dict) -> Path:
    """Write the tables yielded by ``chunks()`` as one zstd Parquet file, atomically.

    Each table is one row group; the file carries ``meta`` so a stale file is regenerated.
    """
    key = json.dumps(meta, sort_keys=True)
    try:
        if (pq.read_schema(path).metadata or {}).get(b"evalkit_axes") == key.encode():
            return path
    except (OSError, pa.ArrowInvalid):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    writer = None
    try:
        for table, rg_rows in chunks():  # type: ignore[attr-defined]
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema.with_metadata({"evalkit_axes": key}),
                                          compression="zstd")
            writer.write_table(table, row_group_size=rg_rows)
        writer.close()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return path


def wide_with_users(data_dir: Path, rows: int, users: int, seed: int = 0,
                    row_group_rows: int = 1_000_000) -> Path:
    """``wide10`` rows plus a ``user`` string column with ``users`` distinct values."""
    spec = _datagen.DATASETS["wide10"]

    def chunks():  # noqa: ANN202
        names = None
        for i, start in enumerate(range(0, rows, spec.chunk_rows)):
            m = min(spec.chunk_rows, rows - start)
            t = _datagen._chunk_table(spec, seed, i, start, m)
            if users:
                rng = np.random.default_rng([seed, i, 99])
                # Every user occurs at least once over the file when rows >= users.
                idx = (np.arange(start, start + m) % users) if rows >= users else rng.integers(0, users, m)
                idx = rng.permutation(idx).astype(np.int32)
                if names is None:
                    names = pa.array([f"user{j:07d}" for j in range(users)])
                t = t.append_column("user", names.take(pa.array(idx)))
            yield t, row_group_rows

    path = data_dir / f"axes_wide_{rows}_u{users}_rg{row_group_rows}_s{seed}.parquet"
    return _write_chunks(path, chunks, {"kind": "wide_users", "rows": rows, "users": users,
                                        "rg": row_group_rows, "seed": seed, "v": 1})


def many_classes(data_dir: Path, rows: int, classes: int, seed: int = 0) -> Path:
    """``rows`` rows of ``list<float32>`` probabilities over ``classes`` classes."""
    chunk = max(1, (1 << 24) // classes)

    def chunks():  # noqa: ANN202
        for i, start in enumerate(range(0, rows, chunk)):
            m = min(chunk, rows - start)
            _, split, label, probs = _datagen._chunk_arrays(seed, i, start, m, classes)
            offsets = pa.array(np.arange(0, (m + 1) * classes, classes, dtype=np.int32))
            yield pa.table({
                "id": pa.array(np.arange(start, start + m)),
                "split": pa.array(np.array(_datagen.SPLITS)[split]),
                "label": pa.array(label),
                "probs": pa.ListArray.from_arrays(offsets, pa.array(probs.reshape(-1))),
            }), chunk

    path = data_dir / f"axes_classes_{rows}_k{classes}_s{seed}.parquet"
    return _write_chunks(path, chunks, {"kind": "classes", "rows": rows, "k": classes,
                                        "seed": seed, "v": 1})


# --------------------------------------------------------------------------- running


class Runner:
    """Measured runs of commands; keeps every result for the JSON record."""

    def __init__(self, args: argparse.Namespace, out_root: Path) -> None:
        self.args = args
        self.out_root = out_root
        self.records: list[dict] = []

    def evalkit(self, label: str, data: Path, *flags: str, user_typed: bool = False) -> dict:
        """``evalkit evaluate DATA --out OUT FLAGS`` (quiet and without plots unless user_typed)."""
        out = self.out_root / label.replace(" ", "_").replace("/", "_")
        cmd = [*self.args.evalkit_cmd, "evaluate", str(data), "--out", str(out), "--overwrite",
               *flags]
        if not user_typed:
            cmd += ["--quiet", "--no-plots", "--format", "none"]
        return self.run(label, cmd, out)

    def duckdb(self, label: str, data: Path) -> dict:
        out = self.out_root / label.replace(" ", "_")
        return self.run(label, [sys.executable, str(IMPL_SCRIPT), "duckdb", str(data), str(out)],
                        out, mkdir=True)

    def run(self, label: str, cmd: list[str], out: Path, mkdir: bool = False) -> dict:
        runs = []
        a = self.args
        for i in range(a.warmup + a.repeat):
            shutil.rmtree(out, ignore_errors=True)
            if mkdir:
                out.mkdir(parents=True)
            res = _harness.run_measured(cmd, timeout_s=a.timeout)
            tag = "warm-up" if i < a.warmup else f"run {i - a.warmup + 1}"
            status = "ok" if res.ok else ("TIMEOUT" if res.timed_out else f"rc={res.returncode}")
            print(f"    {label:<34} {tag:<8} {res.wall_s:8.2f} s {_harness.fmt_bytes(res.peak_rss_bytes):>10}"
                  f"  {status}", flush=True)
            if i >= a.warmup:
                runs.append(res)
            if not res.ok:
                runs = [res]
                break
        ok = all(r.ok for r in runs)
        rec = {
            "label": label,
            "cmd": cmd,
            "ok": ok,
            "returncode": runs[-1].returncode,
            "wall_s": _harness.median([r.wall_s for r in runs]),
            "rss_bytes": _harness.median([r.peak_rss_bytes for r in runs]),
            "stderr_tail": runs[-1].stderr_tail[-800:],
            "walls": [r.wall_s for r in runs],
        }
        self.records.append(rec)
        shutil.rmtree(out, ignore_errors=True)
        return rec


def _gib(rec: dict) -> str:
    return f"{rec['rss_bytes'] / GIB:.2f} GiB"


def _fig(rec: dict) -> str:
    if not rec["ok"]:
        return f"FAILED (rc={rec['returncode']})"
    return f"{rec['wall_s']:.2f} s, {_gib(rec)}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def _scaled(n: int, scale: float, least: int = 1) -> int:
    return max(least, int(round(n * scale)))


# --------------------------------------------------------------------------- axes


def axis_groups(r: Runner, data_dir: Path, scale: float) -> list[tuple[str, str, str, str]]:
    rows, big_rows = _scaled(2_000_000, scale, 1000), _scaled(10_000_000, scale, 1000)
    g200, g1m = _scaled(200_000, scale, 100), _scaled(1_000_000, scale, 100)
    ten = r.evalkit("groups 10", wide_with_users(data_dir, rows, 10), "--by", "user")
    many = r.evalkit(f"groups {g200}", wide_with_users(data_dir, rows, g200), "--by", "user")
    huge = r.evalkit(f"groups {g1m}", wide_with_users(data_dir, big_rows, g1m), "--by", "user")
    ratio = many["wall_s"] / ten["wall_s"] if ten["ok"] and many["ok"] else math.nan
    return [
        ("groups", f"--by user, {rows:,} rows, 10 / {g200:,} users",
         f"{_fig(ten)} / {_fig(many)} ({ratio:.2f}x)",
         f"< 1 GiB, <= 3x: {_verdict(many['ok'] and many['rss_bytes'] < GIB and ratio <= 3)}"),
        ("groups", f"--by user, {big_rows:,} rows, {g1m:,} users", _fig(huge),
         f"< 2 GiB: {_verdict(huge['ok'] and huge['rss_bytes'] < 2 * GIB)}"),
    ]


def axis_classes(r: Runner, data_dir: Path, scale: float) -> list[tuple[str, str, str, str]]:
    rows = _scaled(2_000, scale, 100)
    k20, k50 = 20_000, 50_000  # the class count is the axis: never scaled
    a = r.evalkit("classes 20k", many_classes(data_dir, rows, k20))
    b = r.evalkit("classes 50k", many_classes(data_dir, rows, k50))
    return [
        ("classes", f"{rows:,} rows x 20k classes, list", _fig(a),
         f"< 1 GiB: {_verdict(a['ok'] and a['rss_bytes'] < GIB)}"),
        ("classes", f"{rows:,} rows x 50k classes, list", _fig(b), f"runs: {_verdict(b['ok'])}"),
    ]


def axis_rowgroups(r: Runner, data_dir: Path, scale: float) -> list[tuple[str, str, str, str]]:
    rows = _scaled(40_000, scale, 4000)
    one = r.evalkit("rowgroups 1", wide_with_users(data_dir, rows, 0, row_group_rows=rows))
    many = r.evalkit("rowgroups 4000", wide_with_users(data_dir, rows, 0, row_group_rows=rows // 4000))
    limit = 3 * one["wall_s"] + 2
    ok = one["ok"] and many["ok"] and many["wall_s"] <= limit
    return [("row groups", f"{rows:,} rows in 1 / 4,000 row groups",
             f"{_fig(one)} / {_fig(many)} ({many['wall_s'] / one['wall_s']:.2f}x)",
             f"<= 3x + 2 s ({limit:.1f} s): {_verdict(ok)}")]


def axis_topk(r: Runner, data_dir: Path, scale: float) -> list[tuple[str, str, str, str]]:
    rows = _scaled(6_000_000, scale, 1000)
    data, _ = _datagen.ensure(data_dir, "wide10", rows)
    out = []
    for k in (_scaled(100_000, scale), _scaled(1_000_000, scale)):
        rec = r.evalkit(f"topk {k}", data, "--by", "split", "--top-k", str(k))
        if rec["ok"]:
            fig, verdict = _fig(rec), f"< 1 GiB: {_verdict(rec['rss_bytes'] < GIB)}"
        elif rec["returncode"] == 2:
            msg = rec["stderr_tail"].strip().splitlines()[-1:] or [""]
            fig = f"refused in {rec['wall_s']:.2f} s: {msg[0][:90]}"
            verdict = "refused up front (exit 2): met"
        else:
            fig, verdict = _fig(rec), "NOT MET"
        out.append(("top-k", f"--top-k {k:,} on {rows:,} rows", fig, verdict))
    return out


def axis_list1000(r: Runner, data_dir: Path, scale: float) -> list[tuple[str, str, str, str]]:
    rows = _scaled(1_000_000, scale, 1000)
    data, _ = _datagen.ensure(data_dir, "list1000", rows)
    ek = r.evalkit("list1000 evalkit", data, "--by", "split")
    dk = r.duckdb("list1000 duckdb", data)
    ratio = ek["wall_s"] / dk["wall_s"] if ek["ok"] and dk["ok"] else math.nan
    return [("1000 classes", f"{rows:,} x 1000 list", f"evalkit {_fig(ek)}; DuckDB {_fig(dk)} ({ratio:.2f}x)",
             f"<= 1.25x, < 1 GiB: {_verdict(ratio <= 1.25 and ek['rss_bytes'] < GIB)}")]


def axis_default(r: Runner, data_dir: Path, scale: float) -> list[tuple[str, str, str, str]]:
    rows = _scaled(6_000_000, scale, 1000)
    data, _ = _datagen.ensure(data_dir, "wide10", rows)
    typed = r.evalkit("default (plots on)", data, "--by", "split", user_typed=True)
    noplots = r.evalkit("default --no-plots", data, "--by", "split", "--no-plots", user_typed=True)
    dk = r.duckdb("default duckdb", data)
    rp = typed["wall_s"] / dk["wall_s"] if typed["ok"] and dk["ok"] else math.nan
    rn = noplots["wall_s"] / dk["wall_s"] if noplots["ok"] and dk["ok"] else math.nan
    return [
        ("default run", f"{rows:,} x 10 wide, --by split, plots on", f"{_fig(typed)} ({rp:.2f}x DuckDB)",
         f"<= 1.1x DuckDB: {_verdict(rp <= 1.1)}"),
        ("default run", "the same, --no-plots", f"{_fig(noplots)} ({rn:.2f}x DuckDB)",
         f"< DuckDB: {_verdict(rn < 1.0)}"),
        ("default run", "DuckDB, whole job", _fig(dk), ""),
    ]


AXIS_FUNCS = {"groups": axis_groups, "classes": axis_classes, "rowgroups": axis_rowgroups,
              "topk": axis_topk, "list1000": axis_list1000, "default": axis_default}


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """The issue's table: axis, input, figure (median wall, peak RSS), target and verdict."""
    head = ("axis", "input", "figure (median wall, peak RSS)", "target")
    print("\n| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--axes", default=",".join(AXES), help=f"comma list of {','.join(AXES)}")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every row and group count (0.01 for a smoke run; default 1)")
    p.add_argument("--repeat", type=int, default=3, help="measured runs per command (median)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured runs first")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where datasets live; reused if present (default: temp dir, deleted)")
    p.add_argument("--evalkit-cmd", type=shlex.split, default=default_evalkit_cmd(),
                   help="how to start evalkit (default: the venv's console script, else "
                        "'python -m evalkit')")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    p.add_argument("--json", type=Path, default=None, help="write every run as JSON here")
    args = p.parse_args(argv)
    args.axes = [a.strip() for a in args.axes.split(",") if a.strip()]
    bad = [a for a in args.axes if a not in AXES]
    if bad:
        p.error(f"unknown axis {bad[0]!r}; axes are {', '.join(AXES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the axes; exit status 1 if any target is not met."""
    args = parse_args(argv)
    if args.evalkit_cmd[1:2] == ["-m"]:  # running from the checkout: make it importable
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    compiled = _harness.compile_bytecode(args.evalkit_cmd)
    tmp_root = Path(tempfile.mkdtemp(prefix="evalkit-axes-"))
    data_dir = args.data_dir or tmp_root / "data"
    runner = Runner(args, tmp_root / "out")
    table: list[tuple[str, str, str, str]] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load = os.getloadavg()
    try:
        for axis in args.axes:
            print(f"\n{axis}:", flush=True)
            table += AXIS_FUNCS[axis](runner, data_dir, args.scale)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    print(f"\nstarted {started}; load average at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores; medians of {args.repeat} run(s); evalkit "
          f"{'from bytecode' if compiled else 'compiled from source at every start'}")
    print_table(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"started": started, "table": table,
                                         "runs": runner.records}, indent=2, default=str))
    return 0 if all("NOT MET" not in row[3] for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
