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


def _feed(stats: SliceStats, cols, loss, step: int, weight=None, offset: int = 0) -> SliceStats:
    """Feed rows ``offset, offset + 1, ...`` (their global positions) in batches of ``step``."""
    for i in range(0, len(loss), step):
        stats.update({k: pa.array(v[i:i + step]) for k, v in cols.items()}, loss[i:i + step],
                     None if weight is None else weight[i:i + step],
                     rows=np.arange(offset + i, offset + min(i + step, len(loss))))
    return stats


def _assess(stats, loss, **kw):
    return assess_slices(stats, **kw)


def _hall_welch_by_hand(s, c, confidence=0.95, ws=None, wc=None):
    """Reference from the rows: Welch's t with Hall's (1992) cubic skewness correction,
    referred to scipy's t; the interval by root-finding on the test (not by the closed-form
    inverse the library uses). Weighted: weighted moments, Kish n_eff. A slice whose mean is
    below the rest's is tested at no less than the rest's variance (slices._claim_variance)."""
    from scipy.optimize import brentq

    def moments(x, w):
        w = np.ones_like(x) if w is None else w
        m = np.average(x, weights=w)
        n_eff = w.sum() ** 2 / (w * w).sum()
        var = np.average((x - m) ** 2, weights=w) * n_eff / (n_eff - 1)
        mu3 = np.average((x - m) ** 3, weights=w)
        return m, var, mu3, n_eff, (w ** 3).sum() / w.sum() ** 3

    m1, v1, mu1, n1, c1 = moments(s, ws)
    m2, v2, mu2, n2, c2 = moments(c, wc)
    if m1 < m2:
        v1 = max(v1, v2)
    se = np.sqrt(v1 / n1 + v2 / n2)
    df = (v1 / n1 + v2 / n2) ** 2 / ((v1 / n1) ** 2 / (n1 - 1) + (v2 / n2) ** 2 / (n2 - 1))
    k = (mu1 * c1 - mu2 * c2) / se ** 3
    cov = (mu1 / n1 ** 2 - mu2 / n2 ** 2) / se ** 3
    a = (3 * cov - k) / 6
    b = cov / 2 - a

    def g(t):
        return t + a * t * t + a * a * t ** 3 / 3 + b

    d = m1 - m2
    p = 2 * st.t.sf(abs(g(d / se)), df)
    tq = st.t.ppf(0.5 + confidence / 2, df)
    span = 50 * se
    lo = brentq(lambda delta: g((d - delta) / se) - tq, d - span, d + span, xtol=1e-14, rtol=1e-14)
    hi = brentq(lambda delta: g((d - delta) / se) + tq, d - span, d + span, xtol=1e-14, rtol=1e-14)
    return p, lo, hi


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
    assert row["t"] == pytest.approx(ref.statistic, rel=1e-9)  # the plain Welch statistic
    p, lo, hi = _hall_welch_by_hand(s.to_numpy(), c.to_numpy())
    assert row["p_value"] == pytest.approx(p, rel=1e-8)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), rel=1e-9)
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


def _null_rates(seeds, loss_of, plain=True):
    """Over null runs: the share of runs where the search reports a slice, a worse slice, and
    where plain Welch (no skewness correction) would; and the number of single tests with
    p < 0.01 on each side (slice worse, slice better), skew-corrected and plain."""
    runs = np.zeros(3)
    tails = {"corrected": np.zeros(2, dtype=int), "plain": np.zeros(2, dtype=int)}
    tests = 0
    for seed in seeds:
        cols, _ = _data(seed, n=3000)
        loss = loss_of(np.random.default_rng(10_000 + seed), 3000)
        stats = _feed(SliceStats(list(cols), 2), cols, loss, 3000)
        table, _ = _assess(stats, loss)
        welch = _assess(stats, loss, correct_skew=False)[0] if plain else table.iloc[:0]
        runs += (table["significant"].any(), table["worse"].any(), welch["significant"].any())
        tests += int(table["tested"].sum())
        for name, t in (("corrected", table), ("plain", welch)):
            t = t[t["tested"]]
            p = t["p_value"].to_numpy()
            tails[name] += (int(((p < 0.01) & (t["diff"] > 0)).sum()), int(((p < 0.01) & (t["diff"] < 0)).sum()))
    return runs / len(seeds), tails, tests


