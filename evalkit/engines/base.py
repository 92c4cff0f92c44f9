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
import pyarrow.compute as pc

from ..aggregate import CalibrationBatch, Confusion, GroupStats, JointStats, SliceStats, TopK
from ..columns import CLASS, ROW_OUTPUT_COLUMNS, rows_column
from ..errors import InputError, ProbabilitySumError
from ..escape import grouping_file_stem
from ..inference import poisson_weights
from ..join import LabelIndex, lazy_keys
from ..layout import Layout
from ..loss import RowLoss, loss_of_p_true, soft_loss, sparse_loss
from ..scores import ScoreStats, calibration_terms, score_stats
from ..validate import (
    PROBABILITIES_AS_LOGITS,
    Problem,
    ReversedBinary,
    score_problems,
    target_problems,
)
from ..worker import SerialWorker


@dataclass(frozen=True)
class Grouping:
    """One grouping of the report: a name and the columns it groups by."""

    name: str
    columns: tuple[str, ...]

    @property
    def file_stem(self) -> str:
        """File name stem of its table: ``overall``, ``by_class``, ``by_split_region``
        (:func:`evalkit.escape.grouping_file_stem`: never a path, whatever the columns)."""
        return grouping_file_stem(self.columns)


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
    """Input columns copied into the per-row output (keys, group and slice columns, weight)."""
    label_columns_from_join: tuple[str, ...] = ()
    on: tuple[str, ...] = ()
    confidence: float = 0.95
    """Confidence level of the intervals in every grouped table."""
    ci: str = "t"
    """``t`` (t-interval from the moments) or ``bootstrap`` (streaming Poisson bootstrap)."""
    bootstrap_samples: int = 100
    bootstrap_seed: int = 0
    calibration_bins: int = 15
    """Equal-width bins of top-label confidence (0: no calibration statistics)."""
    slices: tuple[str, ...] = ()
    """Slice columns searched for significantly worse slices (empty: no slice search)."""
    slice_depth: int = 2
    slice_limit: int = 10_000
    ignore_label: str | int | float | None = None
    """Rows with this label are left out of every statistic (counted as ``ignored_label``)."""

    @property
    def input_columns(self) -> list[str]:
        """Columns read from the prediction input (projection)."""
        lay = self.layout
        cols: list[str] = list(lay.pred_columns)
        if not self.label_columns_from_join:
            cols += list(lay.label_columns)
        # Carried group / slice columns of a labels input come from the join, not from here.
        cols += list(self.on) + [c for c in self.carry if c not in self.label_columns_from_join]
        # Slice columns are carried too (build_plan); a Plan made without them still reads them.
        cols += [c for c in self.slices if c != CLASS and c not in self.label_columns_from_join]
        if lay.weight:
            cols.append(lay.weight)
        return list(dict.fromkeys(cols))

    @property
    def key_columns(self) -> list[str]:
        """The input columns read as keys, not values (:meth:`evalkit.io.Source.batches`):
        join keys, row keys, group and slice columns, and a class label column (index or
        name labels). A float32 file of one of them beside float64 files reads each value as
        the float64 it prints as, so a key is one group whichever width a writer chose.
        Scores, one-hot / soft targets and the weight are values, read exactly (a column
        that is also one of those is read as a value)."""
        lay = self.layout
        keys = list(self.on) + list(self.carry) + [c for c in self.slices if c != CLASS]
        if lay.label_kind in ("index", "name") and not self.label_columns_from_join:
            keys += list(lay.label_columns)
        values = set(lay.pred_columns) | ({lay.weight} if lay.weight else set())
        if lay.label_kind not in ("index", "name"):
            values |= set(lay.label_columns)
        return [c for c in dict.fromkeys(keys) if c not in values]

    @functools.cached_property
    def class_names(self) -> pa.Array:
        """The class names as one Arrow array, shared by every batch's dictionary columns
        (one dictionary object lets the Parquet writer skip re-checking it per batch)."""
        return pa.array(list(self.layout.classes), type=pa.string())

    @property
    def dictionary_columns(self) -> list[str]:
        """String columns worth reading as Arrow dictionaries: group / key columns and labels."""
        cols = list(self.carry) + [c for c in self.slices if c != CLASS]
        if self.layout.label_kind == "name" and not self.label_columns_from_join:
            cols += list(self.layout.label_columns)
        return cols

    def new_state(self, n_label_rows: int = 0) -> EvalState:
        """An empty state for this plan."""
        # Only the class key sorts in dictionary (class-index) order; other keys by value.
        kw = dict(eps=self.eps, quantile_mode=self.quantile_mode, exact_limit=self.exact_limit,
                  dict_order_keys=(CLASS,), confidence=self.confidence,
                  calibration_bins=self.calibration_bins or None,
                  bootstrap_samples=self.bootstrap_samples if self.ci == "bootstrap" else 0)
        kw["weighted"] = self.layout.weight is not None
        # One accumulation over the joint key of every grouping while its combinations are few.
        groups = JointStats({g.name: g.columns for g in self.groupings}, kw)
        confusion = Confusion(self.layout.classes)
        top = ({"overall": TopK(self.top_k, ()), CLASS: TopK(self.top_k, (CLASS,), dict_order_keys=(CLASS,))}
               if self.top_k else {})
        slices = (SliceStats(self.slices, self.slice_depth, self.slice_limit,
                             weighted=bool(kw["weighted"]))
                  if self.slices else None)
        binary = self.layout.kind == "binary" and self.layout.label_kind in ("index", "name")
        return EvalState(groups=groups, confusion=confusion, top=top, slices=slices,
                         seen=np.zeros(n_label_rows, dtype=bool) if n_label_rows else None,
                         reversal=ReversedBinary() if binary else None)


