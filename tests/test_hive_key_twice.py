"""One hive key at two directory levels of one path (rt-api9 F16): ``split=a/split=b/`` names
two values for one column; the inner one won silently. Refused naming both directories, as a
file whose own column disagrees with its directory is; the same value twice is one value."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit
from evalkit.errors import PartitionConflictError


def _file(path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.1, 0.9, 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"prob": p, "label": rng.integers(0, 2, 20)}), path)


def test_one_key_with_two_values_on_one_path_is_refused_naming_both(tmp_path):
    _file(tmp_path / "split=a" / "split=b" / "f.parquet", 0)
    _file(tmp_path / "split=c" / "f.parquet", 1)
    with pytest.raises(PartitionConflictError, match=r"'split' is given twice.*'a' by .*split=a/ and 'b' by .*split=a/split=b/"):
        evalkit.evaluate(str(tmp_path), plots=False)


def test_one_key_with_one_value_twice_is_that_value(tmp_path):
    _file(tmp_path / "split=c" / "split=c" / "f.parquet", 0)
    _file(tmp_path / "split=d" / "f.parquet", 1)
    r = evalkit.evaluate(str(tmp_path), plots=False)
    assert dict(zip(r.groups["split"]["split"], r.groups["split"]["count"], strict=True)) == {"c": 20, "d": 20}
