"""Log-softmax exact at every scale (issue 14.2): the kernel agrees with scipy to 1e-12."""

from __future__ import annotations

import math
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pytest
import scipy.special
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

import evalkit
from evalkit.loss import log_softmax, soft_loss, sparse_loss
from evalkit.scores import calibration_terms

RTOL = 1e-12


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    cases = [
        np.array([[1e16, 1e16], [1e12, 1e12], [1e300, 1e300], [-1e300, -1e300]]),  # equal logits
        np.array([[1e4 + 16, 1e4], [1e12 + 3.0, 1e12], [1e15 + 8, 1e15]]),
        np.array([[1e300, -1e300], [-1e300, 1e300], [1e300, 0.0], [0.0, -1e300]]),
        rng.normal(size=(50, 7)) * 5 + 1e13,  # a large common offset
        rng.normal(size=(50, 7)) * 5 - 1e13,
        rng.normal(size=(50, 3)) * 1e300 / 10,
        rng.uniform(-1e300, 1e300, size=(50, 4)),
        rng.normal(size=(50, 7)) * 40,
    ]
    return cases


def _rel_close(got: np.ndarray, want: np.ndarray) -> None:
    # Relative to the reference; an exact zero on both sides is equal.
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)


@pytest.mark.parametrize("z", _cases(), ids=lambda z: f"{z.shape}-{float(np.abs(z).max()):.0e}")
def test_per_row_function_matches_scipy(z):
    want = scipy.special.log_softmax(z, axis=1)
    _rel_close(log_softmax(z), want)
    cols = np.arange(len(z)) % z.shape[1]
    _rel_close(log_softmax(z, cols), want[np.arange(len(z)), cols])


@pytest.mark.parametrize("z", _cases(), ids=lambda z: f"{z.shape}-{float(np.abs(z).max()):.0e}")
def test_kernel_loss_matches_scipy_with_clip(z):
    eps = 1e-7
    lo, hi = math.log(eps), math.log1p(-eps)
    ref = scipy.special.log_softmax(z, axis=1)
    y = np.arange(len(z)) % z.shape[1]
    out = sparse_loss(z, y, eps, from_logits=True)
    want = -np.clip(ref[np.arange(len(z)), y], lo, hi)
    _rel_close(out.loss, want)
    np.testing.assert_array_equal(out.clipped_low, ref[np.arange(len(z)), y] < lo)
    np.testing.assert_array_equal(out.clipped_high, ref[np.arange(len(z)), y] > hi)
    t = np.eye(z.shape[1])[y] * 0.75 + 0.25 / z.shape[1]
    soft = soft_loss(z, t, eps, from_logits=True)
    _rel_close(soft.loss, -(t * np.clip(ref, lo, hi)).sum(axis=1))


def test_named_cases_of_the_issue():
    # Equal logits of 1e16: log K, not the floor loss, and nothing clipped.
    out = sparse_loss(np.array([[1e16, 1e16]]), np.array([0]), from_logits=True)
    assert out.loss[0] == pytest.approx(math.log(2), rel=RTOL)
    assert not out.clipped_low[0] and not out.clipped_high[0]
    for scale in (1e12, 1e16, 1e100, 1e300):
        z = np.full((1, 5), scale)
        assert evalkit.cross_entropy(z, [3], from_logits=True)[0] == pytest.approx(math.log(5), rel=RTOL)
    z = np.array([[1e4 + 16, 1e4]])
    want = -scipy.special.log_softmax(z, axis=1)[0, 0]
    assert evalkit.cross_entropy(z, [0], from_logits=True)[0] == pytest.approx(want, rel=RTOL)


