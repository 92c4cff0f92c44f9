"""``history --skip-bad`` over many bad inputs: stderr names the first few of each kind and
counts the rest in one line (a nightly log, not thousands of lines); history.json lists every
one. A damaged grouped.parquet fails every grouping of its run alike: the report is named
once, with its groupings, not once per grouping."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

import evalkit.trend as tr
from evalkit.cli import main
from evalkit.grouped_file import GROUPED_FILE

from .test_history import DAY0, _stats, make_report, make_series
from .test_history_kinds import _flip_middle


def _damaged(root: Path, n: int) -> list[Path]:
    """``n`` reports of three groupings whose grouped.parquet was edited since evaluate wrote
    it (same size: found only when its tables are read)."""
    out = []
    for r in range(n):
        tables = {"region": _stats({"region": ["EU", "US"]}, np.array([0.5, 0.6]), 100, 1.0),
                  "store": _stats({"store": [1, 2, 3]}, np.array([0.5, 0.6, 0.7]), 100, 1.0)}
        d = make_report(root, f"dmg-{r:03d}", DAY0 + pd.Timedelta(hours=r), tables,
                        manifest=True, grouped=True)
        _flip_middle(d / GROUPED_FILE)
        out.append(d)
    return out


def test_many_bad_inputs_give_a_bounded_summary_on_stderr(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    good = make_series(runs, 6, manifest=True, grouped=True)
    for i in range(40):  # not readable: skipped
        bad = runs / f"bad-{i:03d}"
        shutil.copytree(good[0], bad)
        (bad / "summary.json").write_text('{"metadata": {"created": "2026-')
    for i in range(30):  # copies of one run: counted once
        shutil.copytree(good[1], runs / f"copy-{i:03d}")
    for i in range(25):  # glob matches that are not reports
        (runs / f"note-{i:03d}.txt").write_text("x")
    damaged = _damaged(tmp_path / "damaged", 12)
    out = tmp_path / "h"
    r = CliRunner().invoke(main, ["history", str(runs / "*"), *map(str, damaged), "--skip-bad", "--out", str(out),
                                  "--no-plots", "--format", "none", "-q"])
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    named = tr.WARN_NAMED
    assert sum(f"warning: skipped {runs / 'bad-'}" in x for x in lines) == named
    assert sum("holds the same run as" in x for x in lines) == named
    assert sum(f"warning: left out {runs / 'note-'}" in x for x in lines) == named
    assert sum(f"warning: skipped {tmp_path / 'damaged'}" in x for x in lines) == named
    hist_json = out / "history.json"
    for more in (f"... and {40 - named} more report directories skipped; all 40 are listed in {hist_json} "
                 "(\"skipped\") and history.md",
                 f"... and {30 - named} more copies of a run counted once; all 30 are listed in {hist_json} "
                 "(\"duplicates\")",
                 f"... and {25 - named} more glob matches left out (not evaluate reports); all 25 are listed in "
                 f"{hist_json} (\"ignored\")",
                 f"... and {12 - named} more reports whose tables were left out; all 12 are listed in {hist_json}"):
        assert sum(f"warning: {more}" in x for x in lines) == 1, (more, r.stderr)
    # each damaged report once, with every grouping it lost
    first = next(x for x in lines if str(damaged[0]) in x)
    assert first.endswith("(groupings overall, region, store left out for this run)"), first
    assert len(lines) <= 4 * (named + 1) + 3, r.stderr
    # the report lists every one
    doc = json.loads(hist_json.read_text())
    assert len(doc["skipped"]) == 40 + 12 * 3 and len(doc["duplicates"]) == 30 and len(doc["ignored"]) == 25
    md = (out / "history.md").read_text()
    assert f"Skipped ({40 + 12 * 3})" in md and "Same run counted once (30)" in md


def test_a_few_bad_inputs_are_each_named(tmp_path: Path) -> None:
    """Up to WARN_NAMED of a kind: each on its own line, no summary line."""
    runs = tmp_path / "runs"
    good = make_series(runs, 4, manifest=True, grouped=True)
    for i in range(tr.WARN_NAMED):
        shutil.copytree(good[0], runs / f"bad-{i}")
        (runs / f"bad-{i}" / "summary.json").write_text("{")
    r = CliRunner().invoke(main, ["history", str(runs / "*"), "--skip-bad", "--no-plots", "--format", "none"])
    assert r.exit_code == 0, r.output
    for i in range(tr.WARN_NAMED):
        assert f"warning: skipped {runs / f'bad-{i}'}: " in r.stderr
    assert "more report directories skipped" not in r.stderr
