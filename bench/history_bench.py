"""Scale benchmark of ``evalkit history``: many nightly reports, many groupings, many groups.

Generates ``--runs`` report directories shaped exactly like ``evalkit evaluate`` writes them
(``summary.json`` with metadata first, then the overall line and every group's record;
``overall.parquet`` and one ``by_<cols>.parquet`` per grouping, ``grouped.parquet`` (all of
them in one file, with ``evalkit.grouped_file.write_grouped`` as evaluate writes it; not with
``--no-grouped``: reports of an evalkit before it); a small ``rows.parquet`` stand-in that
history must never read), then times ``evalkit history`` over all of them as a whole process
and reports its CPU seconds and peak memory (every process it starts counted: its workers and
plot helpers, PSS summed) besides the peak RSS of its largest process: cold (a first run, or ``--no-reuse``) and nightly
(yesterday's history in ``--out``, one new report), each with plots (the default) and
without, next to the issue's 10 s target.

Example::

    .venv/bin/python bench/history_bench.py --data-dir bench/_data/history     # 365 x 50 x 1000
    .venv/bin/python bench/history_bench.py --runs 30 --groupings 5 --groups 100 --repeat 1

Report directories are named by a random token, not by date, so the order comes from the
recorded start time (``metadata.created``, one night apart). Group means follow a stable
series per group (sampling noise only) with steps planted in the first ``--planted``
groups of grouping ``g00`` at run ``runs - 10``; the run prints how many of them history
flagged and at which run. An existing data directory with the same shape is reused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness  # noqa: E402

from evalkit.grouped_file import GROUPED_FILE, write_grouped  # noqa: E402
from evalkit.outdir import fingerprint_entry, write_manifest  # noqa: E402

TARGET_S = 10.0  # issue 17: 365 nightly reports of 50 groupings x 1,000 groups in under 10 s
STATS = ["count", "mean", "std", "min", "p50", "p90", "p99", "max", "sum", "clipped", "accuracy"]


def _shape(args: argparse.Namespace) -> dict:
    return {"runs": args.runs, "groupings": args.groupings, "groups": args.groups,
            "classes": args.classes, "planted": args.planted, "seed": args.seed,
            "json_groups": not args.no_json_groups, "manifest": 1,
            **({} if args.no_grouped else {"grouped": 1})}


def _table(keys: dict[str, list], rng: np.random.Generator, base: np.ndarray, n: int) -> pa.Table:
    g = len(base)
    count = rng.integers(n // 2, n * 2, size=g)
    std = base * 1.8
    mean = base + rng.standard_normal(g) * std / np.sqrt(count)
    cols = {k: v if isinstance(v, pa.Array) else pa.array(v, pa.large_string()) for k, v in keys.items()}
    cols.update(
        count=pa.array(count, pa.int64()), mean=mean, std=std, min=mean * 0.01, p50=mean * 0.6,
        p90=mean * 2.1, p99=mean * 4.5, max=np.full(g, 16.11809565095832), sum=mean * count,
        clipped=pa.array(rng.integers(0, 3, size=g), pa.int64()),
        accuracy=np.clip(0.9 - 0.1 * mean + rng.standard_normal(g) * 0.01, 0, 1))
    return pa.table(cols)


def _records(t: pa.Table) -> list[dict]:
    return t.to_pylist()



def write_run(root: Path, shape: dict, run: int) -> None:
    """Write report directory number ``run`` (0-based) of the synthetic history."""
    rng = np.random.default_rng([shape["seed"], run])
    name = run_dir_name(shape, run)
    d = root / name
    if (d / "summary.json").is_file():
        return
    tmp = root / f".{name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    created = dt.datetime(2025, 12, 1, 2, 30, tzinfo=dt.UTC) + dt.timedelta(days=run)
    run_id = np.random.default_rng([shape['seed'], 2 * 10**6 + run]).bytes(16).hex()
    n_groups, n_groupings = shape["groups"], shape["groupings"]
    base_rng = np.random.default_rng([shape["seed"], 999])
    group_keys = pa.array([f"k{i:04d}" for i in range(n_groups)], pa.large_string())
    groups: dict[str, list] = {}
    tables: list[tuple[str, tuple[str, ...], pa.Table]] = []
    names = ["class"] + [f"g{j:02d}" for j in range(n_groupings)]
    for gname in names:
        if gname == "class":
            keys = {"class": [f"c{i}" for i in range(shape["classes"])]}
        else:
            keys = {gname: group_keys}
        base = 0.3 + 0.4 * base_rng.random(len(next(iter(keys.values()))))
        if gname == "g00" and run >= shape["runs"] - 10:
            base[: shape["planted"]] *= 1.2  # planted step: +20% from run runs-10 on
        t = _table(keys, rng, base, 2000)
        stem = "by_" + gname
        pq.write_table(t, tmp / f"{stem}.parquet", compression="zstd")
        tables.append((gname, (gname,), t))
        if shape["json_groups"]:
            groups[gname] = t.to_pandas().to_json(orient="records", double_precision=15)
    overall = _table({}, rng, np.array([0.45]), 2_000_000)
    pq.write_table(overall, tmp / "overall.parquet", compression="zstd")
    if shape.get("grouped"):  # as evaluate writes it (since issue 17's fifth session)
        write_grouped([("overall", (), overall), *tables], tmp / GROUPED_FILE)
    pq.write_table(pa.table({"row": np.arange(10), "loss": np.ones(10)}), tmp / "rows.parquet")
    fingerprints = {p.name: fingerprint_entry(p) for p in sorted(tmp.glob("*.parquet"))}
    meta = {
        "evalkit_version": "0.1.0", "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": 60.0, "input": f"/data/preds/{created:%Y-%m-%d}", "input_files": 1,
        "input_bytes": 10**9, "keys": ["id"], "rows_read": 2_000_000, "rows_used": 2_000_000,
        "rows_skipped": 0, "skipped": {}, "eps": 1e-07, "sum_tol": 0.001, "renormalize": False,
        "classes": [f"c{i}" for i in range(shape["classes"])],
        "groupings": ["overall", *names], "engine": "local", "config_hash": "0" * 16,
        "run_id": run_id,
    }
    # Same keys in the same order as evaluate writes; the group records without indentation
    # (the C encoder: json.dumps(indent=2) of 50,000 records takes 35 s).
    text = ('{\n  "metadata": ' + json.dumps(meta, indent=2).replace("\n", "\n  ")
            + ',\n  "overall": ' + json.dumps(_records(overall)[0])
            + ',\n  "groups": {' + ", ".join(f'"{k}": {v}' for k, v in groups.items()) + "}"
            + ',\n  "confusion": [],\n  "confusion_cells": 0,\n  "hardest": {}'
            + ',\n  "table_fingerprints": ' + json.dumps(fingerprints) + "\n}\n")
    (tmp / "summary.json").write_text(text, encoding="utf-8")
    # as evaluate's AtomicDir.commit: the manifest lists every file with its fingerprint
    write_manifest(tmp, "evaluate", run_id)
    os.replace(tmp, d)


def generate(root: Path, shape: dict, workers: int = 2) -> float:
    """Write every run not already there; return the seconds it took."""
    root.mkdir(parents=True, exist_ok=True)
    marker = root / "shape.json"
    if marker.is_file() and json.loads(marker.read_text()) != shape:
        raise SystemExit(f"{root}: holds a history of another shape ({marker.read_text().strip()}); "
                         "use another --data-dir")
    marker.write_text(json.dumps(shape))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write_run, [root] * shape["runs"], [shape] * shape["runs"], range(shape["runs"])))
    return time.perf_counter() - t0


#: Run in a fresh process by :func:`measure`: the command in its own process group, whose
#: memory is sampled every 50 ms (the sum over all its processes: the history process, its
#: worker processes and plot helpers; PSS: a page shared by n processes counts 1/n in each).
_MEASURE = """
import os, resource, subprocess, sys, threading, time

