"""Group keys: mapping tuples of key values to dense global slots, batch by batch.

:class:`_KeyIndex` is shared by :class:`~evalkit.aggregate.GroupStats` and
:class:`~evalkit.aggregate.TopK`: it encodes the key columns of an Arrow batch into
batch-local codes plus a local -> global slot map, merges indexes of partial states, and
decides the output order of groups (dictionary order first, then by value).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ColumnTypeError, EvalkitError
from ..normalize import float_as_printed

# Mixed-radix codes must stay well inside int64.
_MAX_RADIX = 1 << 62
# Sentinel for a key column whose Arrow type differed between batches.
_MIXED = "mixed"
# One shared NaN object: dict lookups match NaN keys only by identity (NaN != NaN).
_NAN = float("nan")


def _canon_key(key: tuple) -> tuple:
    if any(isinstance(v, float) and v != v for v in key):
        return tuple(_NAN if isinstance(v, float) and v != v else v for v in key)
    return key



def key_values(arr: pa.Array | pa.ChunkedArray) -> list:
    """The Python values of a key column (None for null), one-to-one with Arrow's identity
    of its values: the one place where key values become the Python values that
    :class:`_KeyIndex` (and whoever else) compares and hashes in dicts.

    ``to_pylist()`` alone is not: Python compares and hashes two zone-aware datetimes with
    the same ``tzinfo`` by their wall time, ignoring ``fold``, so 01:30 EDT and 01:30 EST of
    the night daylight saving time ends (two instants, two Arrow values) would be one key
    and one group. A timestamp in a zone with daylight saving time is therefore given at its
    UTC offset (a fixed-offset ``datetime.timezone``): the same wall time and text
    (``2020-11-01 01:30:00-05:00``), compared and hashed by the instant, and
    ``pa.array(values, type=column type)`` gives back the same instants in the column's zone.

    Other key types' Python values are one-to-one already: a column has one decimal scale,
    NaN and ``-0.0`` are made null and ``0.0`` (:func:`canonical_keys`), nanosecond
    timestamps and durations become pandas values compared by value, times of day below
    the microsecond are refused (:func:`microsecond_times`), ``date64`` is read as
    ``date32`` (its midnight) and intervals are no group keys
    (:mod:`evalkit.normalize`).

    >>> t = pa.array([1604208600, 1604212200], pa.timestamp("s", "America/New_York"))
    >>> [str(v) for v in key_values(t)], len(set(key_values(t)))
    (['2020-11-01 01:30:00-04:00', '2020-11-01 01:30:00-05:00'], 2)
    """
    t = arr.type.value_type if pa.types.is_dictionary(arr.type) else arr.type
    if pa.types.is_timestamp(t) and t.tz is not None and not _fixed_offset(t.tz):
        return _zoned_values(arr, t)
    return arr.to_pylist()


#: Ticks per second of each timestamp unit.
_TICKS = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
#: Instants (seconds since 1970) whose wall time is a year Python's datetime holds in any zone.
_DATETIME_SECONDS = (int(np.datetime64("0001-01-02", "s").astype(np.int64)),
                     int(np.datetime64("9999-12-30", "s").astype(np.int64)))


def _zoned_values(arr: pa.Array | pa.ChunkedArray, t: pa.TimestampType) -> list:
    """:func:`key_values` of a timestamp column in a zone with daylight saving time: each
    value's wall time at its UTC offset, the offsets as Python's ``zoneinfo`` gives them
    (pandas' conversion; Arrow's ``local_timestamp`` differs after 2037). Built from numpy,
    not ``to_pylist()``, which makes a zone-aware datetime per value several times slower;
    values below the microsecond or beyond Python's years take that way."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    ticks = _TICKS[t.unit]
    utc = pc.fill_null(arr.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)
    if t.unit == "ns":  # (nanosecond timestamps lie within Python's years)
        slow = bool((utc % 1000).any())
    else:
        lo, hi = _DATETIME_SECONDS
        slow = bool(((utc < lo * ticks) | (utc > hi * ticks))[valid].any())
    if slow:
        return [v if v is None else v.astimezone(_dt.timezone(v.utcoffset())) for v in arr.to_pylist()]
    wall = arr.to_pandas().dt.tz_localize(None).to_numpy().astype("datetime64[us]")
    utc_us = utc // 1000 if t.unit == "ns" else utc * (10**6 // ticks)
    offset = (wall.astype(np.int64) - utc_us) // 10**6
    offset[~valid] = 0
    offsets, which = np.unique(offset, return_inverse=True)
    zones = [_dt.timezone(_dt.timedelta(seconds=int(o))) for o in offsets]
    return [v.replace(tzinfo=zones[z]) if ok else None
            for v, z, ok in zip(wall.tolist(), which.reshape(-1).tolist(), valid.tolist(), strict=True)]


def _fixed_offset(tz: str) -> bool:
    """Whether an Arrow time zone has one UTC offset (``UTC``, ``+05:30``): its values'
    ``tzinfo`` is a ``datetime.timezone`` already."""
    return tz in ("UTC", "Z", "utc") or tz[:1] in ("+", "-")


