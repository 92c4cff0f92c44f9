"""Statistical inference, in one place: Student's t quantile, t and Welch intervals, bootstrap.

Used by :mod:`evalkit.comparison` (delta intervals); the one home for interval estimates and
tests, so other statistics (grouped confidence intervals, history trends) reuse these rather
than re-deriving them. Pure numpy and the standard library (no SciPy).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np


def t_quantile(p: float, df: Any) -> Any:
    """Quantile of Student's t with ``df`` degrees of freedom (no SciPy); ``df`` may be an
    array (then an array is returned).

    Exact for df 1 and 2; otherwise the Cornish-Fisher expansion around the normal quantile
    (error below 1e-3 for df >= 3 at the usual confidence levels). A scalar ``df <= 0`` or
    infinite gives the normal quantile; in an array, ``df < 1`` gives NaN.
    """
    if np.ndim(df) == 0 and (df <= 0 or not math.isfinite(df)):
        return NormalDist().inv_cdf(p)
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    exact1 = math.tan(math.pi * (p - 0.5))
    exact2 = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    if np.ndim(df) == 0:
        if df == 1:
            return exact1
        if df == 2:
            return exact2
        return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
    d = np.asarray(df, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = 1.0 / d
        out = z + inv * (g1 + inv * (g2 + inv * (g3 + inv * g4)))  # Horner: same polynomial
    out = np.where(d == 1, exact1, np.where(d == 2, exact2, out))
    return np.where(d >= 1, out, np.nan)


def mean_interval(n: np.ndarray, mean: np.ndarray, std: np.ndarray,
                  confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard error of the mean and the t-interval ``mean -/+ t_{(1+c)/2, n-1} * sem``,
    vectorised over groups. Returns ``(sem, low, high)``; NaN where ``n < 2``."""
    n = np.asarray(n, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = np.where(n >= 2, np.asarray(std, dtype=np.float64) / np.sqrt(n), np.nan)
    half = t_quantile(0.5 + confidence / 2, n - 1) * sem
    return sem, mean - half, mean + half


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray, iters: int = 300) -> np.ndarray:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes
    6.4), vectorised."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
    h = d.copy()
    for m in range(1, iters + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
            c = 1.0 + aa / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            delta = d * c
            h *= delta
        if np.all(np.abs(delta - 1.0) < 1e-15):
            break
    return h


def t_sf2(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided tail probability ``P(|T| >= |t|)`` of Student's t with ``df`` degrees of
    freedom: ``I_{df/(df+t^2)}(df/2, 1/2)`` (regularised incomplete beta, Abramowitz &
    Stegun 26.7.1). NaN where ``t`` is NaN or ``df < 1``."""
    t = np.abs(np.asarray(t, dtype=np.float64))
    df = np.asarray(df, dtype=np.float64)
    t, df = np.broadcast_arrays(t, df)
    out = np.full(t.shape, np.nan)
    ok = (df >= 1) & ~np.isnan(t)
    if not ok.any():
        return out
    tt, nu = t[ok], df[ok]
    x = np.where(np.isinf(tt), 0.0, nu / (nu + tt * tt))
    a, b = nu / 2.0, np.full_like(nu, 0.5)
    lg = np.vectorize(math.lgamma, otypes=[float])
    with np.errstate(divide="ignore", invalid="ignore"):
        front = np.exp(lg(a + b) - lg(a) - lg(b) + a * np.log(x) + b * np.log1p(-x))
    direct = x < (a + 1.0) / (a + b + 2.0)
    p = np.empty_like(x)
    if direct.any():
        p[direct] = front[direct] * _betacf(a[direct], b[direct], x[direct]) / a[direct]
    if (~direct).any():
        r = ~direct
        p[r] = 1.0 - front[r] * _betacf(b[r], a[r], 1.0 - x[r]) / b[r]
    p = np.where(x <= 0.0, 0.0, np.where(x >= 1.0, 1.0, p))
    out[ok] = np.clip(p, 0.0, 1.0)
    return out


def benjamini_hochberg(p: np.ndarray, q: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Benjamini-Hochberg step-up adjusted p-values and the rejections at FDR level ``q``.

    ``adjusted_(i) = min_{j >= i} p_(j) * m / j`` over the ``m`` finite p-values sorted
    ascending, capped at 1 (Benjamini & Hochberg 1995, JRSS B 57:289-300); NaN p-values stay
    NaN and are never rejected.
    """
    p = np.asarray(p, dtype=np.float64)
    adj = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m:
        order = ok[np.argsort(p[ok], kind="stable")]
        scaled = p[order] * m / np.arange(1, m + 1)
        adj[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    with np.errstate(invalid="ignore"):
        return adj, adj <= q


def paired_ci(d: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """t-interval of the mean of paired differences ``d`` (NaN when fewer than 2)."""
    n = len(d)
    if n < 2:
        return math.nan, math.nan
    m = float(np.mean(d))
    se = float(np.std(d, ddof=1)) / math.sqrt(n)
    t = t_quantile(0.5 + confidence / 2, n - 1)
    return m - t * se, m + t * se


def welch_ci(mb: float, sb: float, nb: int, mc: float, sc: float, nc: int,
             confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval of ``mc - mb`` from two samples' means / sds / counts."""
    if nb < 2 or nc < 2 or not (math.isfinite(sb) and math.isfinite(sc)):
        return math.nan, math.nan
    se = math.sqrt(sb * sb / nb + sc * sc / nc)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    d = mc - mb
    return d - z * se, d + z * se


def bootstrap_means(x: np.ndarray, n_boot: int, rng: np.random.Generator,
                    max_cells: int = 1 << 22) -> np.ndarray:
    """``n_boot`` bootstrap resample means of ``x``: vectorised, in chunks of at most
    ``max_cells`` drawn indices (32 MiB) so memory stays bounded for large samples."""
    n = len(x)
    out = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, max_cells // max(n, 1))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        out[start:start + k] = x[idx].mean(axis=1)
    return out


def bootstrap_diff_ci(xb: np.ndarray, xc: np.ndarray, *, n_boot: int, rng: np.random.Generator,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(xc) - mean(xb)`` (independent samples)."""
    if len(xb) < 2 or len(xc) < 2:
        return math.nan, math.nan
    diff = bootstrap_means(xc, n_boot, rng) - bootstrap_means(xb, n_boot, rng)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(diff, [a, 1 - a])
    return float(lo), float(hi)


__all__ = ["benjamini_hochberg", "bootstrap_diff_ci", "bootstrap_means", "mean_interval", "paired_ci",
           "t_quantile", "t_sf2", "welch_ci"]