def test_null_slice_search_is_calibrated_on_skewed_losses():
    """No planted effect (exponential losses, right-skewed; 43 slices of 3 columns at depth 2;
    n = 3000; 250 seeds).

    Family-wise: BH at q = 0.05 reports a slice in 8/250 = 3.2% of runs (all of them worse
    slices; without the skewness correction: 2.0%). bench/slice_calibration.py, 400 other
    seeds: 1.3% (worse 1.0%, better 0.5%). Asserted: at most 5% + 2 simulation sd
    (sqrt(0.05 * 0.95 / 250) = 1.4%).

    Single tests, the sharper check (10,750 tests, 53.75 expected per side at p < 0.01):
    slices worse: 58 with the correction, 32 without (the studentised mean of a right-skewed
    loss is left-skewed, so plain Welch under-calls worse slices and over-calls better ones);
    slices better: 22 (a "better" claim must hold at the rest's variance,
    slices._claim_variance: conservative by design). Asserted: the worse side within 2.5
    binomial sd of its expectation, which plain Welch fails; the better side at most that."""
    runs, tails, tests = _null_rates(range(100, 350), lambda rng, n: rng.exponential(0.7, n))
    assert runs[0] <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 250), runs
    expected, sd = tests * 0.005, np.sqrt(tests * 0.005 * 0.995)
    assert abs(tails["corrected"][0] - expected) <= 2.5 * sd, (tails, expected)
    assert abs(tails["plain"][0] - expected) > 2.5 * sd, (tails, expected)
    assert tails["corrected"][1] <= expected + 2.5 * sd, (tails, expected)


def _accurate(rng, n):
    big = rng.random(n) < 0.03
    return np.where(big, rng.uniform(1.0, 16.1, n), rng.exponential(0.02, n))


@pytest.mark.parametrize("name,loss_of", [("accurate", _accurate),
                                          ("lognormal", lambda rng, n: rng.lognormal(-1.0, 1.2, n))])
def test_no_false_alarms_either_way_on_very_skewed_losses(name, loss_of, monkeypatch):
    """Heavy-tailed losses (an accurate model: 97% near 0, 3% confident mistakes up to the
    clip, skewness ~7; lognormal sigma 1.2), 100 null seeds each. A slice that happens to
    hold few of the mistakes has a low mean and a tiny variance: Welch's test, even corrected
    for skewness, called such slices "significantly better": here 22% / 7% of null runs
    reported a slice (worse only: 5% / 1%; red team 16 measured 19% on the accurate model).
    A "better" claim must now hold at the rest's variance (slices._claim_variance): 2% / 1%
    of runs report any slice, all of them worse (single tests at p < 0.01: 1 better of 4,300,
    29 / 22 worse, 21.5 expected); bench/slice_calibration.py, 400 other seeds: accurate
    2.0%, lognormal 3.3%, all worse. Without the rule (monkeypatched) the check must fail."""
    runs, tails, _ = _null_rates(range(100, 200), loss_of, plain=False)
    bound = 0.05 + 2 * np.sqrt(0.05 * 0.95 / 100)
    assert runs[0] <= bound and runs[1] <= bound, runs
    assert runs[0] == runs[1], runs  # every significant slice is a worse one
    assert tails["corrected"][1] <= 5, tails
    import evalkit.aggregate.slices as slices

    monkeypatch.setattr(slices, "_claim_variance", lambda mean, mean_c, var, var_c: var)
    before, _, _ = _null_rates(range(100, 200), loss_of, plain=False)
    assert before[0] - before[1] >= 0.05, before  # runs with only "better" false alarms


def test_planted_slice_power_is_kept():
    """A weaker planted effect (+0.15 nats on ~1/12 of 3000 rows, exponential losses): the
    corrected test finds it about as often as plain Welch (power before/after in the notes)."""
    found = np.zeros(2)
    for seed in range(60):
        cols, loss = _data(500 + seed, n=3000, planted=0.15)
        table, _ = _assess(_feed(SliceStats(list(cols), 2), cols, loss, 3000), loss)
        target = table[table["slice"] == "region=LATAM, device=web"].iloc[0]
        p_plain = 2 * st.t.sf(np.abs(table.loc[table.tested, "t"]), table.loc[table.tested, "df"])
        adj_plain = st.false_discovery_control(p_plain)[table.loc[table.tested, "slice"].tolist().index(target["slice"])]
        found += (target["worse"], adj_plain <= 0.05)
    assert found[0] >= 0.9 * found[1] and found[0] >= 0.3 * 60, found


