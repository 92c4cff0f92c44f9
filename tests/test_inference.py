"""evalkit.inference: Student's t, intervals, Welch, Benjamini-Hochberg, Poisson bootstrap weights.

References are SciPy's implementations (a test dependency, not a runtime one).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as st

from evalkit.inference import (
    benjamini_hochberg,
    complement_moments,
    effective_n,
    mean_interval,
    poisson_weights,
    standard_error,
    t_cdf,
    t_quantile,
    t_sf2,
    welch_test,
)


def test_t_quantile_matches_scipy_over_df_and_levels():
    df = np.concatenate([np.arange(1, 150), np.geomspace(150, 1e7, 40), [3.5, 17.25, 999.9]])
    for p in (0.5 + 0.95 / 2, 0.995, 0.6, 0.025, 1e-6, 1 - 1e-6):
        got = t_quantile(np.full(len(df), p), df)
        ref = st.t.ppf(p, df)
        np.testing.assert_allclose(got, ref, rtol=1e-10)
    assert isinstance(t_quantile(0.975, 10), float)
    assert t_quantile(0.975, 10) == pytest.approx(2.228138851986274, rel=1e-12)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959963984540054, rel=1e-14)


def test_t_tails_match_scipy():
    rng = np.random.default_rng(0)
    df = np.concatenate([np.arange(1, 60), rng.uniform(1, 5000, 200), [1e4, 1e5, 1e6, 1e7]])
    t = rng.normal(0, 4, len(df))
    np.testing.assert_allclose(t_sf2(t, df), 2 * st.t.sf(np.abs(t), df), rtol=1e-9)
    np.testing.assert_allclose(t_cdf(t, df), st.t.cdf(t, df), rtol=1e-9, atol=1e-300)
    assert np.isnan(t_sf2(np.array([np.nan, 1.0]), np.array([5.0, 0.0]))).all()


def test_mean_interval_is_the_t_interval_and_nan_below_two_rows():
    x = np.array([0.3, 1.2, 0.7, 2.5, 0.05])
    sem, lo, hi = mean_interval(np.array([5, 1]), np.array([x.mean(), 1.0]),
                                np.array([x.std(ddof=1), np.nan]))
    ref = st.t.interval(0.95, 4, loc=x.mean(), scale=st.sem(x))
    assert sem[0] == pytest.approx(st.sem(x), rel=1e-12)
    assert (lo[0], hi[0]) == pytest.approx(ref, rel=1e-12)
    assert np.isnan([sem[1], lo[1], hi[1]]).all()
    with pytest.raises(ValueError, match="confidence"):
        mean_interval(np.array([5]), np.array([1.0]), np.array([1.0]), confidence=1.0)


@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_mean_interval_coverage_by_simulation(confidence):
    """The interval covers the true mean in about `confidence` of repeated draws."""
    rng = np.random.default_rng(7)
    reps, n = 4000, 40
    x = rng.exponential(1.5, size=(reps, n))  # skewed, like a loss; true mean 1.5
    _, lo, hi = mean_interval(np.full(reps, n), x.mean(axis=1), x.std(axis=1, ddof=1), confidence)
    cover = np.mean((lo <= 1.5) & (hi >= 1.5))
    assert confidence - 0.025 <= cover <= confidence + 0.02


def test_effective_n_is_kish():
    w = np.array([1.0, 2.0, 3.0, 0.5])
    assert effective_n(w.sum(), (w * w).sum()) == pytest.approx(w.sum() ** 2 / (w * w).sum())
    assert effective_n(np.array([4.0]), np.array([4.0]))[0] == 4.0  # unit weights: n
    assert np.isnan(effective_n(np.array([0.0]), np.array([0.0]))[0])


def test_welch_test_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.2, 1.0, 37), rng.normal(1.0, 2.0, 500)
    res = welch_test(np.array([37]), np.array([a.mean()]), np.array([a.var(ddof=1)]),
                     np.array([500]), np.array([b.mean()]), np.array([b.var(ddof=1)]))
    ref = st.ttest_ind(a, b, equal_var=False)
    assert res["t"][0] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["p_value"][0] == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (res["ci_low"][0], res["ci_high"][0]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    # degenerate: both constant
    deg = welch_test(np.array([5, 5]), np.array([1.0, 2.0]), np.array([0.0, 0.0]),
                     np.array([5, 5]), np.array([1.0, 1.0]), np.array([0.0, 0.0]))
    assert deg["p_value"].tolist() == [1.0, 0.0]
    small = welch_test(np.array([1]), np.array([1.0]), np.array([np.nan]),
                       np.array([5]), np.array([1.0]), np.array([1.0]))
    assert np.isnan(small["p_value"][0])


def test_benjamini_hochberg_matches_scipy_and_skips_nan():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=200) ** 4
    p[[3, 50]] = np.nan
    adj, reject = benjamini_hochberg(p, 0.05)
    ok = ~np.isnan(p)
    np.testing.assert_allclose(adj[ok], st.false_discovery_control(p[ok]), rtol=1e-12)
    assert np.isnan(adj[~ok]).all() and not reject[~ok].any()
    # the step-up rule: reject the k smallest with p_(k) <= k q / m
    ps = np.sort(p[ok])
    m = len(ps)
    k = max([i + 1 for i in range(m) if ps[i] <= (i + 1) * 0.05 / m], default=0)
    assert reject.sum() == k
    with pytest.raises(ValueError):
        benjamini_hochberg(p, 0.0)


def test_complement_moments_equal_direct():
    rng = np.random.default_rng(2)
    x = rng.exponential(1.0, 1000)
    s = rng.uniform(size=1000) < 0.2
    tot_m2 = ((x - x.mean()) ** 2).sum()
    tot_m3 = ((x - x.mean()) ** 3).sum()
    xs, xc = x[s], x[~s]
    nc, mc, m2c, m3c = complement_moments(np.array([len(xs)]), np.array([xs.mean()]),
                                          np.array([((xs - xs.mean()) ** 2).sum()]),
                                          1000, x.mean(), tot_m2,
                                          m3=np.array([((xs - xs.mean()) ** 3).sum()]),
                                          total_m3=tot_m3)
    assert nc[0] == len(xc)
    assert mc[0] == pytest.approx(xc.mean(), rel=1e-12)
    assert m2c[0] == pytest.approx(((xc - xc.mean()) ** 2).sum(), rel=1e-10)
    assert m3c[0] == pytest.approx(((xc - xc.mean()) ** 3).sum(), rel=1e-9)


def test_weighted_complement_moments_equal_direct():
    """With weights as the sizes (Pebay's formulas hold for weighted moments too)."""
    rng = np.random.default_rng(3)
    x, w = rng.lognormal(0, 1, 500), rng.uniform(0, 3, 500)
    s = rng.uniform(size=500) < 0.3

    def mom(v, wt):
        m = np.average(v, weights=wt)
        return wt.sum(), m, (wt * (v - m) ** 2).sum(), (wt * (v - m) ** 3).sum()

    ws, ms, m2s, m3s = mom(x[s], w[s])
    wt, mt, m2t, m3t = mom(x, w)
    got = complement_moments(np.array([ws]), np.array([ms]), np.array([m2s]), wt, mt, m2t,
                             m3=np.array([m3s]), total_m3=m3t)
    np.testing.assert_allclose([g[0] for g in got], mom(x[~s], w[~s]), rtol=1e-9)


def test_poisson_weights_are_poisson_1_and_a_function_of_row_and_seed_only():
    rows = np.arange(100_000)
    w = poisson_weights(rows, 0, 20)
    assert w.shape == (100_000, 20)
    assert abs(w.mean() - 1) < 0.01 and abs(w.var() - 1) < 0.02
    # P(w = 0) = e^-1
    assert abs((w == 0).mean() - math.exp(-1)) < 0.005
    # any split of the rows gives the same weights
    np.testing.assert_array_equal(poisson_weights(rows[500:900], 0, 20), w[500:900])
    assert not np.array_equal(poisson_weights(rows[:100], 1, 20), w[:100])
    # replicates are not copies of each other
    assert np.corrcoef(w[:, 0], w[:, 1])[0, 1] < 0.02


def _skewed_pairs(rng, reps, n1, n2, draw):
    """Moments (mean, sample variance, third central moment) of ``reps`` independent pairs."""
    def mom(x):
        m = x.mean(axis=1)
        d = x - m[:, None]
        return m, (d * d).sum(axis=1) / (x.shape[1] - 1), (d ** 3).mean(axis=1)

    return mom(draw(rng, (reps, n1))), mom(draw(rng, (reps, n2)))


@pytest.mark.parametrize("dist", ["exponential", "accurate"])
def test_skew_corrected_welch_interval_covers_with_equal_tails(dist):
    """The slice search's interval of a difference (slice of 250 rows vs a complement of
    2750, no true difference, 4000 repetitions): 95% coverage with ~2.5% missed on each side.
    Plain Welch misses lopsidedly on right-skewed losses (accurate model: 0.8% / 7.8%)."""
    def draw(rng, shape):
        if dist == "exponential":
            return rng.exponential(0.7, shape)
        big = rng.random(shape) < 0.03  # 3% confident mistakes up to the clip, skewness ~7
        return np.where(big, rng.uniform(1.0, 16.1, shape), rng.exponential(0.02, shape))

    reps, n1, n2 = 4000, 250, 2750
    (m1, v1, t1), (m2, v2, t2) = _skewed_pairs(np.random.default_rng(11), reps, n1, n2, draw)
    n1a, n2a = np.full(reps, n1), np.full(reps, n2)
    w = welch_test(n1a, m1, v1, n2a, m2, v2, 0.95, third1=t1, third2=t2)
    low_miss, high_miss = (w["ci_low"] > 0).mean(), (w["ci_high"] < 0).mean()
    assert 0.93 <= 1 - low_miss - high_miss <= 0.97
    assert 0.012 <= low_miss <= 0.04 and 0.012 <= high_miss <= 0.04, (low_miss, high_miss)
    # the test agrees with the interval: p < 0.05 exactly when 0 lies outside it
    np.testing.assert_array_equal(w["p_value"] < 0.05, (w["ci_low"] > 0) | (w["ci_high"] < 0))
    if dist == "accurate":
        plain = welch_test(n1a, m1, v1, n2a, m2, v2, 0.95)
        assert (plain["ci_high"] < 0).mean() > 0.06  # the failure the correction removes


def test_skew_correction_vanishes_without_skew_and_is_monotone():
    rng = np.random.default_rng(12)
    a, b = rng.normal(0, 1, 60), rng.normal(0.5, 2, 90)
    args = (np.array([60]), np.array([a.mean()]), np.array([a.var(ddof=1)]),
            np.array([90]), np.array([b.mean()]), np.array([b.var(ddof=1)]))
    plain = welch_test(*args)
    zero = welch_test(*args, third1=np.zeros(1), third2=np.zeros(1))
    for k in ("p_value", "ci_low", "ci_high", "t", "df"):
        np.testing.assert_allclose(zero[k], plain[k], rtol=1e-13)
    # a larger positive skew of the first sample: interval moves right, the p-value of a
    # positive difference shrinks (monotone in the correction, no fold-back of the cubic)
    d = np.array([0.3])
    prev = None
    for third in (0.0, 0.5, 2.0, 8.0, 50.0):
        w = welch_test(np.array([100]), d, np.array([1.0]), np.array([900]), np.array([0.0]),
                       np.array([1.0]), third1=np.array([third]), third2=np.array([0.0]))
        assert w["ci_low"][0] < d[0] < w["ci_high"][0]
        if prev is not None:
            assert w["ci_low"][0] >= prev["ci_low"][0] - 1e-12 and w["ci_high"][0] >= prev["ci_high"][0] - 1e-12
        prev = w


def test_standard_error_is_std_over_root_n_where_defined_and_nan_elsewhere() -> None:
    rng = np.random.default_rng(7)
    n = rng.integers(0, 50, 2000).astype(float)
    n[::13] = np.nan
    n[::17] = 1.5  # effective sample sizes are fractional
    std = rng.random(2000) * 3
    std[::11] = np.nan
    std[::19] = np.inf
    got = standard_error(n, std)
    for i in range(len(n)):
        if n[i] >= 2 and math.isfinite(std[i]):
            assert got[i] == std[i] / math.sqrt(n[i])
        else:
            assert math.isnan(got[i])
    assert standard_error(np.float64(4.0), np.float64(2.0)) == 1.0  # 0-d inputs
    assert math.isnan(standard_error(1, 2.0))
    with np.errstate(all="raise"):  # no numpy warning for n = 0, negative or NaN
        standard_error(np.array([0.0, -1.0, np.nan]), np.array([1.0, 1.0, 1.0]))
