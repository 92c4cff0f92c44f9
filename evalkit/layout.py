"""How predictions and labels are laid out in a table: detected from the schema or declared.

Prediction layouts
    ``wide``    one float column per class (``prob_cat``, ``prob_dog``, ...); class names are
                the suffixes after the prefix.
    ``list``    one list / fixed-size-list column of per-class values.
    ``binary``  one float column holding P(class 1).
  Any of them may hold raw logits instead of probabilities (``from_logits``).

Label encodings
    ``index``   integer class index (or whole-valued floats, or booleans for binary);
                when the class names are integers, the label is matched by value.
    ``name``    string class name, mapped through the class names.
    ``onehot``  one target column per class (one-hot or soft).
    ``soft``    one list column of per-class targets.

A :class:`Layout` turns an Arrow record batch into an ``(n, K)`` score matrix and integer
labels (or a target matrix), reporting bad rows as :class:`~evalkit.validate.Problem` s.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .columns import quoted_names
from .errors import (
    ClassesError,
    ColumnTypeError,
    InvalidProbabilityError,
    LabelError,
    LayoutError,
    ListLengthError,
    missing_column,
    option,
    sample_rows,
)
from .normalize import declares_order, is_key_type, is_string_like
from .validate import Problem, logits_hint

PROB_PREFIXES = ("prob_", "proba_", "probs_", "probability_", "p_", "score_", "pred_")
LOGIT_PREFIXES = ("logit_", "logits_")
TARGET_PREFIXES = ("target_", "onehot_", "true_", "y_true_")
# ``probability`` is the list column Spark ML's classifiers write (after vector_to_array).
LIST_PROB_NAMES = ("probs", "probabilities", "probability", "proba", "prob", "predictions", "scores", "y_prob",
                   "y_pred", "y_proba", "predict_proba")
LIST_LOGIT_NAMES = ("logits", "logit")
BINARY_NAMES = ("prob", "probability", "proba", "p1", "score", "y_prob", "y_score", "y_proba", "prob_1", "p_1",
                "pred", "predict_proba")
BINARY_LOGIT_NAMES = ("logit", "logits", "y_logit", "log_odds")
#: Fields of a Spark ML vector (VectorUDT) as Spark writes it to Parquet.
SPARK_VECTOR_FIELDS = {"type", "size", "indices", "values"}
LABEL_NAMES = ("label", "labels", "y", "y_true", "target", "targets", "true_label", "class", "gold", "ground_truth")
KEY_NAMES = ("id", "row_id", "example_id", "sample_id", "key", "uid", "uuid", "idx")
SPLIT_NAMES = ("split",)

PredKind = Literal["wide", "list", "binary"]
LabelKind = Literal["index", "name", "onehot", "soft"]


def _is_float(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_decimal(t)


def _is_numeric(t: pa.DataType) -> bool:
    return _is_float(t) or pa.types.is_integer(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Layout:
    """A resolved layout: which columns hold what, and the class names."""

    kind: PredKind
    pred_columns: tuple[str, ...]
    from_logits: bool
    classes: tuple[str, ...]
    label_kind: LabelKind
    label_columns: tuple[str, ...]
    keys: tuple[str, ...] = ()
    weight: str | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)
    declared_order: bool = False
    """The class order is the categories the label column declares (a categorical label and
    positional predictions: :func:`_declared_class_order`); every batch's dictionary must
    order them alike."""
    label_sample: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """Distinct label values of the first rows (:data:`LABEL_SAMPLE_ROWS`), kept when class
    names are labels but the predictions only number their classes: the values that name
    them (:meth:`named_classes`)."""
    declared_categories: tuple[str, ...] = field(default=(), compare=False, repr=False)
    """Categories the label column declares when their count is not K (so they cannot name
    the positional classes, :func:`_declared_class_order`): the hint then names no order."""

    @property
    def n_classes(self) -> int:
        """Number of classes K."""
        return len(self.classes)

    @property
    def label_name(self) -> str:
        """A display name for the label: its column, or ``targets`` for one-hot columns."""
        return self.label_columns[0] if len(self.label_columns) == 1 else "targets"

    def describe(self) -> list[str]:
        """Lines describing the layout, for ``evalkit inspect`` and the report."""
        what = "logits" if self.from_logits else "probabilities"
        if self.kind == "wide":
            pred = f"wide {what}: {_short_list(self.pred_columns)}"
        elif self.kind == "list":
            pred = f"list column of {what}: {self.pred_columns[0]}"
        else:
            pred = f"binary P(class 1) {what}: {self.pred_columns[0]}"
        label = {
            "index": "integer class index",
            "name": "class name",
            "onehot": "one-hot / soft target columns",
            "soft": "list column of soft targets",
        }[self.label_kind]
        lines = [
            f"predictions: {pred}",
            f"labels: {label}: {_short_list(self.label_columns)}",
            f"classes ({self.n_classes}): {_short_list(self.classes)}",
        ]
        if self.keys:
            lines.append(f"keys: {', '.join(self.keys)}")
        if self.weight:
            lines.append(f"weight: {self.weight}")
        lines.extend(self.notes)
        return lines

    # -- per batch -------------------------------------------------------------------

    def structural_problems(self, batch: pa.RecordBatch) -> list[Problem]:
        """Null prediction rows and list rows of the wrong length (need fixing before scores)."""
        problems: list[Problem] = []
        if self.kind == "list":
            problems += _list_problems(batch.column(self.pred_columns[0]), self.n_classes, "prediction")
        elif self.kind == "binary" and _is_list(batch.column(self.pred_columns[0]).type):
            col = batch.column(self.pred_columns[0])
            problems += _list_problems(col, 1, "prediction")
            problems += _binary_problems(binary_values(col), self.pred_columns[0], self.from_logits)
        elif self.kind in ("wide", "binary"):
            for name in self.pred_columns:
                col = batch.column(name)
                if col.null_count:
                    mask = col.is_null().to_numpy(zero_copy_only=False)
                    problems.append(Problem("null_prediction", InvalidProbabilityError,
                                            f"null (missing) prediction in {name}", mask))
            if self.kind == "binary":
                problems += _binary_problems(batch.column(self.pred_columns[0]), self.pred_columns[0],
                                             self.from_logits)
        if self.label_kind == "soft":
            problems += _list_problems(batch.column(self.label_columns[0]), self.n_classes, "target")
        return problems

    def scores(self, batch: pa.RecordBatch) -> np.ndarray:
        """The (n, K) score matrix of a batch (float32 or float64, possibly a view)."""
        n = batch.num_rows
        if self.kind == "wide":
            cols = [_float_numpy(batch.column(c), c) for c in self.pred_columns]
            dtype = np.result_type(*cols) if cols else np.float64
            # Stack along axis 0 (contiguous copies), then view transposed as (n, K):
            # much cheaper than column_stack's strided writes.
            m = np.empty((len(cols), n), dtype=dtype)
            for i, c in enumerate(cols):
                m[i] = c
            return m.T
        if self.kind == "list":
            return _list_matrix(batch.column(self.pred_columns[0]), self.n_classes)
        p1 = _float_numpy(binary_values(batch.column(self.pred_columns[0])), self.pred_columns[0]).astype(np.float64)
        if self.from_logits:
            return np.column_stack([np.zeros_like(p1), p1])
        return np.column_stack([1.0 - p1, p1])

    def labels(self, batch: pa.RecordBatch) -> tuple[np.ndarray | None, np.ndarray | None, list[Problem]]:
        """Integer labels (sparse) or a target matrix (one-hot / soft), and label problems.

        Invalid rows get label 0 so that the arrays stay aligned; the caller either raises
        the problems or drops those rows.
        """
        k = self.n_classes
        if self.label_kind == "onehot":
            cols = [_float_numpy(batch.column(c), c) for c in self.label_columns]
            return None, np.column_stack(cols).astype(np.float64, copy=False), []
        if self.label_kind == "soft":
            return None, _list_matrix(batch.column(self.label_columns[0]), k).astype(np.float64), []
        col = batch.column(self.label_columns[0])
        if pa.types.is_dictionary(col.type) and self.label_kind != "name":
            col = col.dictionary_decode()
        problems: list[Problem] = []
        null = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
        if null is not None:
            problems.append(Problem("null_label", LabelError,
                                    f"null label ({option('on_invalid', 'skip')} leaves such rows out)", null))
        if self.label_kind == "name":
            y = self._name_labels(col, null, problems)
        else:
            y = self._index_labels(col, null, problems)
        return y, None, problems

    def _name_labels(self, col: pa.Array, null: np.ndarray | None,
                     problems: list[Problem]) -> np.ndarray:
        """Class indices of string labels (class names); unknown names are a problem."""
        class_set = pa.array(self.classes, type=pa.string())
        if pa.types.is_dictionary(col.type):
            # Map the few dictionary values, then gather by index: no string per row.
            where = pc.index_in(col.dictionary.cast(pa.string()), value_set=class_set)
            if self.declared_order and (problem := self._order_problem(col, where, null)) is not None:
                problems.append(problem)
                return np.zeros(len(col), dtype=np.int64)
            codes = where.take(col.indices)
        else:
            codes = pc.index_in(col, value_set=class_set)
        y = codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        unknown = y < 0
        if null is not None:
            unknown &= ~null
        if unknown.any():
            values = _LazyValues(col)  # only the few rows a message shows
            problems.append(Problem("unknown_label", LabelError,
                                    f"unknown class name (classes are {_short_list(self.classes)}"
                                    f"{self._classes_hint(col)}){ignore_hint(_text_sentinel(col, unknown))}",
                                    unknown, values))
        y[y < 0] = 0
        return y

    def _order_problem(self, col: pa.Array, where: pa.Array, null: np.ndarray | None) -> Problem | None:
        """Every labelled row of a batch whose label dictionary orders the classes otherwise
        than the one the class order was taken from (another file's ``Categorical`` declared in
        another order): that part's positional predictions cannot follow both orders. None when
        the dictionary lists the classes (or some of them) in the class order."""
        pos = where.drop_null().to_numpy(zero_copy_only=False)
        if not len(pos) or (np.diff(pos) > 0).all():
            return None
        mask = np.ones(len(col), dtype=bool) if null is None else ~null
        declared = _short_list([str(v) for v in col.dictionary.to_pylist()])
        return Problem("label_order", LabelError,
                       f"this part of the input declares its categories in another order ({declared}) than "
                       f"the first rows, whose order names the classes of the positional predictions "
                       f"({_short_list(self.classes)}); they cannot follow both: name the class order with "
                       f"{option('classes', list(self.classes))}", mask, _LazyValues(col))

    def _index_labels(self, col: pa.Array, null: np.ndarray | None,
                      problems: list[Problem]) -> np.ndarray:
        """Class indices of numeric / boolean labels: whole numbers naming a class (by
        position, or by value for integer class names); others are problems."""
        y, raw, frac, huge = _whole_number_labels(col, problems)
        whole = y
        by_value = _int_class_values(self.classes)
        truth = bool_class_indices(self.classes) if pa.types.is_boolean(col.type) else None
        if truth is not None:  # prob_True, prob_False: True is the class named True, not index 1
            return np.where(y == 1, truth[1], truth[0]).astype(np.int64)
        if by_value is not None:
            lookup = pc.index_in(pa.array(y), value_set=pa.array(by_value, type=pa.int64()))
            mapped = lookup.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            bad = mapped < 0
            raw = y if raw is None else raw
            y = np.where(bad, 0, mapped)
        else:
            bad = (y < 0) | (y >= self.n_classes)
            raw = y.copy() if raw is None else raw
            y = np.where(bad, 0, y)
        if huge is not None and huge.any():
            bad |= huge
            y[huge] = 0
        if frac is not None:
            bad &= ~frac
        if null is not None:
            bad &= ~null
        if bad.any():
            usable = np.ones(len(whole), dtype=bool)
            for mask in (null, frac, huge):
                if mask is not None:
                    usable &= ~mask
            coding = class_coding(self, np.unique(whole[usable]).tolist())
            hint = (self._coding_hint(coding) if coding is not None
                    else ignore_hint(sentinel_label(raw[bad])))
            problems.append(Problem("label_out_of_range", LabelError,
                                    f"label out of range (classes are {_short_list(self.classes)}){hint}",
                                    bad, raw))
        return y

    def _coding_hint(self, coding: tuple[str, ...]) -> str:
        """The advice for labels that are a class coding (:func:`class_coding`): name the
        classes by those values (list / binary predictions), or recode (numbered wide columns,
        whose names already number the classes from 0). Never an ignore label: every value is
        a class."""
        values = ", ".join(coding)
        if self.kind == "wide":
            return (f"; the {len(coding)} label values {values} are a class coding, not bad rows, but the "
                    f"prediction columns number the classes from 0 ({_short_list(self.pred_columns)}): recode the "
                    f"labels to 0..{len(coding) - 1} in the same order")
        return (f"; the {len(coding)} label values {values} are a class coding, not bad rows (leaving out "
                f"any would drop a class): name the classes by those values, in class-index order, with "
                f"{option('classes', list(coding))}")


    @property
    def order_unverified(self) -> bool:
        """Class names map to positional predictions in an order nothing in the data states:
        name labels and a list column (or wide columns not named after the classes) whose
        class order came from ``classes`` (or a guess), not from a categorical label's
        declared order (:func:`evalkit.validate.class_order_fit` checks it after the run)."""
        if self.label_kind != "name" or self.declared_order or self.kind not in ("list", "wide"):
            return False
        return self.kind == "list" or not all(
            col.endswith(c) for col, c in zip(self.pred_columns, self.classes, strict=True))

    @property
    def numbers_its_classes(self) -> bool:
        """The predictions only number their classes (a list or binary column without
        declared class names): class names are ``0``, ``1``, ..."""
        return all(c.lstrip("-").isdigit() for c in self.classes)

    def named_classes(self, names: Sequence[object] = ()) -> tuple[str, ...] | None:
        """The class names string labels give a layout that only numbers its classes: the
        distinct label values sorted (scikit-learn's ``model.classes_`` order), when there are
        exactly K of them. ``names`` are label values to use when no sample was kept. None
        when the classes are named already or the count differs."""
        if not self.numbers_its_classes:
            return None
        values = sorted({str(v) for v in (self.label_sample or names) if v is not None})
        return tuple(values) if len(values) == self.n_classes else None

    def _classes_hint(self, labels: pa.Array | pa.ChunkedArray) -> str:
        """When the predictions only number their classes (a list or binary column) but the
        labels are names, say how to name the classes."""
        if not self.numbers_its_classes:
            return ""
        if self.declared_categories:  # neither their order nor a sorted one is known to fit
            m = len(self.declared_categories)
            return (f"; the prediction column {self.pred_columns[0]!r} does not name its classes, and label "
                    f"column {self.label_columns[0]!r} declares {m} categories ({_short_list(self.declared_categories)}) "
                    f"for {self.n_classes} classes, so their order cannot name them: name the classes in the "
                    "model's class-index order with "
                    + option("classes", meta=",".join(f"name{i}" for i in range(min(self.n_classes, 3)))
                             + (",..." if self.n_classes > 3 else "")))
        if self.label_sample:
            names: list[object] = []
        elif pa.types.is_dictionary(labels.type):
            names = labels.dictionary.to_pylist()  # type: ignore[union-attr]
        else:
            names = pc.unique(labels.drop_null()).to_pylist()
        value = self.named_classes(names)
        spelled = (option("classes", list(value)) if value is not None
                   else option("classes", meta=",".join(f"name{i}" for i in range(min(self.n_classes, 3)))
                               + (",..." if self.n_classes > 3 else "")))
        return (f"; the prediction column {self.pred_columns[0]!r} does not name its classes: name them "
                f"in class-index order (scikit-learn's model.classes_, sorted) with {spelled}")


def bool_class_indices(classes: Sequence[str]) -> tuple[int, int] | None:
    """The class indices of False and True for boolean labels when the classes are named
    ``True`` / ``False`` (any case: ``prob_True``, ``prob_false``), None when the classes are
    numbered or named otherwise (see :func:`_check_bool_labels`)."""
    lower = [c.lower() for c in classes]
    if len(classes) == 2 and sorted(lower) == ["false", "true"]:
        return lower.index("false"), lower.index("true")
    return None


def _check_bool_labels(layout: Layout, lschema: pa.Schema, source: str) -> None:
    """Boolean labels name their class by value: next to classes named True / False each
    goes to its class (:func:`bool_class_indices`); next to numbered classes False is 0 and
    True is 1; next to classes named otherwise (``prob_yes``, ``prob_no``) nothing says
    which class True is: refused, never taken by column order."""
    if layout.label_kind != "index" or not layout.label_columns:
        return
    if not pa.types.is_boolean(_value_type(lschema.field(layout.label_columns[0]).type)):
        return
    if bool_class_indices(layout.classes) is not None or layout.numbers_its_classes:
        return
    raise LayoutError(
        f"{source}: label column {layout.label_columns[0]!r} holds booleans but the classes are named "
        f"{_short_list(layout.classes)}: which of them is True? Name the classes by the label values in "
        f"class-index order, {option('classes', ['False', 'True'])} (the prediction columns then named "
        f"after True / False), or store the labels as the class names")


def class_coding(layout: Layout, values: Sequence[object]) -> tuple[str, ...] | None:
    """The class names (the label values of a whole coding, in class-index order) when the
    label values are a class coding of a layout that numbers its classes 0..K-1 rather than
    ignore labels or bad rows: whole numbers within K consecutive values that start at 1
    (R / MATLAB / Julia: 1..K, holding 1) or at -1 (sentiment: -1, 0, 1) and, for two classes,
    -1 and 1 (SVM / libsvm). A -1 coding may lack 0 in the values seen (labels -1 and 1 against
    3 classes are -1, 0, 1 with no neutral row yet, not 0-based indices whose class 0 never
    occurs beside a padding -1); with 0 present it must be the whole coding. None otherwise:
    a rare -100 / -1 beside 0..K-1 is K + 1 values, and stays an ignore label."""
    k = layout.n_classes
    if k < 2 or layout.classes != tuple(str(i) for i in range(k)) or not values:
        return None
    try:
        nums = sorted({float(v) for v in values if v is not None and not isinstance(v, bool | str)})  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not nums or not all(np.isfinite(f) and f.is_integer() and abs(f) < 2.0**53 for f in nums):
        return None
    ints = [int(f) for f in nums]
    if set(ints) <= set(range(k)):
        return None
    if k == 2 and ints == [-1, 1]:
        return ("-1", "1")
    for start in (1, -1):
        coding = list(range(start, start + k))
        if ints[0] == start and set(ints) <= set(coding) and (ints == coding or 0 not in ints):
            return tuple(str(i) for i in coding)
    return None


def sentinel_label(values: np.ndarray) -> int | None:
    """The one negative whole number among refused label values, as padding / ignore labels
    look (PyTorch's ``ignore_index`` -100, Keras' ``ignore_class``, -1); None when there is
    none or several. Two reductions over the refused values only."""
    neg = values[values < 0] if values.dtype.kind in "if" else values[:0]
    if not len(neg):
        return None
    lo, hi = neg.min(), neg.max()
    return int(lo) if lo == hi and float(lo) == int(lo) else None


def _text_sentinel(col: pa.Array, unknown: np.ndarray) -> int | None:
    """:func:`sentinel_label` of unknown string labels (``"-100"``), judged on the first
    1,000 unknown rows."""
    rows = col.take(pa.array(np.flatnonzero(unknown)[:1000]))
    if pa.types.is_dictionary(rows.type):
        rows = rows.dictionary_decode()
    distinct = {str(v) for v in pc.unique(rows).to_pylist()}
    whole = [int(v) for v in distinct if v.startswith("-") and v[1:].isdigit()]
    return sentinel_label(np.array(whole, dtype=np.int64)) if len(whole) == 1 else None


def ignore_hint(sentinel: int | None) -> str:
    """The advice a label error gives when the refused values look like an ignore label."""
    if sentinel is None:
        return ""
    return (f"; {sentinel} looks like an ignore label (PyTorch's ignore_index, Keras' ignore_class): "
            f"{option('ignore_label', sentinel)} leaves those rows out of every statistic and counts them "
            f"apart, {option('on_invalid', 'skip')} leaves out every invalid row")


class _LazyValues:
    """Python values of an Arrow array, converted only for the rows a message shows."""

    def __init__(self, arr: pa.Array) -> None:
        self.arr = arr

    def __getitem__(self, i: int) -> object:
        return self.arr[int(i)].as_py()

    def __len__(self) -> int:
        return len(self.arr)


def binary_values(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A binary prediction column's values: the column itself, or the one value of each row
    of a one-value list column (a Keras ``Dense(1, sigmoid)`` output saved as (n, 1)); a row of
    another length is null here (its length is refused by :func:`_list_problems`)."""
    if not _is_list(arr.type):
        return arr
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_fixed_size_list(arr.type):
        one = pc.equal(pc.list_value_length(arr), 1).fill_null(True)
        if not pc.all(one).as_py():
            arr = pc.if_else(one, arr, pa.scalar(None, arr.type))
    return pc.list_element(arr, 0)


def _binary_problems(arr: pa.Array | pa.ChunkedArray, name: str, from_logits: bool) -> list[Problem]:
    """Out-of-range values of a binary P(class 1) (or logit) column, shown as they are."""
    if len(arr) == 0:
        return []
    p1 = _float_numpy(arr, name).astype(np.float64, copy=False)
    total = p1.sum()
    if np.isfinite(total) and (from_logits or (p1.min() >= 0 and p1.max() <= 1)):
        return []  # the fast path: one reduction (nulls become NaN and fail it)
    # Nulls are reported on their own (null_prediction); the rest is judged on its values.
    null = np.isnan(p1) & arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    nonfinite = ~np.isfinite(p1)
    if null is not None:
        nonfinite &= ~null
    what = "logits" if from_logits else "probabilities"
    problems = [Problem(f"nonfinite_{'logit' if from_logits else 'probability'}",
                        InvalidProbabilityError, f"NaN or infinite {what} in {name}", nonfinite, p1)]
    if not from_logits:
        finite = p1[np.isfinite(p1)]
        hint = logits_hint(float(finite.min()), float(finite.max())) if len(finite) else ""
        with np.errstate(invalid="ignore"):
            problems.append(Problem("negative_probability", InvalidProbabilityError,
                                    f"negative probabilities in {name}{hint}", p1 < 0, p1))
            problems.append(Problem("probability_above_one", InvalidProbabilityError,
                                    f"probabilities greater than 1 in {name}{hint}", p1 > 1, p1))
    return [p for p in problems if p.mask.any()]


def _int_class_values(classes: Sequence[str]) -> list[int] | None:
    """Integer class values when class names are integers but not exactly 0..K-1."""
    try:
        values = [int(c) for c in classes]
    except ValueError:
        return None
    if values == list(range(len(values))):
        return None
    return values


def _short_list(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _float_numpy(arr: pa.Array | pa.ChunkedArray, name: str) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if _is_float(t) and not pa.types.is_decimal(t):
        if pa.types.is_float16(t):
            arr = arr.cast(pa.float32())
        # Nulls become NaN, which validation reports.
        return arr.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    raise ColumnTypeError(f"column {name}: expected numbers, got type {t}")


def _list_problems(arr: pa.Array | pa.ChunkedArray, k: int, role: str) -> list[Problem]:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    problems: list[Problem] = []
    null = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if null is not None:
        problems.append(Problem(f"null_{role}", InvalidProbabilityError, f"null {role} list", null))
    if pa.types.is_fixed_size_list(arr.type):
        return problems
    lengths = pc.list_value_length(arr).fill_null(k).to_numpy(zero_copy_only=False)
    # An empty list is its own problem (no values at all), not a length that differs.
    empty = lengths == 0
    if empty.any():
        problems.append(Problem("empty_list" if role == "prediction" else f"empty_{role}_list", ListLengthError,
                                f"empty {role} list (0 classes)", empty))
    bad = (lengths != k) & ~empty
    if bad.any():
        problems.append(Problem("list_length" if role == "prediction" else f"{role}_list_length", ListLengthError,
                                f"{role} list length differs from the {k} classes; lengths", bad, lengths))
    return problems


def _list_matrix(arr: pa.Array | pa.ChunkedArray, k: int) -> np.ndarray:
    """(n, K) view of a list column's values (structural problems must be handled first)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if arr.null_count:
        # Null rows carry no values: give them NaN rows so the shapes stay aligned.
        arr = pc.if_else(arr.is_null(), pa.scalar([float("nan")] * k, type=arr.type), arr)
    values = arr.flatten()  # flatten() honours slicing offsets, unlike .values
    t = values.type
    if not _is_numeric(t):
        raise ColumnTypeError(f"list column: expected numbers inside the list, got {t}")
    flat = _float_numpy(values, "list values")
    if flat.size != n * k:
        raise ListLengthError(f"list column holds {flat.size} values for {n} rows of {k} classes")
    m = flat.reshape(n, k)
    if k <= 64:
        # Row reductions over a short contiguous axis are slow in numpy (one tiny loop per
        # row); one transposing copy makes every later sum / max / argmax vectorise.
        return np.ascontiguousarray(m.T).T
    return m


# -- detection -------------------------------------------------------------------------


#: Sample of label values, by column (distinct values of the first rows), used to detect
#: prediction columns named after the classes.
LabelSample = Callable[[str], Sequence[str]]


#: Rows read to sample a label column's values.
LABEL_SAMPLE_ROWS = 65_536


def label_sampler(head: Callable[[int, Sequence[str], Sequence[str]], pa.Table]) -> LabelSample:
    """A :data:`LabelSample` over ``head(n, columns, key_columns)`` (e.g.
    :meth:`evalkit.io.Source.head`): the distinct non-null values of a column's first rows
    (a label column, read as a key, as the run reads it), read once per column. Its
    ``categories(column)`` is the order the column declares (:func:`declared_categories` of
    its first rows read as a dictionary, when every file wrote it as one), or None."""
    return _Sampler(head)


class _Sampler:
    """:func:`label_sampler`: a :data:`LabelSample` that also knows declared categories."""

    def __init__(self, head: Callable[[int, Sequence[str], Sequence[str]], pa.Table]) -> None:
        self._head = head
        self._values: dict[str, list[str]] = {}
        self._categories: dict[str, tuple[str, ...] | None] = {}

    def __call__(self, column: str) -> list[str]:
        if column not in self._values:
            col = self._head(LABEL_SAMPLE_ROWS, [column], [column]).column(0)
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)  # type: ignore[attr-defined]
            self._values[column] = [v for v in pc.unique(col.drop_null()).to_pylist()][:10_000]
        return self._values[column]

    def categories(self, column: str) -> tuple[str, ...] | None:
        """The class order the column declares (:func:`declared_categories`), read once."""
        if column not in self._categories:
            self._categories[column] = self._read_categories(column)
        return self._categories[column]

    def _read_categories(self, column: str) -> tuple[str, ...] | None:
        from .io import Source

        source = getattr(self._head, "__self__", None)
        if not isinstance(source, Source):  # a table in memory (a joined labels input): as it is
            table = self._head(LABEL_SAMPLE_ROWS, [column], [column])
            return declared_categories(table.column(0), table.schema.field(0))
        # Source.head gives text; a Parquet dictionary column is read as one, and it declares
        # an order only where every file wrote it as one (a column of plain text read as a
        # dictionary lists its values in the order they occur).
        for part in source.parts() if source.files else ():
            arrow = part.metadata.schema.to_arrow_schema() if part.metadata is not None else None
            if arrow is None or arrow.get_field_index(column) < 0:
                return None
            f = arrow.field(column)
            if not pa.types.is_dictionary(f.type) or not declares_order(f):
                return None
        batches = source.batches([column], batch_size=LABEL_SAMPLE_ROWS, dictionary_columns=[column])
        with contextlib.closing(batches):  # type: ignore[arg-type]
            for _, batch in batches:
                if batch.num_rows:
                    return declared_categories(batch.column(0), batch.schema.field(0))
        return None


def declared_categories(col: pa.ChunkedArray | pa.Array, field: pa.Field | None = None) -> tuple[str, ...] | None:
    """The categories a label column declares, in their declared order: the dictionary of an
    Arrow dictionary column of text, which is a pandas ``Categorical``'s ``categories`` (used or
    not), a polars ``Enum``'s values, a ``pa.DictionaryArray``'s dictionary. None when the
    column is not one, when its chunks declare different dictionaries (no one order), or for a
    polars ``Categorical`` (``field`` metadata ``_PL_CATEGORICAL*``: its order is the order of
    first appearance in polars' string cache, declared by no one)."""
    t = col.type
    if not (pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type)  # type: ignore[attr-defined]
                                           or pa.types.is_large_string(t.value_type))):  # type: ignore[attr-defined]
        return None
    if not declares_order(field):
        return None
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    dictionaries = {tuple(c.dictionary.to_pylist()) for c in chunks}  # type: ignore[attr-defined]
    if len(dictionaries) != 1:
        return None
    (order,) = dictionaries
    if any(v is None for v in order) or len(set(order)) != len(order):
        return None
    return tuple(str(v) for v in order)


