"""evalkit.gates: evaluate gates and compare gates, pass / fail at the boundary."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import ConfigError
from evalkit.gates import LIMIT_RTOL, GateFailure, check_compare_gates, check_gates, validate_gates


def below(x: float, toward: float) -> float:
    """The nearest limit a gate tells apart from ``x``, on the side of ``toward``: a value
    within 1e-9 (relative) of its limit is equal to it (gates.LIMIT_RTOL)."""
    step = 2 * LIMIT_RTOL * abs(x)
    return x - step if toward < x else x + step


def eval_result():
    overall = pd.Series({"count": 100, "mean": 0.5, "clipped_low": 2, "clipped_high": 50, "accuracy": 0.8},
                        dtype=object)
    region = pd.DataFrame({"region": ["EU", "US", "XX"], "count": [60, 39, 1],
                           "mean": [0.4, 0.65, 9.0], "clipped_low": [0, 2, 1], "clipped_high": [30, 20, 0],
                           "accuracy": [0.9, 0.7, 0.0]})
    return SimpleNamespace(overall=overall, groups={"region": region})


@pytest.mark.parametrize(("gate", "value"), [("max_mean_loss", 0.5), ("max_clipped_fraction", 0.02),
                                             ("min_accuracy", 0.8)])
def test_evaluate_gates_boundary(gate, value):
    r = eval_result()
    assert check_gates(r, {gate: value}) == []  # equal to the limit passes
    tighter = below(value, -1.0) if gate.startswith("max") else below(value, 2.0)
    [f] = check_gates(r, {gate: tighter})
    assert (f.gate, f.grouping, f.group, f.observed, f.limit) == (gate, "overall", "", value, tighter)


def test_evaluate_group_gates_and_min_count():
    r = eval_result()
    fs = check_gates(r, {"groups": {"region": {"max_mean_loss": 0.65}}})
    assert [f.group for f in fs] == ["XX"]  # US at the limit passes; XX (1 row) is gated
    fs = check_gates(r, {"min_count": 2, "groups": {"region": {"max_mean_loss": 0.6}}})
    assert [(f.group, f.observed) for f in fs] == [("US", 0.65)]
    assert str(fs[0]) == "max_mean_loss region[US]: observed 0.65 > limit 0.6 (n 39)"
    fs = check_gates(r, {"groups": {"region": {"min_accuracy": 0.75, "min_count": 50}}})
    assert fs == []  # only EU has >= 50 rows
    # compare-only keys are ignored by evaluate; an 'overall' entry works too
    assert check_gates(r, {"max_regression": 0.0, "groups": {"overall": {"max_mean_loss": 0.5},
                                                             "split": {"max_regression": 0.1}}}) == []
    with pytest.raises(ConfigError, match="no grouping 'nope'"):
        check_gates(r, {"groups": {"nope": {"max_mean_loss": 1}}})


def cmp_result(rows):
    cols = ["region", "baseline_count", "candidate_count", "baseline_mean", "candidate_mean", "delta",
            "rel_delta", "ci_low", "ci_high", "method", "status", "n_paired", "ci_method"]
    recs = []
    for region, nb, nc, mb, mc, lo, hi in rows:
        d = mc - mb if not (math.isnan(mb) or math.isnan(mc)) else math.nan
        method = "missing" if math.isnan(d) else "paired"
        recs.append([region, nb, nc, mb, mc, d, d / mb if mb == mb else math.nan, lo, hi, method,
                     "unchanged", 0, "t"])
    region = pd.DataFrame(recs, columns=cols)
    overall = region.iloc[:1].drop(columns="region").assign(delta=0.0, rel_delta=0.0)
    return SimpleNamespace(tables={"overall": overall, "region": region}, candidate=None)


REGIONS = [
    ("EU", 500, 500, 0.5, 0.75, 0.1, 0.4),        # delta 0.25, +50%, CI above 0
    ("US", 500, 400, 0.5, 0.625, -0.01, 0.26),   # delta 0.125, +25%, CI includes 0
    ("small", 10, 500, 0.5, 1.5, 0.5, 1.5),        # big but only 10 rows in the baseline
    ("gone", 300, 0, 0.5, math.nan, math.nan, math.nan),  # only in the baseline
]


def cmp_fail(r, gates):
    """The gates that failed (not those that could not be checked)."""
    return [f for f in check_compare_gates(r, gates) if f.failed]


def test_max_regression_boundary():
    r = cmp_result(REGIONS)
    assert [f.group for f in cmp_fail(r, {"max_regression": 0.25, "min_count": 11})] == []
    fs = cmp_fail(r, {"max_regression": below(0.25, 0), "min_count": 11})
    assert [(f.gate, f.grouping, f.group, f.observed) for f in fs] == [
        ("max_regression", "region", "EU", 0.25)]
    # the nearest limit below 0.25 prints with the digits that show it (not "0.25 > limit 0.25")
    assert str(fs[0]).startswith("max_regression region[EU]: observed 0.25 > limit 0.249999999 (baseline 0.5 -> "
                                 "candidate 0.75, n 500/500, paired CI [0.1, 0.4])")


def test_max_regression_pct_boundary_and_percent_string():
    r = cmp_result(REGIONS)
    assert cmp_fail(r, {"max_regression_pct": 50, "min_count": 11}) == []
    fs = cmp_fail(r, {"max_regression_pct": below(50.0, 0), "min_count": 11})
    assert [(f.group, f.observed) for f in fs] == [("EU", 50.0)]
    assert "observed 50% > limit 49.9999999%" in str(fs[0])
    fs = cmp_fail(r, {"max_regression": "24.9%", "min_count": 11})
    assert [(f.gate, f.group) for f in fs] == [("max_regression_pct", "EU"), ("max_regression_pct", "US")]


def test_require_ci_excludes_zero_and_min_count():
    r = cmp_result(REGIONS)
    fs = cmp_fail(r, {"max_regression": 0.1})
    assert [f.group for f in fs] == ["EU", "US", "small"]  # 'gone' is never gated: it is not checked
    (gone,) = [f for f in check_compare_gates(r, {"max_regression": 0.1}) if not f.failed]
    assert (gone.group, gone.gate) == ("gone", "max_regression")
    assert "rows in the baseline only (300 rows; none in the candidate)" in gone.detail
    strict = check_compare_gates(r, {"max_regression": 0.1, "fail_unchecked": True})
    assert [f.group for f in strict if f.failed] == ["gone", "EU", "US", "small"]
    (none_left,) = [f for f in check_compare_gates(r, {"max_regression": 0.1, "min_count": 501}) if f.group == ""
                    and f.grouping == "region"]
    assert "min_count 501 leaves no group of 'region' to check" in none_left.detail and not none_left.failed
    fs = cmp_fail(r, {"max_regression": 0.1, "require_ci_excludes_zero": True})
    assert [f.group for f in fs] == ["EU", "small"]  # US: CI includes zero
    fs = cmp_fail(r, {"max_regression": 0.1, "min_count": 400})
    assert [f.group for f in fs] == ["EU", "US"]  # min over both runs: US has 400 -> gated
    fs = cmp_fail(r, {"max_regression": 0.1, "min_count": 401})
    assert [f.group for f in fs] == ["EU"]
    nan_ci = cmp_result([("EU", 500, 500, 0.5, 0.75, math.nan, math.nan)])
    assert cmp_fail(nan_ci, {"max_regression": 0.1, "require_ci_excludes_zero": True}) == []


def test_per_grouping_overrides():
    r = cmp_result(REGIONS)
    gates = {"max_regression": 0.01, "min_count": 11,
             "groups": {"region": {"max_regression": 0.2, "require_ci_excludes_zero": True}}}
    assert [f.group for f in cmp_fail(r, gates)] == ["EU"]
    with pytest.raises(ConfigError, match="no grouping 'class'"):
        cmp_fail(r, {"groups": {"class": {"max_regression": 0.1}}})


def test_validate_gates_rejects_typos_and_bad_values():
    with pytest.raises(ConfigError, match=r"unknown gate 'max_regresion'.*did you mean 'max_regression'"):
        validate_gates({"max_regresion": 0.1})
    with pytest.raises(ConfigError, match="unknown gate 'max_regression_percent'"):
        validate_gates({"max_regression_percent": 5})
    with pytest.raises(ConfigError, match="must be a number"):
        validate_gates({"max_mean_loss": "high"})
    with pytest.raises(ConfigError, match="true or false"):
        validate_gates({"require_ci_excludes_zero": "yes"})
    with pytest.raises(ConfigError, match="min_count"):
        validate_gates({"min_count": 2.5})
    with pytest.raises(ConfigError, match="unknown gate 'groups'"):
        validate_gates({"groups": {"region": {"groups": {}}}})
    validate_gates({"max_regression": "5%", "groups": {"split,region": {"min_count": 3}}})


@pytest.mark.parametrize(("gates", "message"), [
    ({"max_clipped_fraction": 5}, r"gate 'max_clipped_fraction' must be in \[0, 1\], got 5 \(a fraction: 5% is 0.05\)"),
    ({"min_accuracy": 90}, r"gate 'min_accuracy' must be in \[0, 1\], got 90 \(a fraction: 90% is 0.9\)"),
    ({"groups": {"region": {"min_accuracy": -0.1}}}, r"gates.groups.region: gate 'min_accuracy' must be in \[0, 1\]"),
    ({"max_mean_loss": -1}, r"gate 'max_mean_loss' must be >= 0, got -1"),
])
def test_a_limit_no_value_can_cross_is_refused(gates, message):
    """rt-eval8 F9: ``max_clipped_fraction: 5`` (5% meant) could never fail, ``min_accuracy: 90``
    never pass, silently. The limits of a fraction, an accuracy and a mean loss are checked;
    the edges stay valid, and a negative regression / drift limit (must improve) too."""
    with pytest.raises(ConfigError, match=message):
        validate_gates(gates)
    validate_gates({"max_clipped_fraction": 0, "min_accuracy": 1, "max_mean_loss": 0, "max_regression": -0.1,
                    "max_drift": -1, "groups": {"region": {"max_clipped_fraction": 1, "min_accuracy": 0}}})


@pytest.mark.parametrize("yaml", [
    # rt-eval8 F10: a grouping with every gate commented out (YAML null) was exit 2 "gates of
    # grouping 'region' must be a mapping", while ``region: {}`` checked nothing with a note
    "gates:\n  groups:\n    class:\n      # max_mean_loss: 0.5\n",
    # rt-final8 F8: ``groups:`` with every grouping commented out (null) was exit 2 "'groups'
    # must map grouping names to gates"
    "gates:\n  groups:\n#    class:\n#      max_mean_loss: 0.5\n",
], ids=["gates-of-a-grouping", "every-grouping"])
def test_commented_out_gates_check_nothing_like_an_empty_block(tmp_path: Path, yaml: str):
    """Gates all commented out (YAML null), of one grouping or of every grouping: nothing is
    checked, with a note, in the three commands, as an empty ``gates:`` or grouping."""
    reps = _two_reports(tmp_path)
    cfg = _write(tmp_path / "g.yaml", yaml)
    for command, r, md, gates in _each_command_written(tmp_path, reps, "--config", str(cfg)):
        assert r.exit_code == 0, (command, r.output)
        assert gates["checked"] == {} and gates["passed"] and f"so {command} checks nothing" in gates["note"]
        assert "## Gates: none checked\n" in md, command
        if "#    class" in yaml:
            assert f"warning: {cfg}: gates holds no gate" in r.stderr or "warning: gates holds no gate" in r.stderr


def test_gate_failure_str():
    assert str(GateFailure("min_accuracy", "class", "cat", 0.5, 0.8)) == \
        "min_accuracy class[cat]: observed 0.5 < limit 0.8"
    assert str(GateFailure("max_mean_loss", "overall", "", 0.7, 0.6, "candidate")) == \
        "max_mean_loss overall: observed 0.7 > limit 0.6 (candidate)"


def test_compare_checks_evaluate_gates_on_the_candidate():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 0.9, 200)
    df = pd.DataFrame({"id": range(200), "prob_a": p, "prob_b": 1 - p, "label": "a"})
    base, cand = evalkit.evaluate(df), evalkit.evaluate(df.assign(prob_a=p * 0.9, prob_b=1 - p * 0.9))
    limit = float(cand.overall["mean"])
    assert evalkit.compare(base, cand, gates={"max_mean_loss": limit}).failures == []
    res = evalkit.compare(base, cand, gates={"max_mean_loss": below(limit, 0)})
    assert ["(candidate, n 200, CI [" in str(f) for f in res.failures] == [True]


def test_evaluate_cli_exits_5_on_gate_failure(tmp_path: Path):
    p = np.linspace(0.3, 0.9, 50)
    pd.DataFrame({"id": range(50), "prob_a": p, "prob_b": 1 - p, "label": "a"}).to_parquet(tmp_path / "p.parquet")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("gates:\n  max_mean_loss: 0.1\n  max_regression: 0.01\n")
    out = tmp_path / "rep"
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--config", str(cfg),
                                  "--out", str(out), "--format", "none"])
    assert r.exit_code == 5 and (out / "summary.json").is_file()
    assert "gate failed: max_mean_loss overall: observed" in r.stderr and "> limit 0.1" in r.stderr


# -- a gates block that checks nothing says so (fix6, fault 1) --------------------------------

def test_gates_note_covers_options_only_and_other_commands_gates():
    from evalkit.gates import gates_note

    for command in ("evaluate", "compare", "history"):
        for block in ({"min_count": 10}, {"require_ci_excludes_zero": True, "fail_unchecked": False},
                      {"groups": {"region": {"min_count": 5}}}):
            note = gates_note(command, block)
            assert note is not None and f"so {command} checks nothing" in note, (command, block, note)
            assert "only settings of gates (" in note
        assert "holds no gate, so" in gates_note(command, {"groups": {"region": {}}})
        assert gates_note(command, {}) is None and gates_note(command, None) is None
        assert gates_note(command, {"max_mean_loss": 1, "min_count": 3}) is None  # every command checks it
    assert "checked by history" in gates_note("compare", {"max_drift": 0.1, "min_count": 3})
    assert gates_note("history", {"max_drift": 0.1, "min_count": 3}) is None
    assert "checked by compare" in gates_note("evaluate", {"groups": {"region": {"max_regression": 0.1}}})


def test_a_gates_block_given_to_one_command_with_no_limit_is_noted_and_checks_nothing():
    from evalkit.errors import EvalkitWarning
    from evalkit.gates import gates_for

    with pytest.warns(EvalkitWarning, match=r"compare\(gates=\.\.\.\) holds no gate, only settings"):
        assert gates_for("compare", {"min_count": 100}, shared=False, source="compare(gates=...)") == {}
    with pytest.raises(ConfigError, match="checked by history"):  # a gate of another command: an error
        gates_for("compare", {"max_drift": 0.1}, shared=False, source="compare(gates=...)")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gates_for("compare", {"min_count": 100}, shared=True, warn=False) == {}


def _two_reports(tmp_path: Path) -> list[str]:
    rng = np.random.default_rng(0)
    out = []
    for k in range(3):
        p = rng.uniform(0.2, 0.9, 120)
        df = pd.DataFrame({"id": range(120), "prob_a": p, "prob_b": 1 - p,
                           "label": rng.choice(["a", "b"], 120), "region": rng.choice(["x", "y"], 120)})
        df.to_parquet(tmp_path / f"p{k}.parquet")
        evalkit.evaluate(df, plots=False).write(tmp_path / f"r{k}")
        out.append(str(tmp_path / f"r{k}"))
    return out


COMMANDS = {
    "evaluate": lambda tmp, reps: ["evaluate", str(tmp / "p0.parquet"), "--no-plots"],
    "compare": lambda tmp, reps: ["compare", reps[0], reps[1]],
    "history": lambda tmp, reps: ["history", *reps, "--no-plots"],
}


@pytest.mark.parametrize("block", ["  min_count: 10\n", "  require_ci_excludes_zero: true\n  min_count: 5\n",
                                   "  groups:\n    class:\n      min_count: 5\n"])
def test_every_command_says_when_a_config_gates_block_checks_nothing(tmp_path: Path, block: str):
    """The fault: a ``gates:`` block of settings only (min_count...) passed with exit 0 and no
    word from evaluate, and compare / history even printed "all gates passed" over nothing."""
    import json

    reps = _two_reports(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("gates:\n" + block)
    for command, argv in COMMANDS.items():
        for quiet in ([], ["-q"]):
            r = CliRunner().invoke(main, [*argv(tmp_path, reps), "--config", str(cfg), "--format", "json", *quiet])
            assert r.exit_code == 0, (command, r.output)
            assert r.stderr.count(f"so {command} checks nothing") == 1, (command, r.stderr)
            assert "all gates passed" not in r.stderr, (command, r.stderr)
            if command == "compare":
                gates = json.loads(r.stdout)["gates"]
                assert gates["checked"] == {} and f"so {command} checks nothing" in gates["note"]
            if command == "history":
                gates = json.loads(r.stdout)["gates"]
                assert gates["checked"] == {} and f"so {command} checks nothing" in gates["note"]
            if command == "evaluate":
                (note,) = [w for w in json.loads(r.stdout)["metadata"]["warnings"] if "checks nothing" in w]
                assert f"so {command} checks nothing" in note


def test_compare_result_carries_the_note_in_json_and_markdown(tmp_path: Path):
    from evalkit.errors import EvalkitWarning

    reps = _two_reports(tmp_path)
    with pytest.warns(EvalkitWarning, match="so compare checks nothing"):
        res = evalkit.compare(reps[0], reps[1], config={"gates": {"min_count": 3}})
    assert res.gates == {} and res.passed
    assert "so compare checks nothing" in res.to_dict()["gates"]["note"]
    assert "so compare checks nothing" in res.to_markdown()
    with pytest.warns(EvalkitWarning, match="no gate that compare checks"):
        res = evalkit.compare(reps[0], reps[1], config={"gates": {"max_drift": 0.1}})
    assert res.gates == {} and "checked by history" in res.to_dict()["gates"]["note"]
    res = evalkit.compare(reps[0], reps[1], config={"gates": {"max_regression": 5.0, "min_count": 3}})
    assert res.to_dict()["gates"]["note"] is None and res.gates["max_regression"] == 5.0


@pytest.mark.parametrize(("text", "expected"), [
    ("gates:\n  window: 10\n", r"unknown gate 'window' \('window' is a setting of history, not a gate: put it "
                               r"in the 'history:' section"),
    ("gates:\n  max_regression: 0.1\n  n_boot: 500\n", r"unknown gate 'n_boot' .*'compare:' section"),
    ("gates:\n  groups:\n    region:\n      alpha: 0.1\n", r"gates.groups.region: unknown gate 'alpha'"),
    ("gates:\n  max_regresion: 0.1\n", r"unknown gate 'max_regresion' \(did you mean 'max_regression'"),
    ("history:\n  window: 10\n  gates:\n    max_drift: 0.1\n", r"'history' holds a 'gates' block"),
    ("compare:\n  gates:\n    max_regression: 0.1\n", r"'compare' holds a 'gates' block"),
])
def test_a_key_that_is_no_gate_is_the_same_config_error_in_every_command(tmp_path: Path, text: str,
                                                                         expected: str):
    import re

    reps = _two_reports(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    seen = set()
    for command, argv in COMMANDS.items():
        r = CliRunner().invoke(main, [*argv(tmp_path, reps), "--config", str(cfg), "--format", "none"])
        assert r.exit_code == 2, (command, r.output)
        assert re.search(expected, r.stderr), (command, r.stderr)
        assert "known gates: " in r.stderr or "holds a 'gates' block" in r.stderr
        seen.add(r.stderr)
    assert len(seen) == 1  # one message, whichever command reads the file


def test_settings_elsewhere_names_the_real_settings():
    from evalkit.config import COMPARE_TYPES
    from evalkit.gates import GATE_KEYS, SETTINGS_ELSEWHERE
    from evalkit.trend import DEFAULTS

    assert {k for k, v in SETTINGS_ELSEWHERE.items() if "history" in v} == set(DEFAULTS)
    assert {k for k, v in SETTINGS_ELSEWHERE.items() if "compare" in v} == set(COMPARE_TYPES) | {"confidence"}
    assert not set(SETTINGS_ELSEWHERE) & GATE_KEYS


def test_evaluate_and_history_keep_the_note_in_their_reports(tmp_path: Path):
    import json

    from evalkit.errors import EvalkitWarning

    reps = _two_reports(tmp_path)
    with pytest.warns(EvalkitWarning, match="so evaluate checks nothing") as got:
        res = evalkit.evaluate(tmp_path / "p0.parquet", config={"gates": {"min_count": 3}}, plots=False)
    assert sum("checks nothing" in str(w.message) for w in got) == 1  # once, not once per check
    assert any("so evaluate checks nothing" in str(w) for w in res.warnings)
    res.write(tmp_path / "ev")
    assert "so evaluate checks nothing" in (tmp_path / "ev" / "report.md").read_text()
    assert any("checks nothing" in w for w in json.loads((tmp_path / "ev" / "summary.json").read_text())
               ["metadata"]["warnings"])
    with pytest.warns(EvalkitWarning, match="so history checks nothing"):
        hist = evalkit.history(reps, config={"gates": {"min_count": 3}}, out=tmp_path / "h", plots=False)
    assert hist.gates == {} and "so history checks nothing" in hist.to_dict()["gates"]["note"]
    assert "so history checks nothing" in (tmp_path / "h" / "history.md").read_text()
    assert "so history checks nothing" in json.loads((tmp_path / "h" / "history.json").read_text())["gates"]["note"]


def test_compare_says_a_group_absent_from_the_candidate_was_not_checked(tmp_path: Path):
    """The compare side of rt-hist F2: a region with rows in the baseline and none in the
    candidate passed every compare gate without a word (status only_in_baseline in the table)."""
    import json

    rng = np.random.default_rng(2)
    for name in ("b", "c"):
        p = rng.uniform(0.3, 0.9, 300)
        df = pd.DataFrame({"id": range(300), "prob_a": p, "prob_b": 1 - p, "label": "a",
                           "region": rng.choice(["x", "y"], 300)})
        if name == "c":
            df["region"] = df["region"].replace("y", "x")
        evalkit.evaluate(df, by=["region"], plots=False).write(tmp_path / name)
    argv = ["compare", str(tmp_path / "b"), str(tmp_path / "c"), "--format", "json", "--max-regression", "5"]
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 0, r.output
    assert "gate not checked: max_regression region[y]: the group has rows in the baseline only" in r.stderr
    assert "all checked gates passed; 1 could not be checked" in r.stderr
    (entry,) = json.loads(r.stdout)["gates"]["not_checked"]
    assert (entry["grouping"], entry["group"]) == ("region", "y")
    # the evaluate gates compare checks on the candidate: the same
    r = CliRunner().invoke(main, [*argv[:-2], "--config", str(_write(tmp_path / "e.yaml",
                                  "gates: {groups: {region: {max_mean_loss: 100}}}\n"))])
    assert r.exit_code == 0 and "gate not checked: max_mean_loss region[y]: the group has rows in the baseline" \
        in r.stderr, r.output
    cfg = tmp_path / "g.yaml"
    cfg.write_text("gates: {fail_unchecked: true}\n")
    r = CliRunner().invoke(main, [*argv, "--config", str(cfg)])
    assert r.exit_code == 5, r.output
    assert ("gate failed: max_regression region[y]: could not be checked (the group has rows in the baseline "
            "only") in r.stderr


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("grouping", ["class", "overall"])
def test_evaluate_says_when_min_count_leaves_no_group_to_check(tmp_path: Path, strict: bool,
                                                               grouping: str) -> None:
    """evaluate, like compare and history: a gate whose min_count leaves no group of its
    grouping checked nothing, and says so (stderr even with -q, summary.json, report.md), a
    failure under fail_unchecked; before, a silent pass."""
    import json

    p = np.linspace(0.3, 0.9, 50)
    pd.DataFrame({"id": range(50), "prob_a": p, "prob_b": 1 - p, "label": "a"}).to_parquet(tmp_path / "p.parquet")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"gates:\n  fail_unchecked: {str(strict).lower()}\n  groups:\n"
                   f"    {grouping}: {{max_mean_loss: 5.0, min_count: 1000}}\n")
    out = tmp_path / "rep"
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--config", str(cfg),
                                  "--out", str(out), "--format", "none", "-q"])
    assert r.exit_code == (5 if strict else 0), r.output
    line = f"min_count 1000 leaves no group of '{grouping}' to check"
    assert ("gate failed: " if strict else "gate not checked: ") in r.stderr and line in r.stderr
    gates = json.loads((out / "summary.json").read_text())["metadata"]["gates"]
    assert gates["passed"] is (not strict)
    assert len(gates["failures" if strict else "not_checked"]) == 1
    assert gates["not_checked" if strict else "failures"] == []
    md = (out / "report.md").read_text()
    assert line in md and ("## Gates: FAILED (1)" if strict else "## Gates: passed (1 not checked)") in md
    # the same gate with a min_count some group meets is checked (and passes) as before
    cfg.write_text(f"gates:\n  groups:\n    {grouping}: {{max_mean_loss: 5.0, min_count: 10}}\n")
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--config", str(cfg),
                                  "--out", str(out), "--overwrite", "--format", "none"])
    assert r.exit_code == 0 and "not checked" not in r.stderr
    assert "## Gates: passed\n" in (out / "report.md").read_text()


_OWN = {"evaluate": {"max_mean_loss", "fail_unchecked", "groups"},
        "compare": {"max_mean_loss", "max_regression", "fail_unchecked", "groups"},
        "history": {"max_mean_loss", "max_drift", "fail_unchecked", "groups"}}
_WRITTEN = {"evaluate": ("report.md", "summary.json"), "compare": ("compare.md", "compare.json"),
            "history": ("history.md", "history.json")}


def _gates_of(command: str, out: Path) -> tuple[str, dict]:
    import json

    md, js = _WRITTEN[command]
    data = json.loads((out / js).read_text())
    return (out / md).read_text(), (data["metadata"] if command == "evaluate" else data)["gates"]


def _each_command_written(tmp_path: Path, reps: list[str], *args: str):
    """Run evaluate, compare and history (CLI, ``--out o_COMMAND``, ``--format none``, then
    ``args``); yield ``(command, click result, report Markdown, JSON gates record)``."""
    for command, argv in COMMANDS.items():
        out = tmp_path / f"o_{command}"
        r = CliRunner().invoke(main, [*argv(tmp_path, reps), "--out", str(out), "--format", "none", *args])
        # no report (the command failed): the caller's exit-code assertion says why
        yield command, r, *(_gates_of(command, out) if out.exists() else (None, None))


@pytest.mark.parametrize("strict", [False, True])
def test_the_three_reports_say_the_same_of_their_gates(tmp_path: Path, strict: bool):
    """compare.md did not list the gates it could not check (compare.json and stderr did);
    evaluate's report.md said it its own way and summary.json held another shape (strings,
    ``limits`` with every command's gates). Now one section (``## Gates``) and one JSON shape
    in the three reports, each gate not checked listed, and only the command's own gates."""
    from evalkit.escape import md_text

    reps = _two_reports(tmp_path)
    cfg = _write(tmp_path / "g.yaml", f"gates:\n  fail_unchecked: {str(strict).lower()}\n  max_mean_loss: 50\n"
                 "  max_regression: 50\n  max_drift: 50\n  groups:\n    class: {max_mean_loss: 50, min_count: 100000}\n")
    entry_keys = set()
    for command, r, md, gates in _each_command_written(tmp_path, reps, "--config", str(cfg)):
        assert r.exit_code == (5 if strict else 0), (command, r.output)
        assert set(gates) == {"checked", "note", "passed", "failures", "not_checked"}, command
        assert set(gates["checked"]) == _OWN[command] and gates["note"] is None, (command, gates["checked"])
        listed = gates["failures" if strict else "not_checked"]
        assert listed and gates["not_checked" if strict else "failures"] == [] and gates["passed"] is not strict
        entry_keys |= {frozenset(e) for e in listed}
        head = f"## Gates: FAILED ({len(listed)})\n" if strict else f"## Gates: passed ({len(listed)} not checked)\n"
        assert md.count("## Gates") == 1 and head in md, (command, md)
        for e in listed:
            assert f"- {'**FAILED**' if strict else 'not checked:'} {md_text(e['message'])}\n" in md, command
            assert (f"gate failed: {e['message']}" if strict else f"gate not checked: {e['message']}") in r.stderr
        assert ("`fail_unchecked: false`" in md) is not strict
        assert "Gates checked:\n\n```yaml\n" in md and "max_mean_loss: 50" in md
        if not strict:
            assert f"all checked gates passed; {len(listed)} could not be checked" in r.stderr, command
    assert entry_keys == {frozenset({"gate", "grouping", "group", "key", "observed", "limit", "detail", "message"})}


