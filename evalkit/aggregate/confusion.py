"""Confusion: count and loss sum by (true class, predicted class), mergeable by addition."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class Confusion:
    """Count and loss sum by (true class, predicted class) cell, mergeable by addition.

    With few classes the cells are two dense ``K * K`` arrays (``K * K <= DENSE_CELLS``,
    about 1000 classes); beyond that only the cells that occur are kept, as sorted unique
    int64 keys ``true * K + predicted`` with their counts and loss sums, so memory follows
    the pairs seen (at most one per row), never ``K x K``: 50k classes would be 2.5e9 cells.
    Counts are exact in both forms; :meth:`merge` adds by key (associative, commutative).

    Deliberately lighter than :class:`GroupStats` (no quantile histograms): with 1000
    classes there are up to a million cells, and a sketch per cell would cost gigabytes.
    """

    DENSE_CELLS = 1 << 20

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)
        k = len(self.classes)
        self.dense = k * k <= self.DENSE_CELLS
        # Dense: indexed by cell. Sparse: aligned with the sorted unique cell keys.
        self._cells = np.zeros(0, dtype=np.int64)
        self.count = np.zeros(k * k if self.dense else 0, dtype=np.int64)
        self.loss_sum = np.zeros(k * k if self.dense else 0, dtype=np.float64)

    def update(self, true_class: np.ndarray, predicted: np.ndarray, loss: np.ndarray) -> None:
        """Add a batch of rows (class indices and their losses, in nats)."""
        k = len(self.classes)
        cell = true_class.astype(np.int64) * k + predicted
        if self.dense:
            # ufunc.at is fast in numpy >= 2 and, unlike bincount(minlength=K*K), costs
            # nothing per empty cell.
            np.add.at(self.count, cell, 1)
            np.add.at(self.loss_sum, cell, loss)
            return
        uniq, inv = np.unique(cell, return_inverse=True)
        inv = inv.reshape(-1)
        self._fold(uniq, np.bincount(inv, minlength=len(uniq)).astype(np.int64),
                   np.bincount(inv, weights=np.asarray(loss, dtype=np.float64), minlength=len(uniq)))

    def _fold(self, cells: np.ndarray, count: np.ndarray, loss_sum: np.ndarray) -> None:
        """Add sorted unique ``cells`` with their counts and sums to the sparse store."""
        if not len(self._cells):
            self._cells, self.count, self.loss_sum = cells, count, loss_sum
            return
        allc = np.concatenate([self._cells, cells])
        order = np.argsort(allc, kind="stable")  # two sorted runs: a linear merge
        allc = allc[order]
        start = np.flatnonzero(np.concatenate(([True], allc[1:] != allc[:-1])))
        self._cells = allc[start]
        self.count = np.add.reduceat(np.concatenate([self.count, count])[order], start)
        self.loss_sum = np.add.reduceat(np.concatenate([self.loss_sum, loss_sum])[order], start)

    def merge(self, other: Confusion) -> Confusion:
        """A new state holding both."""
        if other.classes != self.classes:
            raise ValueError("cannot merge confusion states over different classes")
        new = Confusion(self.classes)
        if self.dense:
            new.count = self.count + other.count
            new.loss_sum = self.loss_sum + other.loss_sum
        else:
            new._cells, new.count, new.loss_sum = self._cells, self.count, self.loss_sum
            new._fold(other._cells, other.count, other.loss_sum)
        return new

    def matrix(self) -> np.ndarray | None:
        """The ``K x K`` counts, rows the true class and columns the predicted one (None when
        the cells are kept sparse: too many classes for a dense matrix)."""
        k = len(self.classes)
        return self.count.reshape(k, k) if self.dense else None

    def finalize(self) -> pd.DataFrame:
        """Non-empty cells: ``class``, ``predicted``, ``count``, ``mean`` (class order)."""
        k = len(self.classes)
        if self.dense:
            cells = np.flatnonzero(self.count)
            count, loss_sum = self.count[cells], self.loss_sum[cells]
        else:
            cells, count, loss_sum = self._cells, self.count, self.loss_sum
        names = np.array(self.classes, dtype=object)
        return pd.DataFrame({
            "class": names[cells // k] if k else [],
            "predicted": names[cells % k] if k else [],
            "count": count,
            "mean": loss_sum / count,
        })
