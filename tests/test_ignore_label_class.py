"""An ignore label equal to one of the classes is a usage error naming the class (tester T16):
``ignore_label=0`` with a ``prob_0`` column silently left every class-0 row out of every
statistic. Decision: an error, not a warning, since a padding value (PyTorch's -100, Keras'
ignore_class) is never a class, and leaving a class out on purpose is filtering the input
(README, "ignore label")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import UsageError

N = 50


def _probs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.dirichlet([1, 1, 1], N), rng.integers(0, 3, N)


def _frames() -> dict[str, tuple[pd.DataFrame, object, str]]:
    p, y = _probs()
    wide = pd.DataFrame({"prob_0": p[:, 0], "prob_1": p[:, 1], "prob_2": p[:, 2], "label": y})
    named = pd.DataFrame({"prob_cat": p[:, 0], "prob_dog": p[:, 1], "prob_pad": p[:, 2],
                          "label": np.array(["cat", "dog", "pad"])[y]})
    lists = pd.DataFrame({"probs": list(p), "label": y})
    by_value = pd.DataFrame({"prob_3": p[:, 0], "prob_5": p[:, 1], "prob_7": p[:, 2],
                             "label": np.array([3, 5, 7])[y]})
    binary = pd.DataFrame({"prob": p[:, 0], "label": y % 2})
    return {
        "wide index": (wide, 0, r"class '0' of the predictions \(class 0, column prob_0\)"),
        "wide float": (wide, 2.0, r"class '2' of the predictions \(class 2, column prob_2\)"),
        "class name": (named, "pad", r"class 'pad' of the predictions \(class 2, column prob_pad\)"),
        "list": (lists, 1, r"class '1' of the predictions \(class 1, position 1 of the prediction lists\)"),
        "integer class names": (by_value, 5, r"class '5' of the predictions \(class 1, column prob_5\)"),
        "binary": (binary, 1, r"class '1' of the predictions"),
    }


@pytest.mark.parametrize("case", sorted(_frames()))
def test_an_ignore_label_that_is_a_class_is_refused_naming_it(case):
    df, value, message = _frames()[case]
    with pytest.raises(UsageError, match=message):
        evalkit.evaluate(df, ignore_label=value, plots=False)


def test_the_command_line_exits_2(tmp_path):
    df, _, _ = _frames()["wide index"]
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    res = CliRunner().invoke(main, ["evaluate", str(path), "--ignore-label", "0", "--no-plots",
                                    "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert "--ignore-label 0: the ignore label is class '0' of the predictions" in res.output


def test_a_padding_value_outside_the_classes_is_still_ignored_and_counted():
    p, y = _probs()
    label = np.where(y == 0, -100, y)
    df = pd.DataFrame({"prob_0": p[:, 0], "prob_1": p[:, 1], "prob_2": p[:, 2], "label": label})
    r = evalkit.evaluate(df, ignore_label=-100, plots=False)
    assert r.overall["count"] == int((y != 0).sum())
    assert r.metadata["rows_ignored"] == int((y == 0).sum())
