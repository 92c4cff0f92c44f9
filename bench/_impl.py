"""Baseline implementations of the benchmark job, one per subprocess.

Usage: ``python bench/_impl.py IMPL DATA_PATH OUT_DIR``

The job: read ``id``, ``split``, ``label`` and the class probabilities; per-row
``loss = -log(clip(p[label], 1e-7, 1 - 1e-7))`` in float64; statistics of the loss
by true class and by split (count, mean, sum, std with ddof=1, min, max and the
50/90/99th percentiles with linear interpolation); write ``rows.parquet`` (id, split,
label, loss), ``by_class.parquet`` (key column ``class``) and ``by_split.parquet``
(key column ``split``) as zstd Parquet into OUT_DIR.

``read-proxy`` does no computation: it reads the same columns and writes a per-row
table of the same shape (the float64 column is the first probability), which is the
physical lower bound for the job on this machine.

Each implementation imports only its own library, so peak RSS is its own.  On
success one JSON line with in-process timings is printed to stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

EPS = 1e-7
QUANTILES = (0.5, 0.9, 0.99)
STAT_COLUMNS = ("count", "mean", "std", "min", "p50", "p90", "p99", "max", "sum")
ROWS_FILE = "rows.parquet"
BY_CLASS_FILE = "by_class.parquet"
BY_SPLIT_FILE = "by_split.parquet"


def _layout(names: list[str]) -> tuple[str, list[str]]:
    """Return ("wide", prob columns) or ("list", ["probs"]) from column names."""
    if "probs" in names:
        return "list", ["probs"]
    probs = sorted((c for c in names if c.startswith("prob_")), key=lambda c: int(c[5:]))
    if not probs:
        raise ValueError("no probability columns (probs or prob_0..prob_K-1) found")
    return "wide", probs


def run_read_proxy(data: Path, out: Path) -> dict[str, float]:
    """pyarrow read of the job's columns and a same-shape per-row write, no computation."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    layout, probs = _layout(pq.read_schema(data).names)
    table = pq.read_table(data, columns=["id", "split", "label", *probs], use_threads=True)
    t1 = time.perf_counter()
    first = table[probs[0]] if layout == "wide" else pc.list_element(table["probs"], 0)
    rows = pa.table(
        {
            "id": table["id"],
            "split": table["split"],
            "label": table["label"],
            "loss": pc.cast(first, pa.float64()),
        }
    )
    del table
    pq.write_table(rows, out / ROWS_FILE, compression="zstd")
    t2 = time.perf_counter()
    return {"read_s": t1 - t0, "write_s": t2 - t1}


def _duckdb_p_expr(data: Path) -> str:
    """SQL expression for p[label] in either layout (built generically for wide)."""
    import pyarrow.parquet as pq

    layout, probs = _layout(pq.read_schema(data).names)
    if layout == "list":
        return "probs[label + 1]"
    whens = " ".join(f"WHEN {k} THEN {col}" for k, col in enumerate(probs))
    return f"CASE label {whens} END"