def test_a_gates_block_that_checks_nothing_reads_the_same_in_the_three_reports(tmp_path: Path):
    """evaluate's report.md said 'Quality gates: **all passed** (min_count 10)' under the
    warning that evaluate checks nothing; compare.md had the note among its header notes."""
    reps = _two_reports(tmp_path)
    cfg = _write(tmp_path / "g.yaml", "gates:\n  min_count: 10\n")
    for command, r, md, gates in _each_command_written(tmp_path, reps, "--config", str(cfg)):
        assert r.exit_code == 0, (command, r.output)
        assert gates["checked"] == {} and gates["passed"] and f"so {command} checks nothing" in gates["note"]
        assert "## Gates: none checked\n" in md and md.count(f"so {command} checks nothing") == 1, (command, md)
        assert "passed" not in md.split("## Gates")[1].split("\n## ")[0], command


def test_a_long_list_of_gates_not_checked_is_cut_with_a_count():
    """history.md cut its not-checked list at 50 lines without a word of the rest."""
    from evalkit.gates import MAX_GATE_LINES, gates_markdown, gates_record

    unchecked = [GateFailure("max_drift", "shop", f"k{i}", math.nan, 0.1, "absent", failed=False)
                 for i in range(MAX_GATE_LINES + 7)]
    md = "\n".join(gates_markdown(gates_record("history", {"max_drift": 0.1}, None, [], unchecked), "history.json"))
    assert md.count("- not checked: ") == MAX_GATE_LINES
    assert "- ... and 7 more (history.json)" in md and f"## Gates: passed ({MAX_GATE_LINES + 7} not checked)" in md


