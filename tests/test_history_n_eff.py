"""``n_eff`` (Kish's effective sample size of a weighted run) where a run has none: "empty"
as the README says, in every format: null in Parquet (history's tidy tables as evaluate's
tables), null in JSON, blank in Markdown, pandas' missing value in Python. NaN in a Parquet
file is a value to most readers (DuckDB, Spark and polars count it, ``IS NULL`` misses it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

import evalkit


def _night(seed: int, zero_weight_us: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 600
    p = rng.dirichlet([1, 1, 1], n)
    df = pd.DataFrame({"prob_a": p[:, 0], "prob_b": p[:, 1], "prob_c": p[:, 2],
                       "label": rng.choice(["a", "b", "c"], n), "region": rng.choice(["EU", "US"], n),
                       "w": rng.uniform(0.5, 2, n)})
    if zero_weight_us:
        df.loc[df["region"] == "US", "w"] = 0.0
    return df


def _is_empty(table, column: str) -> np.ndarray:  # type: ignore[no-untyped-def]
    col = table.column(column)
    assert pc.sum(pc.is_nan(col)).as_py() in (0, None), f"{column}: NaN where the value is empty"
    return np.asarray(col.is_null().to_pylist())


def test_n_eff_of_an_unweighted_run_is_empty_in_history_tables(tmp_path: Path) -> None:
    reports = []
    for i in range(4):  # two unweighted nights, then two weighted ones
        weighted = {"weight": "w"} if i >= 2 else {}
        res = evalkit.evaluate(_night(i), by=["region"], plots=False,
                               out=tmp_path / f"run-{i}", **weighted)
        reports.append(str(res.path))
    h = evalkit.history(reports, out=tmp_path / "h", plots=False)
    runs = h.runs.set_index("run_id")["run"]
    for grouping, key in (("overall", None), ("region", "region")):
        table = pq.read_table(tmp_path / "h" / ("overall" if key is None else f"by_{key}"))
        empty = _is_empty(table, "n_eff")
        run = runs.loc[table.column("run_id").to_pylist()].to_numpy()
        unweighted = run <= 2
        assert (empty == unweighted).all(), (grouping, empty, run)
        assert (table.column("n_eff").to_numpy(zero_copy_only=False)[~empty] > 1).all()
        # in Python: pandas' missing value where the file is empty
        assert h.table(grouping)["n_eff"].isna().to_numpy().tolist() == empty.tolist()
    # a history built in memory (no out) holds the same
    mem = evalkit.history(reports, plots=False)
    assert mem.table("region")["n_eff"].isna().sum() == h.table("region")["n_eff"].isna().sum()


def test_a_weighted_group_without_weight_is_read_not_refused(tmp_path: Path) -> None:
    """A weighted night whose US rows all have weight 0, and whose EU has one weighted row
    (n_eff 1): evaluate writes no weighted mean for US and no interval for either (sem
    empty), which history read as an edited report (exit 3). It is read; US has no row that
    night (its unweighted mean is another statistic); EU's interval is empty, never one of the
    unweighted std."""
    reports = []
    for i in range(3):
        df = _night(i, zero_weight_us=i == 2)
        if i == 2:
            eu = np.flatnonzero(df["region"] == "EU")
            df.loc[eu[1:], "w"] = 0.0
        reports.append(str(evalkit.evaluate(df, by=["region"], weight="w", plots=False,
                                            out=tmp_path / f"run-{i}").path))
    h = evalkit.history(reports, out=tmp_path / "h", plots=False)
    t = h.table("region")
    assert t.query("region == 'US'")["run"].tolist() == [1, 2]
    eu = t.query("region == 'EU' and run == 3").iloc[0]
    assert eu["n_eff"] == 1.0 and np.isnan(eu["sem"]) and np.isnan(eu["ci_low"]) and np.isnan(eu["ci_high"])
    assert not h.skipped


def test_n_eff_without_a_weighted_mean_is_empty_in_every_evaluate_format(tmp_path: Path) -> None:
    """A weighted run's group without weight: null in Parquet and JSON, blank in Markdown."""
    res = evalkit.evaluate(_night(0, zero_weight_us=True), by=["region"], weight="w", plots=False,
                           out=tmp_path / "r")
    t = pq.read_table(tmp_path / "r" / "by_region.parquet")
    assert _is_empty(t, "n_eff").tolist() == [r == "US" for r in t.column("region").to_pylist()]
    doc = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert {g["region"]: g["n_eff"] is None for g in doc["groups"]["region"]} == {"EU": False, "US": True}
    md = (res.path / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| US |") and "n_eff" not in line)
    assert row.rstrip().endswith("|  |  |"), row  # weighted mean and n_eff blank