@dataclass(frozen=True)
class LabelCheck:
    """What a run will do with the label values of the first rows (see :func:`check_label_sample`)."""

    problems: tuple[str, ...] = ()
    """One message per reason the run refuses sampled values (settings named by
    :func:`~evalkit.errors.option`)."""
    classes: tuple[str, ...] | None = None
    """Class names that would map the labels (:meth:`Layout.named_classes`), when they fix it."""
    all_refused: bool = False
    """No sampled value is usable: skipping invalid rows would leave none."""
    sentinel: int | None = None
    """The one negative whole number among the refused values (an ignore label such as -100,
    :func:`sentinel_label`); None when the values are a class coding."""
    coding: tuple[str, ...] | None = None
    """The label values, in class-index order, when they are a class coding (:func:`class_coding`:
    -1/1, -1/0/1, 1..K): every value is a class, none may be left out."""


def check_label_sample(layout: Layout, label_sample: LabelSample, label_type: pa.DataType,
                       ignore_label: object = None) -> LabelCheck:
    """Run the distinct label values of the first rows through the layout's own label mapping
    (:meth:`Layout.labels`, as every batch of a run is), so that ``inspect`` says what
    ``evaluate`` will do: which values it refuses (unknown class names, indices out of range,
    fractional values) and the class names that fix string labels against numbered classes.
    ``ignore_label`` values are left out, as a run leaves them out.
    """
    if layout.label_kind not in ("index", "name"):
        return LabelCheck()
    column = layout.label_columns[0]
    values = list(label_sample(column))
    t = _value_type(label_type)
    if ignore_label is not None:
        values = [v for v in values if not _same_label(v, ignore_label)]
    try:
        arr = pa.array(values, type=t)
    except (pa.ArrowException, TypeError, ValueError):
        return LabelCheck()
    _, _, problems = layout.labels(pa.record_batch([arr], names=[column]))
    messages = []
    for p in problems:
        shown = ", ".join(repr(v) for v in np.asarray(values, dtype=object)[p.mask][:5])
        messages.append(f"column {column}: {p.what}: {int(p.mask.sum())} of {len(values)} distinct "
                        f"value(s) in the first {LABEL_SAMPLE_ROWS:,} rows, e.g. {shown}")
    unknown = any(p.reason == "unknown_label" for p in problems)
    refused = np.zeros(len(values), dtype=bool)
    for p in problems:
        refused |= p.mask
    whole = [int(float(v)) for v in np.asarray(values, dtype=object)[refused] if _negative_whole(v)]
    coding = (class_coding(layout, values)
              if any(p.reason == "label_out_of_range" for p in problems) else None)
    return LabelCheck(tuple(messages), layout.named_classes(values) if unknown else None,
                      bool(problems) and bool(refused.all()),
                      None if coding is not None else sentinel_label(np.array(whole, dtype=np.int64)),
                      coding)


