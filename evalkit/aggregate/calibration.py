"""Calibration per group from mergeable bin counts and sums.

Per group the state is ``O(bins)``: for each of ``B`` equal-width bins of top-label
confidence, the row count, the sum of confidence and the count of correct (arg-max ==
true class) rows; plus the group's sums of the per-row Brier score and predictive entropy.
Everything merges by addition, so any batching, partitioning or engine gives the same
result. The per-row inputs come from :func:`evalkit.scores.calibration_terms`.

Definitions:

* Expected calibration error (Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern
  Neural Networks", ICML 2017, eq. 3): ``ECE = sum_b (n_b / n) |acc_b - conf_b|`` over bins
  of the top-label confidence ``max_j p_j`` (bin ``b`` holds ``(b/B, (b+1)/B]``, the first
  bin also 0); ``acc_b`` is the share of correct rows in the bin, ``conf_b`` their mean
  confidence. Maximum calibration error (ibid., eq. 5): ``MCE = max_b |acc_b - conf_b|``
  over non-empty bins.
* Brier score (Brier, "Verification of forecasts expressed in terms of probability",
  Monthly Weather Review 78, 1950): the mean over rows of ``sum_j (p_j - t_j)^2``, the
  original multi-class form, in ``[0, 2]`` (for two classes it is twice
  ``sklearn.metrics.brier_score_loss``, which scores only P(class 1)).
* Mean predictive entropy ``-sum_j p_j log p_j`` in nats (Shannon 1948).

Rows are unweighted (``--weight`` does not apply to calibration).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_BINS = 15
CALIBRATION_COLUMNS = ("ece", "mce", "brier", "entropy")


def confidence_bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence in ``[0, 1]``: ``ceil(c * B) - 1`` clamped to ``[0, B-1]``, so
    bin ``b`` holds ``(b/B, (b+1)/B]`` (0 goes to bin 0) as in Guo et al. 2017."""
    c = np.asarray(confidence, dtype=np.float64) * n_bins
    np.ceil(c, out=c)
    c -= 1.0
    np.clip(c, 0, n_bins - 1, out=c)
    return c.astype(np.int64)


