"""evalkit.compare and `evalkit compare`: paired / unpaired intervals, CI coverage by
simulation, missing groups, mismatched runs, provenance, report files and gates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import CompareError, OutputExistsError
from evalkit.inference import bootstrap_means, paired_ci, t_quantile, welch_ci

DELTA = 0.1


def frame(loss: np.ndarray, ids, **cols) -> pd.DataFrame:
    """Two-class wide predictions whose per-row loss is exactly ``loss`` (label 'a')."""
    p = np.exp(-np.asarray(loss, dtype=np.float64))
    return pd.DataFrame({"id": ids, **cols, "prob_a": p, "prob_b": 1 - p, "label": "a"})


def run(df: pd.DataFrame, **kw) -> evalkit.EvalResult:
    kw.setdefault("by", [c for c in ("grp", "rep") if c in df.columns])
    return evalkit.evaluate(df, **kw)


def pair_data(n=400, seed=0, delta=DELTA):
    """Paired runs on the same ids: candidate loss = baseline loss + delta + mean-zero noise."""
    rng = np.random.default_rng(seed)
    lb = 1.0 + rng.exponential(1.0, n)
    lc = lb + delta + rng.uniform(-0.5, 0.5, n)
    grp = rng.choice(["x", "y"], n)
    return frame(lb, np.arange(n), grp=grp), frame(lc, np.arange(n), grp=grp)


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


# -- paired vs unpaired -------------------------------------------------------------------


def test_paired_when_keys_match():
    b, c = pair_data()
    res = evalkit.compare(run(b), run(c))
    assert set(res.tables) == {"overall", "class", "grp"}
    o = res.tables["overall"].iloc[0]
    assert o["method"] == "paired" and o["ci_method"] == "t" and o["n_paired"] == 400
    exact = (c.prob_a.pipe(np.log) * -1).mean() - (b.prob_a.pipe(np.log) * -1).mean()
    assert o["delta"] == pytest.approx(exact, abs=1e-9)
    assert o["rel_delta"] == pytest.approx(o["delta"] / o["baseline_mean"])
    assert o["ci_low"] < DELTA < o["ci_high"] and o["status"] == "regression"
    g = res.tables["grp"]
    assert list(g.columns[:3]) == ["grp", "baseline_count", "candidate_count"]
    assert (g["method"] == "paired").all() and g["n_paired"].sum() == 400
    assert res.metadata["pairing"]["keys"] == ["id"]


def test_unpaired_when_keys_differ_and_deterministic():
    b, c = pair_data()
    c = c.assign(id=c["id"] + 10_000)  # other rows: nothing to pair
    r1 = evalkit.compare(run(b), run(c), seed=7)
    r2 = evalkit.compare(run(b), run(c), seed=7)
    r3 = evalkit.compare(run(b), run(c), seed=8)
    o = r1.tables["overall"].iloc[0]
    assert o["method"] == "unpaired" and o["ci_method"] == "bootstrap" and o["n_paired"] == 0
    pd.testing.assert_frame_equal(r1.tables["grp"], r2.tables["grp"])
    assert r3.tables["overall"]["ci_low"].iloc[0] != o["ci_low"]


def test_paired_interval_is_narrower_than_unpaired_on_the_same_data():
    b, c = pair_data()
    rb, rc = run(b), run(c)
    paired = evalkit.compare(rb, rc).tables["overall"].iloc[0]
    unpaired = evalkit.compare(rb, rc, pair_on=[]).tables["overall"].iloc[0]
    assert unpaired["method"] == "unpaired"
    assert paired["delta"] == pytest.approx(unpaired["delta"])
    assert (paired["ci_high"] - paired["ci_low"]) < 0.5 * (unpaired["ci_high"] - unpaired["ci_low"])


def test_group_with_other_keys_is_unpaired_others_stay_paired():
    b, c = pair_data()
    ids = c["id"].to_numpy().copy()
    ids[c["grp"].to_numpy() == "y"] += 10_000
    res = evalkit.compare(run(b), run(c.assign(id=ids)))
    g = res.tables["grp"].set_index("grp")
    assert g.loc["x", "method"] == "paired" and g.loc["y", "method"] == "unpaired"
    # overall holds both: the x rows are pairs, the y rows one run's only (test_compare_partial_pairing)
    o = res.tables["overall"].iloc[0]
    assert o["method"] == "partly paired" and o["n_paired"] == g.loc["x", "n_paired"]


def test_duplicate_keys_fall_back_to_unpaired():
    b, c = pair_data(n=100)
    b = b.assign(id=np.arange(100) // 2)
    res = evalkit.compare(run(b), run(c.assign(id=np.arange(100) // 2)))
    assert set(res.tables["grp"]["method"]) == {"unpaired"}
    assert "not unique" in res.metadata["pairing"]["reason"]


def test_normal_from_stats_without_rows(tmp_path: Path):
    b, c = pair_data()
    rb, rc = run(b, write_rows=False), run(c)
    res = evalkit.compare(rb, rc)
    o = res.tables["overall"].iloc[0]
    assert o["method"] == "normal-from-stats" and o["ci_method"] == "normal"
    sb, sc = rb.overall, rc.overall
    lo, hi = welch_ci(sb["mean"], sb["std"], sb["count"], sc["mean"], sc["std"], sc["count"])
    assert (o["ci_low"], o["ci_high"]) == pytest.approx((lo, hi))
    # same from report directories written without rows.parquet
    rb.write(tmp_path / "b")
    rc.write(tmp_path / "c")
    assert not (tmp_path / "b" / "rows.parquet").exists()
    o2 = evalkit.compare(tmp_path / "b", tmp_path / "c").tables["overall"].iloc[0]
    assert o2["method"] == "normal-from-stats" and o2["ci_low"] == pytest.approx(lo)


# -- coverage by simulation ----------------------------------------------------------------


def coverage(res: evalkit.CompareResult, method: str) -> float:
    t = res.tables["rep"]
    assert (t["method"] == method).all() and len(t) == 200
    return float(((t["ci_low"] <= DELTA) & (t["ci_high"] >= DELTA)).mean())


def test_paired_ci_coverage_by_simulation():
    # 200 independent synthetic draws (one per group 'rep'), true mean delta exactly DELTA.
    rng = np.random.default_rng(2026)
    reps, n = 200, 40
    rep = np.repeat(np.arange(reps), n)
    lb = 1.0 + rng.exponential(1.0, reps * n)
    lc = lb + DELTA + rng.uniform(-0.5, 0.5, reps * n) * rng.choice([0.2, 1.0, 2.0], reps * n)
    ids = np.arange(reps * n)
    res = evalkit.compare(run(frame(lb, ids, rep=rep)), run(frame(lc, ids, rep=rep)))
    assert 0.90 <= coverage(res, "paired") <= 0.99


def test_unpaired_bootstrap_ci_coverage_by_simulation():
    rng = np.random.default_rng(7)
    reps, n = 200, 120
    rep = np.repeat(np.arange(reps), n)
    lb = 1.0 + rng.exponential(0.5, reps * n)
    lc = 1.0 + DELTA + rng.exponential(0.5, reps * n)  # independent draws: nothing to pair
    res = evalkit.compare(run(frame(lb, np.arange(reps * n), rep=rep)),
                          run(frame(lc, np.arange(reps * n) + 10**7, rep=rep)), n_boot=400)
    assert 0.90 <= coverage(res, "unpaired") <= 0.99


def test_interval_helpers():
    # Student t quantiles (tables): exact for df 1, 2; expansion for df >= 3.
    for df, q in ((1, 12.7062047), (2, 4.3026527), (3, 3.1824463), (10, 2.2281389), (100, 1.9839715)):
        assert t_quantile(0.975, df) == pytest.approx(q, rel=2e-3)
    assert all(math.isnan(v) for v in paired_ci(np.array([1.0])))
    lo, hi = paired_ci(np.array([1.0, 2.0, 3.0]))
    assert (lo + hi) / 2 == pytest.approx(2.0) and hi - lo == pytest.approx(2 * 4.3026527 / math.sqrt(3), rel=2e-3)
    # memory-bounded chunks give every resample, and bootstrap means centre on the mean
    x = np.random.default_rng(0).normal(5, 1, 500)
    means = bootstrap_means(x, 300, np.random.default_rng(1), max_cells=1000)
    assert means.shape == (300,) and abs(means.mean() - x.mean()) < 0.02


# -- groups in one run, mismatched runs ------------------------------------------------------


def test_groups_in_one_run_are_listed_not_dropped():
    b, c = pair_data()
    b = pd.concat([b, frame([1.0] * 5, range(1000, 1005), grp="only_b")], ignore_index=True)
    c = pd.concat([c, frame([1.0] * 3, range(2000, 2003), grp="only_c")], ignore_index=True)
    res = evalkit.compare(run(b), run(c), gates={"max_regression": 0.0})
    g = res.tables["grp"].set_index("grp")
    assert g.loc["only_b", "status"] == "only_in_baseline" and g.loc["only_b", "candidate_count"] == 0
    assert g.loc["only_c", "status"] == "only_in_candidate" and g.loc["only_c", "baseline_count"] == 0
    assert (g.loc[["only_b", "only_c"], "method"] == "missing").all()
    assert g.loc[["only_b", "only_c"], "delta"].isna().all()
    assert not any(f.group in ("only_b", "only_c") for f in res.failures)
    md = res.to_markdown()
    assert "only in baseline" in md and "only in candidate" in md


def test_mismatched_eps_or_classes_refused_unless_allowed():
    b, c = pair_data(n=50)
    rb = run(b)
    with pytest.raises(CompareError, match=r"eps differs: baseline 1e-07, candidate 1e-06"):
        evalkit.compare(rb, run(c, eps=1e-6))
    c3 = c.assign(prob_c=0.0)
    with pytest.raises(CompareError, match=r"class sets differ.*only in candidate: c"):
        evalkit.compare(rb, run(c3))
    res = evalkit.compare(rb, run(c, eps=1e-6), allow_mismatch=True)
    assert res.metadata["mismatches"] and "Mismatch allowed" in res.to_markdown()


def test_groupings_in_one_run_are_noted():
    b, c = pair_data(n=50)
    res = evalkit.compare(run(b), run(c, by=()))
    assert res.metadata["groupings_only_in_baseline"] == ["grp"] and "grp" not in res.tables


# -- report files, provenance --------------------------------------------------------------


def test_write_report_dirs_and_provenance(tmp_path: Path):
    b, c = pair_data()
    run(b).write(tmp_path / "base")
    run(c).write(tmp_path / "cand")
    res = evalkit.compare(tmp_path / "base", tmp_path / "cand", out=tmp_path / "cmp")
    for f in ("compare.md", "compare.json", "overall.parquet", "by_class.parquet", "by_grp.parquet"):
        assert (tmp_path / "cmp" / f).is_file(), f
    t = pd.read_parquet(tmp_path / "cmp" / "by_grp.parquet")
    assert {"delta", "ci_low", "ci_high", "method", "status"} <= set(t.columns)
    assert (t["method"] == "paired").all()
    data = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    meta = data["metadata"]
    for side in ("baseline", "candidate"):
        p = meta[side]
        assert p["kind"] == "report" and p["rows_read"] == 400 and p["rows_used"] == 400
        assert p["rows_skipped"] == 0 and p["eps"] == 1e-7 and p["engine"] == "local"
        assert p["config_hash"] and p["created"] and p["fingerprint"]
        f = {Path(x["path"]).name: x for x in p["files"]}
        assert f["rows.parquet"]["bytes"] > 0 and f["rows.parquet"]["mtime"].endswith("Z")
        assert len(f["summary.json"]["fingerprint"]) == 32
    assert meta["evalkit_version"] == evalkit.__version__ and meta["config_hash"]
    assert meta["settings"]["seed"] == 0 and meta["duration_s"] >= 0
    assert data["tables"]["grp"][0]["status"] == "regression"
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert md.index("## Regressions") < md.index("## Overall") and "▲ REGRESSION" in md
    with pytest.raises(OutputExistsError):
        res.write(tmp_path / "cmp")
    res.write(tmp_path / "cmp", overwrite=True)
    # the same run twice: identical fingerprints, nothing changes
    same = evalkit.compare(tmp_path / "base", tmp_path / "base")
    assert same.metadata["baseline"]["fingerprint"] == same.metadata["candidate"]["fingerprint"]
    assert set(same.tables["grp"]["status"]) == {"unchanged"}


def test_compare_report_is_not_an_input(tmp_path: Path):
    b, c = pair_data(n=50)
    evalkit.compare(run(b), run(c), out=tmp_path / "cmp")
    with pytest.raises(evalkit.ReportError, match="is a compare report, not an evaluate report"):
        evalkit.compare(tmp_path / "cmp", run(c))


# -- CLI ----------------------------------------------------------------------------------


@pytest.fixture
def reports(tmp_path: Path) -> tuple[Path, Path]:
    b, c = pair_data()
    run(b).write(tmp_path / "base")
    run(c).write(tmp_path / "cand")
    return tmp_path / "base", tmp_path / "cand"


def test_cli_gate_failure_writes_report_then_exits_5(reports, tmp_path: Path):
    base, cand = reports
    out = tmp_path / "cmp"
    r = cli("compare", base, cand, "--out", out, "--max-regression", "0.05", "--format", "none")
    assert r.exit_code == 5
    assert (out / "compare.md").is_file() and (out / "compare.json").is_file()
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("gate failed: ")]
    assert lines and lines[0].startswith("gate failed: max_regression overall: observed 0.")
    assert "> limit 0.05" in lines[0]
    data = json.loads((out / "compare.json").read_text())
    assert data["gates"]["passed"] is False and len(data["gates"]["failures"]) == len(lines)


def test_cli_gates_pass_and_json(reports):
    base, cand = reports
    r = cli("compare", base, cand, "--max-regression", "50%", "--min-count", "10", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["gates"]["checked"]["max_regression_pct"] == 50 and data["gates"]["passed"]
    assert "all gates passed" in r.stderr


def test_cli_config_gates_and_on_the_fly_inputs(tmp_path: Path):
    b, c = pair_data()
    b.to_parquet(tmp_path / "b.parquet")
    c.to_parquet(tmp_path / "c.parquet")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("by: [grp]\ngates:\n  max_regression: 0.5\n  groups:\n    grp: {max_regression: 0.01}\n")
    r = cli("compare", tmp_path / "b.parquet", tmp_path / "c.parquet", "--config", cfg,
            "--out", tmp_path / "cmp", "--format", "none")
    assert r.exit_code == 5
    failed = [ln for ln in r.stderr.splitlines() if ln.startswith("gate failed")]
    assert failed and all(" grp[" in ln for ln in failed)
    meta = json.loads((tmp_path / "cmp" / "compare.json").read_text())["metadata"]
    assert meta["baseline"]["kind"] == "evaluated" and meta["config_file"] == str(cfg)
    assert meta["baseline"]["files"][0]["bytes"] == (tmp_path / "b.parquet").stat().st_size


def test_cli_mismatch_exit_3_and_allow(tmp_path: Path):
    b, c = pair_data(n=50)
    run(b).write(tmp_path / "b")
    run(c, eps=1e-5).write(tmp_path / "c")
    r = cli("compare", tmp_path / "b", tmp_path / "c", "--format", "none")
    assert r.exit_code == 3 and "eps differs" in r.stderr and "--allow-mismatch" in r.stderr
    r = cli("compare", tmp_path / "b", tmp_path / "c", "--allow-mismatch", "--format", "table", "-q")
    assert r.exit_code == 0 and "by grp:" in r.stdout


def test_cli_help_has_examples():
    r = cli("compare", "--help")
    assert r.exit_code == 0 and "Examples:" in r.output and "--allow-mismatch" in r.output


def test_nightly_config_loads_and_runs(tmp_path: Path):
    root = Path(__file__).resolve().parents[1]
    cfg = evalkit.EvalConfig.from_file(root / "configs" / "nightly.yaml")
    from evalkit.gates import validate_gates

    validate_gates(cfg.gates)
    assert cfg.gates["max_regression"] and cfg.gates["groups"]["region"]["min_count"] == 300


def test_compare_prediction_inputs_take_evaluates_layout_options(tmp_path):
    """compare on two prediction files accepts the layout flags evaluate accepts (an
    unnamed list column with string labels needs --classes, as in evaluate)."""
    classes = ["cat", "dog", "eel"]
    rng = np.random.default_rng(3)
    paths = []
    for name, sharp in (("base", 1.0), ("cand", 3.0)):
        logits = rng.normal(size=(300, 3)) * sharp
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        y = rng.integers(0, 3, size=300)
        df = pd.DataFrame({"id": np.arange(300), "scores": list(p),
                           "species": np.array(classes)[y]})
        path = tmp_path / f"{name}.parquet"
        df.to_parquet(path)
        paths.append((path, p[np.arange(300), y]))
    plain = cli("compare", str(paths[0][0]), str(paths[1][0]), "--format", "json")
    assert plain.exit_code == 3  # string labels against a list column: the classes are unnamed
    res = cli("compare", str(paths[0][0]), str(paths[1][0]), "-p", "scores", "--label", "species",
              "--classes", ",".join(classes), "--format", "json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    floats = list(_floats(out))
    for _, pt in paths:  # both runs' overall mean loss, by hand
        want = float(np.mean(-np.log(np.clip(pt, 1e-7, 1 - 1e-7))))
        assert any(math.isclose(v, want, rel_tol=1e-9) for v in floats), want


def _floats(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _floats(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _floats(v)
    elif isinstance(obj, float):
        yield obj


def _binary(tmp_path: Path, name: str, reversed_: bool) -> Path:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p1 = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.1, 400), 0.01, 0.99)
    path = tmp_path / name
    pd.DataFrame({"id": np.arange(400), "label": y, "prob": 1 - p1 if reversed_ else p1}).to_parquet(path)
    return path


def test_a_side_warning_names_the_side_live_and_from_a_report(tmp_path: Path):
    """A warning raised while one side is evaluated says which side (and input) it is about,
    on stderr and in compare.md / compare.json; a report's recorded warnings are shown too."""
    ok, rev = _binary(tmp_path, "ok.parquet", False), _binary(tmp_path, "rev.parquet", True)
    with pytest.warns(evalkit.EvalkitWarning) as rec:
        res = evalkit.compare(ok, rev)
    texts = [str(w.message) for w in rec if "looks reversed" in str(w.message)]
    assert texts and all(t.startswith(f"candidate ({rev}): the binary column 'prob'") for t in texts)
    assert any(n.startswith(f"candidate ({rev}): ") for n in res.metadata["notes"])
    assert not any(n.startswith("baseline") for n in res.metadata["notes"])
    # swapped roles: the same warning now names the baseline
    with pytest.warns(evalkit.EvalkitWarning, match=rf"^baseline \({rev}\): the binary column"):
        evalkit.compare(rev, ok)
    # from report directories: the candidate report's recorded warning, named, on stderr and on file
    for src, d in ((ok, "r0"), (rev, "r1")):
        assert cli("evaluate", str(src), "--out", str(tmp_path / d), "-q").exit_code == 0
    out = cli("compare", str(tmp_path / "r0"), str(tmp_path / "r1"), "--out", str(tmp_path / "c"))
    assert out.exit_code == 0, out.output
    assert f"candidate ({tmp_path / 'r1'}): the binary column 'prob' looks reversed" in out.output
    assert "recorded when that run was evaluated" in out.output
    assert f"candidate ({tmp_path / 'r1'}): the binary column" in (tmp_path / "c" / "compare.md").read_text()


