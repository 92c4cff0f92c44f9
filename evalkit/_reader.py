"""Streaming Parquet reader: row groups decoded ahead on a small thread pool, in order.

``pyarrow.dataset`` scanners decode whole row groups before slicing them into batches
and, for large list columns (1000 classes), cost 2-3x more than ``ParquetFile.iter_batches``
and hold several row groups at once. This reader streams each *task* (one row group, or a
run of consecutive small row groups of one file holding at least ``batch_size`` rows) with
``iter_batches`` on its own worker thread, so the next tasks decode while the current one
is consumed, and bounded queues keep memory flat: at most ``workers`` tasks are in flight
and each buffers at most ``queue_batches`` batches, fewer when batches are big: the
batches queued by all workers stay within about ``QUEUE_BYTES`` (a batch of 16k rows x
1000 float32 classes is 64 MiB; four of them per worker would double the peak memory).
Column chunks are read through small buffers (``READ_BUFFER_BYTES``), never whole, so a
task holds its queued batches, not its row groups: row groups bigger than the in-flight
budget (100k rows x 1000 classes: 400 MB) stream, two at a time, each queueing up to
``STREAMED_QUEUE_BYTES``.

Each file's footer is parsed once (by the caller, or here on first use) and handed to every
task of that file as ``ParquetFile(metadata=...)``: a footer grows with the number of row
groups, so re-parsing it per row group made files of thousands of row groups quadratic.
Grouping small row groups amortises the per-call cost of a read and of a pipeline batch.
"""

from __future__ import annotations

import atexit
import itertools
import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import PartitionConflictError, SchemaDriftError
from .normalize import conform_array

_DONE = object()
#: Uncompressed bytes of decoded batches the workers may hold queued, all together.
QUEUE_BYTES = 96 << 20
#: Uncompressed bytes (projected columns) of the tasks alive at once: the one being consumed
#: and those decoding ahead (each counted as what it may hold: see ``_task_bytes``). 192 MiB,
#: not 512: with wide row groups (a user column: 67 MB) one fewer decodes ahead, which the
#: 1M-groups run (peak near its 2 GiB bound) needs.
INFLIGHT_BYTES = 192 << 20
#: Read buffer of each column chunk (``ParquetFile(buffer_size=...)``). With the default (0)
#: pyarrow reads a whole column chunk before decoding it: a 100k-row group of 1000 float32
#: classes is ~340 MB compressed, held while the row group decodes, so such row groups could
#: only be read one at a time (decode never overlapped across row groups). Streamed through
#: 1 MiB buffers a task holds only the batches it decodes, and two row groups decode at once:
#: 1M x 1000 list, read only, 2 threads: 0.84 GiB (1 thread, unbuffered: 0.80 GiB, 2x the wall
#: time). It costs nothing on narrow columns (6M x 10 wide: as fast, less memory).
READ_BUFFER_BYTES = 1 << 20
#: Batches a task may queue when its row groups are bigger than INFLIGHT_BYTES (a task that
#: would otherwise decode alone, e.g. 100k rows x 1000 classes), in bytes (at most
#: STREAMED_QUEUE_BATCHES batches). Such a task counts as half the in-flight budget: the one
#: being consumed and one decoding ahead. The task ahead only runs on while its queue has
#: room: paired on 1M x 1000 (loaded machine, 3 pairs), 6 batches (96 MiB) 18.6-20.3 s,
#: 0.60-0.65 GiB; 11 batches 15.3-17.2 s, 0.67-0.72 GiB; 2 batches (QUEUE_BYTES / workers):
#: decode single-threaded in effect (~1.4 cores busy).
STREAMED_QUEUE_BYTES = 176 << 20
STREAMED_QUEUE_BATCHES = 16
#: Items a task may queue when the reader has a ``prepare`` hook (see RowGroupReader): a
#: prepared batch holds a few bytes a row (its scores are dropped on the worker), so the
#: task ahead no longer stops after STREAMED_QUEUE_BYTES; batches that could not be
#: prepared still count against the byte-based depth (``_queue_depth``).
PREPARED_QUEUE_ITEMS = 64


