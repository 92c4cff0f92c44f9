"""Interval edge cases found by red team 16: groups of one row, constant losses, weight scale."""

from __future__ import annotations

import math
import warnings

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


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e-170, 1e300, 1e-300])
def test_weighted_interval_does_not_depend_on_the_weights_scale(scale):
    rng = np.random.default_rng(3)
    n = 3000
    p = rng.dirichlet(np.ones(3), n)
    df = pd.DataFrame({f"prob_{k}": p[:, k] for k in range(3)})
    df["label"] = rng.integers(0, 3, n)
    df["region"] = rng.choice(["a", "b"], n)
    base = rng.uniform(0.5, 2.0, n)
    kw = dict(weight="w", by="region", write_rows=False, batch_size=700)
    ref = evalkit.evaluate(df.assign(w=base), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ones = evalkit.evaluate(df.assign(w=np.full(n, scale)), **kw)
        scaled = evalkit.evaluate(df.assign(w=base * scale), **kw)
    for name in ("overall", "region"):
        t = ones.table(name)
        assert np.allclose(t["n_eff"], t["count"], rtol=1e-12), t["n_eff"]
        a, b = ref.table(name), scaled.table(name)
        for c in ("n_eff", "weighted_mean", "sem", "ci_low", "ci_high"):
            np.testing.assert_allclose(b[c].to_numpy(float), a[c].to_numpy(float), rtol=1e-9, err_msg=c)


def test_one_huge_weight_gives_n_eff_near_one():
    n = 500
    df = _frame([[0.6, 0.4]] * n, list(np.arange(n) % 2), ["a"] * n)
    w = np.ones(n)
    w[0] = 1e300
    o = evalkit.evaluate(df.assign(w=w), weight="w", write_rows=False).overall
    assert o["n_eff"] == pytest.approx(1.0, rel=1e-9)


def test_disparity_leaves_out_groups_smaller_than_min_count():
    df = _frame([[0.7, 0.3]] * 60 + [[0.01, 0.99]], [0] * 61, ["a"] * 30 + ["b"] * 30 + ["tiny"])
    df.loc[30:59, "prob_0"], df.loc[30:59, "prob_1"] = 0.5, 0.5
    r = evalkit.evaluate(df, by="region", write_rows=False, slice_min_count=30)
    [rec] = [d for d in r.disparity if d["grouping"] == "region"]
    assert (rec["worst"], rec["best"], rec["groups"]) == ("b", "a", 2)
    assert rec["min_count"] == 30 and rec["too_small"] == 1
    assert "at least 30 rows (`slice_min_count`) are compared; 1 smaller group left out" in \
        r.to_markdown()
    [rec] = [d for d in evalkit.evaluate(df, by="region", write_rows=False, slice_min_count=2)
             .disparity if d["grouping"] == "region"]
    assert rec["worst"] == "b" and rec["too_small"] == 1


@pytest.mark.parametrize("scale", [1e300, 1e-300, 1e307, 1e-307])
def test_weighted_bootstrap_does_not_depend_on_the_weights_scale(scale):
    """red team 16: the bootstrap replicate sums overflowed with weights of 1e300. They are
    kept under the shared weight scale (aggregate.weightscale): the replicate sums equal the
    unscaled ones times the scale, the interval equals the unscaled one, whatever the
    batching and with no floating-point warning."""
    rng = np.random.default_rng(5)
    n = 4000
    p = rng.dirichlet(np.ones(3), n)
    df = pd.DataFrame({f"prob_{k}": p[:, k] for k in range(3)})
    df["label"] = rng.integers(0, 3, n)
    df["region"] = rng.choice(["a", "b", "c"], n)
    base = rng.uniform(0.5, 2.0, n)
    kw = dict(weight="w", by="region", write_rows=False, ci="bootstrap", bootstrap_samples=50)
    ref = evalkit.evaluate(df.assign(w=base), batch_size=4000, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = evalkit.evaluate(df.assign(w=base * scale), batch_size=333, **kw)
    for name in ("overall", "region"):
        a, b = ref.table(name), scaled.table(name)
        assert np.isfinite(b["ci_low"]).all() and np.isfinite(b["ci_high"]).all()
        for c in ("ci_low", "ci_high", "weighted_mean"):
            np.testing.assert_allclose(b[c].to_numpy(float), a[c].to_numpy(float), rtol=1e-9, err_msg=c)


def test_bootstrap_replicate_sums_are_the_unscaled_ones_times_the_scale():
    from evalkit.aggregate.bootstrap import PoissonBootstrap

    rng = np.random.default_rng(6)
    n, b = 5000, 20
    slots = rng.integers(0, 4, n)
    boot = rng.poisson(1.0, (n, b)).astype(np.uint8)
    loss = rng.exponential(1.0, n)
    w = rng.uniform(0.5, 2.0, n)

    def fed(weights, pieces):
        out = PoissonBootstrap(b)
        out.resize(4)
        parts = []
        for idx in np.array_split(np.arange(n), pieces):
            part = PoissonBootstrap(b)
            part.resize(4)
            part.add(slots[idx], boot[idx], loss[idx], weights[idx])
            parts.append(part)
        for part in parts[::-1]:  # merge order differs from row order
            out.absorb(part, np.arange(4), np.arange(4))
        return out

    ref = fed(w, 1)
    for scale, pieces in ((1e300, 3), (1e-300, 5), (1e307, 7)):
        got = fed(w * scale, pieces)
        # stored x 2**exp = the true sum: got's true sums are ref's times the scale
        factor = math.ldexp(scale, ref.scale.exp - got.scale.exp)
        assert 0.25 < factor < 4
        for name in ("wsum", "wloss"):
            np.testing.assert_allclose(getattr(got, name), getattr(ref, name) * factor, rtol=1e-12)
        lo0, hi0 = ref.interval(np.arange(4), 0.95)
        lo, hi = got.interval(np.arange(4), 0.95)
        np.testing.assert_allclose(lo, lo0, rtol=1e-12)
        np.testing.assert_allclose(hi, hi0, rtol=1e-12)
