"""Issue 17 red team: the history drift gate controls its family of groups (Holm), change
scan splits at both ends of the window, gate messages show differing numbers apart."""

from __future__ import annotations

from statistics import NormalDist
from types import SimpleNamespace

import numpy as np
import pandas as pd

from evalkit.gates import GateFailure, check_history_gates, holm

CONF = 0.95
Z = NormalDist().inv_cdf(0.5 + CONF / 2)
GATES = {"max_drift_pct": 5, "require_ci_excludes_zero": True}


def _trend(rng: np.random.Generator, n_groups: int, shift: np.ndarray | None = None) -> pd.DataFrame:
    """One grouping's trend on a stable series: latest and reference run means of each group
    drawn around the same level with their standard errors (what history's trend holds)."""
    mu, sem = 0.3, 0.015
    ref = rng.normal(mu, sem, n_groups)
    latest = rng.normal(mu, sem, n_groups) + (0 if shift is None else shift)
    se = np.sqrt(2) * sem
    drift = latest - ref
    return pd.DataFrame({"g": [f"g{i}" for i in range(n_groups)], "latest": latest, "reference": ref,
                         "latest_count": 1000, "reference_count": 1000, "drift": drift,
                         "drift_pct": 100 * drift / ref, "drift_ci_low": drift - Z * se,
                         "drift_ci_high": drift + Z * se, "changed": False, "direction": "",
                         "change_pct": np.nan})


def _result(trends: dict[str, pd.DataFrame]) -> SimpleNamespace:
    meta = {"settings": {"lookback": 7, "min_before": 3, "confidence": CONF},
            "series_runs": {g: 14 for g in trends}}
    return SimpleNamespace(trends=trends, metadata=meta)


def _night(seed: int, shift: np.ndarray | None = None) -> list[GateFailure]:
    rng = np.random.default_rng(seed)
    trends = {"g": _trend(rng, 20, shift), "overall": _trend(rng, 1).drop(columns="g")}
    return [f for f in check_history_gates(_result(trends), GATES) if f.failed]


def test_stable_series_fails_at_most_the_configured_rate_of_nights():
    """21 groups of a stable series, 4000 nights: the share of nights the drift gate fails
    stays at or below (1 - confidence) / 2 (the one-sided rise at the interval's level) plus
    three binomial standard errors; per group at 95% (the old gate) fails ~1 night in 5."""
    nights = 400
    failed = sum(bool(_night(seed)) for seed in range(nights))
    level = (1 - CONF) / 2
    assert failed / nights <= level + 3 * np.sqrt(level * (1 - level) / nights)
    # the same nights gated group by group (interval above zero, no family) fail far more often
    naive = 0
    for seed in range(nights):
        rng = np.random.default_rng(seed)
        frames = [_trend(rng, 20), _trend(rng, 1)]
        naive += any(((f["drift_ci_low"] > 0) & (f["drift_pct"] > 5)).any() for f in frames)
    assert naive / nights > 0.1


def test_a_real_rise_still_fails_and_says_how_it_was_tested():
    shift = np.zeros(20)
    shift[3] = 0.15  # +50%
    fails = _night(1, shift)
    assert [(f.gate, f.group) for f in fails] == [("max_drift_pct", "g3")]
    assert "Holm-adjusted p" in fails[0].detail and "over 21 drift tests" in fails[0].detail


def test_holm_matches_the_step_down_by_hand():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4*0.005, 3*0.01, 2*0.03, 1*0.04 -> running max
    np.testing.assert_allclose(holm(p), [0.03, 0.06, np.nan, 0.06, 0.02], rtol=1e-12)
    assert np.isnan(holm(np.array([np.nan]))).all()
    assert holm(np.array([0.9, 0.8])).max() == 1.0


def test_gate_message_shows_the_difference_between_close_numbers():
    f = GateFailure("max_drift_pct", "class", "neutral", 17.52721234, 17.5272, "d")
    text = str(f)
    obs, lim = text.split("observed ")[1].split(" (")[0].split(" > limit ")
    assert obs != lim and obs.startswith("17.52721") and lim == "17.5272%"
    assert "observed 0.2 > limit 0.1" in str(GateFailure("max_drift", "o", "", 0.2, 0.1))
    tiny = GateFailure("max_drift", "o", "", 0.1 + 1e-16, 0.1)
    assert str(tiny).split("observed ")[1].split(" > ")[0] != "0.1"
