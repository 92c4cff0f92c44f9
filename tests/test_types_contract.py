"""Arrow types end to end: group keys agree in every output, and only EvalkitErrors come out.

Property (hypothesis): for a group column of any Arrow type a writer produces, with nulls
and NaN, the keys of ``by_g.parquet``, ``summary.json``, ``report.md`` and ``compare`` agree
with each other and with ``pandas.groupby(dropna=False)`` on the same values (NaN and null
are one missing key, shown as ``∅``).

Fuzz: random schemas and types in every role (prediction, label, key, group, weight),
through every public entry point (``evaluate``, ``inspect``, ``compare``,
``cross_entropy``): a result or an :class:`~evalkit.errors.EvalkitError`, nothing else.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evalkit
from evalkit.errors import EvalkitError
from evalkit.escape import MISSING_KEY, fmt_key

PROPERTY = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# (Arrow type, strategy of one non-null Python value)
_D0 = dt.datetime(2024, 1, 1)
KEY_TYPES: list[tuple[pa.DataType, st.SearchStrategy[Any]]] = [
    (pa.int8(), st.integers(-3, 3)),
    (pa.uint16(), st.integers(0, 5)),
    (pa.int32(), st.integers(-2, 2)),
    (pa.int64(), st.sampled_from([0, 7, 2**40])),
    (pa.float16(), st.sampled_from([0.5, 1.5, -2.0])),
    (pa.float32(), st.sampled_from([0.25, 1.5, math.nan])),
    (pa.float64(), st.sampled_from([0.1, 0.2, -0.0, 3.0, math.nan])),
    (pa.string(), st.sampled_from(["a", "b", "", "∅", " x"])),
    (pa.large_string(), st.sampled_from(["north", "south"])),
    (pa.string_view(), st.sampled_from(["a", "b", "c"])),
    (pa.dictionary(pa.int8(), pa.string()), st.sampled_from(["x", "y"])),
    (pa.bool_(), st.booleans()),
    (pa.date32(), st.sampled_from([dt.date(2024, 1, 1), dt.date(2023, 12, 31)])),
    (pa.timestamp("us"), st.sampled_from([_D0, _D0 + dt.timedelta(hours=1)])),
    (pa.timestamp("ns", "UTC"), st.sampled_from([_D0.replace(tzinfo=dt.UTC)])),
    (pa.decimal128(6, 2), st.sampled_from([decimal.Decimal("1.50"), decimal.Decimal("-2.25")])),
]


def _canon(v: Any) -> Any:
    """One comparable form of a key value read back from any output."""
    if v is None or (not isinstance(v, str | bytes) and pd.isna(v)):
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, pd.Timestamp | dt.datetime):
        ts = pd.Timestamp(v)
        return ("time", (ts.tz_convert("UTC").tz_localize(None) if ts.tz is not None else ts).isoformat())
    if isinstance(v, dt.date):
        return ("time", pd.Timestamp(v).isoformat())
    if isinstance(v, decimal.Decimal | int | float):
        return ("num", float(v))
    return ("str", str(v))


def _json_canon(v: Any, t: pa.DataType) -> Any:
    """summary.json values: timestamps and dates are ISO strings, decimals strings."""
    if v is None:
        return None
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _canon(pd.Timestamp(v))
    if pa.types.is_decimal(t):
        return ("num", float(v))
    return _canon(v)


@st.composite
def key_columns(draw: st.DrawFn) -> tuple[pa.Array, pa.DataType]:
    t, values = draw(st.sampled_from(KEY_TYPES))
    n = draw(st.integers(2, 16))
    vals = draw(st.lists(st.one_of(values, st.none()), min_size=n, max_size=n))
    if pa.types.is_dictionary(t):
        arr = pa.array(vals, pa.string()).dictionary_encode().cast(t)
    elif pa.types.is_string_view(t):
        arr = pa.array(vals, pa.string()).cast(t)
    elif pa.types.is_float16(t):
        arr = pa.array([None if v is None else np.float16(v) for v in vals], t)
    else:
        arr = pa.array(vals, t, from_pandas=False)
    return arr, t


def _table(g: pa.Array) -> pa.Table:
    n = len(g)
    rng = np.random.default_rng(n)
    p = rng.dirichlet(np.ones(3), size=n)
    return pa.table({"prob_a": p[:, 0], "prob_b": p[:, 1], "prob_c": p[:, 2],
                     "label": rng.integers(0, 3, n), "g": g})


@PROPERTY
@given(key_columns())
def test_group_keys_agree_in_every_output(case: tuple[pa.Array, pa.DataType]) -> None:
    g, t = case
    table = _table(g)
    # The reference: pandas on the same values (NaN and null are both missing there).
    ref_series = g.dictionary_decode().to_pandas() if pa.types.is_dictionary(t) else \
        g.cast(pa.float32()).to_pandas() if pa.types.is_float16(t) else \
        g.cast(pa.string()).to_pandas() if pa.types.is_string_view(t) else g.to_pandas()
    ref_counts = ref_series.to_frame("g").groupby("g", dropna=False, observed=True).size()
    want = {_canon(k): int(c) for k, c in ref_counts.items()}
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "preds.parquet"
        pq.write_table(table, src)
        for data in (table, src):  # in memory and from a file
            result = evalkit.evaluate(data, by="g", plots=False)
            out = result.write(Path(d) / f"out-{type(data).__name__}", overwrite=True)
            by_g = pq.read_table(out / "by_g.parquet").to_pandas()
            got = {_canon(k): int(c) for k, c in zip(by_g["g"], by_g["count"], strict=True)}
            assert got == want
            summary = json.loads((out / "summary.json").read_text())
            got_json = {_json_canon(r["g"], t): r["count"] for r in summary["groups"]["g"]}
            assert got_json == want
            # report.md: one row per group, each key printed as fmt_key prints it, all distinct.
            md = (out / "report.md").read_text().split("## By g", 1)[1].split("##", 1)[0]
            printed = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")][2:]
            assert len(printed) == len(want) == len(set(printed))
            assert printed.count(MISSING_KEY) == (1 if None in want else 0)
            assert sorted(printed) == sorted(fmt_key(k) for k in by_g["g"])
            # compare matches every group of a run with itself, the missing one included.
            cmp = evalkit.compare(out, out).table("g")
            assert len(cmp) == len(want)
            assert set(cmp["status"]) == {"unchanged"}, cmp


# -- fuzz: random types in every role, every entry point --------------------------------------

ROLE_TYPES = [
    pa.float64(), pa.float32(), pa.float16(), pa.int8(), pa.uint64(), pa.int64(), pa.bool_(), pa.string(),
    pa.large_string(), pa.string_view(), pa.binary(), pa.null(), pa.date32(), pa.timestamp("ms", "UTC"),
    pa.duration("s"), pa.decimal128(5, 3), pa.list_(pa.float64()), pa.large_list(pa.float32()),
    pa.list_(pa.float64(), 3), pa.list_(pa.string()), pa.struct([("x", pa.float64())]),
    pa.map_(pa.string(), pa.float64()), pa.dictionary(pa.int32(), pa.string()), pa.time64("us"),
    pa.uuid(),
]
NAMES = ["prob_a", "prob_b", "prob_c", "probs", "label", "y", "id", "g", "w", "split", "prob", "logits"]


def _random_array(t: pa.DataType, n: int, rng: np.random.Generator) -> pa.Array:
    if pa.types.is_null(t):
        return pa.nulls(n)
    if pa.types.is_floating(t):
        vals = rng.random(n)
        vals[rng.random(n) < 0.1] = np.nan
        arr = pa.array(vals.astype(np.float16 if pa.types.is_float16(t) else np.float64))
        return arr.cast(t)
    if pa.types.is_integer(t):
        return pa.array(rng.integers(0, 4, n)).cast(t)
    if pa.types.is_boolean(t):
        return pa.array(rng.random(n) < 0.5)
    if pa.types.is_dictionary(t):
        return pa.array(rng.choice(["a", "b", "c"], n)).dictionary_encode()
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.array(rng.choice(["a", "b", "c", "0.5", ""], n)).cast(t)
    if isinstance(t, pa.UuidType):
        return pa.array([bytes(rng.integers(0, 256, 16, dtype=np.uint8)) for _ in range(n)], t)
    if pa.types.is_fixed_size_list(t):
        p = rng.dirichlet(np.ones(t.list_size), size=n)
        return pa.FixedSizeListArray.from_arrays(pa.array(p.ravel()), t.list_size)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        if pa.types.is_string(t.value_type):
            return pa.array([["x"] * int(rng.integers(0, 3)) for _ in range(n)], t)
        return pa.array([list(rng.dirichlet(np.ones(3))) for _ in range(n)]).cast(t)
    if pa.types.is_struct(t):
        return pa.array([{"x": float(v)} for v in rng.random(n)], t)
    if pa.types.is_map(t):
        return pa.array([[("k", float(v))] for v in rng.random(n)], t)
    if pa.types.is_decimal(t):
        return pa.array([decimal.Decimal(f"{v:.3f}") for v in rng.random(n)], t)
    if pa.types.is_date(t) or pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time(t):
        return pa.array(rng.integers(0, 10**6, n)).cast(pa.int64()).cast(
            pa.int32() if pa.types.is_date32(t) else pa.int64()).cast(t)
    return pa.array(rng.random(n))


@st.composite
def random_tables(draw: st.DrawFn) -> pa.Table:
    """Either random columns, or a valid prediction table whose every role has a random type."""
    n = draw(st.integers(0, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True))
        return pa.table({name: _random_array(draw(st.sampled_from(ROLE_TYPES)), n, rng) for name in names})
    p = rng.dirichlet(np.ones(3), size=n)
    cols: dict[str, pa.Array] = {}
    if draw(st.booleans()):
        ptype = draw(st.sampled_from([pa.float64(), pa.float32(), pa.decimal128(38, 18)]))
        for j, c in enumerate("abc"):
            cols[f"prob_{c}"] = pa.array(np.round(p[:, j], 12)).cast(ptype, safe=False)
    else:
        ltype = draw(st.sampled_from([pa.list_(pa.float64()), pa.large_list(pa.float32()), pa.list_(pa.float64(), 3),
                                      pa.list_view(pa.float64())]))
        flat = pa.array(p.ravel())
        if pa.types.is_list_view(ltype):
            cols["probs"] = pa.ListViewArray.from_arrays(pa.array(np.arange(n, dtype=np.int32) * 3),
                                                         pa.array(np.full(n, 3, dtype=np.int32)), flat)
        else:
            cols["probs"] = pa.FixedSizeListArray.from_arrays(flat, 3).cast(ltype)
    y = rng.integers(0, 3, n)
    label_type = draw(st.sampled_from([pa.int8(), pa.uint64(), pa.int64(), pa.float32(), pa.string(),
                                       pa.large_string(), pa.string_view(), pa.dictionary(pa.int16(), pa.string()),
                                       pa.decimal128(4, 1)]))
    if pa.types.is_integer(label_type) or pa.types.is_floating(label_type) or pa.types.is_decimal(label_type):
        cols["label"] = pa.array(y.astype(np.float64)).cast(label_type)
    else:
        names_ = pa.array(np.array(["a", "b", "c"] if "probs" not in cols else ["0", "1", "2"])[y])
        cols["label"] = names_.dictionary_encode().cast(label_type) if pa.types.is_dictionary(label_type) \
            else names_.cast(label_type)
    for name in ("id", "g", "w", "split"):
        if draw(st.booleans()):
            cols[name] = _random_array(draw(st.sampled_from(ROLE_TYPES)), n, rng)
    return pa.table(cols)


OPTIONS = st.sampled_from([
    {}, {"by": "g"}, {"by": ["g", "id"]}, {"by": "g,g"}, {"weight": "w"}, {"keys": ["id"]},
    {"label": "y"}, {"predictions": ["probs"]}, {"predictions": ["prob_a", "prob_b"]}, {"on_invalid": "skip"},
    {"by": "split,g", "weight": "w"}, {"classes": ["a", "b", "c"]},
])


def _only_evalkit_errors(fn: Any, *args: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args, **kw)
        except EvalkitError as exc:
            assert str(exc) and not str(exc).startswith("internal error")
            return None


@FUZZ
@given(random_tables(), OPTIONS, st.booleans())
def test_random_types_in_every_role_only_evalkit_errors(table: pa.Table, kw: dict, via_file: bool) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as d:
        data: Any = table
        if via_file:
            data = Path(d) / "t.parquet"
            _only_evalkit_errors(pq.write_table, table, data)
            if not data.exists():
                return  # a type Parquet cannot store
            _only_evalkit_errors(evalkit.inspect_input if hasattr(evalkit, "inspect_input") else _inspect, data)
        result = _only_evalkit_errors(evalkit.evaluate, data, plots=False, **kw)
        if result is not None:
            out = _only_evalkit_errors(result.write, Path(d) / "out")
            if out is not None:
                _only_evalkit_errors(evalkit.compare, out, data, config={**kw, "plots": False})
        labels = {"label", "y"} & set(table.column_names)
        for name in {"probs", "prob_a"} & set(table.column_names):
            for lab in labels:
                probs = table.column(name).to_pylist()
                _only_evalkit_errors(evalkit.cross_entropy, probs, table.column(lab).to_pylist())
                _only_evalkit_errors(evalkit.cross_entropy, table.column(name), table.column(lab))


def _inspect(path: Path) -> Any:
    from evalkit.inspect import inspect_input

    return inspect_input(path)


def test_duplicated_grouping_column_is_a_usage_error(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from evalkit.cli import main
    from evalkit.errors import UsageError

    table = _table(pa.array(["a", "b"] * 4))
    with pytest.raises(UsageError, match="'g' twice"):
        evalkit.evaluate(table, by="g,g")
    pq.write_table(table, tmp_path / "p.parquet")
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--by", "g,g",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "twice" in r.output and "internal error" not in r.output


# -- compare across runs whose key types differ ----------------------------------------------


def _runs(tmp: Path, store_b: Any, store_c: Any) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    n = 60
    p = rng.dirichlet(np.ones(3), size=n)
    y = rng.integers(0, 3, n)
    out = []
    for name, store in (("b", store_b), ("c", store_c)):
        table = pa.table({"id": np.arange(n), "prob_a": p[:, 0], "prob_b": p[:, 1], "prob_c": p[:, 2],
                          "label": y, "store": store})
        src = tmp / f"{name}.parquet"
        pq.write_table(table, src)
        out.append(evalkit.evaluate(src, by="store", plots=False).write(tmp / f"run_{name}"))
    return out[0], out[1]


def test_compare_matches_string_and_integer_keys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from evalkit.cli import main

    ints = pa.array(np.arange(60) % 3, pa.int32())
    b, c = _runs(tmp_path, ints.cast(pa.string()), ints)
    res = evalkit.compare(b, c, gates={"groups": {"store": {"max_regression": 0.01}}})
    table = res.table("store")
    assert sorted(table["store"]) == ["0", "1", "2"] and set(table["status"]) == {"unchanged"}
    assert any("'store'" in n and "string" in n and "number" in n for n in res.metadata["notes"])
    assert res.passed
    r = CliRunner().invoke(main, ["compare", str(b), str(c), "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "cmp" / "by_store.parquet").num_rows == 3


def test_gate_on_a_grouping_with_no_matched_group_fails(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from evalkit.cli import main

    b, c = _runs(tmp_path, pa.array(["a", "b", "c"] * 20), pa.array(["x", "y", "z"] * 20))
    res = evalkit.compare(b, c, gates={"groups": {"store": {"max_regression": 0.05}}})
    assert not res.passed
    assert "no group of 'store' is in both runs" in str(res.failures[0])
    cfg = tmp_path / "gates.yaml"
    cfg.write_text("gates:\n  groups:\n    store: {max_regression: 0.05}\n")
    r = CliRunner().invoke(main, ["compare", str(b), str(c), "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert r.exit_code == 5, r.output
    assert "could not be checked" in r.output
    assert json.loads((tmp_path / "o" / "compare.json").read_text())["gates"]["passed"] is False


def test_missing_keys_match_across_runs_and_print_as_marker(tmp_path: Path) -> None:
    store = pa.array([1.5, None, math.nan, 2.5] * 15)
    b, c = _runs(tmp_path, store, store.cast(pa.float32()))
    res = evalkit.compare(b, c)
    table = res.table("store")
    assert len(table) == 3 and set(table["status"]) == {"unchanged"}
    assert int(table.loc[table["store"].isna(), "baseline_count"].iloc[0]) == 30
    assert f"| {MISSING_KEY} |" in res.to_markdown()
    summary = json.loads((b / "summary.json").read_text())
    assert [g["store"] for g in summary["groups"]["store"]] == [1.5, 2.5, None]


def test_null_timestamp_key_is_json_null(tmp_path: Path) -> None:
    ts = pa.array([dt.datetime(2024, 5, 1), None] * 30, pa.timestamp("us"))
    b, _ = _runs(tmp_path, ts, ts)
    summary = json.loads((b / "summary.json").read_text())
    assert [g["store"] for g in summary["groups"]["store"]] == ["2024-05-01T00:00:00", None]
    assert f"| {MISSING_KEY} |" in (b / "report.md").read_text()


def test_null_join_key_is_reported_as_null(tmp_path: Path) -> None:
    from evalkit.errors import JoinError

    preds = pa.table({"id": pa.array([1, None, 3], pa.int64()), "prob_a": [0.5, 0.5, 0.5], "prob_b": [0.5, 0.5, 0.5]})
    labels = pa.table({"id": [1, 2, 3], "label": [0, 1, 0]})
    with pytest.raises(JoinError) as err:
        evalkit.evaluate(preds, labels=labels, on="id")
    assert "key null" in str(err.value) and "None" not in str(err.value)


@pytest.mark.parametrize("values", [["a", 3], [{"x": 1}, [1]], [1.5, "x"]])
def test_dataframe_column_of_mixed_types_is_a_column_type_error(values: list[Any]) -> None:
    from evalkit.errors import ColumnTypeError

    df = pd.DataFrame({"prob_a": [0.5, 0.5], "prob_b": [0.5, 0.5], "label": [0, 1], "g": values})
    with pytest.raises(ColumnTypeError, match="column g"):
        evalkit.evaluate(df, by="g")


@pytest.mark.parametrize("role", ["by", "slices", "on"])
@pytest.mark.parametrize("dictionary", [False, True])
def test_an_interval_key_is_a_column_type_error_not_a_crash(role: str, dictionary: bool) -> None:
    """An Arrow interval (what DuckDB's INTERVAL is in memory) has no order and no Parquet
    type: as a group, slice or join key it is refused up front, naming the column and what to do
    (review 4: it crashed with ArrowTypeError 'Sorting not supported' when groups were sorted)."""
    from evalkit.errors import ColumnTypeError

    days = pa.array([pa.MonthDayNano([0, d, 0]) for d in (0, 1, 2, 3)], pa.month_day_nano_interval())
    col = days.dictionary_encode() if dictionary else days
    preds = pa.table({"k": col, "prob_a": [0.4, 0.6, 0.3, 0.8], "prob_b": [0.6, 0.4, 0.7, 0.2],
                      "label": [0, 1, 1, 0]})
    kw: dict[str, Any] = {"by": "k"} if role == "by" else {"slices": ["k"]} if role == "slices" else {
        "labels": preds.select(["k", "label"]), "on": "k"}
    if role == "on":
        preds = preds.drop(["label"])
    with pytest.raises(ColumnTypeError, match=r"column 'k' has type .*interval.* cast it to a string"):
        evalkit.evaluate(preds, write_rows=False, **kw)