# -- advice about one side acts on that side only (fix6, fault 4) ------------------------------

def _binary_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A baseline whose ``prob`` is P(1), and a candidate whose ``prob`` holds P(0)."""
    rng = np.random.default_rng(3)
    n = 300
    y = rng.integers(0, 2, n)
    p1 = np.where(y == 1, rng.uniform(0.6, 0.95, n), rng.uniform(0.05, 0.4, n))
    base, cand = tmp_path / "base.parquet", tmp_path / "cand.parquet"
    pd.DataFrame({"id": range(n), "prob": p1, "label": y}).to_parquet(base)
    pd.DataFrame({"id": range(n), "prob": 1 - p1, "label": y}).to_parquet(cand)
    return base, cand


def test_a_reversed_column_on_one_side_gets_advice_for_that_side_and_following_it_works(tmp_path: Path):
    """The fault: compare passed on evaluate's ``--classes 1,0``, which given to compare names the
    classes of both inputs (the baseline, read right, would then be read reversed)."""
    base, cand = _binary_inputs(tmp_path)
    r = CliRunner().invoke(main, ["compare", str(base), str(cand), "--format", "none"])
    assert r.exit_code == 0, r.output
    (line,) = [x for x in r.stderr.splitlines() if "looks reversed" in x]
    assert line.startswith(f"warning: candidate ({cand}): the binary column 'prob' looks reversed")
    assert ("If the column holds P('0'), name the classes the other way round for the candidate alone: "
            "evaluate it by itself with --classes 1,0 and --out DIR, and give that report as the candidate"
            ) in line
    assert "--classes given to compare names the classes of both inputs" in line
    assert not line.rstrip().endswith("name the classes the other way round: --classes 1,0")
    # the advice, followed: the candidate alone, then compared as a report
    r = CliRunner().invoke(main, ["evaluate", str(cand), "--classes", "1,0", "--out", str(tmp_path / "cand"),
                                  "--format", "none", "-q", "--no-plots"])
    assert r.exit_code == 0 and "looks reversed" not in r.stderr, r.output
    r = CliRunner().invoke(main, ["compare", str(base), str(tmp_path / "cand"), "--format", "json"])
    assert r.exit_code == 0 and "looks reversed" not in r.stderr, r.output
    assert json.loads(r.stdout)["summary"]["regression"] == 0
    # what the old advice did: both sides read the other way round, the baseline now reversed
    r = CliRunner().invoke(main, ["compare", str(base), str(cand), "--classes", "1,0", "--format", "none"])
    assert "warning: baseline" in r.stderr and "looks reversed" in r.stderr


def test_a_reversed_column_recorded_in_a_report_says_to_evaluate_that_run_again(tmp_path: Path):
    base, cand = _binary_inputs(tmp_path)
    for name, path in (("b", base), ("c", cand)):
        r = CliRunner().invoke(main, ["evaluate", str(path), "--out", str(tmp_path / name), "--format", "none",
                                      "-q", "--no-plots"])
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "b"), str(tmp_path / "c"), "--format", "json",
                                  "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    (line,) = [x for x in r.stderr.splitlines() if "looks reversed" in x]
    assert line.startswith(f"warning: candidate ({tmp_path / 'c'}): ")
    assert ("If the column holds P('0'), evaluate that run again with --classes 1,0 and compare the new report "
            "(compare reads a report's classes as they were recorded) (recorded when that run was evaluated)"
            ) in line
    (note,) = [n for n in json.loads(r.stdout)["metadata"]["notes"] if "looks reversed" in n]
    assert note.endswith('evaluate that run again with classes: ["1", "0"] and compare the new report '
                         "(compare reads a report's classes as they were recorded)")
    assert "evaluate that run again with" in (tmp_path / "cmp" / "compare.md").read_text()


def test_one_side_advice_rewrites_only_the_reversed_binary_advice():
    from evalkit.comparison import one_side_advice
    from evalkit.errors import EvalkitWarning
    from evalkit.validate import ReversedBinary

    evidence = ReversedBinary(n=100, loss=160.0, loss_swapped=30.0, correct=5, correct_swapped=95)
    for classes in (("neg", "pos"), ("it's", 'say "hi"')):
        text = evidence.warning("p_pos", classes)
        assert text is not None
        out = one_side_advice(text, "baseline", recorded=False)
        assert out.startswith(text[:text.index("If the column holds")])
        shown = EvalkitWarning(out).cli_text()
        assert f"If the column holds P({classes[0]!r}), name the classes the other way round for the baseline" in shown
        assert EvalkitWarning(out).file_text().count("classes: " + json.dumps([classes[1], classes[0]])) == 1
    assert one_side_advice("the binary column 'p' has logit-looking values", "candidate", recorded=True) == (
        "the binary column 'p' has logit-looking values")


def test_other_advice_naming_a_setting_is_scoped_to_its_side(tmp_path: Path):
    """The same fault for the other evaluate warning that names a setting: a binary column read
    as logits whose values all lie in [0, 1] (``--probs``, which compare gives to both inputs)."""
    rng = np.random.default_rng(4)
    n = 200
    y = rng.integers(0, 2, n)
    pd.DataFrame({"id": range(n), "logit": rng.normal(0, 2, n), "label": y}).to_parquet(tmp_path / "b.parquet")
    pd.DataFrame({"id": range(n), "logit": rng.uniform(0, 1, n), "label": y}).to_parquet(tmp_path / "c.parquet")
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "b.parquet"), str(tmp_path / "c.parquet"),
                                  "--format", "none"])
    assert r.exit_code == 0, r.output
    (line,) = [x for x in r.stderr.splitlines() if "lies in [0, 1]" in x]
    assert line.startswith("warning: candidate (")
    assert line.endswith("set --probs to read them as such (the loss differs) (for the candidate alone: "
                         "evaluate it by itself with that setting and --out DIR, and give that report as the "
                         "candidate; a setting given to compare applies to both inputs)")


def test_an_error_of_one_input_scopes_its_advice_to_that_input(tmp_path: Path):
    """The same fault in errors: string labels against a list column that only numbers its
    classes fail one input with evaluate's ``--classes ...`` advice, for that input alone."""
    rng = np.random.default_rng(7)
    n = 60
    y = rng.integers(0, 2, n)
    p = np.where(y == 1, 0.8, 0.2)
    pd.DataFrame({"id": range(n), "probs": list(np.column_stack([1 - p, p])), "label": y}).to_parquet(
        tmp_path / "b.parquet")
    pd.DataFrame({"id": range(n), "probs": list(np.column_stack([1 - p, p])),
                  "label": np.array(["no", "yes"])[y]}).to_parquet(tmp_path / "c.parquet")
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "b.parquet"), str(tmp_path / "c.parquet")])
    assert r.exit_code == 3, r.output
    assert "does not name its classes" in r.stderr and "--classes no,yes" in r.stderr
    assert ("(for the candidate alone: evaluate it by itself with that setting and --out DIR, and give that "
            "report as the candidate; a setting given to compare applies to both inputs)") in r.stderr
    from evalkit.errors import LabelError

    with pytest.raises(LabelError, match=r"for the candidate alone: .* out=DIR"):
        evalkit.compare(tmp_path / "b.parquet", tmp_path / "c.parquet")


