"""Configuration errors: eps range, unknown keys, files that do not parse, bad values.

Every case is a :class:`~evalkit.errors.ConfigError` (a usage error, exit code 2) whose
message names the key and the file (or ``arguments`` / ``command line``), through both the
Python API and the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit import errors as E
from evalkit.cli import main
from evalkit.config import EvalConfig


@pytest.fixture
def preds(tmp_path: Path) -> str:
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    path = tmp_path / "preds.parquet"
    pq.write_table(pa.table({"prob_a": p[:, 0], "prob_b": p[:, 1], "prob_c": p[:, 2], "label": [0, 1, 2]}),
                   path)
    return str(path)


# (name, config file name, its text, substrings the message must hold)
FILE_CASES = [
    ("eps_above_half_yaml", "c.yaml", "eps: 0.6\n", ["c.yaml", "eps", "(0, 0.5)", "0.6"]),
    ("eps_zero_toml", "c.toml", "eps = 0.0\n", ["c.toml", "eps", "(0, 0.5)"]),
    ("eps_negative", "c.yaml", "eps: -1e-3\n", ["c.yaml", "eps", "-0.001"]),
    ("eps_half", "c.yaml", "eps: 0.5\n", ["c.yaml", "eps", "0.5"]),
    ("eps_nan", "c.yaml", "eps: .nan\n", ["c.yaml", "eps", "nan"]),
    ("eps_not_a_number", "c.yaml", "eps: small\n", ["c.yaml", "'eps'", "a number", "'small'"]),
    ("unknown_key_yaml", "c.yaml", "eps: 1e-7\nsum_toll: 0.01\n",
     ["c.yaml", "unknown config key 'sum_toll'", "did you mean 'sum_tol'"]),
    ("unknown_key_toml", "c.toml", "on_invalidd = 'skip'\n",
     ["c.toml", "unknown config key 'on_invalidd'", "did you mean 'on_invalid'"]),
    ("unknown_key_dashes", "c.yaml", "sum-toll: 0.01\n", ["c.yaml", "'sum-toll'", "sum_tol"]),
    ("yaml_does_not_parse", "c.yaml", "eps: [1e-7,\nby: region\n", ["c.yaml", "does not parse", "line"]),
    ("toml_does_not_parse", "c.toml", "eps = = 1\n", ["c.toml", "does not parse", "line 1"]),
    ("not_a_mapping", "c.yaml", "- eps\n- 0.1\n", ["c.yaml", "mapping", "list"]),
    ("bad_choice", "c.yaml", "on_invalid: ignore\n", ["c.yaml", "on_invalid", "error, skip", "'ignore'"]),
    ("bad_bool", "c.yaml", "renormalize: maybe\n", ["c.yaml", "'renormalize'", "true or false"]),
    ("bad_int", "c.yaml", "top_k: 2.5\n", ["c.yaml", "'top_k'", "whole number"]),
    ("sum_tol_out_of_range", "c.toml", "sum_tol = 2.0\n", ["c.toml", "sum_tol", "(0, 1)"]),
    ("bad_grouping", "c.yaml", "by: [[]]\n", ["c.yaml", "empty grouping"]),
    # red team 16: an empty slice list is not silently "no slice search"; it says what to write
    ("slices_empty_string", "c.yaml", "slices: ''\n", ["c.yaml", "slices names no column",
                                                      "`slices: [region, device]`", "leave the `slices` key out"]),
    ("slices_empty_string_toml", "c.toml", "slices = ','\n", ["c.toml", "slices names no column"]),
    ("slices_empty_item", "c.yaml", "slices: [region, '']\n", ["c.yaml", "slices names no column"]),
    ("slices_comma_in_name", "c.yaml", "slices: ['a,b']\n", ["c.yaml", "'a,b'", "comma"]),
]


@pytest.mark.parametrize("name,fname,text,must_say", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_config_file_errors_api(tmp_path: Path, preds: str, name: str, fname: str, text: str,
                                must_say: list[str]) -> None:
    cfg = tmp_path / fname
    cfg.write_text(text)
    with pytest.raises(E.ConfigError) as info:
        evalkit.evaluate(preds, config=cfg)
    assert info.value.exit_code == E.EXIT_USAGE
    for s in must_say:
        assert s in str(info.value), f"{s!r} not in {info.value}"


@pytest.mark.parametrize("name,fname,text,must_say", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_config_file_errors_cli(tmp_path: Path, preds: str, name: str, fname: str, text: str,
                                must_say: list[str]) -> None:
    cfg = tmp_path / fname
    cfg.write_text(text)
    out = tmp_path / "report"
    r = CliRunner().invoke(main, ["evaluate", preds, "--config", str(cfg), "--out", str(out)])
    assert r.exit_code == E.EXIT_USAGE, r.output
    assert "error:" in r.output and "Traceback" not in r.output
    for s in must_say:
        assert s in r.output, f"{s!r} not in {r.output}"
    assert not out.exists()


# (name, evaluate() keyword arguments, CLI arguments, substrings)
ARG_CASES: list[tuple[str, dict[str, Any], list[str], list[str]]] = [
    ("eps_above_half", {"eps": 0.6}, ["--eps", "0.6"], ["eps", "(0, 0.5)", "0.6"]),
    ("eps_zero", {"eps": 0.0}, ["--eps", "0"], ["eps", "(0, 0.5)"]),
    ("eps_negative", {"eps": -1e-7}, ["--eps", "-1e-7"], ["eps", "(0, 0.5)"]),
    ("sum_tol_zero", {"sum_tol": 0.0}, ["--sum-tol", "0"], ["sum_tol", "(0, 1)"]),
    ("batch_size_zero", {"batch_size": 0}, ["--batch-size", "0"], ["batch_size", ">= 1"]),
    ("top_k_negative", {"top_k": -1}, ["--top-k", "-1"], ["top_k", ">= 0"]),
    # red team 16: size-like statistics options are capped (1e6 replicates was an OOM kill)
    ("bootstrap_samples_huge", {"ci": "bootstrap", "bootstrap_samples": 1_000_000},
     ["--ci", "bootstrap", "--bootstrap-samples", "1000000"], ["bootstrap_samples", "<= 10,000"]),
    ("calibration_bins_huge", {"calibration_bins": 10_000_000}, ["--calibration-bins", "10000000"],
     ["calibration_bins", "<= 1,000"]),
    ("slice_limit_huge", {"slice_limit": 10_000_000}, ["--slice-limit", "10000000"],
     ["slice_limit", "<= 1,000,000"]),
    ("slices_empty", {"slices": ""}, ["--slices", ""], ["slices names no column", "region", "device"]),
    ("slices_comma_only", {"slices": ","}, ["--slices", ","], ["slices names no column"]),
    ("slices_blank", {"slices": [" "]}, ["--slices", " "], ["slices names no column"]),
]


def test_empty_slices_message_says_what_to_write(tmp_path: Path, preds: str) -> None:
    """Each caller is told in its own words: flags at the CLI, keywords in Python."""
    with pytest.raises(E.ConfigError) as info:
        evalkit.evaluate(preds, slices="")
    assert "slices=['region', 'device']" in str(info.value) and "--slices" not in str(info.value)
    r = CliRunner().invoke(main, ["evaluate", preds, "--slices", "", "--out", str(tmp_path / "r")])
    assert r.exit_code == E.EXIT_USAGE
    assert "--slices region,device" in r.output and "leave out --slices" in r.output


def test_empty_slice_list_is_the_default_and_configs_round_trip(tmp_path: Path, preds: str) -> None:
    """An empty list is "no slice search" like every other list setting (text naming no
    column is refused above), so a config written by ``to_dict`` (summary.json's ``config``)
    loads back as the same settings."""
    from evalkit.config import EvalConfig

    for text, name in (("slices: []\n", "c.yaml"), ("slices = []\n", "c.toml")):
        (tmp_path / name).write_text(text)
        assert EvalConfig.from_file(tmp_path / name).slices == []
    cfg = EvalConfig.from_mapping({"by": "region", "eps": 1e-6, "slices": ["region"]})
    assert EvalConfig.from_mapping(cfg.to_dict()).to_dict() == cfg.to_dict()
    plain = EvalConfig.from_mapping({"by": "region"})
    assert EvalConfig.from_mapping(plain.to_dict()).to_dict() == plain.to_dict()
    with pytest.raises(E.UsageError, match="no slice search in this run"):
        evalkit.evaluate(preds, slices=[]).worst_slices()


def test_paths_may_be_pathlib_everywhere(tmp_path: Path, preds: str) -> None:
    """red team 16: evaluate(out=Path(...)) was a ConfigError. Every path setting takes str or
    os.PathLike: data, input (also in a list and in a config mapping), labels, out, config."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("top_k: 3\n")
    r1 = evalkit.evaluate(Path(preds), out=tmp_path / "a", config=cfg_file)
    assert r1.metadata["config"]["out"] == str(tmp_path / "a") and r1.overall["count"] == 3
    assert (tmp_path / "a" / "report.md").is_file()  # out= writes the report (as run() does)
    _, path = evalkit.run(EvalConfig.from_mapping({"input": [Path(preds)], "out": tmp_path / "b"}))
    assert path == tmp_path / "b" and (path / "summary.json").is_file()
    cfg = EvalConfig.from_mapping({"input": [Path(preds)], "labels": tmp_path / "l.parquet",
                                   "out": tmp_path / "c"})
    assert cfg.input == [preds] and cfg.labels == str(tmp_path / "l.parquet") and cfg.out == str(tmp_path / "c")
    assert EvalConfig.from_mapping({"input": Path(preds)}).input == [preds]
    with pytest.raises(E.ConfigError, match="'out' must be a path"):
        EvalConfig.from_mapping({"out": b"bytes"})


def test_size_limits_in_config_file_and_at_the_limit() -> None:
    from evalkit.config import SIZE_LIMITS

    for key, high in SIZE_LIMITS.items():
        EvalConfig.from_mapping({key: high}).validate()
        with pytest.raises(E.ConfigError, match=f"{key} must be <= {high:,}"):
            EvalConfig.from_mapping({key: high + 1}, source="c.yaml").validate("c.yaml")


@pytest.mark.parametrize("name,kwargs,args,must_say", ARG_CASES, ids=[c[0] for c in ARG_CASES])
def test_argument_errors(tmp_path: Path, preds: str, name: str, kwargs: dict[str, Any], args: list[str],
                         must_say: list[str]) -> None:
    with pytest.raises(E.ConfigError) as info:
        evalkit.evaluate(preds, **kwargs)
    assert "arguments" in str(info.value)
    for s in must_say:
        assert s in str(info.value)
    r = CliRunner().invoke(main, ["evaluate", preds, *args, "--out", str(tmp_path / "r")])
    assert r.exit_code == E.EXIT_USAGE, r.output
    assert "error: command line:" in r.output and "Traceback" not in r.output
    for s in must_say:
        assert s in r.output
    assert not (tmp_path / "r").exists()


def test_unknown_keyword_argument_and_mapping(preds: str) -> None:
    with pytest.raises(E.ConfigError, match=r"arguments: unknown config key 'sum_toll' \(did you mean 'sum_tol'"):
        evalkit.evaluate(preds, sum_toll=0.1)
    with pytest.raises(E.ConfigError, match=r"config: unknown config key 'epss'.*did you mean 'eps'"):
        evalkit.evaluate(preds, config={"epss": 0.1})


def test_env_var_eps_is_checked(tmp_path: Path, preds: str) -> None:
    r = CliRunner().invoke(main, ["evaluate", preds, "--out", str(tmp_path / "r")],
                           env={"EVALKIT_EVALUATE_EPS": "0.9"})
    assert r.exit_code == E.EXIT_USAGE and "eps" in r.output and "Traceback" not in r.output


def test_missing_config_file(tmp_path: Path, preds: str) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(E.ConfigError, match=r"nope\.yaml: cannot read config file"):
        evalkit.evaluate(preds, config=missing)
    r = CliRunner().invoke(main, ["evaluate", preds, "--config", str(missing)])
    assert r.exit_code == E.EXIT_USAGE and "nope.yaml" in r.output and "Traceback" not in r.output


def test_unknown_cli_flag_is_a_usage_error(preds: str) -> None:
    r = CliRunner().invoke(main, ["evaluate", preds, "--epss", "0.1"])
    assert r.exit_code == E.EXIT_USAGE and "--epss" in r.output and "Traceback" not in r.output


def test_valid_config_file_and_flag_override(tmp_path: Path, preds: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("eps: 1e-3\nsum-tol: 0.01\ntop_k: 2\n")
    result = evalkit.evaluate(preds, config=cfg)
    assert result.metadata["eps"] == 1e-3 and result.metadata["sum_tol"] == 0.01
    assert result.metadata["config_file"] == str(cfg)
    r = CliRunner().invoke(main, ["evaluate", preds, "--config", str(cfg), "--eps", "0.01",
                                  "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metadata"]["eps"] == 0.01


def test_eps_bounds_are_open() -> None:
    for ok in (1e-12, 1e-7, 0.25, 0.4999):
        assert EvalConfig.from_mapping({"eps": ok}).eps == ok
    for bad in (0, 0.5, 0.7, -1, float("nan"), float("inf")):
        with pytest.raises(E.ConfigError, match="eps"):
            EvalConfig.from_mapping({"eps": bad})


@pytest.mark.parametrize("text", ["sum-tol: 0.1\nsum_tol: 0.2\n", "history:\n  min-change-pct: 50\n  min_change_pct: 0\n",
                                  "compare:\n  n-boot: 100\n  n_boot: 200\n"])
def test_one_key_in_two_spellings_is_refused(tmp_path, text):
    """rt-hist8 F10 (rest): `sum-tol` and `sum_tol` (or a history / compare setting in both
    spellings) were taken silently, the last one winning."""
    from click.testing import CliRunner

    from evalkit.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    command = "history" if "history" in text else "compare" if "compare" in text else "evaluate"
    args = {"evaluate": ["evaluate", "x.parquet"], "history": ["history", "r1", "r2"],
            "compare": ["compare", "r1", "r2"]}[command]
    r = CliRunner().invoke(main, [*args, "--config", str(cfg)])
    assert r.exit_code == 2 and "one key in two spellings" in r.output, r.output


@pytest.mark.parametrize(("name", "text"), [
    ("c.yaml", "history:\n  min-change-pct: 50\n  min_change_pct: 0\n"),
    ("c.toml", "[history]\nmin-change-pct = 50\nmin_change_pct = 0\n"),
    ("c.yaml", "gates:\n  max-drift: 1\n  max_drift: 2\n"),
    ("c.toml", "[gates.groups.region]\nmin-count = 1\nmin_count = 2\n"),
])
def test_one_key_in_two_spellings_inside_a_section_is_refused_when_the_file_is_read(tmp_path, name, text):
    """rt-final8 F10 (related), F11: a key given twice in two spellings inside `history:` (YAML,
    TOML `[history]`) or `gates:` kept the last one silently for every command but history;
    now the file is refused when it is read, naming it, as at the top level."""
    cfg = tmp_path / name
    cfg.write_text(text)
    with pytest.raises(E.ConfigError, match=rf"{name}: .*are one key in two spellings; give it once"):
        EvalConfig.from_file(cfg)


def test_a_config_grouping_column_holding_a_comma_is_refused(tmp_path):
    """by: [["x,y"]] in a config file or mapping goes through the same check as by= in
    Python (one home: config.parse_groupings); it was accepted from a config."""
    import pandas as pd

    import evalkit
    from evalkit.errors import ConfigError

    cfg = tmp_path / "c.yaml"
    cfg.write_text('by: [["x,y"]]\n')
    df = pd.DataFrame({"prob": [0.3, 0.6], "label": [0, 1], "x,y": ["a", "b"]})
    for config in (str(cfg), {"by": [["x,y"]]}):
        with pytest.raises(ConfigError, match="group column 'x,y' holds a comma"):
            evalkit.evaluate(df, config=config, plots=False)


def test_yaml_key_on_is_the_join_key_not_a_boolean(tmp_path):
    """YAML 1.1 (PyYAML) reads a plain `on:` key as True, so `on: [id]` was "unknown config
    key True" (helper outs2's finding); a key is a name. Values keep their meaning."""
    from evalkit.config import EvalConfig

    f = tmp_path / "c.yaml"
    f.write_text("input: x.parquet\non: [id]\nplots: no\n")
    cfg = EvalConfig.from_file(f)
    assert cfg.on == ["id"] and cfg.plots is False
