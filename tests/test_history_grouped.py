"""history at scale: every grouping of a report in one ``grouped.parquet`` (evaluate writes it,
history reads it instead of one table per grouping), the same results as from the
per-grouping tables, checked against the manifest, nightly == cold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalkit
from evalkit.grouped_file import (
    GROUPED_FILE,
    GroupedFile,
    grouped_table_parts,
    history_columns,
    write_grouped,
)
from evalkit.trend import history

from .test_history import REGIONS, _same_outputs, make_series, restamp
from .test_history_kinds import _flip_middle


def test_evaluate_writes_every_grouping_in_grouped_parquet(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 3000
    p = rng.uniform(0.05, 0.95, n)
    df = pd.DataFrame({"id": range(n), "prob_a": p, "prob_b": 1 - p, "label": rng.choice(["a", "b"], n),
                       "region": rng.choice(["EU", "US", ""], n), "store": rng.integers(0, 40, n),
                       "split": rng.choice(["train", "val"], n)})
    df.loc[::17, "region"] = None
    res = evalkit.evaluate(df, by=["region", "store", ["split", "region"]], out=tmp_path / "r", plots=False)
    manifest = json.loads((tmp_path / "r" / "evalkit-manifest.json").read_text())
    assert GROUPED_FILE in manifest["files"]
    g = GroupedFile(tmp_path / "r" / GROUPED_FILE, manifest["files"][GROUPED_FILE])
    try:
        for grouping in ["overall", *res.groups]:
            cols = [] if grouping == "overall" else grouping.split(",")
            stem = "overall" if grouping == "overall" else "by_" + "_".join(cols)
            own = pq.read_table(tmp_path / "r" / f"{stem}.parquet")
            want = own.select([*cols, *history_columns(own.column_names)]).replace_schema_metadata(None)
            got = g.read(grouping, cols)
            assert got.schema == want.schema, grouping  # keys typed as in the grouping's own table
            assert got.equals(want), grouping
        assert g.read("store", ["store"]).schema.field("store").type == pa.int64()
        with pytest.raises(evalkit.ReportError, match="holds no table of grouping 'nope'"):
            g.read("nope", ["nope"])
    finally:
        g.close()


def test_groupings_that_cannot_share_a_file_write_none() -> None:
    a = pa.table({"region": ["EU"], "count": [3], "mean": [0.5], "sem": [0.1]})
    b = pa.table({"split": ["x"], "count": [3.0], "mean": [0.5], "sem": [0.1]})  # count as float
    assert grouped_table_parts([("region", ("region",), a), ("split", ("split",), b)]) is None
    assert grouped_table_parts([("region", ("region",), a)]) is not None
    assert not write_grouped([("region", ("region",), a), ("split", ("split",), b)], "/nonexistent/x")


def _legacy_copy(paths: list[Path], root: Path) -> list[Path]:
    """The same reports without grouped.parquet (as evaluate wrote them before it)."""
    out = []
    for p in paths:
        q = root / p.name
        shutil.copytree(p, q)
        (q / GROUPED_FILE).unlink()
        restamp(q)
        out.append(q)
    return out


def test_history_from_grouped_parquet_equals_history_from_the_per_grouping_tables(tmp_path: Path) -> None:
    paths = make_series(tmp_path / "new", 40, seed=5, step_at=30, step=0.3, manifest=True, grouped=True)
    old = _legacy_copy(paths, tmp_path / "old")
    a = history(paths, out=tmp_path / "ha", plots=False, window=15, lookback=3)
    b = history(old, out=tmp_path / "hb", plots=False, window=15, lookback=3)
    for rel in ["history.md", "trends.parquet", "overall/2026-11.parquet",
                "by_region/2026-11.parquet", "by_region/2026-12.parquet"]:
        assert (tmp_path / "ha" / rel).read_bytes() == (tmp_path / "hb" / rel).read_bytes(), rel
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ha" / "runs.parquet").drop(columns="path"),
                                  pd.read_parquet(tmp_path / "hb" / "runs.parquet").drop(columns="path"))
    assert a.changes["run"].tolist() == b.changes["run"].tolist() == [30]
    # what history read: grouped.parquet only (sources.parquet records it)
    src = pd.read_parquet(tmp_path / "ha" / "sources.parquet")
    assert set(src["file"]) == {"summary.json", GROUPED_FILE}
    assert set(pd.read_parquet(tmp_path / "hb" / "sources.parquet")["file"]) == \
        {"summary.json", "overall.parquet", "by_region.parquet"}
    # the per-grouping tables are not opened at all: garbage in them changes nothing
    for p in paths:
        (p / "by_region.parquet").write_bytes(b"not read by history")
    c = history(paths, out=tmp_path / "hc", plots=False, window=15, lookback=3)
    assert (tmp_path / "hc" / "trends.parquet").read_bytes() == (tmp_path / "ha" / "trends.parquet").read_bytes()
    assert c.changes["run"].tolist() == [30]


def test_an_edited_grouped_parquet_is_refused_or_skipped(tmp_path: Path) -> None:
    paths = make_series(tmp_path / "r", 8, seed=2, manifest=True, grouped=True)
    f = paths[3] / GROUPED_FILE
    kept = f.read_bytes()
    _flip_middle(f)  # same size, one bit
    with pytest.raises(evalkit.ReportError, match="grouped.parquet: its content differs from what evalkit-manifest"):
        history(paths, plots=False)
    with pytest.warns(evalkit.EvalkitWarning):
        res = history(paths, plots=False, skip_bad=True)
    assert res.runs["run"].tolist() == list(range(1, 9))
    assert {s for s, _why in res.skipped} == {str(paths[3])}
    assert len(res.table("region")) == 7 * len(REGIONS)
    # a grouped.parquet that lacks a grouping its summary lists (rewritten and restamped)
    f.write_bytes(kept)
    t = pq.read_table(paths[3] / "overall.parquet")
    write_grouped([("overall", (), t)], f)
    restamp(paths[3])
    with pytest.raises(evalkit.ReportError, match="grouped.parquet: holds no table of grouping 'region'"):
        history(paths, plots=False)


def test_a_night_over_grouped_reports_gives_the_cold_result(tmp_path: Path) -> None:
    paths = make_series(tmp_path / "reports", 70, seed=7, step_at=64, step=0.3, manifest=True, grouped=True)
    out, cold = tmp_path / "hist", tmp_path / "cold"
    opts = {"gates": {"max_drift_pct": 5}, "window": 12, "lookback": 3, "plots": False}
    history(paths[:-1], out=out, **opts)
    december = (out / "by_region" / "2026-12.parquet").read_bytes()
    tonight = history(paths[1:], out=out, overwrite=True, **opts)
    assert tonight.kept_files == 2 and tonight.reused_runs == 68
    assert (out / "by_region" / "2026-12.parquet").read_bytes() == december
    full = history(paths[1:], out=cold, reuse=False, **opts)
    _same_outputs(out, cold)
    assert [str(x) for x in tonight.failures] == [str(x) for x in full.failures]
    # a December report evaluated again (its grouped.parquet changes): December anew, still cold's
    region = pq.read_table(paths[40] / "by_region.parquet")
    region = region.set_column(region.schema.get_field_index("mean"), "mean",
                               pa.array(region.column("mean").to_numpy() * 1.01))
    pq.write_table(region, paths[40] / "by_region.parquet")
    write_grouped([("overall", (), pq.read_table(paths[40] / "overall.parquet")), ("region", ("region",), region)],
                  paths[40] / GROUPED_FILE)
    restamp(paths[40])
    again = history(paths[1:], out=out, overwrite=True, **opts)
    assert again.kept_files == 4  # overall's and region's months but December (both groupings)
    history(paths[1:], out=cold, overwrite=True, reuse=False, **opts)
    _same_outputs(out, cold)


def test_grouped_file_reads_ahead_in_any_order_and_gives_each_grouping_its_own_rows(tmp_path: Path) -> None:
    """Groupings of several key types and sizes (one past READ_AHEAD_ROWS, one empty, one of
    several row groups): read in file order (batched), backwards and skipping, each comes back
    exactly as its own table."""
    import evalkit.grouped_file as gf

    rng = np.random.default_rng(0)

    def table(keys: dict[str, pa.Array], n: int) -> pa.Table:
        return pa.table({**keys, "count": pa.array(rng.integers(1, 100, n), pa.int64()),
                         "mean": rng.random(n), "sem": rng.random(n) / 10,
                         "clipped_low": pa.array(rng.integers(0, 3, n), pa.int64()), "accuracy": rng.random(n)})

    tables = [("overall", (), table({}, 1))]
    tables.append(("region", ("region",), table({"region": pa.array(["EU", None, ""], pa.large_string())}, 3)))
    tables.append(("store", ("store",), table({"store": pa.array(np.arange(9000), pa.int64())}, 9000)))
    tables.append(("day", ("day",), table({"day": pa.array([0, 1], pa.date32())}, 2)))
    tables.append(("empty", ("empty",), table({"empty": pa.array([], pa.large_string())}, 0)))
    big = gf.MAX_ROW_GROUP + 5
    tables.append(("user", ("user",), table({"user": pa.array(np.arange(big) % 1000, pa.int32())}, big)))
    tables.append(("split,region", ("split", "region"),
                   table({"split": pa.array(["a", "b"], pa.large_string()),
                          "region": pa.array(["EU", "US"], pa.large_string())}, 2)))
    f = tmp_path / GROUPED_FILE
    assert write_grouped(tables, f)
    assert pq.ParquetFile(f).metadata.num_row_groups == 7  # one per grouping; user: 2, empty: 0
    order = [name for name, _c, _t in tables]
    for sequence in (order, order[::-1], order[::2] + order[1::2]):
        g = GroupedFile(f, None)
        try:
            for name in sequence:
                cols, t = next((c, t) for n, c, t in tables if n == name)
                assert g.read(name, list(cols)).equals(t), (sequence, name)
        finally:
            g.close()


def test_impossible_statistics_in_grouped_parquet_name_the_file_grouping_column_and_rows(tmp_path: Path) -> None:
    paths = make_series(tmp_path / "r", 5, seed=1, manifest=True, grouped=True)
    region = pq.read_table(paths[2] / "by_region.parquet")
    bad = region.set_column(region.schema.get_field_index("mean"), "mean",
                            pa.array([0.4, -0.1, 0.5, 0.45]))
    write_grouped([("overall", (), pq.read_table(paths[2] / "overall.parquet")), ("region", ("region",), bad)],
                  paths[2] / GROUPED_FILE)
    restamp(paths[2])
    with pytest.raises(evalkit.ReportError, match=r"grouped.parquet \(grouping 'region'\): column 'mean' holds "
                                                  r"1 value\(s\) negative, NaN or infinite \(row 1 \(EU\): -0.1\)"):
        history(paths, plots=False)


def test_reports_with_and_without_grouped_parquet_mix_in_one_history(tmp_path: Path) -> None:
    """A history spanning the upgrade: older reports read table by table, newer ones from
    grouped.parquet, nightly and cold alike, give what reading every report table by table gives."""
    paths = make_series(tmp_path / "new", 24, seed=9, step_at=20, step=0.3, manifest=True, grouped=True)
    old = _legacy_copy(paths, tmp_path / "old")
    mixed = old[:12] + paths[12:]
    opts = {"plots": False, "window": 10, "lookback": 3}
    history(mixed[:-1], out=tmp_path / "hm", **opts)
    tonight = history(mixed, out=tmp_path / "hm", overwrite=True, **opts)
    assert tonight.reused_runs == 23
    history(old, out=tmp_path / "ho", **opts)
    for rel in ["history.md", "trends.parquet", "overall/2026-11.parquet", "by_region/2026-11.parquet"]:
        assert (tmp_path / "hm" / rel).read_bytes() == (tmp_path / "ho" / rel).read_bytes(), rel
    src = pd.read_parquet(tmp_path / "hm" / "sources.parquet")
    assert set(src.loc[src["run"] <= 12, "file"]) == {"summary.json", "overall.parquet", "by_region.parquet"}
    assert set(src.loc[src["run"] > 12, "file"]) == {"summary.json", GROUPED_FILE}


def test_key_columns_decoded_once_are_shared_by_files_with_the_same_bytes_only(tmp_path: Path) -> None:
    """KeyChunks: a key column chunk whose stored bytes equal one decoded from another report's
    file is taken from it; any other (another group set, a changed key, another type) is decoded."""
    from evalkit.grouped_file import KeyChunks

    rng = np.random.default_rng(4)

    def table(keys: dict[str, pa.Array], n: int) -> pa.Table:
        return pa.table({**keys, "count": pa.array(rng.integers(1, 100, n), pa.int64()),
                         "mean": rng.random(n), "sem": rng.random(n) / 10,
                         "clipped_low": pa.array(rng.integers(0, 3, n), pa.int64()), "accuracy": rng.random(n)})

    regions = pa.array(["EU", "US", None, ""], pa.large_string())
    nights = {
        "a": regions, "b": regions,  # the same groups: b's keys come from a's
        "c": pa.array(["EU", "US", None, "APAC"], pa.large_string()),  # one group differs
        "d": pa.array([1, 2, 3, 4], pa.int64()),  # another type
    }
    files = {}
    for night, keys in nights.items():
        tables = [("overall", (), table({}, 1)), ("region", ("region",), table({"region": keys}, 4)),
                  ("store", ("store",), table({"store": pa.array(np.arange(50) % 7, pa.int32())}, 50))]
        files[night] = (tmp_path / f"{night}.parquet", tables)
        assert write_grouped(tables, files[night][0])
    shared = KeyChunks()
    added = {}
    for night, (path, tables) in files.items():
        before = len(shared._chunks)
        g = GroupedFile(path, None, shared)
        try:
            for name, cols, want in tables:
                assert g.read(name, list(cols)).equals(want), (night, name)
        finally:
            g.close()
        added[night] = len(shared._chunks) - before
    # b's key chunks are all a's (nothing decoded anew); c's region chunk and d's int keys are new
    assert added["a"] > 0 and added["b"] == 0 and added["c"] == 1 and added["d"] > 0
    one = max(v[1] for v in shared._chunks.values())
    small = KeyChunks(limit=4 * one)  # bounded in bytes: the oldest chunks are dropped
    for path, _tables in files.values():
        g = GroupedFile(path, None, small)
        try:
            g.read("region", ["region"])
        finally:
            g.close()
    assert 0 < small._bytes <= 4 * one and len(small._chunks) < len(shared._chunks)
    assert sum(v[1] for v in small._chunks.values()) == small._bytes
    tiny = KeyChunks(limit=one)  # a chunk of more than a quarter of the limit is not kept
    g = GroupedFile(files["a"][0], None, tiny)
    try:
        assert g.read("region", ["region"]).equals(files["a"][1][1][2])
    finally:
        g.close()
    assert len(tiny._chunks) < added["a"]


def test_tidy_months_keep_min_max_of_run_id_and_created_only_and_another_layout_is_not_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evalkit.trend as trend

    paths = make_series(tmp_path / "r", 8, seed=3, manifest=True, grouped=True)
    out = tmp_path / "h"
    history(paths[:-1], out=out, plots=False)
    for f in sorted((out / "by_region").glob("*.parquet")) + sorted((out / "overall").glob("*.parquet")):
        pf = pq.ParquetFile(f)
        group = pf.metadata.row_group(0)
        with_min_max = {pf.schema_arrow.names[i] for i in range(group.num_columns)
                        if group.column(i).statistics is not None and group.column(i).statistics.has_min_max}
        assert with_min_max == {"run_id", "created"}, f
    assert history(paths, out=out, overwrite=True, plots=False).reused_runs == 7  # same layout: reused
    history(paths[:-1], out=out, overwrite=True, plots=False)
    layout = trend.TIDY_LAYOUT.decode()  # the layout the history there was written in
    monkeypatch.setattr(trend, "TIDY_LAYOUT", b"another")
    said: list[str] = []
    assert history(paths, out=out, overwrite=True, plots=False, progress=said.append).reused_runs == 0
    # said once, with why (a normal night says "reused the rows of N run(s)")
    assert [m for m in said if "not reused" in m] == [
        f"the history in {out} is not reused (its monthly tables are in another layout ({layout}; this evalkit "
        "writes another)): rebuilt from the reports"]
    assert not any("reused the rows" in m for m in said)


def test_a_history_not_reused_says_why_on_stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rt-hist7 F9: a history in --out that is not reused (another layout, another evalkit
    version, no sources.parquet) is rebuilt with one line on stderr saying why; a first run,
    --no-reuse and -q say nothing of it; a reused one says "reused the rows"."""
    from click.testing import CliRunner

    import evalkit.trend as trend
    from evalkit.cli import main

    paths = [str(p) for p in make_series(tmp_path / "r", 6, seed=5, manifest=True, grouped=True)]
    out = str(tmp_path / "h")

    def run(*flags: str) -> str:
        r = CliRunner().invoke(main, ["history", *paths, "--out", out, "--no-plots", "--format", "none", *flags])
        assert r.exit_code == 0, r.output
        return r.stderr

    assert "not reused" not in run()  # a first run: nothing there
    assert "reused the rows of 6 run(s)" in run("--overwrite")
    with monkeypatch.context() as m:
        m.setattr(trend, "TIDY_LAYOUT", b"2")
        err = run("--overwrite")  # the history there (layout 3) is rebuilt in layout 2
    lines = [ln for ln in err.splitlines() if "not reused" in ln]
    assert lines == [f"the history in {out} is not reused (its monthly tables are in another layout "
                     f"({trend.TIDY_LAYOUT.decode()}; this evalkit writes 2)): rebuilt from the reports"]
    assert "reused the rows" not in err
    assert "not reused" not in run("--overwrite", "--no-reuse") + run("--overwrite", "-q")
    with monkeypatch.context() as m:
        m.setattr(trend, "__version__", "0.0.1")
        err = run("--overwrite")
    assert f"is not reused (written by evalkit {evalkit.__version__}, this is 0.0.1): rebuilt" in err
    # rt-hist8 F1: said once out may be replaced: a history edited since evalkit wrote it is
    # refused (exit 4) without a word of rebuilding it; one whose sources.parquet is gone is
    # rebuilt, saying so
    run("--overwrite")
    sources = tmp_path / "h" / "sources.parquet"
    sources.write_bytes(b"garbage")
    r = CliRunner().invoke(main, ["history", *paths, "--out", out, "--no-plots", "--format", "none", "--overwrite"])
    assert r.exit_code == 4 and "not reused" not in r.stderr and "sources.parquet" in r.stderr, r.stderr
    sources.unlink()
    assert f"the history in {out} is not reused (it has no sources.parquet): rebuilt from the reports" \
        in run("--overwrite")


