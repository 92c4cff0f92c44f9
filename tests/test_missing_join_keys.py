"""A missing key (null, or NaN in a float column: one missing key, as the README says) names
no row, so it is never matched (tester T15): the ``--on`` join refuses it in the labels input
and treats it in the predictions as an unmatched key (refused, or dropped and counted with
``unmatched='drop'``), whether it is stored as null or as NaN, from files or DataFrames, on
either engine; compare never pairs two rows because both lack a row key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit
from evalkit.errors import JoinError

NAN = float("nan")


def _missing(kind: str) -> object:
    return NAN if kind == "nan" else None


def _preds(kind: str) -> pa.Table:
    return pa.table({"k": pa.array([_missing(kind), 0.0, 1.0], pa.float64()), "prob": [0.9, 0.2, 0.7]})


def _labels(kind: str | None) -> pa.Table:
    last = 2.0 if kind is None else _missing(kind)
    return pa.table({"k": pa.array([1.0, -0.0, last], pa.float64()), "label": [1, 0, 1]})


def _as(form: str, table: pa.Table, path) -> object:
    if form == "file":
        pq.write_table(table, path)
        return str(path)
    return table.to_pandas()  # pandas holds null and NaN alike as NaN


@pytest.mark.parametrize("form", ["file", "dataframe"])
@pytest.mark.parametrize("kind", ["nan", "null"])
def test_a_missing_label_key_is_refused_never_matched_to_a_missing_prediction_key(tmp_path, form, kind):
    preds = _as(form, _preds(kind), tmp_path / "p.parquet")
    labels = _as(form, _labels(kind), tmp_path / "l.parquet")
    for unmatched in ("error", "drop"):
        with pytest.raises(JoinError, match=r"key column 'k' has missing \(null or NaN\) keys.*row 2"):
            evalkit.evaluate(preds, labels=labels, on="k", unmatched=unmatched, plots=False)


@pytest.mark.parametrize("form", ["file", "dataframe"])
@pytest.mark.parametrize("kind", ["nan", "null"])
def test_a_missing_prediction_key_is_unmatched(tmp_path, form, kind):
    preds = _as(form, _preds(kind), tmp_path / "p.parquet")
    labels = _as(form, _labels(None), tmp_path / "l.parquet")
    with pytest.raises(JoinError, match="no row in the labels input.*row 0"):
        evalkit.evaluate(preds, labels=labels, on="k", plots=False)
    r = evalkit.evaluate(preds, labels=labels, on="k", unmatched="drop", plots=False)
    assert r.overall["count"] == 2
    assert r.rows["loss"].tolist() == pytest.approx([-np.log(0.8), -np.log(0.7)])


def test_the_dask_engine_never_matches_a_missing_key(tmp_path):
    distributed = pytest.importorskip("distributed")
    labels = pa.table({"k": pa.array([1.0, -0.0, NAN, 3.0]), "label": [1, 0, 1, 0]})
    preds = _preds("nan")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=":0") as client:
        with pytest.raises(JoinError, match="missing"):
            evalkit.evaluate(preds, labels=labels, on="k", engine="dask", client=client, plots=False)
        r = evalkit.evaluate(preds, labels=_labels(None), on="k", engine="dask", client=client,
                             unmatched="drop", plots=False)
        assert r.overall["count"] == 2


@pytest.mark.parametrize("missing", [NAN, None])
def test_compare_never_pairs_rows_on_a_missing_row_key(missing):
    rng = np.random.default_rng(0)
    n = 60
    loss_b = 1.0 + rng.exponential(1.0, n)
    loss_c = loss_b + 0.05

    def frame(loss, ids):
        p = np.exp(-loss)
        return pd.DataFrame({"id": ids, "prob_a": p, "prob_b": 1 - p, "label": "a"})

    ids = pd.array(np.arange(n, dtype=np.float64), dtype="object")
    ids[0] = missing
    b = evalkit.evaluate(frame(loss_b, ids.copy()), keys=["id"], plots=False)
    c = evalkit.evaluate(frame(loss_c, ids.copy()), keys=["id"], plots=False)
    res = evalkit.compare(b, c)
    o = res.tables["overall"].iloc[0]
    # the two missing-key rows are not the same row: not every row has its partner
    assert o["n_paired"] != n
    assert "missing key are never paired: 1 in the baseline, 1 in the candidate" in res.metadata["pairing"]["reason"]
    # without the missing key every row is paired
    b = evalkit.evaluate(frame(loss_b[1:], np.arange(1, n)), keys=["id"], plots=False)
    c = evalkit.evaluate(frame(loss_c[1:], np.arange(1, n)), keys=["id"], plots=False)
    assert evalkit.compare(b, c).tables["overall"]["n_paired"].iloc[0] == n - 1
