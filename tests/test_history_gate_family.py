"""Issue 17 red team: the history drift gate controls its family of groups (Holm), change
scan splits at both ends of the window, gate messages show differing numbers apart."""

from __future__ import annotations

from statistics import NormalDist
from types import SimpleNamespace

import numpy as np
import pandas as pd

from evalkit.gates import GateFailure, check_history_gates, holm

CONF = 0.95
Z = NormalDist().inv_cdf(0.5 + CONF / 2)
GATES = {"max_drift_pct": 5, "require_ci_excludes_zero": True}


def _trend(rng: np.random.Generator, n_groups: int, shift: np.ndarray | None = None) -> pd.DataFrame:
    """One grouping's trend on a stable series: latest and reference run means of each group
    drawn around the same level with their standard errors (what history's trend holds)."""
    mu, sem = 0.3, 0.015
    ref = rng.normal(mu, sem, n_groups)
    latest = rng.normal(mu, sem, n_groups) + (0 if shift is None else shift)
    se = np.sqrt(2) * sem
    drift = latest - ref
    return pd.DataFrame({"g": [f"g{i}" for i in range(n_groups)], "latest": latest, "reference": ref,
                         "latest_count": 1000, "reference_count": 1000, "drift": drift,
                         "drift_pct": 100 * drift / ref, "drift_ci_low": drift - Z * se,
                         "drift_ci_high": drift + Z * se, "changed": False, "direction": "",
                         "change_pct": np.nan})


def _result(trends: dict[str, pd.DataFrame]) -> SimpleNamespace:
    meta = {"settings": {"lookback": 7, "min_before": 3, "confidence": CONF},
            "series_runs": {g: 14 for g in trends}}
    return SimpleNamespace(trends=trends, metadata=meta)


def _night(seed: int, shift: np.ndarray | None = None) -> list[GateFailure]:
    rng = np.random.default_rng(seed)
    trends = {"g": _trend(rng, 20, shift), "overall": _trend(rng, 1).drop(columns="g")}
    return [f for f in check_history_gates(_result(trends), GATES) if f.failed]


def test_stable_series_fails_at_most_the_configured_rate_of_nights():
    """21 groups of a stable series, 4000 nights: the share of nights the drift gate fails
    stays at or below (1 - confidence) / 2 (the one-sided rise at the interval's level) plus
    three binomial standard errors; per group at 95% (the old gate) fails ~1 night in 5."""
    nights = 400
    failed = sum(bool(_night(seed)) for seed in range(nights))
    level = (1 - CONF) / 2
    assert failed / nights <= level + 3 * np.sqrt(level * (1 - level) / nights)
    # the same nights gated group by group (interval above zero, no family) fail far more often
    naive = 0
    for seed in range(nights):
        rng = np.random.default_rng(seed)
        frames = [_trend(rng, 20), _trend(rng, 1)]
        naive += any(((f["drift_ci_low"] > 0) & (f["drift_pct"] > 5)).any() for f in frames)
    assert naive / nights > 0.1


def test_a_real_rise_still_fails_and_says_how_it_was_tested():
    shift = np.zeros(20)
    shift[3] = 0.15  # +50%
    fails = _night(1, shift)
    assert [(f.gate, f.group) for f in fails] == [("max_drift_pct", "g3")]
    assert "Holm-adjusted p" in fails[0].detail and "over 21 drift tests" in fails[0].detail


def test_holm_matches_the_step_down_by_hand():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4*0.005, 3*0.01, 2*0.03, 1*0.04 -> running max
    np.testing.assert_allclose(holm(p), [0.03, 0.06, np.nan, 0.06, 0.02], rtol=1e-12)
    assert np.isnan(holm(np.array([np.nan]))).all()
    assert holm(np.array([0.9, 0.8])).max() == 1.0


def test_gate_message_shows_the_difference_between_close_numbers():
    f = GateFailure("max_drift_pct", "class", "neutral", 17.52721234, 17.5272, "d")
    text = str(f)
    obs, lim = text.split("observed ")[1].split(" (")[0].split(" > limit ")
    assert obs != lim and obs.startswith("17.52721") and lim == "17.5272%"
    assert "observed 0.2 > limit 0.1" in str(GateFailure("max_drift", "o", "", 0.2, 0.1))
    tiny = GateFailure("max_drift", "o", "", 0.1 + 1e-16, 0.1)
    assert str(tiny).split("observed ")[1].split(" > ")[0] != "0.1"


