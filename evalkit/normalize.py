"""One normalisation step at read time: every Arrow type a mainstream writer produces, mapped
to one canonical type, and the shards of a dataset unified losslessly.

Writers differ in representation, not in meaning: pandas 3 writes ``large_string`` and
``arrow.uuid``, polars ``string_view`` / ``large_list`` / fixed-size ``Array``, DuckDB
``int32`` where pandas wrote ``int64``, pyarrow dictionary-encoded strings. Everything after
the reader sees only canonical types (:func:`canonical_type`):

================================================  =========================================
written as                                        read as
================================================  =========================================
``string``, ``large_string``, ``string_view``      ``string``
dictionary of any of those, any index width       ``dictionary<int32, string>``
dictionary of anything else (e.g. categorical     the canonical type of its values
ints)
``list``, ``large_list``, ``list_view``,          ``list<canonical value type>``
``large_list_view``
``fixed_size_list`` (polars ``Array``)            ``fixed_size_list<canonical value type>``
``int8`` .. ``int64``, ``uint8`` .. ``uint32``    ``int64`` (``uint64`` stays ``uint64``)
``float16``                                       ``float32`` (float32 / float64 unchanged)
``decimal32`` / ``decimal64``                     ``decimal128`` of the same precision, scale
``date64``                                        ``date32``
``binary``, ``large_binary``, ``binary_view``     ``binary``
extension ``arrow.uuid``                          ``string`` in the usual text form
                                                  (``12345678-1234-5678-1234-567812345678``)
extension ``arrow.bool8``                         ``bool``
extension ``pandas.period`` (pandas ``Period``)     ``string``, as pandas prints it (``2020-01``)
any other extension type                          the canonical type of its storage
================================================  =========================================

Timestamps keep their unit and time zone, booleans stay booleans. Shards are unified by
:func:`unify_types` (lossless widening; a real conflict such as string vs number is a
:class:`~evalkit.errors.SchemaDriftError` naming both files and both types), and every batch
is brought to the unified type by :func:`conform_array` / :func:`conform_batch`.

One rule depends on what a column is for. A *value* (a probability, a logit, a weight, a
soft target) is widened exactly: a float32 shard beside float64 ones keeps the number the
file holds. A *key* (a group, slice or join key column, a class label: ``key=True``) is one
key space whatever width a writer chose: a float32 value there is the float64 its shortest
text names (:func:`float_as_printed`: float32 ``0.1`` is ``0.1``, as pandas, polars and
DuckDB print it), the rule :func:`evalkit.aggregate.keys.match_key_parts` matches keys by
across runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ColumnTypeError, InputError

UUID = "arrow.uuid"
BOOL8 = "arrow.bool8"
PERIOD = "pandas.period"

# pandas registers its Arrow extension types (pandas.period, pandas.interval) only when this
# module of it is imported (pd.read_parquet does): before, a Parquet Period column reads as its
# int64 ordinals (672), after as periods, so a path's keys depended on what the process did
# first (rt-final9 F3). Registered here, every reader sees the periods.
with contextlib.suppress(ImportError):  # a pandas without it: ordinals, as before
    import pandas.core.arrays.arrow.extension_types  # noqa: F401

STRING_DICT = pa.dictionary(pa.int32(), pa.string())


def _is_ext(t: pa.DataType) -> bool:
    return isinstance(t, pa.BaseExtensionType)


def is_string_like(t: pa.DataType) -> bool:
    """Any flavour of Arrow string (``string``, ``large_string``, ``string_view``)."""
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_var_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)
            or pa.types.is_large_list_view(t))


def canonical_type(t: pa.DataType) -> pa.DataType:
    """The one type evalkit uses for values written as ``t`` (see the module table)."""
    if _is_ext(t):
        name = t.extension_name  # type: ignore[attr-defined]
        if name in (UUID, PERIOD):
            return pa.string()
        if name == BOOL8:
            return pa.bool_()
        return canonical_type(t.storage_type)  # type: ignore[attr-defined]
    if pa.types.is_dictionary(t):
        v = canonical_type(t.value_type)  # type: ignore[attr-defined]
        return STRING_DICT if pa.types.is_string(v) else v
    if is_string_like(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if _is_var_list(t):
        return pa.list_(canonical_type(t.value_type))  # type: ignore[attr-defined]
    if pa.types.is_fixed_size_list(t):
        return pa.list_(canonical_type(t.value_type), t.list_size)  # type: ignore[attr-defined]
    if pa.types.is_integer(t):
        return pa.uint64() if t == pa.uint64() else pa.int64()
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_decimal(t) and t.bit_width < 128:  # type: ignore[attr-defined]
        return pa.decimal128(t.precision, t.scale)  # type: ignore[attr-defined]
    if pa.types.is_date64(t):
        return pa.date32()
    return t


def is_key_type(t: pa.DataType) -> bool:
    """Whether values of type ``t`` can be a group or row key: one value per row (strings,
    numbers, booleans, dates, times, binary), not lists, structs or maps."""
    t = canonical_type(t)
    if pa.types.is_dictionary(t):
        t = t.value_type  # type: ignore[attr-defined]
    # An interval (1 month vs 30 days) has no order to sort groups by, and Parquet has no
    # type that holds one: not a key either.
    return not (pa.types.is_nested(t) or pa.types.is_union(t) or pa.types.is_interval(t))


def check_key_type(name: str, t: pa.DataType, role: str, source: str) -> None:
    """Raise ColumnTypeError when column ``name`` of type ``t`` cannot serve as a ``role``
    (group / key / join key) column."""
    if not is_key_type(t):
        base = canonical_type(t)
        base = base.value_type if pa.types.is_dictionary(base) else base  # type: ignore[attr-defined]
        if pa.types.is_interval(base):
            raise ColumnTypeError(
                f"{source}: {role} column {name!r} has type {t}; an interval has no order to sort "
                "groups by and no Parquet type: cast it to a string or a duration first")
        raise ColumnTypeError(
            f"{source}: {role} column {name!r} has type {t}; group and key columns must hold one "
            "value per row (a string, number, boolean, date or time), not a list, struct or map"
        )


def logical_type(t: pa.DataType) -> pa.DataType:
    """The canonical type with dictionary strings shown as strings (the type a user means)."""
    c = canonical_type(t)
    return pa.string() if c == STRING_DICT else c


def canonical_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every field's type made canonical (metadata dropped)."""
    return pa.schema([pa.field(f.name, canonical_type(f.type)) for f in schema])


