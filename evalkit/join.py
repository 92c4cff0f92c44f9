"""Joining a separate labels input onto prediction batches by key column(s).

The labels side is loaded once (only the key and label columns) and indexed; each
prediction batch is then matched with vectorised ``index_in`` look-ups. Multi-column keys
are reduced to one int64 code per row (mixed radix over each column's distinct values), so
no per-row Python runs. Prediction keys are tracked in a bitmap over label rows, which
detects duplicate prediction keys across batches and label rows never matched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .aggregate.keys import match_key_parts, missing_as_null, signed_zero_as_zero
from .errors import JoinError, LabelError, UsageError, option, sample_rows
from .layout import KEY_NAMES, LABEL_NAMES, LABEL_SAMPLE_ROWS
from .validate import Problem

if TYPE_CHECKING:
    from .io import Source


def _key_like(t: pa.DataType) -> bool:
    t = t.value_type if pa.types.is_dictionary(t) else t  # type: ignore[attr-defined]
    return (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t))


def infer_join_key(predictions: pa.Schema, labels: pa.Schema, pred_source: str, label_source: str) -> list[str]:
    """The one column a predictions and a labels input plausibly join on.

    Plausible: in both inputs, of integer or string type, and not a label column. When
    several are plausible, the one conventional key name among them (``id``, ``row_id``...)
    wins. Raises :class:`~evalkit.errors.UsageError` naming the candidates otherwise.
    """
    shared, plausible = _shared_keys(predictions, labels)
    if len(plausible) > 1:
        named = [c for c in plausible if c in KEY_NAMES]
        plausible = named if len(named) == 1 else plausible
    if len(plausible) == 1:
        return plausible
    found = (f"they share the columns {', '.join(plausible)}" if plausible
             else f"they share no integer or string column (shared: {', '.join(shared) or 'none'})")
    raise UsageError(
        f"cannot tell which column joins {pred_source} to the labels {label_source}: {found}; "
        f"name the key with {option('on', meta='KEY')}"
    )


def check_shared_columns(read: Sequence[str], automatic: Sequence[str], predictions: Sequence[str],
                         labels: Sequence[str], on: Sequence[str], pred_source: str) -> str | None:
    """A column the run reads that both the predictions and the separate labels input hold,
    other than a join key (rt-api9 F9): the two may disagree, and evalkit never picks one of
    them silently. One the settings name (``read``: a group, slice or weight column) raises
    :class:`~evalkit.errors.UsageError` naming it and both inputs; one read without being
    named (``automatic``: the ``split`` grouping) is read from the predictions, and the
    returned note (a run warning) says so. None when no column is in both."""
    both = [c for c in dict.fromkeys(read) if c in predictions and c in labels and c not in on]
    if both:
        c = both[0]
        raise UsageError(
            f"column {c!r} is in both the predictions {pred_source} and the labels input, and the run "
            f"reads it (a group, slice or weight column): the two may disagree and evalkit does not pick "
            f"one; drop or rename it in one of them (or join on it with {option('on', meta=c)})"
            + (f"; also in both: {', '.join(repr(x) for x in both[1:])}" if len(both) > 1 else ""))
    auto = [c for c in automatic if c in predictions and c in labels and c not in on]
    if not auto:
        return None
    return (f"column {auto[0]!r} is in both the predictions and the labels input: the {auto[0]!r} grouping "
            f"reads the predictions' values (drop it from one input, or join on it with "
            f"{option('on', meta=auto[0])}, to be sure they agree)")


def _shared_keys(predictions: pa.Schema, labels: pa.Schema) -> tuple[list[str], list[str]]:
    """The columns both inputs hold, and those of them that could be a key (integer or
    string, not a label column), conventional key names (``id``...) first."""
    label_fields = {f.name: f.type for f in labels}
    shared = [f.name for f in predictions if f.name in label_fields]
    plausible = [c for c in shared if c not in LABEL_NAMES and _key_like(predictions.field(c).type)
                 and _key_like(label_fields[c])]
    return shared, sorted(plausible, key=lambda c: c not in KEY_NAMES)


def suggest_join_key(predictions: pa.Schema, labels_head: pa.Table) -> list[str]:
    """The key ``evalkit inspect`` suggests (``--on a --on b``) for joining a labels input
    whose first rows are ``labels_head``: the first plausible shared column
    (:func:`infer_join_key`'s candidates, conventional names first) whose values are unique
    among those rows, else all plausible columns together when they are; ``[]`` when
    no such key exists."""
    _, plausible = _shared_keys(predictions, labels_head.schema)
    if labels_head.num_rows == 0:
        return plausible[:1]

    def unique(cols: list[str]) -> bool:
        table = labels_head.select(cols)
        return table.group_by(cols).aggregate([]).num_rows == table.num_rows

    for c in plausible:
        if unique([c]):
            return [c]
    return plausible if len(plausible) > 1 and unique(plausible) else []


def check_label_orders(source: Source, column: str, classes: Sequence[str], *, files: str = "labels files",
                       first_batch_only: bool = False) -> None:
    """Refuse an input of several files whose categorical ``column`` declares its categories
    in different orders, when the class order was taken from them (the positional
    predictions are named by the first file's declared order, ``Layout.declared_order``):
    the predictions cannot follow two orders, and which file's rows each prediction row
    joins is the key's business, not the order's. Raises
    :class:`~evalkit.errors.LabelError` naming both files and both orders (``--classes``
    settles it). A file declaring some of the classes in the same relative order is
    consistent (as a later part of a predictions file, ``Layout.labels``).

    ``files`` names the input's files in the message ("labels files", or "files" for the
    predictions input). ``first_batch_only`` (``inspect``) reads only each file's first
    batch of ``column`` (its dictionary), not the whole column."""
    if len(source.files) < 2:
        return
    at = {c: i for i, c in enumerate(classes)}
    first: str | None = None
    for path, order in _declared_orders(source, column, first_batch_only):
        first = first or path
        pos = [at[v] for v in order if v in at]
        if all(a < b for a, b in zip(pos, pos[1:], strict=False)):
            continue
        # the other file's order is a --classes value only when it names every class
        other = (f" (or {option('classes', order)})" if sorted(order) == sorted(classes) else
                 f" ({path} declares {len(order)} of the {len(classes)} classes, so its order cannot name them)")
        raise LabelError(
            f"{source.label}: the {files} declare the categories of {column!r} in different orders: "
            f"{first} declares {_short(classes)}, the order that names the classes of the positional "
            f"predictions, but {path} declares {_short(order)}; the predictions cannot follow both: "
            f"name the order the predictions follow with {option('classes', list(classes))}{other}")


def _declared_orders(source: Source, column: str, first_batch_only: bool):  # type: ignore[no-untyped-def]
    """``(path, declared categories)`` of each distinct label dictionary, file by file."""
    if first_batch_only:
        import pyarrow.parquet as pq

        for path in source.files:
            try:
                fs = source.filesystem
                pf = pq.ParquetFile(fs.open_input_file(path) if fs is not None else path, read_dictionary=[column])
                if column not in pf.schema_arrow.names or not pf.metadata.num_rows:
                    continue
                batch = next(pf.iter_batches(batch_size=1, columns=[column]))
            except (OSError, StopIteration, pa.ArrowException):
                continue  # inspect reports an unreadable file elsewhere
            col = batch.column(0)
            if pa.types.is_dictionary(col.type):
                yield path, [str(v) for v in col.dictionary.to_pylist() if v is not None]
        return
    seen: dict[str, object] = {}
    batches = source.batches([column], batch_size=LABEL_SAMPLE_ROWS, dictionary_columns=[column])
    with contextlib.closing(batches):  # type: ignore[arg-type]
        for path, batch in batches:
            col = batch.column(0)
            if not batch.num_rows or not pa.types.is_dictionary(col.type) or seen.get(path) is col.dictionary:
                continue
            seen[path] = col.dictionary
            yield path, [str(v) for v in col.dictionary.to_pylist() if v is not None]


def _short(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return f"({shown}{f', ... ({len(items)} in all)' if len(items) > limit else ''})"


def _plain(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A key column as one plain array: NaN as null (a missing key, which names no row and
    so never matches, as the README says: null and NaN are the same missing key), ``-0.0``
    as ``0.0``."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return missing_as_null(signed_zero_as_zero(arr))


class LabelIndex:
    """An index over the rows of a labels table by its key columns."""

    def __init__(self, labels: pa.Table, on: Sequence[str], source: str) -> None:
        self.on = list(on)
        self.source = source
        self.table = labels
        self._uniques: list[pa.Array] = []
        self._radix: list[int] = []
        cols = [_plain(labels.column(c)) for c in self.on]
        for name, col in zip(self.on, cols, strict=True):
            if col.null_count:
                mask = col.is_null().to_numpy(zero_copy_only=False)
                raise JoinError(f"{source}: key column {name!r} has missing (null or NaN) keys, which "
                               f"match no row: {sample_rows(mask, 0)}")
            uniq = pc.unique(col)
            self._uniques.append(uniq)
            self._radix.append(len(uniq))
        codes = self._codes(cols)
        assert codes is not None
        self._codes_sorted_unique, counts = np.unique(codes, return_counts=True)
        if (counts > 1).any():
            dup_codes = self._codes_sorted_unique[counts > 1]
            mask = np.isin(codes, dup_codes)
            keys = self._key_values(mask)
            raise JoinError(
                f"{source}: duplicate keys in the labels input on {', '.join(self.on)}: "
                f"{sample_rows(mask, 0, keys)}"
            )
        self._codes_arr = pa.array(codes)
        self.seen = np.zeros(labels.num_rows, dtype=bool)

    def head(self, n: int, columns: Sequence[str], key_columns: Sequence[str] = ()) -> pa.Table:
        """The first ``n`` label rows of some columns (like :meth:`evalkit.io.Source.head`;
        ``key_columns``: the table was read already, keys as keys)."""
        return self.table.select(list(columns)).slice(0, n)

    def _key_values(self, mask: np.ndarray) -> list[object]:
        idx = np.flatnonzero(mask)[:5]
        rows = self.table.take(pa.array(idx)).select(self.on).to_pylist()
        out: list[object] = [None] * len(mask)
        for i, r in zip(idx, rows, strict=True):
            out[int(i)] = r[self.on[0]] if len(self.on) == 1 else tuple(r.values())
        return out

    def _codes(self, cols: Sequence[pa.Array]) -> np.ndarray | None:
        """One int64 code per row; -1 where any column's value is unknown or null."""
        code = np.zeros(len(cols[0]), dtype=np.int64)
        unknown = np.zeros(len(cols[0]), dtype=bool)
        for col, uniq, radix in zip(cols, self._uniques, self._radix, strict=True):
            pos = pc.index_in(col, value_set=uniq)
            unknown |= pos.is_null().to_numpy(zero_copy_only=False)
            code = code * radix + pos.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        code[unknown] = -1
        return code

    def match(self, batch: pa.RecordBatch) -> tuple[np.ndarray, list[Problem]]:
        """Label-row position of each prediction row (-1 if unmatched) and join problems."""
        cols = []
        for name, uniq in zip(self.on, self._uniques, strict=True):
            col = _plain(batch.column(name))
            if col.type != uniq.type:
                col = self._cast_key(col, uniq.type, name)
            cols.append(col)
        codes = self._codes(cols)
        assert codes is not None
        pos = pc.index_in(pa.array(codes), value_set=self._codes_arr)
        position = pos.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        problems: list[Problem] = []
        unmatched = position < 0
        keys = _key_list(batch, self.on)
        if unmatched.any():
            problems.append(Problem("unmatched_prediction_key", JoinError,
                                    f"keys on {', '.join(self.on)} with no row in the labels input {self.source}"
                                    f" (pass {option('unmatched', 'drop')} to drop them)",
                                    unmatched, keys))
        matched = position[~unmatched]
        dup = np.zeros(len(position), dtype=bool)
        if len(matched):
            # A key seen in an earlier batch, or twice in this one, is a duplicate prediction key.
            uniq, first, counts = np.unique(matched, return_index=True, return_counts=True)
            again = self.seen[matched]
            if again.any() or (counts > 1).any():
                rep = np.zeros(len(matched), dtype=bool)
                rep[again] = True
                firsts = np.zeros(len(matched), dtype=bool)
                firsts[first] = True
                rep |= ~firsts
                dup[np.flatnonzero(~unmatched)[rep]] = True
                problems.append(Problem("duplicate_prediction_key", JoinError,
                                        f"duplicate keys on {', '.join(self.on)} in the predictions",
                                        dup, keys))
            self.seen[uniq] = True
        return position, problems

    def _cast_key(self, col: pa.Array, to: pa.DataType, name: str) -> pa.Array:
        """Prediction keys and the labels' keys of column ``name`` in one type, by the rule keys
        of two runs are matched by (:func:`~evalkit.aggregate.keys.match_key_parts`): numbers
        by value whatever their width (a float32 key is the float64 it prints as, on either
        side), a date as its midnight, timestamps of two zones on the instant, string
        flavours as one. The labels' distinct keys are brought to the common type once (their
        positions, which the label rows' codes hold, are kept). Keys of two kinds (a number
        and a string, a timestamp with and one without a time zone) or labels keys that the
        common type would merge raise :class:`~evalkit.errors.JoinError`."""
        i = self.on.index(name)
        uniq = self._uniques[i]
        m = match_key_parts([uniq, col])
        if m.how not in ("text", "naive") and not m.collided:
            base, out = m.parts
            if base.type != uniq.type:
                self._uniques[i] = base.combine_chunks() if isinstance(base, pa.ChunkedArray) else base
            if out.type == self._uniques[i].type:
                return out
        raise JoinError(
            f"{self.source}: key column {name!r} has type {to} in the labels input but "
            f"{col.type} in the predictions; store the keys with the same type on both sides"
        )

    def attach(self, batch: pa.RecordBatch, position: np.ndarray, columns: Sequence[str]) -> pa.RecordBatch:
        """Append the label columns (taken at ``position``, -1 giving null) to a batch."""
        take = pa.array(np.where(position < 0, 0, position))
        arrays = list(batch.columns)
        names = list(batch.schema.names)
        for c in columns:
            if c in names:
                continue
            col = self.table.column(c).take(take)
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            arrays.append(col)
            names.append(c)
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def unmatched_labels(self) -> np.ndarray:
        """Mask of label rows that no prediction row matched (call after the last batch)."""
        return ~self.seen

    def describe_unmatched(self, mask: np.ndarray) -> str:
        """Sample of unmatched label keys for a message."""
        return sample_rows(mask, 0, self._key_values(mask))


def _key_list(batch: pa.RecordBatch, on: Sequence[str]) -> _LazyKeys:
    return _LazyKeys(batch, on)


class _LazyKeys:
    """Row keys materialised only for the few rows a message shows."""

    def __init__(self, batch: pa.RecordBatch, on: Sequence[str]) -> None:
        self.batch, self.on = batch, list(on)

    def __getitem__(self, i: int) -> object:
        vals = [self.batch.column(c)[i].as_py() for c in self.on]
        return vals[0] if len(vals) == 1 else tuple(vals)

    def __len__(self) -> int:
        return self.batch.num_rows


def lazy_keys(batch: pa.RecordBatch, on: Sequence[str]) -> _LazyKeys | None:
    """Key accessor for messages, or None when there are no key columns."""
    return _LazyKeys(batch, on) if on else None
