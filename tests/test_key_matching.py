"""The same group key across runs, whatever wrote the input (rt-final8 F4, F10, F2): compare
and history match key columns by one rule (:func:`evalkit.aggregate.keys.match_key_parts`)
and note a key column whose type changes between runs. Inputs are written the way users
write them: pandas, pyarrow, polars and DuckDB."""

from __future__ import annotations

import datetime as dt
import decimal
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit
from evalkit.comparison import compare
from evalkit.trend import history

N = 400


def _frame(seed: int, values: list[Any]) -> pd.DataFrame:
    """Predictions of two classes, a label, and a key column ``k`` cycling through ``values``."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, N)
    return pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": rng.choice(["a", "b"], N),
                         "k": [values[i % len(values)] for i in range(N)]})


def _report(tmp: Path, name: str, write: Any) -> Path:
    """Evaluate the input ``write(path)`` writes, by ``k``; the report directory."""
    src = tmp / f"{name}.parquet"
    write(src)
    out = tmp / name
    evalkit.evaluate(str(src), by=["k"], out=out, plots=False)
    return out


def _pandas(seed: int, values: list[Any], dtype: Any = None) -> Any:
    def write(path: Path) -> None:
        df = _frame(seed, values)
        if dtype is not None:
            df["k"] = df["k"].astype(dtype)
        df.to_parquet(path)
    return write


def _polars(seed: int, values: list[Any], dtype: Any) -> Any:
    def write(path: Path) -> None:
        import polars as pl

        pl.from_pandas(_frame(seed, values)).with_columns(pl.col("k").cast(dtype)).write_parquet(path)
    return write


def _pyarrow(seed: int, values: list[Any], ty: pa.DataType) -> Any:
    def write(path: Path) -> None:
        df = _frame(seed, values)
        t = pa.Table.from_pandas(df.drop(columns="k"), preserve_index=False)
        pq.write_table(t.append_column("k", pa.array(df["k"].tolist(), ty)), path)
    return write


def _duckdb(seed: int, values: list[Any], sql_type: str) -> Any:
    def write(path: Path) -> None:
        import duckdb

        df = _frame(seed, values)  # noqa: F841 - read by DuckDB by name
        con = duckdb.connect()
        con.execute(f"COPY (SELECT prob_a, prob_b, label, CAST(k AS {sql_type}) AS k FROM df) "
                    f"TO '{path}' (FORMAT PARQUET)")
        con.close()
    return write


def _quiet_history(paths: list[Path], **kw: Any) -> Any:
    return history([str(p) for p in paths], lookback=1, plots=False, **kw)


# -- F4: dates and timestamps ----------------------------------------------------------------

DAYS = [dt.date(2026, 1, 1), dt.date(2026, 1, 2)]


def test_a_date_key_and_a_midnight_timestamp_key_are_one_group_in_compare_and_history(tmp_path: Path) -> None:
    """A ``day`` written as date32 one night (pandas ``datetime.date``) and as timestamp[us] the
    next (pandas ``to_datetime``; polars Datetime the night after): history keeps every day one
    series over the three runs, as compare matches them, and both note the type change."""
    r0 = _report(tmp_path, "d0", _pandas(0, DAYS))
    r1 = _report(tmp_path, "d1", _pandas(1, [pd.Timestamp(d) for d in DAYS], "datetime64[us]"))
    import polars as pl

    r2 = _report(tmp_path, "d2", _polars(2, [pd.Timestamp(d) for d in DAYS], pl.Datetime("ms")))
    assert pq.read_schema(tmp_path / "d0.parquet").field("k").type == pa.date32()
    assert pq.read_schema(tmp_path / "d1.parquet").field("k").type == pa.timestamp("us")
    with pytest.warns(evalkit.EvalkitWarning, match="holds date values in some runs, timestamp values"):
        h = _quiet_history([r0, r1, r2])
    trend = h.trends["k"]
    assert trend["runs"].tolist() == [3, 3], trend
    assert [pd.Timestamp(v) for v in trend["k"]] == [pd.Timestamp(d) for d in DAYS]
    assert any("a date as the timestamp of its midnight" in n for n in h.notes)
    assert "a date as the timestamp of its midnight" in h.to_markdown()
    with pytest.warns(evalkit.EvalkitWarning, match="holds date values in the baseline but timestamp"):
        c = compare(r0, r1)
    assert c.tables["k"]["status"].tolist() != ["only_in_baseline"] * 2
    assert (c.tables["k"]["baseline_count"] > 0).all() and (c.tables["k"]["candidate_count"] > 0).all()
    assert any("holds date values in the baseline but timestamp in the candidate" in n
               for n in c.metadata["notes"])


def test_naive_and_utc_timestamps_are_kept_apart_with_a_note_by_both(tmp_path: Path) -> None:
    """A naive timestamp names no instant: matching it to a UTC one would be a guess. Both
    commands keep the groups apart, and both say so (they said nothing)."""
    stamps = [pd.Timestamp(d) for d in DAYS]
    r0 = _report(tmp_path, "n0", _pandas(0, stamps, "datetime64[us]"))
    r1 = _report(tmp_path, "n1", _pandas(1, [s.tz_localize("UTC") for s in stamps], "datetime64[us, UTC]"))
    with pytest.warns(evalkit.EvalkitWarning, match="kept apart: a timestamp without a time zone"):
        h = _quiet_history([r0, r1])
    assert h.trends["k"]["runs"].tolist() == [1, 1, 1, 1]
    c = compare(r0, r1)
    assert sorted(c.tables["k"]["status"]) == ["only_in_baseline"] * 2 + ["only_in_candidate"] * 2
    assert any("timestamp values in the baseline but timestamp (UTC) in the candidate" in n
               and "kept apart" in n for n in c.metadata["notes"])


def test_timestamps_in_two_time_zones_are_matched_on_the_instant(tmp_path: Path) -> None:
    stamps = [pd.Timestamp(d, tz="UTC") for d in DAYS]
    r0 = _report(tmp_path, "z0", _pandas(0, stamps, "datetime64[us, UTC]"))
    r1 = _report(tmp_path, "z1", _pandas(1, [s.tz_convert("Europe/Paris") for s in stamps],
                                         "datetime64[ms, Europe/Paris]"))
    with pytest.warns(evalkit.EvalkitWarning, match="matched on the instant"):
        h = _quiet_history([r0, r1])
    assert h.trends["k"]["runs"].tolist() == [2, 2]
    c = compare(r0, r1)
    assert not c.tables["k"]["status"].str.startswith("only").any()


# -- F10: float32 and float64 ---------------------------------------------------------------

THR = [0.1, 0.2, 0.3, 0.5]


def test_a_float32_key_matches_the_float64_key_it_prints_as(tmp_path: Path) -> None:
    """``thr`` written as float64 by pandas one night and as Float32 by polars the next:
    0.1 (float32) is the 0.1 of the other night in compare and history, shown as 0.1; a note
    says the width changed."""
    import polars as pl

    r0 = _report(tmp_path, "f0", _pandas(0, THR))
    r1 = _report(tmp_path, "f1", _polars(1, THR, pl.Float32))
    assert pq.read_schema(tmp_path / "f1.parquet").field("k").type == pa.float32()
    c = compare(r0, r1)
    t = c.tables["k"]
    assert t["k"].tolist() == THR and not t["status"].str.startswith("only").any()
    assert any("float64 values in the baseline but float32 in the candidate" in n for n in c.metadata["notes"])
    with pytest.warns(evalkit.EvalkitWarning, match="matched at float32 precision"):
        h = _quiet_history([r0, r1])
    assert h.trends["k"]["k"].tolist() == THR and h.trends["k"]["runs"].tolist() == [2] * 4
    # float32 alone: shown as the numbers the writer printed, no note
    r2 = _report(tmp_path, "f2", _polars(2, THR, pl.Float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", evalkit.EvalkitWarning)
        h = _quiet_history([r1, r2])
        assert compare(r1, r2).tables["k"]["k"].tolist() == THR
    assert h.trends["k"]["k"].tolist() == THR and "0.10000000149" not in h.to_markdown()


def test_float32_keys_never_merge_and_float64_keys_stay_exact(tmp_path: Path) -> None:
    """Adjacent float32 values stay two groups; float64 keys that differ beyond float32
    precision stay two groups (nothing is rounded to float32)."""
    a = float(np.float32(0.1))
    b = float(np.nextafter(np.float32(0.1), np.float32(1)))
    r0 = _report(tmp_path, "e0", _pyarrow(0, [a, b], pa.float32()))
    r1 = _report(tmp_path, "e1", _pyarrow(1, [a, b], pa.float32()))
    assert len(compare(r0, r1).tables["k"]) == 2
    assert len(_quiet_history([r0, r1]).trends["k"]) == 2
    x, y = 0.1, 0.1 + 1e-12
    r2 = _report(tmp_path, "e2", _pyarrow(2, [x, y], pa.float64()))
    r3 = _report(tmp_path, "e3", _pyarrow(3, [x, y], pa.float64()))
    assert compare(r2, r3).tables["k"]["k"].tolist() == [x, y]
    assert _quiet_history([r2, r3]).trends["k"]["k"].tolist() == [x, y]


# -- F2's remainder: decimals -----------------------------------------------------------------

DECS = [decimal.Decimal("0.10000000000000000001"), decimal.Decimal("0.10000000000000000002"),
        decimal.Decimal("0.1"), decimal.Decimal("7")]


def test_decimal_keys_are_matched_exactly_between_decimal_runs(tmp_path: Path) -> None:
    """decimal128(38, 20) keys that differ beyond a float's precision (pyarrow one night, DuckDB
    the next): four groups matched in compare (it refused them with exit 3) and history."""
    r0 = _report(tmp_path, "m0", _pyarrow(0, DECS, pa.decimal128(38, 20)))
    r1 = _report(tmp_path, "m1", _pyarrow(1, DECS, pa.decimal128(38, 20)))
    t = compare(r0, r1).tables["k"]
    assert len(t) == 4 and not t["status"].str.startswith("only").any()
    assert sorted(t["k"]) == sorted(DECS)
    assert _quiet_history([r0, r1]).trends["k"]["runs"].tolist() == [2] * 4


def test_decimal_against_float_is_matched_on_the_float_value_and_collisions_are_refused(tmp_path: Path) -> None:
    """DuckDB DECIMAL(10,2) one night, pandas float64 the next: matched on the float value with
    a note; decimals of one run that become one float are refused (exit 3), in both commands."""
    vals = [0.1, 0.25, 7.0]
    r0 = _report(tmp_path, "q0", _duckdb(0, vals, "DECIMAL(10,2)"))
    assert pa.types.is_decimal(pq.read_schema(tmp_path / "q0.parquet").field("k").type)
    r1 = _report(tmp_path, "q1", _pandas(1, vals))
    c = compare(r0, r1)
    assert len(c.tables["k"]) == 3 and not c.tables["k"]["status"].str.startswith("only").any()
    assert any("decimal values in the baseline but float64 in the candidate" in n for n in c.metadata["notes"])
    with pytest.warns(evalkit.EvalkitWarning, match="matched on their float value"):
        assert _quiet_history([r0, r1]).trends["k"]["runs"].tolist() == [2] * 3
    r2 = _report(tmp_path, "q2", _pyarrow(2, DECS, pa.decimal128(38, 20)))
    with pytest.raises(evalkit.CompareError, match="one key"):
        compare(r2, r1)
    with pytest.raises(evalkit.ReportError, match="one key"):
        _quiet_history([r2, r1])


# -- one run's keys (rt-api9 F6, F3, F2) ------------------------------------------------------


def test_decimal_shards_unified_with_floats_are_refused_when_a_value_is_not_exactly_a_float(tmp_path: Path) -> None:
    """rt-api9 F6: a decimal128(38, 0) key file (12345678901234567890 and ...891) beside a float
    file: both decimals became one float, one group of 40 rows, without a word. Now refused
    (exit 3) naming the file and column, as an int64 beyond 2**53 is; decimals that are exactly
    floats are still read, as floats (0.1 decimal = 0.1 float: one group)."""
    d = tmp_path / "dec"
    d.mkdir()
    big = [decimal.Decimal("12345678901234567890"), decimal.Decimal("12345678901234567891")]
    _pyarrow(0, big, pa.decimal128(38, 0))(d / "a.parquet")
    _pandas(1, [1.5])(d / "b.parquet")
    with pytest.raises(evalkit.InputError, match=r"a.parquet: column 'k': values of type decimal128\(38, 0\) "
                                                 r"do not fit in double .*12345678901234567890"):
        evalkit.evaluate(str(d), by=["k"], plots=False)
    ok = tmp_path / "ok"
    ok.mkdir()
    _pyarrow(0, [decimal.Decimal("0.1"), decimal.Decimal("0.3")], pa.decimal128(38, 20))(ok / "a.parquet")
    _pandas(1, [0.1, 0.3])(ok / "b.parquet")
    g = evalkit.evaluate(str(ok), by=["k"], plots=False).groups["k"]
    assert g["k"].tolist() == [0.1, 0.3] and g["count"].tolist() == [2 * N // 2] * 2


def test_times_of_day_with_nanoseconds_are_refused_by_name_not_merged_or_crashing(tmp_path: Path) -> None:
    """rt-api9 F3: a time64[ns] group column (polars ``Time``) with a part below the microsecond
    crashed the run (ArrowInvalid from pandas, exit 1); its times also became one group (Python
    times hold microseconds). Now exit 3 naming the column; whole-microsecond times work."""
    import polars as pl
    from click.testing import CliRunner

    from evalkit.cli import main

    times = [dt.time(10, 0), dt.time(10, 0, 0, 5)]
    _polars(0, times, pl.Time)(tmp_path / "us.parquet")
    assert pq.read_schema(tmp_path / "us.parquet").field("k").type == pa.time64("ns")
    g = evalkit.evaluate(str(tmp_path / "us.parquet"), by=["k"], plots=False).groups["k"]
    assert g["k"].tolist() == times and g["count"].tolist() == [N // 2] * 2
    df = _frame(1, [0])
    t = pa.Table.from_pandas(df.drop(columns="k"), preserve_index=False).append_column(
        "k", pa.array([36_000_000_000_001 + i % 2 for i in range(N)], pa.int64()).cast(pa.time64("ns")))
    pq.write_table(t, tmp_path / "ns.parquet")
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "ns.parquet"), "--by", "k", "--no-plots",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 3, r.output
    assert "group column 'k': a key column holds times of day with nanoseconds" in r.stderr
    assert "10:00:00.000000001" in r.stderr and not (tmp_path / "o").exists()


def test_pandas_period_keys_are_their_text_not_their_ordinals(tmp_path: Path) -> None:
    """rt-api9 F2: a pandas Period group column came back as ordinals (600, 601, 602 for
    2020-01..03); now the periods as pandas prints them, from a DataFrame and from Parquet."""
    df = _frame(0, [0])
    df["k"] = pd.period_range("2020-01", periods=3, freq="M").take(np.arange(N) % 3)
    df.loc[0, "k"] = pd.NaT
    df.to_parquet(tmp_path / "p.parquet")
    for data in (df, str(tmp_path / "p.parquet")):
        g = evalkit.evaluate(data, by=["k"], plots=False).groups["k"]
        assert g["k"].tolist()[:3] == ["2020-01", "2020-02", "2020-03"] and g["count"].sum() == N
        assert g["k"].isna().tolist() == [False, False, False, True]


def test_evaluate_shows_a_float32_key_as_its_writer_prints_it(tmp_path: Path) -> None:
    """rt-final8 F10: report.md and the terminal showed polars Float32 0.1 as
    0.10000000149011612 (pandas, polars and DuckDB print 0.1); adjacent float32 values stay
    distinct (0.1 and 0.10000001)."""
    import polars as pl

    from evalkit.escape import fmt_key, key_labels

    nxt = float(np.nextafter(np.float32(0.1), np.float32(1)))
    src = tmp_path / "f.parquet"
    _polars(0, [0.1, nxt, 0.5], pl.Float32)(src)
    res = evalkit.evaluate(str(src), by=["k"], out=tmp_path / "r", plots=False)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| 0.1 | " in md and "| 0.10000001 | " in md and "0.10000000149" not in md
    text = res.to_text() if hasattr(res, "to_text") else ""
    assert "0.10000000149" not in text
    assert [fmt_key(np.float32(v)) for v in (0.1, nxt, 0.5)] == ["0.1", "0.10000001", "0.5"]
    assert key_labels([res.groups["k"]["k"]]).to_pylist() == ["0.1", "0.10000001", "0.5"]
    sliced = evalkit.evaluate(str(src), slices=["k"], plots=False).slices
    assert sorted(sliced["slice"]) == ["k=0.1", "k=0.10000001", "k=0.5"]


def test_a_dictionary_that_repeats_a_value_or_holds_a_null_groups_by_value() -> None:
    """rt-api9 F24: an Arrow dictionary column whose dictionary repeats a value (valid Arrow) or
    holds a null raised pandas' bare ValueError (categories must be unique / cannot be null), as
    a group column and as a row key. Keys are read by value: x is one group, the null entry the
    missing group."""
    rng = np.random.default_rng(36)
    p = rng.uniform(0.1, 0.9, 60)
    codes = pa.array(np.arange(60) % 3, pa.int8())
    for values, want in ((["x", "x", "y"], {"x": 40, "y": 20}), (["x", None, "y"], {"x": 20, "y": 20, None: 20})):
        g = pa.DictionaryArray.from_arrays(codes, pa.array(values))
        t = pa.table({"prob_a": p, "prob_b": 1 - p, "label": pa.array(["a", "b"] * 30), "g": g,
                      "id": pa.array(np.arange(60))})
        res = evalkit.evaluate(t, by=["g"], slices=["g"], plots=False)
        groups = res.groups["g"]
        assert {(None if pd.isna(k) else k): int(n) for k, n in zip(groups["g"], groups["count"], strict=True)} == want
        assert sorted(res.slices["slice"]) == sorted(f"g={'∅' if k is None else k}" for k in want)
        keyed = evalkit.evaluate(t, keys=["g", "id"], plots=False)  # a row key: the hardest rows carry it
        hard = keyed.hardest["overall"]
        assert set(hard["g"].dropna()) <= {"x", "y"} and len(hard)


def test_a_parquet_period_key_is_its_text_in_a_fresh_process(tmp_path: Path) -> None:
    """rt-final9 F3: a Parquet Period column read as its ordinals (672) unless pandas had
    registered its Arrow extension type first (pd.read_parquet does), so the CLI and a fresh
    process gave 672 and a notebook '2026-01'. evalkit registers it."""
    import os
    import subprocess
    import sys

    df = _frame(0, [0])
    df["k"] = pd.period_range("2026-01", periods=2, freq="M").take(np.arange(N) % 2)
    df.to_parquet(tmp_path / "p.parquet")
    path = str(tmp_path / "p.parquet")
    code = f"import evalkit; g = evalkit.evaluate({path!r}, by=['k'], plots=False).groups['k']; print(list(g['k']))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).parents[1])})
    assert out.stdout.strip() == "['2026-01', '2026-02']", out.stdout + out.stderr


def test_row_keys_int_in_one_run_and_text_in_the_other_are_paired_by_the_same_rule(tmp_path: Path) -> None:
    """rt-final9 F7: compare paired rows on ``id`` only when both runs typed it alike: int64 ids
    against the same ids as text were silently unpaired (a 0.083 regression called unchanged).
    Row keys follow the group keys' rule (7 = '7'), and the pairing line says so."""
    rng = np.random.default_rng(5)
    n = 2000
    p = rng.uniform(0.2, 0.8, n)
    label = rng.choice(["a", "b"], n)
    base = pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": label, "id": np.arange(n) * 7})
    worse = base.assign(prob_a=np.clip(p - np.where(label == "a", 0.05, -0.05), 0.01, 0.99))
    worse["prob_b"] = 1 - worse["prob_a"]
    base.to_parquet(tmp_path / "b.parquet")
    worse.assign(id=worse["id"].astype(str)).to_parquet(tmp_path / "c.parquet")
    for name in ("b", "c"):
        evalkit.evaluate(str(tmp_path / f"{name}.parquet"), keys=["id"], out=tmp_path / name, plots=False)
    res = compare(tmp_path / "b", tmp_path / "c")
    row = res.tables["overall"].iloc[0]
    assert row["method"] == "paired" and row["n_paired"] == n and row["status"] == "regression"
    assert "matched on their text form" in res.metadata["pairing"]["reason"]


