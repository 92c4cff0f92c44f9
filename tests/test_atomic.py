"""Nothing lost: outputs appear together or not at all; inputs are never modified.

A report is built in ``.<name>.tmp-<pid>-<host>-<rand>`` beside its target and renamed into
place at the end. These tests interrupt runs (SIGTERM, SIGKILL, write failures, disk full)
and check that the previous report is intact byte for byte, that no partial report or
temporary directory is left (or that the next run sweeps it after a hard kill), and that
input files keep their bytes and mtimes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
import evalkit.api
import evalkit.outdir
from evalkit import errors as E
from evalkit.cli import main
from evalkit.outdir import PRIVATE_MARKER, AtomicDir

ROOT = Path(__file__).resolve().parents[1]


def make_preds(path: Path, n: int = 2000, k: int = 4, seed: int = 0, labels: bool = True,
               first_id: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    cols = {"id": np.arange(first_id, first_id + n), "region": rng.choice(["EU", "US"], n),
            **{f"prob_{j}": p[:, j] for j in range(k)}}
    if labels:
        cols["label"] = rng.integers(0, k, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), path, row_group_size=500)
    return path


def snapshot(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` with its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def leftovers(parent: Path) -> list[str]:
    """Temporary directories of evalkit runs in ``parent``."""
    return sorted(p.name for p in parent.iterdir()
                  if ".tmp-" in p.name or ".old-" in p.name or p.name.startswith(".evalkit-rows-"))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def previous(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """An input and a previous report written from it: (input, report dir, its bytes)."""
    inp = make_preds(tmp_path / "in" / "preds.parquet")
    out = tmp_path / "out" / "report"
    evalkit.evaluate(str(inp), by="region", plots=False).write(out)
    return inp, out, snapshot(out)


# -- refusing and failing cleanly ------------------------------------------------------

def test_existing_report_is_refused_unless_overwrite(previous) -> None:  # type: ignore[no-untyped-def]
    inp, out, before = previous
    result = evalkit.evaluate(str(inp), eps=1e-3, plots=False)
    with pytest.raises(E.OutputExistsError, match=r"report: already holds an evalkit evaluate report; pass overwrite=True"):
        result.write(out)
    assert snapshot(out) == before
    r = CliRunner().invoke(main, ["evaluate", str(inp), "--out", str(out), "-q"])
    assert r.exit_code == E.EXIT_OUTPUT and "error:" in r.output and str(out) in r.output
    assert "--overwrite" in r.output and "Traceback" not in r.output
    assert snapshot(out) == before
    result.write(out, overwrite=True)
    assert snapshot(out) != before
    assert leftovers(out.parent) == []


def test_overwrite_never_replaces_an_unrelated_directory(tmp_path: Path) -> None:
    inp = make_preds(tmp_path / "preds.parquet", n=50)
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    r = CliRunner().invoke(main, ["evaluate", str(inp), "--out", str(home), "--overwrite", "-q", "--no-plots"])
    assert r.exit_code == E.EXIT_OUTPUT, r.output
    assert "holds no evalkit report" in r.output and "Traceback" not in r.output
    assert (home / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in home.iterdir()) == ["thesis.tex"]


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_unwritable_output(tmp_path: Path, where: str) -> None:
    inp = make_preds(tmp_path / "preds.parquet", n=50)
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker / "report" if where == "under_a_file" else blocker
    with pytest.raises(E.OutputError, match="blocker"):
        evalkit.evaluate(str(inp), plots=False).write(out)
    r = CliRunner().invoke(main, ["evaluate", str(inp), "--out", str(out), "-q", "--no-plots"])
    assert r.exit_code == E.EXIT_OUTPUT, r.output
    assert "error:" in r.output and "blocker" in r.output and "Traceback" not in r.output
    assert blocker.read_text() == "x"
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="permissions do not bind root")
def test_read_only_parent(tmp_path: Path) -> None:  # pragma: no cover - CI as non-root
    inp = make_preds(tmp_path / "preds.parquet", n=50)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = CliRunner().invoke(main, ["evaluate", str(inp), "--out", str(ro / "report"), "-q", "--no-plots"])
        assert r.exit_code == E.EXIT_OUTPUT and "Traceback" not in r.output
    finally:
        ro.chmod(0o700)


def _failing_after(n_ok: int, exc: BaseException):  # type: ignore[no-untyped-def]
    real = evalkit.api.write_text
    calls = {"n": 0}

    def fake(text: str, path) -> None:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > n_ok:
            Path(path).write_text(text[: len(text) // 3])  # a partial file, then the failure
            raise exc
        real(text, path)
    return fake


@pytest.mark.parametrize("exc", [
    E.OutputError("summary.json: cannot write (No space left on device)"),
    OSError(errno.ENOSPC, "No space left on device"),
], ids=["OutputError", "ENOSPC"])
def test_write_failing_midway_keeps_previous_report(previous, monkeypatch, exc) -> None:  # type: ignore[no-untyped-def]
    inp, out, before = previous
    result = evalkit.evaluate(str(inp), eps=1e-3, plots=False)
    monkeypatch.setattr(evalkit.outdir, "write_text", _failing_after(0, exc))
    with pytest.raises(E.OutputError) as info:
        result.write(out, overwrite=True)
    assert "No space left on device" in str(info.value)
    assert snapshot(out) == before
    assert leftovers(out.parent) == []


def test_write_failing_midway_cli(previous, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    inp, out, before = previous
    monkeypatch.setattr(evalkit.outdir, "write_text", _failing_after(0, OSError(errno.ENOSPC, "No space left on device")))
    r = CliRunner().invoke(main, ["evaluate", str(inp), "--out", str(out), "--overwrite", "--eps", "1e-3", "-q", "--no-plots"])
    assert r.exit_code == E.EXIT_OUTPUT, r.output
    assert "error:" in r.output and "No space left on device" in r.output and "Traceback" not in r.output
    assert snapshot(out) == before
    assert leftovers(out.parent) == []


def test_parquet_write_failing_midway(previous, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    inp, out, before = previous
    result = evalkit.evaluate(str(inp), eps=1e-3, by="region", plots=False)
    real = evalkit.api.write_table
    calls = {"n": 0}

    def fake(table, path) -> None:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise E.OutputError(f"{path}: cannot write (Disk quota exceeded)")
        real(table, path)
    monkeypatch.setattr(evalkit.api, "write_table", fake)
    with pytest.raises(E.OutputError, match="Disk quota"):
        result.write(out, overwrite=True)
    assert snapshot(out) == before and leftovers(out.parent) == []


def test_file_queue_writes_in_order_raises_the_first_failure_and_skips_the_rest() -> None:
    """The report's tables are written on a second thread (io.FileQueue): in the order given;
    the first failure is raised by the next submit or by finish and the files after it are
    never written; close() skips the files not started and waits for the one running."""
    import threading

    from evalkit.io import FileQueue

    done: list[object] = []
    for threaded in (True, False):
        done.clear()
        q = FileQueue(threaded=threaded)
        for i in range(5):
            q.submit(lambda i=i: done.append(i))
        q.finish()
        assert done == [0, 1, 2, 3, 4]
        done.clear()
        q = FileQueue(threaded=threaded)

        def fail() -> None:
            raise E.OutputError("x.parquet: cannot write (Disk quota exceeded)")
        with pytest.raises(E.OutputError, match="Disk quota"):
            q.submit(lambda: done.append(0))
            q.submit(fail)
            q.submit(lambda: done.append(2))
            q.finish()
        assert done == [0]
    q = FileQueue()
    started, release = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)
        done.append("slow")
    done.clear()
    q.submit(slow)
    q.submit(lambda: done.append("after"))
    started.wait(5)
    threading.Timer(0.2, release.set).start()
    q.close()  # waits for the running file, skips the next
    assert done == ["slow"]


def test_interrupt_while_a_table_is_encoded_in_the_background(previous, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C on the main thread while a table is still being written on the file thread: the
    report directory being built is removed only after that file is done (nothing is written
    into a removed directory), the previous report is intact and nothing is left over."""
    import threading
    import time as _time

    inp, out, before = previous
    result = evalkit.evaluate(str(inp), eps=1e-3, by="region", plots=False)
    real = evalkit.api.write_table
    writing = threading.Event()
    finished: list[Path] = []

    def slow(table, path) -> None:  # type: ignore[no-untyped-def]
        writing.set()
        _time.sleep(0.3)
        real(table, path)
        finished.append(Path(path))

    def interrupt(text: str, path) -> None:  # type: ignore[no-untyped-def]
        writing.wait(5)
        raise KeyboardInterrupt
    monkeypatch.setattr(evalkit.api, "write_table", slow)
    monkeypatch.setattr(evalkit.api, "write_text", interrupt)
    with pytest.raises(KeyboardInterrupt):
        result.write(out, overwrite=True)
    assert finished and not any(p.parent.exists() for p in finished)
    assert snapshot(out) == before and leftovers(out.parent) == []


