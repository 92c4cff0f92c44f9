"""Weights that sum to 0 and boolean weights (tester T5, T6).

All-zero weights over every row scored are an input error naming the column (exit 3), as
negative weights are, not a blank weighted mean with exit 0. A group whose weights sum to 0
has rows but no weighted mean: null in the Parquet and JSON tables, blank in report.md, one
run warning saying how many groups, and a ``max_mean_loss`` gate on it is "not checked"
(never passed on NaN nor on its unweighted mean; ``fail_unchecked`` makes it a failure);
``history`` reads such a report. A boolean weight is a mask, read as 0 / 1, whatever wrote it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import InputError

N = 600


def _frame(w, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(N, 3))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    df = pd.DataFrame({f"prob_{k}": p[:, k] for k in range(3)})
    df["label"] = rng.integers(0, 3, N)
    df["g"] = np.where(np.arange(N) % 2 == 0, "a", "b")
    df["w"] = w
    return df


def test_all_zero_weights_are_an_input_error_naming_the_column(tmp_path: Path):
    path = tmp_path / "w0.parquet"
    _frame(np.zeros(N)).to_parquet(path)
    with pytest.raises(InputError, match=r"w0.parquet: column w: weights sum to 0: every one of the 600 rows"):
        evalkit.evaluate(str(path), weight="w", by=["g"], plots=False)
    result = CliRunner().invoke(main, ["evaluate", str(path), "--weight", "w", "--no-plots",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert "column w: weights sum to 0" in result.output
    assert not (tmp_path / "out").exists()


def _zero_group_report(tmp_path: Path, gates: dict | None = None, name: str = "out"):
    df = _frame(np.where(np.arange(N) % 2 == 0, 0.0, 1.0))  # group a: every weight 0
    path = tmp_path / "wz.parquet"
    df.to_parquet(path)
    with pytest.warns(evalkit.EvalkitWarning, match=r"column w: 1 group\(s\) have rows but weights summing to 0"):
        r = evalkit.evaluate(str(path), weight="w", by=["g"], plots=False, out=str(tmp_path / name), gates=gates)
    return df, r


def test_a_group_with_zero_weight_sum_is_empty_and_warned_once(tmp_path: Path):
    df, r = _zero_group_report(tmp_path)
    texts = [str(w) for w in r.warnings if "summing to 0" in str(w)]
    assert len(texts) == 1 and "by g: 1 of 2 (a)" in texts[0]
    assert "by class" not in texts[0]  # every class has weighted rows
    g = r.groups["g"].set_index("g")
    assert g.loc["a", "weight_sum"] == 0 and np.isnan(g.loc["a", "weighted_mean"])
    assert r.overall["weighted_mean"] == pytest.approx(g.loc["b", "weighted_mean"], rel=1e-12)
    out = tmp_path / "out"
    by_g = pq.read_table(out / "by_g.parquet").to_pylist()
    assert [row["weighted_mean"] for row in by_g if row["g"] == "a"] == [None]
    summary = json.loads((out / "summary.json").read_text())
    assert any("summing to 0" in w for w in summary["metadata"]["warnings"])
    report = (out / "report.md").read_text()
    assert "summing to 0" in report.split("## Overall")[0]  # in the warnings at the top


@pytest.mark.parametrize("strict", [False, True])
def test_a_mean_loss_gate_on_a_zero_weight_group_is_not_checked(tmp_path: Path, strict: bool):
    # The limit lies below group a's unweighted mean: gating it on that (the row's fallback
    # mean) would fail it, on NaN it passed silently; it is neither.
    df, r = _zero_group_report(tmp_path, gates={"fail_unchecked": strict, "groups": {"g": {"max_mean_loss": 0.5}}})
    b = [f for f in r.gate_failures + r.gate_not_checked if f.group == "b"]
    a = [f for f in r.gate_failures + r.gate_not_checked if f.group == "a"]
    assert len(a) == 1 and "weights sum to 0: no weighted mean" in str(a[0])
    assert a[0].failed is strict and np.isnan(a[0].observed)
    assert len(b) == 1 and b[0].failed  # the weighted group is gated as before


def test_history_reads_a_report_with_a_zero_weight_group(tmp_path: Path):
    _zero_group_report(tmp_path, name="r1")
    _zero_group_report(tmp_path, name="r2")
    h = CliRunner().invoke(main, ["history", str(tmp_path / "r1"), str(tmp_path / "r2"), "--no-plots",
                                  "--out", str(tmp_path / "h")])
    assert h.exit_code == 0, h.output
    assert "edited or damaged" not in h.output


def test_history_reads_a_weighted_group_without_an_interval(tmp_path: Path):
    # n_eff < 2 (one row carries nearly all the weight): no sem, as evaluate writes it
    w = np.ones(N)
    w[1] = 1e12  # group b
    path = tmp_path / "heavy.parquet"
    _frame(w).to_parquet(path)
    for name in ("r1", "r2"):
        evalkit.evaluate(str(path), weight="w", by=["g"], plots=False, out=str(tmp_path / name))
    h = CliRunner().invoke(main, ["history", str(tmp_path / "r1"), str(tmp_path / "r2"), "--no-plots",
                                  "--out", str(tmp_path / "h")])
    assert h.exit_code == 0, h.output


def _write_bool(tmp_path: Path, writer: str, df: pd.DataFrame) -> Path:
    path = tmp_path / f"{writer}.parquet"
    if writer == "pandas":
        df.to_parquet(path)
    elif writer == "polars":
        pl = pytest.importorskip("polars")
        pl.from_pandas(df).write_parquet(path)
    else:
        duckdb = pytest.importorskip("duckdb")
        con = duckdb.connect()
        con.register("df", df)
        con.execute(f"COPY (SELECT * EXCLUDE (w), w::BOOLEAN AS w FROM df) TO '{path}' (FORMAT parquet)")
    assert str(pq.read_schema(path).field("w").type) == "bool"
    return path


@pytest.mark.parametrize("writer", ["pandas", "polars", "duckdb"])
def test_a_boolean_weight_is_a_zero_one_mask(tmp_path: Path, writer: str):
    mask = np.arange(N) % 3 == 0
    path = _write_bool(tmp_path, writer, _frame(mask))
    r = evalkit.evaluate(str(path), weight="w", by=["g"], plots=False)
    ref = evalkit.evaluate(_frame(mask.astype(np.float64)), weight="w", by=["g"], plots=False)
    assert r.overall["weighted_mean"] == pytest.approx(ref.overall["weighted_mean"], rel=1e-12)
    assert r.overall["n_eff"] == pytest.approx(mask.sum())
    pd.testing.assert_series_equal(r.groups["g"]["weighted_mean"], ref.groups["g"]["weighted_mean"], rtol=1e-12)
    cli = CliRunner().invoke(main, ["evaluate", str(path), "--weight", "w", "--no-plots", "--format", "json"])
    assert cli.exit_code == 0, cli.output
