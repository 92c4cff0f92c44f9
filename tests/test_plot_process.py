"""Plots drawn by forked helpers while the rest of the report is written: the same files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import evalkit
from evalkit import plot_process, plots
from evalkit.api import run
from evalkit.config import EvalConfig

from .conftest import assert_group_ended, process_members, random_probs, write

pytest.importorskip("matplotlib")
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n = 3_000
    p = random_probs(rng, n, 4)
    cols = {f"prob_{c}": p[:, i] for i, c in enumerate("abcd")}
    cols["label"] = rng.choice(list("abcd"), n)
    cols["split"] = rng.choice(["train", "val"], n)
    cols["region"] = rng.choice(["EU", "US", "APAC"], n)
    return write(pa.table(cols), tmp_path / "preds.parquet")


def _run(data: Path, out: Path) -> evalkit.EvalResult:
    cfg = EvalConfig(input=[str(data)], out=str(out), by=[["region"]])
    result, _ = run(cfg)
    return result


def _pngs(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.png"))}


def test_helper_draws_the_same_pngs_as_in_process(tmp_path):
    data = _data(tmp_path)
    result = _run(data, tmp_path / "helper")
    in_process = result.write(tmp_path / "here")  # no helper: drawn in this process
    got, want = _pngs(tmp_path / "helper"), _pngs(in_process)
    assert set(got) == {"loss_by_class.png", "mean_loss_by_class.png", "mean_loss_by_split.png",
                        "mean_loss_by_region.png", "reliability.png"}
    assert got == want  # byte for byte
    md = (tmp_path / "helper" / "report.md").read_text()
    for name in got:
        assert f"]({name})" in md


def test_the_parent_sends_the_job_to_both_drawers(tmp_path, monkeypatch):
    """The second drawer gets the job from the parent, as the first does (not relayed by the
    first after it has read it): the same message on two pipes, the PNGs as in-process."""
    data = _data(tmp_path)
    sent: list[tuple[int, object]] = []
    real_write = plot_process._write_msg

    def spy(fd, obj):
        sent.append((fd, obj))
        real_write(fd, obj)

    helper = plot_process.start()
    assert helper is not None
    monkeypatch.setattr(plot_process, "_write_msg", spy)  # the parent's writes only (forked before)
    result = evalkit.evaluate(data, by="region")
    path = result.write(tmp_path / "helper", plot_helper=helper)
    assert len(sent) == 2 and sent[0][0] != sent[1][0]
    assert sent[0][1] is sent[1][1]
    _job, _out, _hist, mine, theirs = sent[0][1]
    assert mine and theirs
    assert _pngs(path) == _pngs(result.write(tmp_path / "here"))


def test_a_job_for_the_first_drawer_only_ends(tmp_path):
    """One plot to draw: the second drawer gets no job and ends (the first waits for it
    before it answers: it must not wait for ever)."""
    import signal

    data = _data(tmp_path)
    helper = plot_process.start()
    assert helper is not None
    result = evalkit.evaluate(data, by="region")
    out = tmp_path / "one"
    out.mkdir()
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the helper did not answer"))
    signal.alarm(60)
    try:
        assert helper.draw(result, out, result._class_hist, ["reliability.png"])
        assert helper.finish() is None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        helper.close()
    assert [p.name for p in out.glob("*.png")] == ["reliability.png"]


def _failing_group_means(monkeypatch):
    def boom(result, grouping, path):
        if grouping.name == "region":
            raise ValueError("Unknown symbol: \\foo")  # as matplotlib's mathtext parser says
        return real(result, grouping, path)

    real = plots._plot_group_means
    monkeypatch.setattr(plots, "_plot_group_means", boom)


def test_a_plot_that_cannot_be_drawn_costs_only_that_plot(tmp_path, monkeypatch):
    """Any error while drawing one figure (in this process): the report is written, the
    PNG says the plot could not be drawn, one PlotFailedWarning names it."""
    result = evalkit.evaluate(_data(tmp_path), by="region")
    _failing_group_means(monkeypatch)
    with pytest.warns(plots.PlotFailedWarning, match=r"plot mean_loss_by_region\.png could not be drawn "
                                                     r"\(ValueError: Unknown symbol: \\foo\)") as caught:
        path = result.write(tmp_path / "r")
    assert len([w for w in caught if w.category is plots.PlotFailedWarning]) == 1
    pngs = _pngs(path)
    assert set(pngs) == {"loss_by_class.png", "mean_loss_by_class.png", "mean_loss_by_split.png",
                         "mean_loss_by_region.png", "reliability.png"}
    assert pngs["mean_loss_by_region.png"].startswith(b"\x89PNG")  # says so, in place of the figure
    assert "](mean_loss_by_region.png)" in (path / "report.md").read_text()


def test_the_cli_writes_the_report_when_a_helper_cannot_draw_a_plot(tmp_path, monkeypatch):
    """The same in the plot helpers of the CLI: exit 0, the report written, one warning line
    (with -q too)."""
    from click.testing import CliRunner

    from evalkit.cli import main

    _failing_group_means(monkeypatch)  # before the helper is forked: it has it too
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["evaluate", str(_data(tmp_path)), "--by", "region", "--out", str(out),
                                    "--format", "none", "-q"])
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if "could not be drawn" in ln]
    assert lines == ["warning: plot mean_loss_by_region.png could not be drawn (ValueError: Unknown symbol: "
                     "\\foo); the rest of the report is written"]
    assert (out / "summary.json").exists() and len(_pngs(out)) == 5


def test_a_helper_that_dies_falls_back_to_drawing_here(tmp_path, monkeypatch):
    real = plot_process.start

    def start_and_kill():
        helper = real()
        assert helper is not None
        helper.close()  # gone before the run draws
        return helper

    monkeypatch.setattr(plot_process, "start", start_and_kill)
    _run(_data(tmp_path), tmp_path / "r")
    assert len(_pngs(tmp_path / "r")) == 5  # with the reliability diagram


def test_a_helper_failing_to_draw_falls_back_to_drawing_here(tmp_path, monkeypatch):
    real = plots.write_plots
    monkeypatch.setattr(plots, "write_plots", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom"))
                        if os.getpid() != parent else real(*a, **k))
    parent = os.getpid()
    _run(_data(tmp_path), tmp_path / "r")
    assert len(_pngs(tmp_path / "r")) == 5


def test_matplotlib_failing_in_the_helper_only_is_drawn_here(tmp_path, monkeypatch):
    """The helper cannot import matplotlib, this process can: drawn here, as when the helper
    is gone (before rt-final8 F12 the report said "matplotlib is not installed")."""
    def broken() -> None:
        raise ImportError("no matplotlib here")

    monkeypatch.setattr(plots, "_warm_up", broken)  # inherited by the forked helper
    _run(_data(tmp_path), tmp_path / "r")
    assert len(_pngs(tmp_path / "r")) == 5


def test_matplotlib_missing_says_plots_are_off_with_a_warning(tmp_path, monkeypatch):
    """rt-final8 F12: with no matplotlib every plot was dropped without a word on stderr; now
    a warning (stderr, summary.json), and metadata.plots_off says why."""
    import json
    import sys

    from evalkit.errors import EvalkitWarning

    data = _data(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails (helper too)
    with pytest.warns(EvalkitWarning, match=r"no plots were drawn: matplotlib is not installed; install it "
                                            r"with pip install 'evalkit\[plot\]'"):
        _run(data, tmp_path / "r")
    assert _pngs(tmp_path / "r") == {}
    assert "Plots are off: matplotlib is not installed" in (tmp_path / "r" / "report.md").read_text()
    meta = json.loads((tmp_path / "r" / "summary.json").read_text())["metadata"]
    assert meta["plots_off"] == "matplotlib is not installed"
    assert any(w.startswith("no plots were drawn") for w in meta["warnings"])


def test_no_helper_process_is_left_behind(tmp_path):
    helper = plot_process.start()
    assert helper is not None and helper.available()
    pid = helper._ch.pid
    helper.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_a_pool_imports_matplotlib_once_its_first_helper_forks_the_others():
    """The first helper of a pool imports matplotlib and forks the second; jobs go to both;
    every helper is gone once the results are in."""
    pool = plot_process.start_pool(2)
    assert pool is not None
    for function in ("getpid", "getppid"):  # round-robin: one each
        for _ in range(2):
            pool.submit("os", function)
    for _ in range(2):
        pool.submit("matplotlib.projections", "get_projection_names")
    out = pool.results()
    assert all(done for done, _ in out)
    (pid0, ppid0, names0), (pid1, ppid1, names1) = ([v for _, v in out[k::2]] for k in (0, 1))
    assert ppid0 == os.getpid() and ppid1 == pid0 != pid1
    assert names0 == names1 and "rectilinear" in names0
    assert _gone(pid0) and _gone(pid1)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid0, os.WNOHANG)  # reaped


def test_pool_helpers_run_at_the_lower_priority_asked_for():
    """start_pool(n, nice=k): the first helper lowers its priority by k before it forks the
    others (they inherit it), so both draw on cores the parent leaves idle."""
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    pool = plot_process.start_pool(2, nice=5)
    assert pool is not None
    for function in ("getpid", "getpid"):  # round-robin: one job per helper
        pool.submit("os", function)
    for _ in range(2):
        pool.submit("os", "getpriority", os.PRIO_PROCESS, 0)
    out = [v for done, v in pool.results() if done]
    assert len(set(out[:2])) == 2 and out[2:] == [min(19, mine + 5)] * 2


def test_a_helper_imports_matplotlib_without_its_3d_toolkit():
    """In a fresh process (as a helper forked before matplotlib is imported): the 3D
    toolkit is not imported, drawing works, and a later import of the toolkit is the real one."""
    import subprocess
    import sys

    code = ("import sys; from evalkit import plot_process; plots = plot_process._ready_to_draw(); "
            "import matplotlib.projections as p; print('3d' in p.get_projection_names(), "
            "'mpl_toolkits.mplot3d' in sys.modules); import mpl_toolkits.mplot3d as m; print(m.Axes3D.name)")
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "3d"], out.stderr


def test_a_pool_without_matplotlib_hands_every_job_back(monkeypatch):
    def broken() -> None:
        raise ImportError("no matplotlib here")

    monkeypatch.setattr(plots, "_warm_up", broken)  # inherited by the forked helper
    pool = plot_process.start_pool(2)
    assert pool is not None
    for i in range(3):
        pool.submit("os", "getpid", i)
    assert [done for done, _ in pool.results()] == [False, False, False]


def test_split_work_balances_the_two_drawers():
    """Longest first, each to the drawer with less work; each list in plan order."""
    costs = {"a.png": 0.22, "b.png": 0.17, "c.png": 0.11, "r.png": 0.45}
    mine, theirs = plot_process.split_work(["a.png", "b.png", "c.png", "r.png"], costs)
    assert (mine, theirs) == (["r.png"], ["a.png", "b.png", "c.png"])
    mine, theirs = plot_process.split_work(["a.png", "b.png", "c.png", "d.png"],
                                           {"a.png": 3, "b.png": 3, "c.png": 2, "d.png": 2})
    assert (mine, theirs) == (["a.png", "c.png"], ["b.png", "d.png"])
    assert plot_process.split_work(["x.png"], {}) == (["x.png"], [])
    assert plot_process.split_work([], {}) == ([], [])


def test_plot_costs_name_every_plot_of_the_plan(tmp_path):
    from evalkit.plots import plot_costs, plot_plan

    result = evalkit.evaluate(_data(tmp_path), by="region")
    costs = plot_costs(result)
    assert set(costs) == {name for _, name in plot_plan(result)}
    assert all(c > 0 for c in costs.values())


def _spy_helpers(monkeypatch):
    """Record every helper forked (its pid) and which call forked it."""
    forked: list[tuple[str, int]] = []
    real_new = plot_process._new_helper

    def new():
        import inspect

        caller = inspect.stack()[1].function
        helper = real_new()
        forked.append((caller, helper._ch.pid if helper is not None else -1))
        return helper

    monkeypatch.setattr(plot_process, "_new_helper", new)
    return forked


def test_the_cli_forks_the_helper_early_and_the_run_uses_it(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from evalkit.cli import main

    forked = _spy_helpers(monkeypatch)
    data = _data(tmp_path)
    res = CliRunner().invoke(main, ["evaluate", str(data), "--by", "region", "--out", str(tmp_path / "r"),
                                    "--format", "none", "-q"])
    assert res.exit_code == 0, res.output
    assert [caller for caller, _ in forked] == ["start_early"]  # start() took it, forked none
    assert plot_process._early is None
    with pytest.raises(ChildProcessError):
        os.waitpid(forked[0][1], os.WNOHANG)  # ended and reaped
    in_process = evalkit.evaluate(data, by="region").write(tmp_path / "here")
    assert _pngs(tmp_path / "r") == _pngs(in_process)


def test_an_early_helper_no_run_took_is_ended(tmp_path, monkeypatch):
    """The run fails before it starts drawing (--out names a directory evalkit did not
    write): the helper forked early does not outlive the command."""
    from click.testing import CliRunner

    from evalkit.cli import main

    forked = _spy_helpers(monkeypatch)
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = CliRunner().invoke(main, ["evaluate", str(_data(tmp_path)), "--out", str(out), "--format", "none", "-q"])
    assert res.exit_code == 4, res.output
    assert [caller for caller, _ in forked] == ["start_early"]
    assert plot_process._early is None
    with pytest.raises(ChildProcessError):
        os.waitpid(forked[0][1], os.WNOHANG)
    assert (out / "notes.txt").read_text() == "mine"


def test_no_plots_forks_no_helper(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from evalkit.cli import main

    forked = _spy_helpers(monkeypatch)
    res = CliRunner().invoke(main, ["evaluate", str(_data(tmp_path)), "--out", str(tmp_path / "r"),
                                    "--no-plots", "--format", "none", "-q"])
    assert res.exit_code == 0, res.output
    assert forked == []


def _group_members(pgid: int) -> list[str]:
    """Processes (zombies included) of process group ``pgid``."""
    return process_members(pgid, by="group", zombies=True)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
@pytest.mark.parametrize("delay", ["at_fork", 1.0, 1.5])
def test_ctrl_c_ends_every_helper_before_the_command_exits(tmp_path, delay):
    """SIGINT to the command's process group (Ctrl-C) at any moment: the command exits 130
    (or 0 if it was done), and when it has exited no process of its group is left: not the
    plot helper (forked early, maybe still importing matplotlib), not the second drawer the
    helper forked, not a zombie (rt15 finding 1)."""
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(1)
    n, k = 1_000_000, 10  # a run of a few seconds: the helper is busy for most of it
    p = random_probs(rng, n, k).astype(np.float32)
    cols = {f"prob_{i}": p[:, i] for i in range(k)}
    cols["label"] = rng.integers(0, k, n)
    cols["region"] = rng.choice(["EU", "US", "APAC"], n)
    data = write(pa.table(cols), tmp_path / "big.parquet", row_group_size=200_000)
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", "evaluate", str(data), "--by", "region",
                             "--out", str(tmp_path / "r"), "-q", "--format", "none"], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The moment the helper exists: evalkit's own code runs (its signal handling is set up) and
    # the command is still importing. Before that, Python itself is starting (a SIGINT there is
    # the interpreter's, not evalkit's: on a loaded machine that can last more than 1.5 s).
    deadline = time.monotonic() + 60
    while len(_group_members(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    if delay != "at_fork":  # then some way into the run
        time.sleep(delay)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), err.decode()
    assert_group_ended(proc.pid)
    if proc.returncode == 130:
        assert not (tmp_path / "r").exists()


def test_a_helper_imports_matplotlib_without_property_docs():
    """In a fresh process (as a helper): matplotlib's classes get no generated property
    documentation while the helper imports them (the cost of it), setting properties
    still works, and classes defined after the import get their documentation again."""
    import subprocess
    import sys

    code = ("from evalkit import plot_process; plots = plot_process._ready_to_draw()\n"
            "from matplotlib.lines import Line2D; from matplotlib.text import Text\n"
            "import matplotlib.artist as a\n"
            "print('Properties:' in (Line2D.set.__doc__ or ''), "
            "Line2D([0], [0]).set(color='red', lw=2) == [None, None], 'Properties:' in a.kwdoc(Text))\n"
            "class Mine(Text): pass\n"
            "print('Properties:' in Mine.set.__doc__)")
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True", "True"], out.stderr


# -- tester T2: a PNG that cannot be written is an output error; a plot not drawn a run warning --


def _no_space_for_pngs(monkeypatch):
    """Every PNG write fails as on a full disk (ENOSPC); other files are written."""
    import errno
    import pathlib

    real = pathlib.Path.write_bytes

    def write_bytes(self, data):
        if self.suffix == ".png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["helper", "here"])
def test_a_png_that_cannot_be_written_is_an_output_error_and_the_old_report_stays(tmp_path, monkeypatch, where):
    """Not a "could not be drawn" placeholder with exit 0: exit 4 (OutputError), the previous
    report intact, whether the PNG is written by the plot helpers (CLI) or in this process."""
    from click.testing import CliRunner

    from evalkit.cli import main
    from evalkit.errors import OutputError

    data = _data(tmp_path)
    out = tmp_path / "r"
    _run(data, out)
    before = _files(out)
    _no_space_for_pngs(monkeypatch)  # before the helpers are forked: they have it too
    if where == "helper":
        res = CliRunner().invoke(main, ["evaluate", str(data), "--by", "region", "--out", str(out),
                                        "--overwrite", "--format", "none", "-q"])
        assert res.exit_code == 4, res.output
        assert "cannot write the plot (No space left on device)" in res.output
        assert "could not be drawn" not in res.output
    else:
        result = evalkit.evaluate(data, by="region")
        with pytest.raises(OutputError, match="cannot write the plot"):
            result.write(out, overwrite=True)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.parquet", "r"]  # no temporary left


@pytest.mark.parametrize("pool", [True, False])
def test_a_history_png_that_cannot_be_written_is_an_output_error(tmp_path, monkeypatch, pool):
    """Drawn by the helper pool (the OutputError comes back from the helper, not a
    RuntimeError: exit 1) or in this process."""
    from click.testing import CliRunner

    from evalkit import trend
    from evalkit.cli import main

    from .test_history import make_series

    make_series(tmp_path / "runs", 5, manifest=True)
    monkeypatch.setattr(trend, "PLOT_POOL_MIN", 1 if pool else 10**6)
    _no_space_for_pngs(monkeypatch)
    res = CliRunner().invoke(main, ["history", str(tmp_path / "runs" / "*"), "--out", str(tmp_path / "h"), "-q"])
    assert res.exit_code == 4, res.output
    assert "cannot write the plot" in res.output and not (tmp_path / "h").exists()


def test_a_plot_that_cannot_be_drawn_is_a_run_warning_of_the_report(tmp_path, monkeypatch):
    """PlotFailedWarning is an EvalkitWarning: in result.warnings, summary.json
    metadata.warnings and report.md's warnings, drawn here or by the helpers (CLI)."""
    import json

    from click.testing import CliRunner

    from evalkit.cli import main

    data = _data(tmp_path)
    _failing_group_means(monkeypatch)
    want = "plot mean_loss_by_region.png could not be drawn (ValueError: Unknown symbol: \\foo)"
    result = evalkit.evaluate(data, by="region")
    with pytest.warns(plots.PlotFailedWarning):
        path = result.write(tmp_path / "here")
    assert [str(w) for w in result.warnings if want in str(w)] != []
    with pytest.warns(plots.PlotFailedWarning):
        result.write(tmp_path / "again")  # written twice: kept once
    assert len([w for w in result.warnings if want in str(w)]) == 1
    out = tmp_path / "cli"
    res = CliRunner().invoke(main, ["evaluate", str(data), "--by", "region", "--out", str(out),
                                    "--format", "none", "-q"])
    assert res.exit_code == 0, res.output
    assert len([ln for ln in res.output.splitlines() if want in ln]) == 1  # on stderr once
    for d in (path, out):
        meta = json.loads((d / "summary.json").read_text())["metadata"]
        assert [w for w in meta["warnings"] if want in w], d
        md = (d / "report.md").read_text()
        assert md.count(want.replace("\\", "\\\\")) == 1, md[:2000]  # markdown-escaped
