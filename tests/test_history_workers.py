"""history's groupings built in forked worker processes (issue 17: a cold history of a year):
the same report as one process writes, errors raised as one process raises them, nothing
lost when a worker dies, nothing left behind on Ctrl-C, and one process where forking is
not possible."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evalkit
import evalkit.trend as tr
from evalkit import plot_process
from evalkit.grouped_file import GROUPED_FILE
from evalkit.trend import history

from .conftest import assert_group_ended, process_members
from .test_history import DAY0, _same_outputs, _stats, make_report
from .test_history_kinds import _flip_middle

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or (os.cpu_count() or 1) < 2,
                                reason="workers need os.fork and two cores")

GATES = {"max_drift_pct": 50, "groups": {"region": {"max_mean_loss": 0.9}}}


def _series(root: Path, n_runs: int = 40, seed: int = 0) -> list[str]:
    """Nightly reports (grouped.parquet, manifests) over two calendar months, of five
    groupings besides overall, with a step in one store and one channel from run 30 on."""
    rng = np.random.default_rng(seed)
    keys = {"region": ["APAC", "EU", "LATAM", "US"], "store": list(range(30)), "split": ["train", "val"],
            "channel": ["web", "app", "shop"], "tier": ["a", "b", "c", "d", "e"]}
    base = {g: 0.3 + 0.4 * rng.random(len(k)) for g, k in keys.items()}
    out = []
    for r in range(n_runs):
        tables = {}
        for g, k in keys.items():
            m = base[g] + rng.standard_normal(len(k)) * 0.01
            if g in ("store", "channel") and r >= 29:  # a step in each worker's share
                m[1] *= 1.3
            tables[g] = _stats({g: k}, m, 2000, 1.0)
        out.append(str(make_report(root, f"run-{(r * 7919) % 1000:03d}", DAY0 + pd.Timedelta(days=r), tables,
                                   manifest=True, grouped=True)))
    return out


@pytest.fixture
def forked(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Workers for any history (however small); the pids of those forked."""
    pids: list[int] = []
    real = plot_process.fork_worker

    def spy(work, closes=()):  # type: ignore[no-untyped-def]
        w = real(work, closes)
        if w is not None:
            pids.append(w._ch.pid)
        return w

    monkeypatch.setattr(tr, "WORKERS_MIN_TABLES", 1)
    monkeypatch.setattr(plot_process, "fork_worker", spy)
    return pids


def _all_children() -> list[str]:
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat[stat.rfind(")") + 2:].split()[1] == me:
                    found.append(f"{pid} {stat[stat.rfind(')') + 2]}")
    return found


_EARLIER: set[str] = set()  # pids of children the test process had before the test began


@pytest.fixture(autouse=True)
def _earlier_children() -> None:
    """Children of the test process that earlier tests of the suite left (a dask cluster's
    processes, say) are not this test's: :func:`_children` leaves them out."""
    _EARLIER.clear()
    _EARLIER.update(c.split()[0] for c in _all_children())


def _children() -> list[str]:
    """Processes this one forked during the test that still exist (zombies included)."""
    return [c for c in _all_children() if c.split()[0] not in _EARLIER]


def _one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tr, "WORKERS_MIN_TABLES", 10**9)


