"""history's drift gates on a grouping whose key values were recoded in the latest run
(EU -> eu): no group is in both the latest and the reference run, so nothing is measured,
and the gate fails as compare's does (rt-main10 F8: six "not checked" lines, exit 0)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

import evalkit
from evalkit.cli import main

from .test_history import DAY0, REGIONS, _stats, make_report


def _series(root: Path, recode_latest: bool, n_runs: int = 6) -> None:
    for r in range(n_runs):
        regions = [x.lower() for x in REGIONS] if recode_latest and r == n_runs - 1 else REGIONS
        df = _stats({"region": regions}, np.array([0.40, 0.55, 0.60, 0.45]), 2000, 1.0)
        make_report(root, f"run-{r:02d}", DAY0 + pd.Timedelta(days=r), {"region": df})


def _history(tmp_path: Path, recode: bool, gate: str) -> tuple[int, str]:
    runs = tmp_path / f"{'recoded' if recode else 'same'}-{gate.split(':')[0]}"
    _series(runs, recode)
    cfg = tmp_path / f"g{recode}{gate}.yaml"
    cfg.write_text(f"gates:\n  groups:\n    region:\n      {gate}\n")
    res = CliRunner().invoke(main, ["history", *sorted(str(p) for p in runs.iterdir()), "--lookback", "3",
                                    "--no-plots", "--format", "none", "--config", str(cfg)])
    return res.exit_code, res.output


def test_a_drift_gate_on_a_recoded_grouping_fails(tmp_path: Path):
    for gate in ("max_drift: 0.5", "max_drift_pct: 20"):
        code, out = _history(tmp_path, True, gate)
        assert code == 5, out
        assert "no group of 'region' is in both the latest run and the reference run" in out
        assert "4 only in the latest, 4 only in the reference run" in out


def test_the_same_gate_passes_when_the_keys_stay(tmp_path: Path):
    code, out = _history(tmp_path, False, "max_drift: 0.5")
    assert code == 0, out


def test_api_gate_record(tmp_path: Path):
    _series(tmp_path / "r", True)
    res = evalkit.history(sorted((tmp_path / "r").iterdir()), lookback=3,
                          gates={"groups": {"region": {"max_drift": 0.5}}}, plots=False)
    assert [(f.gate, f.grouping, f.failed) for f in res.failures] == [("max_drift", "region", True)]
    assert not res.passed
