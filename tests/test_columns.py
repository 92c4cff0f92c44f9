"""Names of the columns evalkit writes (evalkit.columns): an input column named like a per-row
output column (``--by label``, a group column ``loss``, a key ``row``) is kept under its own
name in rows.parquet, and compare groups rows by the input column, not the output one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.columns import CLASS, INPUT_PREFIX, ROW_OUTPUT_COLUMNS, rows_column

#: Every output column name, the prefix itself and names already carrying it.
NAMES = [*ROW_OUTPUT_COLUMNS, "region", "input:label", "input:input:label", "input:", "Label", "label "]


def test_rows_column_is_one_to_one_and_never_an_output_name():
    mapped = [rows_column(c) for c in NAMES]
    assert len(set(mapped)) == len(mapped)
    assert not set(mapped) & set(ROW_OUTPUT_COLUMNS)
    assert rows_column("region") == "region" and rows_column("label") == "input:label"
    assert rows_column(CLASS) == "label"  # the true-class grouping is the output's label
    assert all(rows_column(c).startswith(INPUT_PREFIX) for c in ROW_OUTPUT_COLUMNS)


def _frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([1, 1, 1], n)
    return pd.DataFrame({
        "row": np.arange(100, 100 + n),  # a key named like the output's row position
        "prob_a": p[:, 0], "prob_b": p[:, 1], "prob_c": p[:, 2],
        "target": rng.choice(list("abc"), n),
        # group columns named like output columns, holding their own values
        "label": rng.choice(["new", "old"], n), "loss": rng.choice(["x", "y"], n),
        "correct": rng.integers(1, 3, n), "predicted": rng.choice([True, False], n),
        "p_true": rng.choice(["lo", "hi"], n), "count": rng.integers(0, 2, n),
        "w": rng.random(n),
    })


GROUPS = ["label", "loss", "correct", "predicted", "p_true"]


def test_groupings_named_like_output_columns_keep_both_in_rows(tmp_path):
    df = _frame()
    df.to_parquet(tmp_path / "in.parquet")
    result = evalkit.evaluate(str(tmp_path / "in.parquet"), label="target", keys=["row"], by=GROUPS)
    out = result.write(tmp_path / "out")
    rows = pq.read_table(out / "rows.parquet").to_pandas()
    assert rows.columns.is_unique
    order = rows["row"].to_numpy()
    for c in GROUPS + ["row"]:
        # the input's values under input:<name> ...
        assert rows[INPUT_PREFIX + c].tolist() == df[c].iloc[order].tolist(), c
    # ... and the output's own columns unchanged: the true class, the loss in nats
    assert rows["label"].astype(str).tolist() == df["target"].iloc[order].tolist()
    p = df[["prob_a", "prob_b", "prob_c"]].to_numpy()[order]
    want = -np.log(p[np.arange(len(order)), df["target"].iloc[order].map({"a": 0, "b": 1, "c": 2})])
    np.testing.assert_allclose(rows["loss"], want, rtol=1e-12)
    # every grouping is by the input column
    for c in GROUPS:
        counts = result.groups[c].set_index(c)["count"]
        assert counts.to_dict() == df[c].value_counts().to_dict(), c
    hardest = result.hardest["overall"]
    assert {"input:label", "input:loss", "label", "loss"} <= set(hardest.columns)


def test_cli_by_label_when_the_label_column_is_label(tmp_path):
    df = _frame().drop(columns=["label"]).rename(columns={"target": "label"})
    df.to_parquet(tmp_path / "in.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "in.parquet"), "--by", "label",
                                    "--by", "loss", "--slices", "label,correct", "--out",
                                    str(tmp_path / "out"), "--format", "none"])
    assert res.exit_code == 0, res.output
    rows = pq.read_table(tmp_path / "out" / "rows.parquet")
    assert rows.column("input:label").to_pylist() == rows.column("label").cast("string").to_pylist()


def test_compare_groups_rows_by_the_input_column_not_the_output_one(tmp_path):
    base = _frame(300, seed=1)
    cand = base.copy()
    cand[["prob_a", "prob_b", "prob_c"]] = np.random.default_rng(2).dirichlet([1, 1, 1], len(cand))
    dirs = []
    for name, df in (("b", base), ("c", cand)):
        dirs.append(evalkit.evaluate(df, label="target", keys=["row"], by=["label", "loss"])
                    .write(tmp_path / name))
    cmp = evalkit.compare(*dirs)
    for g in ("label", "loss"):
        table = cmp.tables[g].set_index(g)
        assert (table["method"] == "paired").all(), table
        assert table["n_paired"].to_dict() == base[g].value_counts().to_dict()
        means = {k: -np.log(np.choose(v["target"].map({"a": 0, "b": 1, "c": 2}),
                                      v[["prob_a", "prob_b", "prob_c"]].to_numpy().T)).mean()
                 for k, v in cand.groupby(g)}
        for k, m in means.items():
            assert table.loc[k, "candidate_mean"] == pytest.approx(m, rel=1e-12)


@pytest.mark.parametrize(("kw", "name"), [({"by": "count"}, "count"), ({"by": [["loss", "mean"]]}, "mean"),
                                          ({"by": "delta"}, "delta"), ({"slices": ["loss", "p_value"]}, "p_value")])
def test_group_or_slice_column_named_like_a_table_column_is_refused(kw, name, tmp_path):
    df = _frame().rename(columns={"count": name}) if name != "count" else _frame()
    with pytest.raises(evalkit.UsageError, match=f"column {name!r} has the name of a column of the"):
        evalkit.evaluate(df, label="target", **kw)
    df.to_parquet(tmp_path / "in.parquet")
    flag = ["--slices", "loss," + name] if "slices" in kw else ["--by", name]
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "in.parquet"), "--label", "target", *flag,
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "has the name of a column" in res.output
    assert not (tmp_path / "out").exists()


def test_every_table_column_is_registered(tmp_path):
    """Whatever a grouped / slices table gains must be listed in evalkit.columns, so that the
    key-name check keeps covering it."""
    from evalkit.columns import GROUP_TABLE_COLUMNS, SLICE_TABLE_COLUMNS

    df = _frame(200)
    for kw in ({"weight": "w"}, {"ci": "bootstrap"}, {}):
        result = evalkit.evaluate(df, label="target", by=["loss", ["label", "loss"]], slices=["loss", "label"],
                                  **kw)
        for name, table in result.groups.items():
            keys = set(name.split(","))
            assert set(table.columns) - keys <= set(GROUP_TABLE_COLUMNS), name
        assert set(result.table("overall").columns) <= set(GROUP_TABLE_COLUMNS)
        assert set(result.slices.columns) - {"loss", "label"} <= set(SLICE_TABLE_COLUMNS)
    cmp = evalkit.compare(result, result)
    from evalkit.columns import COMPARE_TABLE_COLUMNS

    for name, table in cmp.tables.items():
        assert set(table.columns) - set(name.split(",")) <= set(COMPARE_TABLE_COLUMNS), name
