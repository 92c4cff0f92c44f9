"""An input holding two columns of one name (a valid Parquet file pyarrow reads, an Arrow
table, a DataFrame) is refused naming the column, where and its positions (tester T13):
a file was called "not a Parquet file, or a truncated / corrupt one", a DataFrame got
unrelated advice, and an Arrow table raised a bare KeyError."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main

Q = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3])
MESSAGE = r"column 'label' appears twice in {where} \(columns 1 and 2\): rename one"


def _dup_table() -> pa.Table:
    return pa.Table.from_arrays([pa.array(Q), pa.array([1, 1, 1, 0, 0, 0]), pa.array([0, 0, 0, 1, 1, 1])],
                                names=["prob", "label", "label"])


def _good_table() -> pa.Table:
    return pa.table({"prob": Q, "label": [1, 1, 1, 0, 0, 0], "extra": [0] * 6})


@pytest.mark.parametrize("form", ["file", "directory", "glob", "list", "second file of a directory"])
def test_a_parquet_file_with_a_repeated_column_name_is_named(tmp_path, form):
    d = tmp_path / "d"
    d.mkdir()
    bad = d / "b.parquet"
    pq.write_table(_dup_table(), bad)
    if form == "second file of a directory":
        pq.write_table(_good_table(), d / "a.parquet")
    given = {"file": str(bad), "directory": str(d), "glob": str(d / "*.parquet"), "list": [str(bad)],
             "second file of a directory": str(d)}[form]
    with pytest.raises(evalkit.InputError, match=MESSAGE.format(where=".*b.parquet")) as info:
        evalkit.evaluate(given, plots=False)
    assert not isinstance(info.value, evalkit.errors.CorruptFileError)


def test_the_command_line_exits_3(tmp_path):
    bad = tmp_path / "dupcol.parquet"
    pq.write_table(_dup_table(), bad)
    res = CliRunner().invoke(main, ["evaluate", str(bad), "--no-plots", "--out", str(tmp_path / "o")])
    assert res.exit_code == 3, res.output
    assert "column 'label' appears twice in" in res.output and "corrupt" not in res.output


@pytest.mark.parametrize("kind", ["Table", "DataFrame"])
@pytest.mark.parametrize("role", ["predictions", "labels"])
def test_an_arrow_table_or_dataframe_with_a_repeated_name_is_named(role, kind):
    table = _dup_table() if kind == "Table" else _dup_table().to_pandas()
    with pytest.raises(evalkit.InputError, match=MESSAGE.format(where=f"<{role} {kind}>")):
        if role == "predictions":
            evalkit.evaluate(table, plots=False)
        else:
            labels = (table.append_column("id", pa.array(range(6))) if kind == "Table"
                      else table.assign(id=range(6)))
            evalkit.evaluate(pd.DataFrame({"id": range(6), "prob": Q}), labels=labels, on="id", plots=False)


def test_three_times():
    t = pa.Table.from_arrays([pa.array(Q)] * 3 + [pa.array([1, 1, 1, 0, 0, 0])],
                             names=["prob", "prob", "prob", "label"])
    with pytest.raises(evalkit.InputError, match=r"'prob' appears 3 times .*\(columns 0, 1 and 2\): rename all but one"):
        evalkit.evaluate(t, plots=False)
