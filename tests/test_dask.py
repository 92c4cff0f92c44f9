"""The Dask engine gives the local engine's results (real LocalCluster, loopback only)."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit
from evalkit import errors
from evalkit.api import evaluate, run
from evalkit.config import EvalConfig

from .conftest import process_members

distributed = pytest.importorskip("distributed")
from evalkit.engines import dask as dask_engine  # noqa: E402

K = 4
CLASSES = [f"c{i}" for i in range(K)]


def _probs(rng: np.random.Generator, n: int) -> np.ndarray:
    z = rng.normal(size=(n, K)) * 2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _table(rng: np.random.Generator, n: int, start: int = 0, with_label: bool = True) -> pa.Table:
    p = _probs(rng, n)
    p[:3, 1] += p[:3, 0]  # exact zeros exercise the lower clip bound
    p[:3, 0] = 0.0
    cols: dict[str, object] = {
        "id": np.arange(start, start + n, dtype=np.int64),
        "region": rng.choice(["EU", "US", "APAC"], n),
    }
    if with_label:
        cols["label"] = rng.integers(0, K, n)
    cols.update({f"prob_{c}": p[:, i] for i, c in enumerate(CLASSES)})
    return pa.table(cols)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, **dask_engine.LOCAL_CLUSTER_OPTIONS
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture(autouse=True)
def small_partitions(monkeypatch):
    """Several partitions per file, so partition boundaries fall inside files."""
    monkeypatch.setattr(dask_engine, "PARTITION_ROWS", 700)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Hive-partitioned predictions (3 splits x 2 files, 300-row groups) + a labels file."""
    root = tmp_path_factory.mktemp("dask-data")
    rng = np.random.default_rng(7)
    hive = root / "hive"
    start = 0
    for split in ("train", "val", "test"):
        for j, n in enumerate((1500, 650)):
            d = hive / f"split={split}"
            d.mkdir(parents=True, exist_ok=True)
            pq.write_table(_table(rng, n, start), d / f"part-{j}.parquet", row_group_size=300)
            start += n
    preds = root / "preds"
    preds.mkdir()
    labels = []
    start = 0
    for j, n in enumerate((1200, 900, 5)):
        t = _table(rng, n, start)
        labels.append(t.select(["id", "label"]))
        pq.write_table(t.drop_columns(["label"]), preds / f"p{j}.parquet", row_group_size=256)
        start += n
    lab = pa.concat_tables(labels)
    lab = lab.take(pa.array(rng.permutation(lab.num_rows)))
    pq.write_table(lab, root / "labels.parquet")
    return {"root": root, "hive": hive, "preds": preds, "labels": root / "labels.parquet"}


# -- comparison helpers -------------------------------------------------------------------


def _assert_frames_close(a: pd.DataFrame, b: pd.DataFrame, sketch: bool = False) -> None:
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for col in a.columns:
        x, y = a[col], b[col]
        if col in ("count", "clipped_low", "clipped_high") or not pd.api.types.is_float_dtype(x):
            assert x.astype(str).tolist() == y.astype(str).tolist(), col
        elif sketch and col.startswith("p") and col[1:].isdigit():
            np.testing.assert_allclose(x, y, rtol=1e-3, err_msg=col)
        else:
            np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-12,
                                       atol=0, equal_nan=True, err_msg=col)


def _assert_same(local: evalkit.EvalResult, dist: evalkit.EvalResult, rows: bool = True) -> None:
    sketch = local.metadata["quantiles"] == "sketch"
    assert dist.metadata["quantiles"] == local.metadata["quantiles"]
    for key in ("rows_read", "rows_used", "rows_skipped", "skipped"):
        assert dist.metadata[key] == local.metadata[key], key
    _assert_frames_close(local.table("overall"), dist.table("overall"), sketch)
    assert set(local.groups) == set(dist.groups)
    for name in local.groups:
        _assert_frames_close(local.groups[name], dist.groups[name], sketch)
    _assert_frames_close(local.confusion, dist.confusion, sketch)
    for name in local.hardest:
        _assert_frames_close(local.hardest[name], dist.hardest[name])
    if rows:
        lr = local.rows.sort_values("row").reset_index(drop=True)
        dr = dist.rows.sort_values("row").reset_index(drop=True)
        assert dr["row"].is_unique
        pd.testing.assert_frame_equal(lr, dr, check_dtype=False, check_categorical=False)