def test_a_cut_compare_table_names_the_file_with_every_row(tmp_path):
    """compare.md cut a grouping's table at 200 rows with '... N more rows in the Parquet
    table', naming no file; it names by_<grouping>.parquet now, which write() holds."""
    import numpy as np
    import pandas as pd

    import evalkit

    rng = np.random.default_rng(1)
    for name in ("b", "c"):
        p = rng.uniform(0.3, 0.9, 2000)
        pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": "a",
                      "shop": [f"s{i:03d}" for i in range(250)] * 8}).pipe(
            lambda df, n=name: evalkit.evaluate(df, by=["shop"], plots=False).write(tmp_path / n))
    res = evalkit.compare(tmp_path / "b", tmp_path / "c", out=tmp_path / "o")
    md = res.to_markdown()
    assert "_... 50 more rows in `by_shop.parquet`_" in md and (tmp_path / "o" / "by_shop.parquet").is_file()


def test_decimal_keys_that_one_float_cannot_tell_apart_are_refused_not_merged(tmp_path):
    """rt-final8 F2: decimal128 keys that differ beyond a float's precision were merged into one
    matching key: both groups dropped out of the table and the gates without a word. compare
    refused them (exit 3); since fix9a it matches decimal keys exactly (all four groups);
    decimals a float tells apart still match."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    import evalkit
    from evalkit.cli import main

    keys = [decimal.Decimal("0.10000000000000000001"), decimal.Decimal("0.10000000000000000002"),
            decimal.Decimal("0.1"), decimal.Decimal("7")]
    rng = np.random.default_rng(0)
    for i in range(2):
        p = rng.uniform(0.2, 0.8, 400)
        table = pa.table({"prob_a": p, "prob_b": 1 - p, "label": rng.integers(0, 2, 400),
                          "dd": pa.array([keys[j % 4] for j in range(400)], type=pa.decimal128(38, 20))})
        pq.write_table(table, tmp_path / f"d{i}.parquet")
        evalkit.evaluate(str(tmp_path / f"d{i}.parquet"), by="dd", plots=False).write(tmp_path / f"r{i}")
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "r0"), str(tmp_path / "r1"), "--format", "none"])
    # fix9a: decimals are now matched exactly between decimal runs (four groups, none merged);
    # a decimal run against a float run is matched on the float value and refused like this
    # when two decimals become one float (tests/test_key_matching.py)
    assert r.exit_code == 0, r.output
    t = evalkit.compare(tmp_path / "r0", tmp_path / "r1").tables["dd"]
    assert sorted(t["dd"]) == sorted(keys) and (t["baseline_count"] > 0).all() and (t["candidate_count"] > 0).all()
    for i in range(2):  # two decimals a float tells apart: matched as before
        p = rng.uniform(0.2, 0.8, 400)
        pq.write_table(pa.table({"prob_a": p, "prob_b": 1 - p, "label": rng.integers(0, 2, 400),
                                 "dd": pa.array([keys[2 + j % 2] for j in range(400)], type=pa.decimal128(38, 20))}),
                       tmp_path / f"e{i}.parquet")
        evalkit.evaluate(str(tmp_path / f"e{i}.parquet"), by="dd", plots=False).write(tmp_path / f"s{i}")
    res = evalkit.compare(str(tmp_path / "s0"), str(tmp_path / "s1"))
    assert len(res.table("dd")) == 2 and set(res.table("dd")["status"]) <= {"unchanged", "regression", "improvement"}
