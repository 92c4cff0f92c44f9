"""The streaming row-group reader: order, partition columns, and clean shutdown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from evalkit.io import open_source

from .conftest import write


def _dataset(tmp_path: Path) -> Path:
    for split, n in (("train", 700), ("val", 300)):
        write(pa.table({"id": np.arange(n), "x": np.random.default_rng(n).random(n),
                        "region": np.array(["a", "b", "c"])[np.arange(n) % 3]}),
              tmp_path / "ds" / f"split={split}" / "part-0.parquet", row_group_size=128)
    return tmp_path / "ds"


def test_batches_in_order_with_partition_and_dictionary_columns(tmp_path: Path):
    src = open_source(_dataset(tmp_path))
    got = [b for _, b in src.batches(["id", "x", "split", "region"], 50, dictionary_columns=["region"])]
    table = pa.Table.from_batches(got)
    assert table.num_rows == 1000
    assert all(b.num_rows <= 50 for b in got)
    assert pa.types.is_dictionary(table.schema.field("region").type)
    assert table.column("split").to_pylist() == ["train"] * 700 + ["val"] * 300
    want = pq.read_table(tmp_path / "ds" / "split=train" / "part-0.parquet")
    assert table.slice(0, 700).column("id").to_pylist() == want.column("id").to_pylist()
    assert table.column("region").cast(pa.string()).to_pylist()[:4] == ["a", "b", "c", "a"]


def test_closing_early_stops_the_reader_threads(tmp_path: Path):
    src = open_source(_dataset(tmp_path))
    before = threading.active_count()
    it = src.batches(["id", "x"], 10)
    next(it)
    it.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_an_abandoned_reader_does_not_hang_interpreter_exit(tmp_path: Path):
    ds = _dataset(tmp_path)
    code = textwrap.dedent(f"""
        from evalkit.io import open_source
        it = open_source({str(ds)!r}).batches(["id", "x"], 1)
        next(it)   # workers now block on full queues; nobody closes the generator
        raise SystemExit(0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
