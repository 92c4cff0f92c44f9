"""compare of weighted runs (``--weight``): the weighted means are compared, as evaluate's
headline, intervals and gates and history are about them (rt-main10 F3: compare compared the
unweighted means, an 8x smaller delta, and a max_regression gate passed)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

import evalkit
from evalkit.cli import main
from evalkit.errors import CompareError


def frame(loss: np.ndarray, ids, w, **cols) -> pd.DataFrame:
    """Two-class wide predictions whose per-row loss is exactly ``loss`` (label 'a')."""
    p = np.exp(-np.asarray(loss, dtype=np.float64))
    return pd.DataFrame({"id": ids, **cols, "w": w, "prob_a": p, "prob_b": 1 - p, "label": "a"})


def heavy_rows_worse(n=3000, seed=26):
    """The candidate is worse only on the 10% of rows that weigh 20: weighted delta ~0.8,
    unweighted ~0.1."""
    rng = np.random.default_rng(seed)
    w = np.where(rng.uniform(size=n) < 0.1, 20.0, 1.0)
    lb = rng.exponential(1.0, n) + 0.05
    lc = lb + np.where(w > 1, 1.0 + rng.uniform(-0.5, 0.5, n), rng.uniform(-0.05, 0.05, n))
    grp = rng.choice(["x", "y"], n)
    return lb, lc, w, grp


def by_hand(x: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """Weighted mean, its sem (reliability-weights sd, Kish n_eff) and n_eff, in numpy."""
    m = np.sum(w * x) / np.sum(w)
    n_eff = np.sum(w) ** 2 / np.sum(w * w)
    sd = math.sqrt(np.sum(w * (x - m) ** 2) / np.sum(w) * n_eff / (n_eff - 1))
    return m, sd / math.sqrt(n_eff), n_eff


def test_weighted_runs_compare_weighted_means_paired():
    lb, lc, w, grp = heavy_rows_worse()
    ids = np.arange(len(lb))
    rb = evalkit.evaluate(frame(lb, ids, w, grp=grp), by=["grp"], weight="w")
    rc = evalkit.evaluate(frame(lc, ids, w, grp=grp), by=["grp"], weight="w")
    res = evalkit.compare(rb, rc)
    assert res.metadata["statistic"] == "weighted_mean" and res.metadata["weight"] == "w"
    for name, mask in (("overall", np.ones(len(lb), bool)), ("grp", grp == "y")):
        t = res.tables[name]
        o = t.iloc[0] if name == "overall" else t[t["grp"] == "y"].iloc[0]
        mb, _, _ = by_hand(lb[mask], w[mask])
        mc, _, _ = by_hand(lc[mask], w[mask])
        assert o["baseline_mean"] == pytest.approx(mb, rel=1e-9)
        assert o["candidate_mean"] == pytest.approx(mc, rel=1e-9)
        assert o["delta"] == pytest.approx(mc - mb, rel=1e-9)
        assert o["method"] == "paired" and o["ci_method"] == "t"
        d = lc[mask] - lb[mask]
        m, sem, n_eff = by_hand(d, w[mask])
        half = stats.t.ppf(0.975, n_eff - 1) * sem
        assert (o["ci_low"], o["ci_high"]) == pytest.approx((m - half, m + half), rel=1e-9)
    o = res.tables["overall"].iloc[0]
    assert o["delta"] > 0.6 and o["status"] == "regression"  # unweighted it is ~0.1


def test_weighted_unpaired_and_without_rows_use_the_weighted_standard_errors():
    lb, lc, w, _ = heavy_rows_worse(n=1500)
    rb = evalkit.evaluate(frame(lb, np.arange(len(lb)), w), weight="w")
    rc = evalkit.evaluate(frame(lc, np.arange(len(lb)) + 10_000, w), weight="w")  # other ids
    o = evalkit.compare(rb, rc).tables["overall"].iloc[0]
    mb, sb, _ = by_hand(lb, w)
    mc, sc, _ = by_hand(lc, w)
    z = stats.norm.ppf(0.975)
    half = z * math.sqrt(sb * sb + sc * sc)
    assert o["method"] == "unpaired" and o["ci_method"] == "normal"
    assert (o["ci_low"], o["ci_high"]) == pytest.approx((mc - mb - half, mc - mb + half), rel=1e-9)
    nb = evalkit.evaluate(frame(lb, np.arange(len(lb)), w), weight="w", write_rows=False)
    o = evalkit.compare(nb, rc).tables["overall"].iloc[0]
    assert o["method"] == "normal-from-stats"
    assert o["delta"] == pytest.approx(mc - mb, rel=1e-9)
    assert (o["ci_low"], o["ci_high"]) == pytest.approx((mc - mb - half, mc - mb + half), rel=1e-9)


def test_paired_rows_whose_weights_changed_are_not_paired():
    lb, lc, w, _ = heavy_rows_worse(n=800)
    ids = np.arange(len(lb))
    w2 = w.copy()
    w2[:5] += 1.0
    rb = evalkit.evaluate(frame(lb, ids, w), weight="w")
    rc = evalkit.evaluate(frame(lc, ids, w2), weight="w")
    o = evalkit.compare(rb, rc).tables["overall"].iloc[0]
    assert o["method"] == "unpaired"
    assert o["delta"] == pytest.approx(by_hand(lc, w2)[0] - by_hand(lb, w)[0], rel=1e-9)


def test_weighted_against_unweighted_is_a_mismatch():
    lb, lc, w, _ = heavy_rows_worse(n=500)
    ids = np.arange(len(lb))
    rb = evalkit.evaluate(frame(lb, ids, w), weight="w")
    rc = evalkit.evaluate(frame(lc, ids, w))
    with pytest.raises(CompareError, match="weights differ: baseline weighted by column 'w', candidate unweighted"):
        evalkit.compare(rb, rc)
    res = evalkit.compare(rb, rc, allow_mismatch=True)
    o = res.tables["overall"].iloc[0]
    assert res.metadata["statistic"] == "mean"
    assert o["delta"] == pytest.approx(lc.mean() - lb.mean(), rel=1e-9)
    assert any("weights differ" in m for m in res.metadata["mismatches"])


def test_cli_weighted_gate_and_report(tmp_path: Path):
    lb, lc, w, _ = heavy_rows_worse()
    ids = np.arange(len(lb))
    for name, loss in (("b", lb), ("c", lc)):
        frame(loss, ids, w).to_parquet(tmp_path / f"{name}.parquet")
        r = CliRunner().invoke(main, ["evaluate", str(tmp_path / f"{name}.parquet"), "--weight", "w",
                                      "--out", str(tmp_path / name), "--no-plots", "-q", "--format", "none"])
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "b"), str(tmp_path / "c"), "--out",
                                  str(tmp_path / "cmp"), "--max-regression", "0.5", "--format", "none"])
    assert r.exit_code == 5, r.output  # the weighted delta is ~0.8 (the unweighted ~0.1 passed)
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "weighted means (weight column `w`)" in md