def test_grouped_file_decodes_the_next_groupings_ahead_on_a_pool(tmp_path: Path) -> None:
    """read_ahead decodes the batch after the groupings waiting decoded on the pool (one
    batch more at most): each grouping still comes back exactly as its own table, in order."""
    from concurrent.futures import ThreadPoolExecutor

    import evalkit.grouped_file as gf

    rng = np.random.default_rng(1)
    tables = [(f"g{k}", (f"g{k}",), pa.table({f"g{k}": pa.array([f"k{i}" for i in range(5)], pa.large_string()),
                                              "count": pa.array(rng.integers(1, 9, 5), pa.int64()),
                                              "mean": rng.random(5), "sem": rng.random(5)}))
              for k in range(3 * gf.READ_AHEAD + 1)]
    f = tmp_path / GROUPED_FILE
    assert write_grouped(tables, f)
    g = GroupedFile(f, None)
    try:
        for k, (name, cols, t) in enumerate(tables):
            assert g.read(name, list(cols)).equals(t), name
            with ThreadPoolExecutor(1) as pool:
                g.read_ahead(name, pool)
            waiting = [n for n, _c, _t in tables if g.decoded(n)]
            assert waiting == [n for n, _c, _t in tables[k + 1:k + 1 + len(waiting)]]  # the next ones, in order
            assert len(waiting) >= min(gf.READ_AHEAD, len(tables) - k - 1)
            assert len(waiting) < 2 * gf.READ_AHEAD
    finally:
        g.close()