@pytest.mark.parametrize("offset", [0.0, 1e12, 1e16, 1e300])
def test_report_path_matches_scipy(offset):
    # Through evaluate (layout, validation, engine, aggregation), not only the kernel.
    rng = np.random.default_rng(3)
    z = rng.normal(size=(40, 3)) * 3
    z = z * (offset / 1e2) if offset >= 1e300 else z + offset
    z[0] = offset  # equal logits
    y = rng.integers(0, 3, 40)
    df = pd.DataFrame({"logit_a": z[:, 0], "logit_b": z[:, 1], "logit_c": z[:, 2], "label": y})
    result = evalkit.evaluate(df)
    ref = -np.clip(scipy.special.log_softmax(z, axis=1)[np.arange(40), y], math.log(1e-7), math.log1p(-1e-7))
    _rel_close(result.rows["loss"].to_numpy(), ref)
    assert result.mean == pytest.approx(ref.mean(), rel=1e-12)
    list_df = pd.DataFrame({"logits": list(z), "label": y})
    _rel_close(evalkit.evaluate(list_df).rows["loss"].to_numpy(), ref)


def test_binary_logit_column_at_every_scale():
    z = np.array([1e300, -1e300, 0.0, 1e16, -40.0, 40.0])
    y = np.array([1, 1, 0, 0, 1, 0])
    ref = scipy.special.log_softmax(np.column_stack([np.zeros_like(z), z]), axis=1)[np.arange(6), y]
    want = -np.clip(ref, math.log(1e-7), math.log1p(-1e-7))
    _rel_close(evalkit.cross_entropy(z, y, from_logits=True), want)


# -- every finite logit (tester T8): finite results, no numpy warning ---------------------

_FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)
_EXTREME = st.sampled_from([1.7e308, -1.7e308, 1e308, -1e308, np.finfo(np.float64).max,
                            -np.finfo(np.float64).max, 0.0, -0.0, 5e-324, 1.0])
_LOGITS = hnp.arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(2, 5)),
                     elements=st.one_of(_FINITE, _EXTREME))


@settings(max_examples=300, deadline=None)
@given(_LOGITS)
def test_log_softmax_and_entropy_are_finite_for_every_finite_logit(z):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy RuntimeWarning leaks from the kernels
        got = log_softmax(z)
        terms = calibration_terms(z, from_logits=True, p_true=np.exp(got[:, 0]))
        loss = sparse_loss(z, np.zeros(len(z), np.int64), from_logits=True)
    assert np.isfinite(got).all() and np.isfinite(terms.entropy).all() and np.isfinite(loss.loss).all()
    with np.errstate(all="ignore"):
        want = scipy.special.log_softmax(z, axis=1)
        p = scipy.special.softmax(z, axis=1)
        want_ent = scipy.stats.entropy(p, axis=1)
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=RTOL, atol=0)
    # where scipy overflows (logits ~1e308 apart) the log-probability is the most negative float
    assert (got[~finite] == -np.finfo(np.float64).max).all()
    ok = np.isfinite(want_ent)
    np.testing.assert_allclose(terms.entropy[ok], want_ent[ok], rtol=1e-9, atol=1e-12)


def test_extreme_logits_through_evaluate_warn_nothing_and_give_finite_entropy(tmp_path):
    z = np.array([[1.7e308, -1.7e308, 0.0], [1.7e308, 1.7e308, 0.0], [-1.7e308] * 3, [1e308] * 3])
    df = pd.DataFrame({"logit_a": z[:, 0], "logit_b": z[:, 1], "logit_c": z[:, 2], "label": [0, 0, 0, 2]})
    path = tmp_path / "huge.parquet"
    df.to_parquet(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evalkit.evaluate(str(path), out=str(tmp_path / "out"), plots=False)
    assert result.warnings == []
    want = np.array([0.0, math.log(2), math.log(3), math.log(3)])
    assert result.overall["entropy"] == pytest.approx(want.mean(), rel=1e-12)
    ref = -np.clip(np.array([0.0, -math.log(2), -math.log(3), -math.log(3)]), math.log(1e-7), math.log1p(-1e-7))
    _rel_close(result.rows["loss"].to_numpy(), ref)
