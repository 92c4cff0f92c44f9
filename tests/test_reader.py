"""The streaming row-group reader: order, partition columns, and clean shutdown."""

from __future__ import annotations

import os
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


def _tiny_row_groups(path: Path, n: int = 7000, size: int = 7) -> pa.Table:
    rng = np.random.default_rng(3)
    # Each row group holds other strings, so their Arrow dictionaries differ.
    table = pa.table({"id": np.arange(n), "x": rng.random(n),
                      "user": [f"u{i // size}" for i in range(n)]})
    write(table, path, row_group_size=size)
    return table


def test_tiny_row_groups_are_read_in_full_batches_with_each_footer_parsed_once(tmp_path, monkeypatch):
    import evalkit._reader as reader

    table = _tiny_row_groups(tmp_path / "tiny.parquet")
    assert pq.ParquetFile(tmp_path / "tiny.parquet").num_row_groups == 1000
    opened_without_footer = []
    real = reader.pq.ParquetFile

    def spy(source, *args, **kw):
        if kw.get("metadata") is None:
            opened_without_footer.append(source)
        return real(source, *args, **kw)

    monkeypatch.setattr(reader.pq, "ParquetFile", spy)
    got = [b for _, b in open_source(tmp_path / "tiny.parquet").batches(
        ["id", "x", "user"], 1024, dictionary_columns=["user"])]
    sizes = [b.num_rows for b in got]
    # Full batches, but for one short batch where each run of row groups ends (2 runs).
    assert max(sizes) == 1024 and sum(sizes) == 7000 and len(sizes) <= 7 + 2
    assert sum(s < 512 for s in sizes) <= 2
    assert opened_without_footer == []  # every read reuses the footer parsed at open
    out = pa.Table.from_batches(got)
    assert out.column("id").to_pylist() == table.column("id").to_pylist()
    assert out.column("user").cast(pa.string()).to_pylist() == table.column("user").to_pylist()


def test_reader_reads_a_footer_itself_once_when_not_given(tmp_path, monkeypatch):
    import evalkit._reader as reader

    _tiny_row_groups(tmp_path / "tiny.parquet", n=700)
    calls = []
    real = reader.pq.read_metadata
    monkeypatch.setattr(reader.pq, "read_metadata", lambda src: calls.append(src) or real(src))
    schema = pq.read_schema(tmp_path / "tiny.parquet")
    rr = reader.RowGroupReader([reader.FilePart(str(tmp_path / "tiny.parquet"), {}, 100,
                                                tuple(range(10, 60)))],
                               ["id"], schema, batch_size=64, open_file=lambda p: p)
    ids = pa.Table.from_batches([b for _, b in rr]).column("id").to_pylist()
    assert ids == list(range(70, 420))  # exactly row groups 10..59, in order
    assert len(calls) == 1


def test_rebatch_joins_short_pieces_and_never_copies_big_ones():
    from evalkit._reader import rebatch

    def pieces(*sizes: int) -> list[pa.RecordBatch]:
        out, start = [], 0
        for n in sizes:
            out.append(pa.record_batch({"a": pa.array(range(start, start + n))}))
            start += n
        return out

    tiny = pieces(*([3] * 10))
    out = list(rebatch(iter(tiny), 8))
    assert [b.num_rows for b in out] == [8, 8, 8, 6]
    assert pa.Table.from_batches(out).column("a").to_pylist() == list(range(30))
    # A remainder followed by full batches: sent alone; the full ones go through untouched.
    big = pieces(8, 8, 3, 8, 8, 2)
    out = list(rebatch(iter(big), 8, pass_rows=4))
    assert [b.num_rows for b in out] == [8, 8, 3, 8, 8, 2]
    assert all(o is b for o, b in zip(out, big, strict=True))
    assert pa.Table.from_batches(out).column("a").to_pylist() == list(range(37))


def _count_tasks_alive(monkeypatch) -> dict[str, int]:
    """Count the reader's tasks as they start and finish; ``peak``: most alive at once."""
    import evalkit._reader as reader

    counts = {"started": 0, "done": 0, "peak": 0}
    real_work, real_put = reader.RowGroupReader._work, reader._put

    def work(self, part, rgs, out, stop):
        counts["started"] += 1
        counts["peak"] = max(counts["peak"], counts["started"] - counts["done"])
        real_work(self, part, rgs, out, stop)

    def put(out, item, stop):
        if item is reader._DONE:
            counts["done"] += 1  # before the consumer can see it
        return real_put(out, item, stop)

    monkeypatch.setattr(reader.RowGroupReader, "_work", work)
    monkeypatch.setattr(reader, "_put", put)
    return counts


