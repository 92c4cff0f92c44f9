"""Positional predictions read under a guessed class order (tester T4): a list column (or wide
columns not named after the classes) with class-name labels mapped by a ``classes`` order
that nothing in the data states. When the run is far below chance and another order of the
positions fits far better, evaluate warns naming that order (the rule of the binary
column's reversal warning, :func:`evalkit.validate.below_chance`, for K classes); inspect
suggests the order the first rows fit and says its order is a guess."""

from __future__ import annotations

import shlex

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.inspect import inspect_input
from evalkit.validate import ReversedBinary, below_chance, class_order_fit

MODEL_ORDER = ["zeta", "alpha", "mid"]  # the model's class-index order; sorted is alpha, mid, zeta


def _model(n: int = 1500, seed: int = 16, order=MODEL_ORDER) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(order), n)
    z = rng.normal(size=(n, len(order)))
    z[np.arange(n), y] += 3
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), np.array(order)[y]


def _list_file(tmp_path, p, labels):
    path = tmp_path / "enum.parquet"
    pd.DataFrame({"probs": list(p), "label": labels}).to_parquet(path)
    return str(path)


def _order_warnings(result) -> list[str]:
    return [str(w) for w in result.warnings if "wrong class order" in str(w)]


def test_a_list_column_read_under_the_sorted_guess_warns_naming_the_order_that_fits(tmp_path):
    p, labels = _model()
    path = _list_file(tmp_path, p, labels)
    with pytest.warns(evalkit.EvalkitWarning, match="wrong class order"):
        r = evalkit.evaluate(path, classes=["alpha", "mid", "zeta"], plots=False)
    (text,) = _order_warnings(r)
    assert "read in the order zeta, alpha, mid" in text and "classes=['zeta', 'alpha', 'mid']" in text
    assert r.overall["accuracy"] < 0.05
    good = evalkit.evaluate(path, classes=MODEL_ORDER, plots=False)  # the right order: silent
    assert good.overall["accuracy"] > 0.9 and _order_warnings(good) == []
    cli = CliRunner().invoke(main, ["evaluate", path, "--classes", "alpha,mid,zeta", "--no-plots"])
    assert cli.exit_code == 0 and "--classes zeta,alpha,mid" in cli.output


def test_wide_columns_not_named_after_the_classes_are_positional_too(tmp_path):
    p, labels = _model(order=["b", "c", "a"])
    df = pd.DataFrame({f"prob_{j}": p[:, j] for j in range(3)})
    df["label"] = labels
    r = evalkit.evaluate(df, classes=["a", "b", "c"], plots=False)
    assert any("read in the order b, c, a" in t for t in _order_warnings(r))
    named = pd.DataFrame({f"prob_{c}": p[:, j] for j, c in enumerate(["b", "c", "a"])})
    named["label"] = labels  # the columns name the classes: their order is stated
    assert _order_warnings(evalkit.evaluate(named, plots=False)) == []


def test_a_weak_model_or_a_declared_order_is_not_called_misordered(tmp_path):
    rng = np.random.default_rng(1)
    n = 1500
    labels = np.array(["alpha", "mid", "zeta"])[rng.integers(0, 3, n)]
    weak = rng.dirichlet(np.ones(3), n)  # near chance, no order fits better
    r = evalkit.evaluate(pd.DataFrame({"probs": list(weak), "label": labels}), classes=["alpha", "mid", "zeta"],
                         plots=False)
    assert _order_warnings(r) == []
    p, labels = _model()  # integer labels index the list: the data states the order
    codes = pd.Series(labels).map({c: i for i, c in enumerate(["alpha", "mid", "zeta"])}).to_numpy()
    assert _order_warnings(evalkit.evaluate(pd.DataFrame({"probs": list(p), "label": codes}), plots=False)) == []


def test_one_rule_for_the_binary_and_the_k_class_signal():
    assert below_chance(9, 30, 2) and not below_chance(10, 30, 2)  # the binary column's 1/3
    assert below_chance(6, 30, 3) and not below_chance(7, 30, 3)  # 2/3 of 1/K
    assert not below_chance(0, 19, 3)  # too few rows to say
    rb = ReversedBinary(n=30, loss=30.0, loss_swapped=3.0, correct=9)
    assert rb.reads_reversed()
    counts = np.array([[0, 40, 0], [0, 0, 40], [40, 0, 0]])  # true class t predicted at t+1
    fit = class_order_fit(counts, ["a", "b", "c"])
    assert fit is not None and fit.order == ("c", "a", "b") and fit.fitted_accuracy == 1.0
    assert class_order_fit(np.full((3, 3), 10), ["a", "b", "c"]) is None


def test_inspect_suggests_the_order_the_first_rows_fit_and_says_it_is_a_guess(tmp_path):
    p, labels = _model()
    path = _list_file(tmp_path, p, labels)
    info = inspect_input(path, cli=True)
    words = shlex.split(info["suggested_command"])
    assert words[words.index("--classes") + 1] == "zeta,alpha,mid"
    assert "guess" in (info["classes_note"] or "")
    out = CliRunner().invoke(main, ["inspect", path])
    assert out.exit_code == 0 and "order above is a guess" in out.output
    sorted_p, sorted_labels = _model(order=["alpha", "mid", "zeta"])
    info = inspect_input(_list_file(tmp_path, sorted_p, sorted_labels), cli=True)
    words = shlex.split(info["suggested_command"])
    assert words[words.index("--classes") + 1] == "alpha,mid,zeta"  # sorted fits: kept, still a guess
    assert "guess" in (info["classes_note"] or "")
