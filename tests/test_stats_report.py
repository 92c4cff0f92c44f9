"""Intervals, calibration, slice search and disparity through evaluate(), the report and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main

K = 3


def _frame(n: int = 3000, seed: int = 0, planted: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, K))
    y = rng.integers(0, K, n)
    z[np.arange(n), y] += 1.0
    region = rng.choice(["EU", "US", "APAC", "LATAM"], n)
    device = rng.choice(["ios", "android", "web"], n)
    bad = (region == "LATAM") & (device == "web")
    z[bad, y[bad]] -= planted  # a slice where the model is worse
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    df = pd.DataFrame({f"prob_{c}": p[:, c] for c in range(K)})
    df["label"] = y
    df["region"] = region
    df["device"] = device
    df["split"] = rng.choice(["train", "val"], n)
    df["w"] = rng.uniform(0.1, 3.0, n)
    return df


NEW_COLUMNS = ("sem", "ci_low", "ci_high", "ece", "mce", "brier", "entropy")


def test_streaming_equals_in_memory_for_every_new_statistic(tmp_path):
    """Batches of 97 rows from a Parquet file with 500-row groups == one in-memory pass."""
    df = _frame()
    path = tmp_path / "p.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=500)
    kw = dict(by="region", slices=["region", "device"], ci="bootstrap", bootstrap_samples=40,
              write_rows=False)
    mem = evalkit.evaluate(df, **kw)
    streamed = evalkit.evaluate(path, batch_size=97, **kw)
    for name in ["overall", *mem.groups]:
        a, b = mem.table(name), streamed.table(name)
        for c in NEW_COLUMNS:
            np.testing.assert_allclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=1e-11,
                                       equal_nan=True, err_msg=f"{name}.{c}")
    pd.testing.assert_frame_equal(mem.calibration, streamed.calibration, rtol=1e-12)
    pd.testing.assert_frame_equal(mem.slices, streamed.slices, rtol=1e-9)
    assert len(mem.disparity) == len(streamed.disparity)
    for a, b in zip(mem.disparity, streamed.disparity, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == (pytest.approx(b[k], rel=1e-12) if isinstance(a[k], float) else b[k]), k


def test_bootstrap_is_deterministic_seeded_and_close_to_the_t_interval():
    df = _frame(4000, seed=1)
    a = evalkit.evaluate(df, ci="bootstrap", bootstrap_samples=200, write_rows=False, batch_size=333)
    b = evalkit.evaluate(df, ci="bootstrap", bootstrap_samples=200, write_rows=False, batch_size=4000)
    c = evalkit.evaluate(df, ci="bootstrap", bootstrap_samples=200, bootstrap_seed=5, write_rows=False)
    t = evalkit.evaluate(df, write_rows=False)
    assert (a.overall["ci_low"], a.overall["ci_high"]) == pytest.approx((b.overall["ci_low"], b.overall["ci_high"]), rel=1e-12)
    assert a.overall["ci_low"] != c.overall["ci_low"]
    # 200 replicates: the percentile interval is within ~15% of the t-interval's width
    wt = t.overall["ci_high"] - t.overall["ci_low"]
    wb = a.overall["ci_high"] - a.overall["ci_low"]
    assert abs(wb - wt) / wt < 0.15
    assert "bootstrap" in a.metadata["ci_method"]


def test_weighted_interval_uses_kish_and_says_so():
    import scipy.stats as st

    df = _frame(2000, seed=2)
    r = evalkit.evaluate(df, weight="w", write_rows=False)
    loss = evalkit.cross_entropy(df[[f"prob_{c}" for c in range(K)]].to_numpy(), df["label"].to_numpy())
    w = df["w"].to_numpy()
    n_eff = w.sum() ** 2 / (w * w).sum()
    m = np.average(loss, weights=w)
    sd = np.sqrt(np.average((loss - m) ** 2, weights=w) * n_eff / (n_eff - 1))
    lo, hi = st.t.interval(0.95, n_eff - 1, loc=m, scale=sd / np.sqrt(n_eff))
    o = r.overall
    assert o["n_eff"] == pytest.approx(n_eff, rel=1e-12)
    assert (o["ci_low"], o["ci_high"]) == pytest.approx((lo, hi), rel=1e-10)
    assert "Kish" in r.metadata["ci_method"]
    md = r.to_markdown()
    assert "weighted_mean \\[95% CI\\]" in md  # the table's interval column (escaped brackets)
    assert md.index("weighted mean") < md.index("(95% CI")  # headline: CI next to the weighted mean


def test_calibration_through_every_layout_equals_by_hand(tmp_path):
    rng = np.random.default_rng(3)
    n = 1500
    z = rng.normal(0, 2, (n, K))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = rng.integers(0, K, n)
    brier = ((p - np.eye(K)[y]) ** 2).sum(axis=1).mean()
    ent = -(p * np.log(p)).sum(axis=1).mean()
    wide = pd.DataFrame({f"prob_{c}": p[:, c] for c in range(K)}).assign(label=y)
    lst = pd.DataFrame({"probs": list(p), "label": y})
    logits = pd.DataFrame({f"logit_{c}": z[:, c] for c in range(K)}).assign(label=y)
    onehot = pd.DataFrame({f"prob_{c}": p[:, c] for c in range(K)})
    for c in range(K):
        onehot[f"target_{c}"] = (y == c).astype(float)
    for df in (wide, lst, logits, onehot):
        o = evalkit.evaluate(df, write_rows=False).overall
        assert o["brier"] == pytest.approx(brier, rel=1e-9)
        assert o["entropy"] == pytest.approx(ent, rel=1e-9)
    # binary: one P(class 1) column
    p1 = rng.uniform(size=n)
    yb = (rng.uniform(size=n) < p1).astype(int)
    from sklearn.metrics import brier_score_loss

    o = evalkit.evaluate(pd.DataFrame({"p1": p1, "label": yb}), predictions=["p1"], write_rows=False).overall
    assert o["brier"] == pytest.approx(2 * brier_score_loss(yb, p1), rel=1e-9)


def test_reports_show_intervals_slices_disparity_and_calibration(tmp_path):
    df = _frame(6000, seed=4, planted=1.5)
    r = evalkit.evaluate(df, by="region", slices=["region", "device"], write_rows=False)
    out = r.write(tmp_path / "rep")
    md = (out / "report.md").read_text()
    head = md.split("| run |")[0]
    assert "significantly worse slice" in head and "region=LATAM, device=web" in head
    assert "mean \\[95% CI\\]" in md and "## Disparity" in md and "## Calibration" in md
    summary = json.loads((out / "summary.json").read_text())
    assert summary["slices"]["worst"][0]["slice"] == "region=LATAM, device=web"
    assert {d["grouping"] for d in summary["disparity"]} >= {"class", "region", "split"}
    reg = next(d for d in summary["disparity"] if d["grouping"] == "region")
    g = r.groups["region"]
    assert reg["worst_mean"] == g["mean"].max() and reg["gap"] == pytest.approx(g["mean"].max() - g["mean"].min())
    assert reg["worst_ratio"] == pytest.approx(g["mean"].max() / r.mean)
    cal = pq.read_table(out / "calibration.parquet").to_pandas()
    assert set(cal["grouping"]) == {"overall", "class", "split", "region"}
    assert cal.groupby("grouping")["count"].sum().eq(6000).all()
    sl = pq.read_table(out / "slices.parquet").to_pandas()
    assert {"slice", "count", "mean", "diff", "ci_low", "ci_high", "p_value", "p_adjusted",
            "effect_size", "significant", "worse"} <= set(sl.columns)


def test_weighted_slices_use_the_weights_and_say_so(tmp_path):
    """--weight: slice means are weighted means of the per-row loss, n_eff is Kish's, and the
    report says the slice search is weighted (the weights are never silently ignored)."""
    df = _frame(planted=1.0)
    r = evalkit.evaluate(df, weight="w", slices=["region", "device"], spool_dir=tmp_path)
    rows = r.rows.assign(region=df["region"], device=df["device"], w=df["w"])
    row = r.slices[r.slices["slice"] == "region=LATAM, device=web"].iloc[0]
    mask = (rows.region == "LATAM") & (rows.device == "web")
    s, c = rows[mask], rows[~mask]
    assert row["mean"] == pytest.approx(np.average(s.loss, weights=s.w), rel=1e-12)
    assert row["complement_mean"] == pytest.approx(np.average(c.loss, weights=c.w), rel=1e-12)
    assert row["n_eff"] == pytest.approx(s.w.sum() ** 2 / (s.w ** 2).sum(), rel=1e-12)
    assert row["worse"]
    assert r.metadata["slices"]["weight"] == "w"
    md = r.to_markdown(plots=[])
    assert "Weighted by `w`" in md and "effective sample size" in md
    unweighted = evalkit.evaluate(df, slices=["region", "device"], write_rows=False)
    assert "n_eff" not in unweighted.slices.columns
    assert unweighted.metadata["slices"]["weight"] is None and "Weighted by" not in unweighted.to_markdown(plots=[])


def test_slice_columns_a_new_user_might_pass(tmp_path):
    """A slice column with nulls, one with a single value, a list column, all-zero weights."""
    df = _frame(600, seed=10)
    df["maybe"] = np.where(np.arange(600) % 3 == 0, None, df["region"])
    df["one"] = "x"
    r = evalkit.evaluate(df, slices=["maybe", "one"], write_rows=False)
    assert "maybe=∅" in set(r.slices["slice"])
    one = r.slices[r.slices["slice"] == "one=x"].iloc[0]
    assert one["complement_count"] == 0 and not one["tested"]
    assert "(the slice or the rest of the data has fewer than 30 rows)" in r.to_markdown(plots=[])
    with pytest.raises(evalkit.errors.ColumnTypeError, match="slice column 'l'"):
        evalkit.evaluate(df.assign(l=[[1, 2]] * 600), slices=["l"], write_rows=False)
    w = np.where(df["region"] == "EU", 0.0, 1.0)
    r = evalkit.evaluate(df.assign(w=w), weight="w", slices=["region"], write_rows=False)
    assert r.metadata["slices"]["skipped_no_weight"] == 1
    assert "too little weight" in r.to_markdown(plots=[])


def test_no_slice_found_and_capped_note():
    df = _frame(3000, seed=5)
    df["user"] = np.arange(len(df)).astype(str)
    r = evalkit.evaluate(df, slices=["region", "user"], slice_limit=500, write_rows=False)
    md = r.to_markdown()
    assert "skipped: more than 500 distinct" in md and "**user**" in md
    assert {c["columns"] for c in r.metadata["slices"]["capped"]} == {"user", "region,user"}


def test_gate_on_the_whole_interval():
    df = _frame(400, seed=6)
    r = evalkit.evaluate(df, write_rows=False)
    mid = (r.overall["ci_low"] + r.overall["mean"]) / 2  # mean above, interval not wholly above
    plain = evalkit.evaluate(df, write_rows=False, gates={"max_mean_loss": mid})
    on_ci = evalkit.evaluate(df, write_rows=False,
                             gates={"max_mean_loss": mid, "require_ci_above_limit": True})
    below = evalkit.evaluate(df, write_rows=False,
                             gates={"max_mean_loss": r.overall["ci_low"] * 0.9,
                                    "require_ci_above_limit": True})
    assert len(plain.gate_failures) == 1 and "CI [" in str(plain.gate_failures[0])
    assert on_ci.gate_failures == []
    assert len(below.gate_failures) == 1


def test_gate_of_a_weighted_run_checks_the_weighted_mean_and_its_interval():
    """The interval of a weighted run is of the weighted mean: max_mean_loss (and
    require_ci_above_limit) check that figure, not the unweighted mean."""
    df = _frame(3000, seed=9)
    loss = evalkit.cross_entropy(df[[f"prob_{c}" for c in range(K)]].to_numpy(), df["label"].to_numpy())
    df["w"] = np.where(loss > np.median(loss), 5.0, 0.2)  # weight the hard rows
    r = evalkit.evaluate(df, weight="w", write_rows=False)
    o = r.overall
    assert o["mean"] < o["ci_low"]  # the unweighted mean lies below the whole weighted interval
    limit = (o["mean"] + o["ci_low"]) / 2
    for on_ci in (False, True):
        g = evalkit.evaluate(df, weight="w", write_rows=False,
                             gates={"max_mean_loss": limit, "require_ci_above_limit": on_ci})
        assert len(g.gate_failures) == 1, on_ci
        assert g.gate_failures[0].observed == pytest.approx(o["weighted_mean"], rel=1e-12)
        assert "weighted mean, n_eff" in str(g.gate_failures[0])
    assert evalkit.evaluate(df, weight="w", write_rows=False,
                            gates={"max_mean_loss": o["ci_high"] * 1.01}).gate_failures == []


def test_disparity_of_a_weighted_run_ranks_weighted_means():
    df = _frame(3000, seed=11)
    df["w"] = np.where(df["region"] == "APAC", 50.0, 1.0) * np.where(df["label"] == 0, 1.0, 0.01)
    r = evalkit.evaluate(df, weight="w", by="region", write_rows=False)
    reg = next(d for d in r.disparity if d["grouping"] == "region")
    g = r.groups["region"].set_index("region")
    assert reg["statistic"] == "weighted_mean"
    assert reg["worst"] == g["weighted_mean"].idxmax() and reg["best"] == g["weighted_mean"].idxmin()
    assert reg["worst_mean"] == pytest.approx(g["weighted_mean"].max(), rel=1e-12)
    assert reg["worst_ratio"] == pytest.approx(g["weighted_mean"].max() / r.overall["weighted_mean"], rel=1e-12)
    assert "by weighted mean loss" in r.to_markdown(plots=[])
    plain = evalkit.evaluate(df, by="region", write_rows=False)
    assert next(d for d in plain.disparity if d["grouping"] == "region")["statistic"] == "mean"


def test_cli_flags_and_bad_values(tmp_path):
    df = _frame(2000, seed=7, planted=1.5)
    path = tmp_path / "p.parquet"
    df.to_parquet(path)
    runner = CliRunner()
    res = runner.invoke(main, ["evaluate", str(path), "--slices", "region,device", "--slice-depth", "1",
                               "--confidence", "0.9", "--calibration-bins", "10", "--out",
                               str(tmp_path / "o"), "--no-plots", "-q", "--format", "none"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["metadata"]["confidence"] == 0.9 and summary["metadata"]["calibration_bins"] == 10
    assert summary["slices"]["depth"] == 1
    assert "90% CI" in (tmp_path / "o" / "report.md").read_text()  # (escaped or not)
    for bad in (["--confidence", "1.5"], ["--calibration-bins", "0"], ["--slices", "nope"],
                ["--slice-fdr", "0"]):
        res = runner.invoke(main, ["evaluate", str(path), "--out", str(tmp_path / "x"), "-q", *bad])
        assert res.exit_code in (2, 3), (bad, res.output)
        assert "error" in res.output.lower()


def test_slice_on_the_label_column_and_a_joined_column(tmp_path):
    """A slice column may be the label column itself (its name is also an output column)."""
    df = _frame(1500, seed=8)
    path = tmp_path / "p.parquet"
    df.to_parquet(path)
    r = evalkit.evaluate(path, slices=["label", "region"], spool_dir=tmp_path)
    assert "label=0" in set(r.slices["slice"])
    # slice columns are key columns of rows.parquet, like --by columns; the label column keeps
    # its name for the per-row output and the input's label is carried as input:label
    assert "region" in r.rows.columns and "input:label" in r.rows.columns
    assert (r.rows["region"].to_numpy() == df["region"].to_numpy()).all()
