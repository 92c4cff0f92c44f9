"""Config keys, flags and the environment (tester T7, T9): config keys are the long flag
names in both directions (``key``/``keys``, ``rows``/``write_rows``), and an environment
variable that overrides a key of the config file says so (precedence: flag > environment >
file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from evalkit.cli import main
from evalkit.config import EvalConfig
from evalkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "sample_data" / "digits.parquet"


def _run(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def _config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(f"input: {DIGITS}\nplots: false\n{text}")
    return p


def test_environment_over_a_config_key_is_a_run_warning(tmp_path):
    cfg = _config(tmp_path, "eps: 1.0e-5\n")
    out = tmp_path / "r"
    r = _run(["evaluate", "--config", cfg, "--format", "json", "-q", "--out", out],
             env={"EVALKIT_EVALUATE_EPS": "1e-6"})
    assert r.exit_code == 0, r.output
    note = (f"the environment variable EVALKIT_EVALUATE_EPS (1e-6) overrides eps: 1e-05 of {cfg} "
            "(a flag overrides the environment, which overrides the config file)")
    assert [ln for ln in r.output.splitlines() if ln.startswith("warning:")] == [f"warning: {note}"]
    meta = json.loads((out / "summary.json").read_text())["metadata"]
    assert meta["eps"] == 1e-6 and note in meta["warnings"]
    assert note in (out / "report.md").read_text()


@pytest.mark.parametrize("args, env, eps", [
    (["--eps", "1e-4"], {"EVALKIT_EVALUATE_EPS": "1e-6"}, 1e-4),   # the flag wins, nothing to note
    ([], {"EVALKIT_EVALUATE_EPS": "1e-5"}, 1e-5),                   # the same value as the file
    ([], {"EVALKIT_EVALUATE_TOP_K": "3"}, 1e-5),                    # a key the file does not set
])
def test_no_note_when_the_environment_overrides_nothing_of_the_file(tmp_path, args, env, eps):
    cfg = _config(tmp_path, "eps: 1.0e-5\n")
    r = _run(["evaluate", "--config", cfg, "--format", "json", "-q", *args], env=env)
    assert r.exit_code == 0, r.output
    assert "warning:" not in r.output
    assert json.loads(r.output[r.output.index("{"):])["metadata"]["eps"] == eps


def test_keys_is_also_a_flag_and_key_also_a_config_key(tmp_path):
    r = _run(["evaluate", DIGITS, "--keys", "id", "--no-plots", "-q", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metadata"]["config"]["keys"] == ["id"]
    assert EvalConfig.from_file(_config(tmp_path, "key: [id]\nrows: false\n")).keys == ["id"]
    assert EvalConfig.from_file(_config(tmp_path, "key: [id]\nrows: false\n")).write_rows is False
    with pytest.raises(ConfigError, match="'key' and 'keys' are one key in two spellings"):
        EvalConfig.from_file(_config(tmp_path, "key: [id]\nkeys: [id]\n"))


def test_every_config_key_is_spelled_as_its_flag_too():
    """The kind (T9): for every option of every command that sets a config key, the long flag
    name read as a config key names the same setting."""
    from evalkit.config import config_key

    keys = set(EvalConfig.field_names())
    for name, cmd in main.commands.items():
        for p in cmd.params:
            if p.name not in keys:
                continue
            for opt in [o for o in p.opts if o.startswith("--")]:
                assert config_key(opt[2:]) == p.name, (name, opt, p.name)


def test_an_environment_value_equal_to_the_file_once_read_is_no_override(tmp_path):
    cfg = _config(tmp_path, "by: [split]\n")
    r = _run(["evaluate", "--config", cfg, "--format", "none", "-q"], env={"EVALKIT_EVALUATE_BY": "split"})
    assert r.exit_code == 0 and "warning:" not in r.output, r.output
    r = _run(["evaluate", "--config", cfg, "--format", "none", "-q"], env={"EVALKIT_EVALUATE_BY": "label"})
    assert r.exit_code == 0 and "EVALKIT_EVALUATE_BY (label) overrides by: [['split']]" in r.output, r.output
