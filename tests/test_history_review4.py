"""Issue 17, review 4 (/work/notes/review4.md): reuse keeps weighted runs' n_eff and interval
(F1), a gate on a grouping the latest run lacks is never dropped (F2), segments never join runs
of different eps through a run that recorded none (F3)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evalkit
from evalkit.trend import history

from .test_history import DAY0, REGIONS, _same_outputs, _stats, make_report


def test_a_night_reusing_weighted_runs_gives_the_cold_result(tmp_path: Path) -> None:
    """F1: rows of weighted runs taken from last night's history keep their n_eff and their
    interval (t with n_eff - 1 df), byte for byte as a fresh read; unweighted runs beside
    them (a weight change starts a segment) stay unweighted."""
    rng = np.random.default_rng(0)

    def night(i: int, weight: str | None) -> None:
        n = 600
        p = rng.dirichlet(np.ones(3), n)
        df = pd.DataFrame({f"prob_{c}": p[:, j] for j, c in enumerate("abc")})
        df["label"] = np.array(list("abc"))[rng.integers(0, 3, n)]
        df["region"] = rng.choice(["EU", "US"], n)
        df["w"] = rng.uniform(0.2, 3, n)
        evalkit.evaluate(df, by=["region"], weight=weight, label="label", out=tmp_path / f"runs/n{i:02d}",
                         plots=False)

    for i in range(5):
        night(i, None if i == 0 else "w")
    spec = str(tmp_path / "runs" / "*")
    opts = {"lookback": 2, "plots": False}
    history(spec, out=tmp_path / "h", **opts)
    night(5, "w")
    tonight = history(spec, out=tmp_path / "h", overwrite=True, **opts)
    cold = history(spec, out=tmp_path / "cold", reuse=False, **opts)
    assert tonight.reused_runs == 5
    _same_outputs(tmp_path / "h", tmp_path / "cold")
    t = tonight.table("region")
    assert t["n_eff"].isna().tolist() == [True] * 2 + [False] * 10  # night 0 unweighted
    pd.testing.assert_frame_equal(t, cold.table("region"))


def _reports(root: Path, eps: list[float | None], drop_region: tuple[int, ...] = (),
             step: tuple[int, float] | None = None) -> list[Path]:
    rng = np.random.default_rng(1)
    base = np.array([0.40, 0.55, 0.60, 0.45])
    out = []
    for r, e in enumerate(eps):
        true = base.copy()
        if step is not None and r >= step[0]:
            true[REGIONS.index("LATAM")] *= step[1]
        m = true + rng.standard_normal(4) / math.sqrt(2000)
        groups = {} if r in drop_region else {"region": _stats({"region": REGIONS}, m, 2000, 1.0)}
        out.append(make_report(root, f"r{r:02d}", DAY0 + pd.Timedelta(days=r), groups, eps=e, manifest=True))
    return out


@pytest.mark.parametrize("latest_eps", [1e-7, 1e-6])
def test_a_gate_on_a_grouping_the_latest_run_lacks_is_reported_whatever_its_settings(
        tmp_path: Path, latest_eps: float) -> None:
    """F2: the latest run lacks the region grouping; whether or not its settings match the
    earlier runs' (an odd night leaves the region trend empty), the drift gate on region is
    'not checked', and fails under fail_unchecked: never silently dropped."""
    paths = _reports(tmp_path, [1e-7] * 9 + [latest_eps], drop_region=(9,))
    gates = {"max_drift": 0.01, "groups": {"region": {"max_mean_loss": 0.1}}}
    h = history(paths, gates=gates, lookback=3, plots=False)
    assert h.metadata["absent_from_latest"] == {"region": 9}
    why = [(f.gate, f.detail) for f in h.unchecked if f.grouping == "region"]
    assert ("max_drift", "the grouping is absent from the latest run (last in run 9)") in why
    strict = history(paths, gates={**gates, "fail_unchecked": True}, lookback=3, plots=False)
    assert ("max_drift", "region") in {(f.gate, f.grouping) for f in strict.failures}
    assert not strict.passed


def test_runs_of_different_eps_never_share_a_segment_through_a_run_without_eps(tmp_path: Path) -> None:
    """F3: runs 1-3 recorded no eps (matches any), runs 4-7 eps 1e-7, runs 8-11 eps 1e-6 with
    a level shift: runs 8-11 are a segment of their own (the eps change is not a change of
    the loss), runs 1-7 one segment."""
    paths = _reports(tmp_path, [None] * 3 + [1e-7] * 4 + [1e-6] * 4, step=(7, 1.5))
    h = history(paths, lookback=2, plots=False)
    assert h.runs["segment"].tolist() == [1] * 7 + [2] * 4
    assert h.runs.loc[7, "note"] == "new segment (eps 1e-07 -> 1e-06)"
    assert h.trends["region"]["runs"].tolist() == [4] * 4
    assert h.changes.empty
    # back to 1e-7 after the 1e-6 nights: segment 1 again, compared with runs 1-7
    more = _reports(tmp_path / "more", [None] * 3 + [1e-7] * 4 + [1e-6] * 4 + [1e-7])
    h = history(more, lookback=2, plots=False)
    assert h.runs["segment"].tolist() == [1] * 7 + [2] * 4 + [1]
    assert h.trends["region"]["runs"].tolist() == [8] * 4


def test_signed_zero_keys_of_older_reports_are_one_group(tmp_path: Path) -> None:
    """F5: reports written before evaluate made -0.0 and 0.0 one key hold -0.0; later ones
    0.0: one group over all runs (as evaluate groups them), its drift measurable; NaN and
    null keys likewise one missing group."""
    paths = []
    for r in range(6):
        zero = -0.0 if r < 3 else 0.0
        missing = float("nan") if r % 2 else None
        df = _stats({"temp": [zero, 1.0, missing]}, np.array([0.5, 0.6, 0.7]) + 0.01 * r, 1000, 1.0)
        paths.append(make_report(tmp_path, f"r{r}", DAY0 + pd.Timedelta(days=r), {"temp": df}, manifest=True))
    h = history(paths, lookback=3, gates={"max_drift": 0.001, "fail_unchecked": True}, plots=False)
    tr = h.trends["temp"]
    assert len(tr) == 3 and tr["runs"].tolist() == [6, 6, 6]
    assert not np.signbit(tr["temp"].iloc[0]) and tr["temp"].iloc[0] == 0.0 and pd.isna(tr["temp"].iloc[2])
    assert {f.group for f in h.failures if f.grouping == "temp"} == {"0.0", "1.0", "∅"}
    assert all("no rows in the reference run" not in f.detail for f in h.failures)
    t = h.table("temp")
    assert not np.signbit(t["temp"].dropna()).any() and t["temp"].isna().sum() == 6


def test_max_change_pct_is_not_checked_when_the_window_is_too_short_for_the_scan(tmp_path: Path) -> None:
    """F6 (review finding 6): window 3 with min_before 3: no split can be scanned, so the
    change gate is 'not checked' (fails under fail_unchecked), never a silent pass."""
    paths = _reports(tmp_path, [1e-7] * 12, step=(10, 2.0))
    h = history(paths, lookback=2, window=3, gates={"max_change_pct": 0}, plots=False)
    notes = [(f.gate, f.grouping, f.detail) for f in h.unchecked]
    assert ("max_change_pct", "region", "12 run(s) in the series, but the scan sees a window of 3; the "
            "change scan needs at least 4") in notes
    strict = history(paths, lookback=2, window=3, gates={"max_change_pct": 0, "fail_unchecked": True},
                     plots=False)
    assert ("max_change_pct", "region") in {(f.gate, f.grouping) for f in strict.failures}
    # a window long enough: checked, and the doubling fails
    ok = history(paths, lookback=2, window=12, gates={"max_change_pct": 0}, plots=False)
    assert ("max_change_pct", "region", "LATAM") in {(f.gate, f.grouping, f.group) for f in ok.failures}


def test_one_directory_named_relative_and_absolute_is_one_input(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """F8: a report named by a glob (absolute) and again by a relative path (through ..) is
    one input, not a copy of itself."""
    import os
    import warnings

    paths = _reports(tmp_path / "runs", [1e-7] * 4)
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    monkeypatch.chdir(sub)
    rel = os.path.relpath(paths[2])
    assert rel.startswith("..")
    with warnings.catch_warnings():
        warnings.simplefilter("error", evalkit.EvalkitWarning)
        h = history([str(tmp_path / "runs" / "*"), rel, str(paths[1]) + "/"], lookback=2, plots=False)
    assert h.duplicates == [] and len(h.runs) == 4
    assert h.runs["path"].tolist() == [str(p) for p in paths]


def test_a_key_column_whose_kind_changes_between_runs_is_noted_as_compare_notes_it(tmp_path: Path) -> None:
    """rt17 finding 4: store ids written as numbers by older runs and as text by newer ones are
    matched on their text form (7 = '7'), with the note compare gives: stderr and history.md."""
    paths = []
    for r in range(6):
        ids: list = [7, 8] if r < 3 else ["7", "8"]
        df = _stats({"store": ids}, np.array([0.5, 0.6]) + 0.001 * r, 1000, 1.0)
        paths.append(make_report(tmp_path, f"r{r}", DAY0 + pd.Timedelta(days=r), {"store": df}, manifest=True))
    note = ("grouping 'store': key column 'store' holds number values in some runs, string values in "
            "others; groups were matched on their text form (7 = '7')")
    with pytest.warns(evalkit.EvalkitWarning, match=r"holds number values in some runs, string values"):
        h = history(paths, lookback=3, plots=False)
    assert h.notes == [note]
    assert h.trends["store"]["store"].tolist() == ["7", "8"] and h.trends["store"]["runs"].tolist() == [6, 6]
    assert f"> Note: {note}" in h.to_markdown()
    # one kind throughout: no note
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", evalkit.EvalkitWarning)
        assert history(paths[:3], lookback=2, plots=False).notes == []


def test_a_group_with_no_standard_error_in_any_run_gives_no_numpy_warning() -> None:
    """rt17 finding 3b: one-row groups (sem NaN in every run): the scan runs without numpy's
    'Mean of empty slice' on stderr."""
    import warnings

    from evalkit.trend import detect_changes

    rng = np.random.default_rng(2)
    means = 0.5 + rng.normal(0, 0.01, (10, 3))
    sems = np.full((10, 3), 0.01)
    sems[:, 1] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan = detect_changes(means, sems)
    assert (scan.candidates == 9).all() and np.isfinite(scan.p).all()
