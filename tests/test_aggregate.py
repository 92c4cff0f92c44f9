"""Tests for evalkit.aggregate: GroupStats, LogHistogram, TopK."""

from __future__ import annotations

import datetime
import math
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.aggregate import GroupStats, LogHistogram, TopK, quantile_column_name

EPS = 1e-7
LO = -math.log1p(-EPS)
HI = -math.log(EPS)
QS = (0.0, 0.25, 0.5, 0.9, 0.99, 1.0)
QCOLS = [quantile_column_name(q) for q in QS]
FLOAT_COLS = ["mean", "std", "min", "max", "sum", "accuracy"]


def make_data(n, n_groups=5, seed=0, null_frac=0.0):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n)
    loss = np.clip(rng.exponential(1.0, n) * rng.choice([0.01, 1.0, 5.0], n), LO, HI)
    loss[rng.random(n) < 0.05] = HI  # clipped rows share one exact value: stresses ties
    clipped = loss >= HI
    correct = rng.random(n) < 0.6
    weight = rng.random(n) + 0.1
    mask = rng.random(n) < null_frac
    return g, mask, loss, clipped, correct, weight


def pandas_reference(keys: dict, loss, clipped, correct, weight=None, high=None):
    df = pd.DataFrame(keys)
    names = list(keys)
    df["loss"] = loss
    df["clipped_low"] = clipped.astype(np.int64)
    df["clipped_high"] = (np.zeros(len(loss), bool) if high is None else high).astype(np.int64)
    df["correct"] = correct.astype(np.float64)
    if weight is not None:
        df["w"] = weight
        df["wl"] = weight * loss
    gb = df.groupby(names, dropna=False, sort=True) if names else df.groupby(np.zeros(len(df)))
    ref = pd.DataFrame(
        {
            "count": gb["loss"].count(),
            "mean": gb["loss"].mean(),
            "std": gb["loss"].std(ddof=1),
            "min": gb["loss"].min(),
            "max": gb["loss"].max(),
            "sum": gb["loss"].sum(),
            "clipped_low": gb["clipped_low"].sum(),
            "clipped_high": gb["clipped_high"].sum(),
            "accuracy": gb["correct"].mean(),
        }
    )
    if weight is not None:
        ref["weight_sum"] = gb["w"].sum()
        ref["weighted_mean"] = gb["wl"].sum() / gb["w"].sum()
        df["w2"] = weight * weight
        ref["n_eff"] = ref["weight_sum"] ** 2 / gb["w2"].sum()
    return ref.reset_index(drop=not names)


def interval_reference(x: np.ndarray, w: np.ndarray | None = None, confidence: float = 0.95):
    """(sem, low, high) by hand with scipy: the t-interval of the mean, or with weights of the
    weighted mean using Kish's n_eff = (sum w)^2 / sum w^2 and the reliability-weighted sd."""
    import scipy.stats as st

    if w is None:
        n, m, sd = len(x), x.mean(), x.std(ddof=1)
    else:
        n = w.sum() ** 2 / (w * w).sum()
        m = np.average(x, weights=w)
        sd = np.sqrt(np.average((x - m) ** 2, weights=w) * n / (n - 1))
    sem = sd / np.sqrt(n)
    lo, hi = st.t.interval(confidence, n - 1, loc=m, scale=sem)
    return sem, lo, hi


def assert_close(a, b, rtol=1e-12):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    both_nan = np.isnan(a) & np.isnan(b)
    assert np.allclose(a[~both_nan], b[~both_nan], rtol=rtol, atol=0), (a, b)
    assert not (np.isnan(a) ^ np.isnan(b)).any(), (a, b)


