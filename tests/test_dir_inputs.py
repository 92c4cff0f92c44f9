"""Which files of a directory input are data (tester T10): a README.txt beside the Parquet
files, or an evalkit report written inside the input directory, is skipped with a note, never
read as data (the run used to stop: "README.txt: not a Parquet file")."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main

from .conftest import random_probs, write


def _preds(path: Path, n: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    p = random_probs(rng, n, 3)
    return write(pa.table({"label": rng.integers(0, 3, n), **{f"prob_{i}": p[:, i] for i in range(3)}}), path)


def _notes(result) -> list[str]:
    return [str(w) for w in result.warnings if "skipped" in str(w)]


def test_a_readme_beside_spark_part_files_is_skipped_with_a_note(tmp_path):
    d = tmp_path / "spark"
    _preds(d / "part-00000.snappy.parquet")
    _preds(d / "part-00001.snappy.parquet", seed=1)
    (d / "_SUCCESS").touch()
    (d / "README.txt").write_text("notes on this run\n")
    (d / "schema.json").write_text("{}")
    r = evalkit.evaluate(str(d), plots=False)
    assert r.metadata["rows_read"] == 600 and r.metadata["input_files"] == 2
    assert _notes(r) == [f"{d}: skipped 2 file(s) that are not Parquet data: {d}/README.txt, {d}/schema.json "
                         "(a directory input reads its *.parquet files, or, when it holds none, its files "
                         "without an extension)"]
    res = CliRunner().invoke(main, ["evaluate", str(d), "--no-plots", "-q", "--format", "none"])
    assert res.exit_code == 0, res.output
    assert [ln for ln in res.output.splitlines() if "skipped" in ln] == [f"warning: {_notes(r)[0]}"]


def test_an_evalkit_report_inside_the_input_directory_is_never_data(tmp_path):
    d = tmp_path / "pre"
    _preds(d / "a.parquet")
    alone = evalkit.evaluate(str(d / "a.parquet"), plots=False)
    alone.write(d / "a.parquet.report")  # allowed: the report is beside its input, not inside it
    for spec in (str(d), str(d / "*")):  # the directory, or a glob that matches the report too
        r = evalkit.evaluate(spec, plots=False)
        assert r.metadata["rows_read"] == 300 and r.overall["mean"] == pytest.approx(alone.overall["mean"])
        assert any(f"skipped the evalkit report(s) inside it, never read as data: {d}/a.parquet.report/" in n
                   for n in _notes(r)), (spec, r.warnings)
    # nested deeper, with parquet tables in a subdirectory of its own (rows/ of the Dask engine)
    shutil.copytree(d / "a.parquet.report", d / "sub" / "r2")
    _preds(d / "sub" / "r2" / "rows" / "part-0.parquet")
    r = evalkit.evaluate(str(d), plots=False)
    assert r.metadata["rows_read"] == 300


def test_extension_less_part_files_still_work_and_a_readme_beside_them_is_skipped(tmp_path):
    d = tmp_path / "hive"
    _preds(d / "000000_0")
    _preds(d / "000001_0", seed=1)
    assert evalkit.evaluate(str(d), plots=False).metadata["rows_read"] == 600
    (d / "README.txt").write_text("x")
    r = evalkit.evaluate(str(d), plots=False)
    assert r.metadata["rows_read"] == 600 and "README.txt" in _notes(r)[0]


def test_a_directory_of_files_with_other_names_is_still_read_and_a_bad_file_named(tmp_path):
    d = tmp_path / "odd"
    _preds(d / "preds.pqt")
    assert evalkit.evaluate(str(d), plots=False).metadata["rows_read"] == 300
    (d / "notes.txt").write_text("x")
    with pytest.raises(evalkit.errors.CorruptFileError, match="notes.txt: not a Parquet file"):
        evalkit.evaluate(str(d), plots=False)


def test_the_rule(tmp_path):
    from evalkit.io import select_data_files

    files = ["d/a.parquet", "d/README.txt", "d/x/b.PARQ", "d/r/evalkit-manifest.json", "d/r/report.md",
             "d/r/rows.parquet", "d/r/rows/part-0.parquet", "d/000000_0"]
    assert select_data_files("d", files) == (["d/a.parquet", "d/x/b.PARQ"], ["d/r"], ["d/README.txt", "d/000000_0"])
    assert select_data_files("d", ["d/evalkit-manifest.json", "d/a.parquet"]) == (["d/a.parquet"], [], ["d/evalkit-manifest.json"])
    assert select_data_files("d", ["d/evalkit-manifest.json", "d/a.parquet"], root_is_report=True) == ([], ["d"], [])


def test_a_remote_directory_takes_the_same_rule(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    mem = fsspec.filesystem("memory")
    src = _preds(tmp_path / "p.parquet")
    mem.pipe("/evalkit-t10/part-0.parquet", src.read_bytes())
    mem.pipe("/evalkit-t10/README.txt", b"notes")
    mem.pipe("/evalkit-t10/rep/evalkit-manifest.json", b"{}")
    mem.pipe("/evalkit-t10/rep/overall.parquet", src.read_bytes())
    try:
        r = evalkit.evaluate("memory://evalkit-t10", plots=False, write_rows=False)
        assert r.metadata["rows_read"] == 300
        assert len(_notes(r)) == 2 and "README.txt" in _notes(r)[1] and "rep/" in _notes(r)[0]
    finally:
        mem.rm("/evalkit-t10", recursive=True)