@pytest.mark.parametrize("text", ["gates:\n", "gates: {}\n", "gates: ~\neps: 1.0e-7\n"])
def test_an_empty_gates_key_checks_nothing_and_says_so(tmp_path: Path, text: str):
    """An empty ``gates:`` (every gate commented out in a nightly file) read like no key at
    all, without a word. Now: no gate checked, exit 0, a note on stderr (even with -q) from
    every command; flags are not a config file, so an unset flag says nothing."""
    reps = _two_reports(tmp_path)
    cfg = _write(tmp_path / "c.yaml", text)
    for command, argv in COMMANDS.items():
        r = CliRunner().invoke(main, [*argv(tmp_path, reps), "--config", str(cfg), "--format", "none", "-q"])
        assert r.exit_code == 0, (command, r.output)
        assert r.stderr.count(f"{cfg}: 'gates' is empty, so {command} checks nothing") == 1, (command, r.stderr)
        r = CliRunner().invoke(main, [*argv(tmp_path, reps), "--format", "none", "-q"])
        assert r.exit_code == 0 and "gates" not in r.stderr, (command, r.stderr)


@pytest.mark.parametrize("text", ["gates:\n", "gates: {}\n"])
def test_an_empty_gates_key_is_recorded_like_a_block_that_checks_nothing(tmp_path: Path, text: str):
    """rt-hist7 F2: the empty-block note was said on stderr only: report.md / compare.md /
    history.md had no ## Gates section and the JSON records note null, while a block of
    another command's gates shows '## Gates: none checked' with its note in the Markdown and
    ``gates.note`` in the JSON. Now recorded the same way in the three commands (once each)."""
    reps = _two_reports(tmp_path)
    cfg = _write(tmp_path / "c.yaml", text)
    for command, r, md, gates in _each_command_written(tmp_path, reps, "--config", str(cfg)):
        assert r.exit_code == 0, (command, r.output)
        note = f"note: {cfg}: 'gates' is empty, so {command} checks nothing"
        assert gates["checked"] == {} and gates["passed"] and gates["note"].startswith(note), (command, gates)
        assert "## Gates: none checked\n" in md and md.count(note) == 1, (command, md)
        # one prefix on stderr: "warning: ..." (it read "warning: note: ...")
        assert r.stderr.count("warning: " + note.removeprefix("note: ")) == 1, (command, r.stderr)
    # compare on prediction inputs evaluates them with the config: the note is compare's, once
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "p0.parquet"), str(tmp_path / "p1.parquet"),
                                  "--config", str(cfg), "--format", "none"])
    assert r.exit_code == 0 and r.stderr.count("'gates' is empty") == 1, r.stderr


