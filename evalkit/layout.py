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

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import (
    ColumnTypeError,
    InvalidProbabilityError,
    LabelError,
    LayoutError,
    ListLengthError,
    missing_column,
)
from .validate import Problem

PROB_PREFIXES = ("prob_", "proba_", "probs_", "probability_", "p_", "score_", "pred_")
LOGIT_PREFIXES = ("logit_", "logits_")
TARGET_PREFIXES = ("target_", "onehot_", "true_", "y_true_")
LIST_PROB_NAMES = ("probs", "probabilities", "proba", "prob", "predictions", "scores", "y_prob", "y_pred")
LIST_LOGIT_NAMES = ("logits", "logit")
BINARY_NAMES = ("prob", "probability", "proba", "p1", "score", "y_prob", "y_score", "prob_1", "p_1")
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
            pred = f"wide {what}: {', '.join(self.pred_columns)}"
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
            f"labels: {label}: {', '.join(self.label_columns)}",
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
        p1 = _float_numpy(batch.column(self.pred_columns[0]), self.pred_columns[0]).astype(np.float64)
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
            problems.append(Problem("null_label", LabelError, "null label", null))
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
            codes = pc.index_in(col.dictionary.cast(pa.string()), value_set=class_set).take(col.indices)
        else:
            codes = pc.index_in(col, value_set=class_set)
        y = codes.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        unknown = y < 0
        if null is not None:
            unknown &= ~null
        if unknown.any():
            values = _LazyValues(col)  # only the few rows a message shows
            problems.append(Problem("unknown_label", LabelError,
                                    f"unknown class name (classes are {_short_list(self.classes)})",
                                    unknown, values))
        y[y < 0] = 0
        return y

    def _index_labels(self, col: pa.Array, null: np.ndarray | None,
                      problems: list[Problem]) -> np.ndarray:
        """Class indices of numeric / boolean labels: whole numbers naming a class (by
        position, or by value for integer class names); others are problems."""
        y, raw, frac, huge = _whole_number_labels(col, problems)
        by_value = _int_class_values(self.classes)
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
            problems.append(Problem("label_out_of_range", LabelError,
                                    f"label out of range (classes are {_short_list(self.classes)})",
                                    bad, raw))
        return y


class _LazyValues:
    """Python values of an Arrow array, converted only for the rows a message shows."""

    def __init__(self, arr: pa.Array) -> None:
        self.arr = arr

    def __getitem__(self, i: int) -> object:
        return self.arr[int(i)].as_py()

    def __len__(self) -> int:
        return len(self.arr)


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
        with np.errstate(invalid="ignore"):
            problems.append(Problem("negative_probability", InvalidProbabilityError,
                                    f"negative probabilities in {name}", p1 < 0, p1))
            problems.append(Problem("probability_above_one", InvalidProbabilityError,
                                    f"probabilities greater than 1 in {name}", p1 > 1, p1))
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
    bad = lengths != k
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
    return col.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64, copy=False), None, None, None


