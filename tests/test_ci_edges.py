"""Interval edge cases found by red team 16: groups of one row, constant losses, weight scale."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import evalkit


def _frame(probs: list[list[float]], labels: list[int], region: list[str]) -> pd.DataFrame:
    p = np.asarray(probs, float)
    df = pd.DataFrame({f"prob_{k}": p[:, k] for k in range(p.shape[1])})
    df["label"] = labels
    df["region"] = region
    return df


@pytest.mark.parametrize("ci", ["t", "bootstrap"])
def test_a_group_of_one_row_has_no_interval_and_never_fails_the_ci_gate(ci):
    df = _frame([[0.7, 0.3]] * 50 + [[0.4, 0.6]], [0] * 25 + [1] * 25 + [1], ["a"] * 50 + ["b"])
    gates = {"require_ci_above_limit": True, "groups": {"region": {"max_mean_loss": 0.3}}}
    r = evalkit.evaluate(df, by="region", ci=ci, write_rows=False, gates=gates)
    t = r.table("region").set_index("region")
    assert t.loc["b", "count"] == 1
    assert math.isnan(t.loc["b", "ci_low"]) and math.isnan(t.loc["b", "ci_high"])
    assert t.loc["b", "mean"] > 0.3  # would fail without the interval rule
    assert np.isfinite(t.loc["a", "ci_low"])
    failures = [str(f) for f in r.gate_failures]
    assert any("region[a]" in f for f in failures) and not any("region[b]" in f for f in failures)
    one = evalkit.evaluate(df.iloc[:1], ci=ci, write_rows=False).overall
    assert math.isnan(one["ci_low"]) and math.isnan(one["ci_high"])


@pytest.mark.parametrize("ci", ["t", "bootstrap"])
@pytest.mark.parametrize("probs,labels", [([[0.5, 0.5]] * 100, [0] * 50 + [1] * 50),   # ties_half
                                          ([[0.0, 1.0]] * 100, [0] * 100),            # all clipped
                                          ([[0.7, 0.3]] * 200, [0] * 200)])
def test_the_interval_of_a_constant_loss_contains_its_mean(ci, probs, labels):
    n = len(labels)
    df = _frame(probs, labels, list(np.array(["a", "b"])[np.arange(n) % 2]))
    r = evalkit.evaluate(df, by="region", ci=ci, write_rows=False)
    for t in (r.table("overall"), r.table("region")):
        assert (t["ci_low"] <= t["mean"]).all() and (t["mean"] <= t["ci_high"]).all(), t