def test_without_gates_the_three_json_records_have_the_same_shape(tmp_path: Path):
    """No gates at all: compare.json and history.json carry a gates record (nothing checked,
    passed), and so does evaluate's summary.json now (it had no ``metadata.gates``; rt-hist7
    F1); no report has a ## Gates section."""
    reps = _two_reports(tmp_path)
    records = {}
    for command, r, md, records[command] in _each_command_written(tmp_path, reps):
        assert r.exit_code == 0, (command, r.output)
        assert "## Gates" not in md
    assert records["evaluate"] == {"checked": {}, "note": None, "passed": True, "failures": [],
                                   "not_checked": []}
    assert records["compare"] == records["evaluate"] == records["history"]


@pytest.mark.parametrize("strict", [False, True])
def test_a_top_level_min_count_applies_to_the_overall_line_in_the_three_commands(tmp_path: Path,
                                                                                  strict: bool):
    """rt-hist7 F5: a top-level ``min_count`` above the run's row count left the top-level
    evaluate gates (overall line) checked (a failed max_mean_loss, exit 5), while the same
    gate under ``groups: overall:`` and compare's / history's own gates were 'not checked'.
    One rule now: the overall line with fewer rows is reported but not gated."""
    reps = _two_reports(tmp_path)  # 120 rows each
    cfg = _write(tmp_path / "g.yaml", f"gates:\n  min_count: 121\n  max_mean_loss: 0.01\n"
                 f"  fail_unchecked: {str(strict).lower()}\n")
    for command, r, _, gates in _each_command_written(tmp_path, reps, "--config", str(cfg)):
        assert r.exit_code == (5 if strict else 0), (command, r.output)
        assert gates["failures" if strict else "not_checked"][0]["gate"] == "max_mean_loss", command
        assert "min_count 121 leaves no group of 'overall'" in r.output, (command, r.output)
    loose = _write(tmp_path / "h.yaml", "gates:\n  min_count: 120\n  max_mean_loss: 0.01\n")
    r = CliRunner().invoke(main, [*COMMANDS["evaluate"](tmp_path, reps), "--config", str(loose),
                                  "--format", "none"])
    assert r.exit_code == 5 and "gate failed: max_mean_loss overall" in r.output  # 120 rows: gated