def test_change_scan_finds_a_step_at_either_end_of_the_window():
    """Window of 6 runs (repro_R2: --window 6): a step one run after the window start (split
    1 | 5) is found like a step at the latest run (5 | 1); both splits are candidates."""
    from evalkit.trend import detect_changes

    rng = np.random.default_rng(3)
    base = 0.3 + rng.normal(0, 0.002, (6, 2))
    early, late = base.copy(), base.copy()
    early[1:, :] += 0.14  # the new level from window row 1 on
    late[5:, :] += 0.14  # only the latest run
    sem = np.full((6, 2), 0.004)
    for x, k in ((early, 1), (late, 5)):
        scan = detect_changes(x, sem, min_before=3)
        assert list(scan.k) == [k, k]
        assert (scan.candidates == 5).all() and (scan.p < 0.01).all()
    # mirrored in time, the same series gives the same statistic at the mirrored split
    a, b = detect_changes(early, sem), detect_changes(early[::-1].copy(), sem)
    assert list(b.k) == [5, 5]
    np.testing.assert_allclose(np.abs(a.t), np.abs(b.t), rtol=1e-12)
    # too short for min_before on either side: no candidate
    assert (detect_changes(base[:3], sem[:3], min_before=3).candidates == 0).all()


def _night_reports(root, eps_of, latam_of):
    from .test_history import DAY0, _stats, make_report

    rng = np.random.default_rng(7)
    for r, eps in enumerate(eps_of):
        means = 0.3 + rng.standard_normal(4) * 0.002
        means[2] = latam_of(r) + rng.standard_normal() * 0.002
        df = _stats({"region": ["APAC", "EU", "LATAM", "US"]}, means, 1500, 0.6)
        make_report(root, f"n{r:02d}", DAY0 + pd.Timedelta(days=r), {"region": df}, eps=eps)


def test_one_mismatched_night_does_not_hide_a_standing_regression(tmp_path):
    """repro_O: 14 nights, LATAM +48% from night 11 on; night 15 evaluated with eps 1e-6 once,
    night 16 with the usual eps again: night 16 is compared with nights 1-14 (its segment),
    the odd night stepped over, and the drift gate fails on LATAM."""
    from evalkit.trend import history

    eps = [1e-7] * 14 + [1e-6, 1e-7]
    _night_reports(tmp_path, eps, lambda r: 0.3 if r < 10 else 0.444)
    gates = {"max_drift_pct": 15, "max_change_pct": 10}
    res = history(str(tmp_path / "n*"), lookback=7, gates=gates)
    assert res.runs["segment"].tolist() == [1] * 14 + [2, 1]
    assert "back to segment 1 (eps 1e-06 -> 1e-07)" in res.runs.loc[15, "note"]
    tr = res.trends["region"].set_index("region")
    assert tr.loc["LATAM", "runs"] == 15  # nights 1-14 and 16
    failed = {(f.gate, f.group) for f in res.failures}
    assert ("max_drift_pct", "LATAM") in failed and ("max_change_pct", "LATAM") in failed
    assert "back to segment 1" in res.to_markdown()
    # the odd night itself: nothing comparable, every history gate says so (never a silent pass)
    import shutil

    shutil.rmtree(tmp_path / "n15")
    odd = history(str(tmp_path / "n*"), lookback=7, gates=gates)
    notes = odd.unchecked
    assert {f.gate for f in notes} >= {"max_drift_pct", "max_change_pct"}
    assert all("1 run(s) in the series" in f.detail for f in notes if f.grouping == "region")


