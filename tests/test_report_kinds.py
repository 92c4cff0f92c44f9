"""A report of one command given where another command's input belongs (rt-final8 F13): every
command names what it was given, with one message and one exit code (3, as README's table
says of a directory that is not a readable evaluate report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("kinds")
    rng = np.random.default_rng(0)
    for i in range(2):
        p = rng.uniform(0.05, 0.95, 200)
        df = pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": rng.choice(["a", "b"], 200),
                           "region": rng.choice(["EU", "US"], 200)})
        df.to_parquet(root / f"in{i}.parquet")
        evalkit.evaluate(str(root / f"in{i}.parquet"), by=["region"], out=root / f"r{i}", plots=False)
    evalkit.compare(root / "r0", root / "r1", out=root / "c")
    evalkit.history([str(root / "r0"), str(root / "r1")], out=root / "h", plots=False)
    return {"evaluate": root / "r0", "other": root / "r1", "compare": root / "c", "history": root / "h"}


@pytest.mark.parametrize("kind", ["compare", "history"])
@pytest.mark.parametrize("side", ["baseline", "candidate"])
def test_compare_given_a_compare_or_history_report_names_it(reports: dict[str, Path], kind: str,
                                                           side: str, tmp_path: Path) -> None:
    """compare given a history report said "evalkit-manifest.json: not a Parquet file"; a
    compare report got another message and exit 2. Now both: history's message, exit 3."""
    args = [reports[kind], reports["evaluate"]] if side == "baseline" else [reports["evaluate"], reports[kind]]
    r = CliRunner().invoke(main, ["compare", *map(str, args), "--out", str(tmp_path / "x"), "-q"])
    assert r.exit_code == 3, r.output
    assert f"{side} {reports[kind]}: is a {kind} report, not an evaluate report" in r.stderr
    assert "Parquet" not in r.stderr
    with pytest.raises(evalkit.ReportError, match=f"is a {kind} report, not an evaluate report"):
        evalkit.compare(*args)


@pytest.mark.parametrize("kind", ["compare", "history"])
def test_history_given_a_compare_or_history_report_says_the_same(reports: dict[str, Path], kind: str) -> None:
    r = CliRunner().invoke(main, ["history", str(reports["evaluate"]), str(reports[kind]), "--no-plots",
                                  "--format", "none"])
    assert r.exit_code == 3
    assert f"{reports[kind]}: is a {kind} report, not an evaluate report" in r.stderr


@pytest.mark.parametrize("kind", ["evaluate", "compare", "history"])
def test_evaluate_given_a_report_names_it(reports: dict[str, Path], kind: str, tmp_path: Path) -> None:
    """evaluate read a report's files as predictions: "evalkit-manifest.json: not a Parquet file"."""
    r = CliRunner().invoke(main, ["evaluate", str(reports[kind]), "--out", str(tmp_path / "x"), "-q"])
    assert r.exit_code == 3
    assert f"{reports[kind]}: is an evalkit {kind} report, not prediction input" in r.stderr
    assert "Parquet" not in r.stderr
    with pytest.raises(evalkit.InputError, match="not prediction input"):
        evalkit.evaluate(str(reports[kind]))


def test_a_directory_of_predictions_is_still_read(reports: dict[str, Path]) -> None:
    """Only evalkit's own output is refused: a directory of Parquet predictions is evaluated as
    before."""
    d = reports["evaluate"].parent / "preds"
    d.mkdir()
    pd.read_parquet(reports["evaluate"].parent / "in0.parquet").to_parquet(d / "part-0.parquet")
    assert evalkit.evaluate(str(d)).overall["count"] == 200