def _runs_with_and_without_region(tmp_path: Path) -> tuple[str, str]:
    rng = np.random.default_rng(5)
    for name, by in (("with", ["region"]), ("without", None)):
        p = rng.uniform(0.3, 0.9, 200)
        df = pd.DataFrame({"id": range(200), "prob_a": p, "prob_b": 1 - p, "label": rng.choice(["a", "b"], 200),
                           "region": rng.choice(["x", "y"], 200)})
        evalkit.evaluate(df, by=by, plots=False).write(tmp_path / name)
    return str(tmp_path / "with"), str(tmp_path / "without")


@pytest.mark.parametrize("strict", [False, True])
def test_a_gate_on_a_grouping_one_run_lacks_is_not_checked_in_compare_as_in_history(tmp_path: Path,
                                                                                    strict: bool):
    """rt-hist7 F6: compare with a gate on a grouping the baseline has and the candidate lacks
    was a usage error (exit 2), while history reports a grouping absent from the latest run as
    'not checked' (exit 0; 5 under fail_unchecked): a nightly compare step failed instead of
    reporting the gate. A compare gate on a grouping of the candidate only passed silently."""
    import json

    with_region, without = _runs_with_and_without_region(tmp_path)
    cfg = _write(tmp_path / "g.yaml", f"gates:\n  fail_unchecked: {str(strict).lower()}\n  groups:\n"
                 "    region: {max_regression: 0.01, max_mean_loss: 0.01}\n")
    r = CliRunner().invoke(main, ["compare", with_region, without, "--config", str(cfg), "--format", "json"])
    assert r.exit_code == (5 if strict else 0), r.output
    gates = json.loads(r.stdout)["gates"]
    listed = gates["failures" if strict else "not_checked"]
    assert sorted((e["gate"], e["grouping"]) for e in listed) == [("max_mean_loss", "region"),
                                                                  ("max_regression", "region")]
    assert all("the grouping is absent from the candidate (it is in the baseline only)" in e["detail"]
               for e in listed)
    assert gates["not_checked" if strict else "failures"] == []
    # the other way round: the evaluate gate is checked on the candidate, the compare gate is not
    cfg.write_text("gates:\n  groups:\n    region: {max_regression: 0.01, max_mean_loss: 100}\n")
    r = CliRunner().invoke(main, ["compare", without, with_region, "--config", str(cfg), "--format", "json"])
    assert r.exit_code == 0, r.output
    (entry,) = json.loads(r.stdout)["gates"]["not_checked"]
    assert (entry["gate"], entry["grouping"]) == ("max_regression", "region")
    assert "absent from the baseline (it is in the candidate only)" in entry["detail"]


