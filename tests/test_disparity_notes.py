"""Disparity of groupings with fewer than two groups of slice_min_count rows (red team 16):
said in report.md and summary.json, never dropped silently nor shown as worst = best."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

import evalkit
from evalkit.escape import md_text


def _frame(counts: dict[str, int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(list(counts), list(counts.values()))
    p = rng.uniform(0.05, 0.95, len(g))
    return pd.DataFrame({"prob_0": 1 - p, "prob_1": p, "label": rng.integers(0, 2, len(g)), "g": g})


def _rec(result, name="g"):
    [rec] = [d for d in result.disparity if d["grouping"] == name]
    return rec


def test_every_group_too_small_is_said_in_report_and_summary(tmp_path):
    r = evalkit.evaluate(_frame({"a": 10, "b": 10, "c": 10, "d": 10}), by="g", write_rows=False)
    rec = _rec(r)
    assert rec["groups"] == 0 and rec["worst"] is None and rec["gap"] is None and rec["too_small"] == 4
    assert "no group has at least 30 rows (slice_min_count); 4 smaller groups left out" in rec["note"]
    out = r.write(tmp_path / "o")
    summary = json.loads((out / "summary.json").read_text())
    assert next(d for d in summary["disparity"] if d["grouping"] == "g")["note"] == rec["note"]
    md = (out / "report.md").read_text().split("## Disparity")[1].split("\n## ")[0]
    assert f"- g: {md_text(rec['note'])}." in md and "4 smaller groups left out" in md


def test_one_qualifying_group_is_not_worst_and_best():
    r = evalkit.evaluate(_frame({"big": 50, "s1": 5, "s2": 5}), by="g", write_rows=False)
    rec = _rec(r)
    assert rec["groups"] == 1 and rec["worst"] is None and rec["best"] is None and rec["gap"] is None
    assert rec["note"].startswith("only one group (big, n=50) has at least 30 rows")
    md = r.to_markdown().split("## Disparity")[1].split("\n## ")[0]
    assert "| g |" not in md and "only one group (big, n=50)" in md


def test_compared_groupings_keep_their_table_and_no_note():
    r = evalkit.evaluate(_frame({"a": 40, "b": 40, "c": 3}), by="g", write_rows=False)
    rec = _rec(r)
    assert rec["note"] is None and rec["groups"] == 2 and rec["too_small"] == 1
    assert {rec["worst"], rec["best"]} == {"a", "b"}
