"""What every engine shares: the plan of a run, the per-batch pipeline and the mergeable state.

    record batch -> (join labels) -> validate -> layout -> loss kernel -> per-row batch
                                                                      -> accumulators

:class:`EvalState` is the unit that travels: engines build one per partition / stream and
merge them (associatively) before finalising once. Both engines call :func:`process_batch`,
so local and distributed results agree by construction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..aggregate import Confusion, GroupStats, TopK
from ..errors import InputError, ProbabilitySumError
from ..join import LabelIndex, lazy_keys
from ..layout import Layout
from ..loss import soft_loss, sparse_loss
from ..scores import score_stats
from ..validate import Problem, score_problems, target_problems

CLASS = "class"


@dataclass(frozen=True)
class Grouping:
    """One grouping of the report: a name and the columns it groups by."""

    name: str
    columns: tuple[str, ...]

    @property
    def file_stem(self) -> str:
        """File name stem of its table: ``overall``, ``by_class``, ``by_split_region``."""
        return "overall" if not self.columns else "by_" + "_".join(self.columns)


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to process batches (picklable)."""

    layout: Layout
    groupings: tuple[Grouping, ...]
    eps: float
    sum_tol: float = 1e-3
    renormalize: bool = False
    on_invalid: str = "error"
    unmatched: str = "error"
    quantile_mode: str = "auto"
    exact_limit: int = 1_000_000
    top_k: int = 10
    carry: tuple[str, ...] = ()
    """Input columns copied into the per-row output (keys, group columns, weight)."""
    label_columns_from_join: tuple[str, ...] = ()
    on: tuple[str, ...] = ()

    @property
    def input_columns(self) -> list[str]:
        """Columns read from the prediction input (projection)."""
        lay = self.layout
        cols: list[str] = list(lay.pred_columns)
        if not self.label_columns_from_join:
            cols += list(lay.label_columns)
        cols += list(self.on) + list(self.carry)
        if lay.weight:
            cols.append(lay.weight)
        return list(dict.fromkeys(cols))

    @functools.cached_property
    def class_names(self) -> pa.Array:
        """The class names as one Arrow array, shared by every batch's dictionary columns
        (one dictionary object lets the Parquet writer skip re-checking it per batch)."""
        return pa.array(list(self.layout.classes), type=pa.string())

    @property
    def dictionary_columns(self) -> list[str]:
        """String columns worth reading as Arrow dictionaries: group / key columns and labels."""
        cols = list(self.carry)
        if self.layout.label_kind == "name" and not self.label_columns_from_join:
            cols += list(self.layout.label_columns)
        return cols

    def new_state(self, n_label_rows: int = 0) -> EvalState:
        """An empty state for this plan."""
        # Only the class key sorts in dictionary (class-index) order; other keys by value.
        kw = dict(eps=self.eps, quantile_mode=self.quantile_mode, exact_limit=self.exact_limit,
                  dict_order_keys=(CLASS,))
        weighted = self.layout.weight is not None
        stats = {g.name: GroupStats(g.columns, weighted=weighted, **kw) for g in self.groupings}  # type: ignore[arg-type]
        confusion = Confusion(self.layout.classes)
        top = ({"overall": TopK(self.top_k, ()), CLASS: TopK(self.top_k, (CLASS,), dict_order_keys=(CLASS,))}
               if self.top_k else {})
        return EvalState(stats=stats, confusion=confusion, top=top,
                         seen=np.zeros(n_label_rows, dtype=bool) if n_label_rows else None)


@dataclass
class EvalState:
    """Mergeable partial results of a run."""

    stats: dict[str, GroupStats]
    confusion: Confusion
    top: dict[str, TopK]
    rows_read: int = 0
    rows_used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seen: np.ndarray | None = None
    """Label rows matched so far (joins only)."""

    def merge(self, other: EvalState) -> EvalState:
        """Combine two partial states (associative)."""
        skipped = dict(self.skipped)
        for k, v in other.skipped.items():
            skipped[k] = skipped.get(k, 0) + v
        seen = self.seen
        if self.seen is not None and other.seen is not None:
            both = self.seen & other.seen
            if both.any():
                raise DuplicateAcrossPartitions(both)
            seen = self.seen | other.seen
        return EvalState(
            stats={k: v.merge(other.stats[k]) for k, v in self.stats.items()},
            confusion=self.confusion.merge(other.confusion),
            top={k: v.merge(other.top[k]) for k, v in self.top.items()},
            rows_read=self.rows_read + other.rows_read,
            rows_used=self.rows_used + other.rows_used,
            skipped=skipped,
            seen=seen,
        )