def _negative_whole(value: object) -> bool:
    """Whether a label value (number or text) is a negative whole number in int64:
    ``-100``, ``-1.0``, ``"-1"``."""
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return -(2.0**62) < f < 0 and f == int(f)


def _same_label(value: object, ignore: object) -> bool:
    """Whether a label value is the ignored label (numbers by value: -100 == -100.0)."""
    if isinstance(value, str):
        return value == str(ignore)
    try:
        return float(value) == float(ignore)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


@dataclass
class LayoutSpec:
    """What the user declared (any field may be None: then it is detected)."""

    predictions: Sequence[str] | None = None
    prefix: str | None = None
    logits: bool | None = None
    label: str | None = None
    targets: Sequence[str] | None = None
    target_prefix: str | None = None
    classes: Sequence[str] | None = None
    keys: Sequence[str] | None = None
    weight: str | None = None


def _whole_number_labels(col: pa.Array, problems: list[Problem]
                         ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None,
                                    np.ndarray | None]:
    """A numeric / boolean label column as int64 (nulls as 0), with the values to show in
    messages (None: the int64 values), the fractional-value mask (float / decimal labels,
    also added to ``problems``) and the beyond-int64 mask (None when impossible)."""
    t = col.type
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        kind = "float" if pa.types.is_floating(t) else "decimal"
        num = col if kind == "float" else col.cast(pa.float64())
        f = num.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        frac = ~np.isfinite(f) | (f != np.floor(np.where(np.isfinite(f), f, 0)))
        if frac.any():
            problems.append(Problem("fractional_label", LabelError,
                                    f"{kind} label is not a whole number", frac, f))
        # Whole values beyond int64 would wrap in the cast: flag them as out of range.
        huge = ~frac & (np.abs(f) >= 2.0**62)
        return np.where(frac | huge, 0, f).astype(np.int64), f, frac, huge
    if pa.types.is_unsigned_integer(t) and t.bit_width == 64:  # type: ignore[attr-defined]
        u = col.fill_null(0).to_numpy(zero_copy_only=False)
        huge = u >= np.uint64(2**62)
        return np.where(huge, 0, u).astype(np.int64), u, None, huge
    if pa.types.is_boolean(t):
        return col.fill_null(False).to_numpy(zero_copy_only=False).astype(np.int64), None, None, None
    # No nulls (the usual case): no fill_null copy of the column.
    filled = col.fill_null(0) if col.null_count else col
    return filled.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), None, None, None