def members(pgid):
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat[stat.rfind(")") + 2:].split()[2]) == pgid:
                yield pid

def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith("Pss:")), 0)
    except OSError:
        return 0

sampled = sys.argv[1] == "sample"
t = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:], process_group=0)
peak = [0]
def sample():
    while proc.poll() is None:
        peak[0] = max(peak[0], sum(pss_kib(p) for p in members(proc.pid)))
        time.sleep(0.05)
if sampled and os.path.isdir("/proc/self"):
    threading.Thread(target=sample, daemon=True).start()
rc = proc.wait()
w = time.perf_counter() - t
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(w, u.ru_utime + u.ru_stime, u.ru_maxrss, peak[0], rc)
"""


def measure(cmd: list[str], sample: bool = False) -> tuple[float, float, float, float, int]:
    """Wall seconds, CPU seconds (user + sys, of every process the command started), the
    peak RSS of its largest process and, with ``sample``, the peak of the memory of all its
    processes together (PSS summed, sampled every 50 ms; else and without /proc 0), both in
    GiB, and its exit code. Sampling reads every process's smaps_rollup 20 times a second:
    on two cores that slowed a cold history with plots (five processes) by 1-2 s, so the
    timed runs are not sampled; one more run is, for the memory."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, "sample" if sample else "time", *cmd],
                         capture_output=True, text=True, check=True)
    wall, cpu, rss_kib, total_kib, rc = out.stdout.split()[-5:]
    return float(wall), float(cpu), int(rss_kib) / 2**20, int(total_kib) / 2**20, int(rc)


def run_dir_name(shape: dict, run: int) -> str:
    """The directory name of run number ``run`` (0-based), as :func:`write_run` names it."""
    return f"run-{np.random.default_rng([shape['seed'], 10**6 + run]).integers(1 << 40):011x}"


