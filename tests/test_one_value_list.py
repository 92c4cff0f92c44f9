"""A one-value list column (rt-api9 F29): a Keras ``Dense(1, sigmoid)`` output saved as (n, 1)
is a binary model's P(class 1) (or, for a logits list, its logit), not a model of one class
whose every label 1 is refused. Read as the binary layout, with the same numbers as the plain
float column; inspect's suggested command runs."""

from __future__ import annotations

import json
import shlex

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import EvalkitError
from evalkit.inspect import inspect_input

N = 300


def _data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.02, 0.98, N)
    return p, (rng.uniform(size=N) < p).astype(np.int64)


def _want(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(-np.log(np.where(y == 1, p, 1 - p))))


@pytest.mark.parametrize("list_type", [pa.list_(pa.float64()), pa.list_(pa.float32(), 1), pa.large_list(pa.float64())])
def test_a_one_value_probability_list_is_p_of_class_one(tmp_path, list_type):
    p, y = _data()
    path = tmp_path / "sigmoid1.parquet"
    probs = pa.array([[v] for v in p], pa.list_(pa.float64())).cast(list_type)
    pq.write_table(pa.table({"probs": probs, "label": y}), path)
    r = evalkit.evaluate(str(path), plots=False)
    # float32 values when the list holds float32 (as the plain float32 column reads)
    ref = p.astype(np.float32).astype(np.float64) if list_type.value_type == pa.float32() else p
    assert r.overall["mean"] == pytest.approx(_want(ref, y), rel=1e-12)
    plain = evalkit.evaluate(pa.table({"prob": pa.array(ref), "label": y}), plots=False)
    assert r.overall["mean"] == pytest.approx(plain.overall["mean"], rel=1e-15)
    info = inspect_input(str(path), cli=True)
    assert "--on-invalid" not in info["suggested_command"]
    words = shlex.split(info["suggested_command"])
    out = tmp_path / "try"
    res = CliRunner().invoke(main, ["evaluate", *words[2:-2], "--no-plots", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["overall"]["mean"] == pytest.approx(_want(ref, y), rel=1e-12)


def test_a_one_value_logit_list_is_the_logit_of_class_one(tmp_path):
    p, y = _data(1)
    z = np.log(p / (1 - p))
    r = evalkit.evaluate(pa.table({"logits": pa.array([[v] for v in z]), "label": y}), plots=False)
    assert r.overall["mean"] == pytest.approx(_want(p, y), rel=1e-9)


def test_a_one_value_list_row_of_another_length_is_refused_by_name(tmp_path):
    p, y = _data(2)
    rows = [[v] for v in p]
    rows[5] = [0.3, 0.7]
    with pytest.raises(EvalkitError, match="list length"):
        evalkit.evaluate(pa.table({"probs": pa.array(rows), "label": y}), plots=False)
    r = evalkit.evaluate(pa.table({"probs": pa.array(rows), "label": y}), plots=False, on_invalid="skip")
    keep = np.arange(N) != 5
    assert r.overall["count"] == N - 1
    assert r.overall["mean"] == pytest.approx(_want(p[keep], y[keep]), rel=1e-12)
