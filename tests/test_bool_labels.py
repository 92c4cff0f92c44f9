"""Boolean labels go to the class named by their value (rt-api9 F26): next to prob_True /
prob_False (any case, any column order, one column or two) True is the class True, never
"index 1"; next to classes named otherwise (prob_yes / prob_no) it is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import LayoutError

N = 500


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    p_true = rng.uniform(0.05, 0.95, N)
    y = rng.uniform(size=N) < p_true
    return p_true, y, float(np.mean(-np.log(np.where(y, p_true, 1 - p_true))))


@pytest.mark.parametrize("names", [("True", "False"), ("False", "True"), ("true", "false")])
def test_two_columns_named_by_the_booleans(tmp_path, names):
    p, y, want = _data()
    cols = {f"prob_{n}": (p if n.lower() == "true" else 1 - p) for n in names}
    df = pd.DataFrame({**cols, "label": y})
    assert evalkit.evaluate(df, plots=False).mean == pytest.approx(want, rel=1e-12)
    path = tmp_path / "b.parquet"
    df.to_parquet(path, index=False)
    r = CliRunner().invoke(main, ["evaluate", str(path), "--no-plots", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and f"mean loss {want:.4f}" in r.output, r.output
    assert pq.read_table(tmp_path / "o" / "by_class.parquet").num_rows == 2


@pytest.mark.parametrize("name", ["prob_True", "prob_False"])
def test_one_column_named_by_a_boolean(name):
    p, y, want = _data(1)
    df = pd.DataFrame({name: p if name.endswith("True") else 1 - p, "label": y})
    res = evalkit.evaluate(df, plots=False)
    assert res.mean == pytest.approx(want, rel=1e-12) and not res.warnings


def test_other_class_names_with_boolean_labels_are_refused():
    p, y, _ = _data()
    df = pd.DataFrame({"prob_yes": p, "prob_no": 1 - p, "label": y})
    with pytest.raises(LayoutError, match="holds booleans but the classes are named yes, no"):
        evalkit.evaluate(df, plots=False)


def test_numbered_columns_keep_false_as_0_and_true_as_1():
    p, y, want = _data(2)
    df = pd.DataFrame({"prob_1": p, "prob_0": 1 - p, "label": y})
    assert evalkit.evaluate(df, plots=False).mean == pytest.approx(want, rel=1e-12)
