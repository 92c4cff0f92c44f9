"""A column whose name has surrounding spaces (a CSV header ``a, c``) can be named, although
comma-separated names lose their spaces (T23): the exact name wins, else the one column equal
to it without surrounding spaces; column lists in errors quote each name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import MissingColumnError


def _frame(**extra: object) -> pd.DataFrame:
    n = 60
    rng = np.random.default_rng(0)
    q = rng.uniform(0.05, 0.95, n)
    return pd.DataFrame({"prob": q, "label": (rng.uniform(size=n) < q).astype(int),
                         "a,b": np.arange(n) % 2, " c": np.arange(n) % 3, "id": np.arange(n), **extra})


def test_a_spaced_column_can_be_grouped_and_sliced_by() -> None:
    df = _frame()
    for by in ([" c"], " c", "c", [[" c"]]):
        r = evalkit.evaluate(df, by=by)
        assert " c" in r.groups and r.groups[" c"]["count"].tolist() == [20, 20, 20], by
    r = evalkit.evaluate(df, slices=" c", slice_min_count=2)
    assert " c" in r.slices.columns
    r = evalkit.evaluate(df, keys=" id, c")  # a comma-separated list loses the spaces: still found
    assert r.rows.columns[:3].tolist() == ["row", "id", " c"]


def test_the_exact_name_wins_over_a_spaced_one() -> None:
    df = _frame(c=np.arange(60) % 2)
    assert evalkit.evaluate(df, by="c").groups["c"]["count"].tolist() == [30, 30]
    assert evalkit.evaluate(df, by=[[" c"]]).groups[" c"]["count"].tolist() == [20, 20, 20]


def test_names_differing_only_in_spaces_are_not_guessed_and_errors_quote_the_names() -> None:
    df = _frame(**{"c ": np.arange(60) % 2})
    with pytest.raises(MissingColumnError) as err:
        evalkit.evaluate(df, by="c")
    assert "columns are: 'prob', 'label', 'a,b', ' c', 'id', 'c '" in str(err.value)


def test_cli_by_a_spaced_column(tmp_path: Path) -> None:
    f = tmp_path / "comma.parquet"
    _frame().to_parquet(f)
    for by in (" c", "id, c"):
        out = tmp_path / f"r{len(by)}"
        r = CliRunner().invoke(main, ["evaluate", str(f), "--by", by, "--out", str(out), "--no-plots", "-q",
                                      "--format", "none"])
        assert r.exit_code == 0, r.output
        tables = [pq.read_schema(p).names for p in out.glob("by_*.parquet") if p.name != "by_class.parquet"]
        assert len(tables) == 1 and " c" in tables[0], tables