def detect_layout(
    schema: pa.Schema,
    spec: LayoutSpec | None = None,
    *,
    label_schema: pa.Schema | None = None,
    source: str = "input",
    first_batch: pa.RecordBatch | None = None,
    label_sample: LabelSample | None = None,
) -> Layout:
    """Resolve a :class:`Layout` from a schema and what the user declared.

    ``label_schema`` is the schema of a separate labels input, if any (label columns are then
    looked up there). ``first_batch`` lets variable-length list columns reveal K.
    ``label_sample(column)`` gives the distinct values of the first rows of a label column:
    it lets float columns named after the label values (``setosa``, ``versicolor``, ...) be
    found as the prediction columns, and names the positive class of a single ``p_benign``.

    Raises :class:`~evalkit.errors.LayoutError`, :class:`~evalkit.errors.MissingColumnError`,
    :class:`~evalkit.errors.ColumnTypeError` or :class:`~evalkit.errors.ListLengthError`
    when the layout cannot be detected or contradicts what was declared.
    """
    spec = spec or LayoutSpec()
    names = list(schema.names)
    label_names = list(label_schema.names) if label_schema is not None else names
    notes: list[str] = []
    lschema = label_schema if label_schema is not None else schema
    label_guess = spec.label or next((c for c in LABEL_NAMES if c in label_names), None)
    if label_guess is None and not (spec.targets or spec.target_prefix or spec.predictions or spec.prefix):
        label_guess = _label_naming_columns(schema, lschema, label_sample)
        if label_guess is not None:
            spec = replace(spec, label=label_guess)
            notes.append(f"label column {label_guess!r} detected: its values name the prediction columns")

    def label_values() -> list[str]:
        if (label_guess is None or label_sample is None or spec.targets or spec.target_prefix
                or label_guess not in lschema.names):
            return []
        t = _value_type(lschema.field(label_guess).type)
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or _is_numeric(t)
                or pa.types.is_boolean(t)):
            return []
        return [_class_text(v) for v in label_sample(label_guess)]

    kind, pred_cols, from_logits, classes = _detect_predictions(
        schema, spec, source, first_batch, notes, label_values=label_values,
        reserved={label_guess, *(spec.keys or ()), spec.weight} - {None},  # type: ignore[arg-type]
        column_values=label_sample)
    if spec.targets or spec.target_prefix:
        label_kind, label_cols = _declared_targets(spec, lschema, label_names, classes, source)
    else:
        label_kind, label_cols = _detect_label(spec, lschema, label_names, classes, source, notes)
    layout = _finish(schema, spec, kind, pred_cols, from_logits, classes, label_kind, label_cols,
                     notes, source, label_names)
    layout = _declared_class_order(layout, spec, label_sample)
    _check_bool_labels(layout, lschema, source)
    if layout.label_kind == "name" and layout.numbers_its_classes and label_sample is not None:
        # String labels against numbered classes: keep the sample, whose values name them.
        layout = replace(layout, label_sample=tuple(str(v) for v in label_sample(label_cols[0])))
    return layout


