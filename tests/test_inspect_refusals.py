"""``evalkit inspect`` sees what ``evaluate`` refuses before any label is checked (rt-api9 F19,
F12) and keeps long column lists short (F7): files that disagree on a column the run reads
(every file's footer, both files named), an input with no rows, null predictions. For those it
prints no "try:" line that cannot run, but a "next:" line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from evalkit.cli import main
from evalkit.inspect import inspect_input


def _frame(n: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(2), n)
    return pd.DataFrame({"prob_a": p[:, 0], "prob_b": p[:, 1], "label": rng.choice(["a", "b"], n)})


def _inspect(*paths) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["inspect", *map(str, paths)])
    return r.exit_code, r.output


def _evaluate_exit(tmp_path, *paths) -> int:
    return CliRunner().invoke(main, ["evaluate", *map(str, paths), "--no-plots",
                                     "--out", str(tmp_path / "o")]).exit_code


def test_label_type_drift_between_files_is_reported(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    y = np.random.default_rng(0).integers(0, 3, 10)
    p = np.random.default_rng(0).dirichlet(np.ones(3), 10)
    pq.write_table(pa.table({"probs": pa.array(list(p)), "label": pa.array(y, pa.int32())}), d / "f0.parquet")
    pl.DataFrame({"probs": p.tolist(), "label": [str(v) for v in y]}).write_parquet(d / "f1.parquet")
    assert _evaluate_exit(tmp_path, d) == 3
    code, out = _inspect(d)
    assert code == 0
    assert "warning: evaluate will refuse the input (exit 3)" in out and "f0.parquet" in out \
        and "f1.parquet" in out and "column 'label' has type int32" in out, out
    assert "\ntry:" not in out and "\nnext: evaluate will refuse this input" in out, out
    assert inspect_input(str(d))["blocked"] is True


def test_a_file_without_a_prediction_column_is_reported(tmp_path):
    good, other = tmp_path / "good.parquet", tmp_path / "binary.parquet"
    _frame().to_parquet(good, index=False)
    pd.DataFrame({"prob": [0.2, 0.9], "label": [0, 1]}).to_parquet(other, index=False)
    assert _evaluate_exit(tmp_path, good, other) == 3
    code, out = _inspect(good, other)
    assert "has no column 'prob_a'" in out and "binary.parquet" in out and "\ntry:" not in out, out


def test_no_rows_and_null_predictions_get_no_try_line(tmp_path):
    empty = tmp_path / "zero.parquet"
    _frame().iloc[:0].to_parquet(empty, index=False)
    nulls = tmp_path / "nulls.parquet"
    pd.DataFrame({"prob_a": [None, None], "prob_b": [None, None], "label": ["a", "b"]},
                 dtype=object).astype({"prob_a": "float64", "prob_b": "float64"}).to_parquet(nulls, index=False)
    for path, why in ((empty, "the input has no rows"), (nulls, "null (missing) prediction in prob_a, prob_b")):
        assert _evaluate_exit(tmp_path, path) == 3
        code, out = _inspect(path)
        assert why in out and "\ntry:" not in out and "\nnext:" in out, out


def test_some_null_predictions_suggest_skipping_them(tmp_path):
    frame = _frame()
    frame.loc[3, "prob_a"] = None
    path = tmp_path / "some.parquet"
    frame.to_parquet(path, index=False)
    info = inspect_input(str(path), cli=True)
    assert info["blocked"] is False and "--on-invalid skip" in info["suggested_command"]
    assert any("1 of the first 20 rows" in w for w in info["warnings"]), info["warnings"]


def test_a_good_dataset_still_gets_a_try_line(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    _frame(seed=1).to_parquet(d / "a.parquet", index=False)
    _frame(seed=2).to_parquet(d / "b.parquet", index=False)
    code, out = _inspect(d)
    assert code == 0 and "\ntry: evalkit evaluate" in out and "warning" not in out, out


def test_thousands_of_prediction_columns_are_listed_short(tmp_path):
    k = 2000
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(k), 5)
    table = pa.table({**{f"prob_c{i}": p[:, i] for i in range(k)},
                      "label": [f"c{i}" for i in rng.integers(0, k, 5)]})
    path = tmp_path / "wide.parquet"
    pq.write_table(table, path)
    code, out = _inspect(path)
    assert code == 0
    assert max(len(line) for line in out.splitlines()) < 300, max(len(line) for line in out.splitlines())
    assert "prob_c0, prob_c1" in out and "(2000 in all)" in out
    assert len(out.splitlines()) < 100 and "more columns; 2,001 in all" in out