def detect_layout(
    schema: pa.Schema,
    spec: LayoutSpec | None = None,
    *,
    label_schema: pa.Schema | None = None,
    source: str = "input",
    first_batch: pa.RecordBatch | None = None,
) -> Layout:
    """Resolve a :class:`Layout` from a schema and what the user declared.

    ``label_schema`` is the schema of a separate labels input, if any (label columns are then
    looked up there). ``first_batch`` lets variable-length list columns reveal K.
    """
    spec = spec or LayoutSpec()
    names = list(schema.names)
    label_names = list(label_schema.names) if label_schema is not None else names
    notes: list[str] = []

    kind, pred_cols, from_logits, classes = _detect_predictions(schema, spec, source, first_batch, notes)
    lschema = label_schema if label_schema is not None else schema
    if spec.targets or spec.target_prefix:
        label_kind, label_cols = _declared_targets(spec, lschema, label_names, classes, source)
    else:
        label_kind, label_cols = _detect_label(spec, lschema, label_names, classes, source, notes)
    return _finish(schema, spec, kind, pred_cols, from_logits, classes, label_kind, label_cols,
                   notes, source, label_names)


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
    return "onehot", tuple(cols)


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
                return "onehot", tuple(tcols[1])
            raise LayoutError(
                f"{source}: cannot find the label column (looked for {', '.join(LABEL_NAMES)}); "
                "name it with --label, or give a separate labels file with --labels FILE --on KEY"
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
        keys = tuple(c for c in KEY_NAMES if c in names)[:1]
    if spec.weight is not None:
        if spec.weight not in names:
            raise missing_column(spec.weight, "weight", names, source)
        if not _is_numeric(schema.field(spec.weight).type):
            raise ColumnTypeError(f"{source}: weight column {spec.weight!r} must be numeric")
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


def _order_by_int_suffix(cols: list[str], prefix: str) -> list[str]:
    suffixes = [c[len(prefix):] for c in cols]
    if all(re.fullmatch(r"-?\d+", s) for s in suffixes):
        return [c for _, c in sorted(zip((int(s) for s in suffixes), cols, strict=True))]
    return cols


def _detect_predictions(
    schema: pa.Schema,
    spec: LayoutSpec,
    source: str,
    first_batch: pa.RecordBatch | None,
    notes: list[str],
) -> tuple[PredKind, tuple[str, ...], bool, tuple[str, ...]]:
    """The prediction columns, their kind, whether they are logits, and the class names:
    declared columns first, then a declared prefix, then the conventional names."""
    if spec.predictions:
        return _declared_predictions(schema, spec, source, first_batch)
    if spec.prefix:
        return _prefixed_predictions(schema, spec, source)
    return _conventional_predictions(schema, spec, source, first_batch, notes)


def _check_pred_type(schema: pa.Schema, col: str, source: str) -> pa.DataType:
    """The value type of prediction column ``col``: numbers, or a list of numbers."""
    names = list(schema.names)
    if col not in names:
        raise missing_column(col, "prediction", names, source)
    t = _value_type(schema.field(col).type)
    if _is_list(t):
        inner = t.value_type  # type: ignore[attr-defined]
        if not _is_numeric(inner):
            raise ColumnTypeError(f"{source}: prediction column {col!r} is a list of {inner}, not numbers")
    elif not _is_numeric(t):
        raise ColumnTypeError(
            f"{source}: prediction column {col!r} has type {t}; probabilities must be numeric"
        )
    return t


def _declared_classes(spec: LayoutSpec) -> tuple[str, ...] | None:
    return tuple(str(c) for c in spec.classes) if spec.classes else None


def _declared_predictions(
    schema: pa.Schema, spec: LayoutSpec, source: str, first_batch: pa.RecordBatch | None,
) -> tuple[PredKind, tuple[str, ...], bool, tuple[str, ...]]:
    """``predictions`` named: one list column, one binary column, or one column per class."""
    declared_classes = _declared_classes(spec)
    cols = list(spec.predictions or ())
    types = [_check_pred_type(schema, c, source) for c in cols]
    logits = bool(spec.logits)
    if len(cols) == 1 and _is_list(types[0]):
        return "list", (cols[0],), logits, _list_classes(schema, cols[0], declared_classes, first_batch, source)
    if len(cols) == 1:
        return "binary", (cols[0],), logits, declared_classes or ("0", "1")
    if any(_is_list(t) for t in types):
        raise LayoutError(f"{source}: give either one list column or several class columns, not both")
    classes = declared_classes or _common_suffix_names(cols)
    if len(classes) != len(cols):
        raise LayoutError(f"{source}: {len(cols)} prediction columns but {len(classes)} class names")
    return "wide", tuple(cols), logits, classes


def _prefixed_predictions(
    schema: pa.Schema, spec: LayoutSpec, source: str,
) -> tuple[PredKind, tuple[str, ...], bool, tuple[str, ...]]:
    """``prefix`` named: every column starting with it, ordered by an integer suffix."""
    assert spec.prefix
    names = list(schema.names)
    declared_classes = _declared_classes(spec)
    cols = [c for c in names if c.startswith(spec.prefix)]
    if not cols:
        raise LayoutError(
            f"{source}: no column starts with prefix {spec.prefix!r}; columns are: {', '.join(names[:20])}"
        )
    for c in cols:
        _check_pred_type(schema, c, source)
    cols = _order_by_int_suffix(cols, spec.prefix)
    classes = declared_classes or tuple(c[len(spec.prefix):] for c in cols)
    logits = bool(spec.logits) or spec.prefix in LOGIT_PREFIXES
    if len(cols) == 1:
        return "binary", tuple(cols), logits, declared_classes or ("0", "1")
    return "wide", tuple(cols), logits, classes


def _conventional_predictions(
    schema: pa.Schema, spec: LayoutSpec, source: str, first_batch: pa.RecordBatch | None,
    notes: list[str],
) -> tuple[PredKind, tuple[str, ...], bool, tuple[str, ...]]:
    """Nothing declared: conventional names, logits first (so ``logit_`` is never read as a
    prob), then list columns, then a binary column."""
    names = list(schema.names)
    declared_classes = _declared_classes(spec)
    for prefixes, is_logits in ((LOGIT_PREFIXES, True), (PROB_PREFIXES, False)):
        found = _prefixed(schema, prefixes, _is_numeric)
        if found and len(found[1]) >= 2:
            prefix, cols = found
            _reject_non_numeric(schema, prefix, source)
            cols = _order_by_int_suffix(cols, prefix)
            logits = is_logits if spec.logits is None else bool(spec.logits)
            notes.append(f"detected wide columns by prefix {prefix!r}")
            return "wide", tuple(cols), logits, declared_classes or tuple(c[len(prefix):] for c in cols)
    for candidates, is_logits in ((LIST_LOGIT_NAMES, True), (LIST_PROB_NAMES, False)):
        for c in candidates:
            if c in names and _is_list(_value_type(schema.field(c).type)):
                _check_pred_type(schema, c, source)
                logits = is_logits if spec.logits is None else bool(spec.logits)
                return "list", (c,), logits, _list_classes(schema, c, declared_classes, first_batch, source)
    for c in BINARY_NAMES:
        if c in names and _is_float(_value_type(schema.field(c).type)):
            notes.append(f"binary layout: {c!r} read as P(class 1)")
            return "binary", (c,), bool(spec.logits), declared_classes or ("0", "1")
    for prefix in LOGIT_PREFIXES + PROB_PREFIXES:
        # Class columns that are all of the wrong type (e.g. probabilities stored as strings).
        if sum(1 for n in names if n.startswith(prefix)) >= 2:
            _reject_non_numeric(schema, prefix, source)
    raise LayoutError(
        f"{source}: cannot detect the prediction columns. Name them with --predictions COL "
        f"(repeatable) or --prefix PREFIX; looked for prefixes {', '.join(PROB_PREFIXES + LOGIT_PREFIXES)} "
        f"and list columns {', '.join(LIST_PROB_NAMES + LIST_LOGIT_NAMES)}. Columns are: {', '.join(names[:20])}"
    )


def _reject_non_numeric(schema: pa.Schema, prefix: str, source: str) -> None:
    """Raise ColumnTypeError for a scalar column with a prediction prefix that is not numeric.

    Silently leaving such a column out would drop a class (and give a wrong number).
    """
    for f in schema:
        t = _value_type(f.type)
        if f.name.startswith(prefix) and not _is_numeric(t) and not _is_list(t) \
                and not pa.types.is_struct(t):
            raise ColumnTypeError(
                f"{source}: prediction column {f.name!r} has type {t}; probabilities must be "
                f"numeric (or name the prediction columns with --predictions / --prefix)"
            )


def _common_suffix_names(cols: Sequence[str]) -> tuple[str, ...]:
    """Class names from explicit wide columns: strip their common prefix when it ends in '_'."""
    import os

    prefix = os.path.commonprefix(list(cols))
    cut = prefix.rfind("_") + 1 if "_" in prefix else 0
    names = tuple(c[cut:] for c in cols)
    if all(names) and len(set(names)) == len(names):
        return names
    return tuple(cols)


def _list_classes(
    schema: pa.Schema,
    col: str,
    declared: tuple[str, ...] | None,
    first_batch: pa.RecordBatch | None,
    source: str,
) -> tuple[str, ...]:
    t = _value_type(schema.field(col).type)
    k: int | None = t.list_size if pa.types.is_fixed_size_list(t) else None  # type: ignore[attr-defined]
    if k is None and first_batch is not None and first_batch.num_rows:
        lengths = pc.list_value_length(first_batch.column(col)).drop_null()
        if len(lengths):
            k = int(lengths[0].as_py())
    if declared is not None:
        if k is not None and k != len(declared):
            raise ListLengthError(
                f"{source}: column {col!r} holds {k} values per row but {len(declared)} classes were named"
            )
        return declared
    if k is None:
        raise LayoutError(f"{source}: cannot tell the number of classes of list column {col!r}; pass --classes")
    return tuple(str(i) for i in range(k))
