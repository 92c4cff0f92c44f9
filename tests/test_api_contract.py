"""The Python API's contract (rt-api9 F10, F11, F13, F14, F1, F17, F18): ``write`` writes what
the run computed, a result survives pickling / copying / a worker process with its rows, only
EvalkitErrors leave the library (raised before any work), ``to_dict`` is what summary.json
holds, and an input column named ``scope`` survives in hardest.parquet."""

from __future__ import annotations

import copy
import gc
import json
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit
from evalkit import EvalConfig
from evalkit.errors import ConfigError, UsageError


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, n)
    return pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": rng.choice(["a", "b"], n),
                         "region": rng.choice(["x", "y"], n)})


def _file(tmp_path, n: int = 40) -> str:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pandas(_frame(n), preserve_index=False), path)
    return str(path)


def test_write_writes_what_the_run_computed_not_the_callers_edits(tmp_path):
    r = evalkit.evaluate(_frame(), by="region", plots=False)
    want = r.groups["region"].copy()
    r.groups["region"]["my_note"] = "hello"
    r.groups["region"].loc[0, "mean"] = 99.0
    del r.groups["class"]["p99"]
    del r.confusion["mean"]
    out = r.write(tmp_path / "o")
    by_region = pq.read_table(out / "by_region.parquet").to_pandas()
    assert "my_note" not in by_region.columns
    pd.testing.assert_frame_equal(by_region, want, check_dtype=False)
    assert "p99" in pq.read_table(out / "by_class.parquet").column_names
    assert "mean" in pq.read_table(out / "confusion.parquet").column_names
    summary = json.loads((out / "summary.json").read_text())
    assert 99.0 not in [g["mean"] for g in summary["groups"]["region"]]
    # the caller keeps the edits
    assert r.groups["region"].loc[0, "mean"] == 99.0 and "my_note" in r.groups["region"]
    r2 = evalkit.evaluate(_frame(), by="region", plots=False)
    del r2.groups["region"]["mean"]
    del r2.groups["class"]
    out2 = r2.write(tmp_path / "o2")  # was KeyError: 'mean' / 'class'
    assert {"by_region.parquet", "by_class.parquet"} <= {p.name for p in out2.iterdir()}


def _evaluate_file(path: str):
    return evalkit.evaluate(path, plots=False)


def test_a_result_from_a_file_keeps_its_rows_when_pickled_copied_or_returned_from_a_worker(tmp_path):
    path = _file(tmp_path)
    want = evalkit.evaluate(path, plots=False).rows
    r = evalkit.evaluate(path, plots=False)
    spool = r._rows_path
    data = pickle.dumps(r)
    shallow, deep = copy.copy(r), copy.deepcopy(r)
    del r
    gc.collect()
    assert not spool.exists()  # the run's spool went with the original
    for other in (pickle.loads(data), shallow, deep):
        pd.testing.assert_frame_equal(other.rows, want)
        out = other.write(tmp_path / f"o{id(other)}")
        assert pq.read_table(out / "rows.parquet").num_rows == len(want)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        pooled = ex.submit(_evaluate_file, path).result()
    pd.testing.assert_frame_equal(pooled.rows, want)
    assert pq.read_table(pooled.write(tmp_path / "pool") / "rows.parquet").num_rows == len(want)


def test_results_compare_by_identity():
    r1, r2 = evalkit.evaluate(_frame(), plots=False), evalkit.evaluate(_frame(), plots=False)
    assert (r1 == r2) is False and (r1 == r1) is True and r1 not in [r2] and r1 in [r1]
    assert len({r1, r2}) == 2


@pytest.mark.parametrize(("call", "match"), [
    (lambda df, p: evalkit.evaluate(df, by=7), "by must name columns.*int 7.*by='7'"),
    (lambda df, p: evalkit.evaluate(df, by=["region", 7]), "by must name columns"),
    (lambda df, p: evalkit.evaluate(p + "-missing", progress=True), "progress must be a callable"),
    (lambda df, p: evalkit.evaluate(p + "-missing", progress="yes"), "progress must be a callable"),
    (lambda df, p: evalkit.evaluate(df, engine="dask", client="x"), "client must be a dask.distributed.Client"),
    (lambda df, p: evalkit.evaluate(df).write(None), "needs a directory path"),
    (lambda df, p: evalkit.evaluate(df).write(5), "needs a directory path"),
    (lambda df, p: evalkit.evaluate(df, config=EvalConfig(top_k="5")), "'top_k' must be a number"),
    (lambda df, p: evalkit.evaluate(df, config=EvalConfig(gates=[1])), "'gates' must be a mapping"),
    (lambda df, p: evalkit.evaluate(df, config=EvalConfig(weight=5)), "'weight' must be a string"),
    (lambda df, p: evalkit.evaluate(df, config=7), "config must be an EvalConfig"),
])
def test_bad_arguments_are_usage_errors_raised_up_front(tmp_path, call, match):
    """(a missing input path shows the check comes before any reading)"""
    with pytest.raises(UsageError, match=match):
        call(_frame(), str(tmp_path / "in.parquet"))


def test_an_evalconfig_built_directly_is_read_as_keywords_are():
    df = _frame()
    for kw in ({"by": "region"}, {"slices": "region"}, {"classes": "a,b"}):
        direct = evalkit.evaluate(df, config=EvalConfig(**kw), plots=False)
        keywords = evalkit.evaluate(df, plots=False, **kw)
        assert direct.mean == keywords.mean and list(direct.groups) == list(keywords.groups), kw