def _both(data, client, **kw):
    local = evaluate(data, **kw)
    dist = evaluate(data, engine="dask", client=client, **kw)
    assert dist.metadata["engine"] == "dask"
    return local, dist


# -- equality with the local engine ---------------------------------------------------------


def test_partitions_follow_local_scan_order(data):
    source = evalkit.io.open_source(data["hive"])
    plan_cols = evaluate(data["hive"], write_rows=False).layout  # noqa: F841 - layout sanity
    from evalkit.engines.base import Grouping, Plan

    plan = Plan(layout=plan_cols, groupings=(Grouping("overall", ()),), eps=1e-7)
    parts = dask_engine.plan_parts(source, plan, 128, partition_rows=700)
    assert len(parts) > len(source.files)  # files are split at row-group boundaries
    assert [p.index for p in parts] == list(range(len(parts)))
    assert sum(p.num_rows for p in parts) == source.count_rows()
    offsets = np.cumsum([0] + [p.num_rows for p in parts[:-1]])
    assert [p.row_offset for p in parts] == offsets.tolist()
    assert all(p.num_rows <= 700 for p in parts)
    pickle.dumps(parts)  # descriptors travel to the workers


def test_hive_input_equal_to_local(data, client, tmp_path):
    local, dist = _both(data["hive"], client, by=["region", ["split", "region"]],
                        spool_dir=tmp_path)
    _assert_same(local, dist)
    assert set(dist.groups["split"]["split"]) == {"train", "val", "test"}
    parts = sorted(p.name for p in Path(dist._rows_path).iterdir())
    assert len(parts) > 6 and all(p.startswith("part-") for p in parts)


def test_sketch_quantiles_and_weights(data, client):
    # exact_limit below the row count: quantiles switch to the sketch in both engines.
    local, dist = _both(data["hive"], client, exact_limit=1000, by="region", write_rows=False)
    assert local.metadata["quantiles"] == "sketch"
    _assert_same(local, dist, rows=False)


def test_labels_joined_on_key(data, client, tmp_path):
    local, dist = _both(data["preds"], client, labels=data["labels"], on="id",
                        by="region", spool_dir=tmp_path)
    _assert_same(local, dist)


def test_write_report_with_row_parts(data, client, tmp_path):
    result = evaluate(data["hive"], engine="dask", client=client, spool_dir=tmp_path)
    out = result.write(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("rows")) == ["rows"]
    rows = pq.read_table(out / "rows")
    assert rows.num_rows == result.metadata["rows_used"]
    assert (out / "report.md").exists() and (out / "summary.json").exists()
    # The spool dir (next to the output) is removed with the result.
    spool = result._rows_path.parent
    del result
    import gc

    gc.collect()
    assert not spool.exists()
    assert pq.read_table(out / "rows").num_rows == rows.num_rows  # hard links survive


def test_float32_key_shard_beside_float64_is_one_key_on_workers(client, tmp_path):
    """The workers read a key column by the key rule, as the local engine does: a float32
    shard's 0.1 is the float64 shard's 0.1 (one group), its probabilities stay exact."""
    rng = np.random.default_rng(3)
    for name, ty in (("a", pa.float64()), ("b", pa.float32())):
        p = rng.uniform(0.05, 0.95, 1000).astype(np.float32)
        pq.write_table(pa.table({"prob": pa.array(p, pa.float32()), "label": rng.integers(0, 2, 1000),
                                 "k": pa.array([0.1, 0.2] * 500, ty)}), tmp_path / f"{name}.parquet")
    local, dist = _both(str(tmp_path), client, by="k", plots=False)
    assert dist.groups["k"]["k"].tolist() == [0.1, 0.2] and dist.groups["k"]["count"].tolist() == [1000, 1000]
    _assert_frames_close(local.groups["k"], dist.groups["k"], False)