class CalibrationBins:
    """Per-group calibration state, indexed by the owning accumulator's group slots.

    Not a stand-alone accumulator: :class:`~evalkit.aggregate.GroupStats` owns one, feeds it
    the batch's group codes and remaps its slots on merge, so the group key index is shared.
    Memory: ``3 * B + 2`` numbers per group (376 bytes at B = 15).
    """

    def __init__(self, n_bins: int = DEFAULT_BINS):
        if not isinstance(n_bins, int | np.integer) or n_bins < 1:
            raise ValueError(f"calibration bins must be a whole number >= 1, got {n_bins!r}")
        self.n_bins = int(n_bins)
        self.count = np.zeros((0, self.n_bins), dtype=np.int64)
        self.correct = np.zeros((0, self.n_bins), dtype=np.int64)
        self.conf_sum = np.zeros((0, self.n_bins), dtype=np.float64)
        self.brier_sum = np.zeros(0, dtype=np.float64)
        self.entropy_sum = np.zeros(0, dtype=np.float64)

    _ARRAYS = ("count", "correct", "conf_sum", "brier_sum", "entropy_sum")

    def resize(self, cap: int) -> None:
        """Grow (or trim) the per-group arrays to ``cap`` slots, keeping the used ones."""
        for name in self._ARRAYS:
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], dtype=old.dtype)
            keep = min(cap, len(old))
            new[:keep] = old[:keep]
            setattr(self, name, new)

    def trimmed(self, g: int) -> CalibrationBins:
        """A copy holding only the first ``g`` slots (for pickling and merging)."""
        new = CalibrationBins.__new__(CalibrationBins)
        new.n_bins = self.n_bins
        for name in self._ARRAYS:
            setattr(new, name, getattr(self, name)[:g].copy())
        return new

    def add(self, local: np.ndarray | None, k: int, slots: np.ndarray, present: np.ndarray | None,
            bins: np.ndarray, confidence: np.ndarray, correct: np.ndarray, brier: np.ndarray,
            entropy: np.ndarray) -> None:
        """Add a batch: ``local`` are the rows' batch-local group codes in ``[0, k)`` (None:
        all rows in one group), ``slots`` the global slots of the local groups kept by
        ``present`` (a mask over ``[0, k)``, None: all), ``bins`` from :func:`confidence_bins`."""
        nb = self.n_bins
        corr = correct.astype(np.int64, copy=False)
        if local is not None and k * nb > len(bins):
            self._add_sparse(local, k, slots, present, bins, confidence, corr, brier, entropy)
            return
        if local is None:
            cc = np.bincount(bins * 2 + corr, minlength=2 * nb).reshape(1, nb, 2)
            cs = np.bincount(bins, weights=confidence, minlength=nb).reshape(1, nb)
            bs = np.array([brier.sum()])
            es = np.array([entropy.sum()])
        else:
            code = local * nb + bins
            cc = np.bincount(code * 2 + corr, minlength=2 * nb * k).reshape(k, nb, 2)
            cs = np.bincount(code, weights=confidence, minlength=nb * k).reshape(k, nb)
            bs = np.bincount(local, weights=brier, minlength=k)
            es = np.bincount(local, weights=entropy, minlength=k)
            if present is not None:
                cc, cs, bs, es = cc[present], cs[present], bs[present], es[present]
        self.count[slots] += cc.sum(axis=2)
        self.correct[slots] += cc[:, :, 1]
        self.conf_sum[slots] += cs
        self.brier_sum[slots] += bs
        self.entropy_sum[slots] += es

    def _add_sparse(self, local: np.ndarray, k: int, slots: np.ndarray, present: np.ndarray | None,
                    bins: np.ndarray, confidence: np.ndarray, corr: np.ndarray, brier: np.ndarray,
                    entropy: np.ndarray) -> None:
        """:meth:`add` for many groups (``k * bins`` above the row count, e.g. 200k users):
        scatter each row into its (group, bin) cell, O(rows) instead of O(groups * bins)."""
        if present is None:
            full = slots
        else:
            full = np.zeros(k, dtype=np.int64)
            full[present] = slots
        g = full[local]
        cell = g * self.n_bins + bins
        np.add.at(self.count.reshape(-1), cell, 1)
        np.add.at(self.correct.reshape(-1), cell, corr)
        np.add.at(self.conf_sum.reshape(-1), cell, confidence)
        np.add.at(self.brier_sum, g, brier)
        np.add.at(self.entropy_sum, g, entropy)

    def absorb(self, other: CalibrationBins, src: np.ndarray, dst: np.ndarray) -> None:
        """Add ``other``'s slots ``src`` into this state's slots ``dst`` (a merge step)."""
        if other.n_bins != self.n_bins:
            raise ValueError("cannot merge calibration states with different bin counts")
        for name in self._ARRAYS:
            getattr(self, name)[dst] += getattr(other, name)[src]

    def group_metrics(self, order: np.ndarray, count: np.ndarray) -> dict[str, np.ndarray]:
        """``ece``, ``mce``, ``brier``, ``entropy`` for the groups in ``order`` (group row
        counts ``count``, aligned with ``order``); NaN for empty groups. Computed in chunks of
        groups, so the (groups, bins) temporaries stay small with a million groups."""
        total = count.astype(np.float64)
        ece, mce = np.empty(len(order)), np.empty(len(order))
        step = 1 << 16
        with np.errstate(invalid="ignore", divide="ignore"):
            for start in range(0, len(order), step):
                sl = slice(start, start + step)
                o = order[sl]
                n = self.count[o]
                gap = np.abs(self.correct[o] / n - self.conf_sum[o] / n)
                ece[sl] = np.where(n > 0, gap * n, 0.0).sum(axis=1) / total[sl]
                mce[sl] = (np.where(n > 0, gap, -np.inf).max(axis=1) if n.shape[1]
                           else np.full(len(n), np.nan))
            brier = self.brier_sum[order] / total
            entropy = self.entropy_sum[order] / total
        empty = total == 0
        mce = np.where(empty, np.nan, mce)
        return {"ece": np.where(empty, np.nan, ece), "mce": mce,
                "brier": np.where(empty, np.nan, brier), "entropy": np.where(empty, np.nan, entropy)}

    def bin_table(self, order: np.ndarray) -> pd.DataFrame:
        """Long table of the non-empty bins of the groups in ``order``: ``group_index``
        (position in ``order``), ``bin``, ``bin_low``, ``bin_high``, ``count``,
        ``mean_confidence``, ``accuracy``."""
        nb = self.n_bins
        n = self.count[order]
        gi, b = np.nonzero(n > 0)
        cnt = n[gi, b]
        src = order[gi]
        return pd.DataFrame({
            "group_index": gi.astype(np.int64),
            "bin": b.astype(np.int64),
            "bin_low": b / nb,
            "bin_high": (b + 1) / nb,
            "count": cnt.astype(np.int64),
            "mean_confidence": self.conf_sum[src, b] / cnt,
            "accuracy": self.correct[src, b] / cnt,
        })

    def state(self) -> dict[str, Any]:
        """The raw sums (for tests and debugging)."""
        return {name: getattr(self, name) for name in self._ARRAYS}


@dataclass(frozen=True)
class CalibrationBatch:
    """One batch's per-row calibration inputs, with the confidence bins computed once and
    shared by every grouping."""

    confidence: np.ndarray
    bins: np.ndarray
    brier: np.ndarray
    entropy: np.ndarray

    @classmethod
    def of(cls, rows: Any, n_bins: int) -> CalibrationBatch:
        """From a :class:`evalkit.scores.RowCalibration` and the number of bins."""
        return cls(rows.confidence, confidence_bins(rows.confidence, n_bins), rows.brier, rows.entropy)

    def take(self, keep: np.ndarray) -> CalibrationBatch:
        """The rows selected by a boolean mask or an index array."""
        return CalibrationBatch(self.confidence[keep], self.bins[keep], self.brier[keep],
                                self.entropy[keep])