def test_workers_write_the_report_one_process_writes(tmp_path: Path, forked: list[int],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _series(tmp_path / "r")
    monkeypatch.setattr(tr, "PLOT_POOL_MIN", 1)
    a = history(paths, out=tmp_path / "a", gates=GATES, window=20, lookback=5)
    assert len(forked) == tr.HISTORY_WORKERS
    assert _children() == []
    _one_process(monkeypatch)
    b = history(paths, out=tmp_path / "b", gates=GATES, window=20, lookback=5)
    assert len(forked) == tr.HISTORY_WORKERS  # none this time
    _same_outputs(tmp_path / "a", tmp_path / "b")
    assert [f.message for f in a.failures] == [f.message for f in b.failures]
    assert a.changes["message"].tolist() == b.changes["message"].tolist()
    assert a.changes["message"].str.startswith("store=1: mean loss up").any()
    assert a.changes["message"].str.startswith("channel=app: mean loss up").any()
    assert a.groupings == b.groupings == ["overall", "region", "store", "split", "channel", "tier"]
    pd.testing.assert_frame_equal(a.table("store"), b.table("store"))


def test_an_error_in_a_worker_is_raised_as_one_process_raises_it(tmp_path: Path, forked: list[int],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _series(tmp_path / "r", 12)
    _flip_middle(Path(paths[5]) / GROUPED_FILE)  # same size, one bit: differs from its manifest
    with pytest.raises(evalkit.ReportError) as in_worker:
        history(paths, out=tmp_path / "a", plots=False)
    assert forked and _children() == []
    assert not (tmp_path / "a").exists()
    with pytest.warns(evalkit.EvalkitWarning, match="left out for this run"):
        history(paths, out=tmp_path / "a", plots=False, skip_bad=True)
    _one_process(monkeypatch)
    with pytest.raises(evalkit.ReportError) as here:
        history(paths, out=tmp_path / "b", plots=False)
    assert str(in_worker.value) == str(here.value)
    assert "its content differs from what evalkit-manifest.json records" in str(here.value)
    with pytest.warns(evalkit.EvalkitWarning, match="left out for this run"):
        history(paths, out=tmp_path / "b", plots=False, skip_bad=True)
    _same_outputs(tmp_path / "a", tmp_path / "b")


def test_an_exception_that_does_not_pickle_still_ends_the_run(tmp_path: Path, forked: list[int],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    class Odd(Exception):
        def __init__(self, a: int, b: int) -> None:  # unpickles without its arguments: fails
            super().__init__(f"odd {a} {b}")

    real = tr._Build._build

    def build(self, name, *args):  # type: ignore[no-untyped-def]
        if name == "channel":
            raise Odd(1, 2)
        return real(self, name, *args)

    monkeypatch.setattr(tr._Build, "_build", build)
    paths = _series(tmp_path / "r", 8)
    with pytest.raises(Exception, match="odd 1 2"):
        history(paths, out=tmp_path / "a", plots=False)
    assert forked and _children() == []
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("when", ["first", "last", "after"])
def test_a_killed_worker_loses_nothing(tmp_path: Path, forked: list[int], monkeypatch: pytest.MonkeyPatch,
                                       when: str) -> None:
    """A worker killed (by the system, by a person) before its first grouping, after some,
    or after its last one (its files maybe half written): its groupings are built and
    written again by the history process, the report is the one a single process writes."""
    paths = _series(tmp_path / "r", 30)
    me = os.getpid()
    real = tr._Build.steps

    def steps(self, groupings):  # type: ignore[no-untyped-def]
        seen = []
        for built in real(self, groupings):
            seen.append(built.name)
            if os.getpid() != me and built.name in ("split", "channel", "tier") and \
                    (when == "first" or (when == "last" and built.name == "tier")):
                os.kill(os.getpid(), signal.SIGKILL)
            yield built
        if os.getpid() != me and when == "after" and "tier" in seen:  # its files written, one spoilt
            self.writer.wait()
            month = sorted((self.tmp / "by_tier").iterdir())[0]
            month.write_bytes(b"PAR1")
            os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(tr._Build, "steps", steps)
    got = history(paths, out=tmp_path / "a", gates=GATES)
    assert forked and _children() == []
    assert got.changes["grouping"].tolist().count("channel") == 1
    monkeypatch.undo()
    _one_process(monkeypatch)
    history(paths, out=tmp_path / "b", gates=GATES)
    _same_outputs(tmp_path / "a", tmp_path / "b")


def test_without_fork_history_builds_in_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _series(tmp_path / "r", 12)
    history(paths, out=tmp_path / "b", plots=False)
    monkeypatch.setattr(tr, "WORKERS_MIN_TABLES", 1)
    monkeypatch.delattr(os, "fork")
    assert tr._start_workers.__module__ == "evalkit.trend"
    history(paths, out=tmp_path / "a", plots=False)
    _same_outputs(tmp_path / "a", tmp_path / "b")


def test_a_small_or_nightly_history_forks_no_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forks: list[object] = []
    monkeypatch.setattr(plot_process, "fork_worker", lambda *a, **k: forks.append(a))
    paths = _series(tmp_path / "r", 12)
    history(paths, out=tmp_path / "h", plots=False)  # 12 x 6 tables: below WORKERS_MIN_TABLES
    monkeypatch.setattr(tr, "WORKERS_MIN_TABLES", 1)
    history(paths, plots=False)  # no report written: nothing to build into
    history(paths, out=tmp_path / "h", overwrite=True, plots=False)  # a night: the history is reused
    assert forks == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
@pytest.mark.parametrize("delay", [0.0, 0.6])
def test_ctrl_c_while_workers_build_ends_them_and_writes_nothing(tmp_path: Path, delay: float) -> None:
    """SIGINT to the command's process group (Ctrl-C) while the workers build: the command
    exits 130 (or 0 if it was done), no process of its group is left (not a worker, not a
    plot helper, not a zombie), and no report (nor half of one) is in --out."""
    paths = _series(tmp_path / "r", 16)
    out = tmp_path / "h"
    proc = _patched_history("real = T._Build._build\n"
                            "def slow(*a):\n"
                            "    time.sleep(0.25)\n"
                            "    return real(*a)\n"
                            "T._Build._build = slow\n", paths, out, "-q")
    deadline = time.monotonic() + 60
    # the workers exist: the parent and two workers (the plot helpers come next)
    while len(process_members(proc.pid, by="group", zombies=False)) < 3 and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), err.decode()
    assert_group_ended(proc.pid)
    if proc.returncode == 130:
        assert not out.exists()
        assert not list(tmp_path.glob(".h*")), list(tmp_path.iterdir())  # no staging dir left


def test_a_worker_sends_in_order_and_ends_with_its_parent_s_close() -> None:
    def work(send):  # type: ignore[no-untyped-def]
        for k in range(3):
            send(("n", k, "x" * 200_000))  # more than a pipe holds: read on a thread
        time.sleep(60)

    w = plot_process.fork_worker(work)
    assert w is not None
    pid = w._ch.pid
    w.listen()
    assert [w.receive()[1] for _ in range(3)] == [0, 1, 2]
    w.close()
    assert _children() == []
    with pytest.raises(EOFError):
        w.receive()
    w.close()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_plot_helpers_start_no_thread_before_their_first_job() -> None:
    """history forks its workers after the plot helpers: no thread may exist by then."""
    import threading

    before = threading.active_count()
    pool = plot_process.start_pool(2)
    if pool is None:
        pytest.skip("no plot helpers here (matplotlib missing)")
    try:
        assert threading.active_count() == before
        assert len(pool.fds()) == 4
    finally:
        pool.close()
    assert _children() == []


def test_the_workers_shares_are_contiguous_and_of_about_equal_work() -> None:
    names = ["overall", "class", *[f"g{i:02d}" for i in range(50)]]
    costs = [301.0, 310.0, *[1300.0] * 50]
    a, b = tr._shares(names, costs, 2)
    assert a + b == names
    assert b[0] == "g25"  # 25 large groupings each (overall and class are small)
    assert tr._shares(list("ab"), [100, 1], 2) == [["a"], ["b"]]  # never an empty share
    assert tr._shares(list("abc"), [100, 1, 1], 2) == [["a"], ["b", "c"]]
    assert tr._shares(list("abcdef"), [1] * 6, 3) == [["a", "b"], ["c", "d"], ["e", "f"]]


def _patched_history(patch: str, paths: list, out: Path, *flags: str) -> subprocess.Popen:
    """``evalkit history PATHS --out OUT --format none FLAGS`` in a process of its own session
    (its group can be signalled and inspected), with two workers from the first table and
    ``patch`` (Python; ``os``, ``signal``, ``time`` and ``T`` = evalkit.trend imported) run first."""
    code = ("import os, signal, sys, time\n"
            "import evalkit.trend as T\n"
            "T.WORKERS_MIN_TABLES = 1\n"
            + patch +
            "from evalkit.cli import main\n"
            "sys.argv = ['evalkit', *sys.argv[1:]]\n"
            "main()\n")
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).resolve().parent.parent)}
    return subprocess.Popen([sys.executable, "-c", code, "history", *map(str, paths), "--out", str(out),
                             "--format", "none", *flags], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
@pytest.mark.parametrize("when", ["first", "later"])
def test_a_stopped_worker_does_not_hang_the_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    when: str) -> None:
    """A worker stopped (SIGSTOP: a debugger, a frozen process) before its first grouping or
    after some sends nothing more and uses no CPU: after WORKER_STALL_S the history process
    kills it, says so on stderr, builds its groupings itself, and writes the report one
    process writes; nothing is left behind. (It waited forever.)"""
    paths = _series(tmp_path / "r", 16)
    stop_at = {"first": "split", "later": "channel"}[when]  # the second worker's share starts at split
    out = tmp_path / "a"
    proc = _patched_history("T.WORKER_STALL_S = 1.0\n"
                            "T.WORKER_POLL_S = 0.05\n"
                            "me = os.getpid()\n"
                            "real = T._Build._build\n"
                            "def build(self, name, *a):\n"
                            f"    if os.getpid() != me and name == {stop_at!r}:\n"
                            "        os.kill(os.getpid(), signal.SIGSTOP)\n"
                            "    return real(self, name, *a)\n"
                            "T._Build._build = build\n", paths, out)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("history hung on a stopped worker")
    assert proc.returncode == 0, err.decode()
    assert_group_ended(proc.pid)
    said = [ln for ln in err.decode().splitlines() if "made no progress" in ln]
    assert len(said) == 1 and stop_at in said[0].split("building ")[1].split(")")[0], err.decode()
    assert "it is ended and its groupings are built in the history process" in said[0]
    _one_process(monkeypatch)
    history(paths, out=tmp_path / "b")
    _same_outputs(out, tmp_path / "b")