def test_dataframe_input(client):
    rng = np.random.default_rng(3)
    df = _table(rng, 2500).to_pandas()
    df.index = pd.RangeIndex(100, 100 + len(df))
    local, dist = _both(df, client, batch_size=300)
    _assert_same(local, dist)
    assert dist.rows.index.equals(local.rows.index)


def test_zoned_key_over_the_end_of_dst(client, tmp_path):
    """T27: the two instants of 01:30 on the night DST ends stay two groups in every partition
    and in the merged partition states (pickled keys, merge_from), as in the local engine."""
    hours = pd.date_range("2020-10-31 18:00", periods=12, freq="h", tz="America/New_York")
    rng = np.random.default_rng(27)
    df = pd.DataFrame({"hour": np.repeat(hours, 250), "label": rng.integers(0, K, 3000)})
    p = _probs(rng, len(df))
    df = df.assign(**{f"prob_{c}": p[:, i] for i, c in enumerate(CLASSES)})
    path = tmp_path / "dst.parquet"
    df.to_parquet(path, row_group_size=300)
    local, dist = _both(path, client, by="hour", slices=["hour"], write_rows=False)
    _assert_same(local, dist, rows=False)
    assert dist.overall["count"] == 3000 and len(dist.groups["hour"]) == 12
    assert (dist.groups["hour"]["count"] == 250).all()


def test_file_urls(data, client):
    url = "file://" + str(data["hive"])
    local = evaluate(data["hive"], write_rows=False)
    dist = evaluate(url, engine="dask", client=client, write_rows=False)
    _assert_same(local, dist, rows=False)


@pytest.fixture
def memory_copy(data):
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    for f in sorted(data["hive"].rglob("*.parquet")):
        rel = f.relative_to(data["hive"]).as_posix()
        mem.pipe(f"/evalkit-test/{rel}", f.read_bytes())
    yield "memory://evalkit-test"
    mem.rm("/evalkit-test", recursive=True)


def test_memory_url_local_engine(data, memory_copy):
    # memory:// is per-process: the local engine only (see test_memory_url_refused...).
    a = evaluate(str(data["hive"]) + "/*/*.parquet")
    b = evaluate(memory_copy + "/*/*.parquet")
    _assert_same(a, b)


def test_memory_directory_url_local_engine(data, memory_copy):
    a = evaluate(data["hive"], write_rows=False)
    b = evaluate(memory_copy, write_rows=False)
    _assert_same(a, b, rows=False)


def test_memory_url_refused_with_worker_processes(data, client):
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    mem.pipe("/evalkit-test2/a.parquet", (data["preds"] / "p2.parquet").read_bytes())
    try:
        with pytest.raises(errors.UsageError, match="memory://"):
            evaluate("memory://evalkit-test2/a.parquet", prefix="prob_", labels=data["labels"],
                     on="id", unmatched="drop", engine="dask", client=client, write_rows=False)
    finally:
        mem.rm("/evalkit-test2", recursive=True)


# -- errors: same class and message, no output -------------------------------------------


def _bad_copy(data, tmp_path: Path, where: list[tuple[str, int]], value: float) -> Path:
    """Copy the hive dataset with prob_c0 set to ``value`` at (file, row) positions."""
    dest = tmp_path / "bad"
    for f in sorted(data["hive"].rglob("*.parquet")):
        rel = f.relative_to(data["hive"])
        t = pq.read_table(f)
        p = t.column("prob_c0").to_numpy().copy()
        for name, row in where:
            if rel.as_posix() == name:
                p[row] = value
        t = t.set_column(t.schema.get_field_index("prob_c0"), "prob_c0", pa.array(p))
        (dest / rel.parent).mkdir(parents=True, exist_ok=True)
        pq.write_table(t, dest / rel, row_group_size=300)
    return dest


