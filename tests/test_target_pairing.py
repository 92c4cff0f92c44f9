"""One-hot / soft target columns are paired with the prediction classes by the class names
they carry (rt-api9 F21): ``target_cat`` is the target of class ``cat`` whatever the column
order (pd.get_dummies columns selected in another order, a separate labels input), as
``prob_cat`` is its probability; names that contradict the classes are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evalkit
from evalkit.errors import LayoutError

CLASSES = ["cat", "dog", "bird"]
N = 120


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, N)
    p = rng.dirichlet(np.ones(3), N) * 0.5
    p[np.arange(N), y] += 0.5
    probs = pd.DataFrame({f"prob_{c}": p[:, i] for i, c in enumerate(CLASSES)})
    onehot = pd.get_dummies(pd.Series([CLASSES[i] for i in y]), prefix="target", dtype=float)
    return probs, onehot, p, y, float(np.mean(-np.log(p[np.arange(N), y])))


@pytest.mark.parametrize("order", [["target_dog", "target_cat", "target_bird"],
                                   ["target_bird", "target_cat", "target_dog"]])
def test_targets_in_another_column_order_are_paired_by_name(order):
    probs, onehot, _, _, want = _data()
    df = pd.concat([probs, onehot[order]], axis=1)
    res = evalkit.evaluate(df, plots=False)
    assert res.mean == pytest.approx(want, rel=1e-12)
    assert res.layout.label_columns == ("target_cat", "target_dog", "target_bird")
    assert evalkit.evaluate(df, plots=False, targets=order).mean == pytest.approx(want, rel=1e-12)
    import polars as pl

    assert evalkit.evaluate(pl.from_pandas(df), plots=False).mean == pytest.approx(want, rel=1e-12)


def test_targets_from_a_labels_input_are_paired_by_name():
    probs, onehot, _, _, want = _data(1)
    preds = probs.assign(id=range(N))
    labels = onehot[["target_dog", "target_bird", "target_cat"]].assign(id=range(N)).iloc[::-1]
    assert evalkit.evaluate(preds, labels=labels, on="id", plots=False).mean == pytest.approx(want, rel=1e-12)


def test_target_names_that_name_other_classes_are_refused():
    probs, onehot, _, _, _ = _data()
    other = onehot.set_axis(["target_x", "target_y", "target_z"], axis=1)
    with pytest.raises(LayoutError, match="target columns target_x, target_y, target_z name classes x, y, z, "
                                          "but the prediction classes are cat, dog, bird"):
        evalkit.evaluate(pd.concat([probs, other], axis=1), plots=False)


def test_named_targets_against_a_list_column_need_the_class_order():
    probs, onehot, p, y, want = _data()
    df = pd.concat([pd.DataFrame({"probs": list(p)}), onehot[["target_dog", "target_cat", "target_bird"]]], axis=1)
    with pytest.raises(LayoutError, match=r"classes=\['bird', 'cat', 'dog'\]"):
        evalkit.evaluate(df, plots=False)
    assert evalkit.evaluate(df, plots=False, classes=CLASSES).mean == pytest.approx(want, rel=1e-12)
    # sorted target names next to a list column: taken in order, as before
    sorted_cols = ["target_bird", "target_cat", "target_dog"]
    col_of = {c: i for i, c in enumerate(sorted_cols)}
    q = p[:, [CLASSES.index(c[len("target_"):]) for c in sorted_cols]]
    want_sorted = float(np.mean(-np.log(q[np.arange(N), [col_of["target_" + CLASSES[i]] for i in y]])))
    df2 = pd.concat([pd.DataFrame({"probs": list(q)}), onehot[sorted_cols]], axis=1)
    assert evalkit.evaluate(df2, plots=False).mean == pytest.approx(want_sorted, rel=1e-12)
