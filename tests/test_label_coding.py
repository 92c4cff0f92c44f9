"""Labels that are a class coding other than 0..K-1 (rt-api9 F20): -1/+1 for a binary column
(SVM / libsvm), -1/0/1 (sentiment), 1..K (R / MATLAB / Julia). Every value is a class: inspect's
suggested command and evaluate's error name the classes by those values (``--classes``), never
``--ignore-label`` / ``--on-invalid skip``, which drop a whole class and score the rest against
the wrong column. A rare padding value beside 0..K-1 is still an ignore label."""

from __future__ import annotations

import shlex

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import LabelError
from evalkit.inspect import inspect_input

N = 400


def _probs(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """Class indices 0..k-1, probabilities right on them, and the mean loss."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, N)
    p = rng.dirichlet(np.ones(k), N) * 0.4
    p[np.arange(N), y] += 0.6
    return y, p, float(np.mean(-np.log(p[np.arange(N), y])))


def _binary_pm1(tmp_path):
    """pandas: prob = P(+1), label in {-1, +1}."""
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.95, N)
    pos = rng.uniform(size=N) < p
    path = tmp_path / "pm1.parquet"
    pd.DataFrame({"prob": p, "label": np.where(pos, 1, -1)}).to_parquet(path, index=False)
    return path, float(np.mean(-np.log(np.where(pos, p, 1 - p))))


def _list_coded(tmp_path, offset: int, writer: str):
    y, p, want = _probs(3)
    path = tmp_path / f"coded{offset}_{writer}.parquet"
    if writer == "pyarrow":
        pq.write_table(pa.table({"probs": pa.array(list(p), pa.list_(pa.float64())),
                                 "label": pa.array(y + offset, pa.int64())}), path)
    else:
        import polars as pl

        pl.DataFrame({"probs": p.tolist(), "label": (y + offset).tolist()}).write_parquet(path)
    return path, want


def _try_args(info) -> list[str]:
    words = shlex.split(info["suggested_command"])
    assert words[:2] == ["evalkit", "evaluate"] and words[-2:] == ["--out", "report/"]
    return words[2:-2]


def _run_try(tmp_path, info) -> float:
    r = CliRunner().invoke(main, ["evaluate", *_try_args(info), "--no-plots", "--format", "json",
                                  "--out", str(tmp_path / "try")])
    assert r.exit_code == 0, r.output
    import json

    return json.loads((tmp_path / "try" / "summary.json").read_text())["overall"]["mean"]


def test_binary_minus_one_plus_one_is_named_not_ignored(tmp_path):
    path, want = _binary_pm1(tmp_path)
    info = inspect_input(str(path), cli=True)
    args = _try_args(info)
    assert "--ignore-label" not in args and "--on-invalid" not in args, info["suggested_command"]
    assert args[-2:] == ["--classes", "-1,1"], info["suggested_command"]
    assert _run_try(tmp_path, info) == pytest.approx(want, rel=1e-12)
    with pytest.raises(LabelError, match=r"-1, 1 are a class coding.*classes=\['-1', '1'\]") as exc:
        evalkit.evaluate(path, plots=False)
    assert "ignore_label" not in str(exc.value)


@pytest.mark.parametrize("writer", ["pyarrow", "polars"])
@pytest.mark.parametrize("offset", [-1, 1])
def test_shifted_list_labels_are_named_not_skipped(tmp_path, writer, offset):
    """-1/0/1 and 1/2/3 against a 3-element list: --classes with those values, as numpy."""
    path, want = _list_coded(tmp_path, offset, writer)
    info = inspect_input(str(path), cli=True)
    args = _try_args(info)
    values = ",".join(str(i + offset) for i in range(3))
    assert "--ignore-label" not in args and "--on-invalid" not in args, info["suggested_command"]
    assert args[-2:] == ["--classes", values], info["suggested_command"]
    assert _run_try(tmp_path, info) == pytest.approx(want, rel=1e-12)
    r = CliRunner().invoke(main, ["evaluate", str(path), "--no-plots", "--out", str(tmp_path / "o")])
    assert r.exit_code == 3 and f"with --classes {values}" in r.output and "--ignore-label" not in r.output


def test_numbered_wide_columns_are_not_given_a_command_that_drops_a_class(tmp_path):
    """prob_0..prob_2 with labels 1..3: the columns number the classes from 0, so --classes 1,2,3
    contradicts their names: say recode, and suggest no skipping."""
    y, p, _ = _probs(3)
    frame = pd.DataFrame({f"prob_{i}": p[:, i] for i in range(3)}).assign(label=y + 1)
    path = tmp_path / "wide.parquet"
    frame.to_parquet(path, index=False)
    info = inspect_input(str(path), cli=True)
    assert "--on-invalid" not in info["suggested_command"] and "--ignore-label" not in info["suggested_command"]
    assert any("class coding: recode" in w for w in info["warnings"]), info["warnings"]
    with pytest.raises(LabelError, match="recode the labels to 0..2"):
        evalkit.evaluate(frame, plots=False)


@pytest.mark.parametrize("pad", [-100, -1])
def test_a_padding_value_beside_every_class_is_still_an_ignore_label(tmp_path, pad):
    y, p, _ = _probs(3)
    label = np.where(np.arange(N) % 17 == 0, pad, y)
    path = tmp_path / "pad.parquet"
    pq.write_table(pa.table({"probs": pa.array(list(p), pa.list_(pa.float64())), "label": label}), path)
    info = inspect_input(str(path), cli=True)
    assert f"--ignore-label {pad}" in info["suggested_command"] and "--classes" not in info["suggested_command"]
    keep = label != pad
    want = float(np.mean(-np.log(p[keep, y[keep]])))
    assert _run_try(tmp_path, info) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("k", [3, 5])
def test_minus_one_and_one_against_more_classes_are_a_coding_not_an_ignore_label(tmp_path, k):
    """rt-final9 F8: labels -1 and +1 only (no neutral row in the first rows) against a list of
    K > 2 probabilities are the coding -1, 0, 1, ... with 0 not seen yet, not 0-based indices
    beside a padding -1: --ignore-label -1 dropped half the rows and read +1 as the middle class."""
    rng = np.random.default_rng(3)
    coded = rng.choice([-1, 1], N)  # class indices 0 and 2 of -1..k-2
    p = rng.dirichlet(np.ones(k), N)
    path = tmp_path / "pm1k.parquet"
    pq.write_table(pa.table({"probs": pa.array(list(p), pa.list_(pa.float64())), "label": coded}), path)
    info = inspect_input(str(path), cli=True)
    args = _try_args(info)
    values = ",".join(str(i) for i in range(-1, k - 1))
    assert "--ignore-label" not in args and "--on-invalid" not in args, info["suggested_command"]
    assert args[-2:] == ["--classes", values], info["suggested_command"]
    want = float(np.mean(-np.log(p[np.arange(N), coded + 1])))
    assert _run_try(tmp_path, info) == pytest.approx(want, rel=1e-12)
    with pytest.raises(LabelError, match="with classes=.*'-1', '0', '1'") as exc:
        evalkit.evaluate(path, plots=False)
    assert "ignore_label" not in str(exc.value)


def test_a_padding_minus_one_beside_indices_from_zero_stays_an_ignore_label(tmp_path):
    """-1 beside 0 and 1 against 4 classes (classes 2, 3 unseen) reads as padding, as before:
    the coding reading needs 0 absent or the whole -1..K-2 present."""
    y, p, _ = _probs(4)
    y = y % 2
    label = np.where(np.arange(N) % 7 == 0, -1, y)
    path = tmp_path / "pad01.parquet"
    pq.write_table(pa.table({"probs": pa.array(list(p), pa.list_(pa.float64())), "label": label}), path)
    info = inspect_input(str(path), cli=True)
    assert "--ignore-label -1" in info["suggested_command"] and "--classes" not in info["suggested_command"]


def test_one_indexed_labels_missing_a_middle_class_are_a_coding(tmp_path):
    """1..K labels whose sample lacks a middle value (1 and 3 of 1, 2, 3) are still 1..K."""
    y, p, _ = _probs(3)
    y = np.where(y == 1, 0, y)
    path = tmp_path / "one3.parquet"
    pq.write_table(pa.table({"probs": pa.array(list(p), pa.list_(pa.float64())), "label": y + 1}), path)
    info = inspect_input(str(path), cli=True)
    assert _try_args(info)[-2:] == ["--classes", "1,2,3"], info["suggested_command"]
    assert _run_try(tmp_path, info) == pytest.approx(float(np.mean(-np.log(p[np.arange(N), y]))), rel=1e-12)
