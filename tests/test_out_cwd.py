"""--out and the working directory (tester T1): a report replaces its directory as a whole,
so --out may not be the working directory or hold it; and a working directory that no longer
exists is a usage error (exit 2), never "a bug in evalkit" (exit 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "sample_data" / "digits.parquet"


def run(*args: object) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("out, cwd", [(".", "ud"), ("..", "ud/sub"), ("../..", "ud/sub/deeper"),
                                      ("{abs}", "ud")])
def test_out_being_the_working_directory_or_holding_it_is_refused(tmp_path, monkeypatch, out, cwd):
    top = tmp_path / "ud"
    here = tmp_path / cwd
    here.mkdir(parents=True)
    before = os.stat(top).st_ino
    monkeypatch.chdir(here)
    r = run("evaluate", DIGITS, "--no-plots", "-q", "--out", out.format(abs=top))
    assert r.exit_code == 2, r.output
    assert "--out" in r.output and "current directory" in r.output and "Traceback" not in r.output
    assert os.stat(top).st_ino == before and os.getcwd() == str(here)
    assert os.listdir(top) == ([] if cwd == "ud" else ["sub"])
    # beside it is fine
    assert run("evaluate", DIGITS, "--no-plots", "-q", "--out", "report").exit_code == 0
    assert (here / "report" / "report.md").is_file()


def test_api_refuses_the_working_directory_as_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="current directory"):
        evalkit.evaluate(str(DIGITS), out=".", plots=False)
    assert os.getcwd() == str(tmp_path) and os.listdir(tmp_path) == []


def _in_removed_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    return gone


@pytest.mark.parametrize("args", [
    ["--out", "report"],                    # relative --out
    ["--out", "."],
    ["--config", "c.yaml"],                 # relative config file
])
def test_a_removed_working_directory_is_a_usage_error(tmp_path, monkeypatch, args):
    _in_removed_dir(tmp_path, monkeypatch)
    r = run("evaluate", DIGITS, "--no-plots", "-q", *args)
    assert r.exit_code == 2, r.output
    assert "current directory no longer exists" in r.output and "bug" not in r.output


def test_a_removed_working_directory_names_a_relative_input(tmp_path, monkeypatch):
    _in_removed_dir(tmp_path, monkeypatch)
    r = run("evaluate", "preds.parquet", "--no-plots", "-q")
    assert r.exit_code == 2 and "current directory no longer exists" in r.output and "preds.parquet" in r.output


def test_absolute_paths_still_work_from_a_removed_working_directory(tmp_path, monkeypatch):
    _in_removed_dir(tmp_path, monkeypatch)
    r = run("evaluate", DIGITS, "--no-plots", "-q", "--out", tmp_path / "r")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r" / "report.md").is_file()


def test_an_unexpected_error_in_a_removed_working_directory_is_not_called_a_bug(tmp_path, monkeypatch):
    """Where the library does not check (the last line of defence of the CLI)."""
    from evalkit import api

    def boom(*a, **k):
        os.getcwd()  # what any relative path resolution does

    monkeypatch.setattr(api, "_evaluate_and_write", boom)
    _in_removed_dir(tmp_path, monkeypatch)
    r = run("evaluate", DIGITS, "--no-plots", "-q", "--out", tmp_path / "r")
    assert r.exit_code == 2 and "current directory no longer exists" in r.output and "bug" not in r.output