def test_streaming_and_merge_equal_one_pass():
    cols, loss = _data(2, planted=0.3)
    one, _ = _assess(_feed(SliceStats(list(cols), 3), cols, loss, len(loss)), loss)
    small, _ = _assess(_feed(SliceStats(list(cols), 3), cols, loss, 97), loss)
    half = len(loss) // 3
    a = _feed(SliceStats(list(cols), 3), {k: v[:half] for k, v in cols.items()}, loss[:half], 500)
    b = _feed(SliceStats(list(cols), 3), {k: v[half:] for k, v in cols.items()}, loss[half:], 700,
              offset=half)
    merged, _ = _assess(b.merge(a), loss)
    for other in (small, merged):
        assert other["slice"].tolist() == one["slice"].tolist()
        np.testing.assert_array_equal(other["count"], one["count"])
        np.testing.assert_allclose(other["mean"], one["mean"], rtol=1e-12)
        for col in ("p_value", "ci_low", "ci_high", "complement_mean"):
            np.testing.assert_allclose(other[col], one[col], rtol=1e-9, err_msg=col)


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
    b = _feed(SliceStats(list(cols), 2, max_slices=1000), {k: v[600:] for k, v in cols.items()}, loss[600:], 600,
              offset=600)
    _, s2 = _assess(a.merge(b), loss)
    assert {c["columns"] for c in s2["capped"]} == capped


def test_null_slice_values_are_a_slice():
    cols = {"region": np.array(["EU", None, "US", None] * 50, dtype=object)}
    loss = np.linspace(0.1, 2.0, 200)
    table, _ = _assess(_feed(SliceStats(["region"], 1), cols, loss, 64), loss, min_count=10)
    assert "region=∅" in table["slice"].tolist()


def test_weighted_slices_equal_numpy_by_hand():
    """With weights: weighted means, Kish n_eff in the test (and the Welch df), weighted third
    moments in the skewness correction; zero weights allowed; every figure against numpy."""
    cols, loss = _data(5, planted=0.4)
    w = np.random.default_rng(6).uniform(0.0, 3.0, len(loss))
    w[::17] = 0.0
    table, summary = _assess(_feed(SliceStats(list(cols), 2, weighted=True), cols, loss, 999, w), loss)
    assert summary["weighted"] is True
    df = pd.DataFrame(cols).assign(loss=loss, w=w)
    for name, mask in (("region=LATAM, device=web", (df.region == "LATAM") & (df.device == "web")),
                       ("tier=2", df.tier == 2), ("region=EU", df.region == "EU")):
        row = table[table["slice"] == name].iloc[0]
        s, c = df[mask], df[~mask]
        assert row["count"] == len(s) and row["complement_count"] == len(c)
        assert row["mean"] == pytest.approx(np.average(s.loss, weights=s.w), rel=1e-12)
        assert row["complement_mean"] == pytest.approx(np.average(c.loss, weights=c.w), rel=1e-12)
        assert row["n_eff"] == pytest.approx(s.w.sum() ** 2 / (s.w ** 2).sum(), rel=1e-12)
        assert row["complement_n_eff"] == pytest.approx(c.w.sum() ** 2 / (c.w ** 2).sum(), rel=1e-10)
        p, lo, hi = _hall_welch_by_hand(s.loss.to_numpy(), c.loss.to_numpy(), ws=s.w.to_numpy(),
                                        wc=c.w.to_numpy())
        assert row["p_value"] == pytest.approx(p, rel=1e-8)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((lo, hi), rel=1e-9)
    # unit weights give the unweighted search
    unit, _ = _assess(_feed(SliceStats(list(cols), 2, weighted=True), cols, loss, 999,
                            np.ones(len(loss))), loss)
    plain, _ = _assess(_feed(SliceStats(list(cols), 2), cols, loss, 999), loss)
    np.testing.assert_allclose(unit["p_value"], plain["p_value"], rtol=1e-9)
    np.testing.assert_allclose(unit["ci_low"], plain["ci_low"], rtol=1e-9)


def test_weighted_streaming_and_merge_equal_one_pass():
    cols, loss = _data(7, planted=0.3)
    w = np.random.default_rng(8).exponential(1.0, len(loss))
    one, _ = _assess(_feed(SliceStats(list(cols), 3, weighted=True), cols, loss, len(loss), w), loss)
    small, _ = _assess(_feed(SliceStats(list(cols), 3, weighted=True), cols, loss, 61, w), loss)
    h = len(loss) // 4
    a = _feed(SliceStats(list(cols), 3, weighted=True), {k: v[:h] for k, v in cols.items()},
              loss[:h], 300, w[:h])
    b = _feed(SliceStats(list(cols), 3, weighted=True), {k: v[h:] for k, v in cols.items()},
              loss[h:], 800, w[h:], offset=h)
    for other in (small, _assess(b.merge(a), loss)[0]):
        assert other["slice"].tolist() == one["slice"].tolist()
        for col in ("mean", "n_eff", "p_value", "ci_low", "ci_high", "complement_mean"):
            np.testing.assert_allclose(other[col], one[col], rtol=1e-9, err_msg=col)


