"""The one pass over a row-major score matrix (evalkit.scores.score_stats with terms=True):
its calibration terms are the values calibration_terms computes on its own, bit for bit, and
agree with a plain numpy reference; the row sums, arg-max and extremes are unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evalkit.scores import CALIB_BLOCK_VALUES, _col_step, calibration_terms, score_stats


def _rows(kind: str, n: int, k: int, dtype: type) -> np.ndarray:
    rng = np.random.default_rng(hash(kind) % 2**32)
    if kind == "random":
        p = rng.dirichlet(np.full(k, 0.3), size=n)
    elif kind == "zeros":  # exact zeros in most rows: 0 log 0 = 0
        p = rng.dirichlet(np.full(k, 0.3), size=n)
        p[rng.random((n, k)) < 0.5] = 0.0
        p /= p.sum(axis=1, keepdims=True)
    elif kind == "one-hot":
        p = np.zeros((n, k))
        p[np.arange(n), rng.integers(0, k, n)] = 1.0
    elif kind == "tiny":  # probabilities near the smallest normal / subnormal float32
        p = np.full((n, k), 1e-38)
        p[np.arange(n), rng.integers(0, k, n)] = 1.0 - (k - 1) * 1e-38
        p[: n // 2, 1] = 1e-45
    else:  # ties for the arg-max
        p = np.full((n, k), 1.0 / k)
    return np.ascontiguousarray(p.astype(dtype))


def _reference(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidence, sum p^2 and entropy in float64 by hand (0 log 0 = 0)."""
    q = p.astype(np.float64)
    logq = np.log(np.where(q > 0, q, 1.0))
    return q.max(axis=1), (q * q).sum(axis=1), -(q * logq).sum(axis=1)