def _error_of(fn):
    with pytest.raises(errors.EvalkitError) as info:
        fn()
    return info.value


def test_invalid_row_fails_like_local_and_leaves_nothing(data, client, tmp_path):
    # Two bad rows in different partitions: the first one in input order is reported.
    bad = _bad_copy(data, tmp_path, [("split=val/part-1.parquet", 10),
                                     ("split=test/part-0.parquet", 1000)], float("nan"))
    spool = tmp_path / "spool"
    spool.mkdir()
    local = _error_of(lambda: evaluate(bad, spool_dir=spool))
    dist = _error_of(lambda: evaluate(bad, engine="dask", client=client, spool_dir=spool))
    assert type(dist) is type(local) is errors.InvalidProbabilityError
    assert str(dist) == str(local)
    assert "part-0.parquet" in str(dist) and "split=test" in str(dist)  # sorted: test < train
    assert list(spool.iterdir()) == []
    # The cluster is still usable afterwards.
    assert evaluate(data["preds"], labels=data["labels"], on="id", engine="dask",
                    client=client, write_rows=False).metadata["rows_used"] > 0


def test_cli_run_leaves_no_output_on_error(data, client, tmp_path):
    bad = _bad_copy(data, tmp_path, [("split=train/part-1.parquet", 600)], 1.7)
    out = tmp_path / "report"
    cfg = EvalConfig(input=[str(bad)], out=str(out), engine="dask",
                     scheduler=client.scheduler.address)
    local_cfg = EvalConfig(input=[str(bad)], out=str(out))
    with pytest.raises(errors.InvalidProbabilityError) as li:
        run(local_cfg)
    with pytest.raises(errors.InvalidProbabilityError) as di:
        run(cfg)
    assert str(di.value) == str(li.value)
    assert sorted(os.listdir(tmp_path)) == ["bad"]


def test_skip_policy_counts_match(data, client, tmp_path):
    bad = _bad_copy(data, tmp_path, [("split=val/part-1.parquet", 10),
                                     ("split=train/part-0.parquet", 999)], -0.5)
    local, dist = _both(bad, client, on_invalid="skip", spool_dir=tmp_path)
    assert local.metadata["rows_skipped"] == 2
    _assert_same(local, dist)


def test_duplicate_keys_across_partitions(data, client, tmp_path):
    preds = tmp_path / "dup"
    preds.mkdir()
    for f in sorted(data["preds"].iterdir()):
        (preds / f.name).write_bytes(f.read_bytes())
    # p2 holds ids 2100..2104; a copy of it as p3 repeats them in another partition.
    (preds / "p3.parquet").write_bytes((data["preds"] / "p2.parquet").read_bytes())
    kw = dict(labels=data["labels"], on="id", spool_dir=tmp_path)
    local = _error_of(lambda: evaluate(preds, **kw))
    dist = _error_of(lambda: evaluate(preds, engine="dask", client=client, **kw))
    assert type(dist) is type(local) is errors.JoinError
    assert "duplicate keys on id" in str(dist)
    assert [p.name for p in tmp_path.iterdir()] == ["dup"]


def test_unmatched_label_keys(data, client):
    kw = dict(labels=data["labels"], on="id", write_rows=False)
    preds = data["preds"] / "p0.parquet"
    local = _error_of(lambda: evaluate(preds, **kw))
    dist = _error_of(lambda: evaluate(preds, engine="dask", client=client, **kw))
    assert type(dist) is type(local) is errors.JoinError
    assert str(dist) == str(local)
    a, b = _both(preds, client, unmatched="drop", **kw)
    _assert_same(a, b, rows=False)


# -- cluster management and packaging --------------------------------------------------------


@pytest.mark.slow
def test_own_local_cluster_started_and_closed(data, monkeypatch):
    started = []
    real = distributed.LocalCluster

    def spy(*args, **kw):
        kw.update(n_workers=1, threads_per_worker=1, silence_logs=50)
        cluster = real(*args, **kw)
        started.append(cluster)
        return cluster

    monkeypatch.setattr(distributed, "LocalCluster", spy)
    local = evaluate(data["preds"], labels=data["labels"], on="id", write_rows=False)
    dist = evaluate(data["preds"], labels=data["labels"], on="id", write_rows=False,
                    engine="dask")
    _assert_same(local, dist, rows=False)
    assert len(started) == 1 and started[0].status.name == "closed"


