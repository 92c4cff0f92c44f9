"""Wide list batches scored on the decode threads (engines.base.batch_preparer, the reader's
``prepare`` hook) give exactly the results of the ordinary path: every table and the per-row
file byte for byte, the same errors naming the same rows, with invalid rows, skipped and
ignored rows, named labels, a labels join and logits (the last two take the ordinary path)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit
import evalkit.engines.base as base
import evalkit.engines.local as local

K = 80


def _file(tmp_path, *, invalid: bool, names: bool = False, logits: bool = False):
    rng = np.random.default_rng(5)
    n = 2_400
    p = rng.dirichlet(np.full(K, 0.4), size=n)
    p[rng.random((n, K)) < 0.1] = 0.0  # exact zeros: 0 log 0
    p /= p.sum(axis=1, keepdims=True)
    p = p.astype(np.float32)
    label = rng.integers(0, K, n)
    lists = [list(r) for r in p]
    if invalid:  # in the third batch of 300 rows and later ones
        p_bad = p.copy()
        p_bad[700] = np.nan
        p_bad[1234, 3] += 0.5  # sums to 1.5
        p_bad[1900, 0] = -0.25
        lists = [list(r) for r in p_bad]
        lists[1500] = None  # null prediction
        lists[2100] = lists[2100][:-1]  # wrong length
        label[1000] = K + 3  # out of range
        label[1601::97] = -100  # padding (the ignore label), never a class; after the first bad row
    values = pa.array(lists, type=pa.list_(pa.float32()))
    if logits:
        values = pa.array([list(np.log(np.maximum(r, 1e-12))) for r in p], type=pa.list_(pa.float32()))
    cols = {"id": np.arange(n), "probs" if not logits else "logits": values,
            "label": pa.array(["pad" if v == -100 else f"c{v}" for v in label]) if names else label,
            "split": rng.choice(["a", "b", "c"], n)}
    table = pa.table(cols)
    path = tmp_path / "p.parquet"
    pq.write_table(table, path, row_group_size=700)  # tasks end with short batches too
    return path, table


@pytest.fixture
def count(monkeypatch):
    """How many batches were prepared (so no test passes with the hook never used)."""
    seen = {"prepared": 0}
    real = base.batch_preparer

    def counting(plan, label_index=None):
        hook = real(plan, label_index)
        if hook is None:
            return None

        def prepare(batch):
            out = hook(batch)
            seen["prepared"] += out is not None
            return out
        return prepare

    monkeypatch.setattr(local, "batch_preparer", counting)
    return seen


def _both(monkeypatch, tmp_path, data, **opts):
    results = []
    for prepare in (True, False):
        monkeypatch.setattr(local, "PREPARE", prepare)
        r = evalkit.evaluate(str(data), batch_size=300, **opts)
        out = tmp_path / f"out_{prepare}"
        r.write(out, overwrite=True)
        results.append((r, out))
    (a, da), (b, db) = results
    assert dict(a.overall) == dict(b.overall)
    for name in a.groups:
        pd.testing.assert_frame_equal(a.groups[name], b.groups[name])
    pd.testing.assert_frame_equal(a.calibration, b.calibration)
    for f in sorted(da.glob("*.parquet")):
        assert f.read_bytes() == (db / f.name).read_bytes(), f.name
    assert a.metadata["skipped"] == b.metadata["skipped"]
    assert a.metadata["rows_used"] == b.metadata["rows_used"]
    return a, b


def test_clean_rows_are_prepared_with_identical_outputs(tmp_path, monkeypatch, count):
    path, _ = _file(tmp_path, invalid=False)
    a, _ = _both(monkeypatch, tmp_path, path, by=["split"])
    assert count["prepared"] >= 6  # 2,400 rows: 300-row batches, the short task ends not prepared
    assert a.metadata["rows_used"] == 2_400


@pytest.mark.parametrize("names", [False, True])
def test_invalid_and_ignored_rows_skipped_alike(tmp_path, monkeypatch, count, names):
    path, table = _file(tmp_path, invalid=True, names=names)
    ignore = "pad" if names else -100  # an ignore label is no class (ins T16)
    extra = {"classes": [f"c{i}" for i in range(K)]} if names else {}
    a, _ = _both(monkeypatch, tmp_path, path, by=["split"], on_invalid="skip", ignore_label=ignore, **extra)
    assert count["prepared"] >= 2  # the clean batches
    assert sum(a.metadata["skipped"].values()) >= 6 and a.metadata["rows_ignored"] > 0


def test_the_same_error_names_the_same_row(tmp_path, monkeypatch, count):
    path, _ = _file(tmp_path, invalid=True)
    messages = []
    for prepare in (True, False):
        monkeypatch.setattr(local, "PREPARE", prepare)
        with pytest.raises(evalkit.EvalkitError) as err:
            evalkit.evaluate(str(path), batch_size=300)
        messages.append((type(err.value), str(err.value)))
    assert messages[0] == messages[1]
    assert "700" in messages[0][1]  # the first bad row (NaN), after prepared batches
    assert count["prepared"] >= 2


def test_a_labels_join_and_logits_take_the_ordinary_path(tmp_path, monkeypatch, count):
    path, table = _file(tmp_path, invalid=False)
    preds = tmp_path / "preds.parquet"
    pq.write_table(table.drop_columns(["label"]), preds, row_group_size=700)
    labels = tmp_path / "labels.parquet"
    pq.write_table(table.select(["id", "label"]), labels)
    _both(monkeypatch, tmp_path, preds, labels=str(labels), on="id", by=["split"])
    (tmp_path / "l").mkdir()
    lpath, _ = _file(tmp_path / "l", invalid=False, logits=True)
    _both(monkeypatch, tmp_path, lpath, logits=True)
    assert count["prepared"] == 0


def test_no_hook_for_narrow_or_unusual_plans():
    from evalkit.layout import Layout

    def plan(**kw):
        lay = dict(kind="list", pred_columns=("probs",), from_logits=False,
                   classes=tuple(str(i) for i in range(K)), label_kind="index", label_columns=("label",))
        lay.update(kw.pop("layout", {}))
        return base.Plan(layout=Layout(**lay), groupings=(), eps=1e-7, **kw)

    assert base.batch_preparer(plan()) is not None
    assert base.batch_preparer(plan(renormalize=True)) is None
    assert base.batch_preparer(plan(layout={"from_logits": True})) is None
    assert base.batch_preparer(plan(layout={"classes": ("a", "b", "c")})) is None
    assert base.batch_preparer(plan(layout={"kind": "wide", "pred_columns": tuple(f"p{i}" for i in range(K))})) is None
    assert base.batch_preparer(plan(layout={"label_kind": "soft", "label_columns": ("t",)})) is None
    assert base.batch_preparer(plan(carry=("probs",))) is None


def test_weights_slices_and_hardest_rows_alike(tmp_path, monkeypatch, count):
    path, table = _file(tmp_path, invalid=False)
    rng = np.random.default_rng(9)
    weighted = tmp_path / "w.parquet"
    pq.write_table(table.append_column("w", pa.array(rng.random(table.num_rows))), weighted,
                   row_group_size=700)
    a, b = _both(monkeypatch, tmp_path, weighted, by=["split"], weight="w", slices=["split"], top_k=25)
    assert count["prepared"] >= 6  # hardest.parquet and the slice tables compared by _both
