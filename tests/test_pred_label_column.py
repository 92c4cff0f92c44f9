"""A text ``pred_label`` column beside numeric ``pred_<class>`` columns (rt-final9 F10): the
predicted class, common in exports, blocked detection ("prediction column 'pred_label' has
type string"). When its values name the classes of the numeric columns it is left out, with a
note; any other text column with the prefix is still refused (leaving it out could drop a class)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evalkit
from evalkit.errors import ColumnTypeError

N = 60
CLASSES = ["eel", "cat", "dog"]


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), N)
    return pd.DataFrame({f"pred_{c}": p[:, i] for i, c in enumerate(CLASSES)}).assign(
        pred_label=np.array(CLASSES)[p.argmax(axis=1)], label=rng.choice(CLASSES, N))


def test_a_predicted_class_column_is_left_out_with_a_note(tmp_path):
    df = _frame()
    path = tmp_path / "pl.parquet"
    df.to_parquet(path)
    r = evalkit.evaluate(str(path), plots=False)
    want = evalkit.evaluate(df.drop(columns=["pred_label"]), plots=False)
    assert r.overall["mean"] == want.overall["mean"]
    assert any("'pred_label' holds class names" in n for n in r.layout.notes)


def test_another_text_column_with_the_prefix_is_still_refused(tmp_path):
    df = _frame().assign(pred_label=["0.2"] * N)
    path = tmp_path / "pl.parquet"
    df.to_parquet(path)
    with pytest.raises(ColumnTypeError, match="'pred_label' has type string"):
        evalkit.evaluate(str(path), plots=False)
