"""The same key across the shards of one run (rt-final9 F9): the files of a directory that
hold a key column in two types of one kind are unified by the rule compare and history match
keys by across runs (:func:`evalkit.aggregate.keys.match_key_parts`), so one key is one group
whichever width or flavour a writer chose. Each pair below is one shard of each type; the run
must find the groups a single-type input finds, and as many as matching the two shards'
keys across runs finds. Key columns only: a value column (probability, weight) is widened
exactly. The shards of the last tests are written by pandas, polars, DuckDB and pyarrow."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit
from evalkit.aggregate.keys import match_key_parts
from evalkit.errors import SchemaDriftError

N = 40


def _shard(path: Path, k: pa.Array, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, len(k))
    pq.write_table(pa.table({"prob": p, "label": rng.integers(0, 2, len(k)), "k": k}), path)


def _groups(tmp_path: Path, a: pa.Array, b: pa.Array) -> list[tuple[object, int]]:
    _shard(tmp_path / "a.parquet", a, 1)
    _shard(tmp_path / "b.parquet", b, 2)
    g = evalkit.evaluate(str(tmp_path), by="k", plots=False).groups["k"]
    return list(zip(g["k"].tolist(), g["count"].tolist(), strict=True))


def _across_runs(a: pa.Array, b: pa.Array) -> int:
    """How many keys the two shards hold when matched as two runs' keys are."""
    m = match_key_parts([a, b])
    return len(pa.chunked_array(m.parts).unique())