def test_queue_depth_shrinks_for_big_batches():
    import evalkit._reader as reader

    class _Footer:  # one row group of 100k rows, row_bytes wide (uncompressed), one leaf column
        def __init__(self, row_bytes: int) -> None:
            self.rg = type("Rg", (), {"num_rows": 100_000, "total_byte_size": 100_000 * row_bytes})()
            leaf = type("Leaf", (), {"path": "p"})()
            self.schema = type("Schema", (), {"__len__": lambda s: 1, "column": lambda s, j: leaf})()

        def row_group(self, i: int):
            return self.rg

    def reader_for(row_bytes: int, batch: int) -> tuple[reader.RowGroupReader, reader.FilePart]:
        part = reader.FilePart("f", {}, 1, metadata=_Footer(row_bytes))  # type: ignore[arg-type]
        return reader.RowGroupReader([part], ["p"], pa.schema([]), batch_size=batch,
                                     open_file=lambda p: p, workers=2, queue_batches=4), part

    rr, part = reader_for(60, 262_144)  # 10 float32 classes: 6 MB batches, the full queue
    assert rr._queue_depth(part, (0,)) == 4
    assert rr._task_bytes(part, (0,)) == 6_000_000  # held whole: its row group's bytes
    rr, part = reader_for(2_100, 16_384)  # 525 float32 classes: 210 MB row group, 34 MB batches
    assert rr._queue_depth(part, (0,)) == reader.STREAMED_QUEUE_BYTES // (16_384 * 2_100) == 5
    # A row group bigger than INFLIGHT_BYTES is streamed (never held whole): the task counts
    # as half the budget, so a second one decodes while the first is consumed, and queues
    # up to STREAMED_QUEUE_BYTES.
    rr, part = reader_for(4_000, 4_096)  # 1000 float32 classes: 400 MB row group, 16 MB batches
    depth = rr._queue_depth(part, (0,))
    assert depth == reader.STREAMED_QUEUE_BYTES // (4_096 * 4_000) > 4
    assert rr._task_bytes(part, (0,)) == reader.INFLIGHT_BYTES // 2
    # Batches bigger than a streamed queue (a --batch-size of 100k rows x 1000 classes):
    # the task counts whole again, one at a time, as before streaming.
    rr, part = reader_for(4_000, 100_000)
    assert rr._queue_depth(part, (0,)) == 1
    assert rr._task_bytes(part, (0,)) == 400_000_000


def test_row_groups_bigger_than_the_budget_stream_and_decode_two_at_once(tmp_path, monkeypatch):
    """A list column in row groups bigger than INFLIGHT_BYTES (1M x 1000 classes: 400 MB each)
    used to be read one row group at a time; streamed, the next one decodes ahead while the
    current one is consumed, and the rows still come in order."""
    import evalkit._reader as reader

    path = tmp_path / "list.parquet"
    n, k = 4_000, 50
    probs = np.random.default_rng(5).random((n, k)).astype(np.float32)
    table = pa.table({"id": np.arange(n),
                      "p": pa.FixedSizeListArray.from_arrays(probs.ravel(), k).cast(pa.list_(pa.float32()))})
    write(table, path, row_group_size=1_000)
    md = pq.read_metadata(path)
    budget = md.row_group(0).total_byte_size * 9 // 10  # a row group is more than the budget
    monkeypatch.setattr(reader, "INFLIGHT_BYTES", budget)
    monkeypatch.setattr(reader, "STREAMED_QUEUE_BYTES", budget // 2)
    rr = reader.RowGroupReader([reader.FilePart(str(path), {}, 4, metadata=md)], ["id", "p"],
                               pq.read_schema(path), batch_size=100, open_file=lambda p: p)
    assert 1 < rr._queue_depth(rr.parts[0], (0,)) < 10
    counts = _count_tasks_alive(monkeypatch)
    got = pa.Table.from_batches([b for _, b in rr])
    assert got.column("id").to_pylist() == list(range(n))
    assert got.column("p").equals(table.column("p"))
    assert counts["peak"] == 2  # the consumed task and one decoding ahead, never more


def test_wide_row_groups_are_not_decoded_ahead_past_the_byte_budget(tmp_path, monkeypatch):
    import evalkit._reader as reader

    path = tmp_path / "t.parquet"
    _tiny_row_groups(path, n=4_000, size=1_000)  # 4 row groups, one task each
    md = pq.read_metadata(path)
    one = reader.RowGroupReader([reader.FilePart(str(path), {}, 4, metadata=md)], ["id", "x"],
                                pq.read_schema(path), batch_size=250, open_file=lambda p: p)
    per_task = max(one._task_bytes(one.parts[0], (i,)) for i in range(4))  # none streamed
    assert per_task > 0
    counts = _count_tasks_alive(monkeypatch)
    for budget, most in ((per_task, 1), (1 << 40, 3)):
        monkeypatch.setattr(reader, "INFLIGHT_BYTES", budget)
        counts.update(started=0, done=0, peak=0)
        ids = pa.Table.from_batches([b for _, b in one]).column("id").to_pylist()
        assert ids == list(range(4_000))
        assert 1 <= counts["peak"] <= most


def test_data_error_mid_read_exits_with_its_code_never_sigabrt(tmp_path):
    """Reader threads still inside pyarrow's decoder when the interpreter finalises were
    ended by pthread_exit and aborted the process (exit 134, "terminate called without an
    active exception") in about 1 run of 4; the documented exit code (3) must win every time."""
    path = tmp_path / "percent.parquet"
    pq.write_table(pa.table({"prob_a": [70.0, 20.0], "prob_b": [30.0, 80.0], "label": [0, 1]}), path)
    codes = [
        subprocess.run([sys.executable, "-m", "evalkit", "evaluate", str(path), "--format", "none"],
                       capture_output=True, timeout=120).returncode
        for _ in range(6)
    ]
    assert codes == [3] * 6


def test_corrupt_column_chunk_metadata_is_an_error_never_sigabrt(tmp_path):
    """A footer whose column-chunk size statistics are damaged makes pyarrow's
    RowGroupMetaData.column() throw a C++ exception Python cannot catch (the process
    aborts). The reader sizes tasks without that call, so the read's own error is named."""
    import shutil

    path = tmp_path / "part-1.parquet"  # found by tests/test_fuzz.py's footer corruption
    shutil.copy(Path(__file__).parent / "data" / "corrupt_size_statistics.parquet", path)
    script = ("import sys, evalkit\n"
              "from evalkit.errors import EvalkitError\n"
              "try:\n    evalkit.evaluate(sys.argv[1], plots=False)\n"
              "except EvalkitError as exc:\n    print(type(exc).__name__, exc)\n    sys.exit(3)\n")
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert run.returncode == 3, run.stderr[-2000:]
    assert "part-1.parquet" in run.stdout