# --------------------------------------------------------------------------- #
# LogHistogram
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("rel_err", [1e-3, 1e-2, 0.05])
def test_loghistogram_relative_error(rel_err):
    h = LogHistogram.for_eps(EPS, rel_err)
    assert h.lo == LO and h.hi == HI
    x = np.geomspace(LO, HI, 200_001)
    x = np.concatenate([x, [LO, HI, np.nextafter(HI, 0), np.nextafter(LO, 1)]])
    # Values right at bin edges are where float rounding could misplace them.
    edges = np.exp(np.log(LO) + np.arange(h.n_bins) * math.log((1 + rel_err) / (1 - rel_err)))
    edges = edges[(edges >= LO) & (edges <= HI)]
    x = np.concatenate([x, edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    x = x[(x >= LO) & (x <= HI)]
    idx = h.bin_index(x)
    assert idx.dtype == np.int64
    assert idx.min() == 0 and idx.max() == h.n_bins - 1
    assert np.all(np.diff(h.bin_index(np.sort(x))) >= 0)
    rep = h.bin_value(idx)
    assert np.all(np.abs(rep - x) <= rel_err * x)


def test_loghistogram_clamps_out_of_range():
    h = LogHistogram(1e-3, 10.0, 1e-2)
    idx = h.bin_index(np.array([-1.0, 0.0, 1e-9, 1e-3, 10.0, 11.0, np.inf, np.nan]))
    assert idx.tolist() == [0, 0, 0, 0, h.n_bins - 1, h.n_bins - 1, h.n_bins - 1, 0]
    assert 1e-3 * 10 ** (math.log10(1e4) / h.n_bins) > 0  # n_bins is finite and sane
    assert h.n_bins == pytest.approx(math.log(1e4) / math.log(1.01 / 0.99), abs=2)


def test_loghistogram_invalid():
    with pytest.raises(ValueError):
        LogHistogram(0.0, 1.0)
    with pytest.raises(ValueError):
        LogHistogram(1.0, 1.0)
    with pytest.raises(ValueError):
        LogHistogram(1e-3, 1.0, rel_err=0.0)


def test_quantile_column_names():
    assert [quantile_column_name(q) for q in (0.5, 0.9, 0.99, 0.999, 0.29, 0.0, 1.0)] == [
        "p50", "p90", "p99", "p99.9", "p29", "p0", "p100"
    ]


# --------------------------------------------------------------------------- #
# GroupStats vs pandas
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("key_kind", ["int", "str", "large_str", "dict"])
@pytest.mark.parametrize("weighted", [False, True])
def test_groupstats_matches_pandas(key_kind, weighted):
    n = 20_000
    g, _, loss, clipped, correct, weight = make_data(n, n_groups=7, seed=1)
    names = np.array([f"k{i}" for i in range(7)])
    if key_kind == "int":
        arr, values = pa.array(g), g
    elif key_kind == "str":
        arr, values = pa.array(names[g]), names[g]
    elif key_kind == "large_str":
        arr, values = pa.array(names[g], type=pa.large_string()), names[g]
    else:
        arr = pa.DictionaryArray.from_arrays(pa.array(g.astype(np.int32)), pa.array(names))
        values = names[g]

    gs = GroupStats(["key"], quantiles=QS, weighted=weighted, quantile_mode="exact")
    # Rows clipped high (p_true > 1 - eps) are counted apart from the confident mistakes.
    high = ~clipped & (np.random.default_rng(11).random(len(loss)) < 0.1)
    for lo_, hi_ in [(0, 5000), (5000, 5001), (5001, 20_000)]:
        gs.update([arr[lo_:hi_]], loss[lo_:hi_], clipped[lo_:hi_], correct[lo_:hi_],
                  weight[lo_:hi_] if weighted else None, clipped_high=high[lo_:hi_])
    out = gs.finalize()
    ref = pandas_reference({"key": values}, loss, clipped, correct, weight if weighted else None, high)

    expected_cols = (["key", "count", "mean", "sem", "ci_low", "ci_high", "std", "min", *QCOLS, "max",
                      "sum", "clipped_low", "clipped_high", "accuracy"]
                     + (["weight_sum", "weighted_mean", "n_eff"] if weighted else []))
    assert list(out.columns) == expected_cols
    assert out["key"].tolist() == ref["key"].tolist()
    assert out["count"].dtype == np.int64 and out["clipped_low"].dtype == np.int64
    assert out["count"].tolist() == ref["count"].tolist()
    assert out["clipped_low"].tolist() == ref["clipped_low"].tolist()
    assert out["clipped_high"].tolist() == ref["clipped_high"].tolist()
    assert out["clipped_high"].sum() > 0
    for c in FLOAT_COLS + (["weight_sum", "weighted_mean", "n_eff"] if weighted else []):
        assert_close(out[c], ref[c])
    for i, k in enumerate(out["key"]):
        x = values == k
        sem, lo, hi = interval_reference(loss[x], weight[x] if weighted else None)
        assert out["sem"].iloc[i] == pytest.approx(sem, rel=1e-10)
        assert (out["ci_low"].iloc[i], out["ci_high"].iloc[i]) == pytest.approx((lo, hi), rel=1e-10)
    if key_kind == "int":
        assert out["key"].dtype == np.int64
    else:
        assert pd.api.types.is_string_dtype(out["key"])
    for i, k in enumerate(out["key"]):
        x = values == k
        for q, col in zip(QS, QCOLS, strict=True):
            assert out[col].iloc[i] == np.quantile(loss[x], q, method="linear")
    assert gs.quantile_method == "exact"
    assert gs.n_rows == n


@pytest.mark.parametrize("mode,limit", [("sketch", 10**9), ("auto", 100)])
@pytest.mark.parametrize("rel_err", [1e-3, 2e-2])
def test_sketch_quantiles_within_rel_err(mode, limit, rel_err):
    n = 30_000
    g, _, loss, clipped, correct, _ = make_data(n, n_groups=6, seed=2)
    gs = GroupStats(["g"], quantiles=QS + (0.999, 0.1), quantile_mode=mode, exact_limit=limit,
                    rel_err=rel_err)
    for part in np.array_split(np.arange(n), 4):
        gs.update([pa.array(g[part])], loss[part], clipped[part], correct[part])
    assert gs.quantile_method == "sketch"
    out = gs.finalize()
    for i, k in enumerate(out["g"]):
        x = loss[g == k]
        for q in QS + (0.999, 0.1):
            want = np.quantile(x, q, method="linear")
            got = out[quantile_column_name(q)].iloc[i]
            assert abs(got - want) <= rel_err * want, (k, q, got, want)
        assert x.min() <= out[QCOLS].iloc[i].min() and out[QCOLS].iloc[i].max() <= x.max()


def test_auto_switch_depends_only_on_total():
    n = 1000
    g, _, loss, clipped, correct, _ = make_data(n, seed=3)
    keys = pa.array(g)

    def build(limit, parts):
        states = []
        for part in np.array_split(np.arange(n), parts):
            s = GroupStats(["g"], exact_limit=limit)
            s.update([keys.take(pa.array(part))], loss[part], clipped[part], correct[part])
            states.append(s)
        out = states[0]
        for s in states[1:]:
            out = out.merge(s)
        return out

    assert build(n, 1).quantile_method == "exact"
    assert build(n, 4).quantile_method == "exact"
    assert build(n - 1, 1).quantile_method == "sketch"
    merged = build(n - 1, 4)  # each part under the limit, the total over it
    assert merged.quantile_method == "sketch"
    pd.testing.assert_frame_equal(merged.finalize(), build(n - 1, 1).finalize(), rtol=1e-12)

    # Sketch mode never keeps raw values; exact mode always does.
    s = GroupStats(["g"], quantile_mode="sketch")
    s.update([keys], loss, clipped, correct)
    assert s.quantile_method == "sketch"
    e = GroupStats(["g"], quantile_mode="exact", exact_limit=1)
    e.update([keys], loss, clipped, correct)
    assert e.quantile_method == "exact"


# --------------------------------------------------------------------------- #
# Split / merge invariance (hypothesis)
# --------------------------------------------------------------------------- #


def split_points(draw, n):
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    return [0, *sorted(cuts), n]


def merge_tree(draw, states):
    """Merge in a random association order (random binary tree over the list)."""
    states = list(states)
    while len(states) > 1:
        i = draw(st.integers(0, len(states) - 2))
        if draw(st.booleans()):
            merged = states[i].merge(states[i + 1])
        else:
            merged = states[i + 1].merge(states[i])
        states[i:i + 2] = [merged]
    return states[0]


def build_state(keys_fn, data, bounds, **kwargs):
    g, mask, loss, clipped, correct, weight = data
    s = GroupStats(["a", "b"], quantiles=QS, **kwargs)
    for lo_, hi_ in zip(bounds[:-1], bounds[1:], strict=True):
        s.update(keys_fn(lo_, hi_), loss[lo_:hi_], clipped[lo_:hi_], correct[lo_:hi_],
                 weight[lo_:hi_] if kwargs.get("weighted") else None)
    return s


def assert_frames_equivalent(a: pd.DataFrame, b: pd.DataFrame, quantiles_identical=True):
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for c in a.columns:
        if c in ("a", "b"):
            assert a[c].tolist() == b[c].tolist() or (
                a[c].isna().tolist() == b[c].isna().tolist()
                and a[c].dropna().tolist() == b[c].dropna().tolist()
            )
        elif c in ("count", "clipped_low", "clipped_high"):
            assert a[c].tolist() == b[c].tolist()
        elif c in QCOLS and quantiles_identical:
            np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy())
        elif c in ("ci_low", "ci_high"):
            # Relative to the interval's centre: a bound near 0 (mean minus a half-width of the
            # same size) has no relative precision of its own (-6e-5 from 1.9 - 1.9).
            centre = "weighted_mean" if "weighted_mean" in a.columns else "mean"
            assert_close(a[c] - a[centre], b[c] - b[centre])
        else:
            assert_close(a[c], b[c])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_split_and_merge_invariance(hd):
    draw = hd.draw
    n = draw(st.integers(0, 300))
    seed = draw(st.integers(0, 2**16))
    n_groups = draw(st.integers(1, 6))
    mode = draw(st.sampled_from(["exact", "sketch", "auto"]))
    limit = draw(st.integers(0, 400))
    weighted = draw(st.booleans())
    splits = [split_points(draw, n) for _ in range(2)]
    data = make_data(n, n_groups=n_groups, seed=seed, null_frac=0.2)
    g, mask = data[0], data[1]
    a_col = pa.array(g % 3, mask=mask)
    b_col = pa.array(np.array(["x", "y"])[g // 3])

    def keys_fn(lo_, hi_):
        return [a_col[lo_:hi_], b_col[lo_:hi_]]

    kwargs = dict(quantile_mode=mode, exact_limit=limit, weighted=weighted)
    whole = build_state(keys_fn, data, [0, n], **kwargs)
    ref = whole.finalize()

    # Same data, one state per batch, merged in random association/commutation orders.
    for bounds in splits:
        per_batch = [build_state(keys_fn, data, [lo_, hi_], **kwargs)
                     for lo_, hi_ in zip(bounds[:-1], bounds[1:], strict=True)]
        merged = merge_tree(draw, per_batch)
        assert merged.n_rows == n
        assert merged.quantile_method == whole.quantile_method
        assert_frames_equivalent(merged.finalize(), ref)
        # Streaming all batches through one state must agree too.
        streamed = build_state(keys_fn, data, bounds, **kwargs)
        assert_frames_equivalent(streamed.finalize(), ref)

    # Merging leaves its inputs untouched.
    a = build_state(keys_fn, data, [0, n // 2], **kwargs)
    b = build_state(keys_fn, data, [n // 2, n], **kwargs)
    before_a, before_b = a.finalize(), b.finalize()
    a.merge(b)
    pd.testing.assert_frame_equal(a.finalize(), before_a)
    pd.testing.assert_frame_equal(b.finalize(), before_b)

    if n:
        ref_pd = pandas_reference(
            {"a": pd.array(np.where(mask, pd.NA, g % 3), dtype="Int64"),
             "b": np.array(["x", "y"])[g // 3]},
            data[2], data[3], data[4], data[5] if weighted else None,
        )
        assert ref["count"].tolist() == ref_pd["count"].tolist()
        assert ref["a"].isna().tolist() == ref_pd["a"].isna().tolist()
        assert_close(ref["mean"], ref_pd["mean"])
        assert_close(ref["std"], ref_pd["std"])


# --------------------------------------------------------------------------- #
# Keys: nulls, multi-column, dictionary order, types, overall, empty batches
# --------------------------------------------------------------------------- #


def simple_update(gs, keys, loss):
    loss = np.asarray(loss, dtype=np.float64)
    n = len(loss)
    gs.update(keys, loss, np.zeros(n, bool), np.ones(n, bool))


def test_null_keys_sort_last_and_ints_stay_ints():
    gs = GroupStats(["k"])
    simple_update(gs, [pa.array([3, None, 1, 3, None], type=pa.int32())], [1, 2, 3, 4, 5])
    simple_update(gs, [pa.array([None, 2], type=pa.int32())], [6, 7])
    out = gs.finalize()
    assert out["k"].tolist()[:3] == [1, 2, 3] and pd.isna(out["k"].iloc[3])
    assert out["k"].dtype == pd.Int32Dtype()
    assert out["count"].tolist() == [1, 1, 2, 3]
    assert out["sum"].tolist() == [3.0, 7.0, 5.0, 13.0]


def test_string_keys_with_nulls():
    gs = GroupStats(["s"])
    simple_update(gs, [pa.array(["b", None, "a"])], [1, 2, 3])
    simple_update(gs, [pa.array(["c", "a"], type=pa.large_string())], [4, 5])
    out = gs.finalize()
    assert out["s"].tolist()[:3] == ["a", "b", "c"] and pd.isna(out["s"].iloc[3])
    assert out["count"].tolist() == [2, 1, 1, 1]


def test_multi_column_keys():
    n = 5000
    g, mask, loss, clipped, correct, _ = make_data(n, n_groups=12, seed=5, null_frac=0.1)
    a = pa.array(g % 4, mask=mask)
    b = pa.array(np.array(["u", "v", "w"])[g % 3])
    c = pa.array((g % 2).astype(bool))
    gs = GroupStats(["a", "b", "c"], quantiles=QS)
    for part in np.array_split(np.arange(n), 3):
        idx = pa.array(part)
        gs.update([a.take(idx), b.take(idx), c.take(idx)], loss[part], clipped[part], correct[part])
    out = gs.finalize()
    ref = pandas_reference(
        {"a": pd.array(np.where(mask, pd.NA, g % 4), dtype="Int64"),
         "b": np.array(["u", "v", "w"])[g % 3], "c": (g % 2).astype(bool)},
        loss, clipped, correct,
    )
    assert out["count"].tolist() == ref["count"].tolist()
    assert out["b"].tolist() == ref["b"].tolist()
    assert out["c"].tolist() == ref["c"].tolist()
    assert out["a"].isna().tolist() == ref["a"].isna().tolist()
    for col in FLOAT_COLS:
        assert_close(out[col], ref[col])
    assert list(out.columns[:4]) == ["a", "b", "c", "count"]


def test_dictionary_keys_keep_dictionary_order():
    classes = ["zebra", "apple", "mango", "kiwi"]  # class-index order, deliberately unsorted
    d = pa.array(classes)
    gs = GroupStats(["label"])
    # First batch only uses later classes; "apple" shows up only in a later batch.
    b1 = pa.DictionaryArray.from_arrays(pa.array([2, 0, None, 2], type=pa.int32()), d)
    b2 = pa.DictionaryArray.from_arrays(pa.array([1, 3], type=pa.int32()), d)
    simple_update(gs, [b1], [1, 2, 3, 4])
    simple_update(gs, [b2], [5, 6])
    out = gs.finalize()
    assert out["label"].tolist()[:4] == classes and pd.isna(out["label"].iloc[4])
    assert pd.api.types.is_string_dtype(out["label"])
    assert out["count"].tolist() == [1, 1, 2, 1, 1]

    # Int-valued dictionaries come out as ints in dictionary order.
    gi = GroupStats(["cls"])
    di = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 0], type=pa.int32()),
                                        pa.array([30, 10, 20], type=pa.int16()))
    simple_update(gi, [di], [1, 2, 3, 4])
    out = gi.finalize()
    assert out["cls"].tolist() == [30, 10, 20] and out["cls"].dtype == np.int16

    # Order survives merge and pickling.
    other = GroupStats(["label"])
    simple_update(other, [b2], [5, 6])
    merged = pickle.loads(pickle.dumps(other)).merge(gs)
    assert merged.finalize()["label"].tolist()[:4] == classes


def test_chunked_and_dictionary_with_unused_values():
    d = pa.array([f"c{i}" for i in range(1000)])
    chunks = [pa.DictionaryArray.from_arrays(pa.array([5, 7, 5], type=pa.int32()), d),
              pa.DictionaryArray.from_arrays(pa.array([999, None], type=pa.int32()), d)]
    gs = GroupStats(["c"])
    simple_update(gs, [pa.chunked_array(chunks)], [1, 2, 3, 4, 5])
    simple_update(gs, [pa.chunked_array([pa.array(["c7"]), pa.array(["zz"])])], [6, 7])
    out = gs.finalize()
    # Dictionary values first in dictionary order, plain-only values after by value, null last.
    assert out["c"].tolist()[:4] == ["c5", "c7", "c999", "zz"] and pd.isna(out["c"].iloc[4])
    assert out["count"].tolist() == [2, 2, 1, 1, 1]
    assert gs.n_groups == 5


def test_bool_and_date_keys():
    days = [datetime.date(2024, 1, d) for d in (3, 1, 2)]
    gs = GroupStats(["d", "flag"])
    simple_update(gs, [pa.array([days[0], days[1], None, days[2]]),
                       pa.array([True, False, True, None])], [1, 2, 3, 4])
    out = gs.finalize()
    assert [pd.Timestamp(x).date() if not pd.isna(x) else None for x in out["d"]] == [
        days[1], days[2], days[0], None]
    assert out["flag"].isna().tolist() == [False, True, False, False]
    assert out["flag"].dtype == pd.BooleanDtype()
    assert out["flag"].dropna().tolist() == [False, True, True]


def test_float_nan_and_null_keys_are_one_missing_group_across_batches_and_pickle():
    gs = GroupStats(["f"])
    simple_update(gs, [pa.array([1.5, np.nan, None])], [1, 2, 3])
    simple_update(gs, [pa.array([np.nan, 1.5])], [4, 5])
    other = pickle.loads(pickle.dumps(gs))
    simple_update(other, [pa.array([np.nan, None])], [6, 7])
    out = gs.merge(other).finalize()
    # One documented missing key (as pandas groupby(dropna=False)): NaN and null together.
    assert out["count"].tolist() == [4, 8]
    assert out["f"].iloc[0] == 1.5 and pd.isna(out["f"].iloc[1])


def test_overall_group_and_empty():
    gs = GroupStats(())
    out = gs.finalize()
    assert len(out) == 1 and out["count"].tolist() == [0] and np.isnan(out["mean"].iloc[0])
    assert list(out.columns) == ["count", "mean", "sem", "ci_low", "ci_high", "std", "min", "p50",
                                 "p90", "p99", "max", "sum", "clipped_low", "clipped_high", "accuracy"]
    assert np.isnan(out[["sem", "ci_low", "ci_high"]].to_numpy()).all()
    g, _, loss, clipped, correct, _ = make_data(1000, seed=7)
    gs.update([], loss[:10], clipped[:10], correct[:10])
    gs.update([], loss[:0], clipped[:0], correct[:0])
    gs.update([], loss[10:], clipped[10:], correct[10:])
    out = gs.finalize()
    assert out["count"].tolist() == [1000]
    assert_close(out["mean"], [loss.mean()])
    assert_close(out["std"], [loss.std(ddof=1)])
    assert out["p50"].iloc[0] == np.quantile(loss, 0.5)

    one = GroupStats(())
    simple_update(one, [], [2.0])
    assert np.isnan(one.finalize()["std"].iloc[0])


def test_empty_batches_are_noops_and_groups_appear_late():
    gs = GroupStats(["k"], quantiles=QS)
    ref = GroupStats(["k"], quantiles=QS)
    simple_update(gs, [pa.array([], type=pa.string())], [])
    simple_update(gs, [pa.array(["a", "a"])], [1.0, 2.0])
    simple_update(gs, [pa.array([], type=pa.string())], [])
    simple_update(gs, [pa.array(["b", "c", "a"])], [3.0, 4.0, 5.0])
    simple_update(ref, [pa.array(["a", "a", "b", "c", "a"])], [1.0, 2.0, 3.0, 4.0, 5.0])
    pd.testing.assert_frame_equal(gs.finalize(), ref.finalize())
    empty = GroupStats(["k"])
    simple_update(empty, [pa.array([], type=pa.string())], [])
    assert len(empty.finalize()) == 0 and "k" in empty.finalize().columns


def test_many_groups_growth_and_pickle():
    n = 20_000
    rng = np.random.default_rng(8)
    g = rng.integers(0, 3000, n)
    loss = np.clip(rng.exponential(1.0, n), LO, HI)
    gs = GroupStats(["g"], quantiles=QS, exact_limit=n // 2)
    for part in np.array_split(np.arange(n), 50):  # groups keep trickling in
        gs.update([pa.array(g[part])], loss[part], loss[part] >= HI, loss[part] < 1)
    rt = pickle.loads(pickle.dumps(gs))
    pd.testing.assert_frame_equal(rt.finalize(), gs.finalize())
    assert rt.quantile_method == "sketch"
    ref = pandas_reference({"g": g}, loss, loss >= HI, loss < 1)
    out = gs.finalize()
    assert out["count"].tolist() == ref["count"].tolist()
    assert_close(out["mean"], ref["mean"])
    assert_close(out["std"], ref["std"], rtol=1e-10)
    # Pickled state holds only used slots.
    assert len(pickle.dumps(gs)) < 3000 * gs.hist.n_bins * 8 * 1.1


def test_pickle_exact_state_and_continue_updating():
    g, _, loss, clipped, correct, w = make_data(2000, seed=9)
    gs = GroupStats(["g"], weighted=True, quantiles=QS)
    gs.update([pa.array(g[:1000])], loss[:1000], clipped[:1000], correct[:1000], w[:1000])
    rt = pickle.loads(pickle.dumps(gs))
    rt.update([pa.array(g[1000:])], loss[1000:], clipped[1000:], correct[1000:], w[1000:])
    ref = GroupStats(["g"], weighted=True, quantiles=QS)
    ref.update([pa.array(g)], loss, clipped, correct, w)
    assert_frames_equivalent(rt.finalize().rename(columns={"g": "a"}),
                             ref.finalize().rename(columns={"g": "a"}))


def test_merge_rejects_incompatible():
    with pytest.raises(ValueError):
        GroupStats(["a"]).merge(GroupStats(["b"]))
    with pytest.raises(ValueError):
        GroupStats(["a"]).merge(GroupStats(["a"], rel_err=1e-2))
    with pytest.raises(ValueError):
        GroupStats(["a"], quantile_mode="bogus")
    with pytest.raises(ValueError):
        GroupStats(["a"], weighted=True).update([pa.array([1])], [1.0], [False], [True])
    with pytest.raises(ValueError):
        GroupStats(["a"]).update([pa.array([1, 2])], [1.0], [False], [True])


# --------------------------------------------------------------------------- #
# TopK
# --------------------------------------------------------------------------- #


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_topk_equals_full_sort(hd):
    draw = hd.draw
    n = draw(st.integers(0, 200))
    k = draw(st.integers(0, 6))
    seed = draw(st.integers(0, 2**16))
    n_groups = draw(st.integers(1, 5))
    bounds = split_points(draw, n)
    bounds2 = split_points(draw, n)
    rng = np.random.default_rng(seed)
    g = rng.integers(0, n_groups, n)
    # Coarse losses so ties are common and the `row` tie-break matters.
    loss = rng.integers(0, 8, n).astype(np.float64) / 2
    names = np.array(["g0", "g1", "g2", "g3", "g4"])
    key_arr = pa.array(names[g])
    rows = np.arange(n)
    payload = pa.table({"id": pa.array([f"id{i}" for i in rows]), "row": rows,
                        "label": pa.array(g.astype(np.int32))})

    def build(bnds):
        states = []
        for lo_, hi_ in zip(bnds[:-1], bnds[1:], strict=True):
            t = TopK(k, ["grp"])
            t.update([key_arr[lo_:hi_]], loss[lo_:hi_], payload.slice(lo_, hi_ - lo_))
            states.append(t)
        return merge_tree(draw, states)

    streamed = TopK(k, ["grp"])
    for lo_, hi_ in zip(bounds[:-1], bounds[1:], strict=True):
        streamed.update([key_arr[lo_:hi_]], loss[lo_:hi_], payload.slice(lo_, hi_ - lo_))

    expected_rows = []
    for key in sorted(set(names[g].tolist())):
        x = np.flatnonzero(names[g] == key)
        expected_rows.extend(x[np.lexsort((rows[x], -loss[x]))][:k].tolist())

    for state in (streamed, build(bounds2), pickle.loads(pickle.dumps(build(bounds)))):
        out = state.finalize()
        assert list(out.columns) == ["grp", "id", "row", "label", "loss"]
        assert out["row"].tolist() == expected_rows
        assert out["grp"].tolist() == names[g][expected_rows].tolist()
        assert out["loss"].tolist() == loss[expected_rows].tolist()
        assert out["id"].tolist() == [f"id{i}" for i in expected_rows]
        assert out["label"].tolist() == g[expected_rows].tolist()
        assert len(state._loss) <= k * n_groups


def test_topk_overall_large_batch_and_memory():
    rng = np.random.default_rng(11)
    n = 200_000
    loss = rng.exponential(1.0, n)
    loss[rng.random(n) < 0.3] = HI  # many exact ties at the clip value
    t = TopK(5)
    for part in np.array_split(np.arange(n), 7):
        t.update([], loss[part], pa.table({"row": part}))
    out = t.finalize()
    assert list(out.columns) == ["row", "loss"]
    assert out["row"].tolist() == np.flatnonzero(loss == HI)[:5].tolist()
    assert len(t._table) == 5


def test_topk_groups_ordered_like_groupstats_and_key_payload_dedup():
    d = pa.array(["zebra", "apple", "mango"])
    labels = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 1, 0, None], type=pa.int32()), d)
    loss = np.array([1.0, 5.0, 3.0, 2.0, 4.0, 9.0])
    payload = pa.table({"label": labels.dictionary_decode(), "row": np.arange(6)})
    t = TopK(1, ["label"])
    t.update([labels], loss, payload)
    out = t.finalize()
    assert list(out.columns) == ["label", "row", "loss"]
    assert out["label"].tolist()[:3] == ["zebra", "apple", "mango"]
    assert pd.isna(out["label"].iloc[3])
    assert out["row"].tolist() == [4, 1, 2, 5]
    with pytest.raises(ValueError):
        t.update([labels], loss, pa.table({"loss": loss}))


@pytest.mark.parametrize("max_radix", [None, 4])
def test_multi_column_code_paths(monkeypatch, max_radix):
    """Large dictionaries (np.unique densify) and radix overflow (re-densify) give same groups."""
    import evalkit.aggregate.keys as agg

    if max_radix is not None:
        monkeypatch.setattr(agg, "_MAX_RADIX", max_radix)
    rng = np.random.default_rng(13)
    n = 3000
    big = pa.array([f"v{i}" for i in range(20_000)])
    ia = rng.integers(0, 20_000, n).astype(np.int32)
    ib = rng.integers(0, 3, n)
    mask = rng.random(n) < 0.1
    a = pa.DictionaryArray.from_arrays(pa.array(ia, mask=mask), big)
    b = pa.array(ib)
    loss = np.clip(rng.exponential(1.0, n), LO, HI)
    gs = GroupStats(["a", "b"])
    for part in np.array_split(np.arange(n), 3):
        idx = pa.array(part)
        gs.update([a.take(idx), b.take(idx)], loss[part], np.zeros(len(part), bool),
                  np.ones(len(part), bool))
    out = gs.finalize()
    a_vals = np.where(mask, None, np.array(big.to_pylist(), dtype=object)[ia])
    ref = pd.DataFrame({"a": a_vals, "b": ib, "loss": loss}).groupby(
        ["a", "b"], dropna=False)["loss"].agg(["count", "sum"])
    got = {(x if isinstance(x, str) else None, y): (c, s)
           for x, y, c, s in zip(out["a"], out["b"], out["count"], out["sum"], strict=True)}
    want = {(x if isinstance(x, str) else None, y): (c, s)
            for (x, y), c, s in zip(ref.index, ref["count"], ref["sum"], strict=True)}
    assert got.keys() == want.keys()
    for key, (c, s) in want.items():
        assert got[key][0] == c and got[key][1] == pytest.approx(s, rel=1e-12)
    # Dictionary order: rows follow the dictionary index of column a, nulls last.
    ranks = [int(x[1:]) for x in out["a"].dropna()]
    assert ranks == sorted(ranks)
    assert out["a"].isna().tolist()[-int(pd.isna(out["a"]).sum()):] == [True] * int(
        pd.isna(out["a"]).sum())


def test_topk_selects_once_candidates_fill_every_group():
    """The first selection comes as soon as the candidates could fill k rows of every group
    seen (not after PENDING_ROWS of them): later batches are then cut by the per-group
    thresholds, so few rows of each reach the candidate search."""
    rng = np.random.default_rng(3)
    t = TopK(10, ["grp"])
    calls = []
    orig = t._candidates
    t._candidates = lambda local, k_local, loss: (calls.append(len(loss)), orig(local, k_local, loss))[1]
    n = 50_000
    for _ in range(4):
        g = pa.array([f"c{i}" for i in rng.integers(0, 10, n)])
        t.update([g], rng.random(n), pa.table({"row": np.arange(n)}))
    assert len(t._codes) == 100  # selected after the first batch: 10 groups x k=10
    assert calls[0] == n and max(calls[1:]) < n // 100


@pytest.mark.parametrize("pending", [1, 7, 1 << 30])
def test_topk_collected_candidates_select_the_same_rows(monkeypatch, pending):
    """Candidates are collected and selected once there are PENDING_ROWS of them (or as many
    as the selection holds): any threshold gives the rows of a full sort, also after merges
    of states that still hold collected candidates, with and without a `row` column."""
    import evalkit.aggregate.topk as topk

    monkeypatch.setattr(topk, "PENDING_ROWS", pending)
    rng = np.random.default_rng(17)
    n, k, groups = 5_000, 3, 40
    g = rng.integers(0, groups, n)
    loss = rng.integers(0, 30, n).astype(np.float64) / 4  # many ties
    names = pa.array([f"c{i:02d}" for i in g])
    for with_row in (True, False):
        payload = pa.table({"row": np.arange(n)} if with_row else {"id": np.arange(n) * 10})
        parts = []
        for lo_, hi_ in ((0, 1_700), (1_700, 1_701), (1_701, 5_000)):
            t = TopK(k, ["grp"])
            for a in range(lo_, hi_, 300):
                b = min(hi_, a + 300)
                t.update([names[a:b]], loss[a:b], payload.slice(a, b - a))
            parts.append(t)
        merged = parts[0].merge(parts[1]).merge(parts[2])
        out = merged.finalize()
        want = []
        for key in range(groups):
            x = np.flatnonzero(g == key)
            want.extend(x[np.lexsort((x, -loss[x]))][:k].tolist())  # ties: earlier row first
        got = out["row"] if with_row else out["id"] // 10
        assert got.tolist() == want
        assert out["loss"].tolist() == loss[want].tolist()
        assert len(merged._loss) <= k * groups and not merged._pending