@dataclass
class EvalState:
    """Mergeable partial results of a run."""

    groups: JointStats
    """Every grouping's statistics (accumulated jointly while that is cheaper)."""
    confusion: Confusion
    top: dict[str, TopK]
    rows_read: int = 0
    rows_used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    seen: np.ndarray | None = None
    """Label rows matched so far (joins only)."""
    slices: SliceStats | None = None
    """Per-slice moments (``slices``)."""
    logit_range: tuple[float, float] | None = None
    """Min and max of a binary logit column over the rows used (see
    :func:`evalkit.validate.unit_interval_logits`); None for other layouts."""
    reversal: ReversedBinary | None = None
    """Whether a binary column reads better for the other class (binary layouts with class labels)."""

    @property
    def stats(self) -> dict[str, GroupStats]:
        """One :class:`GroupStats` per grouping name (read-only views for finalising)."""
        return self.groups.stats()

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
            groups=self.groups.merge(other.groups),
            confusion=self.confusion.merge(other.confusion),
            top={k: v.merge(other.top[k]) for k, v in self.top.items()},
            rows_read=self.rows_read + other.rows_read,
            rows_used=self.rows_used + other.rows_used,
            skipped=skipped,
            seen=seen,
            slices=(self.slices.merge(other.slices)
                    if self.slices is not None and other.slices is not None else self.slices),
            logit_range=_widen(self.logit_range, other.logit_range),
            reversal=self.reversal.merge(other.reversal) if self.reversal is not None else other.reversal,
        )


def _widen(a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float, float] | None:
    """The range covering two (min, max) ranges (None: no values)."""
    if a is None or b is None:
        return a if b is None else b
    return (min(a[0], b[0]), max(a[1], b[1]))


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
    row_offset: int | np.ndarray,
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
        elif p.reason in ("duplicate_prediction_key", PROBABILITIES_AS_LOGITS):
            skip = False
        if not skip:
            raise p.to_error(source, column if p.reason not in _JOIN_REASONS else ", ".join(plan.on),
                             row_offset, keys)
        fresh = p.mask & keep
        state.skipped[p.reason] = state.skipped.get(p.reason, 0) + int(fresh.sum())
        keep &= ~p.mask
    return keep


