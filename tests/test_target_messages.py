"""Errors about soft / one-hot target columns name those columns, as errors about the
prediction columns do (rt-main10 F7: "column targets: target rows do not sum to 1")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evalkit
from evalkit.errors import EvalkitError


def frame(targets: np.ndarray) -> pd.DataFrame:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]] * 10)
    return pd.DataFrame({**{f"prob_{c}": p[:, i] for i, c in enumerate("abc")},
                         **{f"target_{c}": targets[:, i] for i, c in enumerate("abc")}})


@pytest.mark.parametrize("how", ["sum", "negative", "nan"])
def test_a_target_problem_names_the_target_columns(how):
    t = np.tile(np.eye(3), (10, 1))
    if how == "sum":
        t = t * 1.5
    elif how == "negative":
        t[:, 0] += 0.2
        t[:, 1] -= 0.2
    else:
        t[3, 0] = np.nan
    with pytest.raises(EvalkitError) as err:
        evalkit.evaluate(frame(t))
    assert "column target_a, target_b, target_c:" in str(err.value), str(err.value)
    assert "column targets" not in str(err.value)