@dataclass(frozen=True)
class FilePart:
    """One file of a dataset, with the constant partition values its path carries."""

    path: str
    partition_values: dict[str, Any]
    num_row_groups: int
    row_groups: tuple[int, ...] | None = None
    """Only these row groups (a Dask partition); None: all of them."""
    metadata: pq.FileMetaData | None = field(default=None, compare=False, repr=False)
    """The parsed footer, when the caller has it already (None: read once, on first use)."""


def constant_column(value: Any, n: int, type_: pa.DataType) -> pa.Array:
    """A column of ``n`` copies of ``value`` (hive partition values), built without a loop."""
    if value is None:
        return pa.nulls(n, type_)
    if pa.types.is_dictionary(type_):
        return pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(n, dtype=np.int32)), pa.array([value], type=type_.value_type)
        )
    one = pa.array([value], type=type_)
    return one.take(pa.array(np.zeros(n, dtype=np.int64)))


#: Live worker threads and the stop event each one watches.
_LIVE: weakref.WeakKeyDictionary[threading.Thread, threading.Event] = weakref.WeakKeyDictionary()
#: How long interpreter exit waits for workers to finish the batch they are decoding.
EXIT_JOIN_SECONDS = 10.0


@atexit.register
def _stop_workers_at_exit() -> None:
    """Stop and join every live worker before the interpreter finalises.

    A daemon thread still inside pyarrow's C++ decoder when finalisation starts is ended by
    ``pthread_exit`` as it takes the GIL back; unwinding through C++ frames then calls
    ``std::terminate`` ("terminate called without an active exception", SIGABRT, exit 134)
    and replaces the run's documented exit code. ``atexit`` runs before that point, on the
    main thread, outside the garbage collector: joining here is safe."""
    live = list(_LIVE.items())
    for _, stop in live:
        stop.set()
    for thread, _ in live:
        thread.join(EXIT_JOIN_SECONDS)


def check_partition_column(path: str, column: str, value: str | None, values: pa.Array) -> None:
    """A file inside ``column=value/`` that also holds a ``column`` of its own: every row must
    agree with the directory (compared as text; ``__HIVE_DEFAULT_PARTITION__`` with null).
    evalkit never picks one of two disagreeing sources: it raises PartitionConflictError."""
    text = conform_array(values, pa.string(), f"{path}: column {column!r}")
    if value is None:
        bad = text.is_valid()
    else:
        bad = pc.fill_null(pc.not_equal(text, pa.scalar(value, pa.string())), True)
    n_bad = pc.sum(bad).as_py() or 0
    if n_bad:
        shown = sorted({("null" if v is None else repr(v)) for v in text.filter(bad).slice(0, 1000).to_pylist()})[:5]
        where = f"{column}={value if value is not None else '__HIVE_DEFAULT_PARTITION__'}/"
        raise PartitionConflictError(
            f"{path}: the file is inside {where} but its own column {column!r} holds other values "
            f"in {n_bad} row(s) (e.g. {', '.join(shown)}); evalkit does not choose between the "
            f"directory and the file: rename the column or move the file"
        )


class _TaskQueue(queue.Queue):  # type: ignore[type-arg]
    """One task's queue of decoded batches. ``slots`` (with a prepare hook): the batches in
    it that were not prepared (full size) may use at most that many of its places.
    ``decoded`` is set by the worker once it has decoded its last batch; from then on the
    task holds only its queue, at most ``held`` bytes (see ``RowGroupReader._raw``)."""

    def __init__(self, maxsize: int, slots: threading.Semaphore | None, held: int = 0) -> None:
        super().__init__(maxsize=maxsize)
        self.slots = slots
        self.held = held
        self.decoded = False


def _acquire(slots: threading.Semaphore, stop: threading.Event) -> bool:
    """Take a queue slot unless the consumer has gone (see :func:`_put`)."""
    while not stop.is_set():
        if slots.acquire(timeout=0.1):
            return True
    return False