def test_weights_must_be_given_for_every_batch_or_none():
    cols, loss = _data(9, n=100)
    with pytest.raises(ValueError, match="weights"):
        _feed(SliceStats(list(cols), 1, weighted=True), cols, loss, 50)
    with pytest.raises(ValueError, match="weights"):
        _feed(SliceStats(list(cols), 1), cols, loss, 50, np.ones(100))
    with pytest.raises(ValueError, match="different settings"):
        SliceStats(list(cols), 1).merge(SliceStats(list(cols), 1, weighted=True))


def test_constant_loss_is_never_significant_on_rounding_noise():
    """Every row the same loss (a perfect model: -log(1 - eps)); streamed moments and the
    complement's subtraction leave ~1e-23 of float noise, which must not test significant."""
    cols, _ = _data(11, n=3000)
    loss = np.full(3000, 1.0000000494336803e-07)
    table, summary = _assess(_feed(SliceStats(list(cols), 2), cols, loss, 97), loss)
    assert summary["significant"] == 0
    assert (table.loc[table.tested, "p_value"] == 1.0).all() and (table["diff"] == 0).all()


def test_zero_weight_slice_has_no_mean_and_is_not_tested():
    cols, loss = _data(12, n=600)
    w = np.where(cols["region"] == "EU", 0.0, 1.0)
    table, summary = _assess(_feed(SliceStats(["region"], 1, weighted=True), {"region": cols["region"]},
                                   loss, 200, w), loss, min_count=5)
    eu = table[table["slice"] == "region=EU"].iloc[0]
    assert np.isnan(eu["mean"]) and not eu["tested"] and np.isnan(eu["p_value"])
    assert summary["skipped_no_weight"] == 1
    others = table[table["slice"] != "region=EU"]
    assert others["tested"].all()
    # the complement of another slice excludes EU's weightless rows from its mean
    us = others[others["slice"] == "region=US"].iloc[0]
    rest = (cols["region"] != "US") & (cols["region"] != "EU")
    assert us["complement_mean"] == pytest.approx(loss[rest].mean(), rel=1e-12)


def test_huge_weights_are_scale_free():
    """Weights up to 1e308: w^3 would overflow; weights are stored scaled by a power of two,
    so the slice search of w * 1e300 equals that of w (streamed, merged in either order)."""
    cols, loss = _data(13, planted=0.3)
    w = np.random.default_rng(14).exponential(1.0, len(loss))
    ref, _ = _assess(_feed(SliceStats(list(cols), 2, weighted=True), cols, loss, 700, w), loss)
    big = w * 1e300
    h = len(loss) // 2
    a = _feed(SliceStats(list(cols), 2, weighted=True), {k: v[:h] for k, v in cols.items()}, loss[:h], 500, big[:h])
    b = _feed(SliceStats(list(cols), 2, weighted=True), {k: v[h:] for k, v in cols.items()}, loss[h:], 300, w[h:] * 1e-5, offset=h)
    b_big = _feed(SliceStats(list(cols), 2, weighted=True), {k: v[h:] for k, v in cols.items()}, loss[h:], 300, big[h:], offset=h)
    for stats in (_feed(SliceStats(list(cols), 2, weighted=True), cols, loss, 97, big), a.merge(b_big), b_big.merge(a)):
        got, _ = _assess(stats, loss)
        for col in ("mean", "n_eff", "complement_mean", "p_value", "ci_low", "ci_high"):
            np.testing.assert_allclose(got[col], ref[col], rtol=1e-9, err_msg=col)
    # ... and so does that of tiny weights (w^2 of 1e-200 underflowed to 0: n_eff was NaN)
    for tiny in (1e-200, 1e-300):
        got, _ = _assess(_feed(SliceStats(list(cols), 2, weighted=True), cols, loss, 97, w * tiny), loss)
        for col in ("mean", "n_eff", "complement_mean", "p_value", "ci_low", "ci_high"):
            np.testing.assert_allclose(got[col], ref[col], rtol=1e-9, err_msg=f"{tiny} {col}")
    # parts on very different scales merge without overflow; the big part dominates the means
    mixed, _ = _assess(a.merge(b), loss)
    assert np.isfinite(mixed["mean"]).all()