def _as_array(col: Any) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        if pa.types.is_dictionary(col.type):
            col = col.unify_dictionaries()
        return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    if isinstance(col, pa.Array):
        return col
    return pa.array(col)


def signed_zero_as_zero(col: pa.Array) -> pa.Array:
    """A float key column with ``-0.0`` replaced by ``0.0`` (any float width; other types as
    they are). The two compare equal, so they are one key; hashing and dictionary encoding
    see their bit patterns and would otherwise split one group in two, differently per
    batch. Shared by grouping, slicing and the ``--on`` join (:mod:`evalkit.join`)."""
    t = col.type
    if not pa.types.is_floating(t):
        return col
    work = col.cast(pa.float32()) if pa.types.is_float16(t) else col
    zero = pc.equal(work, pa.scalar(0, work.type))
    if not pc.any(zero).as_py():
        return col
    out = pc.if_else(zero, pa.scalar(0, work.type), work)
    return out.cast(t) if out.type != t else out


def canonical_keys(col: pa.Array, check_dictionary: bool = True) -> pa.Array:
    """The one encoding of a key column before it is hashed, dictionary-encoded or combined
    into joint keys: NaN as null (:func:`missing_as_null`), ``-0.0`` as ``0.0``
    (:func:`signed_zero_as_zero`), a time of day in microseconds (:func:`microsecond_times`),
    a dictionary whose values repeat or hold a null by its values (:func:`plain_dictionary`).
    ``check_dictionary=False``: a dictionary is kept as it is, for a caller that finds a
    repeated value itself (:meth:`_KeyIndex.encode`: two codes given one slot)."""
    if check_dictionary:
        col = plain_dictionary(col)
    return missing_as_null(signed_zero_as_zero(microsecond_times(col)))


#: The last dictionaries :func:`plain_dictionary` found plain, newest last (held, so their
#: memory cannot be reused meanwhile): the batches of one file share them, and are not
#: checked again. Several: the key columns of one batch (split, user) take turns.
_PLAIN: list[pa.Array] = []
_PLAIN_KEPT = 4


def plain_dictionary(col: pa.Array) -> pa.Array:
    """A dictionary-encoded key column whose dictionary repeats a value (``["x", "x", "y"]``,
    valid Arrow) or holds a null, decoded to its values: grouped by its codes, "x" would be
    two groups that print alike (and pandas refuses such categories: an internal error);
    decoded, "x" is one group and the null entry the missing group. Other columns as they
    are (checked once per dictionary)."""
    if not pa.types.is_dictionary(col.type):
        return col
    if isinstance(col, pa.ChunkedArray):
        return col.cast(col.type.value_type) if any(
            plain_dictionary(c) is not c for c in col.chunks) else col
    d = col.dictionary
    if any(_same_memory(last, d) for last in _PLAIN):
        return col
    # pc.unique: one hash pass, a third of count_distinct's time (200k strings: 36 / 110 ms).
    if d.null_count == 0 and len(pc.unique(d)) == len(d):
        _PLAIN.append(d)
        del _PLAIN[:-_PLAIN_KEPT]
        return col
    return col.dictionary_decode()


def microsecond_times(col: pa.Array) -> pa.Array:
    """A ``time64[ns]`` key column (what polars ``Time`` writes) as ``time64[us]``: a group key
    becomes a Python / pandas time, which holds microseconds, so ``10:00:00.000000001`` and
    ``...002`` would be one group (and pandas refused the column: an internal error). Raises
    :class:`~evalkit.errors.ColumnTypeError` when a value has a part below the microsecond."""
    t = col.type
    if not (pa.types.is_time64(t) and t.unit == "ns"):
        return col
    try:
        return col.cast(pa.time64("us"), safe=True)
    except pa.ArrowInvalid:
        text = col.cast(pa.string())
        sample = next(v for v in text.to_pylist() if v is not None and not v.endswith("000"))
        raise ColumnTypeError(
            f"a key column holds times of day with nanoseconds (time64[ns], e.g. {sample}); group "
            "keys hold times to the microsecond, so such times would become one group: round the "
            "column to microseconds, or group by its text (cast to string)") from None


def missing_as_null(col: pa.Array) -> pa.Array:
    """The one representation of a missing key: null. NaN in a float key column is the
    same missing key as null (as in ``pandas.groupby(dropna=False)``), so every output
    (by_*.parquet null, summary.json null, report.md / terminal marker, compare) shows
    one missing group, never two groups that print alike."""
    if pa.types.is_floating(col.type):
        nan = pc.is_nan(col)
        if pc.any(nan).as_py():
            return pc.if_else(nan, pa.scalar(None, col.type), col)
    return col


