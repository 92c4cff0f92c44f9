"""Running implementations under ``_measure.py`` and checking their outputs.

Peak RSS and wall time come from ``_measure.py``, a stdlib-only wrapper process
that spawns the implementation and reaps it with :func:`os.wait4` (see its
docstring for why the measurement must not be done from this, larger, process).
The wall time therefore includes interpreter start-up and imports of the
implementation, the same for every implementation and for the evalkit CLI.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

STDERR_TAIL_CHARS = 2000
TREE_RSS_MARGIN = 0.05
STAT_COLUMNS = ("count", "mean", "std", "min", "p50", "p90", "p99", "max", "sum")


@dataclass
class RunResult:
    """Outcome of one subprocess run."""

    cmd: list[str]
    returncode: int | None
    wall_s: float
    maxrss_bytes: int  # from wait4 (largest single process)
    tree_rss_sampled_bytes: int  # max over samples of the summed RSS of the process tree
    timed_out: bool = False
    stdout: str = ""
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        """True if the process exited with status 0 in time."""
        return self.returncode == 0 and not self.timed_out

    @property
    def rss_source(self) -> str:
        """Which measurement gives :attr:`peak_rss_bytes`.

        The sampled tree sum wins only if it exceeds the wait4 peak by more than
        ``TREE_RSS_MARGIN`` (several processes at once); for a single process the
        two agree up to the kernel's RSS counter slack of a few pages.
        """
        if self.tree_rss_sampled_bytes > self.maxrss_bytes * (1 + TREE_RSS_MARGIN):
            return "tree-sampled"
        return "wait4"

    @property
    def peak_rss_bytes(self) -> int:
        """The wait4 peak, or the sampled process-tree sum if clearly larger."""
        if self.rss_source == "tree-sampled":
            return self.tree_rss_sampled_bytes
        return self.maxrss_bytes

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly dict, including the derived fields."""
        d = asdict(self)
        d.update(ok=self.ok, peak_rss_bytes=self.peak_rss_bytes, rss_source=self.rss_source)
        return d


MEASURE_SCRIPT = Path(__file__).resolve().parent / "_measure.py"
SOURCE_ENV = "EVALKIT_BENCH_SOURCE"


def interpreter_of(cmd: list[str]) -> str | None:
    """The Python interpreter that ``cmd`` starts, or None when it cannot be told.

    ``cmd[0]`` is either an interpreter (``python -m evalkit``) or a console script whose
    ``#!`` line names one (``.venv/bin/evalkit``).
    """
    if not cmd:
        return None
    first = Path(cmd[0])
    if first.name.startswith("python"):
        return str(first)
    try:
        with open(first, "rb") as f:
            line = f.readline(4096)
    except OSError:
        return None
    if not line.startswith(b"#!"):
        return None
    parts = line[2:].decode(errors="replace").split()
    return parts[0] if parts and "python" in Path(parts[0]).name else None


_COMPILE = (
    "import compileall, os, sys, importlib.util as u\n"
    "ok = True\n"
    "for name in sys.argv[1:]:\n"
    "    spec = u.find_spec(name)\n"
    "    if spec is None or not spec.submodule_search_locations:\n"
    "        continue\n"
    "    for d in spec.submodule_search_locations:\n"
    "        ok = compileall.compile_dir(d, quiet=1) and ok\n"
    "sys.exit(0 if ok else 1)\n"
)


def compile_bytecode(cmd: list[str], packages: tuple[str, ...] = ("evalkit",)) -> bool:
    """Write the bytecode of ``packages`` as the interpreter ``cmd`` starts finds them.

    An installed evalkit (a wheel, or pip's compile step) has its bytecode; an editable checkout
    run with ``PYTHONDONTWRITEBYTECODE=1`` (as some CI and sandbox environments set) has none and
    compiles every module on every start, ~0.3 s of one core that no user pays. Timed runs
    must measure what users run, so benchmarks call this first. ``EVALKIT_BENCH_SOURCE=1``
    skips it (to measure the from-source start on purpose). Returns whether bytecode is in place.
    """
    if os.environ.get(SOURCE_ENV) == "1":
        return False
    python = interpreter_of(cmd)
    if python is None:
        return False
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([python, "-c", _COMPILE, *packages], env=env, capture_output=True,
                          text=True, check=False)
    return proc.returncode == 0


def run_measured(cmd: list[str], timeout_s: float | None = None) -> RunResult:
    """Run ``cmd`` under ``_measure.py``; wall time and peak RSS are the child's."""
    with tempfile.TemporaryDirectory(prefix="evalkit-bench-run-") as tmp:
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        wrapper = [sys.executable, str(MEASURE_SCRIPT), str(out_path), str(err_path)]
        wrapper += [str(timeout_s or 0), "--", *cmd]
        proc = subprocess.run(wrapper, capture_output=True, text=True, check=False)
        stdout = out_path.read_text(errors="replace") if out_path.exists() else ""
        stderr = err_path.read_text(errors="replace") if err_path.exists() else ""
    try:
        m = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (proc.stderr or proc.stdout)[-STDERR_TAIL_CHARS:]
        return RunResult(cmd, None, 0.0, 0, 0, stderr_tail=f"measure wrapper failed: {tail}")
    return RunResult(
        cmd=cmd,
        returncode=m["returncode"],
        wall_s=m["wall_s"],
        maxrss_bytes=m["maxrss_bytes"],
        tree_rss_sampled_bytes=m["tree_rss_sampled_bytes"],
        timed_out=m["timed_out"],
        stdout=stdout[-STDERR_TAIL_CHARS:],
        stderr_tail=stderr[-STDERR_TAIL_CHARS:],
    )


