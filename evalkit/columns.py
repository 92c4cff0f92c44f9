"""Names of the columns evalkit writes: the true-class grouping and the per-row output.

One home for these names, at the bottom layer: the engines write the per-row output
(``rows.parquet``) with them, and ``compare`` / ``history`` read it back with them.

The per-row output holds ``row``, the carried input columns (row keys, group columns, the
weight), then the computed columns :data:`ROW_OUTPUT_COLUMNS`. An input column named like a
computed one (``--by label`` when the label column is ``label``, a group column ``loss``)
is written as ``input:<name>`` (:func:`rows_column`), so both are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Name of the grouping by true class, and of its key column in the grouped tables.
CLASS = "class"

#: Prefix of an input column renamed in the per-row output (see :func:`rows_column`).
INPUT_PREFIX = "input:"

#: The per-row output's own columns: the row position, the true class (``label``), the
#: predicted class, the probability of the true class, the loss (nats), the clipped flags
#: and whether the prediction was right.
ROW_OUTPUT_COLUMNS = ("row", "label", "predicted", "p_true", "loss", "clipped_low", "clipped_high",
                      "correct")


def match_column(name: str, names: Sequence[str]) -> str | None:
    """The input column a user's ``name`` means: ``name`` itself when there is one, else the
    one column whose name equals it once surrounding spaces are stripped from both (a CSV
    header ``a, c`` gives a column `` c``, and a comma-separated ``--by a, c`` a name ``c``),
    else None (no such column, or several that differ only in spaces).

    >>> match_column(" c", ["a", " c"]), match_column("c", ["a", " c"]), match_column("c", ["c", " c"])
    (' c', ' c', 'c')
    >>> match_column(" c", ["c", "d"]), match_column("c", [" c", "c "]) is None
    ('c', True)
    """
    if name in names:
        return name
    spaced = [n for n in names if n.strip() == name.strip()]
    return spaced[0] if len(spaced) == 1 else None


def quoted_names(names: Sequence[str], limit: int = 20) -> str:
    """Column names for a message, each quoted (a name may hold ``, `` or surrounding spaces).

    >>> quoted_names(["prob", "a,b", " c"])
    "'prob', 'a,b', ' c'"
    """
    return ", ".join(repr(n) for n in names[:limit]) + (" ..." if len(names) > limit else "")


def rows_column(column: str) -> str:
    """The name of a grouping / carried input column in the per-row output.

    The true-class grouping :data:`CLASS` is the output's ``label`` column. An input column
    named like an output column (``label``, ``loss``, ``correct``...) or already starting with
    :data:`INPUT_PREFIX` gets that prefix: ``label`` -> ``input:label``. The mapping is
    one-to-one, so every carried column keeps its own name in the output.

    >>> rows_column("region"), rows_column("class"), rows_column("loss")
    ('region', 'label', 'input:loss')
    """
    if column == CLASS:
        return "label"
    if column in ROW_OUTPUT_COLUMNS or column.startswith(INPUT_PREFIX):
        return INPUT_PREFIX + column
    return column


#: Columns of every grouped table (``overall.parquet``, ``by_*.parquet``) besides its key
#: columns: statistics of the loss (nats), intervals, calibration and weights.
GROUP_TABLE_COLUMNS = ("count", "mean", "sem", "ci_low", "ci_high", "std", "min", "p50", "p90", "p99", "max",
                       "sum", "clipped_low", "clipped_high", "accuracy", "ece", "mce", "brier", "entropy",
                       "weight_sum", "weighted_mean", "n_eff")

#: Columns of ``slices.parquet`` besides the slice columns.
SLICE_TABLE_COLUMNS = ("slice", "columns", "depth", "count", "mean", "n_eff", "complement_count",
                       "complement_mean", "complement_n_eff", "diff", "ci_low", "ci_high", "t", "df", "p_value",
                       "p_adjusted", "effect_size", "tested", "significant", "worse", "duplicate_of")

#: Columns of ``calibration.parquet`` besides the key columns of its groupings.
CALIBRATION_TABLE_COLUMNS = ("grouping", "group", "bin", "bin_low", "bin_high", "count",
                             "mean_confidence", "accuracy")


def calibration_key_column(column: str) -> str:
    """The name of a grouping's key column in ``calibration.parquet``: itself, or
    ``input:<name>`` when it is named like a column of that table (a ``--by bin`` column,
    one named ``group``), as :func:`rows_column` does for the per-row output.

    >>> calibration_key_column("region"), calibration_key_column("bin")
    ('region', 'input:bin')
    """
    if column in CALIBRATION_TABLE_COLUMNS or column.startswith(INPUT_PREFIX):
        return INPUT_PREFIX + column
    return column


#: Columns of every ``compare`` table besides its key columns.
COMPARE_TABLE_COLUMNS = ("baseline_count", "candidate_count", "baseline_mean", "candidate_mean", "delta",
                         "rel_delta", "ci_low", "ci_high", "method", "status", "n_paired", "ci_method")


#: Columns of ``history``'s tables (the tidy tables, ``trends.parquet``, ``changes``) besides
#: their key columns. A key column named like one is kept there as ``input:<name>``
#: (:func:`history_key_column`); evaluate and compare need no such rule for them.
HISTORY_TABLE_COLUMNS = (
    "run", "run_id", "created", "segment", "count", "mean", "sem", "n_eff", "ci_low", "ci_high", "clipped_low",
    "accuracy", "grouping", "runs", "latest", "latest_count", "previous", "change_prev", "change_prev_pct",
    "reference", "reference_count", "drift", "drift_pct", "drift_ci_low", "drift_ci_high", "min", "max",
    "changed", "direction", "change_run", "change_created", "before", "after", "change_pct", "t", "p_value",
    "q_value")


def history_key_column(column: str) -> str:
    """The name of a grouping's key column in ``history``'s tables: itself, or
    ``input:<name>`` when it is named like one of their columns (:data:`HISTORY_TABLE_COLUMNS`:
    a ``--by t`` or ``--by run`` column) or already starts with :data:`INPUT_PREFIX`, as
    :func:`rows_column` does for the per-row output. ``history.md``, the plots and the gates
    show the user's name.

    >>> history_key_column("region"), history_key_column("run")
    ('region', 'input:run')
    """
    if column in HISTORY_TABLE_COLUMNS or column.startswith(INPUT_PREFIX):
        return INPUT_PREFIX + column
    return column


def key_name_clash(column: str, kind: str) -> str | None:
    """Why a ``kind`` (``"group"`` or ``"slice"``) column cannot be named ``column``, or None.

    A grouped table holds its key columns next to its statistics, so a group column named
    ``count`` would overwrite the count; such names are refused up front (evaluate's and
    compare's tables). Per-row output and history's tables rename instead: see
    :func:`rows_column`, :func:`history_key_column`.
    """
    tables = ([("grouped tables", GROUP_TABLE_COLUMNS), ("compare tables", COMPARE_TABLE_COLUMNS)]
              if kind == "group" else [("slices table", SLICE_TABLE_COLUMNS)])
    for what, names in tables:
        if column in names:
            return f"{kind} column {column!r} has the name of a column of the {what} ({', '.join(names)})"
    return None
