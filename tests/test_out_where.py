"""Where a report may be written (``--out`` / ``out=`` / ``result.write``): a local directory,
never a URL (T19), never a mount point itself (T21), never where an input glob would read
it back (T25). Each is refused up front, before any work, with what to do instead."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import UsageError

from .test_history import make_series


def _cli(*args: object) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"prob_a": [0.7, 0.2, 0.4, 0.9], "prob_b": [0.3, 0.8, 0.6, 0.1],
                         "label": ["a", "b", "b", "a"]})


# -- T19: a URL is no output directory -----------------------------------------------------

URLS = ["s3://my-bucket/reports/night1", "gs://b/r", "memory://x/report", "abfs://c/r", "https://h/r"]


@pytest.mark.parametrize("url", URLS)
def test_cli_out_url_is_refused_and_nothing_is_written_locally(
        tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.chdir(tmp_path)
    preds = wide_file[0]
    code, out = _cli("evaluate", preds, "--out", url, "--no-plots", "-q")
    assert code == 2, out
    assert f"--out {url}: is a URL" in out and "local directory" in out and "upload" in out
    runs = make_series(tmp_path / "runs", n_runs=3)
    code, out = _cli("history", *runs, "--out", url, "--no-plots", "-q")
    assert code == 2 and "is a URL" in out, out
    code, out = _cli("compare", runs[0], runs[1], "--out", url, "-q")
    assert code == 2 and "is a URL" in out, out
    scheme = url.split("://")[0]
    assert not (tmp_path / f"{scheme}:").exists()  # was: a local directory named 's3:'


def test_s3_out_says_how_to_upload(tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _cli("evaluate", wide_file[0], "--out", "s3://b/night1", "-q")
    assert code == 2 and "aws s3 sync report s3://b/night1" in out, out


@pytest.mark.parametrize("url", URLS)
def test_api_out_url_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="is a URL"):
        evalkit.evaluate(_frame(), out=url)
    result = evalkit.evaluate(_frame())
    with pytest.raises(UsageError, match="is a URL"):
        result.write(url)
    with pytest.raises(UsageError, match="is a URL"):
        evalkit.run({"input": str(tmp_path / "none.parquet"), "out": url})
    runs = make_series(tmp_path / "runs", n_runs=3)
    with pytest.raises(UsageError, match="is a URL"):
        evalkit.history(runs, out=url, plots=False)
    assert sorted(os.listdir(tmp_path)) == ["runs"]


def test_file_url_out_is_the_local_directory(tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch) -> None:
    """``file://`` names a local path, for --out as for inputs."""
    monkeypatch.chdir(tmp_path)
    code, out = _cli("evaluate", wide_file[0], "--out", f"file://{tmp_path}/rep", "--no-plots", "-q")
    assert code == 0, out
    assert (tmp_path / "rep" / "report.md").is_file()
    assert not (tmp_path / "file:").exists()
    runs = make_series(tmp_path / "runs", n_runs=3)
    evalkit.history(runs, out=f"file://{tmp_path}/hist", plots=False)
    assert (tmp_path / "hist" / "history.md").is_file()
