"""The Dask engine: the same pipeline as the local engine, one task per input fragment.

Design
------
* **Partitions.** The input is cut on the client into *fragments*: a contiguous range of
  row groups of one file (a file is never split across partitions unless it has more than
  :data:`PARTITION_ROWS` rows, never merged with another file). Only Parquet footers are
  read on the client (they were read already when the input was opened); each fragment's
  global starting row is computed from the row-group row counts, so the ``row`` column of
  the per-row output is numbered exactly as by the local engine.
* **Tasks.** Each task receives a picklable descriptor (path, row groups, partition
  expression, filesystem, dataset schema), re-opens its fragment on the worker, reads it in
  batches of :func:`evalkit.engines.local.batch_rows` rows (the batch boundaries are those
  of the local scan: batches never span row groups) and calls
  :func:`evalkit.engines.base.process_batch` -- the local pipeline, unchanged. Per-row
  output is written by the worker to ``rows/part-{i:05d}.parquet`` in the run's spool
  directory; the task returns only its :class:`~evalkit.engines.base.EvalState`.
* **Joins.** The :class:`~evalkit.join.LabelIndex` is scattered (broadcast) once; each task
  uses a shallow copy with its own ``seen`` bitmap. Duplicate keys inside a partition are
  found by the task (same error as locally); across partitions by ``EvalState.merge``.
* **Reduction.** States are merged in a tree (``split_every`` states per merge task,
  neighbours only, so the merge order is deterministic) and only the root is fetched.
  Tables and the report are then finalised and written once on the client by
  :mod:`evalkit.api`, exactly as for the local engine.
* **Errors.** An :class:`~evalkit.errors.EvalkitError` raised in a worker pickles with its
  class and message. The run fails with the error of the *first* failing partition in
  input order (the one the local engine would hit first); the other tasks are told to stop
  (a marker file checked before each batch) and the client waits until none is running,
  so that deleting the spool directory leaves nothing behind.
* **Cluster.** ``client=`` uses that client; ``scheduler=ADDRESS`` (``--scheduler``)
  connects to a running scheduler; otherwise a ``distributed.LocalCluster`` (processes) is
  started for the run and closed after it.

Requirements
------------
``pip install 'evalkit[dask]'`` (dask[dataframe], distributed, fsspec). The per-row output
is written by the workers into the spool directory (next to ``--out`` for the CLI), which
must therefore be on storage the workers can reach (always true for a LocalCluster).

Remote inputs (both engines) are fsspec URLs; each scheme needs its fsspec backend:

=============  ===========================================
``s3://``      ``pip install s3fs``
``gs://``      ``pip install gcsfs``
``abfs://``    ``pip install adlfs``
``file://``    nothing extra
``memory://``  nothing extra (fsspec's in-memory filesystem)
=============  ===========================================

``memory://`` is private to one process: it works with the local engine and with an
in-process Dask cluster (``LocalCluster(processes=False)``), not with worker processes --
use ``file://`` paths (or object storage) there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import (
    ClusterError,
    EvalkitError,
    MissingDependencyError,
    UsageError,
    option,
)
from ..io import RowWriter, Source, read_file_parts
from ..join import LabelIndex
from .base import DuplicateAcrossPartitions, EvalState, Plan, consume
from .local import batch_note, batch_rows, value_bytes

#: Target rows per partition: consecutive row groups of one file are grouped until this
#: many rows (a row group is never split).
PARTITION_ROWS = 1_000_000
#: States merged per reduction task.
SPLIT_EVERY = 8
ABORT_MARKER = ".abort"
#: The LocalCluster a run starts when given no client or scheduler: worker processes,
#: every socket on loopback. ``dashboard_address=None`` alone still starts the scheduler's
#: HTTP server on 0.0.0.0:8787, hence the explicit loopback address with a free port.
LOCAL_CLUSTER_OPTIONS: dict[str, Any] = {
    "processes": True,
    # A data error in a task is raised on the client as the one clean error line; the
    # workers' own "Compute Failed" log with a traceback would only repeat it as noise.
    "silence_logs": logging.CRITICAL,
    "host": "127.0.0.1",
    "dashboard_address": None,
    "scheduler_kwargs": {"dashboard_address": "127.0.0.1:0"},
}

_INSTALL_HINT = ("the dask engine needs the 'dask' extra: pip install 'evalkit[dask]' "
                 "(dask[dataframe], distributed)")


def _require_dask() -> Any:
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError:
        raise MissingDependencyError(_INSTALL_HINT) from None
    return distributed


# -- partitions --------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A picklable description of one partition."""

    index: int
    row_offset: int
    """Global position of the first row (the ``row`` column)."""
    num_rows: int
    path: str
    """File path as the local engine names it in messages (or the in-memory label)."""
    file_offset: int = 0
    """Position of the first row in its file."""
    row_groups: tuple[int, ...] = ()
    partition_values: Any = None
    """Hive partition values of the file (column -> string or None)."""
    batches: Any = None
    """In-memory inputs only: the record batches themselves."""
    read_path: str = ""
    """Path the worker opens (absolute for local files)."""