def test_reads_and_reads_ahead_are_a_few_tasks_not_one_per_report(tmp_path: Path) -> None:
    """read_grouping hands its reports to the pool as at most READ_TASKS tasks (a task per
    report cost ~1 CPU-s of a year's history): every report read once, in order, and each
    file's read ahead queued once however often it is asked for."""
    from concurrent.futures import ThreadPoolExecutor

    import evalkit.grouped_file as gf
    import evalkit.reports as rp

    assert rp._parts([]) == []
    for n in (1, 7, 8, 9, 365):
        parts = rp._parts(list(range(n)), rp.READ_TASKS)
        assert 1 <= len(parts) <= rp.READ_TASKS and [i for p in parts for i in p] == list(range(n))
    tables = [(f"g{k}", (f"g{k}",), pa.table({f"g{k}": pa.array(["a", "b"], pa.large_string()),
                                              "count": pa.array([1, 2], pa.int64()), "mean": [0.1, 0.2],
                                              "sem": [0.01, 0.02]})) for k in range(3 * gf.READ_AHEAD)]
    files = []
    for j in range(20):
        f = tmp_path / f"r{j}" / GROUPED_FILE
        f.parent.mkdir()
        assert write_grouped(tables, f)
        files.append(GroupedFile(f, None))

    class Counting(ThreadPoolExecutor):
        tasks = 0

        def submit(self, fn, *a, **k):  # type: ignore[no-untyped-def]
            Counting.tasks += 1
            return super().submit(fn, *a, **k)

    class Info:
        def __init__(self, g: GroupedFile) -> None:
            self.grouped = g

    infos = [Info(g) for g in files]
    try:
        for g in files:
            assert g.read("g0", ["g0"]).equals(tables[0][2])
        with Counting(2) as pool:
            rp._read_ahead(infos, range(20), "g0", pool)  # type: ignore[arg-type]
        assert 1 <= Counting.tasks <= rp.READ_TASKS
        with Counting(2) as pool:  # enough waits decoded in every file: nothing more is queued
            rp._read_ahead(infos, range(20), "g0", pool)  # type: ignore[arg-type]
        assert Counting.tasks <= rp.READ_TASKS
        ra = gf.READ_AHEAD
        for g in files:  # the first batch, then the next one read ahead
            assert [g.decoded(f"g{k}") for k in range(3 * ra)] == [False] + [True] * (2 * ra - 1) + [False] * ra
            for k in range(1, 3 * ra):
                assert g.read(f"g{k}", [f"g{k}"]).equals(tables[k][2])
    finally:
        for g in files:
            g.close()


