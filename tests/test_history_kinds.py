"""evalkit history: start-time resolution, weighted runs, --out among the inputs, glob
matches that are not reports, warnings under -q, gates a command does not check."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import ConfigError, UsageError
from evalkit.trend import history

from .test_history import DAY0, _stats, make_report, make_series


def _set_meta(report: Path, **values: object) -> None:
    """Edit a report's summary.json metadata and restamp its manifest (as evaluate would
    have written it)."""
    from .test_history import restamp

    s = json.loads((report / "summary.json").read_text())
    s["metadata"].update(values)
    (report / "summary.json").write_text(json.dumps(s))
    restamp(report)


# -- 2. runs started within one second ---------------------------------------------------------


def test_runs_started_in_the_same_second_are_ordered_by_their_microseconds(tmp_path: Path) -> None:
    same = "2026-11-01T02:30:00Z"
    base = int(pd.Timestamp(same).value // 1000)
    # names sort a, b, c; they started c, a, b within the same second
    for name, us, m in (("a", 500_000, 0.2), ("b", 900_000, 0.3), ("c", 100_000, 0.1)):
        d = make_report(tmp_path, name, same, {"region": _stats({"region": ["EU"]}, np.array([m]), 100, 1.0)},
                        manifest=True)
        _set_meta(d, created_us=base + us)
    res = history(str(tmp_path / "*"))
    assert res.runs["run_label"].tolist() == ["c", "a", "b"]
    assert res.runs["created"].tolist() == [pd.Timestamp(same) + pd.Timedelta(microseconds=u)
                                            for u in (100_000, 500_000, 900_000)]
    assert res.table("region").sort_values("run")["mean"].tolist() == [0.1, 0.2, 0.3]
    # a created_us that does not match created (a hand-set created for a backfill): created wins
    _set_meta(tmp_path / "c", created="2026-10-01T00:00:00Z")
    assert history(str(tmp_path / "*")).runs["run_label"].tolist() == ["c", "a", "b"]
    _set_meta(tmp_path / "c", created="2026-12-01T00:00:00Z")
    assert history(str(tmp_path / "*")).runs["run_label"].tolist() == ["a", "b", "c"]


def test_evaluate_records_its_start_time_to_the_microsecond(wide_file: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, _p, _y = wide_file
    meta = evalkit.evaluate(path).metadata
    created = pd.Timestamp(meta["created"])
    fine = pd.Timestamp(meta["created_us"], unit="us", tz="UTC")
    assert isinstance(meta["created_us"], int) and fine.floor("s") == created


def test_plots_place_same_second_runs_apart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from evalkit.plots import history_x

    runs = pd.DataFrame({"run": [1, 2, 3], "created": pd.to_datetime(["2026-11-01T02:30:00Z"] * 3)})
    x = history_x(pd.Series([1, 2, 3]), runs)
    assert len(set(x)) == 3


# -- 3. weighted runs -------------------------------------------------------------------------


def test_weighted_runs_use_the_weighted_mean_and_a_weight_change_starts_a_segment(
        tmp_path: Path, wide_file: tuple[Path, np.ndarray, np.ndarray]) -> None:
    path, _p, _y = wide_file
    t = pq.read_table(path)
    t = t.append_column("w", pa.array(np.linspace(0.1, 5.0, t.num_rows)))
    pq.write_table(t, path)
    outs = []
    for i, weight in enumerate([None, "w", "w"]):
        r = evalkit.evaluate(path, by="region", weight=weight) if weight else evalkit.evaluate(path, by="region")
        outs.append(r.write(tmp_path / f"run{i}"))
    res = history([str(o) for o in outs])
    assert res.runs["segment"].tolist() == [1, 2, 2]
    assert "weight (none) -> w" in res.runs["note"].iloc[1]
    tidy = res.table("region").sort_values(["run", "region"]).reset_index(drop=True)
    for run, out in enumerate(outs, start=1):
        rep = pd.read_parquet(out / "by_region.parquet").sort_values("region").reset_index(drop=True)
        mine = tidy[tidy["run"] == run].reset_index(drop=True)
        centre = rep["weighted_mean"] if run > 1 else rep["mean"]
        # the run's own estimate and the interval evaluate gave it: same centre, same bounds
        np.testing.assert_allclose(mine["mean"], centre, rtol=1e-12)
        np.testing.assert_allclose(mine["ci_low"], rep["ci_low"], rtol=1e-9)
        np.testing.assert_allclose(mine["ci_high"], rep["ci_high"], rtol=1e-9)
        if run > 1:
            np.testing.assert_allclose(mine["n_eff"], rep["n_eff"], rtol=1e-12)
            assert not np.allclose(mine["mean"], rep["mean"])  # the weights matter here
        else:
            assert mine["n_eff"].isna().all()
    # trends use the latest segment (the weighted runs) only
    assert int(res.trends["region"]["runs"].iloc[0]) == 2
    assert "weight differ" in res.to_markdown()


# -- 4. --out among the inputs ----------------------------------------------------------------


def test_out_that_is_a_report_the_glob_matches_is_a_usage_error(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    paths = make_series(tmp_path / "runs", 4, manifest=True)
    with pytest.raises(UsageError, match="is the report directory .* an input of this history"):
        history(str(tmp_path / "runs" / "*"), out=paths[1], overwrite=True)
    monkeypatch.chdir(paths[1])
    r = CliRunner().invoke(main, ["history", str(tmp_path / "runs" / "*") + "/", "--out", ".", "--overwrite",
                                  "--no-plots", "--format", "none"])
    assert r.exit_code == 2, r.output
    assert "--out . is the report directory" in r.stderr
    assert (paths[1] / "summary.json").is_file() and not (paths[1] / "history.md").exists()
    # a history inside the glob is still just left out
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "hist"
    for _ in range(2):
        res = history(str(tmp_path / "runs" / "*"), out=out, overwrite=True, plots=False)
        assert len(res.runs) == 4 and not res.ignored


# -- 5. glob matches that are not reports ----------------------------------------------------


def test_glob_matches_that_are_not_reports_are_left_out_with_a_note(tmp_path: Path) -> None:
    make_series(tmp_path / "runs", 4, manifest=True)
    (tmp_path / "runs" / "README.txt").write_text("nightly reports\n")
    history(str(tmp_path / "runs" / "*"), out=tmp_path / "other_hist", plots=False)
    import shutil

    shutil.copytree(tmp_path / "other_hist", tmp_path / "runs" / "old_hist")
    evalkit.compare(str(tmp_path / "runs" / "run-000"), str(tmp_path / "runs" / "run-919"),
                    out=tmp_path / "runs" / "cmp")
    r = CliRunner().invoke(main, ["history", str(tmp_path / "runs" / "*"), "--out", str(tmp_path / "h"),
                                  "--no-plots", "--format", "none", "-q"])
    assert r.exit_code == 0, r.output
    for name, why in (("README.txt", "not a directory"), ("old_hist", "an evalkit history report"),
                      ("cmp", "an evalkit compare report")):
        assert f"warning: left out {tmp_path / 'runs' / name}: {why}" in r.stderr
    md = (tmp_path / "h" / "history.md").read_text()
    assert "Not reports, left out (3)" in md and "4 runs from" in md
    assert json.loads((tmp_path / "h" / "history.json").read_text())["metadata"]["ignored"] == 3
    # a directory that may be a damaged report is named, with the way to leave it out
    (tmp_path / "runs" / "junk").mkdir()
    r = CliRunner().invoke(main, ["history", str(tmp_path / "runs" / "*"), "--format", "none"])
    assert r.exit_code == 3 and "junk: not an evalkit report directory" in r.stderr
    assert "--skip-bad leaves such a directory out" in r.stderr


def test_skip_bad_help_says_what_it_skips() -> None:
    r = CliRunner().invoke(main, ["history", "--help"])
    text = " ".join(r.output.split())
    assert "single tables" not in text
    assert "leaves out that grouping of that run" in text


# -- 6. warnings under -q ---------------------------------------------------------------------


def test_warnings_reach_stderr_under_quiet_in_history(tmp_path: Path) -> None:
    import shutil

    paths = make_series(tmp_path / "runs", 10, manifest=True)
    shutil.copytree(paths[3], tmp_path / "runs" / "zz-copy")
    args = ["history", str(tmp_path / "runs" / "*"), "--format", "none", "--max-drift-pct", "50",
            "--lookback", "7", "--window", "8", "-q"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "warning: " in r.stderr and "counted once" in r.stderr
    assert "history of" not in r.stderr  # progress stays off
    # a gate that could not be checked is a warning too
    shutil.rmtree(tmp_path / "runs" / "zz-copy")
    for p in paths[:6]:
        shutil.rmtree(p)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "gate not checked: max_drift_pct" in r.stderr


def test_warnings_reach_stderr_under_quiet_in_evaluate_and_compare(tmp_path: Path) -> None:
    from evalkit.cli_common import quiet_warnings
    from evalkit.errors import EvalkitWarning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_warnings(True):
            warnings.warn(EvalkitWarning("mine"), stacklevel=1)
            warnings.warn(UserWarning("a library's"), stacklevel=1)
    assert [str(w.message) for w in seen] == ["mine"]
    # evaluate: a binary score column in [0, 1] declared as logits is warned about, -q or not
    n = 200
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"score": rng.random(n), "label": rng.integers(0, 2, n)}), tmp_path / "p.parquet")
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--predictions", "score",
                                  "--logits", "--format", "none", "-q"])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.stderr


# -- 10. gates a command does not check ------------------------------------------------------


@pytest.mark.parametrize("command, gates, owner", [
    ("history", {"max_regression": 0.1}, "compare"),
    ("history", {"groups": {"region": {"max_regression_pct": 5}}}, "compare"),
    ("compare", {"max_drift_pct": 10}, "history"),
    ("evaluate", {"require_ci_excludes_zero": True}, "compare and history"),  # (evaluate reads fail_unchecked too)
    ("evaluate", {"max_regression": 0.1}, "compare"),
    ("evaluate", {"max_change_pct": 1}, "history"),
])
def test_a_gate_the_command_does_not_check_is_a_config_error(tmp_path: Path, wide_file: tuple[Path, np.ndarray, np.ndarray],
                                                              command: str, gates: dict, owner: str) -> None:
    key = next(iter(gates)) if "groups" not in gates else "max_regression_pct"
    paths = make_series(tmp_path / "runs", 3, manifest=True)
    with pytest.raises(ConfigError, match=f"gate '{key}' is checked by {owner}.*not by {command}") as err:
        if command == "history":
            history(str(tmp_path / "runs" / "*"), gates=gates)
        elif command == "compare":
            evalkit.compare(str(paths[0]), str(paths[1]), gates=gates)
        else:
            evalkit.evaluate(wide_file[0], gates=gates)
    assert err.value.exit_code == 2


def test_a_shared_config_keeps_each_commands_gates(tmp_path: Path) -> None:
    """One config file serves the three commands: a gate another command checks is kept for
    it, not an error (configs/nightly.yaml); every gate key belongs to some command."""
    from evalkit.gates import GATE_COMMANDS, GATE_KEYS

    assert set(GATE_COMMANDS) == GATE_KEYS - {"groups"}
    make_series(tmp_path / "runs", 9, manifest=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("gates:\n  max_regression: 0.01\n  max_drift_pct: 0.001\n")
    r = CliRunner().invoke(main, ["history", str(tmp_path / "runs" / "*"), "-c", str(cfg), "--format", "none"])
    assert r.exit_code == 5 and "gate failed: max_drift_pct" in r.stderr and "max_regression" not in r.stderr


def test_plot_legend_shows_empty_and_null_keys_as_the_tables_do(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from evalkit.plots import write_history_plot

    seen: list[str] = []
    real = Figure.legend

    def legend(self, *args, handles=(), **kw):  # noqa: ANN001, ANN202
        seen.extend(h.get_label() for h in handles)
        return real(self, *args, handles=handles, **kw)

    monkeypatch.setattr(Figure, "legend", legend)
    runs = pd.DataFrame({"run": [1, 2], "created": pd.to_datetime(["2026-11-01T02:30:00Z"] * 2), "note": ["", ""]})
    table = pd.DataFrame({"run": [1, 1, 1, 2, 2, 2], "region": ["", None, "EU"] * 2,
                          "mean": [0.1, 0.2, 0.3] * 2, "ci_low": [0.0] * 6, "ci_high": [0.5] * 6})
    picks = pd.DataFrame({"region": ["", None, "EU"]})
    assert write_history_plot(table, "region", picks, tmp_path / "p.png", runs)
    assert seen == ['""', "∅", "EU"]


# -- 9. every byte history reads is checked ---------------------------------------------------


def _flip_middle(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] = data[i] ^ 0x01
    path.write_bytes(bytes(data))


def test_everything_history_reads_is_checked_against_the_manifest(tmp_path: Path) -> None:
    """summary.json and the grouped tables past 2 MiB (once fingerprinted by head and tail
    only): an edit in the middle of what history reads is refused; history's own tables too."""
    from evalkit.outdir import read_manifest

    n = 60_000
    rng = np.random.default_rng(1)
    keys = {"region": [f"region-{i:06d}" for i in range(n)]}
    paths = [make_report(tmp_path / "runs", f"r{r}", DAY0 + pd.Timedelta(days=r),
                         {"region": _stats(keys, 0.5 + 0.01 * rng.standard_normal(n), 100, 1.0)}, manifest=True)
             for r in range(3)]
    big = paths[1]
    _set_meta(big, note="x" * (3 << 20))  # a metadata object of 3 MiB: past the first 1 MiB
    files = read_manifest(big)[0]["files"]
    assert files["summary.json"]["fingerprint_kind"] == "sha256"
    assert files["summary.json"]["metadata_bytes"] > 3 << 20
    assert (big / "by_region.parquet").stat().st_size > 2 << 20
    assert files["by_region.parquet"]["fingerprint_kind"] == "sha256"
    spec = str(tmp_path / "runs" / "*")
    out = tmp_path / "h"
    history(spec, out=out, plots=False)
    mine = out / "by_region" / "2026-11.parquet"
    assert mine.stat().st_size > 2 << 20
    # history's own table edited in the middle: neither reused nor replaced
    kept = mine.read_bytes()
    _flip_middle(mine)
    with pytest.raises(evalkit.OutputExistsError, match="by_region/2026-11.parquet .changed since evalkit wrote it"):
        history(spec, out=out, overwrite=True, plots=False)
    mine.write_bytes(kept)
    # the input's metadata edited 1.5 MiB in (same size)
    text = (big / "summary.json").read_bytes()
    at = text.index(b"xxxx") + (3 << 19)
    _flip_middle(big / "summary.json", at)
    with pytest.raises(evalkit.ReportError, match="summary.json: its metadata .fingerprint"):
        history(spec)
    (big / "summary.json").write_bytes(text)
    # the input's grouped table edited in the middle (same size)
    _flip_middle(big / "by_region.parquet")
    with pytest.raises(evalkit.ReportError, match="by_region.parquet: its content .fingerprint"):
        history(spec, plots=False)
    with pytest.raises(evalkit.ReportError, match="by_region.parquet: its content .fingerprint"):
        history(spec, out=out, overwrite=True, plots=False)  # the nightly path reads it again


