"""Disparity at a glance: per grouping, the worst and best group by mean loss.

fairlearn's ``MetricFrame.difference()`` / ``ratio()`` idea (Bird et al., "Fairlearn: A
toolkit for assessing and improving fairness in AI", Microsoft 2020) applied to the mean
loss: the gap between the worst and the best group, and each one's ratio to the overall mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .columns import GROUP_TABLE_COLUMNS
from .escape import key_label, narrow_float_keys


def key_columns(df: pd.DataFrame) -> list[str]:
    """The key columns of a grouped table: every column that is not a statistic
    (:data:`evalkit.columns.GROUP_TABLE_COLUMNS`, or ``clipped`` of older reports)."""
    stats = {*GROUP_TABLE_COLUMNS, "clipped"}
    return [c for c in df.columns
            if c not in stats and not (c.startswith("p") and c[1:].replace(".", "").isdigit())]


def group_label(row: Mapping[str, Any], cols: Sequence[str]) -> str:
    """``"val,EU"`` for the key values of one group (:func:`evalkit.escape.key_label`: a
    missing key as ``∅``, as in every table)."""
    return key_label([row[c] for c in cols])


def disparity(groups: Mapping[str, pd.DataFrame], overall_mean: float,
              min_count: int = 30) -> list[dict[str, Any]]:
    """One record per grouping with at least one group of ``min_count`` rows or more (the
    config's ``slice_min_count``: a 1-row group is never named worst or best; ``min_count``
    and ``too_small``, the number of smaller non-empty groups left out, are in the record).

    Fields: ``grouping``, ``groups`` (non-empty groups compared), ``worst`` / ``best`` (group
    labels), ``worst_mean`` / ``best_mean``, ``worst_count`` / ``best_count``, ``gap``
    (worst minus best mean, nats), ``worst_ratio`` / ``best_ratio`` (each mean divided by
    the overall mean; NaN when the overall mean is 0), ``statistic`` (``mean``, or
    ``weighted_mean`` in a weighted run: the figure the tables' intervals are of, compared
    with the overall weighted mean, which the caller passes). Ties go to the first group in
    table order; a group without a value (all weights 0) is not compared.

    A grouping with fewer than two such groups has nothing to compare: its record says why in
    ``note`` (None otherwise), with ``groups`` 0 or 1 and the worst / best fields None, so a
    reader never sees one group as both worst and best with gap 0, nor a grouping vanish.
    """
    out = []
    for name, df in groups.items():
        stat = "weighted_mean" if "weighted_mean" in df.columns else "mean"
        present = df[(df["count"] > 0) & df[stat].notna()]
        cols = key_columns(df)
        live = narrow_float_keys(present[present["count"] >= max(int(min_count), 1)], cols)
        if len(live) < 2:
            out.append(_not_compared(name, live, cols, stat, int(min_count), len(present) - len(live)))
            continue
        w = live.loc[live[stat].idxmax()]
        b = live.loc[live[stat].idxmin()]
        ratio = (lambda v: v / overall_mean) if overall_mean else (lambda v: math.nan)
        out.append({
            "grouping": name,
            "groups": int(len(live)),
            "worst": group_label(w, cols),
            "worst_mean": float(w[stat]),
            "worst_count": int(w["count"]),
            "best": group_label(b, cols),
            "best_mean": float(b[stat]),
            "best_count": int(b["count"]),
            "gap": float(w[stat] - b[stat]),
            "worst_ratio": ratio(float(w[stat])),
            "best_ratio": ratio(float(b[stat])),
            "statistic": stat,
            "min_count": int(min_count),
            "too_small": int(len(present) - len(live)),
            "note": None,
        })
    return out


def _not_compared(name: str, live: pd.DataFrame, cols: Sequence[str], stat: str, min_count: int,
                  too_small: int) -> dict[str, Any]:
    """The record of a grouping with fewer than two groups of ``min_count`` rows: why nothing
    is compared."""
    small = f"{too_small:,} smaller group{'s' if too_small != 1 else ''} left out"
    if live.empty:
        note = f"no group has at least {min_count:,} rows (slice_min_count); {small}"
    else:
        only = live.iloc[0]
        note = (f"only one group ({group_label(only, cols)}, n={int(only['count']):,}) has at least "
                f"{min_count:,} rows (slice_min_count): nothing to compare it with; {small}")
    rec: dict[str, Any] = {"grouping": name, "groups": int(len(live))}
    rec.update(dict.fromkeys(("worst", "worst_mean", "worst_count", "best", "best_mean", "best_count",
                              "gap", "worst_ratio", "best_ratio")))
    rec.update(statistic=stat, min_count=min_count, too_small=int(too_small), note=note)
    return rec