def test_run_takes_what_evaluates_config_takes(tmp_path):
    path = _file(tmp_path)
    for i, config in enumerate(({"input": path, "out": str(tmp_path / "r0"), "plots": False},
                                EvalConfig(input=path, out=str(tmp_path / "r1"), plots=False))):
        result, out = evalkit.run(config)
        assert out == tmp_path / f"r{i}" and (out / "summary.json").exists()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"input: {path}\nout: {tmp_path / 'r2'}\nplots: false\n")
    assert evalkit.run(str(cfg))[1] == tmp_path / "r2"
    with pytest.raises(UsageError, match="no input given"):
        evalkit.run(None)


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00eps: 1")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        evalkit.evaluate(_frame(), config=str(bad))


def test_errors_raised_by_evalkit_are_exported():
    from evalkit import errors

    for name in ("ClusterError", "PartitionConflictError", "ClassesError"):
        assert getattr(evalkit, name) is getattr(errors, name) and name in evalkit.__all__


def test_to_dict_spells_infinities_as_summary_json_does(tmp_path):
    n = 200
    g = np.array(["x"] * 100 + ["y"] * 100)
    p = np.where(g == "x", 0.5, 0.9)  # zero variance on both sides of the slice: t = inf
    df = pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": ["a"] * n, "g": g})
    r = evalkit.evaluate(df, slices=["g"], by="g", plots=False)
    d = r.to_dict()
    text = json.dumps(d, allow_nan=False)  # was ValueError: Out of range float values
    summary = json.loads((r.write(tmp_path / "o") / "summary.json").read_text())
    assert "Infinity" in text and json.loads(text)["slices"] == summary["slices"]


def test_an_input_column_named_scope_survives_in_hardest_parquet(tmp_path):
    df = _frame().assign(scope=np.arange(40) % 3)
    out = evalkit.evaluate(df, by="scope", plots=False).write(tmp_path / "o")
    hardest = pq.read_table(out / "hardest.parquet").to_pandas()
    assert set(hardest["scope"]) == {"overall", "class"}
    assert set(hardest["input:scope"]) <= {0, 1, 2} and hardest["input:scope"].notna().all()


def test_a_later_run_into_the_same_out_never_lends_its_rows_to_an_earlier_result(tmp_path):
    """F25: rA's rows live in out/rows.parquet; rB written to the same out replaces that file."""
    from evalkit.errors import OutputError

    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    frame = _frame(200)
    frame.to_parquet(a, index=False)
    frame.assign(prob_a=0.99, prob_b=0.01).to_parquet(b, index=False)
    kept = evalkit.evaluate(str(a), plots=False, out=str(tmp_path / "latest"))
    want = kept.rows.copy()  # read before the next run: kept
    ra = evalkit.evaluate(str(a), plots=False, out=str(tmp_path / "latest"), overwrite=True)
    rb = evalkit.evaluate(str(b), plots=False, out=str(tmp_path / "latest"), overwrite=True)
    with pytest.raises(OutputError, match="no longer the per-row output of this run"):
        ra.rows  # noqa: B018 - was model B's rows, silently
    with pytest.raises(OutputError, match="no longer the per-row output of this run"):
        ra.write(tmp_path / "archive")
    pd.testing.assert_frame_equal(kept.rows, want)
    assert rb.rows["loss"].mean() == pytest.approx(rb.mean)


def test_a_group_column_name_holding_a_comma_is_refused_up_front():
    """F28 (evaluate side): by=[["x,y"]] made a report history calls damaged, and next to
    columns x and y a KeyError; refused as slices=["a,b"] is."""
    df = _frame().assign(**{"x,y": 1, "x": 2, "y": 3})
    for by in ([["x,y"]], [["x,y"], ["x", "y"]]):
        with pytest.raises(UsageError, match="group column 'x,y' holds a comma"):
            evalkit.evaluate(df, by=by, plots=False)
    assert list(evalkit.evaluate(df, by=[["x", "y"]], plots=False).groups) == ["class", "x,y"]


@pytest.mark.parametrize("kw", [{"on": 5}, {"on": True}, {"on": [1]}, {"gates": ["max_mean_loss"]}, {"gates": 1.5},
                                {"by": [None]}])
def test_wrong_typed_on_gates_by_are_usage_errors(kw):
    """rt-main10 F4: evaluate(on=5) leaked a TypeError, gates=[...] an AttributeError."""
    from evalkit.errors import EvalkitError

    with pytest.raises(EvalkitError, match=next(iter(kw))):
        evalkit.evaluate(_frame(), plots=False, **kw)


@pytest.mark.parametrize("gates", ["x", 3, ["max_regression"]])
def test_wrong_typed_compare_gates_are_config_errors(tmp_path, gates):
    """rt-main10 F4 / rt-api9 F11: compare(gates=[...]) leaked AttributeError; one check in
    gates.gates_for for the three commands."""
    from evalkit.errors import ConfigError

    r = evalkit.evaluate(_frame(), plots=False)
    with pytest.raises(ConfigError, match="gates must be a mapping"):
        evalkit.compare(r, r, gates=gates)