def _declared_class_order(layout: Layout, spec: LayoutSpec, label_sample: LabelSample | None) -> Layout:
    """The class order when the predictions are positional and the label is categorical: a
    list column (``probs[i]``) or a single P(class 1) column only number their classes, and a
    label column that declares its categories in an order (pandas ``Categorical``, polars
    ``Enum``, an Arrow dictionary: :func:`declared_categories`) names them in that order, class
    ``i`` being the ``i``-th category. The rule, in the one place the class order is decided:

    1. ``classes`` (``--classes``) given: that order, always;
    2. else, positional predictions and a label declaring exactly K categories (used or not),
       none of them already a class number: the declared order (noted in the layout);
    3. else: as before (numbered classes; string labels then need ``classes``).

    A later part of the input whose dictionary orders these classes differently is refused
    (:meth:`Layout.labels`): its positional probabilities cannot follow both orders."""
    if (spec.classes or label_sample is None or layout.label_kind != "name"
            or layout.kind not in ("list", "binary")
            or layout.classes != tuple(str(i) for i in range(layout.n_classes))):
        return layout
    categories = getattr(label_sample, "categories", None)
    order = categories(layout.label_columns[0]) if categories is not None else None
    if order is None or set(order) & set(layout.classes):
        return layout
    if len(order) != layout.n_classes:
        return replace(layout, declared_categories=order)
    what = f"column {layout.pred_columns[0]!r}" if layout.kind == "list" else f"P(class 1) = P({order[1]!r})"
    note = (f"class order: the categories label column {layout.label_columns[0]!r} declares, in its order "
            f"({_short_list(order)}), name the positional predictions ({what}); the classes setting overrides it")
    return replace(layout, classes=order, notes=(*layout.notes, note), declared_order=True)


def _label_naming_columns(schema: pa.Schema, lschema: pa.Schema, label_sample: LabelSample | None) -> str | None:
    """The one string column whose sampled values name the prediction columns: all of them
    names of float columns (at least two; predict_proba saved with ``columns=model.classes_``
    next to a label column of any name, ``species``) or classes of prefixed ones (``setosa``
    next to ``prob_setosa``, ``prob_versicolor``, ...), or, next to a single prefixed binary
    column (``p_benign``), two values of which one is that column's class (``diagnosis``
    holding ``benign`` / ``malignant``)."""
    if label_sample is None:
        return None
    floats = {f.name for f in schema if _is_float(_value_type(f.type))}
    suffixes = {c[len(p):] for c in floats for p in PROB_PREFIXES + LOGIT_PREFIXES if c.startswith(p) and c[len(p):]}
    found = []
    for f in lschema:
        t = _value_type(f.type)
        if f.name in floats or not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            continue
        values = {str(v) for v in label_sample(f.name)}
        if (len(values) >= 2 and (len(floats) >= 2 and values <= floats
                                  or len(suffixes) >= 2 and values <= suffixes)) or (
                len(suffixes) == 1 and len(values) == 2 and values & suffixes):
            found.append(f.name)
    return found[0] if len(found) == 1 else None


def _declared_targets(spec: LayoutSpec, lschema: pa.Schema, label_names: list[str],
                      classes: tuple[str, ...], source: str) -> tuple[LabelKind, tuple[str, ...]]:
    """One-hot / soft target columns named by ``targets`` or ``target_prefix``: numeric, one
    per class."""
    cols = list(spec.targets or [])
    if spec.target_prefix:
        cols = [c for c in label_names if c.startswith(spec.target_prefix)]
        if not cols:
            raise LayoutError(f"{source}: no column starts with target prefix {spec.target_prefix!r}")
    for c in cols:
        if c not in label_names:
            raise missing_column(c, "target", label_names, source)
        ct = _value_type(lschema.field(c).type)
        if not (_is_numeric(ct) or pa.types.is_boolean(ct)):
            raise ColumnTypeError(
                f"{source}: target column {c!r} has type {ct}; one-hot / soft targets must be numeric"
            )
    if len(cols) != len(classes):
        raise LayoutError(
            f"{source}: {len(cols)} target columns but {len(classes)} prediction classes"
        )
    names = ([c[len(spec.target_prefix):] for c in cols] if spec.target_prefix
             else list(_common_suffix_names(cols)))
    return "onehot", _targets_by_class(cols, names, classes, source, declared=not spec.target_prefix)