# -- 1. a night rewrites only the months it changes -----------------------------------------------


def test_a_night_keeps_the_unchanged_months_and_gives_the_cold_result(tmp_path: Path) -> None:
    from .test_history import _same_outputs

    # 70 nights from Nov 1: November, December, January
    paths = make_series(tmp_path / "reports", 70, seed=7, step_at=64, step=0.3, manifest=True)
    out, cold = tmp_path / "hist", tmp_path / "cold"
    gates = {"max_drift_pct": 5}
    yesterday = history(paths[:-1], out=out, gates=gates, window=12, lookback=3, plots=False)
    assert yesterday.kept_files == 0
    assert sorted(p.name for p in (out / "by_region").iterdir()) == ["2026-11.parquet", "2026-12.parquet",
                                                                     "2027-01.parquet"]
    december = (out / "by_region" / "2026-12.parquet").read_bytes()
    # tonight: Nov 1 leaves, Jan 9 arrives; December is kept as it is (overall and region)
    tonight = history(paths[1:], out=out, overwrite=True, gates=gates, window=12, lookback=3, plots=False)
    assert tonight.kept_files == 2 and tonight.reused_runs == 68
    assert (out / "by_region" / "2026-12.parquet").read_bytes() == december
    full = history(paths[1:], out=cold, gates=gates, window=12, lookback=3, reuse=False, plots=False)
    assert full.kept_files == 0
    _same_outputs(out, cold)
    assert [str(f) for f in tonight.failures] == [str(f) for f in full.failures]
    assert tonight.changes["run"].tolist() == full.changes["run"].tolist() == [63]
    pd.testing.assert_frame_equal(tonight.table("region"), full.table("region"))
    assert len(tonight.table("region")) == 69 * 4
    # a December report evaluated again: December is written anew, still the cold result
    f = paths[40] / "by_region.parquet"
    t = pq.read_table(f)
    pq.write_table(t.set_column(t.schema.get_field_index("mean"), "mean",
                                pa.array(t.column("mean").to_numpy() * 1.01)), f)
    from .test_history import restamp

    restamp(paths[40])
    again = history(paths[1:], out=out, overwrite=True, gates=gates, window=12, lookback=3, plots=False)
    assert again.kept_files == 5  # every month (3) of both groupings but December of region
    history(paths[1:], out=cold, overwrite=True, gates=gates, window=12, lookback=3, reuse=False, plots=False)
    _same_outputs(out, cold)


