"""Empty prediction lists (tester T11): a list column whose rows hold no values is an input
error (exit 3) naming file, column and rows: "empty prediction list (0 classes)", never an
internal error, a raw ValueError from the API, "the 0 classes" blamed on a healthy row, or
"null (missing) prediction" in inspect. The class count is taken from the first non-empty
row, so in a mixed file the empty rows are the problem named."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import EvalkitError, ListLengthError
from evalkit.inspect import inspect_input


def _write(tmp_path, name: str, table: pa.Table) -> str:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path)
    return str(path)


@pytest.mark.parametrize("column", ["probs", "logits"])
@pytest.mark.parametrize("list_type", [pa.list_(pa.float64()), pa.large_list(pa.float32())])
def test_all_empty_lists_are_an_input_error_naming_the_rows(tmp_path, column, list_type):
    path = _write(tmp_path, "empty", pa.table({column: pa.array([[], [], []], list_type), "label": [0, 1, 0]}))
    with pytest.raises(ListLengthError) as exc:
        evalkit.evaluate(path, plots=False)
    assert f"column {column}: empty prediction list (0 classes): 3 row(s), e.g. row 0; row 1; row 2" in str(exc.value)
    result = CliRunner().invoke(main, ["evaluate", path, "--no-plots", "--out", str(tmp_path / "out")])
    assert result.exit_code == 3, result.output
    assert "empty prediction list (0 classes)" in result.output and "internal error" not in result.output
    info = inspect_input(path, cli=True)
    assert "empty prediction list (0 classes)" in (info["layout_error"] or "")


def test_a_fixed_size_list_of_size_zero_is_named_not_a_read_failure(tmp_path):
    path = _write(tmp_path, "fsl0", pa.table({"probs": pa.array([[], [], []], pa.list_(pa.float64(), 0)),
                                              "label": [0, 1, 0]}))
    with pytest.raises(ListLengthError, match=r"column probs: empty prediction list \(0 classes\): every row"):
        evalkit.evaluate(path, plots=False)
    info = inspect_input(path, cli=True)  # Arrow cannot read the column back: inspect must not try
    assert "empty prediction list (0 classes)" in (info["layout_error"] or "")


@pytest.mark.parametrize("rows, empty_row", [([[], [0.5, 0.5], [0.2, 0.8]], 0), ([[0.5, 0.5], [], [0.2, 0.8]], 1)])
def test_in_a_mixed_file_the_empty_rows_are_the_problem(tmp_path, rows, empty_row):
    path = _write(tmp_path, "mixed", pa.table({"probs": pa.array(rows, pa.list_(pa.float64())), "label": [0, 1, 1]}))
    with pytest.raises(ListLengthError) as exc:
        evalkit.evaluate(path, plots=False)
    text = str(exc.value)
    assert f"column probs: empty prediction list (0 classes): 1 row(s), e.g. row {empty_row}" in text
    assert "0 classes; lengths" not in text  # the healthy rows are not blamed
    r = evalkit.evaluate(path, plots=False, on_invalid="skip")  # skipped as their own reason
    assert r.overall["count"] == 2
    want = np.mean([-np.log(p[y]) for p, y in zip(rows, [0, 1, 1], strict=True) if p])
    assert r.overall["mean"] == pytest.approx(want, rel=1e-12)
    info = inspect_input(path, cli=True)
    assert info["layout_error"] is None
    assert any("empty prediction list (0 classes) in probs: 1 of the first 3 rows" in w for w in info["warnings"])
    assert not any("null (missing)" in w for w in info["warnings"])


def test_empty_soft_target_lists_are_named(tmp_path):
    table = pa.table({"probs": pa.array([[0.5, 0.5], [0.3, 0.7]], pa.list_(pa.float64())),
                      "target": pa.array([[], [0.0, 1.0]], pa.list_(pa.float64()))})
    path = _write(tmp_path, "soft", table)
    with pytest.raises(ListLengthError, match=r"column target: empty target list \(0 classes\): 1 row\(s\), e.g. row 0"):
        evalkit.evaluate(path, plots=False)


def test_every_empty_list_error_is_an_evalkit_error(tmp_path):
    # The kind: no empty list reaches the kernel (a raw numpy ValueError before).
    for rows in ([[]], [[], []], [None, []], [[], None, [0.5, 0.5]]):
        table = pa.table({"probs": pa.array(rows, pa.list_(pa.float64())), "label": [0] * len(rows)})
        with pytest.raises(EvalkitError):
            evalkit.evaluate(table, plots=False)