def _put(out: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless the consumer has gone: every put must be able to give up, or a worker
    blocked on a full queue would hang the interpreter's exit (it joins pool threads)."""
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class RowGroupReader:
    """Yield ``(path, batch)`` over the row groups of ``parts``, in order."""

    def __init__(
        self,
        parts: Sequence[FilePart],
        columns: Sequence[str],
        schema: pa.Schema,
        *,
        batch_size: int,
        open_file: Callable[[str], Any],
        dictionary_columns: Sequence[str] = (),
        workers: int = 2,
        queue_batches: int = 4,
        prepare: Callable[[pa.RecordBatch], Any] | None = None,
        key_columns: Sequence[str] = (),
    ) -> None:
        self.parts = list(parts)
        self.columns = list(columns)
        self.schema = pa.schema([schema.field(c) for c in self.columns if c in schema.names])
        """Exactly the schema of every yielded batch (``columns`` typed as in ``schema``)."""
        self.batch_size = batch_size
        self.open_file = open_file
        self.dictionary_columns = list(dictionary_columns)
        self.workers = max(1, workers)
        self.queue_batches = max(1, queue_batches)
        self.prepare = prepare
        """Called on the worker thread with each completed batch of at least half
        ``batch_size`` rows (those :func:`rebatch` never joins); what it returns (not None)
        is yielded in the batch's place, as it is: e.g. the batch scored and without its
        wide columns, so that the batches decoded ahead hold a few bytes a row. None, or an
        error in it or in completing the batch, yields the batch as without a hook."""
        self.key_columns = frozenset(key_columns)
        """Columns read as keys (group, slice, join key, class label), not values: a float32
        shard of one unified as float64 is read by its printed value
        (:func:`evalkit.normalize.conform_array` ``key=True``), a value column exactly."""
        self._shares: dict[int, tuple[pq.FileMetaData, float]] = {}

    def _tasks(self) -> Iterator[tuple[FilePart, tuple[int, ...] | BaseException]]:
        """``(part with its footer, row groups)`` in order; footers are read lazily, once.

        A footer that cannot be read becomes the task's failure, reported in order (after
        the batches of the files before it), like a row group that cannot be decoded."""
        for part in self.parts:
            md = part.metadata
            if md is None:
                try:
                    md = pq.read_metadata(self.open_file(part.path))
                except Exception as exc:  # noqa: BLE001 - handed to the consumer in order
                    yield part, exc
                    return
                part = FilePart(part.path, part.partition_values, part.num_row_groups,
                                part.row_groups, md)
            rgs = part.row_groups if part.row_groups is not None else range(md.num_row_groups)
            # Runs of several batches' worth: one short batch per run end, not per row group.
            yield from ((part, group) for group in group_row_groups(md, rgs, 4 * self.batch_size))

    def _task_bytes(self, part: FilePart, rgs: tuple[int, ...] | BaseException) -> int:
        """Uncompressed bytes a task may hold at once, projected columns only (0: unknown):
        its row groups' bytes, or for a task bigger than INFLIGHT_BYTES (streamed through
        :data:`READ_BUFFER_BYTES` buffers, never held whole, queueing at most
        STREAMED_QUEUE_BYTES) half the budget: two such tasks are alive at once, unless one
        batch is bigger than STREAMED_QUEUE_BYTES (then it counts whole, as before).

        Estimated from row-group totals and the schema: each row group's uncompressed size
        times the share of its leaf columns that are read. Column-chunk metadata is never
        touched here: for a corrupt footer, pyarrow (26) throws a C++ exception out of
        ``RowGroupMetaData.column`` that Python cannot catch and the process aborts
        (SIGABRT, e.g. "Definition level histogram size mismatch"), where the read itself
        raises an ordinary error that evalkit names."""
        md = part.metadata
        if md is None or isinstance(rgs, BaseException) or not rgs:
            return 0
        total = self._projected_bytes(md, rgs)
        if total <= INFLIGHT_BYTES or self._batch_bytes(part, rgs) > STREAMED_QUEUE_BYTES:
            return total  # whole (batches this big, e.g. a --batch-size asked for: one at a time)
        return INFLIGHT_BYTES // 2

    def _projected_bytes(self, md: pq.FileMetaData, rgs: tuple[int, ...]) -> int:
        """Uncompressed bytes of the row groups ``rgs``, projected columns only (estimate)."""
        return int(sum(md.row_group(i).total_byte_size for i in rgs) * self._projected_share(md))

    def _batch_bytes(self, part: FilePart, rgs: tuple[int, ...]) -> float:
        """Uncompressed bytes of one batch of the task (all columns; from the footer)."""
        md = part.metadata
        assert md is not None
        rows = sum(md.row_group(i).num_rows for i in rgs)
        size = sum(md.row_group(i).total_byte_size for i in rgs)
        return size / max(rows, 1) * min(self.batch_size, max(rows, 1))

    def _projected_share(self, md: pq.FileMetaData) -> float:
        """Fraction of the file's leaf columns that belong to a projected column (cached)."""
        key = id(md)
        hit = self._shares.get(key)
        if hit is not None and hit[0] is md:
            return hit[1]
        schema = md.schema
        leaves = [schema.column(j).path.split(".", 1)[0] for j in range(len(schema))]
        wanted = set(self.columns)
        share = sum(name in wanted for name in leaves) / max(len(leaves), 1)
        self._shares[key] = (md, share)
        return share

    def _queue_depth(self, part: FilePart, rgs: tuple[int, ...] | BaseException) -> int:
        """Batches a task may queue: ``queue_batches``, fewer for batches of many bytes (all
        queued together within QUEUE_BYTES); a task bigger than INFLIGHT_BYTES may queue
        STREAMED_QUEUE_BYTES (sizes estimated from the row groups' sizes in the footer)."""
        md = part.metadata
        if md is None or isinstance(rgs, BaseException) or not rgs:
            return self.queue_batches
        batch = max(self._batch_bytes(part, rgs), 1)
        if self._projected_bytes(md, rgs) > INFLIGHT_BYTES:
            return int(max(1, min(STREAMED_QUEUE_BATCHES, STREAMED_QUEUE_BYTES // batch)))
        return int(max(1, min(self.queue_batches, QUEUE_BYTES / self.workers // batch)))

    def _work(self, part: FilePart, rgs: tuple[int, ...] | BaseException, out: queue.Queue[Any],
              stop: threading.Event) -> None:
        slots = out.slots if isinstance(out, _TaskQueue) else None
        try:
            if isinstance(rgs, BaseException):
                raise rgs
            in_file = set(part.metadata.schema.to_arrow_schema().names) if part.metadata is not None else set()
            # A column the file holds under a partition's name is read too, and must agree.
            physical = [c for c in self.columns if c not in part.partition_values or c in in_file]
            pf = pq.ParquetFile(
                self.open_file(part.path),
                metadata=part.metadata,
                read_dictionary=[c for c in self.dictionary_columns if c in physical and c in in_file] or None,
                pre_buffer=False,
                buffer_size=READ_BUFFER_BYTES,
                page_checksum_verification=True,
            )
            dict_cols = [c for c in self.dictionary_columns if c in physical and c in in_file]
            batches = pf.iter_batches(batch_size=self.batch_size, row_groups=list(rgs),
                                      columns=physical, use_threads=True)
            if len(rgs) > 1:  # batches end at row-group ends: make them batch_size again
                batches = rebatch(batches, self.batch_size)
            for batch in batches:
                # Strings read as dictionaries skip Arrow's UTF-8 check; the dictionaries are
                # small, so validate them here (a corrupt page must fail as a read error).
                for c in dict_cols:
                    col = batch.column(c)
                    if pa.types.is_dictionary(col.type):
                        col.dictionary.validate(full=True)
                item = self._prepared(part, batch) if slots is not None else batch
                if item is batch and slots is not None and not _acquire(slots, stop):
                    return
                if not _put(out, item, stop):
                    return
            if isinstance(out, _TaskQueue):
                out.decoded = True
            _put(out, _DONE, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            _put(out, exc, stop)

    def _prepared(self, part: FilePart, batch: pa.RecordBatch) -> Any:
        """``prepare`` of the completed batch, or the batch itself (the consumer completes
        it, so an error of :meth:`_complete` is raised there, in order, as without a hook)."""
        assert self.prepare is not None
        if batch.num_rows < self.batch_size // 2:  # may be joined to its neighbours
            return batch
        try:
            item = self.prepare(self._complete(part, batch))
        except Exception:  # noqa: BLE001 - the ordinary path decides (and raises) instead
            return batch
        return batch if item is None else item

    def _complete(self, part: FilePart, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Add partition columns, check a file's own copy of one, conform every column to
        the reader's schema (the one normalisation step; key columns by the key rule, see
        ``key_columns``) in the requested order."""
        n = batch.num_rows
        names = batch.schema.names
        arrays = []
        for c in self.columns:
            t = self.schema.field(c).type
            if c in part.partition_values:
                value = part.partition_values[c]
                if c in names:
                    check_partition_column(part.path, c, value, batch.column(c))
                arrays.append(constant_column(value, n, t))
            elif c not in names:
                raise SchemaDriftError(f"{part.path}: the file has no column {c!r}, which other files of "
                                       "the dataset have")
            else:
                arrays.append(conform_array(batch.column(c), t, f"{part.path}: column {c!r}",
                                            key=c in self.key_columns))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def __iter__(self) -> Iterator[tuple[str, pa.RecordBatch]]:
        stop = threading.Event()
        try:
            # Tasks of one file end with a short batch each; runs of pieces shorter than
            # half a batch are joined across tasks too.
            for _, group in itertools.groupby(self._raw(stop), key=lambda pb: pb[0].path):
                part, first = next(group)
                rest = (b for _, b in group)  # noqa: B031 - one group, read on from its 2nd item
                for batch in rebatch(itertools.chain([first], rest), self.batch_size,
                                     pass_rows=self.batch_size // 2):
                    # A prepared item (never joined: it has >= pass_rows rows) is complete.
                    yield part.path, (self._complete(part, batch) if isinstance(batch, pa.RecordBatch)
                                      else batch)
        finally:
            # Never join here: if the consumer abandoned this generator, this block may run
            # from the garbage collector inside threading internals, where joining threads
            # deadlocks. Workers see `stop` and return on their own within 0.1 s.
            stop.set()

    def _raw(self, stop: threading.Event) -> Iterator[tuple[FilePart, pa.RecordBatch]]:
        """``(part, batch)`` as the workers decode them, in task order."""
        tasks = self._tasks()
        inflight: list[tuple[FilePart, _TaskQueue, int]] = []
        started = 0
        ahead: list[Any] = []  # the next task, read from `tasks` but not started

        def submit(current: int = 0) -> bool:
            """Start the next task unless the tasks alive (``current`` bytes being consumed
            and those in flight) would pass INFLIGHT_BYTES; the first one always starts."""
            nonlocal started
            if not ahead:
                ahead.append(next(tasks, None))
            if ahead[0] is None:
                return False
            part, rgs = ahead[0]
            size = self._task_bytes(part, rgs)
            alive = current + sum(b for _, _, b in inflight)
            if (current or inflight) and alive + size > INFLIGHT_BYTES:
                return False
            ahead.clear()
            started += 1
            depth = self._queue_depth(part, rgs)
            # With a prepare hook the queue holds many small prepared items; batches that
            # were not prepared still take one of `depth` slots (released as they are taken).
            slots = threading.Semaphore(depth) if self.prepare is not None else None
            held = min(size, int(depth * self._batch_bytes(part, rgs))) if size else 0
            q = _TaskQueue(depth if slots is None else max(depth, PREPARED_QUEUE_ITEMS), slots, held)
            # Daemon threads, one per task in flight: a consumer that never closes this
            # generator (e.g. an exception and an exiting interpreter) cannot block exit.
            worker = threading.Thread(target=self._work, args=(part, rgs, q, stop), daemon=True,
                                      name=f"evalkit-read-{started}")
            _LIVE[worker] = stop
            worker.start()
            inflight.append((part, q, size))
            return True

        while len(inflight) < self.workers and submit():
            pass
        while inflight:
            part, q, size = inflight.pop(0)
            if len(inflight) < self.workers:
                submit(current=size)
            early = False
            while True:
                # Once this task is decoded it holds only its queue: start the next task then,
                # not when the queue is drained (a task that did not fit beside a whole one
                # fits beside a queue). 6M x 10 wide, tasks of two 1M-row groups: the decoder
                # idled while the last ~3 batches of each task were scored, and the scorer
                # then waited for the next task's first batch.
                if not early and q.decoded and q.held and len(inflight) < self.workers:
                    early = submit(current=q.held)
                item = q.get()
                if q.slots is not None and isinstance(item, pa.RecordBatch):
                    q.slots.release()
                if item is _DONE:
                    if not inflight:  # nothing ahead (it did not fit): start the next now
                        submit()
                    break
                if isinstance(item, BaseException):
                    raise ReadFailure(part.path, item)
                yield part, item


def group_row_groups(md: pq.FileMetaData, row_groups: Sequence[int] | range,
                     min_rows: int) -> Iterator[tuple[int, ...]]:
    """Consecutive row groups in runs of at least ``min_rows`` rows (a large row group alone).

    One read call and one pipeline batch per tiny row group cost far more than the rows
    they hold (a file written with ``row_group_size=10``); a run of them is one read.
    Only the runs' row counts are looked at: no row group is split or reordered.
    """
    run: list[int] = []
    rows = 0
    for rg in row_groups:
        run.append(rg)
        rows += md.row_group(rg).num_rows
        if rows >= min_rows:
            yield tuple(run)
            run, rows = [], 0
    if run:
        yield tuple(run)


def rebatch(batches: Iterator[pa.RecordBatch], size: int,
            pass_rows: int | None = None) -> Iterator[pa.RecordBatch]:
    """The same rows, in order, with runs of short batches joined into batches of ``size``.

    Batches shorter than ``pass_rows`` (default ``size``) are joined, cut at ``size`` rows;
    a batch of at least ``pass_rows`` rows first sends what is pending (one shorter batch)
    and then goes through as it is. So tiny row groups make full batches, while big ones
    are never copied (joining a short remainder to a 64 MiB batch would shift and copy
    every batch after it). Dictionary columns whose dictionaries differ between the
    pieces (one per row group) are unified by the concatenation.
    """
    pass_rows = size if pass_rows is None else pass_rows
    pending: list[pa.RecordBatch] = []
    rows = 0
    for b in batches:
        if b.num_rows >= pass_rows:
            if pending:
                yield pa.concat_batches(pending) if len(pending) > 1 else pending[0]
                pending, rows = [], 0
            for start in range(0, b.num_rows, size):
                yield b if b.num_rows <= size else b.slice(start, size)
            continue
        pending.append(b)
        rows += b.num_rows
        while rows >= size:
            whole = pa.concat_batches(pending) if len(pending) > 1 else pending[0]
            yield whole.slice(0, size)
            rest = whole.slice(size)
            pending, rows = ([rest] if rest.num_rows else []), rest.num_rows
    if rows:
        yield pa.concat_batches(pending) if len(pending) > 1 else pending[0]


class ReadFailure(Exception):
    """A worker could not decode a row group of ``path``."""

    def __init__(self, path: str, cause: BaseException) -> None:
        super().__init__(f"{path}: {cause}")
        self.path = path
        self.cause = cause