def test_plots_drawn_by_helper_processes_equal_those_drawn_in_process(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    import evalkit.trend

    monkeypatch.setattr(evalkit.trend, "PLOT_POOL_MIN", 1)  # two groupings: helpers even so
    make_series(tmp_path / "runs", 12, seed=3, step_at=9, step=0.3, manifest=True)
    spec = str(tmp_path / "runs" / "*")
    helpers = history(spec, out=tmp_path / "a")  # out: drawn by the forked helpers
    history(spec).write(tmp_path / "b")  # written later: drawn in this process
    pngs = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert pngs == ["history_by_region.png", "history_overall.png"]
    for name in pngs:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "history.md").read_text() == (tmp_path / "b" / "history.md").read_text()
    assert [f for _t, f in helpers._plots] == ["history_overall.png", "history_by_region.png"]
    assert helpers._pending_plots == ["history_overall.png", "history_by_region.png"]  # the helpers drew them


# -- the nightly job as cron runs it -------------------------------------------------------------


def test_the_nightly_script_runs_evaluate_compare_and_history_as_cron_would(tmp_path: Path) -> None:
    """configs/nightly.sh (what README's crontab line runs), two nights, as separate processes
    with everything appended to one log; the second night fails a gate in every step."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    reports = tmp_path / "reports"
    log = tmp_path / "evalkit.log"
    env = {**os.environ, "PYTHONPATH": str(root), "REPORTS": str(reports),
           "EVALKIT": f"{sys.executable} -m evalkit"}
    strict = tmp_path / "strict.yaml"
    strict.write_text((root / "configs" / "nightly.yaml").read_text().replace(
        "max_mean_loss: 0.60 ", "max_mean_loss: 0.01 "))
    codes = []
    for day, cfg in (("2026-11-01", "configs/nightly.yaml"), ("2026-11-02", str(strict))):
        with log.open("a") as fh:
            codes.append(subprocess.call(["sh", "configs/nightly.sh"], cwd=root,
                                         env={**env, "DAY": day, "CONFIG": cfg},
                                         stdout=fh, stderr=subprocess.STDOUT))
    text = log.read_text()
    assert codes == [0, 5], text
    assert sorted(p.name for p in (reports / "runs").iterdir()) == ["2026-11-01", "2026-11-02"]
    assert (reports / "baseline" / "summary.json").is_file() and (reports / "compare" / "compare.md").is_file()
    # evaluate's gate failed on night 2, yet compare and history ran and took the night in
    md = (reports / "history" / "history.md").read_text()
    assert "2 runs from" in md and "## Gates: FAILED" in md
    assert text.count("gate failed: max_mean_loss overall") == 3  # evaluate, compare, history
    # -q: no progress lines, but what could not be checked is said every night
    assert "gate not checked: max_drift_pct overall" in text and "history of" not in text