# -- a run whose shards hold a key in two widths, against runs of one width -------------------


def test_a_run_of_float32_and_float64_shards_matches_float64_and_float32_runs(tmp_path: Path) -> None:
    """One night's input is a directory of a polars Float32 shard and a pandas float64 shard;
    the nights before and after wrote float64 and Float32 only. ``evalkit compare`` and
    ``evalkit history`` find the two groups 0.1 and 0.2 in every run (the mixed run had four:
    0.1, 0.10000000149011612, 0.2, 0.20000000298023224, each in one run only)."""
    import polars as pl
    from click.testing import CliRunner

    from evalkit.cli import main

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _polars(0, [0.1, 0.2], pl.Float32)(mixed / "a.parquet")
    _pandas(1, [0.1, 0.2])(mixed / "b.parquet")
    evalkit.evaluate(str(mixed), by=["k"], out=tmp_path / "rm", plots=False)
    r64 = _report(tmp_path, "r64", _pandas(2, [0.1, 0.2]))
    r32 = _report(tmp_path, "r32", _polars(3, [0.1, 0.2], pl.Float32))
    for other in (r64, r32):
        r = CliRunner().invoke(main, ["compare", str(tmp_path / "rm"), str(other), "--out", str(tmp_path / f"c{other.name}")])
        assert r.exit_code == 0, r.output
        t = pd.read_parquet(tmp_path / f"c{other.name}" / "by_k.parquet")
        assert t["k"].tolist() == [0.1, 0.2] and t["baseline_count"].tolist() == [N, N]
        assert t["candidate_count"].tolist() == [N // 2, N // 2]
    r = CliRunner().invoke(main, ["history", str(r64), str(tmp_path / "rm"), str(r32), "--no-plots",
                                  "--out", str(tmp_path / "h")])
    assert r.exit_code == 0, r.output
    with pytest.warns(evalkit.EvalkitWarning, match="matched at float32 precision"):
        h = _quiet_history([r64, tmp_path / "rm", r32])
    assert h.trends["k"]["k"].tolist() == [0.1, 0.2] and h.trends["k"]["runs"].tolist() == [3, 3]


def test_times_of_day_of_two_units_are_one_key_across_runs(tmp_path: Path) -> None:
    """pyarrow ``time32[ms]`` one night, DuckDB ``TIME`` (time64[us]) the next: one group per
    time, no note (reports hold group keys as time64[us] whatever the input's unit; the raw
    columns are one family too, see test_shard_keys)."""
    times = [dt.time(12), dt.time(13, 30)]
    r0 = _report(tmp_path, "t0", _pyarrow(0, times, pa.time32("ms")))
    r1 = _report(tmp_path, "t1", _duckdb(1, ["12:00:00", "13:30:00"], "TIME"))
    assert pq.read_schema(tmp_path / "t1.parquet").field("k").type == pa.time64("us")
    with warnings.catch_warnings():
        warnings.simplefilter("error", evalkit.EvalkitWarning)  # one family: no note
        t = compare(r0, r1).tables["k"]
        h = _quiet_history([r0, r1])
    assert t["k"].tolist() == times and not t["status"].str.startswith("only").any()
    assert h.trends["k"]["runs"].tolist() == [2, 2]