def _targets_by_class(cols: Sequence[str], names: Sequence[str], classes: tuple[str, ...], source: str,
                      declared: bool = False) -> tuple[str, ...]:
    """One-hot / soft target columns in class order. ``names`` are the class names the
    columns carry (their suffixes: ``target_cat`` is class ``cat``), paired with the classes
    by name, as a prediction column ``prob_cat`` is: ``target_dog, target_cat`` next to
    ``prob_cat, prob_dog`` are taken as ``target_cat, target_dog``. Names that name some
    classes but not all, or (for columns found by prefix) none of the classes the
    predictions name, are refused naming both; columns that carry no class name are taken
    in order when the classes are only numbered (a list column) or the columns were listed."""
    if set(names) == set(classes) and len(set(names)) == len(names):
        by_name = dict(zip(names, cols, strict=True))
        return tuple(by_name[c] for c in classes)
    numbered = classes == tuple(str(i) for i in range(len(classes)))
    if not set(names) & set(classes):
        if declared or (numbered and list(names) == sorted(names)):
            return tuple(cols)
        if numbered:  # target_c, target_a, target_b next to probs[0..2]: which is probs[0]?
            raise LayoutError(
                f"{source}: target columns {_short_list(list(cols))} name classes that the predictions only "
                f"number (0..{len(classes) - 1}), and not in sorted order, so their order cannot be trusted to "
                f"be the class order: name the classes in class-index order with "
                f"{option('classes', sorted(names))} (each target column is then paired by its name), or list "
                f"the target columns in class order with {option('targets', meta='COL,...')}")
    missing = [c for c in classes if c not in set(names)]
    raise LayoutError(
        f"{source}: target columns {_short_list(list(cols))} name classes {_short_list(list(names))}, but the "
        f"prediction classes are {_short_list(list(classes))} (class {missing[0]!r} has no target column): a "
        f"target column is paired with the class its name carries; name the target columns after the "
        f"prediction classes, or list them in class order with {option('targets', meta='COL,...')}")


def _detect_label(spec: LayoutSpec, lschema: pa.Schema, label_names: list[str],
                  classes: tuple[str, ...], source: str,
                  notes: list[str]) -> tuple[LabelKind, tuple[str, ...]]:
    """The label column (declared, or a conventional name, or one-hot columns found by
    prefix) and its kind from its type: soft (list), name (string), index (number)."""
    label = spec.label
    if label is None:
        label = next((c for c in LABEL_NAMES if c in label_names), None)
        if label is None:
            tcols = _prefixed(lschema, TARGET_PREFIXES, _is_numeric)
            if tcols and len(tcols[1]) == len(classes):
                notes.append(f"one-hot targets detected by prefix {tcols[0]!r}")
                prefix, found = tcols
                return "onehot", _targets_by_class(found, [c[len(prefix):] for c in found], classes, source)
            raise LayoutError(
                f"{source}: cannot find the label column (looked for {', '.join(LABEL_NAMES)}); "
                f"name it with {option('label', meta='COL')}, or give a separate labels input with "
                f"{option('labels', meta='FILE')} {option('on', meta='KEY')}"
            )
    if label not in label_names:
        raise missing_column(label, "label", label_names, source)
    lt = _value_type(lschema.field(label).type)
    label_kind: LabelKind
    if _is_list(lt):
        label_kind = "soft"
        inner = lt.value_type  # type: ignore[attr-defined]
        if not _is_numeric(inner):
            raise ColumnTypeError(
                f"{source}: label column {label!r} is a list of {inner}; soft targets must be numbers"
            )
    elif pa.types.is_string(lt) or pa.types.is_large_string(lt):
        label_kind = "name"
    elif _is_numeric(lt) or pa.types.is_boolean(lt):
        label_kind = "index"
    else:
        raise ColumnTypeError(f"{source}: label column {label!r} has unsupported type {lt}")
    if label_kind == "soft" and pa.types.is_fixed_size_list(lt) and lt.list_size != len(classes):  # type: ignore[attr-defined]
        raise ListLengthError(
            f"{source}: label column {label!r} holds {lt.list_size} targets but there are "  # type: ignore[attr-defined]
            f"{len(classes)} classes"
        )
    return label_kind, (label,)


def _finish(
    schema: pa.Schema,
    spec: LayoutSpec,
    kind: PredKind,
    pred_cols: tuple[str, ...],
    from_logits: bool,
    classes: tuple[str, ...],
    label_kind: LabelKind,
    label_cols: tuple[str, ...],
    notes: list[str],
    source: str,
    label_names: list[str],
) -> Layout:
    names = list(schema.names)
    if spec.keys is not None:
        keys = tuple(spec.keys)
        for k in keys:
            if k not in names:
                raise missing_column(k, "key", names, source)
    else:
        # A detected key must be usable as one (a list column named `id` is not).
        keys = tuple(c for c in KEY_NAMES if c in names and is_key_type(schema.field(c).type))[:1]
    if spec.weight is not None:
        if spec.weight not in names:
            raise missing_column(spec.weight, "weight", names, source)
        # A boolean weight is a mask: read as 0 / 1 (_float_numpy casts it).
        wt = schema.field(spec.weight).type
        if not (_is_numeric(wt) or pa.types.is_boolean(wt)):
            raise ColumnTypeError(f"{source}: weight column {spec.weight!r} must be numeric or boolean (a mask: 0 / 1)")
    layout = Layout(kind, pred_cols, from_logits, classes, label_kind, label_cols, keys, spec.weight,
                    tuple(notes))
    if layout.kind == "binary" and len(classes) != 2:
        layout = replace(layout, classes=("0", "1"))
    return layout


def _prefixed(schema: pa.Schema, prefixes: Sequence[str], ok) -> tuple[str, list[str]] | None:  # type: ignore[no-untyped-def]
    for prefix in prefixes:
        cols = [f.name for f in schema if f.name.startswith(prefix) and ok(_value_type(f.type))]
        if cols:
            return prefix, cols
    return None


def _class_suffix(suffix: str) -> str:
    """The class a column's suffix names: a whole number written as a float (``prob_1.0``,
    ``prob_-1.0``: scikit-learn's ``f"prob_{c}"`` over a float target's ``classes_``) names
    the class of that integer, as a label ``1.0`` does (:func:`_class_text`); else the suffix."""
    if re.fullmatch(r"[-+]?\d+\.0*", suffix):
        return str(int(float(suffix)))
    return suffix


def _order_by_int_suffix(cols: list[str], prefix: str) -> list[str]:
    suffixes = [_class_suffix(c[len(prefix):]) for c in cols]
    if all(re.fullmatch(r"-?\d+", s) for s in suffixes) and len(set(suffixes)) == len(suffixes):
        return [c for _, c in sorted(zip((int(s) for s in suffixes), cols, strict=True))]
    return cols


