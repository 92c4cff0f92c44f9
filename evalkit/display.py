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
    order = np.lexsort((np.arange(len(has)), -mean))  # worst first, ties in table order
    n_best = min(limit // 2, max(0, len(order) - (limit - limit // 2)))
    pick = np.concatenate([order[: limit - n_best], order[len(order) - n_best:]])
    return df.iloc[has[pick]], len(df) - len(pick)


def left_out_note(n_left: int, shown: int, where: str | None) -> str:
    """The line under a bounded table: what is shown and where the rest is."""
    rest = f"in `{where}`" if where else "not shown"
    return (f"{shown:,} of {shown + n_left:,} groups shown: the highest and the lowest mean "
            f"loss; {n_left:,} more {rest}")
