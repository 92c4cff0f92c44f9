"""-0.0 and 0.0 are one key (red team 16): in --by and --slices columns of any float width,
and in --on join keys, whatever the batching and file layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import evalkit
from evalkit.aggregate.keys import canonical_keys


def _frame(n: int, dtype: str) -> pd.DataFrame:
    p = np.full(n, 0.8)
    p[::2] = 0.3
    z = np.where(np.arange(n) % 4 < 2, 0.0, -0.0).astype(dtype)
    z[::7] = 1.5
    return pd.DataFrame({"prob_0": 1 - p, "prob_1": p, "label": 1, "z": z})


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_canonical_keys_make_minus_zero_plus_zero(dtype):
    a = pa.array(np.array([0.0, -0.0, np.nan, 2.0, -0.0], dtype=dtype))
    got = canonical_keys(a)
    assert got.type == a.type
    assert got.null_count == 1
    vals = got.to_numpy(zero_copy_only=False)
    assert not np.signbit(vals[[0, 1, 4]]).any() and vals[3] == 2.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_minus_zero_and_zero_are_one_group_and_slice_for_any_batching(tmp_path, dtype):
    n = 1000
    df = _frame(n, dtype)
    loss = -np.log(np.where(np.arange(n) % 2 == 0, 0.3, 0.8))
    zero = df["z"].to_numpy() == 0
    df.iloc[: n // 2].to_parquet(tmp_path / "part-0.parquet", row_group_size=37)
    df.iloc[n // 2:].to_parquet(tmp_path / "part-1.parquet", row_group_size=37)
    runs = [evalkit.evaluate(df, by=["z"], slices=["z"], write_rows=False)]
    for bs in (1, 3, 1000):
        runs.append(evalkit.evaluate(tmp_path, by=["z"], slices=["z"], batch_size=bs, write_rows=False))
    first = runs[0]
    g = first.groups["z"]
    assert len(g) == 2
    row = g[g["z"] == 0].iloc[0]
    assert row["count"] == zero.sum()
    assert row["mean"] == pytest.approx(loss[zero].mean(), rel=1e-9)
    assert not np.signbit(g["z"].to_numpy(dtype=float)).any()
    s = first.slices.set_index("slice")
    zs = s[s["count"] == zero.sum()]
    assert len(zs) == 1 and zs["complement_count"].iloc[0] == n - zero.sum()
    for r in runs[1:]:
        pd.testing.assert_frame_equal(r.groups["z"], g)
        pd.testing.assert_frame_equal(r.slices, first.slices)


def test_minus_zero_joins_a_zero_label_key():
    preds = pd.DataFrame({"k": [0.0, 1.0, 2.0], "prob_0": [0.9, 0.2, 0.5], "prob_1": [0.1, 0.8, 0.5]})
    labels = pd.DataFrame({"k": [-0.0, 1.0, 2.0], "label": [0, 1, 1]})
    r = evalkit.evaluate(preds, labels=labels, on="k", write_rows=False)
    assert r.overall.count == 3
    assert r.mean == pytest.approx(-np.log([0.9, 0.8, 0.5]).mean(), rel=1e-9)