# --------------------------------------------------------------------------- outputs


@dataclass
class GroupedOutputs:
    """Grouped statistics read back from an implementation's output directory."""

    by_class: dict[str, dict[str, float]] = field(default_factory=dict)
    by_split: dict[str, dict[str, float]] = field(default_factory=dict)
    overall_mean: float = math.nan
    overall_count: int = 0
    rows_written: int | None = None


def _table_stats(path: Path, key: str) -> dict[str, dict[str, float]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pylist()
    out: dict[str, dict[str, float]] = {}
    for row in table:
        k = row[key]
        # Normalise keys: class 3 (int) and "3" (evalkit's class names) compare equal.
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        out[str(k)] = {c: float(row[c]) for c in STAT_COLUMNS if row.get(c) is not None}
    return out


def read_outputs(out_dir: Path) -> GroupedOutputs:
    """Read ``by_class``/``by_split``/``rows`` Parquet outputs (raises if missing)."""
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    res = GroupedOutputs(
        by_class=_table_stats(out_dir / "by_class.parquet", "class"),
        by_split=_table_stats(out_dir / "by_split.parquet", "split"),
    )
    counts = [v.get("count", 0.0) for v in res.by_class.values()]
    res.overall_count = int(sum(counts))
    if all("sum" in v for v in res.by_class.values()):
        total = sum(v["sum"] for v in res.by_class.values())
    else:
        total = sum(v["count"] * v["mean"] for v in res.by_class.values())
    res.overall_mean = total / res.overall_count if res.overall_count else math.nan
    rows_path = out_dir / "rows.parquet"
    if rows_path.exists():
        res.rows_written = pq.read_metadata(rows_path).num_rows
    return res


def read_rows_count(out_dir: Path) -> int:
    """Row count of ``rows.parquet`` in ``out_dir`` (from the footer only)."""
    import pyarrow.parquet as pq

    return pq.read_metadata(Path(out_dir) / "rows.parquet").num_rows


def json_safe(obj: object) -> object:
    """Replace NaN/inf floats by None, recursively, so the JSON is standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def _rel(a: float, b: float) -> float:
    if a == b:
        return 0.0
    if math.isnan(a) or math.isnan(b):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def compare(
    got: GroupedOutputs, ref: GroupedOutputs, expected_rows: int, rtol: float = 1e-6
) -> tuple[list[str], dict[str, float]]:
    """Compare ``got`` with ``ref``.

    Returns ``(problems, max_rel_diff)``.  Problems (the agreement check) cover the
    overall mean, per-class and per-split means and counts, group keys and the
    per-row output length.  ``max_rel_diff`` reports, per statistic, the largest
    relative difference over all groups, for information (e.g. approximate quantiles).
    """
    problems: list[str] = []
    if got.rows_written is not None and got.rows_written != expected_rows:
        problems.append(f"rows.parquet has {got.rows_written} rows, expected {expected_rows}")
    if got.overall_count != expected_rows:
        problems.append(f"by_class counts sum to {got.overall_count}, expected {expected_rows}")
    if _rel(got.overall_mean, ref.overall_mean) > rtol:
        problems.append(f"overall mean {got.overall_mean!r} vs {ref.overall_mean!r}")
    diffs: dict[str, float] = {}
    for table in ("by_class", "by_split"):
        g, r = getattr(got, table), getattr(ref, table)
        if set(g) != set(r):
            problems.append(f"{table} keys {sorted(g)[:5]}... vs {sorted(r)[:5]}...")
        bad_mean = [
            k for k in r if k in g and _rel(g[k].get("mean", math.nan), r[k]["mean"]) > rtol
        ]
        bad_count = [k for k in r if k in g and g[k].get("count") != r[k]["count"]]
        if bad_mean:
            problems.append(f"{table} mean differs for {bad_mean[:5]}")
        if bad_count:
            problems.append(f"{table} count differs for {bad_count[:5]}")
        for k in set(g) & set(r):
            for stat in STAT_COLUMNS:
                if stat in g[k] and stat in r[k]:
                    diffs[stat] = max(diffs.get(stat, 0.0), _rel(g[k][stat], r[k][stat]))
    return problems, diffs


def median(values: list[float]) -> float:
    """Median of a non-empty list (NaN for an empty one)."""
    if not values:
        return math.nan
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def fmt_bytes(n: float) -> str:
    """Human-readable binary size."""
    if n is None or math.isnan(n):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"