def test_a_shared_config_with_no_gate_the_command_checks_says_so():
    import warnings

    import pytest

    from evalkit.errors import EvalkitWarning
    from evalkit.gates import gates_for

    with pytest.warns(EvalkitWarning, match="holds no gate that history checks .*max_regression"):
        assert gates_for("history", {"max_regression": 0.01}, shared=True) == {}  # nothing to check
    with pytest.warns(EvalkitWarning, match="no gate that compare checks .*max_drift_pct"):
        gates_for("compare", {"groups": {"region": {"max_drift_pct": 5}}, "min_count": 3}, shared=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gates_for("history", {"max_regression": 0.01, "max_drift": 0.1}, shared=True)  # one it checks
    with pytest.warns(EvalkitWarning, match=r"holds no gate, only settings of gates \(min_count\), so history "
                                            "checks nothing"):
        assert gates_for("history", {"min_count": 10}, shared=True) == {}  # options only: no gate at all


def test_evaluate_says_so_too_when_a_shared_config_holds_no_evaluate_gate(tmp_path):
    """evaluate reads the same shared ``gates:`` as compare and history: the same note, in the
    same words, when none of them is a gate evaluate checks (CLI under -q, and the library);
    no note when one is, or when the gates are options only."""
    import warnings

    import numpy as np
    import pandas as pd
    import pytest
    from click.testing import CliRunner

    import evalkit
    from evalkit.cli import main
    from evalkit.errors import EvalkitWarning
    from evalkit.gates import gates_for

    p = np.linspace(0.3, 0.9, 50)
    df = pd.DataFrame({"id": range(50), "prob_a": p, "prob_b": 1 - p, "label": "a"})
    df.to_parquet(tmp_path / "p.parquet")
    only_others = {"max_regression": 0.01, "groups": {"class": {"max_drift_pct": 5}}}
    with pytest.warns(EvalkitWarning) as expected:
        gates_for("evaluate", only_others, shared=True)
    (note,) = [str(w.message) for w in expected]
    assert note.startswith("note: gates holds no gate that evaluate checks (max_drift_pct, max_regression: "
                           "checked by compare and history); evaluate checks ")
    assert "max_mean_loss" in note and "min_accuracy" in note
    with pytest.warns(EvalkitWarning) as got:
        res = evalkit.evaluate(df, config={"gates": only_others})
    assert [str(w.message) for w in got if isinstance(w.message, EvalkitWarning)] == [note]
    assert res.gate_failures == []
    cfg = tmp_path / "c.yaml"
    cfg.write_text("gates:\n  max_regression: 0.01\n  groups:\n    class:\n      max_drift_pct: 5\n")
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--config", str(cfg),
                                  "--out", str(tmp_path / "rep"), "--format", "none", "-q", "--no-plots"])
    assert r.exit_code == 0, r.output
    assert r.stderr.count("warning: " + note.removeprefix("note: ")) == 1  # one prefix, not "warning: note:"
    # one evaluate gate among them: nothing to say (options only: tests/test_gates.py)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvalkitWarning)
        evalkit.evaluate(df, config={"gates": {**only_others, "max_mean_loss": 5.0}})


# -- max_change_pct: the family of groups across groupings (Holm) -------------------------------

CHANGE_GATES = {"max_change_pct": 0}
ALPHA = 0.05


def _change_trend(name: str, p: np.ndarray, up: np.ndarray, pct: float = 20.0) -> pd.DataFrame:
    """One grouping's trend as the gate sees it: each group's change-scan p-value, flagged
    by Benjamini-Hochberg within the grouping (as history flags), its direction."""
    from evalkit.inference import benjamini_hochberg

    q, _ = benjamini_hochberg(p)
    changed = q <= ALPHA
    n = len(p)
    return pd.DataFrame({name: [f"k{i}" for i in range(n)], "latest": 0.3, "reference": 0.3,
                         "latest_count": 1000, "reference_count": 1000, "drift": 0.0, "drift_pct": 0.0,
                         "drift_ci_low": -0.01, "drift_ci_high": 0.01, "changed": changed,
                         "direction": np.where(changed, np.where(up, "up", "down"), ""),
                         "change_pct": np.where(up, pct, -pct), "before": 0.3, "after": 0.36,
                         "change_run": 20, "q_value": q, "p_value": p})


def _change_result(trends: dict[str, pd.DataFrame]) -> SimpleNamespace:
    meta = {"settings": {"lookback": 7, "min_before": 3, "confidence": CONF, "alpha": ALPHA},
            "series_runs": {g: 30 for g in trends}}
    return SimpleNamespace(trends=trends, metadata=meta)


def test_change_gate_on_stable_nights_fails_at_most_alpha_over_all_groupings():
    """10 groupings x 20 groups of stable series, 400 nights, with valid p-values (uniform
    under no change): the change gate fails at most alpha of the nights (+ 3 binomial SE);
    gating each grouping's Benjamini-Hochberg flags alone (the gate before) fails on far more."""
    nights, failed, naive = 400, 0, 0
    for seed in range(nights):
        rng = np.random.default_rng(seed)
        trends = {f"t{k}": _change_trend(f"t{k}", rng.uniform(size=20), rng.uniform(size=20) < 0.5)
                  for k in range(10)}
        failed += any(f.failed for f in check_history_gates(_change_result(trends), CHANGE_GATES))
        naive += any((t["changed"] & (t["direction"] == "up")).any() for t in trends.values())
    assert failed / nights <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / nights)
    assert naive / nights > 0.15


def test_change_gate_on_simulated_stable_series_through_the_scan():
    """The same with history's own change scan (detect_changes on 30 stable runs of 8
    groupings x 20 groups, flagged as history flags them): at most alpha of the nights fail."""
    from evalkit.trend import detect_changes

    nights, failed = 200, 0
    for seed in range(nights):
        rng = np.random.default_rng(10_000 + seed)
        trends = {}
        for k in range(8):
            x = 0.3 + rng.standard_normal((30, 20)) * 0.015
            scan = detect_changes(x, np.full((30, 20), 0.015), min_before=3)
            trends[f"t{k}"] = _change_trend(f"t{k}", scan.p, scan.after > scan.before)
        failed += any(f.failed for f in check_history_gates(_change_result(trends), CHANGE_GATES))
    assert failed / nights <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / nights)