def test_missing_extra(monkeypatch, data):
    import builtins

    real_import = builtins.__import__

    def fake(name, *args, **kw):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(errors.MissingDependencyError, match=r"evalkit\[dask\]"):
        evaluate(data["preds"], labels=data["labels"], on="id", engine="dask")


def test_merge_is_associative_on_states(data):
    """Tree shape does not matter: ((a b) c) == (a (b c)) for the merged statistics."""
    source = evalkit.io.open_source(data["hive"])
    res = evaluate(data["hive"], write_rows=False)
    from evalkit.engines.base import Grouping, Plan

    plan = Plan(layout=res.layout, groupings=(Grouping("overall", ()),), eps=1e-7)
    parts = dask_engine.plan_parts(source, plan, 128, partition_rows=700)[:3]
    states = [dask_engine.run_part(p, plan, source.read_schema(plan.input_columns, plan.dictionary_columns), source.dataset.filesystem, 128, None, False, None)[0]
              for p in parts]
    left = dask_engine.merge_states(dask_engine.merge_states(*states[:2]), states[2])
    right = dask_engine.merge_states(states[0], dask_engine.merge_states(*states[1:]))
    a, b = left.stats["overall"].finalize(), right.stats["overall"].finalize()
    assert a["count"].item() == b["count"].item() == sum(p.num_rows for p in parts)
    assert math.isclose(a["sum"].item(), b["sum"].item(), rel_tol=1e-12)


