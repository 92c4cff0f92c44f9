"""Slice search: moments per slice are mergeable, Welch + Benjamini-Hochberg find planted slices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.stats as st

from evalkit.aggregate.slices import SliceStats, assess_slices, slice_sets, worst_slices


def _data(seed: int, n: int = 6000, planted: float = 0.0):
    rng = np.random.default_rng(seed)
    cols = {
        "region": rng.choice(["EU", "US", "APAC", "LATAM"], n),
        "device": rng.choice(["ios", "android", "web"], n),
        "tier": rng.integers(0, 3, n),
    }
    loss = rng.exponential(0.7, n)
    bad = (cols["region"] == "LATAM") & (cols["device"] == "web")
    loss[bad] += planted
    return cols, loss


def _feed(stats: SliceStats, cols, loss, step: int) -> SliceStats:
    for i in range(0, len(loss), step):
        stats.update({k: pa.array(v[i:i + step]) for k, v in cols.items()}, loss[i:i + step])
    return stats


def _assess(stats, loss, **kw):
    m2 = float(((loss - loss.mean()) ** 2).sum())
    return assess_slices(stats, len(loss), float(loss.mean()), m2, **kw)


def test_slice_sets_lattice():
    assert slice_sets(["a", "b", "c"], 1) == [("a",), ("b",), ("c",)]
    assert len(slice_sets(["a", "b", "c"], 2)) == 6
    assert slice_sets(["a", "b", "c"], 3)[-1] == ("a", "b", "c")
    with pytest.raises(ValueError):
        slice_sets(["a"], 4)


def test_slice_statistics_equal_pandas_by_hand():
    cols, loss = _data(0, planted=0.5)
    table, summary = _assess(_feed(SliceStats(list(cols), 2), cols, loss, 1000), loss)
    df = pd.DataFrame(cols).assign(loss=loss)
    row = table[table["slice"] == "region=LATAM, device=web"].iloc[0]
    mask = (df.region == "LATAM") & (df.device == "web")
    s, c = df.loss[mask], df.loss[~mask]
    assert row["count"] == mask.sum() and row["complement_count"] == (~mask).sum()
    assert row["mean"] == pytest.approx(s.mean(), rel=1e-12)
    assert row["complement_mean"] == pytest.approx(c.mean(), rel=1e-12)
    ref = st.ttest_ind(s, c, equal_var=False)
    assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-6)
    assert row["t"] == pytest.approx(ref.statistic, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    # every value and pair: 4 + 3 + 3 singles, 12 + 12 + 9 pairs
    assert summary["slices"] == len(table) == 10 + 33
    assert summary["tested"] + summary["skipped_small"] == len(table)
    adj = st.false_discovery_control(table.loc[table.tested, "p_value"])
    np.testing.assert_allclose(table.loc[table.tested, "p_adjusted"], adj, rtol=1e-12)


def test_planted_bad_slice_is_found_first():
    cols, loss = _data(1, n=20_000, planted=0.6)
    table, summary = _assess(_feed(SliceStats(list(cols), 2), cols, loss, 4096), loss)
    top = worst_slices(table, 5)
    assert top.iloc[0]["slice"] == "region=LATAM, device=web"
    assert summary["significantly_worse"] >= 1


def test_null_data_rarely_reports_a_significant_slice():
    """No planted effect: BH at q=0.05 reports a slice in at most ~5% of seeds (FDR = FWER
    under the global null); allow some slack for 60 seeds."""
    hits = 0
    seeds = 60
    for seed in range(seeds):
        cols, loss = _data(100 + seed, n=3000)
        table, _ = _assess(_feed(SliceStats(list(cols), 2), cols, loss, 3000), loss)
        hits += bool(table["significant"].any())
    assert hits / seeds <= 0.12, f"{hits}/{seeds} null runs reported a significant slice"


def test_streaming_and_merge_equal_one_pass():
    cols, loss = _data(2, planted=0.3)
    one, _ = _assess(_feed(SliceStats(list(cols), 3), cols, loss, len(loss)), loss)
    small, _ = _assess(_feed(SliceStats(list(cols), 3), cols, loss, 97), loss)
    half = len(loss) // 3
    a = _feed(SliceStats(list(cols), 3), {k: v[:half] for k, v in cols.items()}, loss[:half], 500)
    b = _feed(SliceStats(list(cols), 3), {k: v[half:] for k, v in cols.items()}, loss[half:], 700)
    merged, _ = _assess(b.merge(a), loss)
    for other in (small, merged):
        assert other["slice"].tolist() == one["slice"].tolist()
        np.testing.assert_array_equal(other["count"], one["count"])
        np.testing.assert_allclose(other["mean"], one["mean"], rtol=1e-12)
        np.testing.assert_allclose(other["p_value"], one["p_value"], rtol=1e-9)


def test_min_count_skips_small_slices_and_counts_them():
    cols, loss = _data(3, n=400)
    table, summary = _assess(_feed(SliceStats(list(cols), 2), cols, loss, 400), loss, min_count=40)
    small = table["count"] < 40
    assert small.any()
    assert not table.loc[small, "tested"].any() and table.loc[small, "p_value"].isna().all()
    assert summary["skipped_small"] == int(small.sum())


def test_too_many_distinct_values_is_capped_with_a_note_not_unbounded():
    rng = np.random.default_rng(4)
    n = 5000
    cols = {"user": np.arange(n).astype(str), "device": rng.choice(["a", "b"], n)}
    loss = rng.exponential(1.0, n)
    stats = _feed(SliceStats(list(cols), 2, max_slices=1000), cols, loss, 700)
    table, summary = _assess(stats, loss)
    capped = {c["columns"] for c in summary["capped"]}
    assert capped == {"user", "user,device"}
    assert set(table["columns"]) == {"device"}
    # same decision when the batches are merged instead
    a = _feed(SliceStats(list(cols), 2, max_slices=1000), {k: v[:600] for k, v in cols.items()}, loss[:600], 600)
    b = _feed(SliceStats(list(cols), 2, max_slices=1000), {k: v[600:] for k, v in cols.items()}, loss[600:], 600)
    _, s2 = _assess(a.merge(b), loss)
    assert {c["columns"] for c in s2["capped"]} == capped


def test_null_slice_values_are_a_slice():
    cols = {"region": np.array(["EU", None, "US", None] * 50, dtype=object)}
    loss = np.linspace(0.1, 2.0, 200)
    table, _ = _assess(_feed(SliceStats(["region"], 1), cols, loss, 64), loss, min_count=10)
    assert "region=(null)" in table["slice"].tolist()
