"""What a person reads of a grouping stays bounded: which groups are shown, and the line
that says how many more there are and where (report.md, terminal tables, plots, JSON).

The Parquet table of a grouping always holds every group; only what is rendered for a
reader is cut, by one rule (:func:`bounded_groups`), so all renderings agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

#: Groups per grouping shown to a reader, by rendering.
MAX_REPORT_GROUPS = 40
MAX_TERMINAL_GROUPS = 20
MAX_JSON_GROUPS = 10_000
MAX_PLOT_GROUPS = 40
#: Hardest examples per scope in summary.json (all of them are in hardest.parquet).
MAX_JSON_ROWS = 10_000


def mean_column(df: pd.DataFrame, rows: np.ndarray | None = None) -> str:
    """The mean of a grouped table a reader is shown (order, bars, labels): ``weighted_mean``
    in a weighted run (``--weight``), the statistic its ``ci_low`` / ``ci_high``, report.md's
    headline and the gates are about, else ``mean``. ``rows``: of these rows (positions)
    only."""
    if "weighted_mean" in df.columns:
        w = df["weighted_mean"].to_numpy()
        if bool(pd.notna(w if rows is None else w[rows]).any()):
            return "weighted_mean"
    return "mean"


def is_weighted(row: Any) -> bool:
    """Whether one statistics row (a ``pd.Series``: the overall line or a group) is of a
    weighted run: it has a ``weighted_mean`` that is not NaN. The row-wise twin of
    :func:`mean_column`."""
    try:
        w = row["weighted_mean"]
    except (KeyError, IndexError, TypeError):
        return False
    return w is not None and w == w


def row_mean(row: Any) -> float:
    """The mean of one statistics row a reader and the gates are given: its ``weighted_mean``
    in a weighted run, else its ``mean`` (float; NaN when missing)."""
    return float(row["weighted_mean"] if is_weighted(row) else row["mean"])


def bounded_groups(df: pd.DataFrame, limit: int) -> tuple[pd.DataFrame, int]:
    """The groups a reader is shown, and how many are left out.

    All of them, in table order, when there are at most ``limit``. Otherwise the
    ``limit - limit // 2`` with the highest mean loss (worst first) followed by the
    ``limit // 2`` with the lowest (ties in table order; groups without rows are left
    out), so 200k users still read as one screen; the weighted mean in a weighted run
    (:func:`mean_column`). Returns ``(shown, n_left_out)``.
    """
    if len(df) <= limit:
        return df, 0
    # Positions, not a filtered copy of the table (200k groups x 20 columns, per rendering).
    has = np.flatnonzero(df["count"].to_numpy() > 0)
    mean = df[mean_column(df, has)].to_numpy(dtype=float)[has]
    n_best = min(limit // 2, max(0, len(has) - (limit - limit // 2)))
    pick = worst_and_best(mean, limit - n_best, n_best)
    return df.iloc[has[pick]], len(df) - len(pick)


def worst_and_best(mean: np.ndarray, n_worst: int, n_best: int) -> np.ndarray:
    """Positions of the ``n_worst`` highest ``mean`` values (worst first) then the ``n_best``
    lowest (in that order), ties in position order: the head and tail of
    ``np.lexsort((positions, -mean))``. Only the values that can be among them are sorted
    (a partition finds the cut-off values first): 200k groups, ~1 ms instead of ~10 ms for
    each rendering that bounds a table."""
    n = len(mean)
    key = -np.asarray(mean, dtype=float)
    if n_worst + n_best >= n or n <= 4 * (n_worst + n_best) or np.isnan(key).any():
        order = np.lexsort((np.arange(n), key))
        return np.concatenate([order[:n_worst], order[n - n_best:]])
    parts = []
    if n_worst:
        cut = np.partition(key, n_worst - 1)[n_worst - 1]
        cand = np.flatnonzero(key <= cut)  # every row that may be among them, ties included
        parts.append(cand[np.lexsort((cand, key[cand]))][:n_worst])
    if n_best:
        cut = np.partition(key, n - n_best)[n - n_best]
        cand = np.flatnonzero(key >= cut)
        parts.append(cand[np.lexsort((cand, key[cand]))][len(cand) - n_best:])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def left_out_note(n_left: int, shown: int, where: str | None) -> str:
    """The line under a bounded table: what is shown and where the rest is."""
    rest = f"in `{where}`" if where else "not shown"
    return (f"{shown:,} of {shown + n_left:,} groups shown: the highest and the lowest mean "
            f"loss; {n_left:,} more {rest}")