def test_quick_plausibility_check_never_passes_what_the_row_checks_reject(monkeypatch: pytest.MonkeyPatch) -> None:
    """reports._all_plausible (a few reductions) lets _bad_values skip its row masks only when
    those would find nothing: for each kind of bad value (and NaN, inf, unused groups,
    weighted runs), the quick check fails wherever the row checks flag a row."""
    import evalkit.reports as rp

    rng = np.random.default_rng(7)
    n = 50

    def good() -> dict[str, np.ndarray]:
        count = rng.integers(2, 100, n).astype(np.float64)
        return {"count": count, "mean": rng.random(n), "std": rng.random(n), "clipped_low": np.minimum(count, 2.0),
                "accuracy": rng.random(n), "weighted_mean": np.full(n, np.nan), "n_eff": np.full(n, np.nan)}

    edits = [("count", -1.0), ("count", 2.5), ("count", np.nan), ("count", np.inf), ("count", 0.0),
             ("mean", -0.1), ("mean", np.nan), ("mean", np.inf), ("std", -1.0), ("std", np.nan), ("std", np.inf),
             ("clipped_low", -1.0), ("clipped_low", 1e9), ("clipped_low", np.nan), ("accuracy", 1.5),
             ("accuracy", -0.5), ("accuracy", np.nan), ("weighted_mean", 0.3), ("weighted_mean", -1.0),
             ("n_eff", 5.0)]
    cases = [good(), {k: v for k, v in good().items() if k not in ("weighted_mean", "n_eff")},
             {**good(), "sem": np.full(n, np.nan)}, {k: v[:0] for k, v in good().items()}]
    for col, value in edits:
        for _ in range(3):
            s = good()
            s[col] = s[col].copy()
            s[col][rng.integers(0, n)] = value
            cases.append(s)
    flagged = 0
    for s in cases:
        quick = rp._all_plausible(s)
        with monkeypatch.context() as m:
            m.setattr(rp, "_all_plausible", lambda _s: False)
            rows = rp._bad_values(s)
        assert not (quick and rows), s
        flagged += bool(rows)
        assert rp._bad_values(s).keys() == rows.keys()
    assert rp._all_plausible(good()) and flagged >= 15


