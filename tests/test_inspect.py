"""``evalkit inspect``'s "try:" line runs as pasted (issue 14.4) over layouts that need more
than the detected columns: several shared key columns, ignore labels (-100, -1, "-1"), labels
evaluate refuses, null labels; files written by pandas, polars and DuckDB."""

from __future__ import annotations

import json
import shlex

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest
from click.testing import CliRunner

from evalkit.cli import main

RNG = np.random.default_rng(14)
N = 60


def _probs(k: int, n: int = N) -> np.ndarray:
    p = RNG.random((n, k)) + 0.05
    return p / p.sum(axis=1, keepdims=True)


def _loss(p: np.ndarray, y: np.ndarray) -> float:
    """Reference: mean clipped cross-entropy in nats over the rows kept."""
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1 - 1e-7)).mean())


def _write(df: pd.DataFrame, path, writer: str) -> None:
    if writer == "pandas":
        df.to_parquet(path)
    elif writer == "polars":
        pl.from_pandas(df).write_parquet(path)
    else:
        duckdb.sql("select * from df").write_parquet(str(path))


def _cases(root, writer: str):
    """name -> (inspect arguments, reference mean loss)."""
    cases = {}
    # Two shared key columns, neither a conventional key name: evaluate cannot infer them.
    p = _probs(2)
    y = RNG.integers(0, 2, N)
    user, item = np.repeat(np.arange(N // 6), 6), np.tile(np.arange(6), N // 6)
    _write(pd.DataFrame({"user_id": user, "item_id": item, "prob": p[:, 1]}), root / "two_keys.parquet", writer)
    order = RNG.permutation(N)
    _write(pd.DataFrame({"user_id": user[order], "item_id": item[order], "label": y[order]}),
           root / "two_keys_labels.parquet", writer)
    cases["two_keys"] = ([str(root / "two_keys.parquet"), "--labels", str(root / "two_keys_labels.parquet")],
                         _loss(p, y))
    # id repeats across days: the key is (id, day), though id alone is a conventional name.
    day = np.repeat([1, 2], N // 2)
    ids = np.tile(np.arange(N // 2), 2)
    _write(pd.DataFrame({"id": ids, "day": day, "prob": p[:, 1]}), root / "id_day.parquet", writer)
    _write(pd.DataFrame({"id": ids[order], "day": day[order], "label": y[order]}), root / "id_day_labels.parquet",
           writer)
    cases["id_day"] = ([str(root / "id_day.parquet"), "--labels", str(root / "id_day_labels.parquet")], _loss(p, y))
    # Ignore labels as PyTorch / Keras write them.
    p3 = _probs(3)
    y3 = RNG.integers(0, 3, N)
    for name, sentinel in (("ignore_100", -100), ("ignore_1", -1)):
        yy = y3.copy()
        yy[::7] = sentinel
        keep = yy != sentinel
        _write(pd.DataFrame({"probs": list(p3), "label": yy}), root / f"{name}.parquet", writer)
        cases[name] = ([str(root / f"{name}.parquet")], _loss(p3[keep], yy[keep]))
    yf = y3.astype(float)
    yf[::5] = -1.0
    _write(pd.DataFrame({"probs": list(p3), "label": yf}), root / "ignore_float.parquet", writer)
    cases["ignore_float"] = ([str(root / "ignore_float.parquet")], _loss(p3[yf >= 0], yf[yf >= 0].astype(int)))
    # An ignore label and a value out of range: the ignored rows are ignored, the rest skipped.
    yy = y3.copy()
    yy[::7] = -100
    yy[3] = 9
    keep = (yy >= 0) & (yy < 3)
    _write(pd.DataFrame({"probs": list(p3), "label": yy}), root / "ignore_and_bad.parquet", writer)
    cases["ignore_and_bad"] = ([str(root / "ignore_and_bad.parquet")], _loss(p3[keep], yy[keep]))
    # String labels with a text sentinel, class-named columns with spaces and unicode.
    names = np.array(["chat noir", "chien é"])
    lab = names[y].astype(object)
    lab[::6] = "-1"
    keep = lab != "-1"
    _write(pd.DataFrame({"prob_chat noir": p[:, 0], "prob_chien é": p[:, 1], "label": lab}),
           root / "text_sentinel.parquet", writer)
    cases["text_sentinel"] = ([str(root / "text_sentinel.parquet")], _loss(p[keep], y[keep]))
    # Null labels: evaluate refuses them; the suggested command skips them.
    yn = pd.array(y, dtype="Int64")
    yn[::9] = pd.NA
    keep = ~np.asarray(pd.isna(yn))
    _write(pd.DataFrame({"p1": p[:, 1], "y": yn}), root / "null_labels.parquet", writer)
    cases["null_labels"] = ([str(root / "null_labels.parquet")], _loss(p[keep], y[keep]))
    # One binary column with string labels: the sorted class order is right for one naming and
    # reversed for the other; the try line names the order the first rows read right with.
    pb = np.clip(np.where(y == 1, 0.8, 0.2) + RNG.normal(0, 0.1, N), 0.01, 0.99)  # a good model of P(class 1)
    for name, pair in (("binary_sorted", ["no", "yes"]), ("binary_reversed", ["yes", "no"])):
        _write(pd.DataFrame({"p1": pb, "label": np.array(pair)[y]}), root / f"{name}.parquet", writer)
        cases[name] = ([str(root / f"{name}.parquet")], _loss(np.column_stack([1 - pb, pb]), y))
    # No label name: the one integer column whose values all name a class is the label
    # (the string 'site' and the integer 'age' are not).
    _write(pd.DataFrame({"pred": pb, "is_yes": y, "age": np.arange(N) % 70 + 20, "site": np.array(["a", "b"])[y]}),
           root / "odd_label.parquet", writer)
    cases["odd_label"] = ([str(root / "odd_label.parquet")], _loss(np.column_stack([1 - pb, pb]), y))
    return cases


@pytest.mark.parametrize("writer", ["pandas", "polars", "duckdb"])
def test_every_try_line_runs_as_pasted(tmp_path, monkeypatch, writer):
    """Each layout: inspect exits 0 and detects the layout; its try line, run as a shell would
    split it, exits 0 and computes the reference loss; the same command without inspect's
    additions (plain evaluate) fails, so each addition is needed."""
    root = tmp_path / "in"
    root.mkdir()
    for name, (args, want) in _cases(root, writer).items():
        run_dir = tmp_path / name
        run_dir.mkdir()
        monkeypatch.chdir(run_dir)
        res = CliRunner().invoke(main, ["inspect", *args])
        assert res.exit_code == 0 and "(not detected)" not in res.output, (name, res.output)
        [line] = [x for x in res.output.splitlines() if x.startswith("try: ")]
        words = shlex.split(line[len("try: "):])
        run = CliRunner().invoke(main, [*words[1:], "--format", "none", "--no-plots"])
        assert run.exit_code == 0, (name, line, run.output)
        got = json.loads((run_dir / "report" / "summary.json").read_text())["overall"]["mean"]
        assert got == pytest.approx(want, rel=1e-9), (name, line)
        plain = CliRunner().invoke(main, ["evaluate", *args, "--out", "plain", "--format", "none", "--no-plots"])
        assert plain.exit_code in (2, 3), (name, plain.output)


def test_try_line_flags_for_each_kind(tmp_path, monkeypatch):
    """What each kind adds: --on for every key column, --ignore-label for the sentinel, and
    --on-invalid skip only when refused values other than the sentinel remain."""
    root = tmp_path / "in"
    root.mkdir()
    cases = _cases(root, "pandas")
    lines = {}
    for name, (args, _) in cases.items():
        res = CliRunner().invoke(main, ["inspect", *args])
        [line] = [x for x in res.output.splitlines() if x.startswith("try: ")]
        lines[name] = shlex.split(line[len("try: "):])
    assert " ".join(lines["two_keys"]).count("--on ") == 2 and "user_id" in lines["two_keys"]
    assert lines["id_day"][lines["id_day"].index("--on") + 1] == "id" and "day" in lines["id_day"]
    for name, sentinel in (("ignore_100", "-100"), ("ignore_1", "-1"), ("ignore_float", "-1"),
                           ("text_sentinel", "-1")):
        w = lines[name]
        assert w[w.index("--ignore-label") + 1] == sentinel and "--on-invalid" not in w, (name, w)
    w = lines["ignore_and_bad"]
    assert w[w.index("--ignore-label") + 1] == "-100" and w[w.index("--on-invalid") + 1] == "skip"
    assert lines["binary_sorted"][lines["binary_sorted"].index("--classes") + 1] == "no,yes"
    assert lines["binary_reversed"][lines["binary_reversed"].index("--classes") + 1] == "yes,no"
    assert lines["odd_label"][lines["odd_label"].index("--label") + 1] == "is_yes"
    assert "--by" in lines["odd_label"] and "is_yes" not in lines["odd_label"][lines["odd_label"].index("--by"):]
    w = lines["null_labels"]
    assert "--ignore-label" not in w and w[w.index("--on-invalid") + 1] == "skip"


def test_ambiguous_label_is_named_not_guessed(tmp_path):
    """Two columns that could each be the label: inspect guesses neither and names both."""
    pd.DataFrame({"pred": [0.2, 0.9, 0.4], "is_yes": [0, 1, 0], "smoker": [1, 1, 0]}).to_parquet(tmp_path / "a.parquet")
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "a.parquet")])
    assert res.exit_code == 0 and "(not detected)" in res.output
    assert "could all be labels: 'is_yes', 'smoker'" in res.output


def test_no_try_line_without_a_layout(tmp_path):
    """Prediction columns not found (an unusual prefix): inspect prints no command that cannot
    run, and says what to do instead."""
    pd.DataFrame({"score a": [0.2, 0.9], "score b": [0.8, 0.1], "gold label": ["a", "b"]}).to_parquet(
        tmp_path / "s.parquet")
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "s.parquet")])
    assert res.exit_code == 0 and "(not detected)" in res.output and "try:" not in res.output
    assert "next: name the columns" in res.output
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "s.parquet"), "--prefix", "score ", "--label", "gold label"])
    [line] = [x for x in res.output.splitlines() if x.startswith("try: ")]
    run = CliRunner().invoke(main, [*shlex.split(line[len("try: "):])[1:], "--out", str(tmp_path / "r"),
                                    "--format", "none", "--no-plots"])
    assert run.exit_code == 0, (line, run.output)


def test_class_names_with_commas_run_as_pasted(tmp_path, monkeypatch):
    """A class name holding a comma or quote: the try line quotes it CSV-style inside
    --classes, and evaluate reads it back as one name."""
    monkeypatch.chdir(tmp_path)
    names = np.array(['big cat, wild', 'dog "rex"'])
    y = np.array([0, 1, 1, 0])
    pd.DataFrame({"probs": [[0.7, 0.3], [0.2, 0.8], [0.4, 0.6], [0.9, 0.1]], "label": names[y]}).to_parquet("c.parquet")
    res = CliRunner().invoke(main, ["inspect", "c.parquet"])
    [line] = [x for x in res.output.splitlines() if x.startswith("try: ")]
    run = CliRunner().invoke(main, [*shlex.split(line[len("try: "):])[1:], "--format", "none", "--no-plots"])
    assert run.exit_code == 0, (line, run.output)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["metadata"]["classes"] == list(names)
    assert summary["overall"]["mean"] == pytest.approx(-np.log([0.7, 0.8, 0.6, 0.9]).mean(), rel=1e-12)
