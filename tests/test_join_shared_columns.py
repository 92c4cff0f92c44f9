"""A separate labels input that holds a column the predictions hold too (rt-api9 F9): when the
run reads it (a group, slice or weight column) the two may disagree, so the run stops naming
it, never groups by one side's values silently; a ``split`` column only the labels hold is the
automatic split grouping, as one the predictions hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import evalkit
from evalkit.errors import UsageError

N = 40


def _inputs() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 0.9, N)
    preds = pd.DataFrame({"id": np.arange(N), "prob_a": p, "prob_b": 1 - p})
    labels = pd.DataFrame({"id": np.arange(N), "label": rng.choice(["a", "b"], N),
                           "region": np.where(np.arange(N) % 4 == 0, "US", "EU")})
    return preds, labels


@pytest.mark.parametrize("how", [{"by": "region"}, {"slices": ["region"]}])
def test_a_group_column_on_both_sides_is_refused_naming_it(how):
    preds, labels = _inputs()
    preds["region"] = np.where(np.arange(N) % 2 == 0, "P1", "P2")
    with pytest.raises(UsageError, match="'region' is in both the predictions .* and the labels input"):
        evalkit.evaluate(preds, labels=labels, on="id", plots=False, **how)


def test_a_group_column_on_one_side_is_read_from_it():
    preds, labels = _inputs()
    r = evalkit.evaluate(preds, labels=labels, on="id", by="region", plots=False)
    assert dict(zip(r.groups["region"]["region"], r.groups["region"]["count"], strict=True)) == {"EU": 30, "US": 10}
    # an unread column on both sides is no conflict
    preds["region"] = "P1"
    assert evalkit.evaluate(preds, labels=labels, on="id", plots=False).overall["count"] == N


def test_a_split_column_only_the_labels_hold_is_grouped_by():
    preds, labels = _inputs()
    labels["split"] = np.where(np.arange(N) < 30, "train", "test")
    r = evalkit.evaluate(preds, labels=labels, on="id", plots=False)
    assert "split" in r.groups
    assert dict(zip(r.groups["split"]["split"], r.groups["split"]["count"], strict=True)) == {"test": 10, "train": 30}
    whole = preds.assign(split=labels["split"], label=labels["label"])
    assert r.groups["split"]["mean"].tolist() == evalkit.evaluate(whole, plots=False).groups["split"]["mean"].tolist()


def test_a_split_column_on_both_sides_is_read_from_the_predictions_and_said():
    preds, labels = _inputs()
    labels["split"] = "test"
    preds["split"] = np.where(np.arange(N) < 30, "train", "test")
    with pytest.warns(evalkit.EvalkitWarning, match="'split' is in both .* reads the predictions' values"):
        r = evalkit.evaluate(preds, labels=labels, on="id", plots=False)
    assert dict(zip(r.groups["split"]["split"], r.groups["split"]["count"], strict=True)) == {"test": 10, "train": 30}
    assert any("'split' is in both" in str(w) for w in r.warnings)
