"""escape.key_labels (vectorised group labels) == key_label row by row, for every key type."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from evalkit.escape import key_label, key_labels

STRINGS = ["EU", "", "∅", '"q"', " x", "x ", "\u00a0x", "x\u2003", "a\nb", "Ä", "ab-c", "1", "a",
           "x\t", "\x1cx", "u0001", "∅x", "null", "None"]


def _columns(n: int, seed: int) -> dict[str, pd.Series]:
    rng = np.random.default_rng(seed)
    ints = rng.integers(-5, 5, n)
    missing = rng.random(n) < 0.2
    strs = np.array(STRINGS + [None], dtype=object)[rng.integers(0, len(STRINGS) + 1, n)]
    return {
        "str": pd.Series(strs, dtype="str"),
        "obj": pd.Series(strs, dtype=object),
        "int": pd.Series(ints),
        "Int64": pd.Series(pd.array(np.where(missing, None, ints).tolist(), dtype="Int64")),
        "uint8": pd.Series(ints.astype(np.uint8)),
        "bool": pd.Series(ints > 0),
        "boolean": pd.Series(pd.array(np.where(missing, None, ints > 0).tolist(), dtype="boolean")),
        "float": pd.Series(np.where(missing, np.nan, ints / 3)),
        "time": pd.Series(pd.to_datetime(np.where(missing, None, [dt.datetime(2024, 1, 1 + i % 9)
                                                                  for i in range(n)]))),
        "cat": pd.Series(pd.Categorical(np.where(missing, None, np.array(["b", "a", ""])[ints % 3]))),
        "mixed": pd.Series(np.where(missing, "s", ints).tolist(), dtype=object).where(ints != 0, 7),
    }


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("names", [["str"], ["obj"], ["int"], ["Int64"], ["uint8"], ["bool"],
                                   ["boolean"], ["float"], ["time"], ["cat"], ["mixed"],
                                   ["str", "Int64"], ["float", "str", "bool"]])
def test_key_labels_equal_key_label_row_by_row(names, seed):
    cols = _columns(300, seed)
    got = key_labels([cols[c] for c in names])
    records = pd.DataFrame({c: cols[c] for c in names}).to_dict("records")
    want = [key_label([r[c] for c in names]) for r in records]
    assert got.type == pa.large_string()
    assert got.to_pylist() == want


def test_key_labels_of_arrow_arrays_and_chunks():
    arr = pa.chunked_array([pa.array(["a", None, ""]), pa.array([" b", "c"])])
    assert key_labels([arr]).to_pylist() == ["a", "∅", '""', '" b"', "c"]
    assert key_labels([pa.array([1, None]), pa.array([True, None])]).to_pylist() == ["1,true", "∅,∅"]
