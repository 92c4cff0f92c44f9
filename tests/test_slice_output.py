"""What the slice search shows and writes (red team 16): the depth actually searched, p-values
that underflow, the typed slices.parquet, duplicate slices, slice columns in rows.parquet."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main


def _frame(n: int = 3000, seed: int = 0, planted: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    y = rng.integers(0, 3, n)
    z[np.arange(n), y] += 1.0
    region = rng.choice(["EU", "US", "APAC", "LATAM"], n)
    device = rng.choice(["ios", "android", "web"], n)
    bad = (region == "LATAM") & (device == "web")
    z[bad, y[bad]] -= planted
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    df = pd.DataFrame({f"prob_{c}": p[:, c] for c in range(3)})
    df["label"] = y
    df["region"] = region
    df["device"] = device
    return df


def test_the_depth_shown_is_the_depth_searched(tmp_path):
    """'(depth 2)' was printed for a one-column search: only single values were searched."""
    df = _frame()
    one = evalkit.evaluate(df, slices=["region"], write_rows=False)
    assert one.metadata["slices"]["depth"] == 1 and one.metadata["slices"]["depth_requested"] == 2
    assert "(depth 1)" in one.to_markdown(plots=[]) and "(depth 2)" not in one.to_markdown(plots=[])
    two = evalkit.evaluate(df, slices=["region", "device"], slice_depth=3, write_rows=False)
    assert two.metadata["slices"]["depth"] == 2 and two.metadata["slices"]["depth_requested"] == 3
    assert set(two.slices["depth"]) == {1, 2}
    assert "(depth 2)" in two.to_markdown(plots=[])


def test_an_underflowed_p_value_reads_below_1e_300_and_parquet_keeps_the_float(tmp_path):
    df = _frame(30_000, seed=1, planted=6.0)
    path = tmp_path / "p.parquet"
    df.to_parquet(path)
    res = CliRunner().invoke(main, ["evaluate", str(path), "--slices", "region,device", "--out",
                                    str(tmp_path / "o"), "--no-plots"])
    assert res.exit_code == 0, res.output
    table = pq.read_table(tmp_path / "o" / "slices.parquet")
    assert table.schema.field("p_adjusted").type == "double"
    p = table.to_pandas().set_index("slice")["p_adjusted"]
    assert p["region=LATAM, device=web"] == 0.0  # underflowed: the float is kept as it is
    report = (tmp_path / "o" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| region=LATAM, device=web |"))
    assert row.rstrip(" |").endswith("<1e-300"), row
    # the terminal shows the worst slices too, with the same reading of the p-value
    term = next(line for line in res.output.splitlines() if line.startswith("region=LATAM, device=web"))
    assert term.rstrip().endswith("<1e-300"), term
    assert "significantly worse of" in res.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["slices"]["worst"][0]["p_adjusted"] == 0.0


def test_slice_columns_are_key_columns_of_rows_parquet(tmp_path):
    """Slice columns are carried into rows.parquet like --by columns (also one that comes
    from a separate labels input, and one that is also a --by column: once). A --by column of
    the labels input used to crash the run (it was read from the predictions)."""
    df = _frame(1200, seed=3).reset_index(names="id")
    rng = np.random.default_rng(3)
    labels = pd.DataFrame({"id": df["id"], "label": df["label"], "site": rng.choice(["s1", "s2"], len(df))})
    preds = df.drop(columns=["label"])
    r = evalkit.evaluate(preds, labels=labels, on="id", by=["region", "site"],
                         slices=["region", "site", "device"])
    # a --by column from the labels input (this crashed: it was read from the predictions)
    assert set(r.groups["site"]["site"]) == {"s1", "s2"}
    r.write(tmp_path / "o")
    rows = pq.read_table(tmp_path / "o" / "rows.parquet").to_pandas().sort_values("row")
    assert list(rows.columns).count("region") == 1
    for c in ("region", "site", "device"):
        assert c in rows.columns, c
    np.testing.assert_array_equal(rows["device"].to_numpy(), preds["device"].to_numpy())
    np.testing.assert_array_equal(rows["site"].to_numpy(), labels["site"].to_numpy())
    # a slice's rows read back from rows.parquet give the slice's count and mean
    s = r.slices.set_index("slice").loc["region=EU, site=s2"]
    m = (rows["region"] == "EU") & (rows["site"] == "s2")
    assert s["count"] == m.sum()
    assert s["mean"] == pytest.approx(rows.loc[m, "loss"].mean(), rel=1e-12)


def _typed_frame(n: int = 2400, seed: int = 4) -> pd.DataFrame:
    df = _frame(n, seed=seed)
    rng = np.random.default_rng(seed)
    df["age"] = pd.array(rng.choice([20, 30, 40, None], n), dtype="Int32")  # int with a null
    df["score"] = rng.choice([0.5, 1.5, np.nan], n)                          # float with NaN
    df["city"] = pd.Series(rng.choice(["a", "b", None], n), dtype=object)     # text with null
    return df


def test_slices_parquet_keeps_key_types_and_tells_a_null_value_from_not_in_the_slice(tmp_path):
    """red team 16: a null-value key read like "not in this slice", and integer slice columns
    came out as float. Keys keep their type; `columns` says which key columns are in the
    slice; null there is the null value (∅), null elsewhere "not part of this slice"."""
    df = _typed_frame()
    r = evalkit.evaluate(df, slices=["age", "score", "city"], slice_min_count=10, write_rows=False)
    assert pd.api.types.is_integer_dtype(r.slices["age"]), r.slices["age"].dtype
    r.write(tmp_path / "o")
    table = pq.read_table(tmp_path / "o" / "slices.parquet")
    assert table.schema.field("age").type in ("int32", "int64")
    assert table.schema.field("score").type == "double"
    assert table.schema.field("city").type in ("string", "large_string")
    assert table.schema.field("duplicate_of").type in ("string", "large_string")
    t = table.to_pandas()
    for c in ("age", "score", "city"):
        in_slice = t["columns"].str.split(",").map(lambda cols, c=c: c in cols)
        assert t.loc[~in_slice, c].isna().all()  # not part of the slice: null
        null_value = t[in_slice & t[c].isna()]
        # exactly the slices whose value of c is null, each labelled c=∅
        assert len(null_value) and null_value["slice"].str.contains(f"{c}=∅").all()
        assert not t.loc[in_slice & t[c].notna(), "slice"].str.contains(f"{c}=∅").any()
    # NaN and null in a float column are one missing key (as in every grouped table)
    assert (t["slice"] == "score=∅").sum() == 1
    assert t.set_index("slice").loc["score=∅", "count"] == int(df["score"].isna().sum())
    assert t.set_index("slice").loc["age=∅", "count"] == int(df["age"].isna().sum())
    one = t.set_index("slice").loc["age=30, city=∅"]
    assert one["age"] == 30 and pd.isna(one["city"]) and pd.isna(one["score"])


def _with_redundant_columns(df: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(9)
    country = rng.choice(["de", "fr", "us"], len(df))
    return df.assign(plan="pro",                                        # constant
                     country=country,
                     code=pd.Series(country).map({"de": 49, "fr": 33, "us": 1}).to_numpy())  # same rows


def test_slices_holding_the_same_rows_are_tested_once(tmp_path):
    """red team 16: a constant column, or two columns that determine each other, tested the
    same rows twice and inflated the Benjamini-Hochberg family. Rule: same row count and same
    row-set fingerprint (aggregate.slices._same_rows_as); the shallowest, first-named slice is
    kept, the others are counted as skipped duplicates and name the slice they repeat."""
    df = _with_redundant_columns(_frame(3000, seed=2, planted=1.0))
    base = evalkit.evaluate(df, slices=["region", "country"], write_rows=False)
    full = evalkit.evaluate(df, slices=["region", "country", "plan", "code"], write_rows=False)
    t = full.slices.set_index("slice")
    assert t.loc["region=EU, plan=pro", "duplicate_of"] == "region=EU"
    assert t.loc["code=49", "duplicate_of"] == "country=de"
    assert t.loc["country=de, code=49", "duplicate_of"] == "country=de"
    assert t.loc["region=EU, code=49", "duplicate_of"] == "region=EU, country=de"
    assert t.loc["plan=pro, code=1", "duplicate_of"] == "country=us"
    dups = t[t["duplicate_of"].notna()]
    assert not dups["tested"].any() and dups["p_value"].isna().all() and not dups["worse"].any()
    assert t.loc["region=EU", "duplicate_of"] is None or pd.isna(t.loc["region=EU", "duplicate_of"])
    s = full.metadata["slices"]
    assert s["skipped_duplicate"] == len(dups) > 0
    assert s["tested"] + s["skipped_small"] + s["skipped_duplicate"] == s["slices"] == len(t)
    # the family is the base run's: every p-value and adjusted p-value is the same
    b = base.slices.set_index("slice")
    assert s["tested"] == base.metadata["slices"]["tested"]
    kept = t.loc[b.index]
    np.testing.assert_allclose(kept["p_adjusted"].to_numpy(float), b["p_adjusted"].to_numpy(float),
                               rtol=1e-12, equal_nan=True)
    assert (kept["worse"] == b["worse"]).all()
    text = full.to_markdown(plots=[])
    assert f"{len(dups)} more slices held exactly the rows of a slice before them" in text


def test_equal_statistics_are_not_the_same_rows_and_batching_does_not_matter(tmp_path):
    """A constant loss gives slices of equal size identical moments: they are still different
    row sets, so none is a duplicate. The decision is the same for any batching."""
    n = 600
    df = pd.DataFrame({"prob_a": np.full(n, 0.7), "prob_b": np.full(n, 0.3), "label": np.zeros(n, int),
                       "a": np.repeat(["x", "y"], n // 2), "b": np.tile(["u", "v"], n // 2)})
    r = evalkit.evaluate(df, slices=["a", "b"], write_rows=False)
    t = r.slices.set_index("slice")
    assert t.loc[["a=x", "a=y", "b=u", "b=v"], "count"].tolist() == [300] * 4
    assert t["duplicate_of"].isna().all() and r.metadata["slices"]["skipped_duplicate"] == 0
    df2 = _with_redundant_columns(_frame(2000, seed=5))
    path = tmp_path / "p.parquet"
    df2.to_parquet(path, row_group_size=300)
    kw = dict(slices=["region", "country", "plan", "code"], write_rows=False)
    one = evalkit.evaluate(df2, **kw).slices
    streamed = evalkit.evaluate(path, batch_size=77, **kw).slices
    pd.testing.assert_series_equal(one["duplicate_of"], streamed["duplicate_of"])
