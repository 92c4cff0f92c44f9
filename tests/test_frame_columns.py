"""A pandas DataFrame is read for the columns a run needs (rt-api9 F15): a column Arrow cannot
convert (mixed text and numbers from CSV / Excel, dicts, complex numbers, a duplicated name)
stops the run only when a setting names it or detection may read it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evalkit
from evalkit.errors import ColumnTypeError

N = 40


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, N)
    return pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": rng.choice(["a", "b"], N),
                         "region": rng.choice(["n", "s"], N)})


def _messy(n: int) -> dict[str, list]:
    return {"notes": [[1, "x", None, 2.5][i % 4] for i in range(n)],
            "meta": [[{"a": 1}, 3, None][i % 3] for i in range(n)],
            "z": [complex(i, 1) for i in range(n)]}


@pytest.mark.parametrize("column", ["notes", "meta", "z"])
def test_an_unused_column_arrow_cannot_read_is_left_out(column):
    df = _frame()
    want = evalkit.evaluate(df, by="region", plots=False)
    got = evalkit.evaluate(df.assign(**{column: _messy(N)[column]}), by="region", plots=False)
    assert got.overall["mean"] == want.overall["mean"]
    pd.testing.assert_frame_equal(got.groups["region"], want.groups["region"])


def test_an_unused_duplicated_column_is_left_out():
    df = _frame()
    dup = pd.concat([df, df[["region"]].assign(region="x").rename(columns={"region": "extra"}),
                     df[["region"]].rename(columns={"region": "extra"})], axis=1)
    assert list(dup.columns).count("extra") == 2
    assert evalkit.evaluate(dup, plots=False).overall["mean"] == evalkit.evaluate(df, plots=False).overall["mean"]


def test_a_named_or_detectable_column_arrow_cannot_read_is_still_refused_by_name():
    df = _frame().assign(notes=_messy(N)["notes"])
    with pytest.raises(ColumnTypeError, match="notes"):
        evalkit.evaluate(df, by="notes", plots=False)
    bad_label = _frame()
    bad_label["label"] = [["a", 1][i % 2] for i in range(N)]
    with pytest.raises(ColumnTypeError, match="label"):
        evalkit.evaluate(bad_label, plots=False)