def _densify(code: np.ndarray, radix: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Map codes in ``[0, radix)`` to dense ``[0, k)`` in code order; returns (local, uniq)."""
    if radix <= max(4 * n, 1 << 12):
        present = np.flatnonzero(np.bincount(code, minlength=radix))
        lut = np.empty(radix, dtype=np.int64)
        lut[present] = np.arange(len(present))
        return lut[code], present
    uniq, local = np.unique(code, return_inverse=True)
    return local.reshape(-1), uniq


def pandas_key_column(arr: pa.Array) -> pd.Series:
    """A key column for pandas, keeping its type: integers and booleans with nulls become
    pandas' nullable ``Int64`` / ``boolean`` (not float64 / object)."""
    arr = plain_dictionary(arr)  # categories that repeat or hold a null: pandas refuses them
    t = arr.type
    if arr.null_count and (pa.types.is_integer(t) or pa.types.is_boolean(t)):
        # Default conversion turns nullable ints into float64; keep them integers.
        dtype = pd.BooleanDtype() if pa.types.is_boolean(t) else pd.api.types.pandas_dtype(
            ("UInt" if pa.types.is_unsigned_integer(t) else "Int") + str(t.bit_width)
        )
        return pd.Series(arr.to_pylist(), dtype=dtype)
    return arr.to_pandas()


def _combine_codes(idxs: list[np.ndarray], radices: list[int], n: int,
                   all_present: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mixed-radix combination of per-column indices into dense batch-local group codes;
    returns (code per row, per column the digit of each local group)."""
    if len(idxs) == 1 and all_present:
        return idxs[0].astype(np.int64), [np.arange(radices[0], dtype=np.int64)]
    code = idxs[0].astype(np.int64)
    radix = radices[0]
    decodable = True
    for ind, r in zip(idxs[1:], radices[1:], strict=True):
        if radix * r >= _MAX_RADIX:
            code, uniq = _densify(code, radix, n)
            radix = len(uniq)
            decodable = False
        code = code * r + ind
        radix *= r
    local, uniq = _densify(code, radix, n)
    if not decodable:
        # Mixed radix was re-densified on the way; decode via any row of each group.
        rep = np.empty(len(uniq), dtype=np.int64)
        rep[local] = np.arange(n)
        return local, [ind[rep].astype(np.int64) for ind in idxs]
    digits = []
    rem = uniq
    for r in reversed(radices):
        rem, dgt = np.divmod(rem, r)
        digits.append(dgt)
    digits.reverse()
    return local, digits


def _same_memory(a: pa.Array, b: pa.Array) -> bool:
    """Whether two Arrow arrays are views of the same memory (then of the same values: Arrow
    buffers are immutable, and ``a`` is held, so its buffers cannot be reused meanwhile)."""
    if a is b:
        return True
    if a.type != b.type or len(a) != len(b) or a.offset != b.offset:
        return False
    ba, bb = a.buffers(), b.buffers()
    return len(ba) == len(bb) and all(
        (x is None and y is None) or (x is not None and y is not None and x.address == y.address
                                      and x.size == y.size)
        for x, y in zip(ba, bb, strict=True))


class _KeyIndex:
    """Maps group keys (tuples of Python values, None for null) to dense global slots.

    The keys are held in one of two forms, or both: Python tuples (``keys``, ``slot_of``),
    which any key type can use, and for one-column keys of text, bytes or integers the
    values as Arrow arrays in slot order, which a batch's values are hashed against
    (:meth:`_slots_by_value`). A form covers the slots it was given and is completed from
    the other when it is needed: 200k users read by value never become 200k tuples and
    dict entries unless a Python path (a merge, a projection, a pickle) asks for them.
    """

    def __init__(self, key_names: Sequence[str], dict_order_keys: Sequence[str] | None = None):
        self.key_names: tuple[str, ...] = tuple(key_names)
        if len(set(self.key_names)) != len(self.key_names):
            raise ValueError(f"duplicate key names: {self.key_names}")
        # Key columns whose dictionary order is the output order (e.g. classes in class-index
        # order); other dictionary-typed keys (strings read as dictionaries) sort by value.
        self.dict_ordered = (set(range(len(self.key_names))) if dict_order_keys is None
                             else {i for i, k in enumerate(self.key_names) if k in dict_order_keys})
        # The Python form: the keys of the first len(self._keys) slots (see keys / slot_of).
        self._keys: list[tuple] = []
        self._slot_of: dict[tuple, int] = {}
        self._n = 0
        ncol = len(self.key_names)
        # Value type per key column (None: unknown yet, _MIXED: differed between batches).
        self.types: list[Any] = [None] * ncol
        # For dictionary-typed key columns: value -> rank in first-seen dictionary order.
        self.dict_order: list[dict[Any, int]] = [{} for _ in range(ncol)]
        # Last dictionary registered per column; lets same-dictionary batches skip the Python walk.
        self._last_dict: list[pa.Array | None] = [None] * ncol
        # The Arrow form (one key column): its values in slot order as Arrow chunks, covering
        # the first _known_n slots, so a batch's values are mapped to slots by Arrow's hashing
        # instead of one Python look-up per distinct value (200k users per batch).
        self._known: list[pa.Array] = []
        self._known_n = 0
        # One key column: the last dictionary it was read through and the slot of each of
        # its positions (-1: not looked up yet; the last entry: the null code), so batches
        # read through the same dictionary (the class names), or one extending it (a Parquet
        # reader's, within a row group), hash only the positions not looked up before.
        self._dict_slots: tuple[pa.Array, np.ndarray] | None = None
        # The last sort_rank() and what it was computed for (groups, dictionary values seen):
        # finalize and the calibration table of one grouping both ask.
        self._rank: tuple[tuple[int, int], np.ndarray] | None = None
        if ncol == 0:
            self._add(())

    def __getstate__(self) -> dict:
        self._python_keys()
        state = self.__dict__.copy()
        state["_last_dict"] = [None] * len(self.key_names)
        state["_known"], state["_known_n"] = [], 0
        state["_dict_slots"] = None
        state["_rank"] = None
        del state["_slot_of"]  # rebuilt from the keys
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        # Unpickled NaNs are fresh objects; re-point them at the shared one.
        self._keys = [_canon_key(k) for k in self._keys]
        self._slot_of = {k: i for i, k in enumerate(self._keys)}
        self._n = len(self._keys)

    def __len__(self) -> int:
        return self._n

    @property
    def keys(self) -> list[tuple]:
        """Every key in slot order, as tuples of Python values (None for null)."""
        self._python_keys()
        return self._keys

    @property
    def slot_of(self) -> dict[tuple, int]:
        """The slot of every key (the inverse of :attr:`keys`)."""
        self._python_keys()
        return self._slot_of

    def _python_keys(self) -> None:
        """Complete the Python form from the Arrow one (the slots added by value since)."""
        s = len(self._keys)
        if s == self._n:
            return
        values = self._known_values(None)
        assert values is not None and len(values) == self._n
        new = list(zip(key_values(values.slice(s))))
        self._keys.extend(new)
        self._slot_of.update(zip(new, range(s, s + len(new)), strict=True))

    def _add(self, key: tuple) -> int:
        self._python_keys()
        s = self._n
        self._slot_of[key] = s
        self._keys.append(key)
        self._n += 1
        return s

    def _add_values(self, values: pa.Array) -> None:
        """Add the one-column keys ``values`` (none known yet, no two alike) in order, in the
        Arrow form only (:meth:`_known_values` must cover every slot)."""
        assert self._known_n == self._n
        self._known.append(values)
        self._known_n += len(values)
        self._n += len(values)

    def _note_type(self, i: int, t: pa.DataType) -> None:
        cur = self.types[i]
        if cur is None:
            self.types[i] = t
        elif cur is not _MIXED and cur != t:
            self.types[i] = _MIXED

    def _register_dictionary(self, i: int, d: pa.Array) -> None:
        last = self._last_dict[i]
        if last is not None and (last is d or last.equals(d)):
            return
        order = self.dict_order[i]
        for v in key_values(d):
            if v is not None and v not in order:
                order[v] = len(order)
        self._last_dict[i] = d

    def encode(self, keys: Sequence[Any], n: int) -> tuple[np.ndarray | None, np.ndarray]:
        """Per-row batch-local codes (None: all rows in local group 0) and local -> global slots."""
        if len(keys) != len(self.key_names):
            raise ValueError(f"expected {len(self.key_names)} key arrays, got {len(keys)}")
        if not self.key_names:
            return None, np.zeros(1, dtype=np.int64)

        cols = self._canonical_columns(keys, n)
        local, slots = self._encode(cols, n)
        if any(pa.types.is_dictionary(c.type) for c in cols) and not self._distinct(slots):
            # A dictionary that repeats a value (["x", "x", "y"]: valid Arrow) or holds a
            # null besides null codes: two codes of one key got one slot. Read by value.
            cols = [plain_dictionary(c) for c in cols]
            local, slots = self._encode(cols, n)
        return local, slots

    def _distinct(self, slots: np.ndarray) -> bool:
        """Whether no slot occurs twice in ``slots`` (one pass over the slots, O(groups))."""
        if len(slots) < 2:
            return True
        seen = np.zeros(self._n, dtype=bool)
        seen[slots] = True
        return int(np.count_nonzero(seen)) == len(slots)

    def _encode(self, cols: list[pa.Array], n: int) -> tuple[np.ndarray, np.ndarray]:
        idxs, dicts, radices, all_present = self._column_codes(cols)
        local, digits = _combine_codes(idxs, radices, n, all_present)
        if len(dicts) == 1:
            by_value = self._slots_by_value(dicts[0], digits[0])
            if by_value is not None:
                return local, by_value
        return local, self._slots(dicts, digits)

    def _canonical_columns(self, keys: Sequence[Any], n: int) -> list[pa.Array]:
        """The key columns as arrays in their one encoding (:func:`canonical_keys`; a
        dictionary is checked for repeated values by :meth:`encode` itself)."""
        cols = []
        for i, raw in enumerate(keys):
            try:
                col = canonical_keys(_as_array(raw), check_dictionary=False)
            except EvalkitError as exc:
                raise type(exc)(f"group column {self.key_names[i]!r}: {exc.message}") from None
            if len(col) != n:
                raise ValueError(f"key {self.key_names[i]!r} has length {len(col)}, expected {n}")
            cols.append(col)
        return cols

    def _column_codes(self, cols: Sequence[pa.Array]
                      ) -> tuple[list[np.ndarray], list[pa.Array], list[int], bool]:
        """Per key column: dictionary indices per row (null as index ``len(dictionary)``), the
        dictionary, the radix (number of possible indices); and whether every index in
        ``[0, radix)`` is known to occur."""
        idxs: list[np.ndarray] = []
        dicts: list[pa.Array] = []
        radices: list[int] = []
        all_present = True
        for i, col in enumerate(cols):
            if pa.types.is_dictionary(col.type):
                enc = col
                if i in self.dict_ordered:
                    self._register_dictionary(i, col.dictionary)
                all_present = False  # user dictionaries may hold unused values
            else:
                enc = pc.dictionary_encode(col)
            d = enc.dictionary
            self._note_type(i, d.type)
            m = len(d)
            ind = enc.indices
            if ind.null_count:
                ind = pc.fill_null(ind, pa.scalar(m, ind.type))
                radices.append(m + 1)
            else:
                radices.append(m)
            idxs.append(ind.to_numpy(zero_copy_only=False))
            dicts.append(d)
        return idxs, dicts, radices, all_present

    def _slots(self, dicts: list[pa.Array], digits: list[np.ndarray]) -> np.ndarray:
        """Global slot of each batch-local group (its key decoded from the per-column digits),
        adding keys not seen before (the general, Python-level path)."""
        columns = []
        for d, dgt in zip(dicts, digits, strict=True):
            take = pa.array(dgt, mask=dgt >= len(d))
            columns.append(key_values(d.take(take)))
        slots = np.empty(len(digits[0]), dtype=np.int64)
        slot_of = self.slot_of
        for j, key in enumerate(zip(*columns, strict=True)):
            s = slot_of.get(key)
            slots[j] = self._add(key) if s is None else s
        return slots

    def _slots_by_value(self, d: pa.Array, codes: np.ndarray) -> np.ndarray | None:
        """Slots of the dictionary codes ``codes`` (distinct: one per batch-local group;
        ``len(d)``: null) of a one-column key, new values getting new slots in order of
        appearance; None for value types left to the Python path.

        The slot of each position of ``d`` is remembered with it (:meth:`_remembered`); the
        positions not looked up before are hashed against the known values by Arrow
        (:meth:`_value_slots`). Cost: a hash pass over the known values per new dictionary
        or extension of one, never a Python object per key (200k users: no tuples, no dict).
        """
        t = d.type
        if d.null_count or not (pa.types.is_string(t) or pa.types.is_large_string(t)
                                or pa.types.is_binary(t) or pa.types.is_large_binary(t)
                                or pa.types.is_integer(t)):
            return None
        known = self._known_values(t)
        if known is None:
            return None
        codes = np.asarray(codes, dtype=np.int64)
        remembered = self._remembered(d)
        out = remembered[codes]
        need = out < 0
        if need.any():
            pos = codes[need]
            found = self._value_slots(d.take(pa.array(pos, mask=pos >= len(d))), known)
            out[need] = found
            remembered[pos] = found
        return out

    def _remembered(self, d: pa.Array) -> np.ndarray:
        """The slot of each position of dictionary ``d`` and of its null code (the last
        entry), -1 where not looked up yet: the remembered ones when ``d`` is the dictionary
        of the previous batch (the same memory) or extends it (its first values are that
        one's: a Parquet reader's dictionary grows so within a row group, a new copy every
        batch), else a fresh table that replaces them. Written in place by the caller."""
        hit = self._dict_slots
        if hit is not None:
            prev, slots = hit
            if _same_memory(prev, d):
                return slots
            if (len(d) > len(prev) and d.type == prev.type
                    and d.slice(0, len(prev)).equals(prev)):
                grown = np.full(len(d) + 1, -1, dtype=np.int64)
                grown[:len(prev)] = slots[:len(prev)]
                grown[len(d)] = slots[len(prev)]  # the null code
                self._dict_slots = (d, grown)
                return grown
        fresh = np.full(len(d) + 1, -1, dtype=np.int64)
        self._dict_slots = (d, fresh)
        return fresh

    def _value_slots(self, values: pa.Array, known: pa.Array) -> np.ndarray:
        """The slots of ``values`` (one key column; nulls allowed), new values added in order of
        first appearance. The distinct values are looked for among the known ones (every
        slot's value, in slot order) by Arrow: the known values are probed against a hash
        table of the few looked-up ones (``index_in(known, value_set=...)``), not hashed into
        a table of their own (200k known users: 2.4 ms instead of 9.6 for a hundred values)."""
        enc = pc.dictionary_encode(values, null_encoding="encode")
        distinct = enc.dictionary
        found = np.full(len(distinct), -1, dtype=np.int64)
        if len(known):
            at = pc.fill_null(pc.index_in(known, value_set=distinct, skip_nulls=False), -1)
            at = at.to_numpy(zero_copy_only=False)
            hit = np.flatnonzero(at >= 0)
            found[at[hit]] = hit  # a known value's position is its slot
        new = found < 0
        if new.any():
            fresh = distinct if new.all() else distinct.filter(pa.array(new))
            found[new] = np.arange(self._n, self._n + len(fresh))
            self._add_values(fresh)
        return found[enc.indices.to_numpy(zero_copy_only=False)]

    def _known_values(self, t: pa.DataType | None) -> pa.Array | None:
        """The values of slots ``0 .. len(self)-1`` as one Arrow array of type ``t`` (keys
        added by the Python path converted once; ``t`` None: of the type they have), or None
        if they cannot all be of type ``t``."""
        if self._known and t is not None and self._known[0].type != t:
            return None
        if self._known_n < self._n:
            try:
                self._known.append(pa.array([k[0] for k in self._keys[self._known_n:]], type=t))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                return None
            self._known_n = self._n
        if len(self._known) > 1:
            self._known = [pa.concat_arrays(self._known)]
        return self._known[0] if self._known else pa.array([], type=t or pa.null())

    def merge_from(self, other: _KeyIndex) -> np.ndarray:
        """Absorb ``other``'s keys; returns the map other-slot -> self-slot."""
        if other.key_names != self.key_names:
            raise ValueError(f"key names differ: {self.key_names} vs {other.key_names}")
        remap = np.empty(len(other.keys), dtype=np.int64)
        for j, key in enumerate(other.keys):
            key = _canon_key(key)
            s = self.slot_of.get(key)
            remap[j] = self._add(key) if s is None else s
        for i, t in enumerate(other.types):
            if t is not None:
                self._note_type(i, t)
            order = self.dict_order[i]
            for v in sorted(other.dict_order[i], key=other.dict_order[i].__getitem__):
                if v not in order:
                    order[v] = len(order)
        self._last_dict = [None] * len(self.key_names)
        return remap

    def project(self, cols: Sequence[int]) -> tuple[_KeyIndex, np.ndarray]:
        """The index of the keys made of columns ``cols`` (positions, any order; empty: the one
        group of everything) and the map slot -> projected slot. Column types and dictionary
        orders carry over, so the projected groups sort as if they had been indexed directly."""
        cols = list(cols)
        names = [self.key_names[i] for i in cols]
        new = _KeyIndex(names, [self.key_names[i] for i in cols if i in self.dict_ordered])
        new.types = [self.types[i] for i in cols]
        new.dict_order = [dict(self.dict_order[i]) for i in cols]
        remap = np.empty(len(self.keys), dtype=np.int64)
        slot_of = new.slot_of
        for j, key in enumerate(self.keys):
            pk = tuple(key[i] for i in cols)
            s = slot_of.get(pk)
            remap[j] = new._add(pk) if s is None else s
        return new, remap

    def copy(self) -> _KeyIndex:
        new = _KeyIndex.__new__(_KeyIndex)
        new.key_names = self.key_names
        new.dict_ordered = set(self.dict_ordered)
        new._keys = list(self._keys)
        new._slot_of = dict(self._slot_of)
        new._n = self._n
        new.types = list(self.types)
        new.dict_order = [dict(o) for o in self.dict_order]
        new._last_dict = [None] * len(self.key_names)
        new._known, new._known_n = list(self._known), self._known_n  # immutable: shared
        new._dict_slots = None
        new._rank = None
        return new

    def _column_array(self, i: int) -> pa.Array:
        t = self.types[i]
        if t is None or t is _MIXED:
            return pa.array([k[i] for k in self.keys])
        if len(self.key_names) == 1:
            # The values in slot order are held as Arrow already (the by-value path's known
            # values): 200k users are not converted from Python strings at each call.
            known = self._known_values(t)
            if known is not None and len(known) == self._n:
                return known
        return pa.array([k[i] for k in self.keys], type=t)

    def sort_rank(self) -> np.ndarray:
        """rank[slot] = position of the slot in output order."""
        g = self._n
        if not self.key_names or g == 0:
            return np.arange(g, dtype=np.int64)
        seen = (g, sum(len(o) for o in self.dict_order))
        if self._rank is not None and self._rank[0] == seen:
            return self._rank[1].copy()
        rank = self._sort_rank()
        self._rank = (seen, rank)
        return rank.copy()

    def _sort_rank(self) -> np.ndarray:
        g = self._n
        cols: dict[str, pa.Array] = {}
        sort_keys = []
        for i in range(len(self.key_names)):
            arr = self._column_array(i)
            order = self.dict_order[i]
            if order:
                # Dictionary order first; values never seen in a dictionary follow, by value.
                rank = [order.get(v) if v is not None else None for k in self.keys for v in (k[i],)]
                cols[f"r{i}"] = pa.array(rank, type=pa.int64())
                sort_keys.append((f"r{i}", "ascending", "at_end"))
            cols[f"v{i}"] = arr
            sort_keys.append((f"v{i}", "ascending", "at_end"))
        perm = pc.sort_indices(pa.table(cols), sort_keys=sort_keys)
        perm = perm.to_numpy(zero_copy_only=False)
        rank = np.empty(g, dtype=np.int64)
        rank[perm] = np.arange(g)
        return rank

    def key_arrays(self, slots: np.ndarray) -> dict[str, pa.Array]:
        """Key columns as Arrow arrays of the keys' value types, for the given slots."""
        take = pa.array(np.asarray(slots, dtype=np.int64))
        return {name: self._column_array(i).take(take) for i, name in enumerate(self.key_names)}

    def key_frame(self, slots: np.ndarray) -> dict[str, pd.Series]:
        """Key columns (plain value types) for the given per-row slots."""
        return {name: pandas_key_column(arr) for name, arr in self.key_arrays(slots).items()}


# -- the same key across runs (compare and history) ----------------------------------------


def key_family(ty: pa.DataType) -> str:
    """What a key column of Arrow type ``ty`` holds, as the notes name it: ``integer``,
    ``float64``, ``float32``, ``decimal``, ``string``, ``bool``, ``date``, ``timestamp``,
    ``timestamp (UTC)`` (with its time zone), ``time of day`` (any unit), ``binary``, or the
    type itself."""
    if pa.types.is_dictionary(ty):
        ty = ty.value_type
    if pa.types.is_integer(ty):
        return "integer"
    if pa.types.is_floating(ty):
        return "float64" if pa.types.is_float64(ty) else "float32"
    if pa.types.is_decimal(ty):
        return "decimal"
    if pa.types.is_string(ty) or pa.types.is_large_string(ty) or pa.types.is_string_view(ty):
        return "string"
    if pa.types.is_boolean(ty):
        return "bool"
    if pa.types.is_date(ty):
        return "date"
    if pa.types.is_timestamp(ty):
        return f"timestamp ({ty.tz})" if ty.tz else "timestamp"
    if pa.types.is_time(ty):
        return "time of day"
    if pa.types.is_binary(ty) or pa.types.is_large_binary(ty) or pa.types.is_binary_view(ty):
        return "binary"
    return str(ty)


def _kind_of_family(family: str) -> str:
    """The coarse kind of a family: ``number``, ``string``, ``bool``, ``time``, or itself."""
    if family in ("integer", "float64", "float32", "decimal"):
        return "number"
    if family == "date" or family.startswith("timestamp"):
        return "time"
    return family


_ArrowCol = pa.Array | pa.ChunkedArray


def _match_form(a: _ArrowCol) -> _ArrowCol:
    """One run's key column in the form keys are matched in: dictionaries decoded, strings as
    ``large_string``, and a float32 (or float16) key as the float64 of its shortest decimal
    text (float32 ``0.1`` is ``0.1``, as pandas, polars and DuckDB print it). That text tells
    every float32 value apart, and reads back as one float64, so two float32 keys never
    merge and a float64 key written by another writer matches it."""
    if pa.types.is_dictionary(a.type):
        a = a.cast(a.type.value_type)
    if pa.types.is_string(a.type):
        a = a.cast(pa.large_string())
    elif pa.types.is_floating(a.type) and not pa.types.is_float64(a.type):
        a = float_as_printed(a)
    return a


def _to_float(a: _ArrowCol) -> _ArrowCol:
    """A number key column as float64: decimals through their text (Arrow's decimal cast
    rounds 0.1000...01 to 0.09999999999999999), integers beyond 2**53 rounded."""
    if pa.types.is_decimal(a.type):
        return a.cast(pa.string()).cast(pa.float64())
    return a.cast(pa.float64(), safe=False)


def _distinct(a: _ArrowCol) -> int:
    return int(pc.count_distinct(a, mode="all").as_py())


@dataclass(frozen=True)
class KeyMatch:
    """How one key column is matched across runs (:func:`match_key_parts`): the runs'
    columns in one type, how they were brought there (``how``, None when nothing a reader
    needs to know changed: one type, integer widths, timestamp units...), the families
    (:func:`key_family`) of each run's column, and the runs of which two groups became one
    key (``collided``: refused by the callers)."""

    parts: list[_ArrowCol]
    how: str | None
    families: list[str | None]
    collided: list[int]


#: What each way of matching keys of different types says, after "groups were".
MATCH_HOW = {
    "text": "matched on their text form (7 = '7')",
    "float32": "matched at float32 precision (a float32 key is the shortest decimal that reads back as "
               "it: 0.1 = 0.1)",
    "decimal": "matched on their float value (decimal keys that become one float are refused)",
    "date": "matched with a date as the timestamp of its midnight",
    "zone": "matched on the instant they name",
    "naive": "kept apart: a timestamp without a time zone names no instant, so it never matches one "
             "with a time zone (those groups are in one run only)",
}


def match_key_parts(parts: Sequence[_ArrowCol]) -> KeyMatch:
    """The one rule for "the same key across runs", shared by ``compare`` (two runs) and
    ``history`` (one part per run): each run's key column (``parts``) in one common type.

    - Numbers by value whatever their width (int8 7 = int64 7 = float64 7.0 = decimal 7.00).
      A float32 key is the number its shortest text names (:func:`_match_form`); decimals
      stay exact between decimal runs and are matched on their float value against float
      runs.
    - A date is the timestamp of its midnight (no time zone); timestamp units are one
      (ms = us); timestamps in different time zones are matched on the instant; a timestamp
      without a time zone and one with a zone are kept apart (text).
    - Otherwise (a number in one run, text in another...) on the text form (``7`` = ``'7'``).

    ``how`` says which rule matched keys of different families (None: the same family).
    """
    families: list[str | None] = [None if pa.types.is_null(p.type) else key_family(p.type) for p in parts]
    fams = {f for f in families if f is not None}
    parts = [_match_form(p) for p in parts]
    typed = [p.type for p in parts if not pa.types.is_null(p.type)]
    if len(set(typed)) <= 1:
        target = typed[0] if typed else None
        how = "float32" if fams == {"float32", "float64"} else None
        return KeyMatch([p if target is None or p.type == target else p.cast(target) for p in parts],
                        how, families, [])
    how: str | None = None
    kinds = {_kind_of_family(f) for f in fams}
    target: pa.DataType
    if kinds == {"number"}:
        if fams <= {"integer", "decimal"}:
            target = _unified(typed)
        else:
            target = pa.float64()
            how = "float32" if "float32" in fams else "decimal" if "decimal" in fams else None
    elif kinds == {"time"}:
        zones = {t.tz for t in typed if pa.types.is_timestamp(t)}
        unit = _finest_unit(typed)
        if (None in zones and len(zones) > 1) or ("date" in fams and zones - {None}):
            target, how = pa.large_string(), "naive"
        elif len(zones) > 1:
            target, how = pa.timestamp(unit, "UTC"), "zone"
        elif zones:
            target = pa.timestamp(unit, next(iter(zones)))
            how = "date" if "date" in fams else None
        else:
            target = _unified(typed)
    elif len(kinds) == 1:
        target = _unified(typed)
    else:
        target, how = pa.large_string(), "text"
    out, collided = [], []
    for i, p in enumerate(parts):
        q = _cast_key(p, target)
        if q is None:  # no exact common type (uint64 2**64-1 and int64): the text form
            return _as_text(parts, families, how or ("text" if len(kinds) > 1 else None))
        if pa.types.is_float64(target) and not pa.types.is_float64(p.type) and _distinct(q) != _distinct(p):
            collided.append(i)  # decimals (or integers beyond 2**53) that are one float
        out.append(q)
    return KeyMatch(out, how, families, collided)


def _unified(types: Sequence[pa.DataType]) -> pa.DataType:
    try:
        return pa.unify_schemas([pa.schema([("k", t)]) for t in types],
                                promote_options="permissive").field("k").type
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return pa.large_string()


def _finest_unit(types: Sequence[pa.DataType]) -> str:
    units = [t.unit for t in types if pa.types.is_timestamp(t)]
    return max(units, key=("s", "ms", "us", "ns").index) if units else "us"


def _cast_key(a: _ArrowCol, target: pa.DataType) -> _ArrowCol | None:
    """``a`` in the common key type ``target`` (None when a value does not fit it)."""
    if a.type == target:
        return a
    try:
        if pa.types.is_float64(target) and (pa.types.is_decimal(a.type) or pa.types.is_integer(a.type)):
            return _to_float(a)
        if pa.types.is_large_string(target):
            return a.cast(pa.large_string())
        return a.cast(target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        return None


def _as_text(parts: Sequence[_ArrowCol], families: list[str | None], how: str | None) -> KeyMatch:
    return KeyMatch([p.cast(pa.large_string()) for p in parts], how, families, [])


def cast_to_match(a: _ArrowCol, target: pa.DataType) -> _ArrowCol:
    """Another column of one run's keys (compare's per-row output) in the type
    :func:`match_key_parts` chose for that run's key column."""
    a = _match_form(a)
    out = _cast_key(a, target)
    return a.cast(pa.large_string()) if out is None else out


def key_match_note(grouping: str, column: str, match: KeyMatch,
                   sides: Sequence[str] | None = None) -> str | None:
    """The note on a key column whose type differs between runs, or None (same family, or
    numbers matched exactly by value). ``sides``: the name of each part (compare: ``the
    baseline``, ``the candidate``); without, history's "in some runs, ... in others"."""
    fams = [f for f in match.families if f is not None]
    if match.how is None or len(set(fams)) < 2:
        return None
    coarse = match.how == "text"
    name = _kind_of_family if coarse else (lambda f: f)
    if sides is not None:
        a, b = (name(f) if f else "no" for f in match.families)
        held = f"holds {a} values in {sides[0]} but {b} in {sides[1]}"
    else:
        seen = sorted({name(f) for f in fams})
        held = "holds " + " values in some runs, ".join(seen) + " values in others"
    return f"grouping {grouping!r}: key column {column!r} {held}; groups were {MATCH_HOW[match.how]}"
