"""One key space at the ``--on`` join: a predictions key and a labels key written in two types
of one kind are matched by the rule runs' keys are matched by
(:func:`evalkit.aggregate.keys.match_key_parts`), whichever side holds which type: a float32
key is the float64 it prints as (a float32 prediction key 0.1 found no float64 label 0.1, while
float64 predictions did match float32 labels), a date is its midnight. Keys of two kinds, or
a naive and a zoned timestamp, are refused naming both types."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit
from evalkit.errors import JoinError

N = 40
F = [0.1, 0.2, 0.3, 0.7] * (N // 4)


def _frames(pred_keys: list, label_keys: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    preds = pd.DataFrame({"id": pred_keys, "prob": rng.uniform(0.05, 0.95, len(pred_keys))})
    labels = pd.DataFrame({"id": label_keys, "label": rng.integers(0, 2, len(label_keys))})
    return preds, labels


def _unique(keys: list) -> list:
    return list(dict.fromkeys(keys))


@pytest.mark.parametrize("pred_type, label_type", [("float32", "float64"), ("float64", "float32")])
def test_float32_and_float64_join_keys_match_on_either_side(pred_type, label_type):
    preds, labels = _frames(_unique(F), _unique(F))
    preds["id"] = preds["id"].astype(pred_type)
    labels["id"] = labels["id"].astype(label_type)
    res = evalkit.evaluate(preds, labels=labels, on="id", plots=False)
    assert res.overall["count"] == 4


def test_a_polars_float32_key_joins_a_labels_directory_of_float32_and_float64_shards(tmp_path: Path):
    """The labels input's own shards: its key column is read by the key rule too."""
    keys = [round(0.1 * i, 1) for i in range(1, 9)]
    preds, labels = _frames(keys, keys)
    (tmp_path / "labels").mkdir()
    labels.iloc[:4].astype({"id": "float32"}).to_parquet(tmp_path / "labels" / "a.parquet")
    labels.iloc[4:].to_parquet(tmp_path / "labels" / "b.parquet")
    pl.from_pandas(preds).with_columns(pl.col("id").cast(pl.Float32)).write_parquet(tmp_path / "p.parquet")
    res = evalkit.evaluate(str(tmp_path / "p.parquet"), labels=str(tmp_path / "labels"), on="id", plots=False)
    assert res.overall["count"] == 8
    # and float64 predictions against the same labels
    preds.to_parquet(tmp_path / "p64.parquet")
    assert evalkit.evaluate(str(tmp_path / "p64.parquet"), labels=str(tmp_path / "labels"), on="id",
                            plots=False).overall["count"] == 8


def test_float32_join_keys_one_ulp_apart_stay_two_keys():
    x = np.float32(0.1)
    y = np.nextafter(x, np.float32(1))
    preds, labels = _frames([y, x], [float(str(x)), float(str(y))])
    preds["id"] = preds["id"].astype("float32")
    labels["label"] = [0, 1]
    res = evalkit.evaluate(preds, labels=labels, on="id", plots=False)
    assert res.overall["count"] == 2
    assert res.rows["label"].tolist() == ["1", "0"]  # each prediction row found its own label


def test_a_date_key_joins_the_midnight_timestamp_key():
    days = [dt.date(2024, 1, d) for d in range(1, 5)]
    preds, labels = _frames(days, [pd.Timestamp(d) for d in days])
    preds["id"] = pa.array(days, pa.date32()).to_pandas(types_mapper=pd.ArrowDtype)
    assert evalkit.evaluate(preds, labels=labels, on="id", plots=False).overall["count"] == 4


def test_a_naive_and_a_zoned_timestamp_key_are_refused_naming_both_types(tmp_path: Path):
    """A timestamp without a time zone names no instant (as across runs): no guessed join."""
    stamps = [pd.Timestamp(2024, 1, d) for d in range(1, 5)]
    preds, labels = _frames(stamps, [s.tz_localize("UTC") for s in stamps])
    preds.to_parquet(tmp_path / "p.parquet")
    labels.to_parquet(tmp_path / "l.parquet")
    with pytest.raises(JoinError, match=r"timestamp\[(us|ns), tz=UTC\] in the labels input but timestamp\[(us|ns)\]"):
        evalkit.evaluate(str(tmp_path / "p.parquet"), labels=str(tmp_path / "l.parquet"), on="id", plots=False)
    assert pq.read_schema(tmp_path / "l.parquet").field("id").type.tz == "UTC"


def test_a_number_and_a_string_key_are_refused():
    preds, labels = _frames(["1", "2"], [1, 2])
    with pytest.raises(JoinError, match="int64 in the labels input but string in the predictions"):
        evalkit.evaluate(preds, labels=labels, on="id", plots=False)


def test_a_group_column_of_the_labels_input_is_read_as_a_key(tmp_path: Path):
    """A ``--by`` column that only the labels input holds, in a float32 and a float64 shard:
    one group per value, as in the predictions input."""
    rng = np.random.default_rng(1)
    ids = np.arange(N)
    pd.DataFrame({"id": ids, "prob": rng.uniform(0.05, 0.95, N)}).to_parquet(tmp_path / "p.parquet")
    labels = pd.DataFrame({"id": ids, "label": rng.integers(0, 2, N), "g": [0.1, 0.2] * (N // 2)})
    (tmp_path / "labels").mkdir()
    labels.iloc[: N // 2].astype({"g": "float32"}).to_parquet(tmp_path / "labels" / "a.parquet")
    labels.iloc[N // 2:].to_parquet(tmp_path / "labels" / "b.parquet")
    g = evalkit.evaluate(str(tmp_path / "p.parquet"), labels=str(tmp_path / "labels"), on="id", by="g",
                         plots=False).groups["g"]
    assert g["g"].tolist() == [0.1, 0.2] and g["count"].tolist() == [N // 2, N // 2]
