"""Group keys are told apart as Arrow tells them apart (T27): Python compares and hashes two
zone-aware datetimes with the same ``tzinfo`` by wall time, ignoring ``fold``, so the two
instants of 01:30 on the night daylight saving time ends were one key, and one hour's rows
vanished from every table (the overall line included), exit 0.

The kind: every key value that enters a Python dict must be one-to-one with Arrow's identity
of the key (:func:`evalkit.aggregate.keys.key_values`), for every key type."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.aggregate.keys import _KeyIndex, canonical_keys, key_values
from evalkit.cli import main
from evalkit.normalize import canonical_schema, conform_array

NY = "America/New_York"
# 2020-11-01 01:30 EDT (05:30 UTC) and 01:30 EST (06:30 UTC): one wall time, two instants.
FOLD_US = [1604208600_000000, 1604212200_000000]


def _hourly(per: int = 50) -> tuple[pd.DataFrame, np.ndarray]:
    """The tester's repro (/tmp/tester/t27.py): hourly scoring jobs over three days around
    the end of US daylight saving time; 72 distinct hours, 01:00 local twice."""
    hours = pd.date_range("2020-10-31 00:00", periods=72, freq="h", tz=NY)
    rng = np.random.default_rng(27)
    n = len(hours) * per
    q = rng.uniform(size=n)
    y = (rng.random(n) < q).astype(int)
    loss = -np.log(np.clip(np.where(y == 1, q, 1 - q), 1e-7, 1 - 1e-7))
    return pd.DataFrame({"prob": q, "label": y, "hour": np.repeat(hours, per)}), loss


def _minimal() -> pd.DataFrame:
    """The tester's 20-row case: 10 rows at 01:30-04:00 and 10 at 01:30-05:00."""
    t = pd.to_datetime(np.repeat(np.array(FOLD_US, dtype="datetime64[us]"), 10)).tz_localize("UTC").tz_convert(NY)
    p = np.linspace(0.05, 0.95, 20)
    return pd.DataFrame({"prob": p, "label": np.tile([0, 1], 10), "t_": t})


# -- the conversion boundary -----------------------------------------------------------------


def _key_columns() -> list[tuple[str, pa.Array]]:
    """One key column of every group-key type, with values Python might merge: each in its
    canonical type (as the reader yields it) and canonical key form."""
    fold = [*FOLD_US, None, FOLD_US[0]]
    cols: list[tuple[str, pa.Array]] = []
    for unit, div in (("s", 10**6), ("ms", 10**3), ("us", 1), ("ns", 1)):
        mul = 1000 if unit == "ns" else 1
        for tz in (NY, "Europe/Berlin", "-05:00", "UTC", None):
            vals = [None if v is None else v // div * mul for v in fold]
            if tz == "Europe/Berlin":  # its end of DST: 2020-10-25 02:30 CEST / CET
                vals = [None if v is None else (1603585800 + 3600 * (v == FOLD_US[1])) * 10**6 // div * mul
                        for v in fold]
            cols.append((f"timestamp[{unit}, {tz}]", pa.array(vals, pa.timestamp(unit, tz))))
    cols.append(("timestamp[ns] below the us", pa.array([1, 2, 1000, None], pa.timestamp("ns", NY))))
    edges = [int(np.datetime64(d, "s").astype(np.int64)) for d in ("9999-12-31T12:00", "0001-01-01T12:00")]
    cols.append(("timestamp[s] at Python's first and last years", pa.array([*edges, 0, None], pa.timestamp("s", NY))))
    cols.append(("dictionary<timestamp>", pa.array(FOLD_US + [None], pa.timestamp("us", NY)).dictionary_encode()))
    cols += [
        ("float64 -0.0 NaN", pa.array([0.0, -0.0, float("nan"), None, 1.5])),
        ("float16", pa.array(np.array([0.0, -0.0, 0.1, 0.2], dtype=np.float16))),
        ("float32", pa.array(np.array([0.1, 0.1 + 1e-8, -0.0, 0.0], dtype=np.float32))),
        ("decimal", pa.array([decimal.Decimal("1.0"), decimal.Decimal("1.00"), decimal.Decimal("0.1")],
                             pa.decimal128(5, 2))),
        ("date32", pa.array([dt.date(2020, 11, 1), dt.date(2020, 11, 2), None])),
        ("date64", pa.array([86_400_000, 2 * 86_400_000], pa.date64())),
        ("time64[us]", pa.array([1, 2, 3600 * 10**6], pa.time64("us"))),
        ("time64[ns] in us", pa.array([1000, 2000], pa.time64("ns"))),
        ("duration[us]", pa.array([1, 2, -1], pa.duration("us"))),
        ("duration[ns]", pa.array([1, 2, 1000], pa.duration("ns"))),
        ("bool int", pa.array([True, False, None])),
        ("uint64", pa.array([2**64 - 1, 0, 1], pa.uint64())),
        ("string", pa.array(["é", "e\u0301", "", None])),
        ("binary", pa.array([b"\x00", b"", b"\x00\x00"])),
    ]
    out = []
    for name, a in cols:
        t = canonical_schema(pa.schema([("k", a.type)])).field("k").type
        out.append((name, canonical_keys(conform_array(a, t))))
    return out


@pytest.mark.parametrize("name,col", _key_columns(), ids=[n for n, _ in _key_columns()])
def test_key_values_are_one_to_one_with_arrow_identity(name, col):
    values = key_values(col)
    assert len(values) == len(col)
    arrow_distinct = pc.count_distinct(col.dictionary_decode() if pa.types.is_dictionary(col.type) else col,
                                       mode="all").as_py()
    assert len(set(values)) == arrow_distinct, values
    # and back: the column's own type and values (a zone keeps its name)
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    back = pa.array(values, type=t)
    assert back.equals(col.dictionary_decode() if pa.types.is_dictionary(col.type) else col)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [NY, "Australia/Lord_Howe", "Asia/Kolkata", "Europe/Dublin"])