_JOIN_REASONS = ("unmatched_prediction_key", "duplicate_prediction_key")


@dataclass(frozen=True)
class PreparedBatch:
    """A batch scored where it was decoded (:func:`batch_preparer`): the batch without its
    prediction column, the score pass over that column and each row's probability of its
    label. :func:`process_batch` takes it in place of the batch and gives the same results:
    the same functions ran on the same rows, only earlier and on another thread."""

    batch: pa.RecordBatch
    stats: ScoreStats
    p_label: np.ndarray
    """``scores[row, y]`` for the labels :meth:`Layout.labels` gives (0 for invalid ones)."""
    nbytes: int
    """Bytes of the batch as decoded (what progress counts), prediction column included."""

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows


#: Fewest classes for which batches are scored on the decode threads: the blocked score pass
#: (:func:`evalkit.scores.score_stats`, row-major, more than 32 classes) where a batch's
#: scores are large (1000 classes: 4 KB a row) and dropping them after scoring keeps the
#: batches decoded ahead small.
PREPARE_MIN_CLASSES = 65


def batch_preparer(plan: Plan, label_index: LabelIndex | None = None
                   ) -> Callable[[pa.RecordBatch], PreparedBatch | None] | None:
    """The reader's ``prepare`` hook for this plan (:attr:`evalkit._reader.RowGroupReader.prepare`),
    or None where the ordinary path is the only one: a list column of more than
    :data:`PREPARE_MIN_CLASSES` probabilities against integer / named labels of the same
    table, no renormalising. The hook gives None (the batch takes the ordinary path, which
    reports or skips what is wrong) for a batch with any structural or value problem
    (null or wrong-length lists, NaN, values outside [0, 1], row sums off ``sum_tol``).

    Measured, 1M x 1000 (issue 15): the row group decoded ahead no longer stops on a full
    queue of 16 MiB batches, and the score pass runs on both decode threads."""
    lay = plan.layout
    if (label_index is not None or lay.kind != "list" or lay.from_logits or plan.renormalize
            or lay.label_kind not in ("index", "name") or lay.n_classes < PREPARE_MIN_CLASSES):
        return None
    pred = lay.pred_columns[0]
    if pred in plan.carry or pred in plan.slices or pred in lay.label_columns or pred == lay.weight:
        return None
    terms = bool(plan.calibration_bins)
    sum_tol = plan.sum_tol

    def prepare(batch: pa.RecordBatch) -> PreparedBatch | None:
        if lay.structural_problems(batch):
            return None
        scores = lay.scores(batch)
        if not scores.flags.c_contiguous or scores.shape[1] <= 32:
            return None
        stats = score_stats(scores, terms=terms, row_extremes=True)
        if (stats.lo < 0 or stats.hi > 1 or not np.isfinite(stats.row_sum).all()
                or not (np.abs(stats.row_sum - 1.0) <= sum_tol).all()):
            return None
        y = lay.labels(batch)[0]
        assert y is not None
        p_label = scores[np.arange(len(y)), y].astype(np.float64, copy=False)
        return PreparedBatch(batch.drop_columns([pred]), stats, p_label, batch.nbytes)

    return prepare