def plan_parts(source: Source, plan: Plan, batch_size: int,
               partition_rows: int = PARTITION_ROWS) -> list[Part]:
    """Cut ``source`` into partitions in the local engine's scan order."""
    if not source.files:  # in-memory table: the batches the local scan would produce
        parts: list[Part] = []
        group: list[pa.RecordBatch] = []
        start = pos = 0

        def flush() -> None:
            nonlocal group, start
            if group:
                parts.append(Part(len(parts), start, pos - start, source.label, start,
                                  batches=group))
            group, start = [], pos

        for b in source.dataset.to_batches(columns=plan.input_columns, batch_size=batch_size):
            group.append(b)
            pos += b.num_rows
            if pos - start >= partition_rows:
                flush()
        flush()
        return parts
    import pyarrow.fs as pafs

    local = isinstance(getattr(source.dataset, "filesystem", None), pafs.LocalFileSystem)
    parts = []
    offset = 0
    for info in source.parts():
        sizes = info.row_group_rows
        read_path = os.path.abspath(info.path) if local else info.path
        i = 0
        file_offset = 0
        while i < len(sizes):
            j, n = i, 0
            while j < len(sizes) and (n == 0 or n + sizes[j] <= partition_rows):
                n += sizes[j]
                j += 1
            parts.append(Part(len(parts), offset, n, info.path, file_offset, tuple(range(i, j)),
                              dict(info.partition_values), read_path=read_path))
            offset += n
            file_offset += n
            i = j
    return parts


# -- worker side -------------------------------------------------------------------------


@dataclass
class _Dup:
    """A DuplicateAcrossPartitions found while merging (its mask does not pickle as an
    exception argument, so it travels as a value)."""

    mask: Any


def _batches(part: Part, plan: Plan, schema: pa.Schema, filesystem: Any, batch_size: int):  # noqa: ANN202
    if part.batches is not None:
        yield from part.batches
        return
    from .._reader import FilePart

    # The local engine's read path, restricted to this partition's row groups: the same
    # batch boundaries, the same decode path, the same types (``schema`` is the read schema).
    fp = FilePart(part.read_path, dict(part.partition_values or {}), len(part.row_groups), tuple(part.row_groups))
    try:
        for _, b in read_file_parts([fp], plan.input_columns, schema, filesystem, batch_size,
                                    key_columns=plan.key_columns):
            yield b
    except EvalkitError as exc:
        # Name the file as the local engine does (the read path may be absolute).
        raise type(exc)(str(exc).replace(part.read_path, part.path)) from None


def run_part(
    part: Part,
    plan: Plan,
    schema: pa.Schema,
    filesystem: Any,
    batch_size: int,
    rows_dir: str | None,
    keep: bool,
    label_index: LabelIndex | None,
) -> tuple[EvalState | None, list[pa.RecordBatch] | None]:
    """One task: the local pipeline over one partition. Returns its state (and, for
    in-memory inputs whose rows are kept, its per-row batches); no state if the run was
    aborted because another partition failed."""
    import copy

    import numpy as np

    index = None
    if label_index is not None:
        index = copy.copy(label_index)  # shared by tasks of this worker: private `seen`
        index.seen = np.zeros(label_index.table.num_rows, dtype=bool)
    state = plan.new_state(index.table.num_rows if index is not None else 0)
    abort = os.path.join(rows_dir, ABORT_MARKER) if rows_dir else None
    writer = RowWriter(os.path.join(rows_dir, f"part-{part.index:05d}.parquet")) if rows_dir else None
    kept: list[pa.RecordBatch] | None = [] if keep else None
    inner = _batches(part, plan, schema, filesystem, batch_size)
    batches = ((part.path, b) for b in inner)
    try:
        # Another partition failed (abort marker): stop quietly; the run fails anyway.
        finished = consume(plan, state, batches, row_offset=part.row_offset,
                           file_offset=part.file_offset, label_index=index, writer=writer,
                           keep=kept, stop=(lambda: os.path.exists(abort)) if abort else None)
        if not finished:
            return None, None
    finally:
        inner.close()  # stop the reader threads now, not when the generator is collected
        if writer is not None:
            writer.close()
    return state, kept


