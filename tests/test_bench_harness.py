"""bench/_harness: timed runs start evalkit from bytecode, as an installed evalkit does."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import _harness  # noqa: E402


def test_interpreter_of_python_and_console_script(tmp_path):
    assert _harness.interpreter_of([sys.executable, "-m", "evalkit"]) == sys.executable
    script = tmp_path / "evalkit"
    script.write_text(f"#!{sys.executable}\nimport sys\n")
    assert _harness.interpreter_of([str(script), "evaluate"]) == sys.executable
    shell = tmp_path / "tool"
    shell.write_text("#!/bin/sh\necho\n")
    assert _harness.interpreter_of([str(shell)]) is None
    assert _harness.interpreter_of([str(tmp_path / "missing")]) is None
    assert _harness.interpreter_of([]) is None


def _package(tmp_path: Path) -> Path:
    pkg = tmp_path / "site" / "benchpkg_probe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    (pkg / "mod.py").write_text("Y = 2\n")
    return pkg


def test_compile_bytecode_writes_pyc_even_when_the_environment_forbids_it(tmp_path, monkeypatch):
    pkg = _package(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(pkg.parent))
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.delenv(_harness.SOURCE_ENV, raising=False)
    assert _harness.compile_bytecode([sys.executable, "-m", "x"], packages=("benchpkg_probe",))
    cached = sorted(p.name.split(".")[0] for p in (pkg / "__pycache__").glob("*.pyc"))
    assert cached == ["__init__", "mod"]
    assert os.environ["PYTHONDONTWRITEBYTECODE"] == "1"  # the caller's environment is untouched


@pytest.mark.parametrize("why", ["source", "no interpreter"])
def test_compile_bytecode_skipped(tmp_path, monkeypatch, why):
    pkg = _package(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(pkg.parent))
    cmd = [sys.executable, "-m", "x"]
    if why == "source":
        monkeypatch.setenv(_harness.SOURCE_ENV, "1")
    else:
        monkeypatch.delenv(_harness.SOURCE_ENV, raising=False)
        cmd = [str(tmp_path / "not-a-program")]
    assert not _harness.compile_bytecode(cmd, packages=("benchpkg_probe",))
    assert not (pkg / "__pycache__").exists()