def _twice(values: list, ty: pa.DataType) -> pa.Array:
    return pa.array(values * (N // len(values)), ty)


def test_float32_beside_float64_is_one_key(tmp_path):
    a, b = _twice([0.1, 0.2], pa.float64()), _twice([0.1, 0.2], pa.float32())
    # was four groups: 0.1, 0.10000000149011612, 0.2, 0.20000000298023224
    assert _groups(tmp_path, a, b) == [(0.1, N), (0.2, N)]
    assert _across_runs(a, b) == 2


def test_float16_beside_float64_is_one_key(tmp_path):
    a, b = _twice([0.5, 0.25], pa.float64()), _twice([0.5, 0.25], pa.float32()).cast(pa.float16())
    assert _groups(tmp_path, a, b) == [(0.25, N), (0.5, N)]


def test_distinct_float32_keys_stay_distinct_beside_float64(tmp_path):
    # two float32 values one ulp apart print differently: never one group
    x = np.float32(0.1)
    y = np.nextafter(x, np.float32(1))
    a = _twice([0.5], pa.float64())
    b = pa.array(np.array([x, y] * (N // 2), dtype=np.float32))
    got = _groups(tmp_path, a, b)
    assert [c for _, c in got] == [N // 2, N // 2, N]
    assert got[0][0] == 0.1 and got[1][0] == float(str(y))


def test_int32_beside_int64_is_one_key(tmp_path):
    a, b = _twice([1, 2], pa.int64()), _twice([1, 2], pa.int32())
    assert _groups(tmp_path, a, b) == [(1, N), (2, N)]
    assert _across_runs(a, b) == 2


def test_string_beside_large_string_is_one_key(tmp_path):
    a, b = _twice(["x", "y"], pa.string()), _twice(["x", "y"], pa.large_string())
    assert _groups(tmp_path, a, b) == [("x", N), ("y", N)]
    assert _across_runs(a, b) == 2


def test_dictionary_beside_plain_string_is_one_key(tmp_path):
    a, b = _twice(["x", "y"], pa.string()).dictionary_encode(), _twice(["x", "y"], pa.string())
    assert _groups(tmp_path, a, b) == [("x", N), ("y", N)]
    assert _across_runs(a, b) == 2


def test_timestamp_units_are_one_key(tmp_path):
    days = [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)]
    a, b = _twice(days, pa.timestamp("ms")), _twice(days, pa.timestamp("us"))
    got = _groups(tmp_path, a, b)
    assert [(k.to_pydatetime(), c) for k, c in got] == [(days[0], N), (days[1], N)]
    assert _across_runs(a, b) == 2


def test_date_beside_timestamp_is_its_midnight(tmp_path):
    # was refused (SchemaDriftError) while compare / history match a date to its midnight
    a = _twice([dt.date(2024, 1, 1), dt.date(2024, 1, 2)], pa.date32())
    b = _twice([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)], pa.timestamp("us"))
    got = _groups(tmp_path, a, b)
    assert [(k.to_pydatetime(), c) for k, c in got] == [(dt.datetime(2024, 1, 1), N), (dt.datetime(2024, 1, 2), N)]
    assert _across_runs(a, b) == 2


def test_date_beside_zoned_timestamp_is_refused(tmp_path):
    # across runs a date and a zoned timestamp are kept apart (a date names no instant);
    # in one column they cannot be one type: refused naming both files
    a = _twice([dt.date(2024, 1, 1)], pa.date32())
    b = _twice([dt.datetime(2024, 1, 1)], pa.timestamp("us", "UTC"))
    with pytest.raises(SchemaDriftError, match=r"a\.parquet.*b\.parquet|b\.parquet.*a\.parquet"):
        _groups(tmp_path, a, b)


def test_a_float32_probability_shard_beside_a_float64_one_is_read_exactly(tmp_path):
    """Probabilities are widened exactly (the value the file holds), never through their text:
    a float32 shard gives the same losses beside a float64 shard as read alone."""
    rng = np.random.default_rng(4)
    p = rng.uniform(0.05, 0.95, N).astype(np.float32)
    y = rng.integers(0, 2, N)
    f32 = pa.table({"prob": pa.array(p), "label": y})
    pq.write_table(f32, tmp_path / "b.parquet")
    alone = evalkit.evaluate(str(tmp_path / "b.parquet"), plots=False).rows["loss"].to_numpy()
    (tmp_path / "mix").mkdir()
    pq.write_table(f32, tmp_path / "mix" / "b.parquet")
    pq.write_table(pa.table({"prob": pa.array(p.astype(np.float64) * 0 + 0.5), "label": y}), tmp_path / "mix" / "a.parquet")
    mixed = evalkit.evaluate(str(tmp_path / "mix"), plots=False).rows["loss"].to_numpy()
    np.testing.assert_array_equal(mixed[N:], alone)
    want = -np.log(np.where(y == 1, p.astype(np.float64), 1 - p.astype(np.float64)))
    np.testing.assert_allclose(alone, want, rtol=1e-15)


def test_a_float32_weight_shard_beside_a_float64_one_is_read_exactly(tmp_path):
    """A weight is a value, not a key: its float32 shard keeps the number the file holds
    (never its printed value), as a probability does."""
    rng = np.random.default_rng(5)
    w = rng.uniform(0.1, 2, N).astype(np.float32)
    for name, ty in (("a", np.float64), ("b", np.float32)):
        pq.write_table(pa.table({"prob": rng.uniform(0.05, 0.95, N), "label": rng.integers(0, 2, N),
                                 "w": pa.array(w.astype(ty))}), tmp_path / f"{name}.parquet")
    rows = evalkit.evaluate(str(tmp_path), weight="w", plots=False).rows
    np.testing.assert_array_equal(rows["w"].to_numpy()[N:], w.astype(np.float64))
    assert rows["w"].to_numpy()[N] != float(str(w[0]))


# -- shards written by the tools users write with ---------------------------------------------


def _writer(tool: str, ty: object):
    """``write(path, values)``: a shard of ``prob``, ``label`` and a key column ``k`` holding
    ``values``, written by ``tool`` with ``k`` as that tool's type ``ty``."""

    def frame(values: list) -> pd.DataFrame:
        rng = np.random.default_rng(len(str(ty)))
        return pd.DataFrame({"prob": rng.uniform(0.05, 0.95, len(values)),
                             "label": rng.integers(0, 2, len(values))})

    def write(path: Path, values: list) -> None:
        df = frame(values)
        if tool == "pandas":
            df["k"] = pd.Series(values, dtype=ty)
            df.to_parquet(path)
        elif tool == "polars":
            pl.from_pandas(df).with_columns(pl.Series("k", values, dtype=ty)).write_parquet(path)
        elif tool == "polars-arrow":  # polars' own Arrow (string_view), written by pyarrow
            arrow = pl.from_pandas(df).with_columns(pl.Series("k", values, dtype=ty)).to_arrow(
                compat_level=pl.CompatLevel.newest())
            pq.write_table(arrow, path)
        elif tool == "duckdb":
            df["k"] = [str(v) for v in values]
            con = duckdb.connect()
            con.register("df", df)
            con.execute(f"COPY (SELECT prob, label, CAST(k AS {ty}) AS k FROM df) TO '{path}' (FORMAT PARQUET)")
            con.close()
        else:
            pq.write_table(pa.Table.from_pandas(df, preserve_index=False).append_column(
                "k", pa.array(values, ty)), path)

    return write


F, D, T = [0.1, 0.2], [dt.date(2024, 1, 1), dt.date(2024, 1, 2)], [dt.time(12), dt.time(13, 30)]
MIDNIGHTS = [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)]

#: (tool, type, values) of each shard and the groups the run must find (each of N rows).
WRITTEN = {
    # numbers: one key space by value, a float32 value the float64 it prints as
    "float32 pandas / float64 polars": (("pandas", "float32", F), ("polars", pl.Float64, F), F),
    "FLOAT duckdb / float64 pandas": (("duckdb", "FLOAT", F), ("pandas", "float64", F), F),
    "Float32 polars / DECIMAL duckdb": (("polars", pl.Float32, F), ("duckdb", "DECIMAL(4, 2)", F), F),
    "DECIMAL duckdb / float64 pandas": (("duckdb", "DECIMAL(4, 2)", F), ("pandas", "float64", F), F),
    "float32 pandas / Int64 polars": (("pandas", "float32", [1.0, 2.0]), ("polars", pl.Int64, [1, 2]), [1.0, 2.0]),
    "INTEGER duckdb / int64 pandas": (("duckdb", "INTEGER", [1, 2]), ("pandas", "int64", [1, 2]), [1, 2]),
    # strings: every flavour is text
    "string_view polars / VARCHAR duckdb": (("polars-arrow", pl.String, ["x", "y"]), ("duckdb", "VARCHAR", ["x", "y"]),
                                            ["x", "y"]),
    "category pandas / String polars": (("pandas", "category", ["x", "y"]), ("polars", pl.String, ["x", "y"]), ["x", "y"]),
    "Categorical polars / large_string pyarrow": (("polars", pl.Categorical, ["x", "y"]),
                                                  ("pyarrow", pa.large_string(), ["x", "y"]), ["x", "y"]),
    # times: a date is its midnight; timestamp units and time-of-day units are one
    "DATE duckdb / datetime64 pandas": (("duckdb", "DATE", D), ("pandas", "datetime64[ns]", MIDNIGHTS), MIDNIGHTS),
    "Datetime(ms) polars / TIMESTAMP duckdb": (("polars", pl.Datetime("ms"), MIDNIGHTS), ("duckdb", "TIMESTAMP", MIDNIGHTS),
                                               MIDNIGHTS),
    "Time polars / TIME duckdb": (("polars", pl.Time, T), ("duckdb", "TIME", T), T),
    "time32 pyarrow / TIME duckdb": (("pyarrow", pa.time32("ms"), T), ("duckdb", "TIME", T), T),
}


def _plain(v: object) -> object:
    return v.to_pydatetime() if hasattr(v, "to_pydatetime") else v


@pytest.mark.parametrize("case", list(WRITTEN))
def test_shards_written_by_two_tools_are_one_key_space(tmp_path, case):
    (ta, ya, va), (tb, yb, vb), want = WRITTEN[case]
    _writer(ta, ya)(tmp_path / "a.parquet", va * (N // 2))
    _writer(tb, yb)(tmp_path / "b.parquet", vb * (N // 2))
    g = evalkit.evaluate(str(tmp_path), by="k", plots=False).groups["k"]
    assert [_plain(k) for k in g["k"].tolist()] == want and g["count"].tolist() == [N] * len(want)
    # the same two shards as two runs' keys: as many keys
    parts = [pq.read_table(tmp_path / f, columns=["k"]).column("k") for f in ("a.parquet", "b.parquet")]
    assert len(pa.chunked_array([c for p in match_key_parts(parts).parts for c in p.chunks]).unique()) == len(want)
