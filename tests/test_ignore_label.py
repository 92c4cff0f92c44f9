"""--ignore-label (issue 14.5): rows with PyTorch's ignore_index / Keras' ignore_class label are
left out of every statistic and counted apart from invalid rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import LabelError, UsageError


def _frame():
    p = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1], [0.4, 0.6]])
    y = np.array([0, 1, -100, 0, -100])
    return pd.DataFrame({"prob_a": p[:, 0], "prob_b": p[:, 1], "label": y,
                         "region": ["EU", "US", "EU", "US", "EU"]}), p, y


def test_ignored_rows_leave_every_statistic():
    df, p, y = _frame()
    with pytest.raises(LabelError):  # without the option, -100 is an invalid label
        evalkit.evaluate(df)
    r = evalkit.evaluate(df, ignore_label=-100, by="region")
    keep = y != -100
    want = -np.log(p[keep, y[keep]])
    assert r.overall["count"] == 3 and r.mean == pytest.approx(want.mean(), rel=1e-12)
    assert r.metadata["rows_ignored"] == 2 and r.metadata["rows_skipped"] == 0
    assert "ignored_label" not in r.metadata["skipped"]
    assert r.groups["region"]["count"].tolist() == [1, 2]
    assert int(r.confusion["count"].sum()) == 3 and len(r.rows) == 3
    assert "2 ignored (label -100)" in r.to_markdown()


def test_ignored_rows_are_not_invalid_rows():
    df, p, y = _frame()
    df.loc[0, "prob_a"] = np.nan
    r = evalkit.evaluate(df, ignore_label="-100", on_invalid="skip")
    assert r.metadata["rows_ignored"] == 2 and r.metadata["rows_skipped"] == 1 and r.overall["count"] == 2


def test_string_labels_and_config_and_cli(tmp_path):
    df = pd.DataFrame({"prob_cat": [0.8, 0.1, 0.5], "prob_dog": [0.2, 0.9, 0.5], "label": ["cat", "dog", "?"]})
    df.to_parquet(tmp_path / "p.parquet")
    assert evalkit.evaluate(df, ignore_label="?").overall["count"] == 2
    (tmp_path / "c.yaml").write_text(f"input: {tmp_path / 'p.parquet'}\nignore_label: '?'\n")
    res = CliRunner().invoke(main, ["evaluate", "--config", str(tmp_path / "c.yaml"), "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["metadata"]["rows_ignored"] == 1
    df2, _, _ = _frame()
    df2.to_parquet(tmp_path / "n.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "n.parquet"), "--ignore-label", "-100",
                                    "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["overall"]["count"] == 3


def test_ignore_label_needs_class_labels():
    df = pd.DataFrame({"prob_a": [0.5], "prob_b": [0.5], "target_a": [1.0], "target_b": [0.0]})
    with pytest.raises(UsageError, match="ignore_label"):
        evalkit.evaluate(df, ignore_label=-100, target_prefix="target_")
    with pytest.raises(UsageError, match="the labels are numbers"):
        evalkit.evaluate(_frame()[0], ignore_label="x")


def test_ignored_count_shown_wherever_counts_are():
    """The overall line (terminal, report.md, Jupyter) and repr(EvalResult) say how many rows
    were ignored and skipped, next to the rows used."""
    df, _, _ = _frame()
    df.loc[0, "prob_a"] = np.nan
    r = evalkit.evaluate(df, ignore_label=-100, on_invalid="skip")
    assert "over 2 rows (+ 2 ignored: label -100, 1 skipped)" in repr(r)
    assert "2 ignored" in r._repr_markdown_() and "2 ignored" in r._repr_html_()
    assert "over 2 rows (+ 2 ignored: label -100, 1 skipped)" in r.to_markdown()
    assert "ignored" not in repr(evalkit.evaluate(_frame()[0].iloc[[0, 1, 3]]))


def test_ignored_count_in_terminal_line(tmp_path):
    df, _, _ = _frame()
    df.to_parquet(tmp_path / "p.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--ignore-label", "-100",
                                    "--out", str(tmp_path / "r"), "--no-plots"])
    assert res.exit_code == 0, res.output
    [line] = [x for x in res.output.splitlines() if x.startswith("overall:")]
    assert "over 3 rows (+ 2 ignored: label -100)" in line


@pytest.mark.parametrize("sentinel", [-100, -1])
def test_label_errors_point_at_ignore_label(tmp_path, sentinel):
    """Refused labels that look like an ignore label (one negative whole number) name
    --ignore-label VALUE and --on-invalid skip at the CLI, keywords from Python; other bad
    labels do not."""
    df, _, y = _frame()
    df["label"] = np.where(y == -100, sentinel, y)
    with pytest.raises(LabelError, match=rf"ignore_label={sentinel} leaves those rows out") as info:
        evalkit.evaluate(df)
    assert "on_invalid='skip'" in str(info.value) and "--" not in str(info.value)
    df["label"] = df["label"].astype(float)  # float labels: the same advice
    with pytest.raises(LabelError, match=rf"ignore_label={sentinel}"):
        evalkit.evaluate(df)
    df.to_parquet(tmp_path / "p.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 3 and f"--ignore-label {sentinel} leaves" in res.output and "--on-invalid skip" in res.output
    df["label"] = [0, 1, 5, 0, 7]  # out of range, but no sentinel
    with pytest.raises(LabelError) as info:
        evalkit.evaluate(df)
    assert "ignore_label" not in str(info.value)
    df["label"] = [0, 1, -3, 0, -100]  # two negative values: not one sentinel
    with pytest.raises(LabelError) as info:
        evalkit.evaluate(df)
    assert "ignore_label" not in str(info.value)


def test_string_sentinel_and_null_labels_point_at_the_options():
    df = pd.DataFrame({"prob_cat": [0.8, 0.1, 0.5], "prob_dog": [0.2, 0.9, 0.5], "label": ["cat", "dog", "-100"]})
    with pytest.raises(LabelError, match=r"-100 looks like an ignore label.*ignore_label=-100"):
        evalkit.evaluate(df)
    assert evalkit.evaluate(df, ignore_label=-100).overall["count"] == 2
    df["label"] = ["cat", None, "dog"]
    with pytest.raises(LabelError, match=r"null label \(on_invalid='skip' leaves such rows out\)"):
        evalkit.evaluate(df)


def test_metadata_keeps_the_ignore_label_typed(tmp_path):
    df, _, _ = _frame()
    df.to_parquet(tmp_path / "p.parquet")
    for given in ("-100", -100, -100.0):
        assert evalkit.evaluate(df, ignore_label=given).metadata["ignore_label"] == -100
        assert type(evalkit.evaluate(df, ignore_label=given).metadata["ignore_label"]) is int
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--ignore-label", "-100",
                                    "--format", "json", "-q"])
    assert json.loads(res.output)["metadata"]["ignore_label"] == -100
    named = pd.DataFrame({"prob_cat": [0.8, 0.1, 0.5], "prob_dog": [0.2, 0.9, 0.5], "label": ["cat", "dog", "?"]})
    assert evalkit.evaluate(named, ignore_label="?").metadata["ignore_label"] == "?"


@pytest.mark.parametrize("batch_size", [None, 64])
def test_errors_name_input_rows_whatever_was_left_out_before(tmp_path, batch_size):
    """rt-eval8 F13: after --ignore-label left out rows 0..99, a bad label at input row 150
    was reported as "row 50" (its position among the kept rows)."""
    rng = np.random.default_rng(0)
    n = 400
    p = rng.dirichlet(np.ones(2), n)
    labels = np.array(["a", "b"])[rng.integers(0, 2, n)].astype(object)
    labels[:100] = "unknown"
    labels[150] = "bogus"
    labels[151] = "unknown"
    labels[301] = "bogus"
    pd.DataFrame({"prob_a": p[:, 0], "prob_b": p[:, 1], "label": labels}).to_parquet(tmp_path / "p.parquet")
    kw = {"batch_size": batch_size} if batch_size else {}
    with pytest.raises(LabelError, match=r"e\.g\. row 150: 'bogus'"):
        evalkit.evaluate(str(tmp_path / "p.parquet"), ignore_label="unknown", plots=False, **kw)
