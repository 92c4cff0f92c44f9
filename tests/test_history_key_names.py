"""A group column named like one of history's own columns (rt-final8 F1): evaluate accepts
``--by t`` / ``--by run`` ..., and history kept refusing such reports (exit 2: "rename ... and
rerun evaluate"), after every night had been evaluated. History now keeps such a key column as
``input:<name>`` in its tables (as rows.parquet does), and shows the user's name in history.md,
the plots and the gates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.columns import HISTORY_TABLE_COLUMNS, history_key_column
from evalkit.trend import history

from .test_history import _same_outputs


def _nights(tmp_path: Path, column: str, n: int = 4) -> list[Path]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        p = rng.uniform(0.05, 0.95, 600)
        df = pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": rng.choice(["a", "b"], 600),
                           column: rng.choice(["x", "y"], 600), "split": rng.choice(["train", "val"], 600)})
        if i == n - 1:  # the last night, group x gets much worse
            worse = (df[column] == "x").to_numpy()
            right = np.where(df["label"] == "a", df["prob_a"], df["prob_b"])
            df.loc[worse & (right > 0.5), ["prob_a", "prob_b"]] = df.loc[worse & (right > 0.5),
                                                                         ["prob_b", "prob_a"]].to_numpy()
        src = tmp_path / f"in{i}.parquet"
        df.to_parquet(src)
        out.append(tmp_path / "runs" / f"n{i}")
        evalkit.evaluate(str(src), by=[column, f"split,{column}"], out=out[-1], plots=False)
    return out


@pytest.mark.parametrize("column", ["t", "run", "created", "latest", "segment", "grouping", "drift"])
def test_history_keeps_a_key_column_named_like_its_own_columns(tmp_path: Path, column: str) -> None:
    paths = _nights(tmp_path, column)
    gates = {"groups": {column: {"max_drift_pct": 1}}}
    h = history([str(p) for p in paths], lookback=1, plots=False, gates=gates, out=tmp_path / "h")
    key = history_key_column(column)
    assert key == f"input:{column}"
    trend = h.trends[column]
    assert sorted(trend[key]) == ["x", "y"] and trend["runs"].tolist() == [4, 4]
    assert set(h.table(column)[key]) == {"x", "y"} and h.table(column)["run"].max() == 4
    assert sorted(h.table(f"split,{column}")[key].unique()) == ["x", "y"]
    # the user's name wherever a person reads it
    md = (tmp_path / "h" / "history.md").read_text()
    assert f"## By {column}\n" in md and f"| {column} | latest |" in md and "input:" not in md
    failed = [f for f in h.failures if f.grouping == column]
    assert failed and failed[0].group == "x" and dict(failed[0].key) == {column: "x"}
    # a second night reuses its rows and writes the same files
    again = history([str(p) for p in paths], lookback=1, plots=False, gates=gates, out=tmp_path / "h",
                    overwrite=True)
    assert again.reused_runs == 4
    history([str(p) for p in paths], lookback=1, plots=False, gates=gates, out=tmp_path / "cold", reuse=False)
    _same_outputs(tmp_path / "h", tmp_path / "cold")


def test_the_cli_runs_history_on_such_reports_with_plots(tmp_path: Path) -> None:
    """It exited 2 ("rename that column in the input and rerun evaluate")."""
    paths = _nights(tmp_path, "t", n=3)
    r = CliRunner().invoke(main, ["history", *map(str, paths), "--out", str(tmp_path / "h"), "--format", "none"])
    assert r.exit_code == 0, r.output
    assert "rename" not in r.stderr
    pytest.importorskip("matplotlib")
    for name in ("history_by_t.png", "history_by_split_t.png"):
        assert (tmp_path / "h" / name).stat().st_size > 1000


def test_every_name_history_writes_is_in_the_one_list(tmp_path: Path) -> None:
    """HISTORY_TABLE_COLUMNS covers every column of the tidy and trends tables (a new column
    there that a key could take would overwrite it)."""
    paths = _nights(tmp_path, "region", n=3)
    h = history([str(p) for p in paths], lookback=1, plots=False, out=tmp_path / "h")
    own = set(h.table("region").columns) | set(h.trends["region"].columns)
    assert own - {"region"} <= set(HISTORY_TABLE_COLUMNS)