def _sql_str(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def run_duckdb(data: Path, out: Path) -> dict[str, float]:
    """One DuckDB SQL script: per-row loss into a temp table, COPY rows and grouped stats."""
    import duckdb

    t0 = time.perf_counter()
    p = _duckdb_p_expr(data)
    qlist = ", ".join(str(q) for q in QUANTILES)
    grouped = """
        COPY (
            SELECT {key} AS {name}, count, mean, std, min,
                   q[1] AS p50, q[2] AS p90, q[3] AS p99, max, sum
            FROM (
                SELECT {key}, count(*) AS count, avg(loss) AS mean,
                       stddev_samp(loss) AS std, min(loss) AS min, max(loss) AS max,
                       sum(loss) AS sum, quantile_cont(loss, [{qlist}]) AS q
                FROM rows GROUP BY {key}
            ) ORDER BY {key}
        ) TO {path} (FORMAT parquet, COMPRESSION zstd);
    """
    script = f"""
        CREATE TEMP TABLE rows AS
        SELECT id, split, label,
               -ln(least(greatest(CAST({p} AS DOUBLE), {EPS}), 1 - {EPS})) AS loss
        FROM read_parquet({_sql_str(data)});
        COPY rows TO {_sql_str(out / ROWS_FILE)} (FORMAT parquet, COMPRESSION zstd);
    """
    script += grouped.format(
        key="label", name='"class"', qlist=qlist, path=_sql_str(out / BY_CLASS_FILE)
    )
    script += grouped.format(
        key="split", name="split", qlist=qlist, path=_sql_str(out / BY_SPLIT_FILE)
    )
    con = duckdb.connect()
    con.execute(script)
    con.close()
    return {"total_s": time.perf_counter() - t0}


def run_polars(data: Path, out: Path) -> dict[str, float]:
    """Polars lazy scan, per-row loss expression, group_by aggregations, Parquet writes."""
    import polars as pl

    t0 = time.perf_counter()
    lf = pl.scan_parquet(data)
    schema = lf.collect_schema()
    label = pl.col("label")
    if "probs" in schema:
        probs = pl.col("probs")
        p = probs.arr.get(label) if isinstance(schema["probs"], pl.Array) else probs.list.get(label)
    else:
        _, cols = _layout(list(schema.names()))
        chain = pl.when(label == 0).then(pl.col(cols[0]))
        for k, col in enumerate(cols[1:], start=1):
            chain = chain.when(label == k).then(pl.col(col))
        p = chain.otherwise(None)
    loss = -p.cast(pl.Float64).clip(EPS, 1 - EPS).log()
    rows = lf.select("id", "split", "label", loss.alias("loss")).collect()
    t1 = time.perf_counter()
    rows.write_parquet(out / ROWS_FILE, compression="zstd")
    t2 = time.perf_counter()

    loss_col = pl.col("loss")
    aggs = [
        pl.len().cast(pl.Int64).alias("count"),
        loss_col.mean().alias("mean"),
        loss_col.std(ddof=1).alias("std"),
        loss_col.min().alias("min"),
        *(
            loss_col.quantile(q, interpolation="linear").alias(name)
            for q, name in zip(QUANTILES, ("p50", "p90", "p99"), strict=True)
        ),
        loss_col.max().alias("max"),
        loss_col.sum().alias("sum"),
    ]
    queries = [
        rows.lazy().group_by(key).agg(aggs).sort(key).rename({key: name})
        for key, name in (("label", "class"), ("split", "split"))
    ]
    by_class, by_split = pl.collect_all(queries)
    by_class.write_parquet(out / BY_CLASS_FILE, compression="zstd")
    by_split.write_parquet(out / BY_SPLIT_FILE, compression="zstd")
    t3 = time.perf_counter()
    return {"compute_s": t1 - t0, "write_rows_s": t2 - t1, "group_s": t3 - t2}


def _gather_true_prob_list(column, label):  # noqa: ANN001 - pyarrow/numpy objects
    """p[label] from a (fixed size) list column, chunk by chunk, without stacking rows."""
    import numpy as np
    import pyarrow as pa

    out = np.empty(len(label), dtype=np.float64)
    pos = 0
    for chunk in column.chunks:
        n = len(chunk)
        values = chunk.values.to_numpy(zero_copy_only=False)
        lab = label[pos : pos + n]
        if isinstance(chunk, pa.FixedSizeListArray):
            k = chunk.type.list_size
            idx = (np.arange(chunk.offset, chunk.offset + n, dtype=np.int64) * k) + lab
        else:
            idx = chunk.offsets.to_numpy()[:-1].astype(np.int64) + lab
        out[pos : pos + n] = values[idx]
        pos += n
    return out


def _grouped_pandas(keys, loss, order, name):  # noqa: ANN001 - pandas/numpy objects
    """Grouped stats: pandas groupby for the moments, sorted slices for the quantiles.

    ``order`` is ``argsort(loss)``; a stable sort of the group codes on top of it
    gives every group's losses in ascending order, from which linear-interpolation
    quantiles are read directly (pandas' groupby quantile is very slow at scale).
    """
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(keys, sort=True)
    basic = pd.DataFrame({"key": codes, "loss": loss}).groupby("key", sort=True)["loss"]
    table = basic.agg(["count", "mean", "std", "min", "max", "sum"])
    code_type = np.int16 if len(uniques) < 2**15 else np.int64  # int16: radix sort
    by_group = order[np.argsort(codes[order].astype(code_type), kind="stable")]
    sorted_loss = loss[by_group]
    counts = np.bincount(codes, minlength=len(uniques))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    for q, col in zip(QUANTILES, ("p50", "p90", "p99"), strict=True):
        pos = starts + q * (counts - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, starts + counts - 1)
        frac = pos - lo
        table[col] = sorted_loss[lo] + frac * (sorted_loss[hi] - sorted_loss[lo])
    table.insert(0, name, np.asarray(uniques))
    return table[[name, *STAT_COLUMNS]].reset_index(drop=True)


def run_pandas(data: Path, out: Path) -> dict[str, float]:
    """pandas + numpy by hand: the baseline a user would write."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    layout, probs = _layout(pq.read_schema(data).names)
    if layout == "wide":
        df = pd.read_parquet(data, columns=["id", "split", "label", *probs])
        label = df["label"].to_numpy()
        p = np.empty(len(df), dtype=np.float64)
        for k, col in enumerate(probs):  # one masked gather per class, no column_stack
            mask = label == k
            p[mask] = df[col].to_numpy()[mask]
        df = df[["id", "split", "label"]]
    else:
        table = pq.read_table(data, columns=["id", "split", "label", "probs"])
        label = table["label"].to_numpy()
        p = _gather_true_prob_list(table["probs"], label)
        df = table.drop_columns(["probs"]).to_pandas()
        del table
    t1 = time.perf_counter()
    loss = -np.log(np.clip(p, EPS, 1 - EPS))
    df["loss"] = loss
    df.to_parquet(out / ROWS_FILE, compression="zstd", index=False)
    t2 = time.perf_counter()
    order = np.argsort(loss)
    _grouped_pandas(label, loss, order, "class").to_parquet(
        out / BY_CLASS_FILE, compression="zstd", index=False
    )
    _grouped_pandas(df["split"].to_numpy(), loss, order, "split").to_parquet(
        out / BY_SPLIT_FILE, compression="zstd", index=False
    )
    t3 = time.perf_counter()
    return {"read_s": t1 - t0, "loss_write_s": t2 - t1, "group_s": t3 - t2}


IMPLS = {
    "read-proxy": run_read_proxy,
    "duckdb": run_duckdb,
    "polars": run_polars,
    "pandas": run_pandas,
}


def main(argv: list[str] | None = None) -> int:
    """Run one implementation: ``_impl.py IMPL DATA_PATH OUT_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in IMPLS:
        print(f"usage: _impl.py {{{','.join(IMPLS)}}} DATA_PATH OUT_DIR", file=sys.stderr)
        return 2
    name, data, out = args[0], Path(args[1]), Path(args[2])
    out.mkdir(parents=True, exist_ok=True)
    timings = IMPLS[name](data, out)
    print(json.dumps({"impl": name, "timings": timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
