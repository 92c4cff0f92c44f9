"""End-to-end evaluate(): every layout and label encoding against numpy by hand and pandas."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evalkit

from .conftest import REF_LABELS, REF_MEAN, REF_PROBS, by_hand, random_probs, write

STATS = ["count", "mean", "std", "min", "max", "sum", "clipped_low", "clipped_high", "accuracy"]


def _pandas_reference(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    g = df.groupby(by, sort=True, dropna=False)
    out = g["loss"].agg(["count", "mean", "std", "min", "max", "sum"])
    out["clipped_low"] = g["clipped_low"].sum()
    out["clipped_high"] = g["clipped_high"].sum()
    out["accuracy"] = g["correct"].mean()
    return out.reset_index()


def _check_groups(result: evalkit.EvalResult, loss: np.ndarray, frame: pd.DataFrame, by: list[str],
                  name: str) -> None:
    ref = _pandas_reference(frame.assign(loss=loss), by)
    got = result.groups[name].sort_values(by).reset_index(drop=True)
    got = got[got["count"] > 0].reset_index(drop=True)
    ref = ref.sort_values(by).reset_index(drop=True)
    for c in by:
        assert got[c].astype(str).tolist() == ref[c].astype(str).tolist()
    for c in STATS:
        np.testing.assert_allclose(got[c].to_numpy(float), ref[c].to_numpy(float), rtol=1e-9,
                                   equal_nan=True, err_msg=f"{name}.{c}")


def test_reference_case_through_evaluate():
    df = pd.DataFrame({"prob_a": REF_PROBS[:, 0], "prob_b": REF_PROBS[:, 1], "prob_c": REF_PROBS[:, 2],
                       "label": REF_LABELS})
    r = evalkit.evaluate(df)
    # The overall line is derived from the per-class cells (joint accumulation): the same sum
    # added in class order rather than numpy's row order, equal to the last bit or so.
    assert r.mean == pytest.approx(REF_MEAN, rel=1e-15)
    np.testing.assert_allclose(r.rows["loss"], [0.356674944, 0.693147181, 0.105360516], atol=5e-10)
    assert r.overall["count"] == 3 and r.overall["clipped_low"] == 0


def _frame(rng, n=400, k=4, dtype=np.float32):
    p = random_probs(rng, n, k, dtype)
    p[:3] = 0
    p[np.arange(3), (np.arange(3) + 1) % k] = 1  # clipped rows: p[y] = 0 for label 0..2 below
    y = rng.integers(0, k, n)
    y[:3] = np.arange(3)
    base = pd.DataFrame({"id": np.arange(n), "split": rng.choice(["train", "val"], n),
                         "region": rng.choice(["EU", "US", "APAC"], n)})
    return p, y, base


@pytest.mark.parametrize("layout", ["wide", "list", "fixed_list", "logits_wide", "logits_list"])
@pytest.mark.parametrize("labels", ["index", "name", "onehot_wide", "soft_list"])
def test_layouts_and_label_encodings_match_by_hand(tmp_path: Path, rng, layout: str, labels: str):
    k = 4
    p, y, base = _frame(rng, k=k)
    classes = ["ant", "bee", "cat", "dog"]
    cols: dict[str, object] = {c: base[c].to_numpy() for c in base}
    z = np.log(np.clip(p.astype(np.float64), 1e-30, None)) + 3.0  # logits with the same softmax
    if layout == "wide":
        cols.update({f"prob_{c}": p[:, i] for i, c in enumerate(classes)})
    elif layout == "logits_wide":
        cols.update({f"logit_{c}": z[:, i] for i, c in enumerate(classes)})
    elif layout in ("list", "logits_list"):
        vals = p if layout == "list" else z
        cols["probs" if layout == "list" else "logits"] = pa.array(list(vals))
    else:
        cols["probs"] = pa.FixedSizeListArray.from_arrays(pa.array(p.reshape(-1)), k)
    if labels == "index":
        cols["label"] = y
    elif labels == "name":
        cols["label"] = np.array(classes)[y]
    elif labels == "onehot_wide":
        onehot = np.eye(k)[y]
        cols.update({f"target_{c}": onehot[:, i] for i, c in enumerate(classes)})
    else:
        cols["label"] = pa.array(list(np.eye(k)[y]))
    path = write(pa.table(cols), tmp_path / "in.parquet", row_group_size=64)
    opts = {}
    if layout in ("list", "fixed_list", "logits_list"):
        opts["classes"] = classes
    r = evalkit.evaluate(path, by=["region"], batch_size=50, **opts)
    want = by_hand(p, y)
    if layout.startswith("logits"):
        # Independent log-softmax (logaddexp), clipped in log space.
        logp = z[np.arange(len(y)), y] - np.logaddexp.reduce(z, axis=1)
        want = -np.clip(logp, np.log(1e-7), np.log(1 - 1e-7))
    np.testing.assert_allclose(r.rows["loss"].to_numpy(), want, rtol=1e-12)
    if not layout.startswith("logits"):
        assert r.overall["clipped_low"] == 3
        assert r.rows["clipped_low"].to_numpy()[:3].all()
    assert list(r.groups["class"]["class"]) == classes
    frame = base.assign(**{"class": np.array(classes)[y]},
                        clipped_low=r.rows["clipped_low"].to_numpy(),
                        clipped_high=r.rows["clipped_high"].to_numpy(), correct=r.rows["correct"].to_numpy())
    loss = r.rows["loss"].to_numpy()
    _check_groups(r, loss, frame, ["class"], "class")
    _check_groups(r, loss, frame, ["split"], "split")
    _check_groups(r, loss, frame, ["region"], "region")
    np.testing.assert_array_equal(r.rows["correct"], p.argmax(1) == y)


def test_binary_layout(tmp_path: Path, rng):
    n = 300
    p1 = rng.random(n)
    y = rng.integers(0, 2, n)
    path = write(pa.table({"prob": p1, "label": y.astype(bool)}), tmp_path / "b.parquet")
    r = evalkit.evaluate(path)
    want = -np.log(np.clip(np.where(y == 1, p1, 1 - p1), 1e-7, 1 - 1e-7))
    np.testing.assert_allclose(r.rows["loss"], want, rtol=1e-12)
    assert r.layout.kind == "binary"


@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
def test_sklearn_agrees_on_file_input(wide_file):
    sk = pytest.importorskip("sklearn.metrics")
    path, p, y = wide_file
    r = evalkit.evaluate(path)
    assert r.mean == pytest.approx(sk.log_loss(y, p.astype(np.float64), labels=[0, 1, 2]), rel=1e-9)


def test_hive_partitions_become_columns(tmp_path: Path, rng):
    k = 3
    frames = []
    for split in ("train", "val"):
        p = random_probs(rng, 100, k, np.float32)
        y = rng.integers(0, k, 100)
        write(pa.table({"label": y, **{f"prob_{i}": p[:, i] for i in range(k)}}),
              tmp_path / "ds" / f"split={split}" / "part-0.parquet")
        frames.append((split, p, y))
    r = evalkit.evaluate(tmp_path / "ds")
    assert "split" in r.groups
    for split, p, y in frames:
        row = r.groups["split"].set_index("split").loc[split]
        assert row["mean"] == pytest.approx(by_hand(p, y).mean(), rel=1e-12)
        assert row["count"] == 100


def test_glob_and_list_inputs(tmp_path: Path, wide_file):
    path, p, y = wide_file
    r1 = evalkit.evaluate(str(path.parent / "*.parquet"))
    r2 = evalkit.evaluate([str(path)])
    assert r1.mean == r2.mean == pytest.approx(by_hand(p, y).mean(), rel=1e-12)


def test_separate_labels_join(tmp_path: Path, rng):
    n, k = 500, 3
    p = random_probs(rng, n, k)
    y = rng.integers(0, k, n)
    ids = rng.permutation(n) + 1000
    preds = write(pa.table({"id": ids, "region": rng.choice(["a", "b"], n),
                            **{f"prob_{i}": p[:, i] for i in range(k)}}), tmp_path / "p.parquet",
                  row_group_size=100)
    order = rng.permutation(n)
    labels = write(pa.table({"id": ids[order], "label": y[order]}), tmp_path / "l.parquet")
    r = evalkit.evaluate(preds, labels=labels, on="id", by=["region"], batch_size=64)
    np.testing.assert_allclose(r.rows["loss"], by_hand(p, y), rtol=1e-12)
    assert r.rows["id"].tolist() == ids.tolist()


def test_multi_column_join(tmp_path: Path, rng):
    n, k = 200, 3
    p = random_probs(rng, n, k)
    y = rng.integers(0, k, n)
    a = np.repeat(["x", "y"], n // 2)
    b = np.tile(np.arange(n // 2), 2)
    preds = pa.table({"a": a, "b": b, **{f"prob_{i}": p[:, i] for i in range(k)}})
    perm = rng.permutation(n)
    labels = pa.table({"b": b[perm], "a": a[perm], "label": y[perm]})
    r = evalkit.evaluate(preds, labels=labels, on=["a", "b"])
    np.testing.assert_allclose(r.rows["loss"], by_hand(p, y), rtol=1e-12)


def test_combination_grouping_and_weights(wide_file):
    path, p, y = wide_file
    r = evalkit.evaluate(path, by=[["split", "region"]], weight="id")
    df = pd.read_parquet(path)
    loss = by_hand(p, y)
    py = p[np.arange(len(y)), y]
    df = df.assign(loss=loss, clipped_low=py < 1e-7, clipped_high=py > 1 - 1e-7, correct=p.argmax(1) == y)
    _check_groups(r, loss, df, ["split", "region"], "split,region")
    assert r.overall["weighted_mean"] == pytest.approx(np.average(loss, weights=df["id"]), rel=1e-12)


def test_dataframe_index_alignment():
    df = pd.DataFrame({"prob_0": [0.9, 0.2], "prob_1": [0.1, 0.8], "label": [0, 1]}, index=["r1", "r2"])
    r = evalkit.evaluate(df)
    assert r.rows.index.tolist() == ["r1", "r2"]


def test_write_outputs_readable(tmp_path: Path, wide_file):
    path, p, y = wide_file
    r = evalkit.evaluate(path, by=["region"])
    out = r.write(tmp_path / "out")
    names = sorted(f.name for f in out.iterdir())
    for f in ("rows.parquet", "overall.parquet", "by_class.parquet", "by_split.parquet",
              "by_region.parquet", "report.md", "summary.json", "confusion.parquet", "hardest.parquet"):
        assert f in names
    rows = pd.read_parquet(out / "rows.parquet")
    np.testing.assert_allclose(rows["loss"], by_hand(p, y), rtol=1e-12)
    by_class = pd.read_parquet(out / "by_class.parquet")
    assert list(by_class.columns[:3]) == ["class", "count", "mean"]
    assert by_class["count"].dtype == np.int64
    assert not list(tmp_path.glob(".out.tmp-*"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 700), seed=st.integers(0, 1000))
def test_streaming_equals_in_memory(tmp_path: Path, batch: int, seed: int):
    rng = np.random.default_rng(seed)
    n, k = 650, 5
    p = random_probs(rng, n, k)
    y = rng.integers(0, k, n)
    df = pd.DataFrame({"g": rng.choice(list("abc"), n), "label": y,
                       **{f"prob_{i}": p[:, i] for i in range(k)}})
    whole = evalkit.evaluate(df, by=["g"], batch_size=n)
    streamed = evalkit.evaluate(df, by=["g"], batch_size=batch)
    for name in ("class", "g"):
        a, b = whole.groups[name], streamed.groups[name]
        assert a["count"].tolist() == b["count"].tolist()
        np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-12)
        np.testing.assert_allclose(a["std"], b["std"], rtol=1e-9)
        np.testing.assert_array_equal(a[["min", "max", "p50", "p90", "p99"]], b[["min", "max", "p50", "p90", "p99"]])
    sk = evalkit.evaluate(df, by=["g"], batch_size=batch, quantiles="sketch")
    exact = np.quantile(by_hand(p, y), [0.5, 0.9, 0.99], method="linear")
    got = np.array([sk.overall[c] for c in ("p50", "p90", "p99")], dtype=float)
    np.testing.assert_allclose(got, exact, rtol=1e-3)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 500), row_group=st.integers(1, 400), seed=st.integers(0, 1000))
def test_parquet_streaming_equals_in_memory_dataframe(tmp_path: Path, batch: int, row_group: int, seed: int):
    """The row-group reader (any batch / row-group size) gives the in-memory results."""
    rng = np.random.default_rng(seed)
    n, k = 480, 4
    p = random_probs(rng, n, k, np.float32)
    y = rng.integers(0, k, n)
    df = pd.DataFrame({"id": np.arange(n), "g": rng.choice(["x", "y", "z"], n), "label": y,
                       **{f"prob_{i}": p[:, i] for i in range(k)}})
    path = tmp_path / f"s{seed}-{batch}-{row_group}.parquet"
    write(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=row_group)
    mem = evalkit.evaluate(df, by=["g"])
    streamed = evalkit.evaluate(path, by=["g"], batch_size=batch)
    np.testing.assert_array_equal(streamed.rows["loss"].to_numpy(), mem.rows["loss"].to_numpy())
    assert streamed.rows["row"].tolist() == list(range(n))
    for name in ("class", "g"):
        a, b = mem.groups[name], streamed.groups[name]
        assert a["count"].tolist() == b["count"].tolist()
        assert a[name].astype(str).tolist() == b[name].astype(str).tolist()
        np.testing.assert_allclose(b["mean"], a["mean"], rtol=1e-12)
        np.testing.assert_array_equal(b[["min", "max", "p50", "p90", "p99"]], a[["min", "max", "p50", "p90", "p99"]])


def _hive_with_markers(tmp_path: Path, rng) -> tuple[Path, np.ndarray, np.ndarray]:
    """A Spark-style hive directory (``_SUCCESS``, ``.crc``) of two partitions, 100 rows each."""
    k, ps, ys = 3, [], []
    for split in ("train", "val"):
        p = random_probs(rng, 100, k, np.float64)
        y = rng.integers(0, k, 100)
        part = write(pa.table({"label": y, **{f"prob_{i}": p[:, i] for i in range(k)}}),
                     tmp_path / "hive" / f"split={split}" / "part-0.parquet")
        (part.parent / ".part-0.parquet.crc").write_bytes(b"crc")
        ps.append(p)
        ys.append(y)
    (tmp_path / "hive" / "_SUCCESS").write_bytes(b"")
    return tmp_path / "hive", np.concatenate(ps), np.concatenate(ys)


@pytest.mark.parametrize("spelling", ["{d}/**", "{d}/**/*", "{d}/*", "{d}/**/", "{d}"])
def test_glob_reaching_dirs_and_files_reads_each_file_once(tmp_path: Path, rng, spelling: str):
    # 'dir/**' matches dir/, dir/split=a/ and dir/split=a/part-0.parquet: each row was read 3x.
    d, p, y = _hive_with_markers(tmp_path, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one glob's own overlap is no surprise: no warning
        r = evalkit.evaluate(spelling.format(d=d))
    assert r.metadata["rows_read"] == 200 and r.metadata["input_files"] == 2
    assert r.metadata["inputs_deduplicated"] == 0
    assert len(r.metadata["inputs"]) == 2
    assert r.mean == pytest.approx(by_hand(p, y).mean(), rel=1e-12)
    assert set(r.groups["split"]["split"]) == {"train", "val"}  # partition column kept


def test_file_reached_twice_is_read_once_with_a_warning(tmp_path: Path, rng, monkeypatch):
    d, p, y = _hive_with_markers(tmp_path, rng)
    val = d / "split=val" / "part-0.parquet"
    single = evalkit.evaluate(str(val))
    monkeypatch.chdir(val.parent)
    (tmp_path / "link.parquet").symlink_to(val)
    for inputs in (["part-0.parquet", "./part-0.parquet"], [str(val), "part-0.parquet"],
                   [str(val), str(tmp_path / "link.parquet")], [str(val), f"{val.parent}/*.parquet"]):
        with pytest.warns(evalkit.EvalkitWarning, match="reached a file already read"):
            r = evalkit.evaluate(inputs)
        assert r.metadata["rows_read"] == 100 and r.metadata["inputs_deduplicated"] == 1, inputs
        assert r.mean == single.mean, inputs
        assert any("reached a file already read" in w for w in r.metadata["warnings"])
    # A directory and a file inside it: every file once, partition columns kept.
    for inputs in ([str(d), str(val)], [str(val), str(d)]):
        with pytest.warns(evalkit.EvalkitWarning, match="reached a file already read"):
            r = evalkit.evaluate(inputs)
        assert r.metadata["rows_read"] == 200, inputs
        assert r.mean == pytest.approx(by_hand(p, y).mean(), rel=1e-12)
        counts = r.groups["split"].set_index("split")["count"]
        assert counts.to_dict() == {"train": 100, "val": 100}, inputs


def test_labels_file_reached_twice_warns(tmp_path: Path, monkeypatch):
    """A labels input reached twice (./x and x, a symlink, a glob over both) is read once with
    the same warning as a predictions input, and metadata.labels_deduplicated counts it."""
    from click.testing import CliRunner

    from evalkit.cli import main

    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"id": [0, 1, 2], "probs": [[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]]}).to_parquet("p.parquet")
    (tmp_path / "lab").mkdir()
    pd.DataFrame({"id": [2, 1, 0], "label": [0, 1, 0]}).to_parquet("lab/l.parquet")
    (tmp_path / "lab" / "link.parquet").symlink_to(tmp_path / "lab" / "l.parquet")
    want = -np.log([0.7, 0.8, 0.6]).mean()
    for labels in (["lab/l.parquet", "./lab/l.parquet"], "lab/*", "lab"):
        with pytest.warns(evalkit.EvalkitWarning, match="reached a file already read"):
            r = evalkit.evaluate("p.parquet", labels=labels, on="id")
        assert r.mean == pytest.approx(want, rel=1e-12) and r.metadata["labels_deduplicated"] == 1, labels
        assert r.metadata["inputs_deduplicated"] == 0
        assert any("lab/l" in w and "reached a file already read" in w for w in r.metadata["warnings"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert evalkit.evaluate("p.parquet", labels="lab/l.parquet").metadata["labels_deduplicated"] == 0
    res = CliRunner().invoke(main, ["evaluate", "p.parquet", "--labels", "lab/*", "--out", "r", "-q"])
    assert res.exit_code == 0 and "warning: " in res.output and "reached a file already read" in res.output
    res = CliRunner().invoke(main, ["inspect", "p.parquet", "--labels", "lab/*"])
    assert "reached a file already read" in res.output


def test_on_without_labels_is_a_config_error():
    df = pd.DataFrame({"probs": [[0.5, 0.5]], "label": [0], "id": [1]})
    for frame in (df, df.drop(columns="id")):  # present or missing, --on alone means nothing
        with pytest.raises(evalkit.ConfigError, match=r"on=KEY needs labels=FILE"):
            evalkit.evaluate(frame, on="id")


def test_fsspec_glob_and_twice_spelled_url_read_once(tmp_path: Path, rng):
    fsspec = pytest.importorskip("fsspec")
    p = random_probs(rng, 50, 3)
    y = rng.integers(0, 3, 50)
    local = write(pa.table({"label": y, **{f"prob_{i}": p[:, i] for i in range(3)}}), tmp_path / "x.parquet")
    fsspec.filesystem("memory").pipe("/dedupe_t/part/x.parquet", local.read_bytes())
    r = evalkit.evaluate("memory://dedupe_t/**")  # fsspec's glob lists /dedupe_t/part too
    assert r.metadata["rows_read"] == 50 and r.mean == pytest.approx(by_hand(p, y).mean(), rel=1e-12)
    with pytest.warns(evalkit.EvalkitWarning, match="reached a file already read"):
        r = evalkit.evaluate(["memory://dedupe_t/part/x.parquet", "memory:///dedupe_t/part//x.parquet"])
    assert r.metadata["rows_read"] == 50 and r.metadata["inputs_deduplicated"] == 1
