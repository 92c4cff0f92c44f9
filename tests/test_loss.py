"""The kernel: reference case, clipping, logits, soft targets, float32, independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import evalkit
from evalkit.errors import InvalidProbabilityError, LabelError, ProbabilitySumError, UsageError
from evalkit.loss import loss_bounds, soft_loss, sparse_loss

from .conftest import REF_LABELS, REF_LOSS, REF_MEAN, REF_PROBS, by_hand, random_probs


def test_reference_case_exact():
    loss = evalkit.cross_entropy(REF_PROBS, REF_LABELS)
    np.testing.assert_allclose(loss, REF_LOSS, rtol=0, atol=5e-10)
    assert loss.mean() == REF_MEAN


def test_zero_probability_is_clipped_to_minus_log_eps():
    loss = evalkit.cross_entropy([[0.0, 1.0]], [0])
    assert loss[0] == 16.11809565095832
    out = sparse_loss(np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]), np.array([0, 0, 0]))
    assert out.clipped_low.tolist() == [True, False, False]
    assert out.clipped_high.tolist() == [False, False, True]
    assert out.loss[2] == pytest.approx(-math.log1p(-1e-7), rel=1e-12)


def test_eps_is_configurable_and_validated():
    assert evalkit.cross_entropy([[0.0, 1.0]], [0], eps=1e-3)[0] == pytest.approx(-math.log(1e-3))
    for bad in (0, -1, 0.5, 0.7, float("nan")):
        with pytest.raises(UsageError, match="eps"):
            evalkit.cross_entropy(REF_PROBS, REF_LABELS, eps=bad)


def test_one_hot_targets_equal_sparse():
    onehot = np.eye(3)[REF_LABELS]
    np.testing.assert_allclose(evalkit.cross_entropy(REF_PROBS, onehot), REF_LOSS, atol=5e-10)


def test_soft_targets_by_hand():
    t = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    want = -(t * np.log(np.clip(REF_PROBS, 1e-7, 1 - 1e-7))).sum(axis=1)
    np.testing.assert_allclose(evalkit.cross_entropy(REF_PROBS, t), want, rtol=1e-12)


def test_logits_match_probability_path_and_never_overflow():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 5)) * 3
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = rng.integers(0, 5, 200)
    np.testing.assert_allclose(evalkit.cross_entropy(z, y, from_logits=True),
                               evalkit.cross_entropy(p, y), rtol=1e-9)
    huge = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]])
    loss = evalkit.cross_entropy(huge, [0, 0], from_logits=True)
    assert np.isfinite(loss).all()
    lo, hi = loss_bounds(1e-7)
    assert loss[0] == pytest.approx(lo) and loss[1] == pytest.approx(hi)
    soft = soft_loss(huge, np.eye(3)[[0, 0]], from_logits=True)
    np.testing.assert_allclose(soft.loss, loss, rtol=1e-12)


def test_binary_column():
    p1 = np.array([0.9, 0.2, 0.0])
    y = np.array([1, 0, 1])
    want = -np.log(np.clip(np.where(y == 1, p1, 1 - p1), 1e-7, 1 - 1e-7))
    np.testing.assert_allclose(evalkit.cross_entropy(p1, y), want, rtol=1e-12)


def test_float32_is_accumulated_in_float64():
    rng = np.random.default_rng(1)
    p = random_probs(rng, 1000, 10, np.float32)
    y = rng.integers(0, 10, 1000)
    loss = evalkit.cross_entropy(p, y)
    assert loss.dtype == np.float64
    np.testing.assert_allclose(loss, by_hand(p, y), rtol=1e-12)


def test_matches_sklearn_log_loss_when_nothing_clips():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    for k in (2, 3, 10):
        p = random_probs(rng, 500, k)
        y = rng.integers(0, k, 500)
        ours = evalkit.cross_entropy(p, y).mean()
        theirs = sklearn_metrics.log_loss(y, p, labels=list(range(k)))
        assert ours == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize(
    ("probs", "labels", "error", "match"),
    [
        ([[0.5, float("nan")]], [0], InvalidProbabilityError, "NaN"),
        ([[1.5, -0.5]], [0], InvalidProbabilityError, "negative"),
        ([[0.5, 0.6]], [0], ProbabilitySumError, "sum to 1"),
        ([[0.5, 0.5]], [2], LabelError, r"\[0, 2\)"),
        ([[0.5, 0.5]], [0.5], LabelError, "whole"),
    ],
)
def test_cross_entropy_validates(probs, labels, error, match):
    with pytest.raises(error, match=match):
        evalkit.cross_entropy(probs, labels)


prob_rows = st.integers(2, 8).flatmap(
    lambda k: hnp.arrays(np.float64, st.tuples(st.integers(1, 40), st.just(k)),
                         elements=st.floats(0, 1, allow_nan=False))
)


@settings(max_examples=150, deadline=None)
@given(raw=prob_rows, seed=st.integers(0, 2**32 - 1), eps=st.sampled_from([1e-7, 1e-3, 1e-12, 0.1]))
def test_property_kernel_matches_definition(raw, seed, eps):
    n, k = raw.shape
    s = raw.sum(axis=1, keepdims=True)
    p = np.where(s > 0, raw / np.where(s > 0, s, 1), 1.0 / k)
    y = np.random.default_rng(seed).integers(0, k, n)
    out = sparse_loss(p, y, eps)
    lo, hi = loss_bounds(eps)
    assert np.isfinite(out.loss).all() and (out.loss >= 0).all()
    assert (out.loss >= lo * (1 - 1e-12)).all() and (out.loss <= hi * (1 + 1e-12)).all()
    np.testing.assert_allclose(out.loss, by_hand(p, y, eps), rtol=1e-12)
    py = p[np.arange(n), y]
    np.testing.assert_array_equal(out.clipped_low, py < eps)
    np.testing.assert_array_equal(out.clipped_high, py > 1 - eps)
    perm = np.random.default_rng(seed).permutation(n)
    np.testing.assert_array_equal(sparse_loss(p[perm], y[perm], eps).loss, out.loss[perm])


@settings(max_examples=100, deadline=None)
@given(k=st.integers(1, 40), n=st.integers(1, 50), seed=st.integers(0, 2**32 - 1), ties=st.booleans())
def test_row_argmax_matches_numpy_first_maximum(k, n, seed, ties):
    from evalkit.loss import row_argmax

    rng = np.random.default_rng(seed)
    m = rng.random((n, k)).astype(np.float32)
    if ties:
        m = np.round(m * 3) / 3  # many exact ties
    for layout in (m, np.asfortranarray(m)):
        np.testing.assert_array_equal(row_argmax(layout), m.argmax(axis=1))


@pytest.mark.parametrize(("probs", "targets", "error"), [
    ([["x"], []], [0.6, float("nan")], "InvalidProbabilityError"),  # ragged rows
    ([[]], [float("nan")], "UsageError"),  # no classes
    ([float("nan"), float("nan")], [[], ["x", "x"]], "LabelError"),  # ragged targets
    ([[0.2, 0.8]], 0, "UsageError"),  # a scalar target
])
def test_cross_entropy_refuses_malformed_arrays_with_evalkit_errors(probs, targets, error):
    import evalkit

    with pytest.raises(getattr(evalkit, error)):
        evalkit.cross_entropy(probs, targets)