def process_batch(
    plan: Plan,
    state: EvalState,
    batch: pa.RecordBatch | PreparedBatch,
    *,
    source: str,
    file_offset: int,
    row_offset: int,
    label_index: LabelIndex | None = None,
    defer: Callable[[Callable[[], None]], None] | None = None,
) -> pa.RecordBatch | None:
    """Run one batch through the pipeline; update ``state``; return the per-row output batch.

    ``file_offset`` is the position of the batch's first row in its file (for messages);
    ``row_offset`` its position in the whole input (the ``row`` column of the output).
    The steps: join labels, drop structural problems, extract and validate the arrays,
    the loss kernel, the per-row output, then the accumulators and the hardest rows.
    ``defer`` (see :class:`Stages`) runs that last step, which touches only
    ``state.groups`` / ``confusion`` / ``slices`` / ``top``, elsewhere; called in batch
    order, it gives the same state as running it here.
    """
    pre = batch if isinstance(batch, PreparedBatch) else None
    if pre is not None:  # scored on the decode thread (batch_preparer): no label join here
        batch = pre.batch
        assert label_index is None
    n0 = batch.num_rows
    state.rows_read += n0
    if n0 == 0:
        return None
    cur = _Batch(batch, np.arange(row_offset, row_offset + n0, dtype=np.int64), pre=pre)
    def check(problems: Sequence[Problem], batch: pa.RecordBatch) -> np.ndarray | None:
        # the rows' positions in their file, whatever was left out before (--ignore-label,
        # skipped rows): an error's "row N" is the input's row N; built only for a batch with
        # problems (most have none: no array per check on the hot path)
        if not problems:
            return None
        return _check(plan, state, source, cur.rows - row_offset + file_offset, problems, batch)
    if label_index is not None:
        _join_labels(cur, plan, state, label_index, check)
    if plan.ignore_label is not None:
        _drop_ignored(cur, plan, state)
    # Structural problems first: nulls and list lengths must go before a matrix can be built
    # (a prepared batch has none: it would have taken this path).
    if pre is None:
        problems = plan.layout.structural_problems(cur.batch)
        cur.keep(check(problems, cur.batch))
    _extract(cur, plan)
    cur.keep(check(_value_problems(cur, plan), cur.batch))
    if cur.batch.num_rows == 0:
        return None
    if plan.layout.kind == "binary" and plan.layout.from_logits:
        z = cur.scores[:, 1]  # type: ignore[index]
        state.logit_range = _widen(state.logit_range, (float(z.min()), float(z.max())))
    out = _loss(cur, plan)
    state.rows_used += len(out.loss)
    true_dict = pa.DictionaryArray.from_arrays(pa.array(out.true_class.astype(np.int32)),
                                               plan.class_names)
    correct = out.correct
    if state.reversal is not None:
        state.reversal.update(out.p_true, out.loss, correct, plan.eps)
    row_batch = _row_batch(plan, cur, out, correct, true_dict)

    def accumulate() -> None:
        _accumulate(plan, state, cur, out, correct, true_dict)
        if state.top:
            payload = pa.Table.from_batches([row_batch.drop_columns(["loss"])])
            state.top["overall"].update([], out.loss, payload)
            state.top[CLASS].update([true_dict], out.loss, payload)

    if defer is None:
        accumulate()
    else:
        defer(accumulate)
    return row_batch


@dataclass
class _Batch:
    """One batch on its way through :func:`process_batch`: the Arrow batch, each row's
    position in the whole input, and the arrays extracted from it (row-aligned)."""

    batch: pa.RecordBatch
    rows: np.ndarray
    scores: np.ndarray | None = None
    y: np.ndarray | None = None
    targets: np.ndarray | None = None
    predicted: np.ndarray | None = None
    weight: np.ndarray | None = None
    label_problems: list[Problem] = field(default_factory=list)
    stats: Any = None
    terms: tuple[np.ndarray, ...] | None = None
    """Per-row calibration terms from the scores pass (:attr:`evalkit.scores.ScoreStats.terms`)."""
    row_max: np.ndarray | None = None
    """Each row's largest probability from the scores pass (:attr:`evalkit.scores.ScoreStats.row_max`,
    without ``terms``): the calibration's top-label confidence."""
    pre: PreparedBatch | None = None
    """The batch's score pass and labels' probabilities, when scored where it was decoded
    (then ``scores`` stays None)."""

    def keep(self, mask: np.ndarray | None) -> None:
        """Keep only the rows where ``mask`` is true (None keeps all)."""
        if mask is None:
            return
        if self.pre is not None:
            self.pre = PreparedBatch(self.pre.batch, self.pre.stats.take(mask), self.pre.p_label[mask],
                                     self.pre.nbytes)
        self.batch, self.rows = _filter(self.batch, mask), self.rows[mask]
        for name in ("scores", "y", "targets", "predicted", "weight", "row_max"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v[mask])
        if self.terms is not None:
            self.terms = tuple(v[mask] for v in self.terms)


