"""Files as the tools people use write them: pandas, pyarrow, polars, DuckDB.

Each file is evaluated with no layout flags (conventional column names) and the result must
equal a numpy computation: the mean loss overall and per group, the group counts.
Also: shards written by different tools in one directory, hive partitions, and the types a
normalising reader must map (``evalkit.normalize``).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import EvalkitError, PartitionConflictError, SchemaDriftError
from evalkit.normalize import canonical_type, conform_array, unify_types

EPS = 1e-7
N = 48
CLASSES = ["a", "b", "c"]


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(3), size=N)
    p[0] = [1.0, 0.0, 0.0]  # one clipped row
    y = rng.integers(0, 3, size=N)
    y[0] = 1
    region = rng.choice(["north", "south", "east"], size=N)
    split = np.where(np.arange(N) % 3 == 0, "val", "train")
    return {"p": p, "y": y, "region": region, "split": split, "id": np.arange(N) * 7 + 3}


D = _data()


def _loss(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(p[np.arange(len(y)), y], EPS, 1 - EPS))


def _expected(group: np.ndarray | None = None) -> dict[str, tuple[int, float]]:
    loss = _loss(D["p"], D["y"])
    if group is None:
        return {"": (len(loss), float(loss.mean()))}
    return {str(g): (int((group == g).sum()), float(loss[group == g].mean())) for g in np.unique(group)}


def _wide_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "id": D["id"], "prob_a": D["p"][:, 0], "prob_b": D["p"][:, 1], "prob_c": D["p"][:, 2],
        "label": np.array(CLASSES)[D["y"]], "region": D["region"], "split": D["split"],
    })


def _list_frame() -> pd.DataFrame:
    return pd.DataFrame({"id": D["id"], "probs": list(D["p"]), "label": D["y"],
                         "region": D["region"], "split": D["split"]})


def _grouped(df: pd.DataFrame, col: str) -> dict[str, tuple[int, float]]:
    return {str(k): (int(c), float(m)) for k, c, m in zip(df[col], df["count"], df["mean"], strict=True)}


def _same(got: dict[str, tuple[int, float]], want: dict[str, tuple[int, float]]) -> None:
    assert sorted(got) == sorted(want)
    for k, (n, mean) in want.items():
        assert got[k][0] == n, k
        assert got[k][1] == pytest.approx(mean, rel=1e-9), k


def _check(result: evalkit.EvalResult, by_region: bool = True) -> None:
    (n, mean), = _expected().values()
    assert result.overall["count"] == n
    assert result.mean == pytest.approx(mean, rel=1e-9)
    if by_region:
        _same(_grouped(result.groups["region"], "region"), _expected(D["region"]))
    if "split" in result.groups:
        _same(_grouped(result.groups["split"], "split"), _expected(D["split"]))
    classes = result.groups["class"]
    assert list(classes["count"]) == [int((D["y"] == k).sum()) for k in range(3)]


# -- the writer matrix -------------------------------------------------------------------------


def _pandas(tmp: Path, how: str) -> Path:
    df = _wide_frame()
    path = tmp / "preds.parquet"
    if how == "no_index":
        df.to_parquet(path, index=False)
    elif how == "index":
        df.set_index("id").to_parquet(path)  # the index is stored as a column
    elif how == "range_index":
        df.to_parquet(path)
    elif how == "categorical":
        df.assign(region=df["region"].astype("category"), split=df["split"].astype("category"),
                  label=df["label"].astype("category")).to_parquet(path)
    elif how == "nullable_int":
        df = _list_frame().drop(columns="probs")
        for i, c in enumerate(CLASSES):
            df[f"prob_{c}"] = D["p"][:, i]
        df.assign(label=df["label"].astype("Int64")).to_parquet(path)
    elif how == "uuid":
        df.assign(id=[uuid.UUID(int=int(i) * 2**64 + 5) for i in D["id"]]).to_parquet(path)
    return path


@pytest.mark.parametrize("how", ["no_index", "index", "range_index", "categorical", "nullable_int", "uuid"])
def test_pandas_writers(tmp_path: Path, how: str) -> None:
    path = _pandas(tmp_path, how)
    result = evalkit.evaluate(path, by="region")
    _check(result)


def _pyarrow(tmp: Path, how: str) -> Path:
    table = pa.Table.from_pandas(_list_frame(), preserve_index=False)
    path = tmp / "preds.parquet"
    if how == "dictionary_off":
        pq.write_table(table, path, use_dictionary=False)
    elif how == "dictionary_on":
        pq.write_table(table, path, use_dictionary=True)
    elif how in ("gzip", "zstd", "none"):
        pq.write_table(table, path, compression=how)
    elif how in ("1.0", "2.6"):
        pq.write_table(table, path, version=how)
    elif how == "tiny_row_groups":
        pq.write_table(table, path, row_group_size=5)
    elif how == "fixed_size_list":
        fsl = pa.FixedSizeListArray.from_arrays(pa.array(D["p"].ravel()), 3)
        pq.write_table(table.set_column(table.schema.get_field_index("probs"), "probs", fsl), path)
    elif how == "large_types":
        pq.write_table(table.cast(pa.schema([
            ("id", pa.int64()), ("probs", pa.large_list(pa.float64())), ("label", pa.int64()),
            ("region", pa.large_string()), ("split", pa.large_string())])), path)
    elif how == "string_view":
        lv = pa.ListViewArray.from_arrays(pa.array(np.arange(N, dtype=np.int32) * 3),
                                          pa.array(np.full(N, 3, dtype=np.int32)), pa.array(D["p"].ravel()))
        table = table.set_column(table.schema.get_field_index("probs"), "probs", lv)
        pq.write_table(table.cast(pa.schema([
            ("id", pa.int64()), ("probs", pa.list_view(pa.float64())), ("label", pa.int64()),
            ("region", pa.string_view()), ("split", pa.string_view())])), path)
    elif how == "hive":
        ds.write_dataset(table, tmp / "hive", format="parquet", partitioning=["split"],
                         partitioning_flavor="hive")
        return tmp / "hive"
    return path


@pytest.mark.parametrize("how", ["dictionary_off", "dictionary_on", "gzip", "zstd", "none", "1.0", "2.6",
                                 "tiny_row_groups", "fixed_size_list", "large_types", "string_view", "hive"])
def test_pyarrow_writers(tmp_path: Path, how: str) -> None:
    path = _pyarrow(tmp_path, how)
    _check(evalkit.evaluate(path, by="region"))


def _polars(tmp: Path, how: str) -> Path:
    df = pl.from_pandas(_list_frame())
    path = tmp / "preds.parquet"
    if how == "write_parquet":
        df.write_parquet(path)
    elif how == "array":
        df.with_columns(pl.col("probs").cast(pl.Array(pl.Float64, 3))).write_parquet(path)
    elif how == "enum":
        df.with_columns(pl.col("region").cast(pl.Enum(["east", "north", "south"])),
                        pl.col("label").cast(pl.Int8)).write_parquet(path)
    elif how == "float32":
        df.with_columns(pl.col("probs").cast(pl.List(pl.Float32))).write_parquet(path)
    elif how == "newest_compat":  # string_view and large lists, as polars' newest Arrow output
        pq.write_table(df.to_arrow(compat_level=pl.CompatLevel.newest()), path)
    elif how == "partition_by":
        df.write_parquet(tmp / "parts", partition_by="split")
        return tmp / "parts"
    return path


@pytest.mark.parametrize("how", ["write_parquet", "array", "enum", "float32", "newest_compat", "partition_by"])
def test_polars_writers(tmp_path: Path, how: str) -> None:
    path = _polars(tmp_path, how)
    result = evalkit.evaluate(path, by="region")
    if how == "float32":  # float32 probabilities: the numpy reference on the same float32 values
        p32 = D["p"].astype(np.float32).astype(np.float64)
        assert result.mean == pytest.approx(_loss(p32, D["y"]).mean(), rel=1e-6)
        return
    _check(result)


def _duckdb(tmp: Path, how: str) -> Path:
    frame = _wide_frame()  # noqa: F841 - read by DuckDB's replacement scan
    con = duckdb.connect()
    select = ("SELECT id::INTEGER AS id, prob_a, prob_b, prob_c, label, region, split, "
              "uuid() AS row_uuid FROM frame ORDER BY id")
    if how == "copy":
        path = tmp / "preds.parquet"
        con.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
        return path
    if how == "partition_by":
        con.execute(f"COPY ({select}) TO '{tmp / 'parts'}' (FORMAT parquet, PARTITION_BY (split))")
        return tmp / "parts"
    if how == "list":
        path = tmp / "preds.parquet"
        con.execute(f"COPY (SELECT id, [prob_a, prob_b, prob_c] AS probs, "
                    f"(CASE label WHEN 'a' THEN 0 WHEN 'b' THEN 1 ELSE 2 END)::UTINYINT AS label, "
                    f"region, split FROM frame ORDER BY id) TO '{path}' (FORMAT parquet)")
        return path
    path = tmp / "preds.parquet"  # fixed-size ARRAY column
    con.execute(f"COPY (SELECT id, [prob_a, prob_b, prob_c]::DOUBLE[3] AS probs, "
                f"(CASE label WHEN 'a' THEN 0 WHEN 'b' THEN 1 ELSE 2 END)::TINYINT AS label, region, split "
                f"FROM frame ORDER BY id) TO '{path}' (FORMAT parquet)")
    return path


@pytest.mark.parametrize("how", ["copy", "partition_by", "list", "array"])
def test_duckdb_writers(tmp_path: Path, how: str) -> None:
    path = _duckdb(tmp_path, how)
    _check(evalkit.evaluate(path, by=["region", "row_uuid"] if how == "copy" else "region"))


def test_cli_on_each_writer_without_flags(tmp_path: Path) -> None:
    """The CLI, too, with no layout flags, on one file of each writer."""
    for sub in ("pd", "pa", "pl", "dd"):
        (tmp_path / sub).mkdir()
    paths = [_pandas(tmp_path / "pd", "uuid"), _pyarrow(tmp_path / "pa", "string_view"),
             _polars(tmp_path / "pl", "newest_compat"), _duckdb(tmp_path / "dd", "copy")]
    for i, path in enumerate(paths):
        out = tmp_path / f"out{i}"
        r = CliRunner().invoke(main, ["evaluate", str(path), "--by", "region", "--out", str(out), "-q"])
        assert r.exit_code == 0, r.output
        summary = json.loads((out / "summary.json").read_text())
        assert summary["overall"]["mean"] == pytest.approx(_loss(D["p"], D["y"]).mean(), rel=1e-9)


# -- several writers, one dataset ----------------------------------------------------------------


def test_shards_from_different_writers_are_one_dataset(tmp_path: Path) -> None:
    """polars (large_string, large_list, int64), DuckDB (string, list, int32), pyarrow
    (string_view, fixed_size_list, float32 weights) and an empty pandas shard (null types)."""
    d = tmp_path / "mixed"
    d.mkdir()
    frame = _list_frame()
    frame["w"] = np.linspace(0.5, 2.0, N)
    parts = np.array_split(np.arange(N), 3)
    pl.from_pandas(frame.iloc[parts[0]]).write_parquet(d / "a_polars.parquet")
    sub = frame.iloc[parts[1]]  # noqa: F841 - read by DuckDB
    duckdb.connect().execute(f"COPY (SELECT id::INTEGER AS id, probs, label::INTEGER AS label, region, split, "
                             f"w::FLOAT AS w FROM sub) TO '{d / 'b_duckdb.parquet'}' (FORMAT parquet)")
    t = pa.Table.from_pandas(frame.iloc[parts[2]], preserve_index=False)
    t = t.cast(pa.schema([("id", pa.int16()), ("probs", pa.list_(pa.float64(), 3)), ("label", pa.uint8()),
                          ("region", pa.string_view()), ("split", pa.large_string()), ("w", pa.float16())]))
    pq.write_table(t, d / "c_pyarrow.parquet")
    empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in frame.columns})
    empty.to_parquet(d / "d_empty_pandas.parquet")
    assert pq.read_schema(d / "d_empty_pandas.parquet").field("region").type == pa.null()
    result = evalkit.evaluate(d, by="region")
    _check(result)
    w16 = np.concatenate([frame["w"].to_numpy()[parts[0]], frame["w"].to_numpy(np.float32)[parts[1]],
                          frame["w"].to_numpy(np.float16)[parts[2]]]).astype(np.float64)
    # Weighted mean loss: the weights as each writer stored them (float64, float32, float16).
    result_w = evalkit.evaluate(d, weight="w")
    loss = _loss(D["p"], D["y"])
    assert float(result_w.overall["weighted_mean"]) == pytest.approx((w16 * loss).sum() / w16.sum(), rel=1e-9)


def test_real_conflict_names_both_files_and_types(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    frame = _list_frame()
    frame.iloc[:24].to_parquet(d / "one.parquet")
    frame.iloc[24:].assign(region=np.arange(24)).to_parquet(d / "two.parquet")
    with pytest.raises(SchemaDriftError) as err:
        evalkit.evaluate(d, by="region")
    msg = str(err.value)
    for part in ("one.parquet", "two.parquet", "'region'", "string", "int64"):
        assert part in msg
    # A conflict in a column the run does not need is no error.
    _check(evalkit.evaluate(d), by_region=False)


def test_unsigned_beyond_int64_unified_with_signed_fails_by_name(tmp_path: Path) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    frame = _list_frame()
    frame.iloc[:24].to_parquet(d / "one.parquet")
    pq.write_table(pa.Table.from_pandas(frame.iloc[24:], preserve_index=False).set_column(
        0, "id", pa.array([2**64 - 1 - i for i in range(24)], pa.uint64())), d / "two.parquet")
    with pytest.raises(EvalkitError) as err:
        evalkit.evaluate(d, by="id")
    assert "two.parquet" in str(err.value) and "'id'" in str(err.value)


# -- hive partitions -----------------------------------------------------------------------------


def _write_parts(root: Path, dirs: list[str], frame: pd.DataFrame | None = None) -> None:
    frame = _list_frame() if frame is None else frame
    chunks = np.array_split(np.arange(len(frame)), len(dirs))
    for d, rows in zip(dirs, chunks, strict=True):
        (root / d).mkdir(parents=True)
        frame.iloc[rows].drop(columns=[c.split("=")[0] for c in d.split("/")], errors="ignore") \
            .to_parquet(root / d / "part-0.parquet", index=False)


def test_partition_values_are_strings(tmp_path: Path) -> None:
    _write_parts(tmp_path / "ds", ["store=007", "store=07", "store=7", "store=010"])
    result = evalkit.evaluate(tmp_path / "ds", by="store")
    got = result.groups["store"]
    assert list(got["store"]) == ["007", "010", "07", "7"]
    assert list(got["count"]) == [12, 12, 12, 12]


@pytest.mark.parametrize("engine", ["local", "dask"])
def test_hive_default_partition_is_the_null_group(tmp_path: Path, engine: str) -> None:
    if engine == "dask":
        pytest.importorskip("distributed")
    _write_parts(tmp_path / "ds", ["split=train", "split=__HIVE_DEFAULT_PARTITION__", "split=val"])
    options = {"engine": "dask", "scheduler": None} if engine == "dask" else {}
    if engine == "dask":
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster, Client(cluster) as c:
            result = evalkit.evaluate(tmp_path / "ds", by="region", engine="dask", client=c)
    else:
        result = evalkit.evaluate(tmp_path / "ds", by="region", **options)
    got = result.groups["split"]
    keys = list(got["split"])
    assert sum(map(pd.isna, keys)) == 1 and sorted(k for k in keys if not pd.isna(k)) == ["train", "val"]
    assert int(got["count"].sum()) == N
    out = result.write(tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text())
    assert None in [g["split"] for g in summary["groups"]["split"]]


def test_partition_column_disagreeing_with_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    frame = _list_frame()
    for split in ("train", "val"):
        (root / f"split={split}").mkdir(parents=True)
    frame.iloc[:24].to_parquet(root / "split=train" / "a.parquet", index=False)  # holds train and val
    frame.iloc[24:].assign(split="val").to_parquet(root / "split=val" / "b.parquet", index=False)
    with pytest.raises(PartitionConflictError) as err:
        evalkit.evaluate(root)
    msg = str(err.value)
    assert "a.parquet" in msg and "split=train/" in msg and "'val'" in msg
    r = CliRunner().invoke(main, ["evaluate", str(root), "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 3 and "split=train/" in r.output
    # A file whose own column agrees with its directory is fine.
    (root / "split=train" / "a.parquet").unlink()
    frame.iloc[:24].assign(split="train").to_parquet(root / "split=train" / "a.parquet", index=False)
    assert evalkit.evaluate(root).groups["split"]["count"].tolist() == [24, 24]


# -- the normalisation itself --------------------------------------------------------------------


def test_uuid_text_form_matches_python() -> None:
    values = [uuid.uuid4() for _ in range(5)] + [None]
    arr = pa.array([v.bytes if v else None for v in values], pa.uuid())
    got = conform_array(arr, canonical_type(arr.type)).to_pylist()
    assert got == [str(v) if v else None for v in values]
    assert conform_array(arr.slice(2), pa.string()).to_pylist() == got[2:]


@pytest.mark.parametrize("t", [pa.int8(), pa.uint16(), pa.int32(), pa.uint32(), pa.float16(), pa.large_string(),
                               pa.string_view(), pa.dictionary(pa.int8(), pa.large_string()),
                               pa.large_list(pa.float16()), pa.list_view(pa.float32()),
                               pa.list_(pa.float64(), 2), pa.decimal32(5, 2), pa.date64()])
def test_canonical_types(t: pa.DataType) -> None:
    c = canonical_type(t)
    assert canonical_type(c) == c
    assert unify_types(t, c) == (pa.string() if pa.types.is_dictionary(c) else c) or unify_types(t, c) == c


def test_unify_rules() -> None:
    assert unify_types(pa.int32(), pa.int64()) == pa.int64()
    assert unify_types(pa.float32(), pa.float64()) == pa.float64()
    assert unify_types(pa.string(), pa.large_string()) == pa.string()
    assert unify_types(pa.list_(pa.float32()), pa.large_list(pa.float64())) == pa.list_(pa.float64())
    assert unify_types(pa.list_(pa.float64(), 3), pa.list_(pa.float64())) == pa.list_(pa.float64())
    assert unify_types(pa.null(), pa.string_view()) == pa.string()
    assert unify_types(pa.timestamp("us", "UTC"), pa.timestamp("ns", "Europe/Paris")) == pa.timestamp("ns", "UTC")
    assert unify_types(pa.decimal128(5, 2), pa.decimal128(10, 4)) == pa.decimal128(10, 4)
    assert unify_types(pa.decimal128(8, 1), pa.decimal128(10, 4)) == pa.decimal128(11, 4)
    # a date beside naive timestamps is its midnight (the rule keys match by across runs);
    # beside zoned ones it names no instant: a conflict
    assert unify_types(pa.date32(), pa.timestamp("us")) == pa.timestamp("us")
    assert unify_types(pa.timestamp("ms"), pa.date32()) == pa.timestamp("ms")
    for a, b in [(pa.string(), pa.int64()), (pa.bool_(), pa.int8()), (pa.date32(), pa.timestamp("us", "UTC")),
                 (pa.timestamp("us"), pa.timestamp("us", "UTC")), (pa.list_(pa.string()), pa.list_(pa.int64()))]:
        assert unify_types(a, b) is None


def test_in_memory_inputs_are_normalised_too() -> None:
    df = _wide_frame()
    df["id"] = [uuid.UUID(int=int(i)) for i in D["id"]]
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("region"), "region",
                             table.column("region").cast(pa.string_view()))
    for data in (df, table, pl.from_pandas(_wide_frame()).to_arrow(compat_level=pl.CompatLevel.newest())):
        _check(evalkit.evaluate(data, by="region"))
    result = evalkit.evaluate(table, by="id")
    assert result.groups["id"]["id"].iloc[0] == str(uuid.UUID(int=int(D["id"][0])))


def test_join_on_uuid_keys(tmp_path: Path) -> None:
    ids = [uuid.uuid4() for _ in range(N)]
    preds = _wide_frame().drop(columns="label").assign(id=ids)
    labels = pd.DataFrame({"id": ids[::-1], "label": np.array(CLASSES)[D["y"]][::-1]})
    preds.to_parquet(tmp_path / "p.parquet")
    labels.to_parquet(tmp_path / "l.parquet")
    _check(evalkit.evaluate(tmp_path / "p.parquet", labels=tmp_path / "l.parquet", on="id", by="region"))
    # DuckDB's uuid() column is the same extension type.
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--labels", str(tmp_path / "l.parquet"),
                                  "--on", "id", "--by", "region", "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 0, r.output
    assert os.path.exists(tmp_path / "o" / "by_region.parquet")


def test_evaluate_with_out_writes_the_report(tmp_path, monkeypatch):
    """evaluate(out=DIR) (keyword or config file) writes the report run() writes, atomically,
    overwrite honoured; result.path names it. compare() never writes a shared config's out."""
    import json

    import pandas as pd

    import evalkit
    from evalkit.errors import OutputExistsError

    monkeypatch.chdir(tmp_path)
    df = pd.DataFrame({"prob_a": [0.7, 0.1, 0.4], "prob_b": [0.3, 0.9, 0.6], "label": ["a", "b", "b"]})
    df.to_parquet("p.parquet")
    r = evalkit.evaluate(df, out="kw", plots=False)
    assert r.path is not None and r.path.name == "kw" and (tmp_path / "kw" / "report.md").is_file()
    summary = json.loads((tmp_path / "kw" / "summary.json").read_text())
    assert summary["overall"]["mean"] == pytest.approx(r.mean, rel=1e-15)
    assert summary["overall"]["count"] == 3 and len(r.rows) == 3
    with pytest.raises(OutputExistsError):
        evalkit.evaluate(df, out="kw", plots=False)
    assert evalkit.evaluate(df, out="kw", overwrite=True, plots=False).path == r.path
    (tmp_path / "c.yaml").write_text("input: p.parquet\nout: from_config\nplots: false\n")
    r2 = evalkit.evaluate("p.parquet", config="c.yaml")
    assert r2.path is not None and (tmp_path / "from_config" / "summary.json").is_file()
    assert r2.mean == pytest.approx(r.mean, rel=1e-15) and len(r2.rows) == 3
    with pytest.raises(evalkit.UsageError):  # out may never be an input
        evalkit.evaluate("p.parquet", out=".")
    r3 = evalkit.evaluate(df)
    assert r3.path is None and r3.write(tmp_path / "later") == r3.path == tmp_path / "later"
    res = evalkit.compare("p.parquet", "p.parquet", config={"out": "never", "plots": False})
    assert not (tmp_path / "never").exists() and res.tables["overall"]["delta"].iloc[0] == 0
