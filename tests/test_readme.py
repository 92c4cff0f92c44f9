"""The README's examples run as written (issue 14.7): its ``sh`` blocks of the CLI section and
its Python block are extracted and run in a temporary copy of the sample data, so the docs
cannot drift from the code."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from evalkit.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str, section: str) -> list[str]:
    part = README.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", part, flags=re.S)


def _commands(block: str) -> list[str]:
    """Shell lines (continuations joined, comments dropped)."""
    text = block.replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines() if line.strip().startswith("evalkit")]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for d in ("sample_data", "configs"):
        shutil.copytree(ROOT / d, tmp_path / d)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cli_examples_run_in_order(workdir):
    commands = [c for block in _blocks("sh", "The CLI") for c in _commands(block)]
    assert any(c.startswith("evalkit compare") for c in commands)
    for line in commands:
        cmd, _, pipe = line.partition("|")
        args = shlex.split(cmd)[1:]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, f"{line}\n{result.output}"
        if "jq" in pipe:
            assert isinstance(json.loads(result.stdout)["overall"]["mean"], float)
    assert (workdir / "out" / "compare" / "compare.md").exists()


def test_python_example_runs(workdir, capsys):
    [block] = _blocks("python", "Python API")
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert os.path.isdir(workdir / "out" / "report")
    assert namespace["result"].metadata["on"] == ["id"]


def test_help_texts():
    compare_help = CliRunner().invoke(main, ["compare", "--help"]).output
    assert "5%" in compare_help and "%%" not in compare_help
    inspect_help = CliRunner().invoke(main, ["inspect", "--help"]).output
    codes = inspect_help.split("Exit codes:")[1]
    assert "3  input" in codes and "4" not in codes and "5" not in codes


def test_inspect_try_line_runs_as_pasted(tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    d = tmp_path / "my runs"
    d.mkdir()
    preds = pd.DataFrame({"id": range(6), "probs": [[0.8, 0.2], [0.3, 0.7]] * 3,
                          "région": ["EU", "US", "EU"] * 2})
    preds.to_parquet(d / "prédictions 1.parquet")
    pd.DataFrame({"id": range(6), "label": ["a", "b"] * 3, "class": [0, 1] * 3}).to_parquet(tmp_path / "labels.parquet")
    res = CliRunner().invoke(main, ["inspect", str(d / "prédictions 1.parquet"), "--labels", "labels.parquet",
                                    "--classes", "a,b"])
    assert res.exit_code == 0, res.output
    [line] = [x for x in res.output.splitlines() if x.startswith("try: ")]
    args = shlex.split(line[len("try: "):])
    assert args[:2] == ["evalkit", "evaluate"] and "--labels" in args and args[args.index("--on") + 1] == "id"
    assert "région" in args and "label" not in args and "class" not in args
    run = CliRunner().invoke(main, args[1:] + ["-q"])
    assert run.exit_code == 0, run.output
    assert "région" in json.loads((tmp_path / "report" / "summary.json").read_text())["groups"]


def test_sample_report_excerpts_are_what_the_command_writes(workdir):
    """The README's sample report (slices, the by-region table with intervals, disparity,
    calibration) is what its own command writes on the shipped sample data today: every
    line of the excerpts (``...`` marks a cut) appears in that report.md, in order."""
    m = re.search(r"On the shipped sample data \(`(evalkit evaluate[^`]+)`\)", README)
    assert m, "README lost its sample-report command"
    args = shlex.split(" ".join(m.group(1).split()))[1:]
    result = CliRunner().invoke(main, [*args, "-q", "--no-plots"])
    assert result.exit_code == 0, result.output
    out = args[args.index("--out") + 1]
    report = (workdir / out / "report.md").read_text(encoding="utf-8").splitlines()
    tail = README[m.end():].split("(`tests/golden/", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", tail, flags=re.S)
    assert len(blocks) >= 2 and "significantly worse slice" in blocks[0]
    for block in blocks:
        pos = 0
        for line in block.splitlines():
            if line.strip() in ("", "..."):
                continue
            assert line in report[pos:], f"README sample report line not in report.md:\n{line}"
            pos = report.index(line, pos) + 1