def _check(plan: Plan, state: EvalState, source: str, positions: np.ndarray,
           problems: Sequence[Problem], batch: pa.RecordBatch) -> np.ndarray | None:
    """:func:`_handle` for one batch (``positions``: each row's position in its file): raise,
    or count skipped rows and return the keep mask."""
    key_cols = plan.layout.keys or plan.on
    return _handle(problems, plan, state, source, _col(plan.layout, problems), positions,
                   lazy_keys(batch, key_cols), batch.num_rows)


#: Key of the ignored-label count in ``EvalState.skipped`` (reported apart from invalid rows).
IGNORED = "ignored_label"


def _drop_ignored(cur: _Batch, plan: Plan, state: EvalState) -> None:
    """Leave out the rows whose label equals ``plan.ignore_label``, counting them."""
    col = cur.batch.column(plan.layout.label_columns[0])
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    value = plan.ignore_label
    is_text = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    if is_text != isinstance(value, str):
        return  # a name against numeric labels (or the reverse): no row can match
    try:
        hit = pc.fill_null(pc.equal(col, pa.scalar(value)), False).to_numpy(zero_copy_only=False)
    except pa.ArrowNotImplementedError:  # e.g. boolean labels
        hit = pc.fill_null(pc.equal(col.cast(pa.float64()), pa.scalar(float(value))), False).to_numpy(
            zero_copy_only=False)
    n = int(hit.sum())
    if n:
        state.skipped[IGNORED] = state.skipped.get(IGNORED, 0) + n
        cur.keep(~hit)


def _join_labels(cur: _Batch, plan: Plan, state: EvalState, label_index: LabelIndex,
                 check: Callable[..., np.ndarray | None]) -> None:
    """Attach each row's label-side columns; unmatched / duplicate keys are problems."""
    position, problems = label_index.match(cur.batch)
    keep = check(problems, cur.batch)
    if keep is not None:
        cur.keep(keep)
        position = position[keep]
    cur.batch = label_index.attach(cur.batch, position, plan.label_columns_from_join)
    if state.seen is not None:
        state.seen[position] = True


def _extract(cur: _Batch, plan: Plan) -> None:
    """Labels / targets and the score matrix as numpy; one blocked pass over the scores
    gives row sums, extremes and the arg-max (validation and the kernel share it)."""
    lay = plan.layout
    cur.y, cur.targets, label_problems = lay.labels(cur.batch)
    cur.label_problems = list(label_problems)
    if cur.pre is not None:
        cur.stats = cur.pre.stats
        cur.predicted = cur.stats.argmax
        cur.terms = cur.stats.terms
    else:
        cur.scores = lay.scores(cur.batch)
    if cur.pre is None and not lay.from_logits and cur.targets is None:
        # The calibration terms come from the same pass, unless the loss renormalises first.
        renorm = _renormalizes(plan)
        cur.stats = score_stats(cur.scores, terms=bool(plan.calibration_bins) and not renorm)
        cur.predicted = cur.stats.argmax
        cur.terms = cur.stats.terms
        if cur.terms is None and not renorm:
            cur.row_max = cur.stats.row_max
    if lay.weight:
        from ..layout import _float_numpy

        cur.weight = _float_numpy(cur.batch.column(lay.weight), lay.weight).astype(np.float64)


def _renormalizes(plan: Plan) -> bool:
    lay = plan.layout
    return plan.renormalize and not lay.from_logits and lay.kind != "binary"


