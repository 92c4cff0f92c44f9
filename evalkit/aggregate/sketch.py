"""Quantile sketch: a log-spaced histogram with a relative-error guarantee, and the
naming of quantile columns."""

from __future__ import annotations

import math

import numpy as np


def quantile_column_name(q: float) -> str:
    """Column name for quantile ``q``: 0.5 -> ``"p50"``, 0.999 -> ``"p99.9"``."""
    # round() hides binary noise such as 0.29 * 100 == 28.999999999999996.
    s = repr(round(q * 100.0, 10))
    if s.endswith(".0"):
        s = s[:-2]
    return "p" + s


class LogHistogram:
    """Fixed log-spaced histogram over ``[lo, hi]`` (DDSketch-style).

    Bin ``i`` covers ``[lo * g**i, lo * g**(i+1))`` with ``g = (1+a)/(1-a)``;
    its representative value ``2 * lo * g**(i+1) / (1+g)`` is within relative
    error ``a`` of every value in the bin.  ``a`` is ``rel_err`` shrunk by a
    tiny safety margin so that floating-point rounding in the bin computation
    (a value landing in a neighbouring bin by one ulp) cannot push the error
    above ``rel_err``.

    Values outside ``[lo, hi]`` (and NaN) are clamped into the first/last bin;
    the relative-error guarantee only holds for values inside ``[lo, hi]``.
    """

    def __init__(self, lo: float, hi: float, rel_err: float = 1e-3):
        if not (0.0 < lo < hi and math.isfinite(hi)):
            raise ValueError(f"need 0 < lo < hi < inf, got lo={lo!r}, hi={hi!r}")
        if not 0.0 < rel_err < 1.0:
            raise ValueError(f"rel_err must be in (0, 1), got {rel_err!r}")
        self.lo = float(lo)
        self.hi = float(hi)
        self.rel_err = float(rel_err)
        a = self.rel_err * (1.0 - 1e-6)
        self._log_lo = math.log(self.lo)
        self._log_gamma = math.log1p(2.0 * a / (1.0 - a))
        self._inv_log_gamma = 1.0 / self._log_gamma
        # 2 g / (1 + g) == 1 + a, the representative relative to the bin's lower edge.
        self._rep_factor = 1.0 + a
        # Derive n_bins with the same arithmetic bin_index uses, so hi is in the last bin.
        self.n_bins = int(math.floor((math.log(self.hi) - self._log_lo) * self._inv_log_gamma)) + 1

    @classmethod
    def for_eps(cls, eps: float, rel_err: float = 1e-3) -> LogHistogram:
        """Histogram covering the clipped cross-entropy range for clip level ``eps``.

        ``lo = -log1p(-eps)`` (loss at p = 1 - eps), ``hi = -log(eps)`` (loss at p = eps).
        """
        if not 0.0 < eps < 0.5:
            raise ValueError(f"eps must be in (0, 0.5), got {eps!r}")
        return cls(-math.log1p(-eps), -math.log(eps), rel_err)

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """int64 bin of each value; out-of-range values are clamped into the first/last bin."""
        x = np.asarray(values, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.log(x)
        f -= self._log_lo
        f *= self._inv_log_gamma
        np.floor(f, out=f)
        # fmax/fmin (not clip) so NaN and -inf from log(<=0) land in bin 0.
        np.fmax(f, 0.0, out=f)
        np.fmin(f, self.n_bins - 1, out=f)
        return f.astype(np.int64)

    def bin_value(self, idx: np.ndarray) -> np.ndarray:
        """Representative value of each bin: ``|rep - x| <= rel_err * x`` for every x in the bin."""
        i = np.asarray(idx, dtype=np.float64)
        return np.exp(self._log_lo + i * self._log_gamma) * self._rep_factor

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LogHistogram)
            and (self.lo, self.hi, self.rel_err) == (other.lo, other.hi, other.rel_err)
        )

    def __hash__(self) -> int:
        return hash((self.lo, self.hi, self.rel_err))

    def __repr__(self) -> str:
        return f"LogHistogram(lo={self.lo!r}, hi={self.hi!r}, rel_err={self.rel_err!r}, n_bins={self.n_bins})"