def test_a_real_shift_still_fails_the_change_gate_and_says_how_it_was_tested():
    rng = np.random.default_rng(4)
    p = rng.uniform(0.2, 1, 20)
    p[5] = 1e-6  # a real step
    p[9] = 0.002  # flagged within its grouping (q = 0.02), not significant over 100 tests
    up = np.ones(20, dtype=bool)
    trends = {"t0": _change_trend("t0", p, up),
              **{f"t{k}": _change_trend(f"t{k}", rng.uniform(0.2, 1, 20), up) for k in range(1, 5)}}
    assert trends["t0"]["changed"].tolist().count(True) == 2
    fails = [f for f in check_history_gates(_change_result(trends), CHANGE_GATES) if f.failed]
    assert [(f.gate, f.grouping, f.group) for f in fails] == [("max_change_pct", "t0", "k5")]
    assert "Holm-adjusted p = 0.0001 over 100 change tests" in fails[0].detail
    # a grouping the gate does not check (per-grouping gates) is not part of the family
    gates = {"groups": {"t0": {"max_change_pct": 0}}}
    fails = [f for f in check_history_gates(_change_result(trends), gates) if f.failed]
    assert [f.group for f in fails] == ["k5", "k9"] and "over 20 change tests" in fails[1].detail


# -- every history gate says when it checked nothing (fix6; rt-hist F1, F2) -------------------

def _region_runs(tmp_path, last_without: str | None = None, nights: int = 4) -> list[str]:
    import time

    import evalkit

    rng = np.random.default_rng(11)
    out = []
    for k in range(nights):
        n = 200
        p = rng.uniform(0.3, 0.9, n)
        df = pd.DataFrame({"id": range(n), "prob_a": p, "prob_b": 1 - p, "label": "a",
                           "region": rng.choice(["x", "y", "z"], n)})
        if last_without is not None and k == nights - 1:
            df.loc[df["region"] == last_without, "region"] = "new"
        evalkit.evaluate(df, by=["region"], plots=False).write(tmp_path / f"n{k}")
        out.append(str(tmp_path / f"n{k}"))
        time.sleep(0.01)
    return out


def test_a_group_absent_from_the_latest_run_is_not_checked_by_any_history_gate(tmp_path):
    """rt-hist F2: a region with no rows tonight passed every history gate without a word, even
    with fail_unchecked: true, while a new region was reported."""
    from evalkit import history

    runs = _region_runs(tmp_path, last_without="y")
    gates = {"groups": {"region": {"max_drift_pct": 1000, "max_change_pct": 1000, "max_mean_loss": 100}}}
    res = history(runs, lookback=1, gates=gates, plots=False)
    gone = sorted(f.gate for f in res.unchecked if f.group == "y")
    assert gone == ["max_change_pct", "max_drift_pct", "max_mean_loss"], res.unchecked
    assert all("no rows in the latest run" in f.detail for f in res.unchecked if f.group == "y")
    assert res.failures == []
    strict = history(runs, lookback=1, gates={**gates, "fail_unchecked": True}, plots=False)
    assert {f.gate for f in strict.failures if f.group == "y"} == set(gone)


def test_a_history_gate_whose_min_count_leaves_no_group_is_not_checked(tmp_path):
    """rt-hist F1: min_count above every group's count made a live gate pass over nothing."""
    from click.testing import CliRunner

    from evalkit import history
    from evalkit.cli import main

    runs = _region_runs(tmp_path)
    for gate, limit in (("max_drift", -1), ("max_change_pct", -1), ("max_mean_loss", 0)):  # each would fail
        res = history(runs, lookback=1, plots=False,
                      gates={"groups": {"region": {gate: limit, "min_count": 100000}}})
        (note,) = [f for f in res.unchecked if f.grouping == "region"]
        assert note.gate == gate and "min_count 100000 leaves no group of 'region' to check" in note.detail
        assert res.failures == []
    cfg = tmp_path / "g.yaml"
    cfg.write_text("gates: {groups: {region: {max_drift: -1, min_count: 100000}}, fail_unchecked: true}\n")
    r = CliRunner().invoke(main, ["history", *runs, "--lookback", "1", "--config", str(cfg), "--no-plots",
                                  "--format", "none"])
    assert r.exit_code == 5 and "leaves no group of 'region' to check" in r.stderr, r.output
    assert "all gates passed" not in r.stderr
    # a reachable min_count: the gate is live, nothing is noted
    res = history(runs, lookback=1, plots=False, gates={"groups": {"region": {"max_drift": 1.0, "min_count": 10}}})
    assert res.unchecked == [] and res.failures == []
