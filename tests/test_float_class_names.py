"""Prediction columns named after whole-number classes written as floats (rt-final9 F12:
scikit-learn fitted on a float target has ``classes_ = [0., 1., ...]``, so
``f"prob_{c}"`` gives ``prob_0.0``, ``prob_1.0``), and ``-p`` lists whose columns carry
different known prefixes (F13: ``prob_eel, prob_cat, score_dog``): a column whose suffix
names a class is that class, as ``prob_1`` is; never read by column position."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evalkit


def _probs(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = rng.dirichlet(np.ones(k), n) * 0.4
    p[np.arange(n), y] += 0.6
    return p, y


def _by_hand(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1 - 1e-7))))


def _mean(tmp_path, frame: pd.DataFrame, **kw) -> float:
    """evaluate's overall mean loss of ``frame`` written by pandas."""
    path = tmp_path / "f.parquet"
    frame.to_parquet(path, index=False)
    return evalkit.evaluate(str(path), plots=False, **kw).mean


@pytest.mark.parametrize("label_type", ["int", "float"])
def test_reversed_binary_float_named_columns_go_to_their_class(tmp_path, label_type) -> None:
    p, y = _probs(400, 2, 0)
    frame = pd.DataFrame({"prob_1.0": p[:, 1], "prob_0.0": p[:, 0]})  # the reverse of class order
    frame["label"] = y.astype(float) if label_type == "float" else y
    assert _mean(tmp_path, frame) == pytest.approx(_by_hand(p, y), rel=1e-9)


def test_twelve_float_named_classes_in_text_order(tmp_path) -> None:
    p, y = _probs(600, 12, 1)
    names = sorted((f"{float(i)}" for i in range(12)), key=str)  # 0.0, 1.0, 10.0, 11.0, 2.0 ...
    frame = pd.DataFrame({f"prob_{n}": p[:, int(float(n))] for n in names})
    frame["label"] = y.astype(float)
    assert _mean(tmp_path, frame) == pytest.approx(_by_hand(p, y), rel=1e-9)


def test_explicit_columns_with_different_known_prefixes_pair_by_name(tmp_path) -> None:
    p, y = _probs(300, 3, 2)
    classes = ["cat", "dog", "eel"]
    frame = pd.DataFrame({"prob_eel": p[:, 2], "prob_cat": p[:, 0], "score_dog": p[:, 1]})
    frame["label"] = [classes[i] for i in y]
    want = _by_hand(p, y)
    cols = ["prob_eel", "prob_cat", "score_dog"]
    assert _mean(tmp_path, frame, predictions=cols) == pytest.approx(want, rel=1e-9)
    assert _mean(tmp_path, frame, predictions=cols, classes=classes) == pytest.approx(want, rel=1e-9)