def test_a_gate_on_a_grouping_no_run_has_stays_a_usage_error_naming_every_runs_groupings(tmp_path: Path):
    """A typo (a grouping in no input) can never be checked, whatever the night: exit 2 in
    evaluate, compare and history, naming the groupings of each input (the baseline's too)."""
    with_region, without = _runs_with_and_without_region(tmp_path)
    cfg = _write(tmp_path / "g.yaml", "gates:\n  groups:\n    regoin: {max_regression: 0.01, max_drift: 0.01}\n")
    r = CliRunner().invoke(main, ["compare", with_region, without, "--config", str(cfg), "--format", "none"])
    assert r.exit_code == 2, r.output
    assert ("gates: no grouping 'regoin' in either run; groupings are overall, class, region (baseline); "
            "overall, class (candidate)") in r.stderr
    r = CliRunner().invoke(main, ["compare", with_region, with_region, "--config", str(cfg), "--format", "none"])
    assert r.exit_code == 2 and "'regoin' in either run; groupings are overall, class, region\n" in r.stderr
    r = CliRunner().invoke(main, ["history", with_region, without, "--config", str(cfg), "--format", "none",
                                  "--no-plots"])
    assert r.exit_code == 2 and "'regoin' in any run; groupings are overall, class, region\n" in r.stderr


def _gate_reports(tmp_path: Path, weighted: bool) -> list[str]:
    """Three runs of the same 200 rows (a weight column when ``weighted``), 10 confident
    mistakes: every command's gate sees the same figures."""
    out = []
    for k in range(3):
        rng = np.random.default_rng(7)
        p = rng.uniform(0.2, 0.9, 200)
        p[:10] = 0.0  # p_true 0 for label a: clipped low
        df = pd.DataFrame({"id": range(200), "prob_a": p, "prob_b": 1 - p, "label": "a",
                           "w": rng.uniform(0.5, 2.0, 200)})
        df.to_parquet(tmp_path / f"p{k}.parquet")
        evalkit.evaluate(df, weight="w" if weighted else None, plots=False).write(tmp_path / f"r{k}")
        out.append(str(tmp_path / f"r{k}"))
    return out


@pytest.mark.parametrize("weighted", [False, True])
def test_a_failed_evaluate_gate_reads_the_same_in_the_three_commands(tmp_path: Path, weighted: bool):
    """rt-hist7 F7: history's failures of evaluate gates on the latest run said only
    '(latest run)' where evaluate gave '(n 2000, CI [...])' and compare '(candidate, n 2000,
    CI [...])'; evaluate's min_accuracy had no detail at all. One detail now: where, n (a
    weighted run: n_eff), the interval of max_mean_loss, the rows clipped low."""
    reps = _gate_reports(tmp_path, weighted)
    cfg = _write(tmp_path / "g.yaml", "gates:\n  max_mean_loss: 0.01\n  min_accuracy: 0.99\n"
                 "  max_clipped_fraction: 0.01\n")
    argv = {"evaluate": ["evaluate", str(tmp_path / "p2.parquet"), "--no-plots", *(["--weight", "w"] * weighted)],
            "compare": ["compare", reps[1], reps[2]], "history": ["history", *reps, "--no-plots"]}
    where = {"evaluate": "", "compare": "candidate, ", "history": "latest run, "}
    seen = {}
    for command, args in argv.items():
        r = CliRunner().invoke(main, [*args, "--config", str(cfg), "--format", "none"])
        assert r.exit_code == 5, (command, r.output)
        lines = sorted(line for line in r.stderr.splitlines() if line.startswith("gate failed: "))
        assert len(lines) == 3, (command, r.stderr)
        for line in lines:
            head, detail = line.split(" (", 1)
            assert detail.startswith(where[command]), (command, line)
            seen.setdefault(head, set()).add(detail[len(where[command]):])
    n = "weighted mean, n_eff " if weighted else "n 200, CI ["
    assert [next(iter(d)).startswith(n) for h, d in sorted(seen.items()) if "max_mean_loss" in h] == [True]
    assert {h.split(" ")[2]: d for h, d in seen.items() if "max_mean_loss" not in h} == \
        {"max_clipped_fraction": {"n 200, 10 clipped low)"}, "min_accuracy": {"n 200)"}}
    assert all(len(d) == 1 for d in seen.values()), seen  # the same figures in the three commands


def test_require_ci_above_limit_holds_for_the_latest_run_in_history(tmp_path: Path):
    """history read the latest run without its interval, so ``require_ci_above_limit`` had no
    effect there: a mean above the limit failed though its interval covers the limit, where
    evaluate and compare (the same run as candidate) passed."""
    reps = _gate_reports(tmp_path, False)
    mean = evalkit.evaluate(pd.read_parquet(tmp_path / "p2.parquet"), plots=False).mean
    cfg = _write(tmp_path / "g.yaml", f"gates:\n  max_mean_loss: {mean * 0.99!r}\n  require_ci_above_limit: true\n")
    for command, r, _, gates in _each_command_written(tmp_path, reps, "--config", str(cfg)):
        assert r.exit_code == 0 and gates["passed"], (command, r.output)
    cfg.write_text(f"gates:\n  max_mean_loss: {mean * 0.99!r}\n")
    for command, r, _, gates in _each_command_written(tmp_path, reps, "--config", str(cfg), "--overwrite"):
        assert r.exit_code == 5 and not gates["passed"], (command, r.output)


@pytest.mark.parametrize("block", ["  max_regression: 5\n", "  max_drift: 0.1\n", "  min_count: 5\n"])
def test_compare_of_prediction_inputs_says_its_gates_note_once(tmp_path: Path, block: str):
    """compare evaluates prediction inputs with the shared config: each side's evaluation
    also read its gates, so a compare-only block printed 'note: gates holds no gate that
    evaluate checks' twice (baseline, candidate) next to compare's own word. The gates are
    compare's: a side's evaluation checks none and says nothing of them."""
    _two_reports(tmp_path)
    cfg = _write(tmp_path / "g.yaml", "gates:\n" + block)
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "p0.parquet"), str(tmp_path / "p1.parquet"),
                                  "--config", str(cfg), "--format", "none"])
    assert r.exit_code == 0, r.output
    assert "evaluate checks" not in r.stderr and r.stderr.count("warning: gates holds no gate") == (
        block != "  max_regression: 5\n"), r.stderr


def _odd_key_reports(tmp_path: Path) -> list[str]:
    """Three runs whose ``grp`` holds the strings ``nan``, ``None``, ``""`` and a null key."""
    out = []
    for k in range(3):
        rng = np.random.default_rng(k)
        p = rng.uniform(0.2, 0.9, 400)
        grp = np.array(["nan", "None", "", None], dtype=object)[np.arange(400) % 4]
        df = pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": "a", "grp": grp})
        df.to_parquet(tmp_path / f"p{k}.parquet")
        evalkit.evaluate(df, by=["grp"], plots=False).write(tmp_path / f"r{k}")
        out.append(str(tmp_path / f"r{k}"))
    return out


def test_gate_failures_name_a_null_an_empty_and_a_nan_string_group_as_the_reports_do(tmp_path: Path):
    """rt-eval8 F6: a failed gate on the "" group read like a gate on the whole grouping
    (``grp:``), the string 'nan' and the null group both read ``grp[nan]``, and the JSON
    ``group`` held '', 'None', 'nan', 'nan'. Now the reports' key strings (fmt_key) in every
    command's stderr, Markdown and JSON, and the typed key (null for a missing key) in JSON."""
    from evalkit.escape import md_text

    reps = _odd_key_reports(tmp_path)
    cfg = _write(tmp_path / "g.yaml", "gates:\n  groups:\n    grp:\n      max_mean_loss: 0.01\n"
                 "      max_regression: -10\n      max_drift: -10\n")
    want = {'""': "", "None": "None", "nan": "nan", "∅": None}
    argv = {"evaluate": ["evaluate", str(tmp_path / "p2.parquet"), "--by", "grp", "--no-plots"],
            "compare": ["compare", reps[1], reps[2]], "history": ["history", *reps, "--lookback", "2", "--no-plots"]}
    gates_of = {"evaluate": "max_mean_loss", "compare": "max_regression", "history": "max_drift"}
    for command, args in argv.items():
        out = tmp_path / f"o_{command}"
        r = CliRunner().invoke(main, [*args, "--config", str(cfg), "--out", str(out), "--format", "none"])
        assert r.exit_code == 5, (command, r.output)
        md, gates = _gates_of(command, out)
        for gate in {"max_mean_loss", gates_of[command]}:
            entries = [e for e in gates["failures"] if e["gate"] == gate]
            assert {e["group"]: e["key"] for e in entries} == {g: {"grp": v} for g, v in want.items()}, \
                (command, gate, entries)
            for e in entries:
                assert e["message"].startswith(f"{gate} grp[{e['group']}]: observed "), e["message"]
                assert f"gate failed: {e['message']}" in r.stderr and md_text(e["message"]) in md