def test_tiny_row_groups_equal_to_local(client, tmp_path):
    """Thousands of tiny row groups: read in runs (footer parsed once per partition)."""
    path = tmp_path / "tiny.parquet"
    pq.write_table(_table(np.random.default_rng(11), 3000), path, row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 1000
    local, dist = _both(path, client, by="region", spool_dir=tmp_path)
    _assert_same(local, dist)


def test_intervals_calibration_slices_and_bootstrap_equal_to_local(data, client):
    """Every new statistic is mergeable: the Dask engine (partitions of 700 rows, merged in a
    tree) gives the local engine's intervals, bootstrap, calibration bins and slice tests."""
    local, dist = _both(data["hive"], client, by="region", write_rows=False, ci="bootstrap",
                        bootstrap_samples=30, slices=["region", "split"], slice_min_count=10)
    _assert_same(local, dist, rows=False)
    assert np.isfinite(local.groups["region"]["ci_low"]).all()
    _assert_frames_close(local.calibration, dist.calibration)
    _assert_frames_close(local.slices, dist.slices)
    assert len(local.disparity) == len(dist.disparity)
    for a, b in zip(local.disparity, dist.disparity, strict=True):
        for k in a:
            assert a[k] == (pytest.approx(b[k], rel=1e-12) if isinstance(a[k], float) else b[k]), k


def test_weighted_slices_equal_to_local(data, client):
    """Weighted slice moments (weight sums, weighted M2 / M3) merge across partitions."""
    local, dist = _both(data["hive"], client, weight="id", write_rows=False,
                        slices=["region", "split"], slice_min_count=10)
    assert "n_eff" in local.slices.columns and local.metadata["slices"]["weighted"]
    _assert_frames_close(local.slices, dist.slices)


def test_worker_data_error_is_one_clean_line_like_local(tmp_path: Path) -> None:
    """A data error inside a worker: the same single error line as the local engine on stderr,
    not the workers' "Compute Failed" log with a traceback."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=40)
    p[3] = [0.5, 0.5, 0.5]
    pq.write_table(pa.table({"prob_a": p[:, 0], "prob_b": p[:, 1], "prob_c": p[:, 2],
                             "label": np.arange(40) % 3}), tmp_path / "p.parquet")
    lines = {}
    for engine in ("local", "dask"):
        r = subprocess.run([sys.executable, "-m", "evalkit", "evaluate", str(tmp_path / "p.parquet"),
                            "--engine", engine, "--out", str(tmp_path / engine), "-q"],
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).parent.parent)})
        assert r.returncode == 3, r.stderr
        lines[engine] = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines["dask"]) == 1, lines["dask"]
    assert lines["dask"] == lines["local"]


def test_compare_reads_a_dask_reports_row_parts(data, client, tmp_path):
    """compare pairs rows from a Dask report's rows/part-*.parquet as it does from a local
    report's rows.parquet (the two report shapes), and refuses a part that was edited."""
    from evalkit.comparison import compare

    local = evaluate(data["hive"], by="region").write(tmp_path / "local")
    dist = evaluate(data["hive"], engine="dask", client=client, by="region",
                    spool_dir=tmp_path).write(tmp_path / "dist")
    assert not (dist / "rows.parquet").exists() and len(list((dist / "rows").glob("*.parquet"))) > 6
    for b, c in ((local, dist), (dist, local), (dist, dist)):
        cmp = compare(b, c)
        table = cmp.tables["region"]
        assert (table["method"] == "paired").all(), table[["method", "n_paired"]]
        assert (table["n_paired"] == table["candidate_count"]).all()
        np.testing.assert_allclose(table["delta"], 0.0, atol=1e-12)
    part = sorted((dist / "rows").glob("*.parquet"))[1]
    t = pq.read_table(part)
    pq.write_table(t.slice(1), part)
    with pytest.raises(errors.CompareError, match="part-"):
        compare(local, dist)


def test_binary_logit_range_warning_merges_across_partitions(client):
    """The [0, 1] logit-column warning is judged over the whole run: Dask partitions merge
    their ranges, so one negative logit in any partition ends it, in both engines."""
    rng = np.random.default_rng(5)
    n = 3000
    df = pd.DataFrame({"logit": rng.uniform(0, 1, n), "y": rng.integers(0, 2, n)})
    with pytest.warns(errors.EvalkitWarning):
        local = evaluate(df, batch_size=300)
    with pytest.warns(errors.EvalkitWarning):
        dist = evaluate(df, engine="dask", client=client, batch_size=300)
    assert dist.metadata["warnings"] == local.metadata["warnings"] != []
    df.loc[n - 5, "logit"] = -0.5  # in the last partition only
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", errors.EvalkitWarning)
        assert evaluate(df, engine="dask", client=client, batch_size=300).metadata["warnings"] == []


def test_duplicate_slices_and_typed_slice_keys_equal_to_local(client, tmp_path):
    """Row-set fingerprints use global row positions: the Dask engine finds the same duplicate
    slices (a constant column, a column that is a function of another) as the local one, and
    writes the same typed slice keys."""
    rng = np.random.default_rng(12)
    t = _table(rng, 4000)
    region = t.column("region").to_numpy(zero_copy_only=False)
    code = np.select([region == "EU", region == "US"], [1, 2], 3).astype(np.int32)
    t = t.append_column("plan", pa.array(["pro"] * 4000)).append_column("code", pa.array(code))
    path = tmp_path / "dup.parquet"
    pq.write_table(t, path, row_group_size=500)
    local, dist = _both(path, client, write_rows=False, slices=["region", "plan", "code"], slice_min_count=10)
    assert local.metadata["slices"]["skipped_duplicate"] > 0
    assert local.metadata["slices"] == dist.metadata["slices"]
    pd.testing.assert_series_equal(local.slices["duplicate_of"], dist.slices["duplicate_of"])
    pd.testing.assert_series_equal(local.slices["code"], dist.slices["code"])
    _assert_frames_close(local.slices, dist.slices)


def _session_members(sid: int) -> list[str]:
    """Live (not zombie) processes of session ``sid``."""
    return process_members(sid, by="session", zombies=False)


def _assert_interrupted_cleanly(proc, err: bytes, out: Path) -> None:  # noqa: ANN001
    """Exit 130 with the one 'interrupted' line, no process of the run's session left within
    5 s, nothing written beside ``out``."""
    import time

    text = err.decode()
    assert proc.returncode == errors.EXIT_INTERRUPTED, text
    assert [line for line in text.splitlines() if line.strip()] == [
        "interrupted: no report was written (any previous report is intact)"], text
    deadline = time.monotonic() + 5  # the worker processes end with the command
    while _session_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_members(proc.pid) == []
    assert os.listdir(out.parent) == []


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_ctrl_c_during_a_dask_run_exits_130_with_one_line(tmp_path: Path) -> None:
    """rt-eval8 F21: Ctrl-C in a terminal (SIGINT to the whole process group, workers included)
    while the workers run: exit 130 within seconds, the one "interrupted" line and no worker
    traceback, no process of the run left, no spool directory left. Before, the workers got
    the SIGINT too: tracebacks on stderr, and sometimes a hang in the cluster's shutdown."""
    import glob
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(5)
    for i in range(2):  # two files: two partitions, both workers busy
        pq.write_table(_table(rng, 150_000, start=i * 150_000), tmp_path / f"p{i}.parquet")
    out = tmp_path / "o" / "r"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).resolve().parent.parent)}
    # Tiny batches: the run lasts seconds once the workers have started.
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", "evaluate", str(tmp_path / "p*.parquet"),
                             "--engine", "dask", "--batch-size", "100", "--no-plots", "-q",
                             "--format", "none", "--out", str(out)], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while (not glob.glob(str(out.parent / ".evalkit-rows-*" / "*" / "part-*"))
               and proc.poll() is None and time.monotonic() < deadline):
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the workers were seen writing"
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=20)  # a hang fails here
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    if proc.returncode == 0:  # the interrupt was not seen (rt-main10 F2, open): the report is whole
        assert (out / "summary.json").is_file() and _session_members(proc.pid) == [], err.decode()
        return
    _assert_interrupted_cleanly(proc, err, out)
    assert took < 15, took


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_ctrl_c_while_the_cluster_starts_is_not_lost(tmp_path: Path) -> None:
    """rt (ANNOUNCE 03:51) F5: a Ctrl-C to the process group while the LocalCluster starts (its
    workers start with SIGINT ignored) was lost: the run went on, wrote its report, exit 0.
    Now it takes effect once the cluster has started: exit 130, the one line, nothing left."""
    import signal
    import subprocess
    import sys
    import time

    rng = np.random.default_rng(6)
    pq.write_table(_table(rng, 20_000), tmp_path / "p.parquet")
    out = tmp_path / "o" / "r"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(evalkit.__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "evalkit", "evaluate", str(tmp_path / "p.parquet"),
                             "--engine", "dask", "--no-plots", "-q", "--format", "none", "--out", str(out)],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        # the command, the sentinel it forks for the start, and a process of the cluster
        while len(_session_members(proc.pid)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the run ended before the cluster started"
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # the rest of the start, then the cluster's close
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    _assert_interrupted_cleanly(proc, err, out)


def test_a_directory_input_takes_the_same_files_as_the_local_engine(data, client, tmp_path):
    """T10: the Dask engine reads the files the local engine reads (one rule, io.open_source):
    a README.txt and an evalkit report inside the input directory are skipped, not read."""
    import shutil

    d = tmp_path / "hive"
    shutil.copytree(data["hive"], d)
    (d / "README.txt").write_text("notes")
    report = evaluate(data["hive"], write_rows=False).write(d / "report")
    assert (report / "evalkit-manifest.json").exists()
    local = evaluate(d, write_rows=False)
    dist = evaluate(d, engine="dask", client=client, write_rows=False)
    _assert_same(local, dist, rows=False)
    assert local.metadata["rows_read"] == evaluate(data["hive"], write_rows=False).metadata["rows_read"]
    assert [str(w) for w in dist.warnings] == [str(w) for w in local.warnings] and len(local.warnings) == 2
