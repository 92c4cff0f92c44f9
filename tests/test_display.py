"""What a person reads stays bounded with huge group counts; the Parquet tables keep every group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from evalkit import display
from evalkit.cli import main

from .conftest import random_probs, write


def _users_file(tmp_path: Path, n: int = 6_000, users: int = 900) -> Path:
    rng = np.random.default_rng(0)
    p = random_probs(rng, n, 3)
    t = pd.DataFrame({f"prob_{c}": p[:, i] for i, c in enumerate("abc")})
    t["label"] = rng.choice(list("abc"), n)
    t["user"] = [f"user{i:05d}" for i in np.arange(n) % users]  # every user occurs
    import pyarrow as pa

    return write(pa.Table.from_pandas(t, preserve_index=False), tmp_path / "preds.parquet")


def test_bounded_groups_picks_worst_and_best_by_mean():
    df = pd.DataFrame({"g": list("abcdefgh"), "count": [1, 1, 0, 1, 1, 1, 1, 1],
                       "mean": [5.0, 1.0, np.nan, 7.0, 3.0, 0.5, 7.0, 2.0]})
    shown, left = display.bounded_groups(df, 4)
    assert shown["g"].tolist() == ["d", "g", "b", "f"]  # 2 worst (ties in table order), 2 best
    assert left == 4
    same, none_left = display.bounded_groups(df, 8)
    assert same is df and none_left == 0


def test_report_terminal_json_bounded_parquet_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(display, "MAX_JSON_GROUPS", 100)
    data = _users_file(tmp_path)
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["evaluate", str(data), "--by", "user", "--out", str(out),
                                    "--no-plots"])
    assert res.exit_code == 0, res.output
    full = pq.read_table(out / "by_user.parquet").to_pandas()
    assert len(full) == 900  # every group
    worst = full.sort_values("mean", ascending=False)["user"].iloc[0]
    best = full.sort_values("mean")["user"].iloc[0]

    # Terminal: 20 users, the worst and the best among them, and where the rest is.
    term = res.output.split("by user:")[1]
    assert sum(line.startswith("user0") for line in term.splitlines()) == display.MAX_TERMINAL_GROUPS
    assert worst in term and best in term
    assert "20 of 900 groups shown" in term and "880 more in `by_user.parquet`" in term

    md = (out / "report.md").read_text()
    section = md.split("## By user")[1].split("\n## ")[0]
    assert sum(line.startswith("| user0") for line in section.splitlines()) == display.MAX_REPORT_GROUPS
    assert worst in section and best in section and "860 more in `by_user.parquet`" in section

    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["groups"]["user"]) == 100
    assert summary["group_counts"]["user"] == 900
    assert summary["groups"]["user"][0]["user"] == worst

    # The calibration section is bounded the same way; calibration.parquet keeps every group,
    # each bin row labelled with its own group.
    calib = md.split("## Calibration")[1].split("\n## ")[0]
    assert sum("| user " in line for line in calib.splitlines()) == display.MAX_REPORT_GROUPS
    assert worst in calib and best in calib and "860 more in `by_user.parquet`" in calib
    bins = pq.read_table(out / "calibration.parquet").to_pandas()
    by_user = bins[bins["grouping"] == "user"]
    assert by_user["group"].nunique() == 900
    assert (by_user.groupby("group")["count"].sum().sort_index()
            == full.set_index("user")["count"].sort_index()).all()


def test_plots_bounded_with_many_groups(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    data = _users_file(tmp_path)
    out = tmp_path / "report"
    res = CliRunner().invoke(main, ["evaluate", str(data), "--by", "user", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    md = (out / "report.md").read_text()
    assert "Mean loss by user (40 of 900: highest and lowest mean loss)" in md
    from matplotlib.image import imread

    h, _ = imread(out / "mean_loss_by_user.png").shape[:2]
    assert h <= 1600  # the figure does not grow with the number of groups


def test_json_text_same_values_as_json_dumps_one_record_per_line():
    from evalkit.report import json_text, to_json_default

    data = {"metadata": {"a": 1, "b": [1, 2.5], "c": {"x": None}, "d": "é"},
            "groups": {"g": [{"k": "a", "v": None, "n": np.int64(3)}, {"k": "b", "v": np.float64(1.5), "n": 2}]},
            "empty": [], "none": {}, "confusion_cells": 7}
    text = json_text(data)
    assert json.loads(text) == json.loads(json.dumps(data, indent=2, default=to_json_default))
    assert '    {"k": "a", "v": null, "n": 3},\n' in text  # one record per line


def test_json_text_in_parts_is_the_whole_text():
    """summary.json is rendered before its tables' fingerprints are known (json_members), and
    the parts joined (json_object) are the text of the whole object, byte for byte."""
    from evalkit.report import json_members, json_object, json_text

    head = {"metadata": {"a": 1, "inf": float("inf"), "nan": float("nan"), "d": "é"},
            "groups": {"g": [{"k": "a", "v": float("-inf")}, {"k": "b", "v": np.float64(1.5)}]},
            "empty": [], "none": {}, "n": np.int64(7)}
    tail = {"table_fingerprints": {"a.parquet": {"bytes": 3}}}
    assert json_object(json_members(head) + json_members(tail)) == json_text({**head, **tail})
    assert json_object([]) == json_text({}) == "{}\n"


def test_summary_fingerprints_wait_for_the_tables_written_meanwhile(tmp_path):
    """write_summary renders the data first, then calls ``tables_written`` (the tables still
    being encoded on the file thread), then fingerprints every table: one written during the
    wait is in table_fingerprints."""
    from evalkit.outdir import AtomicDir

    order: list[str] = []
    atomic = AtomicDir(tmp_path / "r", command="evaluate")
    with atomic as tmp:
        def written() -> None:
            order.append("wait")
            pq.write_table(pa.table({"x": [1]}), tmp / "late.parquet")

        data = {"metadata": {"a": 1}, "groups": {}}
        atomic.write_summary(data, "summary.json", tables_written=written)
        summary = json.loads((tmp / "summary.json").read_text())
        atomic.commit()
    assert order == ["wait"] and list(summary["table_fingerprints"]) == ["late.parquet"]
    assert list(summary) == ["metadata", "groups", "table_fingerprints"] and summary["metadata"]["run_id"]


def test_top_k_above_the_limit_is_refused_up_front(tmp_path):
    from evalkit.aggregate.topk import MAX_TOP_K

    data = _users_file(tmp_path, n=50, users=5)
    res = CliRunner().invoke(main, ["evaluate", str(data), "--out", str(tmp_path / "r"),
                                    "--top-k", str(MAX_TOP_K + 1)])
    assert res.exit_code == 2
    assert f"limit of {MAX_TOP_K:,}" in res.output
    assert not (tmp_path / "r").exists()


def test_summary_json_hardest_bounded_parquet_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(display, "MAX_JSON_ROWS", 30)
    data = _users_file(tmp_path, n=2_000, users=5)
    out = tmp_path / "r"
    res = CliRunner().invoke(main, ["evaluate", str(data), "--out", str(out), "--top-k", "100",
                                    "--quiet", "--no-plots"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    hardest = pq.read_table(out / "hardest.parquet").to_pandas()
    assert summary["hardest_counts"] == {"overall": 100, "class": 300}
    assert len(summary["hardest"]["overall"]) == 30 and len(summary["hardest"]["class"]) == 30
    assert (hardest["scope"] == "class").sum() == 300
    assert summary["hardest"]["overall"][0]["loss"] == hardest["loss"].max()


@pytest.mark.parametrize("row, weighted, mean", [
    ({"mean": 0.5}, False, 0.5),                                  # unweighted run: no column
    ({"mean": 0.5, "weighted_mean": float("nan")}, False, 0.5),    # weighted column, group without weight
    ({"mean": 0.5, "weighted_mean": None}, False, 0.5),
    ({"mean": 0.5, "weighted_mean": 0.8}, True, 0.8),
])
def test_one_rule_for_the_mean_of_a_row(row, weighted, mean):
    from evalkit.display import is_weighted, row_mean
    from evalkit.gates import _row_value

    s = pd.Series(row, dtype=object)
    assert is_weighted(s) is weighted
    assert row_mean(s) == mean
    assert _row_value(s, "max_mean_loss") == mean  # the gates use the same rule


def test_worst_and_best_is_the_head_and_tail_of_the_full_sort():
    """The partition-first pick equals the head and tail of np.lexsort((positions, -mean)),
    ties (many equal means, signed zeros, infinities) in position order, NaN included."""
    rng = np.random.default_rng(8)
    for n, spread, nw, nb in [(1000, 5, 20, 20), (5000, 1000, 5000 // 2, 10), (200, 3, 30, 1),
                              (3000, 2, 7, 0), (3000, 10**6, 0, 9), (10, 4, 3, 3)]:
        mean = rng.integers(-spread, spread, n) / 4.0
        mean[:5] = [0.0, -0.0, np.inf, -np.inf, 0.0]
        for m in (mean, np.where(rng.random(n) < 0.01, np.nan, mean)):
            order = np.lexsort((np.arange(n), -m))
            want = np.concatenate([order[:nw], order[n - nb:]])
            np.testing.assert_array_equal(display.worst_and_best(m, nw, nb), want)
