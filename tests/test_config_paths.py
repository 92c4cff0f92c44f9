"""Paths in a config file (``input``, ``labels``, ``out``) are relative to the current
directory, as on the command line (T22); one that names nothing there is an error naming the
key, the config file and the directory it was looked for in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import EmptyInputError


def _project(tmp_path: Path, wide_file, extra: str = "") -> Path:
    """``proj/data/preds.parquet`` and ``proj/configs/c.yaml`` naming it relative to ``proj``."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "configs").mkdir()
    os.replace(wide_file[0], proj / "data" / "preds.parquet")
    (proj / "configs" / "c.yaml").write_text(f"input: data/preds.parquet\nout: out/run\nplots: false\n{extra}")
    return proj


def _cli(*args: object) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def test_config_paths_are_relative_to_the_current_directory(
        tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = _project(tmp_path, wide_file)
    monkeypatch.chdir(proj)
    code, out = _cli("evaluate", "--config", "configs/c.yaml", "-q", "--format", "none")
    assert code == 0, out
    assert (proj / "out" / "run" / "report.md").is_file()  # out: relative to the cwd too
    assert not (proj / "configs" / "out").exists()


@pytest.mark.parametrize(("extra", "key", "path"), [
    ("", "input", "data/preds.parquet"),
    ("labels: data/labels.parquet\n'on': [id]\n", "labels", "data/labels.parquet"),
])
def test_a_config_path_not_found_names_the_config_and_the_directory(
        tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch, extra: str, key: str, path: str) -> None:
    proj = _project(tmp_path, wide_file, extra)
    elsewhere = tmp_path / "cron"
    elsewhere.mkdir()
    if key == "labels":  # the input found (absolute), the labels not (relative)
        cfg = proj / "configs" / "c.yaml"
        cfg.write_text(cfg.read_text().replace("input: data/", f"input: {proj}/data/"))
    monkeypatch.chdir(elsewhere)
    config = proj / "configs" / "c.yaml"
    code, out = _cli("evaluate", "--config", config, "-q")
    assert code == 3, out
    assert (f"{key} {path} (from {config}, relative to the current directory {elsewhere}): no such file "
            "or directory") in out, out
    assert "cd" in out and "absolute paths" in out
    with pytest.raises(EmptyInputError, match=f"from {config}, relative to the current directory"):
        evalkit.run(config)
    assert not (elsewhere / "out" / "run").exists()


def test_a_config_glob_that_matches_nothing_names_the_config(
        tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = _project(tmp_path, wide_file)
    config = proj / "configs" / "c.yaml"
    config.write_text(config.read_text().replace("data/preds.parquet", "'data/*.parquet'"))
    monkeypatch.chdir(tmp_path)
    code, out = _cli("evaluate", "--config", config, "-q")
    assert code == 3 and f"input data/*.parquet (from {config}, relative to the current directory" in out, out


def test_a_path_given_as_a_flag_is_not_blamed_on_the_config(
        tmp_path: Path, wide_file, monkeypatch: pytest.MonkeyPatch) -> None:
    proj = _project(tmp_path, wide_file)
    monkeypatch.chdir(tmp_path)
    code, out = _cli("evaluate", "data/other.parquet", "--config", proj / "configs" / "c.yaml", "-q")
    assert code == 3 and "error: data/other.parquet: no such file or directory" in out, out
    assert "from " not in out