def _value_problems(cur: _Batch, plan: Plan) -> list[Problem]:
    """Every problem of the extracted values: labels, scores, targets, weights."""
    lay = plan.layout
    scores = cur.scores
    problems = list(cur.label_problems)
    if cur.pre is None:  # a prepared batch's scores were checked where it was scored
        assert scores is not None
        problems += score_problems(scores, from_logits=lay.from_logits, sum_tol=plan.sum_tol,
                                   stats=cur.stats,
                                   check_sum=not plan.renormalize and lay.kind != "binary")
    if _renormalizes(plan):
        row_sum = scores.sum(axis=1, dtype=np.float64)
        zero = ~(row_sum > 0)
        if zero.any():
            problems.append(Problem("zero_probability_sum", ProbabilitySumError,
                                    "rows sum to 0; cannot renormalize", zero, row_sum))
    if cur.targets is not None:
        problems += target_problems(cur.targets, sum_tol=plan.sum_tol)
    if cur.weight is not None:
        badw = ~np.isfinite(cur.weight) | (cur.weight < 0)
        if badw.any():
            problems.append(Problem("invalid_weight", InputError,
                                    "weights must be finite and >= 0", badw, cur.weight))
    return problems


def _loss(cur: _Batch, plan: Plan) -> RowLoss:
    """The kernel: per-row loss of the validated rows (renormalised first if asked)."""
    lay = plan.layout
    if cur.pre is not None:
        assert cur.y is not None and cur.predicted is not None
        return loss_of_p_true(cur.pre.p_label, cur.y, plan.eps, cur.predicted)
    scores = cur.scores
    assert scores is not None
    if _renormalizes(plan):
        scores = scores / scores.sum(axis=1, dtype=np.float64)[:, None]
        cur.scores = scores  # calibration uses the probabilities the loss used
    if cur.targets is not None:
        return soft_loss(scores, cur.targets, plan.eps, lay.from_logits)
    assert cur.y is not None
    return sparse_loss(scores, cur.y, plan.eps, lay.from_logits, predicted=cur.predicted)


def _accumulate(plan: Plan, state: EvalState, cur: _Batch, out: RowLoss, correct: np.ndarray,
                true_dict: pa.DictionaryArray) -> None:
    """Add the batch's losses to every grouping's statistics (with calibration bins and
    bootstrap replicates when the plan asks), the confusion matrix and the slice moments."""
    calib = None
    if plan.calibration_bins:
        rc = calibration_terms(cur.scores, from_logits=plan.layout.from_logits,
                               p_true=out.p_true if cur.targets is None else None,
                               targets=cur.targets, terms=cur.terms,  # type: ignore[arg-type]
                               confidence=cur.row_max)
        calib = CalibrationBatch.of(rc, plan.calibration_bins)
    # Poisson weights are a function of the global row position: any batching gives the same.
    boot = (poisson_weights(cur.rows, plan.bootstrap_seed, plan.bootstrap_samples)
            if plan.ci == "bootstrap" else None)
    groups = state.groups
    keys = {c: true_dict if c == CLASS else cur.batch.column(c) for c in groups.columns}
    # One log pass for the histogram bins, shared by every grouping.
    bins = groups.any_stats().hist.bin_index(out.loss)
    groups.update(keys, out.loss, out.clipped_low, correct, cur.weight, bins=bins,
                  clipped_high=out.clipped_high, calibration=calib, boot_weights=boot)
    state.confusion.update(out.true_class, out.predicted, out.loss)
    if state.slices is not None:
        state.slices.update({c: true_dict if c == CLASS else cur.batch.column(c)
                             for c in plan.slices}, out.loss, cur.weight, rows=cur.rows)