@pytest.mark.parametrize("gates", [{"max_drift": "10%", "max_drift_pct": 200}, {"max_drift_pct": 200, "max_drift": "10%"},
                                   {"groups": {"region": {"max_regression_pct": 500, "max_regression": "5%"}}}])
def test_one_gate_in_both_spellings_is_a_config_error_whatever_the_key_order(gates) -> None:  # type: ignore[no-untyped-def]
    """rt-hist8 F10: `max_drift: "10%"` with `max_drift_pct: 200` was resolved by key order,
    the other limit vanishing from the report."""
    from evalkit.errors import ConfigError
    from evalkit.gates import normalize_gates

    with pytest.raises(ConfigError, match="set the same gate"):
        normalize_gates(gates)


def test_a_gate_flag_replaces_the_files_gate_in_either_spelling_and_two_flags_are_refused() -> None:
    from evalkit.cli_common import gates_from_flags
    from evalkit.errors import ConfigError

    keys, limits = ("max_drift", "max_drift_pct"), ("max_drift",)
    got = gates_from_flags({"max_drift_pct": 200}, "c.yaml", {"max_drift": "10%", "max_drift_pct": None}, keys, limits)
    assert got == {"max_drift_pct": 10.0}
    got = gates_from_flags({"max_drift": "10%"}, "c.yaml", {"max_drift": None, "max_drift_pct": 200.0}, keys, limits)
    assert got == {"max_drift_pct": 200.0}
    got = gates_from_flags({"max_drift": 0.5}, "c.yaml", {"max_drift": None, "max_drift_pct": 20.0}, keys, limits)
    assert got == {"max_drift": 0.5, "max_drift_pct": 20.0}  # two different gates: both hold
    with pytest.raises(ConfigError, match="set the same gate"):
        gates_from_flags({}, None, {"max_drift": "10%", "max_drift_pct": 200.0}, keys, limits)


@pytest.mark.parametrize("top, own, fails", [(0.1, 10.0, False), (10.0, 0.1, True)])
def test_groups_overall_overrides_the_top_level_gate_for_the_overall_line(top, own, fails) -> None:  # type: ignore[no-untyped-def]
    """rt-eval8 F20: with top-level `max_mean_loss: 0.1` and `groups: overall: max_mean_loss: 1`
    both limits applied (the stricter always won); the grouping's own key overrides."""
    import numpy as np
    import pandas as pd

    import evalkit
    from evalkit.gates import check_gates

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 300)
    df = pd.DataFrame(p, columns=["prob_a", "prob_b", "prob_c"]).assign(label=rng.integers(0, 3, 300))
    result = evalkit.evaluate(df, plots=False)
    assert 0.1 < float(result.overall["mean"]) < 10.0
    failures = check_gates(result, {"max_mean_loss": top, "groups": {"overall": {"max_mean_loss": own}}})
    assert [(f.gate, f.limit) for f in failures] == ([("max_mean_loss", own)] if fails else [])




@pytest.mark.parametrize(("by", "grouping", "hint"), [
    (["--by", "split,region"], "region,split", "(the run has it as 'split,region': name it so under gates: groups:)"),
    (["--no-by-class"], "class", "(drop --no-by-class)"),
    ([], "region", "(add it with --by)"),
])
def test_a_gated_grouping_the_run_lacks_says_how_to_get_it(tmp_path: Path, by: list[str], grouping: str, hint: str):
    """rt-eval8 F10 nits: a grouping named with its columns in another order, and 'class' with
    --no-by-class, were both told to 'add it with --by'."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 0.9, 60)
    pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": "a", "split": rng.choice(["x", "y"], 60),
                  "region": rng.choice(["u", "v"], 60)}).to_parquet(tmp_path / "p.parquet")
    cfg = _write(tmp_path / "g.yaml", f'gates:\n  groups:\n    "{grouping}":\n      max_mean_loss: 5\n')
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), *by, "--config", str(cfg),
                                  "--no-plots", "--format", "none"])
    assert r.exit_code == 2 and f"gates: no grouping {grouping!r} in this run; " in r.stderr, r.output
    assert r.stderr.rstrip().endswith(hint), r.stderr


def test_a_drift_without_an_interval_says_no_ci_as_compare_does(tmp_path: Path):
    """rt-hist8 F9: history's drift detail read 'interval [nan, nan]' for a group of one row
    per run, where compare says 'no CI'. One wording: 'CI [lo, hi]' or 'no CI', never nan."""
    reps = []
    for k in range(3):
        rng = np.random.default_rng(k)
        p = rng.uniform(0.2, 0.9, 41)
        df = pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": "a", "region": ["big"] * 40 + ["tiny"]})
        evalkit.evaluate(df, by=["region"], plots=False).write(tmp_path / f"r{k}")
        reps.append(str(tmp_path / f"r{k}"))
    r = CliRunner().invoke(main, ["history", *reps, "--lookback", "2", "--max-drift", "-10", "--no-plots",
                                  "--format", "none", "--out", str(tmp_path / "h")])
    assert r.exit_code == 5, r.output
    lines = {line.split("]")[0] + "]": line for line in r.stderr.splitlines() if line.startswith("gate failed: max_drift region")}
    assert "gate failed: max_drift region[tiny]" in lines, r.stderr
    assert lines["gate failed: max_drift region[tiny]"].endswith(" over the last 2 runs, no CI)"), lines
    assert " over the last 2 runs, CI [" in lines["gate failed: max_drift region[big]"], lines
    assert "nan" not in r.stderr


def test_fail_unchecked_under_a_grouping_is_refused_not_ignored():
    """rt-final8 F7: `fail_unchecked` under `groups: region:` was accepted, listed among the
    gates checked, and ignored (only the top-level key is read)."""
    with pytest.raises(ConfigError, match="'fail_unchecked' applies to every gate"):
        validate_gates({"groups": {"region": {"max_mean_loss": 9, "fail_unchecked": True}}})
    validate_gates({"fail_unchecked": True, "groups": {"region": {"max_mean_loss": 9}}})


@pytest.mark.parametrize("strict", [False, True])
def test_require_ci_above_limit_over_groups_without_an_interval_is_not_checked(tmp_path: Path, strict: bool):
    """rt-eval8 F16: with require_ci_above_limit, groups of one row (no interval) whose mean was
    far above the limit passed silently ("Gates: passed", nothing not checked). They are
    reported as not checked now, and fail under fail_unchecked."""
    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.95, 300)
    df = pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": rng.integers(0, 2, 300),
                       "u": [f"u{i}" if i < 3 else "big" for i in range(300)]})
    src = tmp_path / "p.parquet"
    df.to_parquet(src)
    cfg = _write(tmp_path / "g.yaml", "gates:\n  require_ci_above_limit: true\n"
                 f"  fail_unchecked: {'true' if strict else 'false'}\n"
                 "  groups:\n    u:\n      max_mean_loss: 0.001\n")
    r = CliRunner().invoke(main, ["evaluate", str(src), "--by", "u", "--no-plots", "--config", str(cfg),
                                  "--out", str(tmp_path / "r"), "--format", "none"])
    import json

    gates = json.loads((tmp_path / "r" / "summary.json").read_text())["metadata"]["gates"]
    unchecked = gates["failures" if strict else "not_checked"]
    one_row = {e["group"] for e in unchecked if "needs an interval" in e["message"]}
    assert one_row == {"u0", "u1", "u2"}, unchecked
    assert r.exit_code == 5, r.output  # the 297-row group's interval lies above the limit: a failure either way
    assert "gate not checked" in r.output or strict


@pytest.mark.parametrize(("top", "own", "regions_fail"), [
    ("10%", 5, []),  # the grouping's absolute limit replaces the top-level percent one
    (0.01, "60%", []),  # and the reverse
    (0.01, "40%", ["EU"]),  # the grouping's own limit is checked: EU +50% > 40%
    ("10%", {"max_regression_pct": 60}, []),  # the other spelling of the grouping's limit too
])
def test_a_groupings_max_regression_replaces_the_top_level_one_in_either_form(top, own, regions_fail) -> None:  # type: ignore[no-untyped-def]
    """rt-final8 F3: ``max_regression: "10%"`` at the top and ``max_regression: 5`` under a
    grouping normalised to two gates (max_regression_pct, max_regression): the grouping kept
    failing the top-level 10%. Now a grouping's limit in either form replaces the top level's."""
    r = cmp_result(REGIONS)
    sub = own if isinstance(own, dict) else {"max_regression": own}
    fs = cmp_fail(r, {"max_regression": top, "min_count": 11, "groups": {"region": sub}})
    assert [(f.grouping, f.group) for f in fs] == [("region", g) for g in regions_fail]
    # the top-level limit still applies to the groupings without their own
    from evalkit.gates import normalize_gates

    if top == "10%" and own == 5:  # shown as replaced in "Gates checked" (null), accepted again
        block = normalize_gates({"max_regression": top, "groups": {"region": sub}})
        assert block == {"max_regression_pct": 10.0, "groups": {"region": {"max_regression": 5,
                                                                           "max_regression_pct": None}}}
        validate_gates(block)
        assert normalize_gates(block) == block
    # a different key as written is another gate: both apply (max_regression_pct at the top)
    assert [f.group for f in cmp_fail(r, {"max_regression_pct": 10, "min_count": 11,
                                          "groups": {"region": {"max_regression": 5}}})] == ["EU", "US"]
    assert [f.grouping for f in cmp_fail(r, {"max_regression": "-1%", "min_count": 11,
                                             "groups": {"region": sub}})] == ["overall"] + ["region"] * len(regions_fail)


@pytest.mark.parametrize(("top", "own"), [("-1000%", 5), (-10, "100000%"), (-10, 5)])
def test_a_groupings_max_drift_replaces_the_top_level_one_in_either_form(tmp_path: Path, top, own) -> None:  # type: ignore[no-untyped-def]
    """rt-final8 F3 in history: a top-level drift limit every group fails (a negative one),
    and a grouping's own loose limit in either form: that grouping passes, the others fail."""
    reps = []
    for k in range(3):
        rng = np.random.default_rng(k)
        p = rng.uniform(0.2, 0.9, 60)
        df = pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": rng.choice(["a", "b"], 60),
                           "region": rng.choice(["x", "y"], 60)})
        evalkit.evaluate(df, by=["region"], plots=False).write(tmp_path / f"r{k}")
        reps.append(str(tmp_path / f"r{k}"))
    cfg = _write(tmp_path / "g.yaml", f"gates:\n  max_drift: {top!r}\n  groups:\n    region:\n"
                                      f"      max_drift: {own!r}\n")
    r = CliRunner().invoke(main, ["history", *reps, "--lookback", "2", "--no-plots",
                                  "--format", "none", "--config", str(cfg)])
    assert r.exit_code == 5, r.output
    failed = {line.split()[3].split("[")[0].rstrip(":") for line in r.stderr.splitlines() if line.startswith("gate failed:")}
    assert failed == {"overall", "class"}, r.stderr