def test_zoned_key_values_are_each_instant_at_its_offset(unit, tz):
    """The numpy-built values equal Python's own (each datetime at its UTC offset), over
    1850-2150: historic offsets in seconds (New York's -4:56:02 before 1883), half-hour DST
    (Lord Howe), a zone whose 'winter' time is its DST (Dublin); nulls, chunks, dictionaries."""
    rng = np.random.default_rng(5)
    lo, hi = -3_786_825_600, 5_679_590_400  # 1850 .. 2150 in seconds
    secs = np.concatenate([rng.integers(lo, hi, 400), np.array(FOLD_US) // 10**6])
    ticks = secs * {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
    if unit == "ns":
        secs = secs[(ticks // 10**9) == secs]  # (within the ns range)
        ticks = secs * 10**9
    mask = np.zeros(len(ticks), dtype=bool)
    mask[::7] = True
    arr = pa.array(ticks, pa.timestamp(unit, tz), mask=mask)
    want = [v if v is None else v.astimezone(dt.timezone(v.utcoffset())) for v in arr.to_pylist()]
    for form in (arr, pa.chunked_array([arr.slice(0, 100), arr.slice(100)]), arr.dictionary_encode()):
        got = key_values(form)
        assert got == want
        assert [None if v is None else v.utcoffset() for v in got] == [
            None if v is None else v.utcoffset() for v in want]
        assert pa.array(got, type=arr.type).equals(arr)


def test_zoned_key_values_print_as_their_wall_time_and_offset():
    col = pa.array(FOLD_US, pa.timestamp("us", NY))
    assert [str(v) for v in key_values(col)] == ["2020-11-01 01:30:00-04:00", "2020-11-01 01:30:00-05:00"]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_key_index_keeps_the_two_instants_apart_by_every_path(unit):
    mul = {"s": 10**-6, "ms": 10**-3, "us": 1, "ns": 1000}[unit]
    col = pa.array([int(v * mul) for v in FOLD_US * 3], pa.timestamp(unit, NY))
    for arr in (col, col.dictionary_encode()):
        idx = _KeyIndex(["t"])
        _, slots = idx.encode([arr], len(arr))
        assert len(idx) == 2 and sorted(slots.tolist()) == [0, 1]
        idx.encode([arr.slice(1)], len(arr) - 1)  # the same keys again
        assert len(idx) == 2
        merged = _KeyIndex(["t"])
        merged.merge_from(idx)
        assert len(merged) == 2
        got = merged.key_arrays(np.argsort(merged.sort_rank()))["t"]
        assert got.type == pa.timestamp(unit, NY)
        assert got.to_pylist() == col.slice(0, 2).to_pylist()  # in time order, zone kept


# -- the library and the CLI -------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 7, 1000])
def test_by_a_zoned_hour_over_the_end_of_dst_keeps_every_row(tmp_path, batch_size):
    df, loss = _hourly()
    path = tmp_path / "dst_hourly.parquet"
    df.to_parquet(path, row_group_size=500)
    kw = {} if batch_size is None else {"batch_size": batch_size}
    plain = evalkit.evaluate(path, write_rows=False, **kw)
    r = evalkit.evaluate(path, by=["hour"], slices=["hour"], write_rows=False, **kw)
    assert plain.overall["count"] == r.overall["count"] == 3600
    assert r.overall["mean"] == pytest.approx(plain.overall["mean"], rel=1e-12)
    assert r.overall["mean"] == pytest.approx(loss.mean(), rel=1e-12)
    assert r.groups["class"]["count"].sum() == 3600
    g = r.groups["hour"]
    assert len(g) == 72 and (g["count"] == 50).all()
    assert str(g["hour"].dtype) == f"datetime64[us, {NY}]"
    want = pd.Series(loss).groupby(df["hour"]).mean()
    got = g.set_index("hour")["mean"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False, rtol=1e-12)
    assert len(r.slices) == 72 and r.slices["slice"].nunique() == 72


def test_the_twenty_row_case(tmp_path):
    df = _minimal()
    r = evalkit.evaluate(df, by=["t_"], slices=["t_"], write_rows=False)
    assert r.overall["count"] == 20
    assert r.groups["class"]["count"].sum() == 20
    g = r.groups["t_"]
    assert g["count"].tolist() == [10, 10]
    assert (g[[c for c in g.columns if c.startswith("p9")]].max(axis=1) <= g["max"] + 1e-12).all()
    assert g["t_"].dt.tz_convert("UTC").tolist() == [pd.Timestamp(v, unit="us", tz="UTC") for v in FOLD_US]
    assert sorted(r.slices["slice"]) == ["t_=2020-11-01 01:30:00-04:00", "t_=2020-11-01 01:30:00-05:00"]


def test_a_zoned_key_with_another_key_column():
    df, _ = _hourly(per=4)
    df["region"] = np.tile(["EU", "US"], len(df) // 2)
    r = evalkit.evaluate(df, by=[["hour", "region"], ["region", "hour"]], write_rows=False)
    assert r.overall["count"] == len(df)
    for name in ("hour,region", "region,hour"):
        assert len(r.groups[name]) == 144 and r.groups[name]["count"].sum() == len(df)


def test_a_dictionary_encoded_zoned_key():
    df = _minimal()
    t = pa.Table.from_pandas(df, preserve_index=False)
    t = t.set_column(2, "t_", t.column("t_").dictionary_encode())
    r = evalkit.evaluate(t, by=["t_"], write_rows=False)
    assert r.overall["count"] == 20 and r.groups["t_"]["count"].tolist() == [10, 10]


def test_joined_on_and_grouped_by_the_same_zoned_key():
    ts = pd.to_datetime(np.array(FOLD_US[0] - 3600_000000 * 4, dtype="datetime64[us]")
                        + np.arange(10) * np.timedelta64(3600, "s")).tz_localize("UTC").tz_convert(NY)
    assert (ts.hour == 1).sum() == 2  # 01:00 twice
    preds = pd.DataFrame({"ts": ts, "prob": np.full(10, 0.9)})
    labels = pd.DataFrame({"ts": ts, "label": np.ones(10, dtype=int)})
    r = evalkit.evaluate(preds, labels=labels, on="ts", by=["ts"], write_rows=False)
    assert r.overall["count"] == 10 and r.overall["accuracy"] == 1.0
    assert len(r.groups["ts"]) == 10


def _cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_by_a_zoned_hour_over_the_end_of_dst(tmp_path: Path):
    df, loss = _hourly()
    path = tmp_path / "dst_hourly.parquet"
    df.to_parquet(path)
    out, out2 = tmp_path / "by", tmp_path / "plain"
    r = _cli("evaluate", path, "--by", "hour", "--slices", "hour", "--no-plots", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    r2 = _cli("evaluate", path, "--no-plots", "--out", out2, "--quiet")
    assert r2.exit_code == 0, r2.output
    assert r.output.splitlines()[0] == r2.output.splitlines()[0]  # the overall line
    assert "3,600 rows" in r.output.splitlines()[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["count"] == 3600 == summary["metadata"]["rows_used"]
    by_hour = pq.read_table(out / "by_hour.parquet")
    assert by_hour.num_rows == 72 and by_hour.schema.field("hour").type == pa.timestamp("us", NY)
    assert pc.sum(by_hour.column("count")).as_py() == 3600
    assert pc.sum(pq.read_table(out / "by_class.parquet").column("count")).as_py() == 3600
    cal = pq.read_table(out / "calibration.parquet").to_pandas()
    cal = cal[cal["grouping"] == "hour"]
    assert cal["group"].nunique() == 72 and cal["hour"].nunique() == 72 and cal["count"].sum() == 3600
    assert {"2020-11-01 01:00:00-04:00", "2020-11-01 01:00:00-05:00"} <= set(cal["group"])
    grouped = pq.read_table(out / "grouped.parquet")
    zoned = [f.name for f in grouped.schema if f.type == pa.timestamp("us", NY)]
    assert len(zoned) == 1 and pc.count_distinct(grouped.column(zoned[0])).as_py() == 72
    assert pq.read_table(out / "slices.parquet").num_rows == 72
    report = (out / "report.md").read_text()
    assert "2020-11-01 01:00:00-04:00" in report and "2020-11-01 01:00:00-05:00" in report


def test_compare_and_history_match_zoned_keys_by_instant(tmp_path: Path):
    """Two runs over the DST night, the second with the key in milliseconds (so compare casts
    it to the first run's type before matching): every hour is one matched group."""
    df, _ = _hourly(per=10)
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    df.to_parquet(a)
    df.assign(hour=df["hour"].astype(f"datetime64[ms, {NY}]")).to_parquet(b)
    for src, out in ((a, "ra"), (b, "rb")):
        r = _cli("evaluate", src, "--by", "hour", "--no-plots", "--no-by-class", "--out", tmp_path / out, "-q")
        assert r.exit_code == 0, r.output
    r = _cli("compare", tmp_path / "ra", tmp_path / "rb", "--out", tmp_path / "cmp", "-q")
    assert r.exit_code == 0, r.output
    cmp = pq.read_table(tmp_path / "cmp" / "by_hour.parquet").to_pandas()
    assert len(cmp) == 72 and set(cmp["status"]) == {"unchanged"}
    assert (cmp["baseline_count"] == 10).all() and (cmp["candidate_count"] == 10).all()
    r = _cli("history", tmp_path / "ra", tmp_path / "rb", "--no-plots", "--out", tmp_path / "hist", "-q")
    assert r.exit_code == 0, r.output
    trends = pq.read_table(tmp_path / "hist" / "trends.parquet").to_pandas()
    hours = trends[trends["grouping"] == "hour"]
    assert len(hours) == 72 and (hours["runs"] == 2).all()


def test_compare_pairs_rows_on_a_zoned_row_key_of_another_unit(tmp_path: Path):
    """Row key ``ts`` (one instant a minute over the DST night) in microseconds in the baseline,
    milliseconds in the candidate: compare brings both to one type before pairing, and the
    two 01:xx hours' minutes are distinct keys (they were 'not unique: unpaired', and the
    two 01:00 groups one)."""
    ts = pd.date_range("2020-11-01 04:00Z", periods=240, freq="min").tz_convert(NY)
    rng = np.random.default_rng(1)
    q = rng.uniform(0.05, 0.95, len(ts))
    a = pd.DataFrame({"ts": ts, "hour": ts.tz_convert("UTC").floor("h").tz_convert(NY), "prob": q,
                      "label": (rng.random(len(ts)) < q).astype(int)})
    b = a.assign(prob=np.clip(q + 0.1, 0, 1), ts=a["ts"].astype(f"datetime64[ms, {NY}]"),
                 hour=a["hour"].astype(f"datetime64[ms, {NY}]"))
    for df, out in ((a, "ra"), (b, "rb")):
        df.to_parquet(tmp_path / f"{out}.parquet")
        r = _cli("evaluate", tmp_path / f"{out}.parquet", "--key", "ts", "--by", "hour", "--no-plots",
                 "--out", tmp_path / out, "-q")
        assert r.exit_code == 0, r.output
    r = _cli("compare", tmp_path / "ra", tmp_path / "rb", "--out", tmp_path / "cmp", "-q")
    assert r.exit_code == 0, r.output
    pairing = json.loads((tmp_path / "cmp" / "compare.json").read_text())["metadata"]["pairing"]
    assert pairing["keys"] == ["ts"], pairing
    cmp = pq.read_table(tmp_path / "cmp" / "by_hour.parquet")
    assert cmp.schema.field("hour").type == pa.timestamp("us", NY)
    df = cmp.to_pandas()
    assert len(df) == 4 and (df["baseline_count"] == 60).all() and set(df["method"]) == {"paired"}
    assert (df["n_paired"] == 60).all()