def _row_batch(plan: Plan, cur: _Batch, out: RowLoss, correct: np.ndarray,
               true_dict: pa.DictionaryArray) -> pa.RecordBatch:
    """The per-row output: ``row``, the carried columns (an input column named like an
    output column is renamed by :func:`evalkit.columns.rows_column`), then the kernel's columns."""
    pred_dict = pa.DictionaryArray.from_arrays(pa.array(out.predicted.astype(np.int32)),
                                               plan.class_names)
    names = ["row"] + [rows_column(c) for c in plan.carry] + list(ROW_OUTPUT_COLUMNS[1:])
    arrays: list[pa.Array] = [pa.array(cur.rows)]
    arrays += [cur.batch.column(c) for c in plan.carry]
    arrays += [true_dict, pred_dict, pa.array(out.p_true), pa.array(out.loss),
               pa.array(out.clipped_low), pa.array(out.clipped_high), pa.array(correct)]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _col(lay: Layout, problems: Sequence[Problem]) -> str:
    """The column a problem is about, for messages."""
    if not problems:
        return ""
    reason = problems[0].reason
    if "label" in reason or "target" in reason:
        return _names(lay.label_columns) or lay.label_name
    if reason == "invalid_weight":
        return lay.weight or ""
    return _names(lay.pred_columns)


def _names(columns: Sequence[str]) -> str:
    """Columns as a message names them: all of up to four, else the first .. the last."""
    return ", ".join(columns) if len(columns) <= 4 else f"{columns[0]} .. {columns[-1]}"


ProgressFn = Callable[[int, int], None]


class Stages:
    """A second stage for :func:`consume`: the accumulators of batch i are updated on one
    worker thread while the calling thread decodes, validates and scores batch i + 1.

    Most of both stages is numpy and Arrow work that releases the GIL, so on two cores the
    streaming loop runs on both instead of one. The worker runs the jobs in the order
    given, so the state is the one the serial loop builds, bit for bit. At most one job
    waits while one runs (two batches' arrays in memory). A job's exception is raised in
    the calling thread by the next :meth:`submit` or by :meth:`finish`; :meth:`close`
    (on the way out of an error) waits for the worker without raising, so an earlier
    batch's error can be preferred to a later one's.
    """

    def __init__(self) -> None:
        self._worker = SerialWorker("evalkit-accumulate", maxsize=1)

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` after the previous ones (raises a previous job's error first)."""
        exc = self._worker.take_error()
        if exc is not None:
            raise exc
        self._worker.submit(job)

    def close(self) -> BaseException | None:
        """Let the queued jobs run, end the worker; return (not raise) a job's error."""
        self._worker.close()
        return self._worker.take_error()

    def finish(self) -> None:
        """:meth:`close`, raising a job's error."""
        exc = self.close()
        if exc is not None:
            raise exc


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
    staged: bool = False,
) -> bool:
    """Feed ``(path, batch)`` pairs through :func:`process_batch` (every engine's loop).

    Per-row batches go to ``writer`` and / or ``keep``. ``row_offset`` and ``file_offset``
    are the positions of the first row, in the whole input and in its file. Returns False
    when ``stop()`` asked to end early (another partition failed). ``staged`` updates the
    accumulators on a second thread (:class:`Stages`): the same state, sooner on two cores.
    When batch i + 1 fails while batch i's accumulators are being updated, the error of
    batch i (if any) is the one raised, as in the serial loop.
    """
    stages = Stages() if staged else None
    try:
        done = _consume(plan, state, batches, row_offset, file_offset, label_index, writer, keep,
                        progress, stop, stages)
    except BaseException:
        earlier = stages.close() if stages is not None else None
        if earlier is not None:
            raise earlier from None
        raise
    if stages is not None:
        stages.finish()
    return done


def _consume(plan: Plan, state: EvalState, batches: Iterator[tuple[str, pa.RecordBatch]],
             row_offset: int, file_offset: int, label_index: LabelIndex | None, writer: Any,
             keep: list[pa.RecordBatch] | None, progress: ProgressFn | None,
             stop: Callable[[], bool] | None, stages: Stages | None) -> bool:
    current: str | None = None
    defer = stages.submit if stages is not None else None
    for path, batch in batches:
        if stop is not None and stop():
            return False
        if current is not None and path != current:
            file_offset = 0
        current = path
        out = process_batch(plan, state, batch, source=path, file_offset=file_offset,
                            row_offset=row_offset, label_index=label_index, defer=defer)
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
