"""A value equal to its gate's limit passes, also when the value comes from streamed sums
whose last bits differ from the exact figure (rt-main10 F5: 1,000 losses of exactly 0.55
averaged to 0.5500000000000052, and max_regression 0.05 / max_regression_pct 10 /
max_drift_pct 10 failed with exit 5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evalkit
from evalkit.gates import LIMIT_RTOL, beyond


def constant_loss(v: float, n: int = 1000) -> pd.DataFrame:
    p = np.full(n, np.exp(-v))
    return pd.DataFrame({"id": np.arange(n), "prob_0": p, "prob_1": 1 - p, "label": 0,
                         "region": np.where(np.arange(n) % 2 == 0, "EU", "US")})


def test_beyond_is_strict_with_a_relative_slack():
    assert not beyond(0.5500000000000052, 0.55) and not beyond(0.55, 0.55)
    assert beyond(0.55 * (1 + 10 * LIMIT_RTOL), 0.55) and beyond(np.inf, 0.55)
    assert not beyond(np.nan, 0.55) and not beyond(np.nan, 0.55, below=True)
    assert beyond(0.6999, 0.7, below=True) and not beyond(0.7 - 1e-15, 0.7, below=True)
    assert beyond(1e-300, 0.0) and not beyond(0.0, 0.0)  # a limit of 0: any rise fails


def test_a_rise_of_exactly_the_limit_passes_compare_and_history(tmp_path):
    rb = evalkit.evaluate(constant_loss(0.5), by=["region"], out=tmp_path / "b", write_rows=True, plots=False)
    rc = evalkit.evaluate(constant_loss(0.55), by=["region"], out=tmp_path / "c", plots=False)
    delta = float(rc.overall["mean"] - rb.overall["mean"])
    assert delta == pytest.approx(0.05, rel=1e-12)
    for gates in ({"max_regression": 0.05}, {"max_regression_pct": 10},
                  {"groups": {"region": {"max_regression": 0.05}}}):
        res = evalkit.compare(tmp_path / "b", tmp_path / "c", gates=gates)
        assert res.passed, [str(f) for f in res.failures]
    res = evalkit.compare(tmp_path / "b", tmp_path / "c", gates={"max_regression": 0.0499})
    assert not res.passed
    h = evalkit.history([tmp_path / "b", tmp_path / "c"], lookback=1, plots=False,
                        gates={"max_drift_pct": 10, "max_drift": 0.05})
    assert h.passed, [str(f) for f in h.failures]
    h = evalkit.history([tmp_path / "b", tmp_path / "c"], lookback=1, plots=False, gates={"max_drift_pct": 9.99})
    assert not h.passed


def test_a_mean_of_exactly_the_limit_passes_evaluate():
    res = evalkit.evaluate(constant_loss(0.55), by=["region"], plots=False,
                           gates={"max_mean_loss": 0.55, "groups": {"region": {"max_mean_loss": 0.55}}})
    assert res.gate_failures == [], [str(f) for f in res.gate_failures]