class DuplicateAcrossPartitions(Exception):
    """Raised by merge() when two partitions matched the same label rows."""

    def __init__(self, mask: np.ndarray) -> None:
        super().__init__("duplicate prediction keys across partitions")
        self.mask = mask


def _filter(batch: pa.RecordBatch, keep: np.ndarray) -> pa.RecordBatch:
    return batch.filter(pa.array(keep))


def _handle(
    problems: Sequence[Problem],
    plan: Plan,
    state: EvalState,
    source: str,
    column: str,
    row_offset: int,
    keys: Any,
    n: int,
) -> np.ndarray | None:
    """Raise the first problem, or (skip policy) count and return the rows to keep."""
    if not problems:
        return None
    keep = np.ones(n, dtype=bool)
    for p in problems:
        skip = plan.on_invalid == "skip"
        if p.reason == "unmatched_prediction_key":
            skip = plan.unmatched == "drop"
        elif p.reason == "duplicate_prediction_key":
            skip = False
        if not skip:
            raise p.to_error(source, column if p.reason not in _JOIN_REASONS else ", ".join(plan.on),
                             row_offset, keys)
        fresh = p.mask & keep
        state.skipped[p.reason] = state.skipped.get(p.reason, 0) + int(fresh.sum())
        keep &= ~p.mask
    return keep


_JOIN_REASONS = ("unmatched_prediction_key", "duplicate_prediction_key")


def process_batch(
    plan: Plan,
    state: EvalState,
    batch: pa.RecordBatch,
    *,
    source: str,
    file_offset: int,
    row_offset: int,
    label_index: LabelIndex | None = None,
) -> pa.RecordBatch | None:
    """Run one batch through the pipeline; update ``state``; return the per-row output batch.

    ``file_offset`` is the position of the batch's first row in its file (for messages);
    ``row_offset`` its position in the whole input (the ``row`` column of the output).
    """
    lay = plan.layout
    n0 = batch.num_rows
    state.rows_read += n0
    if n0 == 0:
        return None
    rows = np.arange(row_offset, row_offset + n0, dtype=np.int64)
    key_cols = lay.keys or plan.on

    def keys_of(b: pa.RecordBatch) -> Any:
        return lazy_keys(b, key_cols)

    if label_index is not None:
        position, problems = label_index.match(batch)
        keep = _handle(problems, plan, state, source, "", file_offset, keys_of(batch), n0)
        if keep is not None:
            batch, position, rows = _filter(batch, keep), position[keep], rows[keep]
        batch = label_index.attach(batch, position, plan.label_columns_from_join)
        if state.seen is not None:
            state.seen[position] = True

    # Structural problems first: nulls and list lengths must go before a matrix can be built.
    problems = lay.structural_problems(batch)
    keep = _handle(problems, plan, state, source, _col(lay, problems), file_offset, keys_of(batch),
                   batch.num_rows)
    if keep is not None:
        batch, rows = _filter(batch, keep), rows[keep]

    y, targets, label_problems = lay.labels(batch)
    scores = lay.scores(batch)
    problems = list(label_problems)
    # One blocked pass gives row sums, extremes and the arg-max (validation and kernel share it).
    stats = score_stats(scores) if not lay.from_logits and targets is None else None
    predicted = stats.argmax if stats is not None else None
    problems += score_problems(scores, from_logits=lay.from_logits, sum_tol=plan.sum_tol, stats=stats,
                               check_sum=not plan.renormalize and lay.kind != "binary")
    if plan.renormalize and not lay.from_logits and lay.kind != "binary":
        row_sum = scores.sum(axis=1, dtype=np.float64)
        zero = ~(row_sum > 0)
        if zero.any():
            problems.append(Problem("zero_probability_sum", ProbabilitySumError,
                                    "rows sum to 0; cannot renormalize", zero, row_sum))
    if targets is not None:
        problems += target_problems(targets, sum_tol=plan.sum_tol)
    weight = None
    if lay.weight:
        from ..layout import _float_numpy

        weight = _float_numpy(batch.column(lay.weight), lay.weight).astype(np.float64)
        badw = ~np.isfinite(weight) | (weight < 0)
        if badw.any():
            problems.append(Problem("invalid_weight", InputError, "weights must be finite and >= 0",
                                    badw, weight))
    keep = _handle(problems, plan, state, source, _col(lay, problems), file_offset, keys_of(batch),
                   batch.num_rows)
    if keep is not None:
        batch, rows, scores = _filter(batch, keep), rows[keep], scores[keep]
        predicted = predicted[keep] if predicted is not None else None
        y = y[keep] if y is not None else None
        targets = targets[keep] if targets is not None else None
        weight = weight[keep] if weight is not None else None
    if batch.num_rows == 0:
        return None

    if plan.renormalize and not lay.from_logits and lay.kind != "binary":
        scores = scores / scores.sum(axis=1, dtype=np.float64)[:, None]
    if targets is not None:
        out = soft_loss(scores, targets, plan.eps, lay.from_logits)
    else:
        assert y is not None
        out = sparse_loss(scores, y, plan.eps, lay.from_logits, predicted=predicted)
    correct = out.correct
    n = len(out.loss)
    state.rows_used += n

    classes = plan.class_names
    true_dict = pa.DictionaryArray.from_arrays(pa.array(out.true_class.astype(np.int32)), classes)
    pred_dict = pa.DictionaryArray.from_arrays(pa.array(out.predicted.astype(np.int32)), classes)

    bins = None
    for g in plan.groupings:
        keys = [true_dict if c == CLASS else batch.column(c) for c in g.columns]
        acc = state.stats[g.name]
        if bins is None:
            bins = acc.hist.bin_index(out.loss)  # one log pass shared by every grouping
        acc.update(keys, out.loss, out.clipped_low, correct, weight, bins=bins,
                   clipped_high=out.clipped_high)
    state.confusion.update(out.true_class, out.predicted, out.loss)

    names = (["row"] + list(plan.carry)
             + ["label", "predicted", "p_true", "loss", "clipped_low", "clipped_high", "correct"])
    arrays: list[pa.Array] = [pa.array(rows)]
    arrays += [batch.column(c) for c in plan.carry]
    arrays += [true_dict, pred_dict, pa.array(out.p_true), pa.array(out.loss),
               pa.array(out.clipped_low), pa.array(out.clipped_high), pa.array(correct)]
    row_batch = pa.RecordBatch.from_arrays(arrays, names=names)
    if state.top:
        payload = row_batch.select([c for c in names if c not in ("loss",)])
        payload_tbl = pa.Table.from_batches([payload])
        state.top["overall"].update([], out.loss, payload_tbl)
        state.top[CLASS].update([true_dict], out.loss, payload_tbl)
    return row_batch