def _class_text(value: object) -> str:
    """A label value as a class name: whole floats (Spark writes labels as 0.0, 1.0) as ints."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def _is_spark_vector(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} >= SPARK_VECTOR_FIELDS  # type: ignore[attr-defined]


def _spark_vector_error(source: str, col: str) -> ColumnTypeError:
    return ColumnTypeError(
        f"{source}: column {col!r} is an unconverted Spark ML vector (a struct of type, size, "
        f"indices, values), which holds no per-class values evalkit can read. Convert it before "
        f"writing: df.withColumn({col!r}, pyspark.ml.functions.vector_to_array({col!r}))"
    )


Predictions = tuple[PredKind, tuple[str, ...], bool, tuple[str, ...]]
"""kind, prediction columns, from_logits, class names."""


@dataclass
class _Detect:
    """What detecting the prediction columns works from."""

    schema: pa.Schema
    spec: LayoutSpec
    source: str
    first_batch: pa.RecordBatch | None
    notes: list[str]
    label_values: Callable[[], list[str]]
    reserved: set[str] | frozenset[str]
    column_values: LabelSample | None = None  # distinct values of a column's first rows

    @property
    def names(self) -> list[str]:
        return list(self.schema.names)

    @property
    def classes(self) -> tuple[str, ...] | None:
        """Class names declared by the user, if any (each once)."""
        if not self.spec.classes:
            return None
        declared = tuple(str(c) for c in self.spec.classes)
        twice = next((c for i, c in enumerate(declared) if c in declared[:i]), None)
        if twice is not None:
            raise ClassesError(f"{self.source}: {option('classes')} names class {twice!r} twice "
                               f"({_short_list(declared)}); name each class once")
        return declared

    def logits(self, detected: bool) -> bool:
        return detected if self.spec.logits is None else bool(self.spec.logits)

    def type_of(self, col: str) -> pa.DataType:
        return _value_type(self.schema.field(col).type)

    def is_float(self, col: str) -> bool:
        """A float column free for predictions (not the label, a key or the weight)."""
        return col not in self.reserved and _is_float(self.type_of(col))

    def check_type(self, col: str) -> pa.DataType:
        """The type of a prediction column, which must hold numbers or lists of numbers."""
        if col not in self.names:
            raise missing_column(col, "prediction", self.names, self.source)
        t = self.type_of(col)
        if _is_spark_vector(t):
            raise _spark_vector_error(self.source, col)
        if _is_list(t):
            inner = t.value_type  # type: ignore[attr-defined]
            if not _is_numeric(inner):
                raise ColumnTypeError(f"{self.source}: prediction column {col!r} is a list of {inner}, not numbers")
        elif not _is_numeric(t):
            raise ColumnTypeError(
                f"{self.source}: prediction column {col!r} has type {t}; probabilities must be numeric"
            )
        return t

    def list_layout(self, col: str, logits: bool) -> Predictions:
        if _list_size(self.schema, col, self.first_batch) == 1 and (self.classes is None or len(self.classes) == 2):
            # One value per row is a binary model's one output (Keras Dense(1, sigmoid)):
            # P(class 1) or its logit, not a model of one class (every label 1 refused).
            what = "the logit of class 1" if logits else "P(class 1)"
            self.notes.append(f"binary layout: one-value list {col!r} read as {what}")
            if self.classes is not None:
                return self.binary_layout(col, "", logits)
            return "binary", (col,), logits, ("0", "1")
        return "list", (col,), logits, _list_classes(self.schema, col, self.classes, self.first_batch, self.source)

    def binary_layout(self, col: str, prefix: str, logits: bool) -> Predictions:
        if self.classes is None:
            return "binary", (col,), logits, _binary_classes(col, prefix, self.label_values, self.notes)
        if len(self.classes) != 2:
            raise ClassesError(
                f"{self.source}: 1 prediction column ({col!r}, binary: P(class 1)) but {len(self.classes)} "
                f"classes ({_short_list(self.classes)}); a binary column needs 2 classes, the negative one "
                f"first: {option('classes', meta='neg,pos')}")
        # the class a column's name carries after a known prefix, found by name too (prob_1,
        # p_1 among the conventional binary names): prob_1 is P('1') as prob_0 is P('0')
        suffix = col[len(prefix):] if prefix else next(
            (col[len(p):] for p in (*PROB_PREFIXES, *LOGIT_PREFIXES) if col.startswith(p)), "")
        if suffix and suffix == self.classes[0]:
            # p_benign is P(benign): the classes setting cannot make it P(malignant).
            raise ClassesError(
                f"{self.source}: prediction column {col!r} is P({suffix!r}), the positive class, but "
                f"{option('classes')} ({_short_list(self.classes)}) names {suffix!r} first (the negative class); "
                f"name the positive class last: {option('classes', [self.classes[1], self.classes[0]])}")
        return "binary", (col,), logits, self.classes

    def wide_classes(self, cols: Sequence[str], names: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The wide prediction columns and their classes. ``names`` are the class names the
        columns carry (their suffixes). Without declared classes, those. With them (``classes``,
        ``--classes``), one rule: a column whose name carries a class name is that class, so
        the declared order reorders the columns by name (the same numbers as without it);
        columns whose names carry none of the declared names are taken in order; a declared
        name no column carries next to a column carrying a name not declared, or a count that
        differs, is refused (:class:`~evalkit.errors.ClassesError`): never a silent relabelling."""
        declared = self.classes
        if declared is None:
            return tuple(cols), tuple(names)
        if len(declared) != len(cols):
            raise ClassesError(
                f"{self.source}: {len(cols)} prediction columns ({_short_list(cols)}) but {len(declared)} "
                f"classes ({_short_list(declared)}); name one class per prediction column")
        by_name = dict(zip(names, cols, strict=True))
        if len(by_name) != len(cols) or not set(names) & set(declared):
            return tuple(cols), declared  # the names carry no declared class: by position
        if set(names) == set(declared):
            ordered = tuple(by_name[c] for c in declared)
            if ordered != tuple(cols):
                self.notes.append(f"declared classes: prediction columns taken by the class names they carry, "
                                  f"in the declared order ({_short_list(ordered)})")
            return ordered, declared
        missing = [c for c in declared if c not in by_name]
        extra = [n for n in names if n not in set(declared)]
        raise ClassesError(
            f"{self.source}: {option('classes')} names class {missing[0]!r}, which no prediction column "
            f"carries, while column {by_name[extra[0]]!r} is class {extra[0]!r}, which it does not name "
            f"(columns {_short_list(cols)}; classes {_short_list(declared)}); a column named after a class "
            f"is that class: name the classes the columns carry, in any order, or rename the columns")


def _detect_predictions(
    schema: pa.Schema,
    spec: LayoutSpec,
    source: str,
    first_batch: pa.RecordBatch | None,
    notes: list[str],
    *,
    label_values: Callable[[], list[str]] = list,
    reserved: set[str] | frozenset[str] = frozenset(),
    column_values: LabelSample | None = None,
) -> Predictions:
    d = _Detect(schema, spec, source, first_batch, notes, label_values, reserved, column_values)
    if spec.predictions:
        return _declared_columns(d, list(spec.predictions))
    if spec.prefix:
        return _declared_prefix(d, spec.prefix)
    return (_by_prefix(d) or _by_list_name(d) or _by_class_names(d) or _by_binary_name(d)
            or _by_single_prefixed(d) or _undetected(d))


def _declared_columns(d: _Detect, cols: list[str]) -> Predictions:
    types = [d.check_type(c) for c in cols]
    logits = bool(d.spec.logits)
    if len(cols) == 1:
        return d.list_layout(cols[0], logits) if _is_list(types[0]) else d.binary_layout(cols[0], "", logits)
    if any(_is_list(t) for t in types):
        raise LayoutError(f"{d.source}: give either one list column or several class columns, not both")
    ordered, classes = d.wide_classes(cols, _common_suffix_names(cols))
    return "wide", ordered, logits, classes


def _declared_prefix(d: _Detect, prefix: str) -> Predictions:
    cols = [c for c in d.names if c.startswith(prefix)]
    if not cols:
        raise LayoutError(
            f"{d.source}: no column starts with prefix {prefix!r}; columns are: {quoted_names(d.names)}"
        )
    for c in cols:
        d.check_type(c)
    cols = _order_by_int_suffix(cols, prefix)
    logits = bool(d.spec.logits) or prefix in LOGIT_PREFIXES
    if len(cols) == 1:
        return d.binary_layout(cols[0], prefix, logits)
    ordered, classes = d.wide_classes(cols, [_class_suffix(c[len(prefix):]) for c in cols])
    return "wide", ordered, logits, classes


def _by_prefix(d: _Detect) -> Predictions | None:
    """Wide columns by a conventional prefix, logits first (``logit_`` is never read as a prob)."""
    for prefixes, is_logits in ((LOGIT_PREFIXES, True), (PROB_PREFIXES, False)):
        found = _prefixed(d.schema, prefixes, _is_numeric)
        if found and len(found[1]) >= 2:
            prefix, cols = found
            _reject_non_numeric(d.schema, prefix, d.source, d, [_class_suffix(c[len(prefix):]) for c in cols])
            cols = _order_by_int_suffix(cols, prefix)
            d.notes.append(f"detected wide columns by prefix {prefix!r}")
            ordered, classes = d.wide_classes(cols, [_class_suffix(c[len(prefix):]) for c in cols])
            return "wide", ordered, d.logits(is_logits), classes
    return None


def _by_list_name(d: _Detect) -> Predictions | None:
    """A list column by a conventional name (``probs``, Spark ML's ``probability``...)."""
    for candidates, is_logits in ((LIST_LOGIT_NAMES, True), (LIST_PROB_NAMES, False)):
        for c in candidates:
            if c in d.names and _is_list(d.type_of(c)):
                d.check_type(c)
                return d.list_layout(c, d.logits(is_logits))
    for c in LIST_PROB_NAMES + LIST_LOGIT_NAMES:
        if c in d.names and _is_spark_vector(d.type_of(c)):
            raise _spark_vector_error(d.source, c)
    return None


def _by_class_names(d: _Detect) -> Predictions | None:
    """Float columns named after the label values: predict_proba saved with
    ``columns=model.classes_``. Every sampled label value must have its column."""
    values = set(d.label_values())
    cols = [c for c in d.names if c in values and d.is_float(c)]
    if len(cols) >= 2 and values <= set(cols):
        d.notes.append("detected one column per class, named after the label values")
        ordered, classes = d.wide_classes(cols, cols)
        return "wide", ordered, bool(d.spec.logits), classes
    return None


def _by_binary_name(d: _Detect) -> Predictions | None:
    """One float column by a conventional name: P(class 1) (``prob``, ``pred``...) or its logit."""
    for names, is_logits in ((BINARY_NAMES, False), (BINARY_LOGIT_NAMES, True)):
        for c in names:
            if c in d.names and d.is_float(c):
                what = "the logit of class 1" if is_logits else "P(class 1)"
                d.notes.append(f"binary layout: {c!r} read as {what}")
                if d.classes is not None:
                    return d.binary_layout(c, "", d.logits(is_logits))
                return "binary", (c,), d.logits(is_logits), ("0", "1")
    return None