@pytest.mark.parametrize("size", [0, 10, (1 << 20) + 7, (5 << 20) + 3])
def test_block_reads_fingerprint_the_bytes_of_the_file(tmp_path: Path, size: int) -> None:
    """outdir.BlockReads (one reused block per read; GroupedFile and fingerprint_entry hash
    through it): every kind of fingerprint of a Python and of an Arrow file is the one
    evalkit.io.fingerprint_file gives reading the file's bytes."""
    import io

    import pyarrow as pa

    from evalkit.io import fingerprint_file
    from evalkit.outdir import BlockReads, fingerprint_entry

    data = np.random.default_rng(size).bytes(size)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    for kind in (None, "sha256", "sha256-head-tail"):
        want = fingerprint_file(io.BytesIO(data), size, kind)
        fh = pa.OSFile(str(f))
        try:
            assert fingerprint_file(BlockReads(fh), size, kind) == want
        finally:
            fh.close()
        with f.open("rb") as plain:
            assert fingerprint_file(BlockReads(plain), size, kind) == want
        assert fingerprint_entry(f, kind) == {"bytes": size, "fingerprint": want[0], "fingerprint_kind": want[1]}


def test_reuse_finds_the_same_reports_however_their_paths_are_spelt(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """rt-hist8 F4: sources.parquet records each report by its resolved path (reports.report_key),
    so the same unchanged reports named from another working directory, by an absolute glob,
    through '..' or './', or through a symbolic link are reused, not read again; the result is
    the one a fresh read gives."""
    import os

    paths = make_series(tmp_path / "rep" / "R", 6, seed=9, manifest=True, grouped=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "c").mkdir(parents=True)
    os.symlink(tmp_path / "rep", tmp_path / "link")
    out = tmp_path / "out" / "H"
    monkeypatch.chdir(tmp_path / "a")
    first = history("../rep/R/*/", out=out, plots=False)
    assert first.reused_runs == 0
    spellings = [(tmp_path / "a", "../rep/R/*/"), (tmp_path / "a", str(tmp_path / "rep" / "R" / "*")),
                 (tmp_path / "a", ".././rep/R/*/"), (tmp_path / "b" / "c", "../../rep/R/*"),
                 (tmp_path, "rep/R/*/"), (tmp_path, "link/R/*")]
    for cwd, spec in spellings:
        monkeypatch.chdir(cwd)
        again = history(spec, out=out, overwrite=True, plots=False)
        assert again.reused_runs == len(paths), (cwd, spec)
    history(spec, out=tmp_path / "fresh", plots=False, reuse=False)  # the last spelling, read afresh
    _same_outputs(out, tmp_path / "fresh")


def test_a_grouped_file_without_a_spread_column_is_refused(tmp_path: Path) -> None:
    """Every grouping's rows need the run's spread (sem, or std before it): a grouped.parquet
    without one is refused naming the file, for every grouping (checked once per file:
    GroupedFile.has_spread, not on the column names of each read)."""
    from evalkit.errors import ReportError
    from evalkit.reports import _read_one

    t = pa.table({"region": pa.array(["a", "b"], pa.large_string()), "count": pa.array([1, 2], pa.int64()),
                  "mean": [0.1, 0.2]})
    f = tmp_path / GROUPED_FILE
    assert write_grouped([("region", ("region",), t), ("overall", (), t.select(["count", "mean"]))], f)

    class Info:
        grouped = GroupedFile(f, None)

    try:
        for name, cols in (("region", ["region"]), ("overall", [])):
            with pytest.raises(ReportError, match=r"grouped.parquet: grouped table has no column std \(or sem\)"):
                _read_one(Info(), name, cols)  # type: ignore[arg-type]
        assert not Info.grouped.has_spread
    finally:
        Info.grouped.close()


def test_each_groupings_plot_is_queued_before_its_month_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plot helpers get a grouping's plot as soon as its tables are built, before the
    main thread hands its month files to the writer (and waits for room in its queue): they
    draw meanwhile instead of lagging into the run's tail."""
    import evalkit.trend as tr

    events: list[str] = []

    class Pool:
        def submit(self, module: str, function: str, *args: object) -> None:
            events.append(f"plot {args[1]}")

        def results(self) -> list[tuple[bool, object]]:
            return [(True, "t")] * sum(e.startswith("plot") for e in events)

        def close(self) -> None:
            pass

    real_write = tr._Writer.write

    def write(self: object, table: pa.Table, path: Path) -> None:
        events.append(f"write {path.parent.name}")
        real_write(self, table, path)  # type: ignore[arg-type]

    monkeypatch.setattr(tr, "_plot_pool", lambda wanted, figures: Pool() if wanted else None)
    monkeypatch.setattr(tr._Writer, "write", write)
    paths = make_series(tmp_path / "r", 8, seed=2, manifest=True, grouped=True)
    history([str(p) for p in paths], out=tmp_path / "h")
    plotted = [e.split()[1] for e in events if e.startswith("plot")]
    assert plotted == ["overall", "region"]
    for name in plotted:
        d = tr._tidy_dir(name)
        first_write = events.index(f"write {d}")
        assert events.index(f"plot {name}") < first_write, events