def _col(lay: Layout, problems: Sequence[Problem]) -> str:
    """The column a problem is about, for messages."""
    if not problems:
        return ""
    reason = problems[0].reason
    if "label" in reason or "target" in reason:
        return lay.label_name
    if reason == "invalid_weight":
        return lay.weight or ""
    return ", ".join(lay.pred_columns) if len(lay.pred_columns) <= 4 else (
        f"{lay.pred_columns[0]} .. {lay.pred_columns[-1]}")


ProgressFn = Callable[[int, int], None]


def consume(
    plan: Plan,
    state: EvalState,
    batches: Iterator[tuple[str, pa.RecordBatch]],
    *,
    row_offset: int = 0,
    file_offset: int = 0,
    label_index: LabelIndex | None = None,
    writer: Any = None,
    keep: list[pa.RecordBatch] | None = None,
    progress: ProgressFn | None = None,
    stop: Callable[[], bool] | None = None,
) -> bool:
    """Feed ``(path, batch)`` pairs through :func:`process_batch` (every engine's loop).

    Per-row batches go to ``writer`` and / or ``keep``. ``row_offset`` and ``file_offset``
    are the positions of the first row, in the whole input and in its file. Returns False
    when ``stop()`` asked to end early (another partition failed).
    """
    current: str | None = None
    for path, batch in batches:
        if stop is not None and stop():
            return False
        if current is not None and path != current:
            file_offset = 0
        current = path
        out = process_batch(plan, state, batch, source=path, file_offset=file_offset,
                            row_offset=row_offset, label_index=label_index)
        file_offset += batch.num_rows
        row_offset += batch.num_rows
        if out is not None:
            if writer is not None:
                writer.write(out)
            if keep is not None:
                keep.append(out)
        if progress is not None:
            progress(row_offset, batch.nbytes)
    return True
