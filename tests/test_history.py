"""evalkit history: ordering, segments, change detection, gates, report, CLI."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import ReportError, UsageError
from evalkit.escape import grouping_file_stem
from evalkit.inference import benjamini_hochberg, mean_interval, t_sf2
from evalkit.reports import read_summary_metadata
from evalkit.trend import detect_changes, history

GOLDEN = Path(__file__).parent / "golden" / "history_report.md"
DAY0 = pd.Timestamp("2026-11-01T02:30:00Z")


def _stats(keys: dict[str, list], means: np.ndarray, count: int | np.ndarray, std: float,
           clipped_col: str = "clipped") -> pd.DataFrame:
    n = len(means)
    count = np.broadcast_to(np.asarray(count, dtype=np.int64), (n,)).copy()
    df = pd.DataFrame({**keys, "count": count, "mean": means, "std": np.full(n, std),
                       "min": means * 0.01, "p50": means * 0.6, "p90": means * 2, "p99": means * 4,
                       "max": np.full(n, 16.118), "sum": means * count})
    df[clipped_col] = np.arange(n, dtype=np.int64) % 3
    df["accuracy"] = np.clip(0.9 - 0.1 * means, 0, 1)
    return df


def make_report(root: Path, name: str, created: pd.Timestamp | str | None,
                groups: dict[str, pd.DataFrame], *, eps: float = 1e-7,
                classes: tuple[str, ...] = ("a", "b", "c"), overall_mean: float = 0.5,
                clipped_col: str = "clipped", metadata_first: bool = True, manifest: bool = False,
                grouped: bool = False) -> Path:
    """A report directory laid out like ``evaluate`` writes it (summary.json + Parquet); with
    ``manifest``, also its run id and ``evalkit-manifest.json`` (as evaluate writes since
    manifests exist; without: a report from before); with ``grouped``, also
    ``grouped.parquet`` (every grouping in one file, as evaluate writes since issue 17's
    fifth session)."""
    d = root / name
    d.mkdir(parents=True)
    overall = _stats({}, np.array([overall_mean]), 10_000, 0.8, clipped_col)
    pq.write_table(pa.Table.from_pandas(overall, preserve_index=False), d / "overall.parquet")
    tables = [("overall", (), pa.Table.from_pandas(overall, preserve_index=False))]
    for g, df in groups.items():
        stem = grouping_file_stem(g.split(","))
        tables.append((g, tuple(g.split(",")), pa.Table.from_pandas(df, preserve_index=False)))
        pq.write_table(tables[-1][2], d / f"{stem}.parquet")
    if grouped:
        from evalkit.grouped_file import GROUPED_FILE, write_grouped

        assert write_grouped(tables, d / GROUPED_FILE)
    meta = {"evalkit_version": "0.1.0", "eps": eps, "classes": list(classes),
            "groupings": ["overall", *groups]}
    if created is not None:
        meta["created"] = str(created) if isinstance(created, str) else created.strftime("%Y-%m-%dT%H:%M:%SZ")
    if manifest:
        import hashlib

        meta["run_id"] = hashlib.sha256(f"{name}{created}".encode()).hexdigest()[:32]
    body = {"overall": overall.to_dict("records")[0],
            "groups": {g: df.to_dict("records") for g, df in groups.items()}}
    summary = {"metadata": meta, **body} if metadata_first else {**body, "metadata": meta}
    (d / "summary.json").write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    (d / "report.md").write_text("# evalkit report\n", encoding="utf-8")
    if manifest:
        restamp(d)
    return d


def restamp(report: Path) -> None:
    """Rewrite a report's manifest after a test edited it on purpose (as evaluate would have
    written it had it run with those values)."""
    from evalkit.outdir import write_manifest

    run_id = json.loads((report / "summary.json").read_text())["metadata"].get("run_id") or "0" * 32
    write_manifest(report, "evaluate", run_id)


REGIONS = ["APAC", "EU", "LATAM", "US"]


def make_series(root: Path, n_runs: int = 30, *, seed: int = 0, step_at: int | None = None,
                step: float = 0.2, step_group: str = "LATAM", count: int = 2000, std: float = 1.0,
                between: float = 0.0, names: list[str] | None = None, manifest: bool = False,
                grouped: bool = False) -> list[Path]:
    """``n_runs`` nightly reports grouped by region; from run ``step_at`` (1-based) on, the
    ``step_group``'s true mean is ``step`` higher (relative). Noise: sampling (std/sqrt(n))
    plus ``between`` (relative run-to-run sd)."""
    rng = np.random.default_rng(seed)
    base = np.array([0.40, 0.55, 0.60, 0.45])
    out = []
    for r in range(n_runs):
        true = base.copy()
        if step_at is not None and r + 1 >= step_at:
            true[REGIONS.index(step_group)] *= 1 + step
        noise = rng.standard_normal(4) * std / math.sqrt(count) + rng.standard_normal(4) * between * base
        df = _stats({"region": REGIONS}, true + noise, count, std)
        name = names[r] if names else f"run-{(r * 7919) % 1000:03d}"
        out.append(make_report(root, name, DAY0 + pd.Timedelta(days=r), {"region": df},
                               overall_mean=0.5 + rng.standard_normal() * 0.005, manifest=manifest,
                               grouped=grouped))
    return out


# -- ordering, missing groups, mismatched runs ------------------------------------------------


def test_runs_are_ordered_by_recorded_start_time_not_by_name(tmp_path: Path) -> None:
    # names sort z, y, x... but the runs happened in the other order; one time has an offset
    created = ["2026-11-03T02:30:00Z", "2026-11-01T02:30:00Z", "2026-11-02T03:30:00+02:00",
               "2026-11-02T02:00:00Z"]
    for name, c, m in zip(["a", "b", "c", "d"], created, [0.1, 0.2, 0.3, 0.4], strict=True):
        make_report(tmp_path, name, c, {"region": _stats({"region": ["EU"]}, np.array([m]), 100, 1.0)})
    res = history(str(tmp_path / "*"))
    assert res.runs["run_label"].tolist() == ["b", "c", "d", "a"]  # c is 01:30Z on the 2nd
    assert res.runs["run"].tolist() == [1, 2, 3, 4]
    t = res.table("region")
    assert t.sort_values("run")["mean"].tolist() == [0.2, 0.3, 0.4, 0.1]
    assert t["created"].is_monotonic_increasing
    trend = res.trends["region"].iloc[0]
    assert trend["latest"] == 0.1 and trend["previous"] == 0.4


def test_ties_in_start_time_are_broken_by_path(tmp_path: Path) -> None:
    for name, m in (("r2", 0.2), ("r1", 0.1)):
        make_report(tmp_path, name, DAY0, {"region": _stats({"region": ["EU"]}, np.array([m]), 100, 1.0)})
    assert history([tmp_path / "r2", tmp_path / "r1"]).runs["run_label"].tolist() == ["r1", "r2"]


def test_groups_missing_in_some_runs(tmp_path: Path) -> None:
    for r in range(8):
        regions = [g for g in REGIONS if not (g == "LATAM" and r in (2, 5)) and not (g == "US" and r == 7)]
        df = _stats({"region": regions}, np.full(len(regions), 0.5) + 0.001 * r, 500, 1.0)
        make_report(tmp_path, f"n{r}", DAY0 + pd.Timedelta(days=r), {"region": df})
    res = history(str(tmp_path / "n*"), lookback=2)
    t = res.table("region")
    assert len(t) == 8 * 4 - 3
    assert sorted(t.loc[t["region"] == "LATAM", "run"]) == [1, 2, 4, 5, 7, 8]
    tr = res.trends["region"].set_index("region")
    assert tr.loc["LATAM", "runs"] == 6 and tr.loc["EU", "runs"] == 8
    assert math.isnan(tr.loc["US", "latest"]) and tr.loc["US", "latest_count"] == 0
    assert math.isnan(tr.loc["LATAM", "change_prev"]) is False  # runs 7 and 8 both present
    assert math.isnan(tr.loc["LATAM", "drift"])  # absent 2 runs before the latest (run 6)
    assert "absent" in res.to_markdown()
    assert not tr["changed"].any()


def test_eps_change_starts_a_segment_and_is_never_compared_across(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for r in range(20):
        eps = 1e-7 if r < 12 else 1e-4
        level = 0.5 if r < 12 else 0.9  # a new eps changes every loss: not a "change"
        df = _stats({"region": REGIONS}, level + rng.standard_normal(4) * 0.01, 1000, 1.0)
        make_report(tmp_path, f"n{r:02d}", DAY0 + pd.Timedelta(days=r), {"region": df}, eps=eps)
    res = history(str(tmp_path / "n*"), lookback=3)
    assert res.runs["segment"].tolist() == [1] * 12 + [2] * 8
    assert "new segment (eps 1e-07 -> 0.0001)" in res.runs.loc[12, "note"]
    assert res.changes.empty  # the jump at the boundary is not flagged
    tr = res.trends["region"]
    assert (tr["runs"] == 8).all() and (tr["min"] > 0.8).all()  # trends use the latest segment only
    md = res.to_markdown()
    assert "2 segments" in md and "eps 1e-07 -> 0.0001" in md
    assert set(res.table("region")["segment"]) == {1, 2}  # the tables keep every run, marked


def test_class_set_change_and_changed_groupings_are_marked(tmp_path: Path) -> None:
    for r in range(6):
        groups = {"region": _stats({"region": REGIONS}, np.full(4, 0.5), 100, 1.0)}
        if r >= 3:
            groups["split"] = _stats({"split": ["train", "val"]}, np.full(2, 0.5), 100, 1.0)
        classes = ("a", "b", "c") if r < 4 else ("a", "b", "c", "d")
        make_report(tmp_path, f"n{r}", DAY0 + pd.Timedelta(days=r), groups, classes=classes)
    res = history(str(tmp_path / "n*"))
    notes = res.runs["note"].tolist()
    assert notes[3] == "groupings changed: +split"
    assert notes[4].startswith("new segment (class set changed: +d)")
    assert res.runs["segment"].tolist() == [1, 1, 1, 1, 2, 2]
    assert res.metadata["series_runs"] == {"overall": 2, "region": 2, "split": 2}
    assert "Groupings changed at run(s) 4 (+split)" in res.to_markdown()


# -- change detection -------------------------------------------------------------------------


def test_planted_step_is_found_at_the_right_run(tmp_path: Path) -> None:
    make_series(tmp_path, 30, seed=1, step_at=21, step=0.18)
    res = history(str(tmp_path / "run-*"))
    ch = res.changes
    assert ch["group"].tolist() == ["LATAM"]
    row = ch.iloc[0]
    assert row["run"] == 21 and row["direction"] == "up"
    assert row["created"] == DAY0 + pd.Timedelta(days=20)
    assert 14 < row["change_pct"] < 22
    assert row["message"].startswith("region=LATAM: mean loss up ")
    assert "since 2026-11-21 (run 21 of 30)" in row["message"]
    assert "region=LATAM: mean loss up" in res.to_markdown()


def test_planted_step_location_over_many_seeds() -> None:
    # 30 runs, +15% from run 21 (about 3.5 standard errors of one run mean): found at exactly
    # the right run in most seeds and never more than one run off.
    rng = np.random.default_rng(0)
    w, seeds, n, sd = 30, 100, 2000, 1.0
    base = 0.6
    se = sd / math.sqrt(n)
    x = base + rng.standard_normal((w, seeds)) * se
    x[20:] += 0.15 * base
    scan = detect_changes(x, np.full((w, seeds), se))
    found = scan.p <= 0.05
    assert found.mean() == 1.0
    assert (scan.k == 20).mean() >= 0.9
    assert (np.abs(scan.k - 20) <= 1).all()


@pytest.mark.parametrize("between", [0.0, 0.03])
def test_false_alarm_rate_on_stable_series(between: float) -> None:
    # 200 seeds of a stable 30-run series (sampling noise only, or with real run-to-run
    # variation 10x the sampling noise): the scan flags at most ~alpha of them.
    rng = np.random.default_rng(42)
    w, seeds, n, sd = 30, 200, 2000, 1.0
    se = sd / math.sqrt(n)
    x = 0.5 + rng.standard_normal((w, seeds)) * se + rng.standard_normal((w, seeds)) * between * 0.5
    scan = detect_changes(x, np.full((w, seeds), se))
    rate = float(np.mean(scan.p <= 0.05))
    assert rate <= 0.06, rate


def test_false_alarm_rate_of_the_whole_pipeline(tmp_path: Path) -> None:
    flagged = 0
    seeds = 40
    for seed in range(seeds):
        root = tmp_path / f"s{seed}"
        make_series(root, 15, seed=seed, count=500)
        flagged += not history(str(root / "run-*")).changes.empty
    assert flagged / seeds <= 0.1


def test_identical_runs_flag_nothing_and_floor_the_variance() -> None:
    x = np.full((20, 3), 0.5)
    x[15:, 0] += 1e-9  # a shift far below one run's standard error
    scan = detect_changes(x, np.full((20, 3), 0.01))
    assert np.all(scan.p > 0.5)


def test_detect_changes_agrees_with_a_pooled_t_test_by_hand() -> None:
    from scipy import stats

    rng = np.random.default_rng(5)
    x = rng.standard_normal((12, 1)) * 0.1 + 1.0
    x[8:] += 0.3
    scan = detect_changes(x, np.full((12, 1), 1e-6), min_before=3)
    k = int(scan.k[0])
    ref = stats.ttest_ind(x[k:, 0], x[:k, 0], equal_var=True)
    assert k == 8
    assert scan.t[0] == pytest.approx(ref.statistic, rel=1e-9)
    assert scan.p[0] == pytest.approx(min(1.0, ref.pvalue * scan.candidates[0]), rel=1e-9)


def test_t_two_sided_p_matches_scipy() -> None:
    from scipy import stats

    t = np.array([0.0, 0.1, 1.0, 2.0, 2.5, 5.0, 12.0, 40.0, -3.0, np.inf])
    for df in (1, 2, 3, 7, 28, 120, 1000):
        got = t_sf2(t, np.full(t.shape, df))
        want = 2 * stats.t.sf(np.abs(t), df)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-300)
    assert np.isnan(t_sf2(np.array([1.0]), np.array([0.0]))).all()


def test_benjamini_hochberg_matches_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(1)
    p = rng.random(50) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p)[0], stats.false_discovery_control(p), rtol=1e-12)
    q, reject = benjamini_hochberg(np.array([0.01, np.nan, 0.04]), q=0.03)
    assert np.isnan(q[1]) and q[0] == pytest.approx(0.02) and q[2] == pytest.approx(0.04)
    assert reject.tolist() == [True, False, False]


def test_mean_interval_matches_scipy() -> None:
    from scipy import stats

    count = np.array([1, 2, 5, 40, 1000])
    mean = np.array([0.5, 0.4, 0.3, 0.2, 0.1])
    std = np.array([np.nan, 0.2, 0.3, 0.4, 0.5])
    sem, lo, hi = mean_interval(count, mean, std)
    assert np.isnan(sem[0]) and np.isnan(lo[0])
    for i in range(1, 5):
        a, b = stats.t.interval(0.95, count[i] - 1, loc=mean[i], scale=std[i] / math.sqrt(count[i]))
        # the t quantile is exact for df <= 2 and Cornish-Fisher beyond (error < 1e-3 of t)
        assert lo[i] == pytest.approx(a, rel=2e-3) and hi[i] == pytest.approx(b, rel=2e-3)


# -- reading report directories ---------------------------------------------------------------


def test_summary_metadata_is_read_without_the_group_records(tmp_path: Path) -> None:
    meta = {"created": "2026-11-01T00:00:00Z", "note": "é" * 5000, "groupings": ["overall"]}
    p = tmp_path / "summary.json"
    p.write_text(json.dumps({"metadata": meta, "groups": "x" * 1000}, indent=2) + "\n... not json",
                 encoding="utf-8")
    assert read_summary_metadata(p, chunk=7) == meta  # multi-byte characters across chunks
    p.write_text(json.dumps({"groups": {}, "metadata": meta}), encoding="utf-8")
    assert read_summary_metadata(p) == meta  # metadata not first: whole file parsed
    p.write_text(json.dumps({"metadata": meta})[:100], encoding="utf-8")
    with pytest.raises(ReportError, match="corrupt or truncated"):
        read_summary_metadata(p, chunk=16)
    p.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ReportError, match="not an evalkit summary.json"):
        read_summary_metadata(p)


def test_history_never_reads_rows_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = make_series(tmp_path, 5)
    for p in paths:
        (p / "rows.parquet").write_bytes(b"garbage: history must not open this file")
    real_open = Path.open

    def guarded(self: Path, *a, **k):  # type: ignore[no-untyped-def]
        assert self.name != "rows.parquet"
        return real_open(self, *a, **k)

    monkeypatch.setattr(Path, "open", guarded)
    assert len(history(str(tmp_path / "run-*")).runs) == 5


def test_real_evaluate_reports(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": range(400), "region": ["EU", "US"] * 200, "label": [0, 1, 1, 0] * 100})
    for r, shift in enumerate([0.0, 0.02, 0.04]):
        p1 = np.clip(0.7 - shift + 0.2 * (df["label"] == 1) - 0.1 * (df["id"] % 3 == 0), 0.01, 0.99)
        data = df.assign(prob_0=1 - p1, prob_1=p1)
        res = evalkit.evaluate(data, by=["region"], plots=False)
        out = res.write(tmp_path / f"eval{r}")
        summary = json.loads((out / "summary.json").read_text())
        summary["metadata"]["created"] = str(DAY0 + pd.Timedelta(days=r))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        restamp(out)  # as if evaluate had run that night
    h = history(str(tmp_path / "eval*"))
    assert h.groupings == ["overall", "class", "region"]
    t = h.table("region")
    assert set(t.columns) >= {"run", "run_id", "created", "region", "count", "mean", "sem",
                              "ci_low", "ci_high", "clipped_low", "accuracy"}
    ref = pd.read_parquet(tmp_path / "eval2" / "by_region.parquet").set_index("region")
    last = t[t["run"] == 3].set_index("region")
    np.testing.assert_allclose(last["mean"], ref.loc[last.index, "mean"], rtol=1e-15)
    assert (last["ci_low"] < last["mean"]).all() and (last["mean"] < last["ci_high"]).all()


def test_new_column_names_are_read_when_present(tmp_path: Path) -> None:
    df = _stats({"region": ["EU"]}, np.array([0.5]), 100, 2.0, clipped_col="clipped_low")
    df["sem"], df["ci_low"], df["ci_high"] = 0.1, 0.3, 0.7
    make_report(tmp_path, "a", DAY0, {"region": df}, clipped_col="clipped_low")
    t = history(tmp_path / "a").table("region")
    # the run's sem is used (not std / sqrt(n) = 0.1 by chance: std is 2.0 here); the
    # interval is recomputed at the history's confidence, the same for every run
    from scipy import stats

    lo, hi = stats.t.interval(0.95, 99, loc=0.5, scale=0.1)
    assert t["sem"].iloc[0] == 0.1
    assert t["ci_low"].iloc[0] == pytest.approx(lo, rel=1e-3) and t["ci_high"].iloc[0] == pytest.approx(hi, rel=1e-3)
    assert t["clipped_low"].iloc[0] == 0


@pytest.mark.parametrize("breakage, message", [
    ("no_summary", "not an evalkit report directory"),
    ("compare", "is a compare report"),
    ("bad_json", "corrupt or truncated"),
    ("no_created", "no valid start time"),
    ("truncated_parquet", "by_region.parquet of grouping 'region' is not a Parquet file"),
    ("missing_parquet", "by_region.parquet of grouping 'region' is missing"),
    ("file", "not a directory"),
])
def test_bad_report_dirs_are_named_or_skipped(tmp_path: Path, breakage: str, message: str) -> None:
    paths = make_series(tmp_path, 6)
    bad = paths[2]
    if breakage == "no_summary":
        (bad / "summary.json").unlink()
    elif breakage == "compare":
        (bad / "summary.json").unlink()
        (bad / "compare.json").write_text("{}")
    elif breakage == "bad_json":
        (bad / "summary.json").write_text('{"metadata": {"created": "2026-')
    elif breakage == "no_created":
        s = json.loads((bad / "summary.json").read_text())
        del s["metadata"]["created"]
        (bad / "summary.json").write_text(json.dumps(s))
    elif breakage == "truncated_parquet":
        data = (bad / "by_region.parquet").read_bytes()
        (bad / "by_region.parquet").write_bytes(data[: len(data) // 2])
    elif breakage == "missing_parquet":
        (bad / "by_region.parquet").unlink()
    elif breakage == "file":
        import shutil

        shutil.rmtree(bad)
        bad.write_text("not a dir")
    if breakage in ("compare", "file"):
        # matched by a glob: plainly not an evaluate report, left out with a note (a warning)
        why = {"compare": "an evalkit compare report, not an evaluate report", "file": "not a directory"}
        with pytest.warns(evalkit.EvalkitWarning, match=f"left out {re.escape(str(bad))}: {why[breakage]}"):
            res = history(str(tmp_path / "run-*"))
        assert len(res.runs) == 5 and res.ignored[0][0] == str(bad) and not res.skipped
        assert "Not reports, left out (1)" in res.to_markdown()
        assert res.to_dict()["ignored"][0]["path"] == str(bad)
    spec = [str(p) for p in paths] if breakage in ("compare", "file") else str(tmp_path / "run-*")
    with pytest.raises(ReportError, match=message) as err:
        history(spec)  # named explicitly (or a damaged report matched by a glob): an error
    assert str(bad) in str(err.value) and "skip_bad=True leaves such a directory out" in str(err.value)
    res = history(spec, skip_bad=True)
    assert len(res.runs) == 5 and len(res.skipped) == 1 and res.skipped[0][0] == str(bad)
    assert "Skipped (1)" in res.to_markdown()
    assert res.to_dict()["skipped"][0]["path"] == str(bad)


def test_a_report_that_lost_its_manifest_is_refused(tmp_path: Path) -> None:
    """Only a report written before manifests (version <= 0.1.0 and no run id) is read
    unverified; one whose evalkit wrote a manifest, with it deleted, is a ReportError (exit 3)
    naming the directory."""
    runs = make_series(tmp_path / "r", 3, manifest=True)
    assert history([str(p) for p in runs], plots=False).metadata["unverified_reports"] == 0
    (runs[1] / "evalkit-manifest.json").unlink()
    with pytest.raises(ReportError, match=re.escape(str(runs[1])) + ".*manifest.json is missing.*run id"):
        history([str(p) for p in runs], plots=False)
    newer = make_series(tmp_path / "n", 3, names=["a", "b", "c"])
    summary = json.loads((newer[2] / "summary.json").read_text())
    summary["metadata"]["evalkit_version"] = "0.2.0"
    (newer[2] / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ReportError, match=re.escape(str(newer[2])) + ".*that version writes manifests"):
        history([str(p) for p in newer], plots=False)
    make_series(tmp_path / "o", 3)  # 0.1.0 without run id: before manifests
    assert history(str(tmp_path / "o" / "*"), plots=False).metadata["unverified_reports"] == 3
    r = CliRunner().invoke(main, ["history", *[str(p) for p in runs], "--no-plots", "--format", "none"])
    assert r.exit_code == 3 and str(runs[1]) in r.stderr


def test_corrupt_parquet_body_is_named(tmp_path: Path) -> None:
    paths = make_series(tmp_path, 4)
    f = paths[1] / "by_region.parquet"
    data = bytearray(f.read_bytes())
    data[4:200] = b"\x00" * 196  # column chunks destroyed, magic bytes intact
    f.write_bytes(bytes(data))
    with pytest.raises(ReportError, match="by_region.parquet: cannot read the grouped table"):
        history(str(tmp_path / "run-*"))
    res = history(str(tmp_path / "run-*"), skip_bad=True)
    assert len(res.runs) == 4 and len(res.skipped) == 1
    assert "grouping region left out for this run" in res.skipped[0][1]
    assert len(res.table("region")) == 3 * 4


def test_inputs_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="matches nothing"):
        history(str(tmp_path / "nothing-*"))
    make_series(tmp_path, 3)
    with pytest.raises(UsageError, match="lookback"):
        history(str(tmp_path / "run-*"), window=5, lookback=5)
    with pytest.raises(UsageError, match="unknown history setting 'windw'.*window"):
        history(str(tmp_path / "run-*"), windw=5)


@pytest.mark.parametrize("kwargs", [
    {"overwrite": "no"}, {"skip_bad": "no"}, {"plots": "no"}, {"overwrite": 1},
    {"config": 123}, {"gates": [1]}, {"out": 123}, {"progress": "x"},
])
def test_odd_api_arguments_are_config_errors(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    """A flag must be a real boolean ("no" is not false), every argument of the right type:
    ConfigError (an EvalkitError), never a bare TypeError, and nothing is written."""
    make_series(tmp_path / "r", 3)
    out = tmp_path / "h"
    history(str(tmp_path / "r" / "run-*"), out=out, plots=False)
    before = (out / "history.md").stat().st_mtime_ns
    with pytest.raises(evalkit.ConfigError, match=next(iter(kwargs))):
        history(str(tmp_path / "r" / "run-*"), **{"out": out, "plots": False, **kwargs})
    assert (out / "history.md").stat().st_mtime_ns == before


@pytest.mark.parametrize("reports", [None, 123, b"/tmp", [".", None], {"a": 1}])
def test_odd_report_arguments_are_config_errors(reports: Any) -> None:
    with pytest.raises(evalkit.ConfigError, match="report"):
        history(reports, plots=False)


def test_reports_may_be_a_generator_even_with_out(tmp_path: Path) -> None:
    runs = make_series(tmp_path / "r", 3)
    res = history((str(p) for p in runs), out=tmp_path / "h", plots=False)
    assert len(res.runs) == 3


# -- gates --------------------------------------------------------------------------------------


def _gate_history(tmp_path: Path) -> tuple[str, float, float]:
    """5 runs, one group whose mean goes 0.50 -> 0.55 (lookback 2: drift 0.05, +10%)."""
    means = [0.50, 0.50, 0.50, 0.52, 0.55]
    for r, m in enumerate(means):
        df = _stats({"region": ["EU", "US"]}, np.array([m, 0.4]), [1000, 50], 1.0)
        make_report(tmp_path, f"n{r}", DAY0 + pd.Timedelta(days=r), {"region": df}, overall_mean=0.45)
    return str(tmp_path / "n*"), 0.55 - 0.50, 100 * (0.55 - 0.50) / 0.50


def test_drift_gates_at_their_boundaries(tmp_path: Path) -> None:
    spec, drift, pct = _gate_history(tmp_path)
    run = lambda **g: history(spec, lookback=2, window=5, gates=g).failures  # noqa: E731
    assert run(max_drift=drift) == []  # equal to the limit passes
    (f,) = run(max_drift=drift - 1e-9)
    assert (f.gate, f.grouping, f.group) == ("max_drift", "region", "EU")
    assert f.observed == pytest.approx(drift)
    assert run(max_drift_pct=pct) == []
    assert [f.gate for f in run(max_drift_pct=pct - 1e-6)] == ["max_drift_pct"]
    assert [f.gate for f in run(max_drift="9.9%")] == ["max_drift_pct"]
    assert run(max_drift=0.01, min_count=1001) == []  # EU has 1000 rows
    assert [f.group for f in run(max_drift=0.01, min_count=1000)] == ["EU"]
    assert run(groups={"overall": {"max_drift": 0.0}}) == []  # overall is flat
    assert run(groups={"region": {"max_drift": 0.01}}, max_drift=1.0)[0].group == "EU"


def test_drift_gate_on_a_group_absent_from_the_reference_run_is_not_checked(tmp_path: Path) -> None:
    """LATAM has no rows lookback runs ago (a late upload): its drift gate must not pass
    silently but be 'not checked' (failing with fail_unchecked), and history.md says why."""
    for r in range(5):
        regions = ["EU", "LATAM"] if r != 2 else ["EU"]
        df = _stats({"region": regions}, np.array([0.5, 0.5 + 0.2 * r][:len(regions)]), 1000, 1.0)
        make_report(tmp_path, f"n{r}", DAY0 + pd.Timedelta(days=r), {"region": df}, overall_mean=0.45)
    spec = str(tmp_path / "n*")
    res = history(spec, lookback=2, window=5, gates={"max_drift_pct": 20}, out=tmp_path / "h", plots=False)
    assert res.failures == []
    (f,) = [u for u in res.unchecked if u.grouping == "region"]
    assert (f.gate, f.group, f.failed) == ("max_drift_pct", "LATAM", False)
    assert "no rows in the reference run" in (tmp_path / "h" / "history.md").read_text()
    strict = history(spec, lookback=2, window=5, gates={"max_drift": 0.01, "fail_unchecked": True}, plots=False)
    assert [(f.gate, f.group) for f in strict.failures] == [("max_drift", "LATAM")]
    # a lookback whose reference run has LATAM is checked (and fails: +0.2 per run)
    assert [f.group for f in history(spec, lookback=1, window=5, gates={"max_drift": 0.01}).failures] == ["LATAM"]


def test_drift_gate_can_require_the_interval_above_zero(tmp_path: Path) -> None:
    spec, drift, _ = _gate_history(tmp_path)
    # sem = 1/sqrt(1000) per run: the drift interval is about +-0.088 and includes zero
    res = history(spec, lookback=2, window=5, gates={"max_drift": 0.01, "require_ci_excludes_zero": True})
    assert res.failures == []
    lo = res.trends["region"].set_index("region").loc["EU", "drift_ci_low"]
    assert lo < 0


def test_change_gate_and_evaluate_gates_on_the_latest_run(tmp_path: Path) -> None:
    make_series(tmp_path, 30, seed=1, step_at=21, step=0.18)
    spec = str(tmp_path / "run-*")
    res = history(spec)
    pct = float(res.changes.iloc[0]["change_pct"])
    assert history(spec, gates={"max_change_pct": pct}).failures == []
    (f,) = history(spec, gates={"max_change_pct": pct - 1e-6}).failures
    assert (f.gate, f.group) == ("max_change_pct", "LATAM") and "since run 21" in f.detail
    latest = res.table("region")
    latest = latest[latest["run"] == 30].set_index("region")
    worst = float(latest["mean"].max())
    assert history(spec, gates={"groups": {"region": {"max_mean_loss": worst}}}).failures == []
    (f,) = history(spec, gates={"groups": {"region": {"max_mean_loss": worst - 1e-9}}}).failures
    assert f.gate == "max_mean_loss" and f.detail.startswith("latest run, n ") and ", CI [" in f.detail
    with pytest.raises(evalkit.ConfigError, match="no grouping 'regio'"):
        history(spec, gates={"groups": {"regio": {"max_drift": 1}}})


def test_history_gates_do_not_change_evaluate_or_compare(tmp_path: Path) -> None:
    from evalkit.gates import check_gates, validate_gates

    validate_gates({"max_drift": "5%", "max_change_pct": 0, "groups": {"region": {"max_drift": 0.1}}})
    res = evalkit.evaluate(pd.DataFrame({"prob_0": [0.9, 0.2], "prob_1": [0.1, 0.8], "label": [0, 1]}))
    assert check_gates(res, {"max_drift": 0.0, "max_change_pct": 0}) == []


# -- report, golden, atomic output, CLI ---------------------------------------------------------


def test_golden_history_md(tmp_path: Path) -> None:
    make_series(tmp_path / "reports", 12, seed=7, step_at=9, step=0.25,
                names=[f"2026-11-{d:02d}" for d in range(12, 0, -1)],  # names in reverse time order
                manifest=True)
    res = history(str(tmp_path / "reports" / "*"), out=tmp_path / "hist", plots=False,
                  gates={"max_drift_pct": 10, "min_count": 100}, window=10, lookback=5)
    md = (tmp_path / "hist" / "history.md").read_text()
    md = md.replace(str(tmp_path), "<tmp>")
    if not GOLDEN.exists():  # first run writes it; review it, then commit
        GOLDEN.write_text(md)
    assert md == GOLDEN.read_text()
    assert res.failures and res.failures[0].group == "LATAM"


def test_markdown_is_bounded_for_many_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    keys = [f"k{i:04d}" for i in range(1500)]
    for r in range(6):
        df = _stats({"shop": keys}, 0.5 + rng.standard_normal(1500) * 0.01, 500, 1.0)
        make_report(tmp_path, f"n{r}", DAY0 + pd.Timedelta(days=r), {"shop": df})
    res = history(str(tmp_path / "n*"), max_rows=15)
    md = res.to_markdown()
    assert md.count("\n| k") == 15
    assert "1,500 groups" in md and "Showing 15" in md
    assert len(res.trends["shop"]) == 1500


def _refuse_token(token: str) -> Any:
    raise AssertionError(f"history.json holds the non-standard JSON token {token}")


def test_written_outputs_and_atomicity(tmp_path: Path) -> None:
    make_series(tmp_path / "reports", 8)
    out = tmp_path / "reports" / "history"  # inside the glob: never read as an input
    res = history(str(tmp_path / "reports" / "*"), out=out, plots=False)
    assert len(res.runs) == 8
    names = sorted(p.name for p in out.iterdir())
    assert names == ["by_region", "evalkit-manifest.json", "history.json", "history.md", "overall",
                     "runs.parquet", "sources.parquet", "trends.parquet"]
    # one file per calendar month; on disk without the run number and segment (they change
    # when the oldest night leaves), which table() adds from runs.parquet
    assert sorted(p.name for p in (out / "by_region").iterdir()) == ["2026-11.parquet"]
    disk = pd.read_parquet(out / "by_region")
    assert len(disk) == 32 and list(disk.columns[:3]) == ["run_id", "created", "region"]
    t = res.table("region")
    assert len(t) == 32 and list(t.columns[:4]) == ["run", "run_id", "created", "segment"]
    pd.testing.assert_frame_equal(t.drop(columns=["run", "segment"]), disk, check_categorical=False)
    trends = pd.read_parquet(out / "trends.parquet")
    assert set(trends["grouping"]) == {"overall", "region"} and len(trends) == 5
    js = json.loads((out / "history.json").read_text(), parse_constant=_refuse_token)  # strict JSON
    assert js["metadata"]["runs"] == 8 and js["groupings"]["region"]["groups"] == 4
    with pytest.raises(evalkit.OutputExistsError):
        history(str(tmp_path / "reports" / "*"), out=out)
    # a failure while reading leaves the previous report untouched and no temp dir behind
    (tmp_path / "reports" / "broken").mkdir()
    before = (out / "history.md").read_text()
    with pytest.raises(ReportError):
        history(str(tmp_path / "reports" / "*"), out=out, overwrite=True)
    assert (out / "history.md").read_text() == before
    assert not [p for p in (tmp_path / "reports").iterdir() if p.name.startswith(".")]


def test_in_memory_result_can_be_written_later(tmp_path: Path) -> None:
    make_series(tmp_path / "reports", 5)
    res = history(str(tmp_path / "reports" / "*"))
    path = res.write(tmp_path / "h", plots=False)
    assert (path / "history.md").read_text() == res.to_markdown()


def test_plots_are_drawn_when_matplotlib_is_installed(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    make_series(tmp_path / "reports", 10, step_at=7, step=0.3)
    history(str(tmp_path / "reports" / "*"), out=tmp_path / "h")
    assert (tmp_path / "h" / "history_by_region.png").stat().st_size > 10_000
    assert "![Mean loss over runs — region](history_by_region.png)" in (tmp_path / "h" / "history.md").read_text()


def test_cli(tmp_path: Path) -> None:
    make_series(tmp_path / "reports", 30, seed=1, step_at=21, step=0.18)
    runner = CliRunner()
    spec = str(tmp_path / "reports" / "*")
    r = runner.invoke(main, ["history", spec, "--out", str(tmp_path / "h"), "--no-plots"])
    assert r.exit_code == 0, r.output
    assert "region=LATAM: mean loss up" in r.stdout and "(run 21 of 30)" in r.stdout
    r = runner.invoke(main, ["history", spec, "--format", "json", "-q"])
    assert r.exit_code == 0 and json.loads(r.stdout)["changes"][0]["run"] == 21
    r = runner.invoke(main, ["history", spec, "--out", str(tmp_path / "h"), "--no-plots"])
    assert r.exit_code == 4 and "--overwrite" in r.stderr
    r = runner.invoke(main, ["history", spec, "--max-change-pct", "5", "--format", "none"])
    assert r.exit_code == 5 and "gate failed: max_change_pct region[LATAM]" in r.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text("history:\n  window: 8\n  lookback: 2\ngates:\n  max_drift_pct: 1000\n")
    r = runner.invoke(main, ["history", spec, "-c", str(cfg), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metadata"]["settings"]["window"] == 8
    (tmp_path / "reports" / "junk").mkdir()
    r = runner.invoke(main, ["history", spec, "--format", "none"])
    assert r.exit_code == 3 and "junk: not an evalkit report directory" in r.stderr
    r = runner.invoke(main, ["history", spec, "--format", "none", "--skip-bad"])
    assert r.exit_code == 0 and "1 report(s) or table(s) skipped" in r.stderr
    r = runner.invoke(main, ["history", spec, "--window", "3", "--lookback", "5"])
    assert r.exit_code == 2


def test_cli_output_cannot_be_driven_by_group_values(tmp_path: Path) -> None:
    """ESC sequences and newlines inside group values are shown escaped on stdout (changes)
    and stderr (gate lines): one line per change / gate, no raw control character."""
    regions = ["\x1b[31mRED\x1b[0m", "line1\nline2"]
    for r in range(10):
        means = np.array([0.4, 0.4]) * (1.8 if r >= 5 else 1.0)
        make_report(tmp_path / "rep", f"n{r}", DAY0 + pd.Timedelta(days=r),
                    {"region": _stats({"region": regions}, means, 4000, 0.5)})
    for extra in ([], ["--fail-unchecked", "--window", "10", "--lookback", "9"]):
        r = CliRunner().invoke(main, ["history", str(tmp_path / "rep" / "n*"), "--no-plots",
                                      "--max-drift-pct", "50", *extra])
        assert r.exit_code == 5, r.output
        for text in (r.stdout, r.stderr):
            assert "\x1b" not in text and "\r" not in text
        out = r.stdout.splitlines()
        assert any("region=\\x1b[31mRED" in line for line in out)
        assert any("region=line1\\nline2: mean loss up" in line for line in out)
        gate = [line for line in r.stderr.splitlines() if line.startswith("gate failed:")]
        assert any("region[line1\\nline2]: observed" in line for line in gate), r.stderr
        assert not any(line.startswith("line2") for line in r.stdout.splitlines() + r.stderr.splitlines())


def test_integer_keys_with_nulls_print_as_integers(tmp_path: Path) -> None:
    """An integer key with a null group reads store=2 (never 2.0) on stdout, in history.md,
    in drift-gate and latest-run-gate messages, and stays an integer in trends.parquet."""
    for r in range(8):
        means = np.array([0.4, 0.4 * (1.8 if r >= 4 else 1.0), 0.4])
        keys = {"store": pd.array([1, 2, None], dtype="Int64")}
        make_report(tmp_path / "rep", f"n{r}", DAY0 + pd.Timedelta(days=r), {"store": _stats(keys, means, 4000, 0.5)})
    cfg = tmp_path / "g.yaml"
    cfg.write_text("gates:\n  max_drift_pct: 10\n  groups:\n    store:\n      max_mean_loss: 0.5\n")
    r = CliRunner().invoke(main, ["history", str(tmp_path / "rep" / "n*"), "--no-plots", "--out",
                                  str(tmp_path / "h"), "-c", str(cfg)])
    assert r.exit_code == 5, r.output
    md = (tmp_path / "h" / "history.md").read_text()
    for text in (r.stdout, r.stderr, md):
        assert not re.search(r"\b[0-9]\.0\]|=[0-9]\.0\b|\| [0-9]\.0 \|", text), text
    assert "store=2: mean loss up" in r.stdout and "store=2: mean loss up" in md
    assert "gate failed: max_drift_pct store[2]:" in r.stderr
    assert "store[2]" in [line for line in r.stderr.splitlines() if "max_mean_loss" in line][0]
    assert "| 2 | 0.7200 |" in md and "| ∅ | 0.4000 |" in md
    assert pq.read_schema(tmp_path / "h" / "trends.parquet").field("store").type == pa.int64()


def test_evalkit_history_is_the_function_even_after_its_module_is_imported() -> None:
    import importlib

    importlib.import_module("evalkit.trend")
    importlib.import_module("evalkit.cli_history")
    assert callable(evalkit.history) and evalkit.history.__module__ == "evalkit.trend"
    assert evalkit.HistoryResult.__name__ == "HistoryResult"


def test_nightly_config_runs_evaluate_compare_and_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the three commands of configs/nightly.yaml / the README's nightly section, as cron runs them
    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    runner = CliRunner()
    cfg = str(root / "configs" / "nightly.yaml")
    reports = tmp_path / "reports"
    for day in ("2026-11-01", "2026-11-02", "2026-11-03"):
        r = runner.invoke(main, ["evaluate", "--config", cfg, "--out", str(reports / "runs" / day),
                                 "--overwrite", "-q", "--no-plots", "--format", "none"])
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["compare", str(reports / "runs" / "2026-11-01"), str(reports / "runs" / "2026-11-03"),
                             "--config", cfg, "--out", str(reports / "compare"), "--overwrite", "-q",
                             "--format", "none"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["history", str(reports / "runs" / "*") + "/", "--config", cfg, "--out",
                             str(reports / "history"), "--overwrite", "--no-plots", "--format", "none"])
    assert r.exit_code == 0, r.output
    # three nights are too few for the drift over 7 runs: said, neither passed nor failed
    assert "all checked gates passed" in r.stderr and "gate not checked: max_drift_pct overall" in r.stderr
    md = (reports / "history" / "history.md").read_text()
    assert "3 runs from" in md and "## By split × region" in md and "## Gates: passed" in md


def test_grouped_tables_rewritten_by_other_tools(tmp_path: Path) -> None:
    # a user re-saves some runs' tables with polars / DuckDB, dictionary-encodes a key, nulls
    # one, or stores an int key as text: every run still reads, keys unify, nothing is lost
    polars = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    paths = make_series(tmp_path, 12, seed=3, step_at=9, step=0.3)
    f = paths[2] / "by_region.parquet"
    polars.read_parquet(f).write_parquet(f)
    f = paths[3] / "by_region.parquet"
    duckdb.sql(f"COPY (SELECT * FROM read_parquet('{f}')) TO '{f}.tmp' (FORMAT parquet)")
    Path(f"{f}.tmp").replace(f)
    f = paths[4] / "by_region.parquet"
    t = pq.read_table(f)
    pq.write_table(t.set_column(0, "region", t.column("region").dictionary_encode()), f)
    f = paths[5] / "by_region.parquet"
    df = pq.read_table(f).to_pandas()
    df.loc[0, "region"] = None
    pq.write_table(pa.Table.from_pandas(df), f)
    res = history(str(tmp_path / "run-*"))
    assert res.changes["group"].tolist() == ["LATAM"] and res.changes["run"].tolist() == [9]
    tr = res.trends["region"]
    assert tr["runs"].tolist() == [11, 12, 12, 12, 1]  # APAC lost its row to the null key
    assert len(res.table("region")) == 12 * 4
    assert "| ∅ |" in res.to_markdown()  # a null key reads as the other reports show it


# -- reusing an earlier history (the nightly run) ------------------------------------------------


def _same_outputs(a: Path, b: Path) -> None:
    """Two history reports hold the same results: every file byte for byte, history.json
    apart from when it was made and how long it took, the manifests apart from their own
    creation time and run id."""
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for name in names:
        if name == "history.json":
            ja, jb = (json.loads((d / name).read_text()) for d in (a, b))
            for j in (ja, jb):
                del j["metadata"]["created"], j["metadata"]["duration_s"]
            assert ja == jb
        elif name == "evalkit-manifest.json":
            fa, fb = (json.loads((d / name).read_text())["files"] for d in (a, b))
            assert {k: v for k, v in fa.items() if k != "history.json"} == \
                {k: v for k, v in fb.items() if k != "history.json"}
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_nightly_run_reuses_the_previous_history_and_gives_the_same_result(tmp_path: Path) -> None:
    paths = make_series(tmp_path / "reports", 14, seed=5, step_at=10, step=0.25, manifest=True)
    out, cold = tmp_path / "hist", tmp_path / "cold"
    gates = {"max_drift_pct": 5, "groups": {"region": {"max_mean_loss": 0.6}}}
    yesterday = history(paths[:-1], out=out, gates=gates, window=10, lookback=3)
    assert yesterday.reused_runs == 0
    # tonight: one new report, the oldest left out, the history of last night in --out
    tonight = history(paths[1:], out=out, overwrite=True, gates=gates, window=10, lookback=3)
    assert tonight.reused_runs == 12
    full = history(paths[1:], out=cold, gates=gates, window=10, lookback=3, reuse=False)
    assert full.reused_runs == 0
    _same_outputs(out, cold)
    assert [str(f) for f in tonight.failures] == [str(f) for f in full.failures]
    # run again with nothing new: everything reused, still the same
    again = history(paths[1:], out=out, overwrite=True, gates=gates, window=10, lookback=3)
    assert again.reused_runs == 13
    _same_outputs(out, cold)


def test_reuse_reads_again_what_changed(tmp_path: Path) -> None:
    import os

    paths = make_series(tmp_path / "reports", 8, seed=2, manifest=True)
    out, cold = tmp_path / "hist", tmp_path / "cold"
    history(paths, out=out, plots=False)
    # a report evaluated again (new content, new manifest), a table merely touched, a report
    # with the same content whose key column became dictionary-encoded by another writer
    f = paths[3] / "by_region.parquet"
    t = pq.read_table(f)
    pq.write_table(t.set_column(t.schema.get_field_index("mean"), "mean",
                                pa.array(t.column("mean").to_numpy() * 1.5)), f)
    restamp(paths[3])
    g = paths[5] / "by_region.parquet"
    os.utime(g, ns=(g.stat().st_atime_ns, g.stat().st_mtime_ns + 10**9))
    h = history(paths, out=out, overwrite=True, plots=False)
    assert h.reused_runs == 6  # runs 4 (changed) and 6 (touched: cannot be trusted) read again
    history(paths, out=cold, plots=False, reuse=False)
    _same_outputs(out, cold)
    assert h.table("region").query("run == 4")["mean"].round(12).tolist() == \
        (t.column("mean").to_numpy() * 1.5).round(12).tolist()
    # keys of a new report typed differently: the grouping is read again, typed as a cold read
    t = pq.read_table(paths[7] / "by_region.parquet")
    pq.write_table(t.set_column(0, "region", t.column("region").dictionary_encode().cast(
        pa.dictionary(pa.int32(), pa.string()))), paths[7] / "by_region.parquet")
    restamp(paths[7])
    h = history(paths, out=out, overwrite=True, plots=False)
    history(paths, out=cold, overwrite=True, plots=False, reuse=False)
    _same_outputs(out, cold)


def test_a_damaged_previous_history_is_not_reused(tmp_path: Path) -> None:
    paths = make_series(tmp_path / "reports", 6, seed=4, manifest=True)
    out = tmp_path / "hist"
    history(paths, out=out, plots=False)
    t = pq.read_table(out / "by_region" / "2026-11.parquet")
    pq.write_table(t.set_column(t.schema.get_field_index("mean"), "mean",
                                pa.array(np.zeros(len(t)))), out / "by_region" / "2026-11.parquet")
    # the history's own manifest no longer matches: its rows are not trusted, all is read
    # (and --overwrite refuses to replace a report edited since evalkit wrote it)
    with pytest.raises(evalkit.OutputExistsError):
        history(paths, out=out, overwrite=True, plots=False)
    from evalkit.trend import _open_cache

    cache, rebuilt = _open_cache(out, True)
    assert cache is not None and rebuilt == "" and cache._table("by_region/2026-11.parquet") is None


# -- red-team findings: each a kind ----------------------------------------------------------------


def test_a_copied_report_directory_counts_once(tmp_path: Path) -> None:
    import shutil

    paths = make_series(tmp_path / "reports", 6, seed=1, manifest=True)
    shutil.copytree(paths[2], tmp_path / "reports" / "zz-copy")  # same run, another name
    old = make_series(tmp_path / "old", 3, seed=1)  # reports before run ids: by summary.json
    shutil.copytree(old[1], tmp_path / "old" / "zz-copy")
    for root, n in ((tmp_path / "reports", 6), (tmp_path / "old", 3)):
        res = history(str(root / "*"))
        assert len(res.runs) == n and len(res.table("region")) == 4 * n
        assert res.duplicates == [(str(root / "zz-copy"), str(res.runs["path"].iloc[1 if n == 3 else 2]))]
        assert "Same run counted once (1)" in res.to_markdown()
        assert res.to_dict()["duplicates"][0]["path"] == str(root / "zz-copy")
        # rt-hist8 F6: history.md and history.json say what the copies share, as the warning does
        same = "summary.json" if n == 3 else "run id"
        assert res.to_dict()["duplicates"][0]["same"] == same
        assert f"(same {same})" in res.to_markdown().split("Same run counted once")[1].split("\n\n")[0]
    r = CliRunner().invoke(main, ["history", str(tmp_path / "reports" / "*"), "--format", "none"])
    # rt-hist7 F9: which copy is read, and why
    kept = str(paths[2])
    run_id = json.loads((paths[2] / "summary.json").read_text())["metadata"]["run_id"]
    assert r.exit_code == 0 and (f"{tmp_path / 'reports' / 'zz-copy'} holds the same run as {kept} (same run id "
                                 f"{run_id}): counted once, from {kept} (of copies of a run, the first by start "
                                 "time, then path, is read)") in " ".join(r.stderr.split())
    r = CliRunner().invoke(main, ["history", str(tmp_path / "old" / "*"), "--format", "none"])
    assert r.exit_code == 0 and "(same summary.json): counted once, from " in r.stderr


def test_a_grouping_absent_from_the_latest_run_has_no_latest_value_and_every_gate_is_reported(
        tmp_path: Path) -> None:
    for r in range(8):
        groups = {"region": _stats({"region": REGIONS}, np.full(4, 0.5 + 0.01 * r), 1000, 1.0)}
        if r < 6:  # the split grouping disappears in the last two runs
            groups["split"] = _stats({"split": ["train", "test"]}, np.array([0.3, 0.4]), 1000, 1.0)
        make_report(tmp_path, f"r{r}", DAY0 + pd.Timedelta(days=r), groups, manifest=True)
    spec = str(tmp_path / "r*")
    res = history(spec, window=6, lookback=2)
    split = res.trends["split"]
    assert split["latest"].isna().all() and split["drift"].isna().all()  # never run 6's values
    assert split["runs"].tolist() == [6, 6] and res.metadata["absent_from_latest"] == {"split": 6}
    md = res.to_markdown()
    assert "Absent from the latest run** (last in run 6)" in md
    assert "| test | absent |" in md
    gates = {"max_drift_pct": 1.0, "groups": {"split": {"max_mean_loss": 0.35, "max_drift": 0.01}}}
    res = history(spec, window=6, lookback=2, gates=gates)
    assert {(f.gate, f.grouping) for f in res.failures} == {("max_drift_pct", "region")}
    assert {(f.gate, f.grouping) for f in res.unchecked} == {("max_mean_loss", "split"), ("max_drift", "split"),
                                                              ("max_drift_pct", "split")}
    assert all("absent from the latest run (last in run 6)" in f.detail for f in res.unchecked)
    r = CliRunner().invoke(main, ["history", spec, "--window", "6", "--lookback", "2", "--max-drift-pct", "1",
                                  "--format", "none", "--config", _gates_file(tmp_path, gates)])
    assert r.exit_code == 5, r.output  # a gate failure, never a usage error hiding the others
    assert r.stderr.count("gate failed: max_drift_pct region") == 4
    assert "gate not checked: max_mean_loss split: the grouping is absent from the latest run" in r.stderr
    res = history(spec, window=6, lookback=2, gates={**gates, "fail_unchecked": True})
    assert {(f.gate, f.grouping) for f in res.failures} >= {("max_mean_loss", "split"), ("max_drift", "split")}
    assert res.unchecked == []


def _gates_file(tmp_path: Path, gates: dict) -> str:
    p = tmp_path / "gates.json"
    p.write_text(json.dumps({"gates": gates}))
    return str(p)


def test_drift_and_change_gates_on_too_short_a_series_are_not_checked(tmp_path: Path) -> None:
    make_series(tmp_path, 3, seed=2, manifest=True)
    spec = str(tmp_path / "run-*")
    res = history(spec, window=10, lookback=5, gates={"max_drift": 0.0, "max_change_pct": 0})
    assert res.failures == [] and res.passed is not False
    assert {(f.gate, f.grouping) for f in res.unchecked} == {
        (g, n) for g in ("max_drift", "max_change_pct") for n in ("overall", "region")}
    assert "3 run(s) in the series; the drift over 5 runs needs 6" in str(res.unchecked[0])
    md = res.to_markdown()
    assert "## Gates: passed (4 not checked)" in md and "- not checked: max_drift overall: 3 run(s) in the series" in md
    assert res.to_dict()["gates"]["not_checked"][0]["gate"] == "max_drift"
    strict = history(spec, window=10, lookback=5, gates={"max_drift": 0.0, "fail_unchecked": True})
    assert len(strict.failures) == 2 and all(math.isnan(f.observed) for f in strict.failures)
    r = CliRunner().invoke(main, ["history", spec, "--window", "10", "--lookback", "5", "--max-drift", "0",
                                  "--fail-unchecked", "--format", "none"])
    assert r.exit_code == 5
    assert "gate failed: max_drift region: could not be checked (3 run(s) in the series" in r.stderr
    assert "gate failed: max_drift overall: could not be checked" in r.stderr


def test_trends_parquet_keeps_null_keys_the_text_null_and_the_empty_string_apart(tmp_path: Path) -> None:
    for r in range(4):
        df = _stats({"region": ["EU", None, "(null)", ""]}, np.array([0.3, 0.4, 0.5, 0.6]) + 0.01 * r, 500, 1.0)
        split = _stats({"split": ["a", "b"], "region": ["", None]}, np.array([0.2, 0.25]), 500, 1.0)
        make_report(tmp_path, f"r{r}", DAY0 + pd.Timedelta(days=r), {"region": df, "split,region": split},
                    manifest=True)
    out = tmp_path / "hist"
    history(str(tmp_path / "r*"), out=out, plots=False)
    t = pq.read_table(out / "trends.parquet")
    assert "group" not in t.column_names
    assert t.schema.field("region").type == pq.read_schema(out / "by_region" / "2026-11.parquet").field("region").type
    rows = t.to_pylist()
    region = [(r["region"], r["latest"]) for r in rows if r["grouping"] == "region"]
    assert sorted(region, key=lambda x: x[1]) == [("EU", pytest.approx(0.33)), (None, pytest.approx(0.43)),
                                                   ("(null)", pytest.approx(0.53)), ("", pytest.approx(0.63))]
    overall = [r for r in rows if r["grouping"] == "overall"]
    assert len(overall) == 1 and overall[0]["region"] is None and overall[0]["split"] is None
    both = [(r["split"], r["region"]) for r in rows if r["grouping"] == "split,region"]
    assert sorted(both) == [("a", ""), ("b", None)]
    md = (out / "history.md").read_text()
    assert '| "" |' in md and "| ∅ |" in md and "| (null) |" in md  # three keys read apart


@pytest.mark.parametrize("column, value, what", [
    ("mean", -0.2, "column 'mean' holds 1 value(s) negative, NaN or infinite"),
    ("mean", float("nan"), "column 'mean' holds 1 value(s) negative, NaN or infinite"),
    ("std", -1.0, "column 'std' holds 1 value(s) negative, infinite, or missing where count >= 2"),
    ("std", float("nan"), "column 'std' holds 1 value(s) negative, infinite, or missing where count >= 2"),
    ("count", -5, "column 'count' holds 1 value(s) not a whole number >= 0"),
    ("accuracy", 1.5, "column 'accuracy' holds 1 value(s) outside [0, 1]"),
    ("no std", None, "grouped table has no column(s) std (or sem)"),
])
def test_impossible_statistics_in_an_input_report_are_named(tmp_path: Path, column: str, value: Any,
                                                             what: str) -> None:
    paths = make_series(tmp_path, 5, seed=3)
    f = paths[2] / "by_region.parquet"
    df = pd.read_parquet(f)
    if column == "no std":
        df = df.drop(columns=["std"])
    else:
        df[column] = df[column].astype(float if isinstance(value, float) else df[column].dtype)
        df.loc[2, column] = value
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f)
    with pytest.raises(ReportError, match=re.escape(what)) as err:
        history(str(tmp_path / "run-*"))
    assert str(f) in str(err.value)
    if column != "no std":
        assert "row 2 (LATAM)" in str(err.value)
    r = CliRunner().invoke(main, ["history", str(tmp_path / "run-*"), "--format", "none"])
    assert r.exit_code == 3 and str(f) in r.stderr
    res = history(str(tmp_path / "run-*"), skip_bad=True)
    assert len(res.skipped) == 1 and res.skipped[0][0] == str(paths[2])
    assert len(res.table("region")) == 4 * 4 and "Skipped (1)" in res.to_markdown()


def test_a_single_row_group_without_std_is_valid(tmp_path: Path) -> None:
    paths = make_series(tmp_path, 4, seed=3)
    f = paths[1] / "by_region.parquet"
    df = pd.read_parquet(f)
    df.loc[0, ["count", "std"]] = [1, np.nan]  # evaluate writes NaN std for a group of one row
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f)
    t = history(str(tmp_path / "run-*")).table("region")
    assert np.isnan(t.query("run == 2 and region == 'APAC'")["ci_low"]).all()


def test_every_markdown_cell_heading_and_link_is_escaped(tmp_path: Path) -> None:
    col = "re*g<i>|on_"
    for r in range(4):
        df = _stats({col: ["<script>x</script>", "a|b", "*bold* [l](http://x)", "`code`\nnext"]},
                    np.array([0.3, 0.4, 0.5, 0.6]) * (1 + 0.3 * (r == 3)), 5000, 0.1)
        make_report(tmp_path, f"r{r}", DAY0 + pd.Timedelta(days=r), {col: df}, manifest=True)
    res = history(str(tmp_path / "r*"), out=tmp_path / "hist", window=4, lookback=1,
                  gates={"max_drift_pct": 1})
    md = (tmp_path / "hist" / "history.md").read_text()
    assert "<script>" not in md and "<i>" not in md and "\n| " + "`code`\n" not in md
    assert "## By re\\*g&lt;i&gt;\\|on\\_" in md or "## By re\\*g&lt;i>\\|on\\_" in md
    assert "&lt;script>x&lt;/script>" in md and "a\\|b" in md and "\\*bold\\* \\[l\\](http://x)" in md
    assert "\\`code\\`\\\\nnext" in md  # the line break shown as \n, never a new row
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    cells = {line.count("|") - line.count("\\|") for line in rows if "latest" in rows[0]}
    assert len(rows) == 3 + 2 + 4 and cells == {8, 9}  # overall: 7 columns, by col: 8
    assert res.failures and "**FAILED** max\\_drift\\_pct" not in md


def test_quiet_means_quiet_even_with_plot_warnings(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import warnings

    for r in range(4):
        df = _stats({"region": ["日本", "한국", "EU"]}, np.array([0.3, 0.4, 0.5]), 500, 1.0)
        make_report(tmp_path, f"r{r}", DAY0 + pd.Timedelta(days=r), {"region": df}, manifest=True)
    args = ["history", str(tmp_path / "r*"), "--out", str(tmp_path / "h"), "--overwrite", "--format", "none"]
    with warnings.catch_warnings(record=True) as loud:
        warnings.simplefilter("always")
        r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "warning: some plot labels use characters the plot font lacks" in r.stderr
    assert not any("Glyph" in str(w.message) for w in loud)  # the case exists, said once, evalkit's way
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        r = CliRunner().invoke(main, [*args, "-q"])
    assert r.exit_code == 0 and r.stderr == "" and quiet == []


def test_a_short_window_alone_shortens_the_default_lookback(tmp_path: Path) -> None:
    make_series(tmp_path, 4, seed=1)
    spec = str(tmp_path / "run-*")
    res = history(spec, window=2)
    assert res.metadata["settings"]["lookback"] == 1 and "\"Δ 1 runs\"" in res.to_markdown()
    r = CliRunner().invoke(main, ["history", spec, "--window", "2", "--format", "none"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["history", spec, "--window", "2", "--lookback", "2", "--format", "none"])
    assert r.exit_code == 2
    assert "'lookback' = 2 (given) must be smaller than 'window' = 2 (given)" in r.stderr
    assert "use --lookback 1 or less" in r.stderr


@pytest.mark.parametrize("edit, message", [
    ("summary", "summary.json: its size \\(.* bytes, recorded .*\\) differs from what evalkit-manifest.json records"),
    ("summary_same_size", "summary.json: its metadata \\(fingerprint of its first bytes\\) differs from what "
                          "evalkit-manifest"),
    ("table", "by_region.parquet: its content \\(fingerprint\\) differs from what evalkit-manifest"),
    ("manifest", "evalkit-manifest.json: evalkit-manifest.json is unreadable"),
    ("compare_manifest", "is a compare report, not an evaluate report"),
    ("other_run", "belongs to another run than evalkit-manifest.json"),
    ("unlisted", "by_region.parquet: not listed in evalkit-manifest.json"),
])
def test_an_edited_input_report_is_refused(tmp_path: Path, edit: str, message: str) -> None:
    paths = make_series(tmp_path, 5, seed=6, manifest=True)
    d = paths[2]
    man = json.loads((d / "evalkit-manifest.json").read_text())
    if edit == "summary":
        s = json.loads((d / "summary.json").read_text())
        s["metadata"]["created"] = "2030-01-01T00:00:00Z"
        (d / "summary.json").write_text(json.dumps(s))
    elif edit == "summary_same_size":
        text = (d / "summary.json").read_text()
        (d / "summary.json").write_text(text.replace('"eps": 1e-07', '"eps": 2e-07'))
    elif edit == "table":
        t = pq.read_table(d / "by_region.parquet").to_pandas()
        t.loc[0, "mean"] = 0.1
        pq.write_table(pa.Table.from_pandas(t, preserve_index=False), d / "by_region.parquet")
        man["files"]["by_region.parquet"]["bytes"] = (d / "by_region.parquet").stat().st_size
        (d / "evalkit-manifest.json").write_text(json.dumps(man))
    elif edit == "manifest":
        (d / "evalkit-manifest.json").write_text("{")
    elif edit == "compare_manifest":
        (d / "evalkit-manifest.json").write_text(json.dumps({**man, "command": "compare"}))
    elif edit == "other_run":
        (d / "evalkit-manifest.json").write_text(json.dumps({**man, "run_id": "f" * 32}))
    elif edit == "unlisted":
        del man["files"]["by_region.parquet"]
        (d / "evalkit-manifest.json").write_text(json.dumps(man))
    with pytest.raises(ReportError, match=message):
        history(str(tmp_path / "run-*"))
    r = CliRunner().invoke(main, ["history", str(tmp_path / "run-*"), "--format", "none"])
    assert r.exit_code == 3 and str(d) in r.stderr
    res = history(str(tmp_path / "run-*"), skip_bad=True)
    assert len(res.skipped) == 1 and res.skipped[0][0] == str(d)


def test_reports_from_before_manifests_are_read_with_a_note(tmp_path: Path) -> None:
    make_series(tmp_path, 3, seed=6)  # no manifests, no run ids
    make_report(tmp_path, "run-new", DAY0 + pd.Timedelta(days=5),
                {"region": _stats({"region": REGIONS}, np.full(4, 0.5), 1000, 1.0)}, manifest=True)
    res = history(str(tmp_path / "run-*"))
    assert len(res.runs) == 4 and res.metadata["unverified_reports"] == 3
    assert "3 report(s) written before report manifests" in res.to_markdown()
    r = CliRunner().invoke(main, ["history", str(tmp_path / "run-*"), "--format", "none"])
    assert "3 report(s) written before manifests, read unverified" in r.stderr


def test_compare_and_history_share_their_option_definitions() -> None:
    import inspect as _inspect

    from evalkit import cli_compare, cli_history
    from evalkit.cli_compare import compare
    from evalkit.cli_history import history as history_cmd

    shared = ["out", "overwrite", "config_file", "min_count", "require_ci_excludes_zero", "fmt", "quiet", "debug"]
    c = {p.name: p for p in compare.params}
    h = {p.name: p for p in history_cmd.params}
    for name in shared:
        assert c[name].opts == h[name].opts and type(c[name].type) is type(h[name].type), name
        if name not in ("out", "config_file"):
            assert c[name].help == h[name].help, name
    for mod in (cli_compare, cli_history):
        src = _inspect.getsource(mod)
        for flag in ('"--format"', '"--quiet"', '"--debug"', '"--min-count"', '"--overwrite"', '"--config"',
                     "expected a number or a percentage"):
            assert flag not in src, (mod.__name__, flag)


def test_rows_carry_the_reports_own_run_id_whatever_else_is_read(tmp_path: Path) -> None:
    """rt-hist F4: the tidy tables', runs.parquet's and sources' ``run_id`` is the report's
    recorded run id (summary.json / manifest), not a label from its path: the same report
    keeps it when another directory of the same name joins the history (the label then
    becomes a relative path). A report written before run ids: summary:<fingerprint>."""
    from evalkit.outdir import fingerprint_entry

    runs = make_series(tmp_path / "runs", 4, names=["n01", "n02", "n03", "n04"], manifest=True)
    old = make_report(tmp_path / "old", "n00", DAY0 - pd.Timedelta(days=1),
                      {"region": _stats({"region": REGIONS}, np.full(4, 0.5), 2000, 1.0)})  # no run id
    other = make_series(tmp_path / "other", 1, names=["n03"], manifest=True, seed=5)
    other_meta = json.loads((other[0] / "summary.json").read_text())["metadata"]
    _set_created(other[0], "2026-12-20T02:30:00Z", other_meta)
    ids = {p: json.loads((p / "summary.json").read_text())["metadata"]["run_id"] for p in [*runs, *other]}
    ids[old] = "summary:" + fingerprint_entry(old / "summary.json")["fingerprint"]
    alone = history([*runs, old], out=tmp_path / "h1", plots=False)
    both = history([*runs, old, *other], out=tmp_path / "h2", plots=False)
    assert alone.runs["run_label"].tolist() == ["n00", "n01", "n02", "n03", "n04"]
    assert both.runs["run_label"].tolist() == ["old/n00", "runs/n01", "runs/n02", "runs/n03", "runs/n04",
                                               "other/n03"]
    for res, out in ((alone, tmp_path / "h1"), (both, tmp_path / "h2")):
        expected = [ids[Path(p)] for p in res.runs["path"]]
        assert res.runs["run_id"].tolist() == expected
        assert pd.read_parquet(out / "runs.parquet")["run_id"].tolist() == expected
        disk = pd.read_parquet(out / "by_region")
        assert set(disk["run_id"].astype(str)) == set(expected)
        src = pd.read_parquet(out / "sources.parquet")
        assert set(src["run_id"]) == set(expected)
        t = res.table("region")  # run numbers still come back from runs.parquet by run_id
        assert t.groupby("run")["run_id"].first().tolist() == expected
    # the same report's rows carry the same run id in both histories
    a = pd.read_parquet(tmp_path / "h1" / "by_region").sort_values(["run_id", "region"]).reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "h2" / "by_region")
    b = b[b["run_id"] != ids[other[0]]].sort_values(["run_id", "region"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_categorical=False)


def _set_created(report: Path, created: str, meta: dict) -> None:
    summary = json.loads((report / "summary.json").read_text())
    summary["metadata"] = {**meta, "created": created}
    (report / "summary.json").write_text(json.dumps(summary, indent=2, default=float), encoding="utf-8")
    restamp(report)


def test_a_cut_trend_table_shows_rises_in_loss_before_drops(tmp_path: Path) -> None:
    """A loss monitor's history.md, window 5, max_rows 2: it showed EU -18.8% and LATAM -14.4%
    (largest |change| over the lookback) and hid US +5.7%, the one group that got worse.
    Rises come first now, each side by size; the line saying how many more stays."""
    path = {"EU": [0.60, 0.60, 0.60, 0.60, 0.60, 0.4872], "LATAM": [0.50, 0.50, 0.50, 0.50, 0.50, 0.428],
            "US": [0.40, 0.40, 0.40, 0.40, 0.40, 0.4228], "APAC": [0.30] * 6}
    for r in range(6):
        df = _stats({"region": list(path)}, np.array([v[r] for v in path.values()]), 500, 5.0)
        make_report(tmp_path, f"n{r}", DAY0 + pd.Timedelta(days=r), {"region": df})
    res = history(str(tmp_path / "n*"), window=5, lookback=4, max_rows=2, plots=False)
    trend = res.trends["region"].set_index("region")
    assert not trend["changed"].any()  # none flagged: the cut is by the change over the lookback
    assert trend.loc["US", "drift_pct"] > 0 > trend.loc["LATAM", "drift_pct"] > trend.loc["EU", "drift_pct"]
    md = res.to_markdown()
    shown = [line.split(" | ")[0][2:] for line in md.splitlines() if line.startswith("| ") and
             line.split(" | ")[0][2:] in path]
    assert shown == ["US", "EU"], md
    assert "4 groups, 0 flagged" in md and "Showing 2, worse first" in md
    full = history(str(tmp_path / "n*"), window=5, lookback=4, max_rows=10, plots=False).to_markdown()
    assert [line.split(" | ")[0][2:] for line in full.splitlines()
            if line.startswith("| ") and line.split(" | ")[0][2:] in path] == ["US", "EU", "LATAM", "APAC"]


def test_flagged_drops_never_hide_a_rise_in_the_cut() -> None:
    """rt-hist7 F8: "flagged first" outranked "rises first", so with max_rows 2 two flagged
    DROPS (improvements) were shown and an unflagged +28.5% rise was cut under "Showing 2,
    worse first". The order is now: flagged rises, other rises, flagged drops, the rest (drops
    by size, no change, absent from the latest run)."""
    from evalkit.trend import _reading_order

    trend = pd.DataFrame({
        "changed":    [True,  True,  False, False, True,  False, False, False],
        "change_pct": [-57.7, -40.6, np.nan, np.nan, 12.0, np.nan, np.nan, np.nan],
        "drift_pct":  [-55.0, -38.0, 28.5,  14.0,  11.0, -9.0,  np.nan, 50.0],
        "latest":     [0.2,   0.3,   0.6,   0.5,   0.45, 0.4,   0.7,   np.nan],
    }, index=["A", "B", "D", "C", "E", "F", "G", "gone"])
    assert list(_reading_order(trend)) == ["E", "D", "C", "A", "B", "F", "G", "gone"]


def test_reading_order_is_the_stable_sort_of_its_keys() -> None:
    """_reading_order (one np.lexsort) is the order of a stable pandas sort on its seven keys,
    on groups with ties, NaNs, signed zeros and groups absent from the latest run."""
    from evalkit.trend import _reading_order

    rng = np.random.default_rng(7)
    for n in (0, 1, 5, 400):
        pick = lambda values, n=n: rng.choice(np.array(values, dtype=float), n)  # noqa: E731 - ties on purpose
        trend = pd.DataFrame({
            "changed": rng.random(n) < 0.3,
            "change_pct": pick([np.nan, -0.0, 0.0, 5.0, -5.0, 12.5]),
            "drift_pct": pick([np.nan, -0.0, 0.0, 3.0, -3.0, 28.5, -40.0]),
            "latest": pick([np.nan, 0.2, 0.45, 0.45, 0.7]),
        }, index=[f"g{i}" for i in rng.permutation(n)])
        changed = trend["changed"].astype(bool)
        shift = trend["change_pct"].where(changed, 0.0).fillna(0.0)
        drift, absent = trend["drift_pct"], trend["latest"].isna()
        key = pd.DataFrame({
            "tier": np.select([changed & (shift > 0), ~changed & (drift > 0) & ~absent, changed], [0, 1, 2], 3),
            "shift": -shift.abs(), "absent": absent, "no_drift": drift.isna(), "drift_down": ~(drift > 0),
            "drift": -drift.abs().fillna(0.0), "latest": -trend["latest"].fillna(-np.inf)}, index=trend.index)
        want = key.sort_values(list(key.columns), kind="stable").index
        assert list(_reading_order(trend)) == list(want), n


def test_the_plot_font_note_is_said_once_per_history(tmp_path: Path) -> None:
    """rt-hist8 F5: two groupings whose plots both lack glyphs (drawn in this process: fewer
    groupings than the drawing helpers pay for) give one note on stderr, not one per plot."""
    pytest.importorskip("matplotlib")
    for r in range(4):
        # characters no other test draws (the text caches remember a glyph once drawn), other ones per grouping
        tables = {g: _stats({g: [chars, "EU"]}, np.array([0.3, 0.4]), 500, 1.0)
                  for g, chars in (("region", "\ua000\ua001"), ("store", "\u3400\u3401"))}
        make_report(tmp_path, f"r{r}", DAY0 + pd.Timedelta(days=r), tables, manifest=True)
    r = CliRunner().invoke(main, ["history", str(tmp_path / "r*"), "--out", str(tmp_path / "h"), "--format", "none"])
    assert r.exit_code == 0
    assert r.stderr.count("warning: some plot labels use characters the plot font lacks") == 1, r.stderr
    assert {"history_by_region.png", "history_by_store.png"} <= {p.name for p in (tmp_path / "h").iterdir()}


@pytest.mark.parametrize("column", ["run", "created", "run_id", "segment", "grouping", "latest", "runs", "q_value"])
def test_a_key_column_named_like_a_history_column_is_kept_as_input_name(tmp_path: Path, column: str) -> None:
    """rt-hist8 F11: a grouping whose key column has the name of a column history writes
    (tidy months, trends.parquet) was refused with exit 2; since rt-final8 F1 (fix9a) it is
    kept as ``input:<name>`` in those tables, never a crash or a silently overwritten column
    (more in tests/test_history_key_names.py)."""
    for r in range(3):
        df = _stats({column: ["APAC", "EU"]}, np.array([0.3, 0.4]), 500, 1.0)
        make_report(tmp_path, f"r{r}", DAY0 + pd.Timedelta(days=r), {column: df}, manifest=True)
    r = CliRunner().invoke(main, ["history", str(tmp_path / "r*"), "--out", str(tmp_path / "h"), "--format", "none"])
    assert r.exit_code == 0, r.stderr
    trends = pq.read_table(tmp_path / "h" / "trends.parquet").to_pandas()
    assert sorted(trends[f"input:{column}"].dropna()) == ["APAC", "EU"] and trends["runs"].tolist()[-2:] == [3, 3]


def test_groupings_sharing_a_file_name_across_reports_are_refused(tmp_path: Path) -> None:
    """rt-hist8 F12: 'split,region' in some reports and 'split_region' in others would share
    by_split_region/ (one grouping's rows silently lost): exit 2 naming both."""
    two = _stats({"split": ["a", "b"], "region": ["EU", "US"]}, np.array([0.3, 0.4]), 500, 1.0)
    one = _stats({"split_region": ["a#", "b#"]}, np.array([0.3, 0.4]), 500, 1.0)
    make_report(tmp_path, "r0", DAY0, {"split,region": two}, manifest=True)
    make_report(tmp_path, "r1", DAY0 + pd.Timedelta(days=1), {"split_region": one}, manifest=True)
    make_report(tmp_path, "r2", DAY0 + pd.Timedelta(days=2), {"split,region": two}, manifest=True)
    r = CliRunner().invoke(main, ["history", str(tmp_path / "r*"), "--out", str(tmp_path / "h"), "--format", "none"])
    assert r.exit_code == 2 and "groupings 'split,region' and 'split_region'" in r.stderr, r.stderr
    assert "by_split_region/" in r.stderr and not (tmp_path / "h").exists()
