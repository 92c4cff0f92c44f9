"""Calibration: per-row terms for every layout, ECE / MCE / Brier / entropy against numpy by hand
and sklearn, mergeable bin state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss

from evalkit.aggregate.calibration import CalibrationBins, confidence_bins
from evalkit.scores import calibration_terms


def _probs(rng, n, k, dtype=np.float64):
    z = rng.normal(0, 2, (n, k))
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


def _by_hand(p: np.ndarray, y: np.ndarray, bins: int = 15):
    """ECE / MCE / Brier / entropy exactly as the docstrings define them, in plain numpy."""
    p = p.astype(np.float64)
    n, k = p.shape
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    b = np.clip(np.ceil(conf * bins) - 1, 0, bins - 1).astype(int)
    ece, mce = 0.0, 0.0
    for j in range(bins):
        m = b == j
        if m.any():
            gap = abs(correct[m].mean() - conf[m].mean())
            ece += m.sum() / n * gap
            mce = max(mce, gap)
    onehot = np.eye(k)[y]
    brier = ((p - onehot) ** 2).sum(axis=1).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1).mean()
    return ece, mce, brier, ent


def _metrics(p, y, local=None, k_groups=1, bins=15, from_logits=False, scores=None):
    scores = p if scores is None else scores
    pred = scores.argmax(axis=1)
    pt = p[np.arange(len(y)), y].astype(np.float64)
    rc = calibration_terms(scores, from_logits=from_logits, p_true=pt)
    cal = CalibrationBins(bins)
    cal.resize(k_groups)
    cb = confidence_bins(rc.confidence, bins)
    cal.add(local, k_groups, np.arange(k_groups), None, cb, rc.confidence, pred == y, rc.brier, rc.entropy)
    counts = np.bincount(local, minlength=k_groups) if local is not None else np.array([len(y)])
    return cal.group_metrics(np.arange(k_groups), counts), cal


@pytest.mark.parametrize("k", [2, 3, 10, 40])
def test_metrics_equal_numpy_by_hand(k):
    rng = np.random.default_rng(k)
    p = _probs(rng, 3000, k)
    y = rng.integers(0, k, 3000)
    got, _ = _metrics(p, y)
    ece, mce, brier, ent = _by_hand(p, y)
    assert got["ece"][0] == pytest.approx(ece, rel=1e-9)
    assert got["mce"][0] == pytest.approx(mce, rel=1e-9)
    assert got["brier"][0] == pytest.approx(brier, rel=1e-9)
    assert got["entropy"][0] == pytest.approx(ent, rel=1e-9)


def test_binary_brier_equals_sklearn():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(size=2000)
    y = (rng.uniform(size=2000) < p1).astype(int)
    p = np.column_stack([1 - p1, p1])
    got, _ = _metrics(p, y)
    # Brier (1950) sums over both classes: twice sklearn's single-probability score.
    assert got["brier"][0] == pytest.approx(2 * brier_score_loss(y, p1), rel=1e-9)
    assert got["brier"][0] == pytest.approx(brier_score_loss(y, p1, scale_by_half=False), rel=1e-9)


def test_layouts_give_the_same_terms():
    """Column-major (wide), row-major (list), float32 and logits: same per-row terms."""
    rng = np.random.default_rng(1)
    z = rng.normal(0, 3, (5000, 7))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = rng.integers(0, 7, 5000)
    pt = p[np.arange(5000), y]
    row = calibration_terms(p, from_logits=False, p_true=pt)
    col = calibration_terms(np.asfortranarray(p), from_logits=False, p_true=pt)
    lgt = calibration_terms(z, from_logits=True, p_true=pt)
    for other in (col, lgt):
        np.testing.assert_allclose(other.confidence, row.confidence, rtol=1e-12)
        np.testing.assert_allclose(other.brier, row.brier, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(other.entropy, row.entropy, rtol=1e-9, atol=1e-15)
    f32 = p.astype(np.float32)
    r32 = calibration_terms(f32, from_logits=False, p_true=f32[np.arange(5000), y])
    ref = f32.astype(np.float64)
    np.testing.assert_allclose(r32.entropy, -(ref * np.log(ref)).sum(axis=1), rtol=1e-12)


def test_soft_targets_brier():
    rng = np.random.default_rng(2)
    p = _probs(rng, 500, 4)
    t = _probs(rng, 500, 4)
    rc = calibration_terms(p, from_logits=False, targets=t)
    np.testing.assert_allclose(rc.brier, ((p - t) ** 2).sum(axis=1), rtol=1e-9, atol=1e-15)


def test_zero_probabilities_have_zero_entropy_terms():
    p = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    rc = calibration_terms(p, from_logits=False, p_true=np.array([1.0, 0.5]))
    assert rc.entropy.tolist() == [0.0, pytest.approx(np.log(2))]
    assert rc.brier.tolist() == [0.0, pytest.approx(0.5)]


def test_bins_follow_guo_convention():
    b = confidence_bins(np.array([0.0, 1 / 15, 1 / 15 + 1e-12, 0.5, 1.0]), 15)
    assert b.tolist() == [0, 0, 1, 7, 14]


def test_grouped_and_merged_equal_per_group_by_hand():
    rng = np.random.default_rng(3)
    p = _probs(rng, 4000, 5)
    y = rng.integers(0, 5, 4000)
    g = rng.integers(0, 3, 4000)
    got, cal = _metrics(p, y, local=g, k_groups=3, bins=10)
    for j in range(3):
        ref = _by_hand(p[g == j], y[g == j], 10)
        assert [got[c][j] for c in ("ece", "mce", "brier", "entropy")] == pytest.approx(ref, rel=1e-9)
    # two halves merged == all at once
    _, a = _metrics(p[:1500], y[:1500], local=g[:1500], k_groups=3, bins=10)
    _, b = _metrics(p[1500:], y[1500:], local=g[1500:], k_groups=3, bins=10)
    a.absorb(b, np.arange(3), np.arange(3))
    np.testing.assert_array_equal(a.count, cal.count)
    np.testing.assert_allclose(a.conf_sum, cal.conf_sum, rtol=1e-12)
    tab = cal.bin_table(np.arange(3))
    assert set(tab.columns) >= {"bin", "count", "mean_confidence", "accuracy"}
    assert tab.groupby("group_index")["count"].sum().tolist() == np.bincount(g).tolist()
    assert isinstance(tab, pd.DataFrame)


def test_many_groups_scatter_equals_dense_update():
    """With more (group, bin) cells than rows the update scatters row by row (O(rows), not
    O(groups x bins)); the sums are those of the dense update, including absent groups."""
    rng = np.random.default_rng(9)
    n, k_groups = 300, 500
    p = _probs(rng, n, 4)
    y = rng.integers(0, 4, n)
    local = rng.integers(0, k_groups, n)
    present = np.bincount(local, minlength=k_groups) > 0
    slots = np.arange(int(present.sum())) * 2 + 1  # global slots of the present groups
    rc = calibration_terms(p, from_logits=False, p_true=p[np.arange(n), y])
    cb = confidence_bins(rc.confidence, 15)
    states = []
    for scatter in (True, False):
        cal = CalibrationBins(15)
        cal.resize(2 * k_groups + 2)
        args = (local, k_groups, slots, present, cb, rc.confidence, p.argmax(1) == y, rc.brier, rc.entropy)
        if scatter:
            assert k_groups * 15 > n  # the update takes the scatter path
            cal.add(*args)
        else:
            corr = (p.argmax(1) == y).astype(np.int64)
            code = local * 15 + cb
            cc = np.bincount(code * 2 + corr, minlength=2 * 15 * k_groups).reshape(k_groups, 15, 2)[present]
            cal.count[slots] += cc.sum(axis=2)
            cal.correct[slots] += cc[:, :, 1]
            cal.conf_sum[slots] += np.bincount(code, weights=rc.confidence, minlength=15 * k_groups).reshape(k_groups, 15)[present]
            cal.brier_sum[slots] += np.bincount(local, weights=rc.brier, minlength=k_groups)[present]
            cal.entropy_sum[slots] += np.bincount(local, weights=rc.entropy, minlength=k_groups)[present]
        states.append(cal.state())
    for name in states[0]:
        np.testing.assert_allclose(states[0][name], states[1][name], rtol=1e-12, err_msg=name)
    assert states[0]["count"].sum() == n


def test_binary_brier_is_twice_sklearn_end_to_end_and_documented():
    """red team 16: evalkit's binary Brier is 2x sklearn's brier_score_loss. The multi-class
    definition (Brier 1950) stays; the factor is checked through evaluate() on a binary
    P(class 1) column and stated in the docstring, README and report glossary."""
    import evalkit
    import evalkit.aggregate.calibration as cal_module

    rng = np.random.default_rng(11)
    p1 = rng.uniform(0.01, 0.99, 3000)
    y = (rng.uniform(size=3000) < p1).astype(int)
    df = pd.DataFrame({"score": p1, "label": y, "split": rng.choice(["a", "b"], 3000)})
    r = evalkit.evaluate(df, predictions=["score"], label="label", write_rows=False)
    assert r.overall["brier"] == pytest.approx(2 * brier_score_loss(y, p1), rel=1e-9)
    by = r.groups["split"].set_index("split")["brier"]
    for s in ("a", "b"):
        m = df["split"].to_numpy() == s
        assert by[s] == pytest.approx(2 * brier_score_loss(y[m], p1[m]), rel=1e-9)
    assert "twice\n  ``sklearn.metrics.brier_score_loss``" in cal_module.__doc__
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "twice `sklearn.metrics.brier_score_loss`" in readme
    assert "twice sklearn's brier_score_loss" in r.to_markdown(plots=[])
