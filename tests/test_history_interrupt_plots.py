"""Ctrl-C while a history waits for its last plots: the plot helpers are ended before the
half-built report is removed, so none goes on drawing into it after the command has exited
and nothing is left beside --out (rt-hist10 F1: two helpers drew for ~1.9 s more and left
a temporary directory with two PNGs, 9 of 9 interrupts late in a run with plots)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import evalkit.trend as tr
from evalkit import plot_process
from evalkit.trend import history

from .test_history import make_series

pytest.importorskip("matplotlib")


def _alive_children() -> list[str]:
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if fields[1] == me and fields[0] != "Z":
                found.append(pid)
    return found


@pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self"), reason="fork and /proc")
def test_ctrl_c_while_the_last_plots_are_drawn_ends_the_helpers_first(tmp_path: Path, monkeypatch):
    paths = make_series(tmp_path / "runs", n_runs=12)
    monkeypatch.setattr(tr, "PLOT_POOL_MIN", 1)
    before = set(_alive_children())
    started = []

    def interrupted(self):  # Ctrl-C while waiting for the helpers' last plots
        started.append(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(plot_process.JobPool, "results", interrupted)
    closed = []
    real_close = plot_process.JobPool.close

    def close(self):  # the helpers ended, and while the half-built report still exists
        closed.append(any(p.name.startswith(".") for p in out.parent.iterdir()))
        real_close(self)

    monkeypatch.setattr(plot_process.JobPool, "close", close)
    out = tmp_path / "site" / "hist"
    out.parent.mkdir()
    (out.parent / "mine.txt").write_text("the user's")
    with pytest.raises(KeyboardInterrupt):
        history(paths, out=out)
    assert started, "the run did not use the plot helpers"
    assert closed and closed[0], closed  # ended before the half-built report was removed
    assert [p for p in _alive_children() if p not in before] == []  # ended, not drawing on
    time.sleep(0.3)  # a helper left running would write into the removed report by now
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine.txt"]