def test_failed_run_keeps_previous_report(previous, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inp, out, before = previous
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"prob_a": [0.5, 0.5], "prob_b": [0.5, 0.5], "label": [0, 7]}), bad)
    r = CliRunner().invoke(main, ["evaluate", str(bad), "--out", str(out), "--overwrite", "-q", "--no-plots"])
    assert r.exit_code == E.EXIT_INPUT, r.output
    assert snapshot(out) == before and leftovers(out.parent) == []


def test_keyboard_interrupt_during_write(previous, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    inp, out, before = previous
    monkeypatch.setattr(evalkit.outdir, "write_text", _failing_after(0, KeyboardInterrupt()))
    r = CliRunner().invoke(main, ["evaluate", str(inp), "--out", str(out), "--overwrite", "-q", "--no-plots"])
    assert r.exit_code == E.EXIT_INTERRUPTED, r.output
    assert "interrupted" in r.output and "Traceback" not in r.output
    assert snapshot(out) == before and leftovers(out.parent) == []


def _swapped_out(out: Path) -> bool:
    return any(p.name.startswith(f".{out.name}.old-") for p in out.parent.iterdir())


def _during_removal(monkeypatch, out: Path, action, nth: int = 1) -> list[str]:  # type: ignore[no-untyped-def]
    """Patch ``os.unlink`` so that ``action()`` runs at the ``nth`` unlink the main thread makes
    while the report ``out`` replaced is being removed; returns those unlinks' paths."""
    import threading

    real_unlink = os.unlink
    seen: list[str] = []

    def unlink(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if threading.current_thread() is threading.main_thread() and _swapped_out(out):
            seen.append(str(path))
            if len(seen) == nth:
                action()
        return real_unlink(path, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", unlink)
    return seen


def test_a_signal_while_the_replaced_report_is_removed_leaves_nothing_behind(previous, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """rt-eval8 F1: SIGINT / SIGTERM arriving while the swapped-out report is deleted stopped
    the deletion half way (manifest gone first), leaving a ``.NAME.old-*`` remnant that no later
    run would remove. The removal is part of the commit: it finishes, then the run is
    interrupted with the new report in place."""
    inp, out, before = previous
    result = evalkit.evaluate(str(inp), eps=1e-3, by="region", plots=False)
    # the signal is handled at the next bytecode: here, mid-removal
    seen = _during_removal(monkeypatch, out, lambda: signal.raise_signal(signal.SIGINT))
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever earlier tests left
    try:
        with pytest.raises(KeyboardInterrupt):
            result.write(out, overwrite=True)
    finally:
        signal.signal(signal.SIGINT, handler)
        monkeypatch.undo()
    assert seen and leftovers(out.parent) == []
    assert evalkit.outdir.read_manifest(out)[0] is not None and snapshot(out) != before


class _Killed(BaseException):
    """Stands for a process dying mid-removal (SIGKILL, power loss): nothing after it runs."""


def test_a_removal_cut_short_keeps_its_manifest_and_the_next_run_finishes_it(previous, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A removal of the swapped-out report cut short by a hard kill leaves a directory that
    still holds its manifest: the next run's sweep removes it, and never puts such a partial
    report back in place of the target."""
    inp, out, _ = previous
    result = evalkit.evaluate(str(inp), eps=1e-3, by="region", plots=False)

    def killed() -> None:
        raise _Killed()
    _during_removal(monkeypatch, out, killed, nth=3)
    with pytest.raises(_Killed):
        result.write(out, overwrite=True)
    monkeypatch.undo()
    (remnant,) = [p for p in out.parent.iterdir() if ".old-" in p.name]
    assert evalkit.outdir.read_manifest(remnant)[0] is not None  # still recognisably evalkit's
    import shutil
    shutil.rmtree(out)  # the user removes the new report: the partial old one must not come back
    result.write(out)
    assert leftovers(out.parent) == []
    manifest, _ = evalkit.outdir.read_manifest(out)
    assert manifest is not None and all((out / rel).is_file() for rel in manifest["files"])


# -- hard kills ------------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path

    phase, marker = sys.argv[1], Path(sys.argv[2])

    def pause():
        marker.touch()
        time.sleep(60)

    if phase == "write":
        import evalkit.api as api
        real = api.write_text
        def slow(text, path):
            real(text, path)  # report.md is in the temp dir now, summary.json not yet
            pause()
        api.write_text = slow
    else:
        import evalkit.engines.base as base
        real = base.process_batch
        calls = []
        def slow(*a, **kw):
            calls.append(1)
            if len(calls) == 2:  # the per-row spool holds a batch already
                pause()
            return real(*a, **kw)
        base.process_batch = slow

    from evalkit.cli import main
    main(sys.argv[3:], prog_name="evalkit")
""")


def start_run(tmp_path: Path, phase: str, args: list[str]) -> tuple[subprocess.Popen, Path]:  # type: ignore[type-arg]
    marker = tmp_path / f"marker-{phase}-{time.monotonic_ns()}"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, phase, str(marker), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.returncode} {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("run did not reach the pause")
        time.sleep(0.02)
    return proc, marker


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["write", "evaluate"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_killed_run_leaves_previous_report_intact(previous, tmp_path: Path, phase: str, sig: str) -> None:  # type: ignore[no-untyped-def]
    inp, out, before = previous
    proc, _ = start_run(tmp_path, phase, ["evaluate", str(inp), "--out", str(out), "--overwrite",
                                          "--eps", "1e-3", "--batch-size", "500", "-q", "--no-plots"])
    if phase == "write":
        # Mid-write: the temp dir beside the target holds a partial report.
        tmp_dirs = [p for p in out.parent.iterdir() if p.name.startswith(".report.tmp-")]
        assert len(tmp_dirs) == 1 and (tmp_dirs[0] / "report.md").exists()
        assert is_locked(tmp_dirs[0])  # the live run holds it: no other run may sweep it
    else:
        spools = [p for p in out.parent.iterdir() if p.name.startswith(".evalkit-rows-")]
        assert spools and all(is_locked(p) for p in spools)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=30)
    assert snapshot(out) == before
    if sig == "SIGTERM":
        assert proc.returncode == E.EXIT_INTERRUPTED, err.decode()
        assert b"interrupted" in err and b"Traceback" not in err
        assert leftovers(out.parent) == []
    else:
        assert proc.returncode == -signal.SIGKILL
        assert leftovers(out.parent)  # a hard kill cannot clean up ...
        r = CliRunner().invoke(main, ["evaluate", str(inp), "--out", str(out), "--overwrite", "-q", "--no-plots"])
        assert r.exit_code == 0, r.output
        assert leftovers(out.parent) == []  # ... the next run sweeps it


@pytest.mark.slow
def test_killed_first_run_leaves_no_report(tmp_path: Path) -> None:
    inp = make_preds(tmp_path / "preds.parquet", n=1000)
    out = tmp_path / "out" / "report"
    proc, _ = start_run(tmp_path, "write", ["evaluate", str(inp), "--out", str(out), "-q", "--no-plots"])
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == E.EXIT_INTERRUPTED
    assert not out.exists() and leftovers(out.parent) == []


HOLD_SCRIPT = textwrap.dedent("""
    import fcntl, os, sys, time
    fds = []
    for path in sys.argv[2:]:
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fds.append(fd)
    open(sys.argv[1], "w").close()
    time.sleep(60)
""")


def is_locked(path: Path) -> bool:
    import fcntl

    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def hold_in_other_process(tmp_path: Path, dirs: list[Path]) -> subprocess.Popen:  # type: ignore[type-arg]
    """Another process (think: another container with the same pid and host name) holding
    the locks of ``dirs``, as a live run does."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(ready), *map(str, dirs)])
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    return proc


def test_sweep_spares_live_runs_and_restores_swapped_report(tmp_path: Path) -> None:
    inp = make_preds(tmp_path / "preds.parquet", n=100)
    out = tmp_path / "report"
    # Names as an older evalkit made them (pid, host) and as this one does: liveness is the
    # lock alone, so a run elsewhere with our pid and host name is never taken for dead.
    dead_tmp = tmp_path / ".report.tmp-abcdef123456"
    legacy_tmp = tmp_path / f".report.tmp-{os.getpid()}-zzzzzz-abcdef12"
    live_tmp = tmp_path / ".report.tmp-live12345678"
    dead_spool = tmp_path / ".evalkit-rows-q1w2e3"
    live_spool = tmp_path / ".evalkit-rows-live"
    dead_staging = tmp_path / ".evalkit-staging-old"
    young_staging = tmp_path / ".evalkit-staging-young"
    for d in (dead_tmp, legacy_tmp, live_tmp, dead_spool, live_spool, dead_staging, young_staging):
        d.mkdir()
        (d / PRIVATE_MARKER).write_text("")  # as evalkit makes them: marked from the start
    for d in (dead_tmp, legacy_tmp, live_tmp, dead_spool, live_spool):
        (d / "partial").write_text("x")
    os.utime(dead_staging, (time.time() - 3600, time.time() - 3600))
    holder = hold_in_other_process(tmp_path, [live_tmp, live_spool])
    try:
        # A hard kill between the two renames of an overwrite: the previous report is in .old-*.
        swapped = tmp_path / ".report.old-abcdef123456"
        evalkit.evaluate(str(inp), plots=False).write(tmp_path / "elsewhere" / "r")
        os.rename(tmp_path / "elsewhere" / "r", swapped)
        before = snapshot(swapped)
        with pytest.raises(E.OutputExistsError):  # it is back in place, so it is protected again
            evalkit.evaluate(str(inp), eps=1e-3, plots=False).write(out)
        assert snapshot(out) == before
        names = sorted(leftovers(tmp_path) + [p.name for p in tmp_path.glob(".evalkit-staging-*")])
        assert names == sorted([live_tmp.name, live_spool.name, young_staging.name]), names
        assert (live_tmp / "partial").read_text() == "x" and (live_spool / "partial").read_text() == "x"
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its directories are swept by the next run.
    evalkit.evaluate(str(inp), eps=1e-3, plots=False).write(out, overwrite=True)
    assert leftovers(tmp_path) == []


def test_atomic_dir_directly(tmp_path: Path) -> None:
    target = tmp_path / "t"
    with AtomicDir(target) as tmp:
        (tmp / "report.md").write_text("a")
        assert not target.exists()
        AtomicDir(target).check()
    assert not target.exists() and leftovers(tmp_path) == []  # no commit: nothing appears
    with pytest.raises(RuntimeError), AtomicDir(target, overwrite=True) as tmp:
        (tmp / "report.md").write_text("b")
        raise RuntimeError("crash")
    assert not target.exists() and leftovers(tmp_path) == []
    atomic = AtomicDir(target)
    with atomic as tmp:
        (tmp / "report.md").write_text("a")
        assert atomic.commit() == target.absolute()
    assert (target / "report.md").read_text() == "a" and leftovers(tmp_path) == []
    atomic = AtomicDir(target, overwrite=True)
    with atomic as tmp:
        (tmp / "report.md").write_text("b")
        atomic.commit()
    assert (target / "report.md").read_text() == "b" and leftovers(tmp_path) == []


# -- inputs are read-only --------------------------------------------------------------

def fingerprint(paths: list[Path]) -> dict[str, tuple[int, int, str]]:
    out = {}
    for p in paths:
        st = p.stat()
        out[str(p)] = (st.st_mtime_ns, st.st_size, hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_inputs_are_never_modified(tmp_path: Path) -> None:
    data = tmp_path / "data"
    files = [make_preds(data / "split=train" / "part-0.parquet", n=300, seed=1, labels=False),
             make_preds(data / "split=val" / "part-0.parquet", n=300, seed=2, labels=False, first_id=300)]
    labels = data.parent / "labels.parquet"
    pq.write_table(pa.table({"id": np.arange(700), "label": np.arange(700) % 4}), labels)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("eps: 1e-6\nby: [region]\n")
    watched = [*files, labels, cfg]
    for p in watched:  # an old mtime makes any write visible even on coarse clocks
        os.utime(p, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    before = fingerprint(watched)
    dir_before = sorted(str(p) for p in data.rglob("*"))
    result = evalkit.evaluate(str(data), labels=str(labels), on="id", config=cfg, unmatched="drop", plots=False)
    result.write(tmp_path / "r1")
    _ = result.rows
    r = CliRunner().invoke(main, ["evaluate", str(data), "--labels", str(labels), "--on", "id",
                                  "--unmatched", "drop", "--config", str(cfg), "--out", str(tmp_path / "r2"),
                                  "-q", "--no-plots"])
    assert r.exit_code == 0, r.output
    bad = CliRunner().invoke(main, ["evaluate", str(data), "--labels", str(labels), "--on", "id",
                                    "--out", str(tmp_path / "r3"), "-q", "--no-plots"])
    assert bad.exit_code == E.EXIT_INPUT  # unmatched label keys: an error, inputs still untouched
    assert fingerprint(watched) == before
    assert sorted(str(p) for p in data.rglob("*")) == dir_before


def test_look_alike_user_directories_are_never_swept_or_restored(tmp_path: Path) -> None:
    """A directory is evalkit's scratch because it holds evalkit's marker (or, for a swapped-out
    report, a valid manifest listing everything in it), never because of its name."""
    inp = make_preds(tmp_path / "preds.parquet", n=50)
    evalkit.evaluate(str(inp), plots=False).write(tmp_path / "hist")
    old = time.time() - 3600
    mine = [tmp_path / ".hist.old-2026-11-29", tmp_path / ".hist.tmp-notes",
            tmp_path / ".evalkit-rows-mine", tmp_path / ".evalkit-staging-mine",
            tmp_path / ".new.old-backup"]
    for d in mine:
        d.mkdir()
        (d / "notes.txt").write_text("mine")
        os.utime(d, (old, old))
    # An evalkit report copied under a look-alike name, with a file of the user's added.
    evalkit.evaluate(str(inp), plots=False).write(tmp_path / "elsewhere" / "r")
    os.rename(tmp_path / "elsewhere" / "r", tmp_path / ".new.old-abcdef123456")
    (tmp_path / ".new.old-abcdef123456" / "extra.txt").write_text("mine")
    before = {d.name: snapshot(d) for d in [*mine, tmp_path / ".new.old-abcdef123456"]}
    evalkit.evaluate(str(inp), eps=1e-3, plots=False).write(tmp_path / "hist", overwrite=True)
    evalkit.evaluate(str(inp), plots=False).write(tmp_path / "new")
    assert {d.name: snapshot(tmp_path / d.name) for d in [*mine, tmp_path / ".new.old-abcdef123456"]} == before
    assert (tmp_path / "new" / "evalkit-manifest.json").is_file()
    assert not (tmp_path / "new" / "notes.txt").exists()
    assert not (tmp_path / "new" / PRIVATE_MARKER).exists()  # a report never carries the marker


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p: Path) -> int:
    import stat

    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_report_directory_mode_follows_the_umask_and_survives_overwrite(tmp_path: Path, umask_022) -> None:
    """The report directory gets the mode mkdir gives (0o755 under umask 022), like the files
    and sub-directories in it, not mkdtemp's 0o700; --overwrite keeps the mode the team gave the
    directory it replaces; a set-group-ID parent's bit is passed on (tester rt17: nightly reports
    came out 0700 / 2700, unreadable to the group, a CI uploader or a web server)."""
    df = {"prob_a": [0.7, 0.2], "prob_b": [0.3, 0.8], "label": [0, 1]}
    import pandas as pd

    out = tmp_path / "r"
    evalkit.evaluate(pd.DataFrame(df), out=out)
    assert _mode(out) == 0o755 and _mode(out / "report.md") == 0o644
    os.chmod(out, 0o750)
    evalkit.evaluate(pd.DataFrame(df), out=out, overwrite=True)
    assert _mode(out) == 0o750
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o2775)
    evalkit.evaluate(pd.DataFrame(df), out=shared / "r")
    assert _mode(shared / "r") == 0o2755
    # history's output directory is made the same way
    h = tmp_path / "h"
    evalkit.history([str(out), str(shared / "r")], out=h, plots=False)
    assert _mode(h) == 0o755


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_per_row_spool_directories_stay_private(tmp_path: Path, umask_022) -> None:
    spool = evalkit.outdir.make_spool_dir(tmp_path)
    try:
        assert _mode(spool) == 0o700
    finally:
        evalkit.outdir.remove_spool_dir(spool)