def _first(pair: tuple[EvalState, Any]) -> EvalState:
    return pair[0]


def _second(pair: tuple[EvalState, Any]) -> Any:
    return pair[1]


def merge_states(*states: EvalState | _Dup | None) -> EvalState | _Dup | None:
    """Merge neighbouring partial states, left to right (one reduction task)."""
    if any(s is None for s in states):  # an aborted partition: the run is failing
        return None
    acc = states[0]
    for s in states[1:]:
        if isinstance(acc, _Dup):
            return acc
        if isinstance(s, _Dup):
            return s
        try:
            acc = acc.merge(s)
        except DuplicateAcrossPartitions as exc:
            return _Dup(exc.mask)
    return acc


# -- client side -------------------------------------------------------------------------


#: Seconds to wait for a scheduler to answer ``--scheduler`` (``EVALKIT_DASK_CONNECT_TIMEOUT``).
#: distributed's handshake has no time limit of its own: at a port that accepts TCP but does
#: not speak Dask (the dashboard's HTTP port) it would wait forever.
CONNECT_TIMEOUT = 30.0


def _connect_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("EVALKIT_DASK_CONNECT_TIMEOUT", CONNECT_TIMEOUT)))
    except ValueError:
        return CONNECT_TIMEOUT


def _connect(distributed: Any, scheduler: str) -> Any:
    """A Client of the scheduler at ``scheduler``, within :func:`_connect_timeout` seconds.

    Raises UsageError for an ``http(s)://`` address (the dashboard, not the scheduler) and
    ClusterError when nothing answers in time or the connection is refused."""
    import threading

    if scheduler.lower().startswith(("http://", "https://")):
        raise UsageError(f"--scheduler {scheduler}: that is an HTTP address (the dashboard); the "
                         "scheduler's address is the tcp:// one, e.g. tcp://host:8786")
    timeout = _connect_timeout()
    box: dict[str, Any] = {}

    def connect() -> None:
        try:
            box["client"] = distributed.Client(scheduler, timeout=f"{timeout}s")
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=connect, name="evalkit-dask-connect", daemon=True)
    t.start()
    t.join(timeout + 1)
    hint = ("is a scheduler running there? its address is the tcp:// one (port 8786 by "
            "default), not the dashboard's HTTP port")
    if t.is_alive():
        raise ClusterError(f"--scheduler {scheduler}: no Dask scheduler answered within "
                           f"{timeout:g} s; {hint}")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, EvalkitError):
            raise exc
        raise ClusterError(f"--scheduler {scheduler}: cannot connect to a Dask scheduler "
                           f"({type(exc).__name__}: {_first_line(exc)}); {hint}")
    return box["client"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def cluster_error(exc: BaseException, where: str) -> ClusterError | None:
    """The ClusterError a cluster failure during a run maps to (None for anything else):
    ``KilledWorker`` (workers died repeatedly on one task), a lost scheduler connection,
    a cancelled future (the scheduler forgot the run)."""
    distributed = _require_dask()
    name = type(exc).__name__
    if isinstance(exc, distributed.KilledWorker):
        return ClusterError(
            f"{where}: Dask workers died repeatedly while running one partition (KilledWorker: "
            f"{_first_line(exc)}); check the workers' memory limit and logs, or use more "
            "memory per worker / a smaller --batch-size")
    closed = getattr(getattr(distributed, "comm", None), "CommClosedError", ())
    cancelled = getattr(getattr(distributed, "client", None), "FutureCancelledError", ())
    import asyncio

    if isinstance(exc, closed | asyncio.CancelledError | TimeoutError | OSError) or (
            cancelled and isinstance(exc, cancelled)):
        return ClusterError(
            f"{where}: lost the Dask scheduler mid-run ({name}: {_first_line(exc)}); nothing "
            "was written: check that the scheduler and workers are running, then rerun")
    return None


@contextlib.contextmanager
def quiet_distributed() -> Any:
    """Silence distributed's own log lines (reconnect warnings, the tracebacks it logs when a
    scheduler or worker dies) for the block; ``EVALKIT_DEBUG=1`` keeps them. The failure
    itself reaches the caller as one :class:`ClusterError`."""
    import logging

    if os.environ.get("EVALKIT_DEBUG") == "1":
        yield
        return
    log = logging.getLogger("distributed")
    old = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(old)


@contextlib.contextmanager
def _workers_ignore_sigint() -> Any:
    """SIGINT ignored while a LocalCluster starts its worker processes, which inherit that
    (an ignored signal stays ignored across exec, and Python then installs no
    KeyboardInterrupt handler). A terminal's Ctrl-C reaches the whole process group:
    workers interrupted mid-task printed tracebacks, and the run could hang in the
    cluster's shutdown (rt-eval8 F21). Now the command alone handles it and closes the
    cluster. A Ctrl-C during the start itself is not lost: a sentinel child of the process
    group (:func:`_sigint_sentinel`) dies of it, and the start ends in KeyboardInterrupt
    (exit 130 at the CLI) once the cluster is up (so it closes cleanly); SIGTERM and SIGHUP
    are deferred meanwhile (see :func:`_client`). Only in the main thread, the one where
    handlers can be set."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sentinel = _sigint_sentinel()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if sentinel is not None and _sentinel_interrupted(sentinel):
            raise KeyboardInterrupt  # a Ctrl-C to the process group during the start


def _sigint_sentinel() -> int | None:
    """A forked child of this process group that waits for SIGINT with the default action:
    it dies of a Ctrl-C to the group while this process ignores SIGINT (the cluster's start),
    so that Ctrl-C is not lost. None where fork is not available."""
    import signal

    if not hasattr(os, "fork"):
        return None
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the child: nothing but waiting
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
                if s is not None:
                    signal.signal(s, signal.SIG_DFL)
            while True:
                signal.pause()
        finally:
            os._exit(0)
    return pid


def _sentinel_interrupted(pid: int) -> bool:
    """End the sentinel (:func:`_sigint_sentinel`); whether it died of SIGINT."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return False
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT


@contextlib.contextmanager
def _client(client: Any, scheduler: str | None):  # noqa: ANN202
    distributed = _require_dask()
    if client is not None:
        yield client
        return
    if scheduler:
        with quiet_distributed():
            c = _connect(distributed, scheduler)
            try:
                yield c
            finally:
                with contextlib.suppress(Exception):  # a lost scheduler must not mask the error
                    c.close(timeout=5)
        return
    from ..outdir import signals_deferred

    cluster = c = None
    try:
        with signals_deferred(), _workers_ignore_sigint():
            cluster = distributed.LocalCluster(**LOCAL_CLUSTER_OPTIONS)
            c = distributed.Client(cluster)
        yield c
    finally:
        # Not interrupted half way: distributed answers a KeyboardInterrupt inside close()
        # by cancelling it, waiting 10 s and leaving the cluster to its atexit hook, which
        # waited 10 s more (rt-eval8 F21). A signal now takes effect once all is closed.
        with signals_deferred():
            if c is not None:
                c.close()
            if cluster is not None:
                cluster.close()


def _is_memory_fs(filesystem: Any) -> bool:
    handler = getattr(filesystem, "handler", None)
    fs = getattr(handler, "fs", None)
    protocol = getattr(fs, "protocol", None)
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol or ())
    return "memory" in protocols


def run_dask(
    plan: Plan,
    source: Source,
    cfg: Any,
    *,
    label_index: LabelIndex | None = None,
    writer_dir: Path | None = None,
    keep_batches: list | None = None,  # type: ignore[type-arg]
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
    partition_rows: int | None = None,
    split_every: int = SPLIT_EVERY,
) -> EvalState:
    """Evaluate ``source`` on a Dask cluster; return the merged state.

    ``writer_dir`` is the directory the workers write ``part-*.parquet`` per-row files
    into (created here; None: no per-row output). ``keep_batches`` (in-memory inputs)
    receives the per-row batches in input order instead.
    """
    _require_dask()
    requested = getattr(cfg, "batch_size", None)
    width = value_bytes(source.schema, plan.layout.pred_columns)
    note = batch_note(plan.layout.n_classes, requested, width)
    if note is not None and progress is not None and hasattr(progress, "note"):
        progress.note(note)
    bs = batch_rows(plan.layout.n_classes, requested, width)
    parts = plan_parts(source, plan, bs, partition_rows or PARTITION_ROWS)
    if not parts:
        return plan.new_state(label_index.table.num_rows if label_index is not None else 0)
    rows_dir: str | None = None
    if writer_dir is not None:
        Path(writer_dir).mkdir()
        rows_dir = os.fspath(Path(writer_dir).absolute())
    keep = keep_batches is not None

    scheduler = getattr(cfg, "scheduler", None)
    try:
        return _run_on_cluster(plan, source, parts, client, scheduler, rows_dir, keep, keep_batches,
                               label_index, bs, split_every, progress)
    except EvalkitError:
        raise
    except Exception as exc:
        mapped = cluster_error(exc, scheduler or "dask engine")
        if mapped is None:
            raise
        raise mapped from None


def _run_on_cluster(plan: Plan, source: Any, parts: Sequence[Part], client: Any, scheduler: str | None,
                    rows_dir: str | None, keep: bool, keep_batches: list[Any] | None,
                    label_index: Any, bs: int, split_every: int,
                    progress: Callable[[int, int], None] | None) -> EvalState:
    """Submit the partition tasks and the merge tree on the cluster; the merged state."""
    distributed = _require_dask()
    with _client(client, scheduler) as c:
        if _is_memory_fs(source.filesystem) and not all(
            str(a).startswith("inproc://") for a in c.scheduler_info().get("workers", {})
        ):
            raise UsageError(
                f"{source.label}: memory:// files live in this process only and Dask workers "
                f"run in other processes; use {option('engine', 'local')}, an in-process cluster, or file:// "
                "paths / object storage"
            )
        run_id = uuid.uuid4().hex[:12]
        index_f = (c.scatter(label_index, broadcast=True, hash=False)
                   if label_index is not None else None)
        schema = source.read_schema(plan.input_columns, plan.dictionary_columns)
        filesystem = getattr(source.dataset, "filesystem", None) if source.files else None
        futs = [
            c.submit(run_part, p, plan, schema, filesystem, bs, rows_dir, keep, index_f,
                     key=f"evalkit-part-{run_id}-{p.index:05d}", pure=False)
            for p in parts
        ]
        level = [c.submit(_first, f, key=f"evalkit-state-{run_id}-{i:05d}", pure=False)
                 for i, f in enumerate(futs)]
        depth = 0
        while len(level) > 1:
            depth += 1
            level = [
                c.submit(merge_states, *level[i:i + split_every],
                         key=f"evalkit-merge-{run_id}-{depth}-{i // split_every:05d}", pure=False)
                for i in range(0, len(level), split_every)
            ]
        root = level[0]
        done = False
        try:
            _wait_parts(distributed, c, futs, parts, rows_dir, progress)
            result = root.result()
            if keep:
                for f in futs:
                    rows = c.submit(_second, f, pure=False).result()
                    keep_batches.extend(rows or [])  # type: ignore[union-attr]
            done = True
        finally:
            if not done:
                _abort(distributed, c, futs, rows_dir)
            del root, level, futs  # releasing the futures frees their results on the workers
    if isinstance(result, _Dup):
        raise DuplicateAcrossPartitions(result.mask)
    if result is None:  # pragma: no cover - only an aborted run yields no state
        raise RuntimeError("dask engine: a partition was aborted although no partition failed")
    return result


def _wait_parts(distributed: Any, c: Any, futs: Sequence[Any], parts: Sequence[Part],
                rows_dir: str | None, progress: Callable[[int, int], None] | None) -> None:
    """Wait for the partition tasks; raise the first failing partition's error (input order)."""
    position = {f.key: i for i, f in enumerate(futs)}
    failed: int | None = None
    finished = [False] * len(futs)
    rows_done = 0
    for f in distributed.as_completed(futs):
        i = position[f.key]
        finished[i] = True
        if f.status == "error":
            if failed is None or i < failed:
                failed = i
                if rows_dir is not None:  # tell the others to stop at their next batch
                    with contextlib.suppress(OSError):
                        Path(rows_dir, ABORT_MARKER).touch()
        elif f.status == "finished" and failed is None:
            rows_done += parts[i].num_rows
            if progress is not None:
                progress(rows_done, 0)
        if failed is not None and all(finished[:failed]):
            break
    if failed is not None:
        exc = futs[failed].exception()
        raise exc


def _abort(distributed: Any, c: Any, futs: Sequence[Any], rows_dir: str | None) -> None:
    """After a failure: stop the other tasks and wait until none is still writing."""
    if rows_dir is None:
        c.cancel(list(futs))
        return
    with contextlib.suppress(OSError):
        Path(rows_dir, ABORT_MARKER).touch()
    # Not cancelled: a cancelled task may still be running on its worker. Every task
    # stops at its next batch, so this returns quickly.
    with contextlib.suppress(Exception):
        distributed.wait(list(futs), timeout=300)


__all__ = ["LOCAL_CLUSTER_OPTIONS", "PARTITION_ROWS", "Part", "merge_states", "plan_parts", "run_dask", "run_part"]
