"""Confusion: count and loss sum by (true class, predicted class), mergeable by addition."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class Confusion:
    """Dense K x K count and loss-sum matrices, mergeable by addition.

    Deliberately lighter than :class:`GroupStats` (no quantile histograms): with 1000
    classes there are up to a million cells, and a sketch per cell would cost gigabytes.
    """

    def __init__(self, classes: Sequence[str]):
        self.classes = list(classes)
        k = len(self.classes)
        self.count = np.zeros(k * k, dtype=np.int64)
        self.loss_sum = np.zeros(k * k, dtype=np.float64)

    def update(self, true_class: np.ndarray, predicted: np.ndarray, loss: np.ndarray) -> None:
        """Add a batch of rows (class indices and their losses)."""
        k = len(self.classes)
        cell = true_class.astype(np.int64) * k + predicted
        # ufunc.at is fast in numpy >= 2 and, unlike bincount(minlength=K*K), costs
        # nothing per empty cell.
        np.add.at(self.count, cell, 1)
        np.add.at(self.loss_sum, cell, loss)

    def merge(self, other: Confusion) -> Confusion:
        """A new state holding both."""
        if other.classes != self.classes:
            raise ValueError("cannot merge confusion states over different classes")
        new = Confusion(self.classes)
        new.count = self.count + other.count
        new.loss_sum = self.loss_sum + other.loss_sum
        return new

    def finalize(self) -> pd.DataFrame:
        """Non-empty cells: ``class``, ``predicted``, ``count``, ``mean`` (class order)."""
        k = len(self.classes)
        cells = np.flatnonzero(self.count)
        names = np.array(self.classes, dtype=object)
        return pd.DataFrame({
            "class": names[cells // k] if k else [],
            "predicted": names[cells % k] if k else [],
            "count": self.count[cells],
            "mean": self.loss_sum[cells] / self.count[cells],
        })