# -- unification across shards -------------------------------------------------------------

#: Time units, coarsest first.
_UNITS = ("s", "ms", "us", "ns")


def unify_types(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The narrowest canonical type holding every value of both ``a`` and ``b``, or None.

    Lossless widening only: integer widths, float32 -> float64 (the value the file holds),
    integers -> float64 (exact up to 2**53), decimals
    of different precision / scale, string and list flavours, a ``null``-typed column (empty
    or all-null shard) takes the other type, timestamps of different units (the finer one)
    and time zones (the first one: the same instants), a date beside timestamps without a
    time zone (its midnight, as :func:`evalkit.aggregate.keys.match_key_parts` matches a date
    across runs), times of day of different units (the finer one). String vs number, bool vs
    number, a date beside zoned timestamps, naive vs zoned timestamps: None. A float32 column
    unified as float64 is read exactly or, as a key, by its printed value
    (:func:`conform_array`)."""
    a, b = canonical_type(a), canonical_type(b)
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_dictionary(a) or pa.types.is_dictionary(b):
        la = pa.string() if a == STRING_DICT else a
        lb = pa.string() if b == STRING_DICT else b
        return pa.string() if la == lb == pa.string() else None
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return pa.int64()  # int64 with uint64: values beyond int64 fail the read, by name
    num = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)
    if any(f(a) for f in num) and any(f(b) for f in num):
        if pa.types.is_decimal(a) and pa.types.is_decimal(b):
            scale = max(a.scale, b.scale)  # type: ignore[attr-defined]
            whole = max(a.precision - a.scale, b.precision - b.scale)  # type: ignore[attr-defined]
            return pa.decimal128(whole + scale, scale) if whole + scale <= 38 else pa.decimal256(
                min(76, whole + scale), scale)
        if pa.types.is_decimal(a) and pa.types.is_integer(b) or pa.types.is_decimal(b) and pa.types.is_integer(a):
            d = a if pa.types.is_decimal(a) else b
            whole = max(d.precision - d.scale, 19)  # type: ignore[attr-defined]
            if whole + d.scale <= 38:  # type: ignore[attr-defined]
                return pa.decimal128(whole + d.scale, d.scale)  # type: ignore[attr-defined]
        return pa.float64()
    if pa.types.is_date32(b) and pa.types.is_timestamp(a):
        a, b = b, a
    if pa.types.is_date32(a) and pa.types.is_timestamp(b):
        # a date is the timestamp of its midnight (as keys match across runs); a date names
        # no instant, so beside zoned timestamps it is a conflict
        return b if b.tz is None else None  # type: ignore[attr-defined]
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        if (a.tz is None) != (b.tz is None):  # type: ignore[attr-defined]
            return None
        unit = _UNITS[max(_UNITS.index(a.unit), _UNITS.index(b.unit))]  # type: ignore[attr-defined]
        return pa.timestamp(unit, a.tz)  # type: ignore[attr-defined]
    if pa.types.is_time(a) and pa.types.is_time(b):
        # times of day of two units (polars writes ns, DuckDB us, pyarrow time32 ms): the finer
        unit = _UNITS[max(_UNITS.index(a.unit), _UNITS.index(b.unit))]  # type: ignore[attr-defined]
        return pa.time32(unit) if unit in ("s", "ms") else pa.time64(unit)
    if (pa.types.is_list(a) or pa.types.is_fixed_size_list(a)) and (
            pa.types.is_list(b) or pa.types.is_fixed_size_list(b)):
        inner = unify_types(a.value_type, b.value_type)  # type: ignore[attr-defined]
        if inner is None:
            return None
        if pa.types.is_fixed_size_list(a) and pa.types.is_fixed_size_list(b) and a.list_size == b.list_size:  # type: ignore[attr-defined]
            return pa.list_(inner, a.list_size)  # type: ignore[attr-defined]
        return pa.list_(inner)
    return None


# -- conforming arrays -----------------------------------------------------------------------


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def uuid_text(storage: pa.Array) -> pa.Array:
    """16-byte UUIDs (``fixed_size_binary[16]``) as their canonical 36-character text, vectorised."""
    n = len(storage)
    raw = storage.buffers()[1]
    b = np.frombuffer(raw, dtype=np.uint8, count=(storage.offset + n) * 16)[storage.offset * 16:].reshape(n, 16)
    hexed = np.empty((n, 32), dtype=np.uint8)
    hexed[:, 0::2] = _HEX[b >> 4]
    hexed[:, 1::2] = _HEX[b & 15]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    for lo, hi, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        out[:, at:at + hi - lo] = hexed[:, lo:hi]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int64)
    text = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))
    if storage.null_count:
        text = pc.if_else(storage.is_null(), pa.scalar(None, pa.large_string()), text)
    return text.cast(pa.string())


def _unwrap(arr: pa.Array) -> pa.Array:
    """An extension array as plain values (uuid text, bool8 booleans, else its storage)."""
    t = arr.type
    name = t.extension_name  # type: ignore[attr-defined]
    storage = arr.storage  # type: ignore[attr-defined]
    if name == UUID:
        return uuid_text(storage)
    if name == BOOL8:
        return pc.not_equal(storage, 0)
    if name == PERIOD and getattr(t, "freq", None):
        return period_text(storage, t.freq)  # type: ignore[attr-defined]
    return storage


def period_text(ordinals: pa.Array, freq: str) -> pa.Array:
    """pandas ``Period`` values (their ordinals at frequency ``freq``) as the text pandas
    prints (``2020-01`` for monthly periods), nulls kept: a period group key was its ordinal
    (600 for 2020-01), a number no reader recognises."""
    import pandas as pd

    missing = ordinals.is_null().to_numpy(zero_copy_only=False)
    values = ordinals.fill_null(0).to_numpy(zero_copy_only=False)
    text = pd.PeriodIndex.from_ordinals(values, freq=freq).astype(str)
    return pa.array(list(text), pa.string(), mask=missing if missing.any() else None)


def conform_array(arr: pa.Array | pa.ChunkedArray, target: pa.DataType, what: str = "column", *,
                  key: bool = False) -> pa.Array:
    """``arr`` as type ``target`` (a canonical or unified type), losslessly.

    ``key``: the column is a key (group, slice or join key, class label), not a value: a
    float32 / float16 column read as float64 is the float64 of each value's shortest text
    (:func:`float_as_printed`), so a key is one key whichever float width its file holds.
    Values (``key=False``) are widened exactly.

    A value that does not fit (an unsigned value beyond int64 unified with signed shards,
    a timestamp beyond the finer unit's range) raises :class:`~evalkit.errors.InputError`
    naming ``what``; a type that cannot become ``target`` raises ColumnTypeError.
    """
    if isinstance(arr, pa.ChunkedArray):
        chunks = [conform_array(c, target, what, key=key) for c in arr.chunks]
        return pa.chunked_array(chunks, type=target).combine_chunks() if chunks else pa.array([], target)
    if arr.type == target:
        return arr
    try:
        if key and pa.types.is_float64(target):
            arr = _narrow_float_key(arr)
        return _conform(arr, target)
    except pa.ArrowInvalid as exc:
        raise InputError(f"{what}: values of type {arr.type} do not fit in {target} ({str(exc).splitlines()[0][:200]})") from None
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ColumnTypeError(f"{what}: cannot read type {arr.type} as {target} ({str(exc).splitlines()[0][:200]})") from None


def _narrow_float_key(arr: pa.Array) -> pa.Array:
    """A key column bound for float64: float32 / float16 values (plain, in an extension's
    storage or in a dictionary: categorical floats) as the float64 their text names; any
    other column as it is."""
    t = arr.type
    if _is_ext(t):
        return _narrow_float_key(_unwrap(arr))
    if pa.types.is_dictionary(t) and pa.types.is_floating(t.value_type):  # type: ignore[attr-defined]
        arr = arr.dictionary_decode()  # type: ignore[attr-defined]
        t = arr.type
    if pa.types.is_floating(t) and not pa.types.is_float64(t):
        return float_as_printed(arr)
    return arr


def float_as_printed(a: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A float32 (or float16) column as float64, each value the float64 of its shortest
    decimal text (float32 ``0.1`` is ``0.1``, not ``0.10000000149011612``; ``inf``, ``nan``
    and ``-0`` as themselves). The one rule for a narrow float *key* beside float64 keys:
    between the shards of one run (:func:`conform_array` with ``key=True``), between runs
    (:func:`evalkit.aggregate.keys.match_key_parts`) and between a predictions and a labels
    input (:class:`evalkit.join.LabelIndex`). The text tells every float32 value apart, so two
    values never merge (two float32 one ulp apart stay two keys). Never for values
    (probabilities, weights): those are widened exactly. Columns whose values repeat (keys)
    convert each distinct value once."""
    work = a.cast(pa.float32()) if pa.types.is_float16(a.type) else a
    if isinstance(work, pa.Array) and len(work) > 64:
        coded = pc.dictionary_encode(work)
        if len(coded.dictionary) * 4 <= len(work):
            values = coded.dictionary.cast(pa.string()).cast(pa.float64())
            return values.take(coded.indices)
    return work.cast(pa.string()).cast(pa.float64())


def _conform(arr: pa.Array, target: pa.DataType) -> pa.Array:
    t = arr.type
    if t == target:
        return arr
    if _is_ext(t):
        return _conform(_unwrap(arr), target)
    if pa.types.is_null(t):
        return pa.nulls(len(arr), target)
    if pa.types.is_dictionary(t):
        if pa.types.is_dictionary(target):
            return pa.DictionaryArray.from_arrays(arr.indices.cast(target.index_type),  # type: ignore[attr-defined]
                                                  _conform(arr.dictionary, target.value_type))  # type: ignore[attr-defined]
        return _conform(arr.dictionary_decode(), target)  # type: ignore[attr-defined]
    if pa.types.is_dictionary(target):
        return pc.dictionary_encode(_conform(arr, target.value_type)).cast(target)  # type: ignore[attr-defined]
    if _is_var_list(t) or pa.types.is_fixed_size_list(t):
        inner = target.value_type  # type: ignore[attr-defined]
        if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
            arr = _list_view_to_list(arr)
            t = arr.type
        if _is_ext(t.value_type) or pa.types.is_dictionary(t.value_type):  # type: ignore[attr-defined]
            # Cast cannot see through these: rebuild the list around conformed values.
            if pa.types.is_fixed_size_list(t):
                values = _conform(arr.values, inner)  # type: ignore[attr-defined]
                rebuilt = pa.FixedSizeListArray.from_arrays(values, t.list_size, mask=arr.is_null())  # type: ignore[attr-defined]
            else:
                values = _conform(arr.values, inner)  # type: ignore[attr-defined]
                cls = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
                rebuilt = cls.from_arrays(arr.offsets, values, mask=arr.is_null() if arr.null_count else None)  # type: ignore[attr-defined]
            return _conform(rebuilt, target)
        if pa.types.is_float16(t.value_type):  # type: ignore[attr-defined]
            arr = arr.cast(_with_value_type(t, pa.float32()))
        return arr.cast(target)
    if pa.types.is_float16(t) and not pa.types.is_float32(target):
        arr = arr.cast(pa.float32())
    if pa.types.is_decimal(t) and pa.types.is_floating(target):
        return _decimal_as_float(arr).cast(target)
    return arr.cast(target, safe=True)


def _decimal_as_float(arr: pa.Array) -> pa.Array:
    """Decimals as float64, losslessly or not at all: each value through its text (Arrow's own
    decimal cast rounds ``0.3`` at scale 20 to ``0.30000000000000004``), and refused
    (``ArrowInvalid``, an InputError naming the column) when a value does not come back from
    the float unchanged: ``12345678901234567890`` and ``...891`` would be one float, two groups
    merged without a word, as an int64 beyond 2**53 is refused."""
    f = arr.cast(pa.string()).cast(pa.float64())
    try:
        back = f.cast(pa.string()).cast(arr.type)
        same = pc.equal(back, arr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        same = pa.array([False] * len(arr))
    if not pc.all(same).as_py():
        bad = arr.filter(pc.invert(same.fill_null(True)))
        raise pa.ArrowInvalid(f"decimal value {bad[0].as_py()} is not exactly a float64 ({f.filter(pc.invert(same.fill_null(True)))[0].as_py()!r})")
    return f


def _list_view_to_list(arr: pa.Array) -> pa.Array:
    """A list view as a plain list (Arrow's own cast yields invalid offsets for short arrays):
    the values in row order and offsets from the row sizes, nulls kept."""
    sizes = pc.list_value_length(arr).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    values = pc.list_flatten(arr)
    mask = arr.is_null() if arr.null_count else None
    return pa.LargeListArray.from_arrays(pa.array(offsets), values, mask=mask)


def _with_value_type(t: pa.DataType, v: pa.DataType) -> pa.DataType:
    if pa.types.is_fixed_size_list(t):
        return pa.list_(v, t.list_size)  # type: ignore[attr-defined]
    if pa.types.is_large_list(t):
        return pa.large_list(v)
    if pa.types.is_list_view(t):
        return pa.list_view(v)
    if pa.types.is_large_list_view(t):
        return pa.large_list_view(v)
    return pa.list_(v)


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema, where: str = "input") -> pa.RecordBatch:
    """``batch`` with every column of ``schema`` (in its order) brought to its type."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    arrays = [conform_array(batch.column(f.name), f.type, f"{where}: column {f.name!r}") for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


#: Field metadata polars writes (to Arrow and Parquet) for a ``pl.Categorical`` column, whose
#: dictionary lists the values in the order polars' string cache first saw them: an order
#: declared by no one (a ``pl.Enum``, a pandas ``Categorical`` or an Arrow dictionary declare one).
POLARS_CATEGORICAL = b"_PL_CATEGORICAL"


def declares_order(field: pa.Field | None) -> bool:
    """Whether a dictionary column's dictionary order may be one its writer declared: not a
    polars ``Categorical`` (field metadata ``_PL_CATEGORICAL*``)."""
    meta = (field.metadata or {}) if field is not None else {}
    return not any(k.startswith(POLARS_CATEGORICAL) for k in meta)


def conform_table(table: pa.Table, where: str = "input") -> pa.Table:
    """An in-memory table with every column in its canonical type (one chunk per column).
    A polars ``Categorical`` column is its text (:func:`declares_order`): canonical types drop
    the field metadata that tells it apart, and its dictionary order is no declared order."""
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type) and not declares_order(f):
            # take() from the values as large strings: polars exports string views
            text = [c.dictionary.cast(pa.large_string()).take(c.indices) for c in table.column(i).chunks]
            table = table.set_column(i, f.name, pa.chunked_array(text, pa.large_string()))
    schema = canonical_schema(table.schema)
    if table.schema.equals(schema, check_metadata=False):
        return table
    arrays = [conform_array(table.column(i), f.type, f"{where}: column {f.name!r}")
              for i, f in enumerate(schema)]
    return pa.Table.from_arrays(arrays, schema=schema)


def read_schema(logical: pa.Schema, columns: Sequence[str], dictionary_columns: Sequence[str] = ()) -> pa.Schema:
    """The exact schema of the batches a reader yields: ``columns`` in their unified type, the
    string ones among ``dictionary_columns`` as ``dictionary<int32, string>``."""
    wanted = set(dictionary_columns)
    fields = []
    for c in columns:
        t = logical.field(c).type
        if c in wanted and (pa.types.is_string(t) or t == STRING_DICT):
            t = STRING_DICT
        fields.append(pa.field(c, t))
    return pa.schema(fields)


__all__ = [
    "POLARS_CATEGORICAL", "STRING_DICT", "declares_order", "canonical_schema", "canonical_type", "conform_array", "conform_batch",
    "conform_table", "check_key_type", "float_as_printed", "is_key_type", "is_string_like", "logical_type", "read_schema", "unify_types", "uuid_text",
]