def _by_single_prefixed(d: _Detect) -> Predictions | None:
    """One prefixed float column (``p_benign``, ``logit_spam``): binary; the suffix names the
    positive class."""
    for prefixes, is_logits in ((LOGIT_PREFIXES, True), (PROB_PREFIXES, False)):
        found = _prefixed(d.schema, prefixes, _is_float)
        if found and len(found[1]) == 1 and found[1][0] not in d.reserved:
            prefix, (col,) = found
            _reject_non_numeric(d.schema, prefix, d.source)  # prob_a stored as text next to prob_b
            return d.binary_layout(col, prefix, d.logits(is_logits))
    return None


def _undetected(d: _Detect) -> Predictions:
    """Raise the most useful error when nothing was found."""
    names = d.names
    for prefix in LOGIT_PREFIXES + PROB_PREFIXES:
        # Class columns that are all of the wrong type (e.g. probabilities stored as strings).
        if sum(1 for n in names if n.startswith(prefix)) >= 2:
            _reject_non_numeric(d.schema, prefix, d.source)
    for f in d.schema:
        if _is_spark_vector(_value_type(f.type)):
            raise _spark_vector_error(d.source, f.name)
    values = d.label_values()
    matched = [c for c in names if c in set(values) and d.is_float(c)]
    hint = ""
    if matched:
        missing = sorted(set(values) - set(matched))
        hint = (f" Float columns {', '.join(matched)} are named after label values, but label value(s) "
                f"{', '.join(missing[:5])} have no column.")
    raise LayoutError(
        f"{d.source}: cannot detect the prediction columns.{hint} Name them with "
        f"{option('predictions', meta='COL')} (one list or binary column, or several class columns) or "
        f"{option('prefix', meta='PREFIX')}; looked for prefixes {', '.join(PROB_PREFIXES + LOGIT_PREFIXES)}, "
        f"list columns {', '.join(LIST_PROB_NAMES + LIST_LOGIT_NAMES)}, binary columns "
        f"{', '.join(BINARY_NAMES + BINARY_LOGIT_NAMES)} and float columns named after the label values. "
        f"Columns are: {quoted_names(names)}"
    )


def _binary_classes(col: str, prefix: str, label_values: Callable[[], list[str]], notes: list[str]) -> tuple[str, ...]:
    """Class names of a single P(positive) column: ``p_benign`` against labels {malignant, benign}
    gives (malignant, benign); ``p_0`` gives (1, 0); otherwise the column is P(class 1)."""
    suffix = col[len(prefix):] if prefix else ""
    values = label_values() if suffix else []
    if suffix.lower() in ("true", "false"):  # prob_False + boolean labels: P(False)
        other = "False" if suffix.lower() == "true" else "True"
        notes.append(f"binary layout: {col!r} read as P({suffix})")
        return (other, suffix)
    if suffix and suffix in values and len(set(values)) == 2:
        other = next(v for v in sorted(set(values)) if v != suffix)
        notes.append(f"binary layout: {col!r} read as P({suffix})")
        return (other, suffix)
    if suffix == "0":
        notes.append(f"binary layout: {col!r} read as P(class 0)")
        return ("1", "0")
    notes.append(f"binary layout: {col!r} read as P(class 1)")
    return ("0", "1")


def _reject_non_numeric(schema: pa.Schema, prefix: str, source: str, d: _Detect | None = None,
                        classes: Sequence[str] = ()) -> None:
    """Raise ColumnTypeError for a scalar column with a prediction prefix that is not numeric.

    Silently leaving such a column out would drop a class (and give a wrong number). A text
    column whose values in the first rows all name classes of the numeric columns (``pred_label``
    beside ``pred_cat``, ``pred_dog``: the predicted class, common in exports; rt-final9 F10)
    is no probability: left out, with a note.
    """
    for f in schema:
        t = _value_type(f.type)
        if f.name.startswith(prefix) and not _is_numeric(t) and not _is_list(t) \
                and not pa.types.is_struct(t):
            if d is not None and _names_classes(d, f.name, classes):
                d.notes.append(f"column {f.name!r} holds class names (the predicted class), not a "
                               "probability: left out")
                continue
            raise ColumnTypeError(
                f"{source}: prediction column {f.name!r} has type {t}; probabilities must be "
                f"numeric (or name the prediction columns with {option('predictions')} / {option('prefix')})"
            )


def _names_classes(d: _Detect, col: str, classes: Sequence[str]) -> bool:
    """Whether text column ``col`` holds, in the first rows, only names of ``classes``."""
    if d.column_values is None or not classes or not is_string_like(_value_type(d.schema.field(col).type)):
        return False
    try:
        values = {v for v in d.column_values(col) if v is not None}
    except Exception:  # noqa: BLE001 - any reading problem: not known to name classes
        return False  # a column of the predictions when the sample reads a labels input
    return bool(values) and values <= set(classes)


def _common_suffix_names(cols: Sequence[str]) -> tuple[str, ...]:
    """Class names from explicit wide columns: strip their common prefix when it ends in '_',
    else each column's known prefix (``prob_``, ``score_``, ...) when every column has one."""
    import os

    prefix = os.path.commonprefix(list(cols))
    cut = prefix.rfind("_") + 1 if "_" in prefix else 0
    names = tuple(_class_suffix(c[cut:]) for c in cols)
    if not cut:  # no shared prefix: each column's own known prefix (prob_eel, score_dog)
        known = [next((p for p in PROB_PREFIXES + LOGIT_PREFIXES if c.startswith(p) and c[len(p):]), None)
                 for c in cols]
        if all(known):
            names = tuple(_class_suffix(c[len(p):]) for c, p in zip(cols, known, strict=True))  # type: ignore[arg-type]
    if all(names) and len(set(names)) == len(names):
        return names
    return tuple(cols)


def _list_size(schema: pa.Schema, col: str, first_batch: pa.RecordBatch | None) -> int | None:
    """The number of values per row of list column ``col``: its fixed size, else the length
    of the first non-null, non-empty row of the first rows; 0 when every non-null row there is
    an empty list (:func:`_empty_lists_error` names them); None when there is none."""
    t = _value_type(schema.field(col).type)
    if pa.types.is_fixed_size_list(t):
        return int(t.list_size)  # type: ignore[attr-defined]
    if first_batch is not None and first_batch.num_rows and col in first_batch.schema.names:
        lengths = pc.list_value_length(first_batch.column(col)).drop_null().to_numpy(zero_copy_only=False)
        if len(lengths):
            filled = lengths[lengths > 0]
            return int(filled[0]) if len(filled) else 0
    return None


def is_empty_fixed_list(t: pa.DataType) -> bool:
    """A fixed-size list of size 0 (no class at all): Arrow cannot read one back from Parquet,
    so it is named by the layout (:func:`_empty_lists_error`) before any read."""
    t = _value_type(t)
    return pa.types.is_fixed_size_list(t) and t.list_size == 0  # type: ignore[attr-defined]


def _empty_lists_error(col: str, role: str, first_batch: pa.RecordBatch | None, source: str) -> ListLengthError:
    """The refusal of a list column whose rows hold no values (0 classes), naming the rows."""
    what = f"{source}: column {col}: empty {role} list (0 classes)"
    if first_batch is None or col not in first_batch.schema.names:  # a fixed-size list of size 0
        return ListLengthError(f"{what}: every row (a fixed-size list of size 0)")
    lengths = pc.list_value_length(first_batch.column(col)).to_numpy(zero_copy_only=False)
    return ListLengthError(f"{what}: {sample_rows(lengths == 0, 0)}")


def _list_classes(
    schema: pa.Schema,
    col: str,
    declared: tuple[str, ...] | None,
    first_batch: pa.RecordBatch | None,
    source: str,
) -> tuple[str, ...]:
    k = _list_size(schema, col, first_batch)
    if k == 0:
        raise _empty_lists_error(col, "prediction", first_batch, source)
    if declared is not None:
        if k is not None and k != len(declared):
            raise ListLengthError(
                f"{source}: column {col!r} holds {k} values per row but {len(declared)} classes were named"
            )
        return declared
    if k is None:
        raise LayoutError(f"{source}: cannot tell the number of classes of list column {col!r}; "
                          f"name them with {option('classes', meta='a,b,c')}")
    return tuple(str(i) for i in range(k))
