"""What the slice search shows and writes (red team 16): the depth actually searched, p-values
that underflow, the typed slices.parquet, duplicate slices, slice columns in rows.parquet."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
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