def _ok(measured: tuple[float, ...], cmd: list[str]) -> None:
    if measured[-1] not in (0, 5):
        raise SystemExit(f"evalkit history failed with exit code {measured[-1]}: {' '.join(cmd[:12])} ...")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=366,
                   help="reports generated; histories are timed over runs - 1 of them")
    p.add_argument("--groupings", type=int, default=50)
    p.add_argument("--groups", type=int, default=1000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--planted", type=int, default=5, help="groups of g00 with a +20%% step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-json-groups", action="store_true",
                   help="summary.json without group records (smaller than what evaluate writes)")
    p.add_argument("--no-grouped", action="store_true",
                   help="reports without grouped.parquet (as evaluate wrote them before it): history "
                        "then reads one table per grouping")
    p.add_argument("--data-dir", type=Path, help="keep the reports here (default: a temp dir)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--history-args", default="", help="extra flags for evalkit history")
    p.add_argument("--modes", default="", help="only these of cold,nightly (default both)")
    p.add_argument("--generate-only", action="store_true", help="write the reports and stop")
    args = p.parse_args(argv)
    shape = _shape(args)
    tmp = None
    root = args.data_dir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="evalkit-history-bench-")
        root = Path(tmp.name) / "reports"
    took = generate(root, shape)
    print(f"reports: {shape['runs']} runs x {shape['groupings']} groupings x {shape['groups']} groups "
          f"in {root} (generated in {took:.1f} s)")
    if args.generate_only:
        return 0
    out = Path(tempfile.mkdtemp(prefix="evalkit-history-out-")) / "history"
    try:  # the histories written here (~0.7 GB each) are removed however the run ends
        base = [sys.executable, "-m", "evalkit", "history", "--out", str(out), "--overwrite", "-q",
                "--format", "none", *shlex.split(args.history_args)]
        env_path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env_path}" if env_path else str(ROOT)
        _harness.compile_bytecode(base)  # what a user's installed evalkit starts from
        # the last runs - 1 nights (365 of the default 366): yesterday's history held nights
        # 0 .. runs - 2; tonight's holds 1 .. runs - 1 (one new report, the oldest left out)
        names = [str(root / run_dir_name(shape, r)) for r in range(shape["runs"])]
        every, yesterday = names[1:], names[:-1]
        summary = []
        # cold: a first run (or --no-reuse); nightly: last night's history in --out, tonight adds
        # one report. Each with plots (the default, as configs/nightly.sh runs it) and without.
        for mode, plots in (("cold", False), ("cold", True), ("nightly", False), ("nightly", True)):
            if args.modes and mode not in args.modes.split(","):
                continue
            flags = [] if plots else ["--no-plots"]
            walls, cpus, rsss, totals = [], [], [], []
            for i in range(args.repeat):
                if mode == "cold":  # nothing to reuse
                    cmd = [*base, *flags, "--no-reuse", *every]
                else:  # last night's history is in --out: tonight adds one report
                    _ok(measure([*base, "--no-plots", "--no-reuse", *yesterday]), base)
                    cmd = [*base, *flags, *every]
                wall, cpu, rss, _, rc = measure(cmd)
                _ok((wall, cpu, rss, 0.0, rc), cmd)
                walls.append(wall)
                cpus.append(cpu)
                rsss.append(rss)
                print(f"{mode} {'plots on ' if plots else '--no-plots'} run {i + 1}: wall {wall:.2f} s, "
                      f"CPU (user+sys, all processes) {cpu:.2f} s, largest process RSS {rss:.2f} GiB, "
                      f"load {os.getloadavg()[0]:.1f}")
            if mode == "nightly":
                _ok(measure([*base, "--no-plots", "--no-reuse", *yesterday]), base)
            *_, total, rc = measure(cmd, sample=True)  # the memory, from one more run (sampled)
            _ok((total, rc), cmd)
            totals.append(total)
            print(f"{mode} {'plots on ' if plots else '--no-plots'} memory run: peak {total:.2f} GiB "
                  "(all processes, PSS, sampled every 50 ms; its time not counted)")
            wall = sorted(walls)[len(walls) // 2]
            summary.append(f"{mode:8s} {'plots on ' if plots else 'no plots'}: wall median {wall:6.2f} s "
                           f"(min {min(walls):.2f}, max {max(walls):.2f}), CPU median "
                           f"{sorted(cpus)[len(cpus) // 2]:6.2f} s, peak memory {max(totals):.2f} GiB "
                           f"(largest process {max(rsss):.2f} GiB): "
                           f"{'meets' if wall < TARGET_S else 'DOES NOT meet'} the {TARGET_S:g} s target"
                           + ("" if (args.runs, args.groupings, args.groups) == (366, 50, 1000)
                              else " (set for 365 reports x 50 groupings x 1,000 groups)"))
        print(f"evalkit history over {len(every)} reports (load average now {os.getloadavg()[0]:.1f}; "
              "on a shared machine read the CPU seconds):")
        print("\n".join(summary))
        history = json.loads((out / "history.json").read_text())
        planted = [c for c in history["changes"] if c["grouping"] == "g00"
                   and c["group"] in {f"k{i:04d}" for i in range(args.planted)}]
        others = [c for c in history["changes"] if c not in planted]
        print(f"planted steps flagged: {len(planted)} of {args.planted} "
              f"(at runs {sorted({c['run'] for c in planted})}, planted at run {args.runs - 10}); "
              f"other groups flagged: {len(others)} of {sum(t['groups'] for t in history['groupings'].values())}")
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
