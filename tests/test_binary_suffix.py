"""A single binary column named with a class after a known prefix (rt-main10 F9): ``prob_1`` /
``p_1`` (conventional binary names) beside ``--classes 1,0`` was read as P('0') by position
(mean 1.94 instead of 0.25, exit 0, a warning only), while ``prob_0`` + ``--classes 0,1`` and
``score_1`` + ``--classes 1,0`` are refused as contradicting the column's name. Refused alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evalkit
from evalkit.errors import ClassesError

N = 200


def _frame(col: str) -> tuple[pd.DataFrame, float]:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.98, N)
    y = (rng.uniform(size=N) < p).astype(int)
    return pd.DataFrame({col: p, "label": y}), float(np.mean(-np.log(np.where(y == 1, p, 1 - p))))


@pytest.mark.parametrize("col", ["prob_1", "p_1", "score_1"])
def test_a_column_named_for_class_1_with_1_named_first_is_refused(col):
    df, _ = _frame(col)
    with pytest.raises(ClassesError, match=f"{col!r} is P\\('1'\\), the positive class"):
        evalkit.evaluate(df, classes=["1", "0"], plots=False)


@pytest.mark.parametrize("col", ["prob_1", "p_1"])
def test_a_column_named_for_class_1_reads_p_of_1(col):
    df, want = _frame(col)
    assert evalkit.evaluate(df, classes=["0", "1"], plots=False).overall["mean"] == pytest.approx(want, rel=1e-12)
    assert evalkit.evaluate(df, plots=False).overall["mean"] == pytest.approx(want, rel=1e-12)
