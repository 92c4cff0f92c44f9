"""Statistical inference, in one place: Student's t quantile, t and Welch intervals, bootstrap.

Used by :mod:`evalkit.comparison` (delta intervals); the one home for interval estimates and
tests, so other statistics (grouped confidence intervals, history trends) reuse these rather
than re-deriving them. Pure numpy and the standard library (no SciPy).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t with ``df`` degrees of freedom (no SciPy).

    Exact for df 1 and 2; otherwise the Cornish-Fisher expansion around the normal quantile
    (error below 1e-3 for df >= 3 at the usual confidence levels).
    """
    if df <= 0 or not math.isfinite(df):
        return NormalDist().inv_cdf(p)
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


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


__all__ = ["bootstrap_diff_ci", "bootstrap_means", "paired_ci", "t_quantile", "welch_ci"]