@pytest.mark.parametrize("where", ["top", "grouping"])
def test_gate_keys_take_dashes_like_every_config_key(tmp_path: Path, where: str) -> None:
    """rt-final8 F11: configs/README says keys take `_` or `-`; under gates: `max-drift` was
    'unknown gate'. Now one normalisation for the file, the flags and the API's gates=."""
    gates = {"max-mean-loss": 0.01} if where == "top" else {"groups": {"class": {"max-mean-loss": 0.01}}}
    df = pd.DataFrame({"prob_a": [0.2, 0.6, 0.7], "prob_b": [0.8, 0.4, 0.3], "label": ["a", "b", "a"]})
    res = evalkit.evaluate(df, gates=gates, plots=False)
    assert res.gate_failures and {f.gate for f in res.gate_failures} == {"max_mean_loss"}
    assert validate_gates({"max-drift": "10%", "fail-unchecked": True}) is None
    from evalkit.gates import normalize_gates

    assert normalize_gates({"max-drift": "10%", "groups": {"a-b": {"max-regression": 1}}}) == {
        "max_drift_pct": 10.0, "groups": {"a-b": {"max_regression": 1}}}  # a grouping's name is a column's
    (tmp_path / "p.parquet").write_bytes(b"")
    df.to_parquet(tmp_path / "p.parquet")
    cfg = _write(tmp_path / "g.yaml", "gates:\n  max-mean-loss: 0.01\n")
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--config", str(cfg), "--no-plots",
                                  "--format", "none", "--out", str(tmp_path / "o")])
    assert r.exit_code == 5 and "gate failed: max_mean_loss overall" in r.stderr, r.output


@pytest.mark.parametrize("gates", [{"max-drift": 1, "max_drift": 2}, {"groups": {"r": {"min_count": 1, "min-count": 2}}}])
def test_one_gate_key_in_two_spellings_is_refused(gates) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="are one key in two spellings"):
        validate_gates(gates)


def test_a_gated_grouping_is_named_with_spaces_as_by_accepts_it(tmp_path: Path) -> None:
    """rt-final8 F8 nit: `--by 'split, region'` is accepted, a gates grouping `"split , region"`
    was 'no grouping'; two names of one grouping are refused."""
    df = pd.DataFrame({"prob_a": [0.2, 0.6, 0.7, 0.1], "prob_b": [0.8, 0.4, 0.3, 0.9], "label": ["a", "b", "a", "b"],
                       "split": ["t", "t", "v", "v"], "region": ["x", "y", "x", "y"]})
    df.to_parquet(tmp_path / "p.parquet")
    cfg = _write(tmp_path / "g.yaml", 'gates:\n  groups:\n    "split , region":\n      max_mean_loss: 0.01\n')
    args = ["evaluate", str(tmp_path / "p.parquet"), "--by", "split, region", "--config", str(cfg), "--no-plots",
            "--format", "none", "--out", str(tmp_path / "o")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 5 and "gate failed: max_mean_loss split,region[t,x]" in r.stderr, r.output
    cfg.write_text('gates:\n  groups:\n    "split , region": {max_mean_loss: 0.01}\n    split,region: {min_count: 1}\n')
    r = CliRunner().invoke(main, [*args, "--overwrite"])
    assert r.exit_code == 2 and "'split , region' and 'split,region' name one grouping" in r.stderr, r.output


def test_a_percent_limit_that_is_no_number_names_the_key_as_written() -> None:
    """rt-final8 nits: `max_drift: "nan%"` said "gate 'max_drift_pct' must be finite" (a key the
    user did not write); "-0%" read "limit -0%" in the failure text."""
    with pytest.raises(ConfigError, match=r"gate 'max_drift' must be finite, got 'nan%'"):
        validate_gates({"max_drift": "nan%"})
    from evalkit.gates import normalize_gates

    assert str(normalize_gates({"max_regression": "-0%"})["max_regression_pct"]) == "0.0"
