"""Plots drawn by forked helpers while the rest of the report is written: the same files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import evalkit
from evalkit import plot_process, plots
from evalkit.api import run
from evalkit.config import EvalConfig

from .conftest import random_probs, write

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


def test_matplotlib_missing_in_the_helper_says_plots_are_off(tmp_path, monkeypatch):
    def broken() -> None:
        raise ImportError("no matplotlib here")

    monkeypatch.setattr(plots, "_warm_up", broken)  # inherited by the forked helper
    _run(_data(tmp_path), tmp_path / "r")
    assert _pngs(tmp_path / "r") == {}
    assert "Plots are off: matplotlib is not installed" in (tmp_path / "r" / "report.md").read_text()


def test_no_helper_process_is_left_behind(tmp_path):
    helper = plot_process.start()
    assert helper is not None and helper.available()
    pid = helper._ch.pid
    helper.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped


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