@pytest.mark.parametrize("kind", ["random", "zeros", "one-hot", "tiny", "ties"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [33, 1000])
def test_terms_from_the_score_pass_equal_calibration_terms(kind, dtype, k):
    n = 3 * (CALIB_BLOCK_VALUES // k) + 5  # several blocks and a short last one
    p = _rows(kind, n, k, dtype)
    y = np.random.default_rng(1).integers(0, k, n)
    pt = p[np.arange(n), y].astype(np.float64)
    fused = score_stats(p, terms=True)
    plain = score_stats(p)
    assert np.array_equal(fused.row_sum, plain.row_sum)
    assert np.array_equal(fused.argmax, plain.argmax)
    assert np.array_equal(fused.argmax, p.argmax(axis=1))  # first maximum on ties
    assert (fused.lo, fused.hi) == (plain.lo, plain.hi) == (float(p.min()), float(p.max()))
    assert fused.terms is not None and plain.terms is None
    own = calibration_terms(p, from_logits=False, p_true=pt)
    via = calibration_terms(p[:0], from_logits=False, p_true=pt, terms=fused.terms)
    for a, b in ((own.confidence, via.confidence), (own.brier, via.brier), (own.entropy, via.entropy)):
        assert a.dtype == b.dtype == np.float64
        assert np.array_equal(a, b)  # bit for bit: the same blocks, the same row dots
    conf, sq, ent = _reference(p)
    assert np.array_equal(via.confidence, conf)
    np.testing.assert_allclose(via.brier, np.maximum(sq - 2 * pt + 1, 0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(via.entropy, np.maximum(ent, 0), rtol=1e-12, atol=1e-300)


def test_narrow_or_column_major_matrices_have_no_terms():
    p = np.full((10, 5), 0.2, dtype=np.float32)
    assert score_stats(p, terms=True).terms is None
    wide = np.asfortranarray(np.full((10, 100), 0.01))
    assert score_stats(wide, terms=True).terms is None
    assert score_stats(np.zeros((0, 100)), terms=True).terms is None


@pytest.mark.parametrize("options", [{"on_invalid": "skip"}, {"on_invalid": "skip", "renormalize": True}])
def test_runs_with_the_fused_pass_equal_runs_without_it(tmp_path, monkeypatch, options):
    """End to end on a 40-class list column with rows the run skips (NaN, wrong sums), zero
    probabilities and several batches: every table equals a run whose score pass computes no
    calibration terms (calibration then reads the scores itself), i.e. the terms follow the
    rows kept, and renormalised runs (terms not used) are unchanged."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import evalkit
    import evalkit.engines.base as base

    rng = np.random.default_rng(8)
    n, k = 3_000, 40
    p = rng.dirichlet(np.full(k, 0.5), size=n)
    p[rng.random((n, k)) < 0.2] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    p = p.astype(np.float32)
    p[5] = np.nan
    p[17, 0] += 0.5  # sums to 1.5: invalid (or renormalised)
    table = pa.table({"probs": pa.FixedSizeListArray.from_arrays(p.ravel(), k).cast(pa.list_(pa.float32())),
                      "label": rng.integers(0, k, n), "split": rng.choice(["a", "b"], n)})
    path = tmp_path / "p.parquet"
    pq.write_table(table, path, row_group_size=700)
    fused = evalkit.evaluate(str(path), by=["split"], batch_size=500, **options)
    plain_stats = base.score_stats
    monkeypatch.setattr(base, "score_stats", lambda s, terms=False: plain_stats(s))
    plain = evalkit.evaluate(str(path), by=["split"], batch_size=500, **options)
    assert fused.metadata["rows_used"] == plain.metadata["rows_used"] < n or options.get("renormalize")
    pd.testing.assert_frame_equal(fused.calibration, plain.calibration)
    for name in fused.groups:
        pd.testing.assert_frame_equal(fused.groups[name], plain.groups[name])
    assert dict(fused.overall) == dict(plain.overall)


@pytest.mark.parametrize("k", [1, 7, 1000, 4097])
def test_row_dots_agree_with_a_plain_sum(monkeypatch, k):
    """row_dots (BLAS dots up to ROW_DOT_MAX_CLASSES classes, einsum above) is the row-wise
    dot product within rounding; above the limit it is einsum's result bit for bit."""
    import evalkit.scores as scores

    rng = np.random.default_rng(k)
    a, b = rng.random((5, k)), rng.standard_normal((5, k))
    ref = np.array([float(np.sum(a[i].astype(np.longdouble) * b[i])) for i in range(5)])
    got = scores.row_dots(a, b)
    assert got.shape == (5,) and got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * k)
    assert np.array_equal(scores.row_dots(a[:0], b[:0]), np.zeros(0))
    monkeypatch.setattr(scores, "ROW_DOT_MAX_CLASSES", k - 1)
    assert np.array_equal(scores.row_dots(a, b), np.einsum("ij,ij->i", a, b))


def _column_loop_terms(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sum p^2 and entropy per row as a loop over the columns (the form the block path of
    column-major matrices replaced): float64 copy of each column, added in column order."""
    n, k = p.shape
    a2, ae = np.zeros(n), np.zeros(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(k):
            c = p[:, j].astype(np.float64)
            a2 += c * c
            ae -= c * np.log(c)
    bad = np.isnan(ae)
    q = p[bad].astype(np.float64)
    ae[bad] = -np.einsum("ij,ij->i", q, np.log(np.maximum(q, 1e-300)))
    return a2, ae


@pytest.mark.parametrize("k", [1, 2, 10, 64])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_major_terms_equal_the_column_loop_bit_for_bit(k: int, dtype: type) -> None:
    """Wide layouts' calibration terms (column-major blocks: whole-block ufuncs, sums over
    the columns) are the column loop's values bit for bit, with zero and one probabilities,
    over several blocks and a short last one; the soft-target path gets the same block."""
    rng = np.random.default_rng(k)
    n = 2 * _col_step(k) + 7
    p = rng.dirichlet(np.full(k, 0.3), n).astype(dtype)
    p[::97] = 0
    p[::97, 0] = 1  # one-hot rows: 1 log 1 = 0 and 0 log 0 = 0
    cols = np.asfortranarray(p)  # (n, k) with contiguous columns, as layout.scores gives
    assert cols.strides[0] == cols.itemsize
    y = rng.integers(0, k, n)
    got = calibration_terms(cols, from_logits=False, p_true=cols[np.arange(n), y].astype(np.float64))
    sq, ent = _column_loop_terms(cols)
    brier = np.maximum(sq - 2.0 * cols[np.arange(n), y].astype(np.float64) + 1.0, 0.0)
    assert got.entropy.tobytes() == np.maximum(ent, 0.0).tobytes()
    assert got.brier.tobytes() == brier.tobytes()
    assert got.confidence.tobytes() == cols.max(axis=1).astype(np.float64).tobytes()
    t = np.eye(k)[y]
    soft = calibration_terms(cols, from_logits=False, targets=t)
    assert soft.entropy.tobytes() == got.entropy.tobytes()
