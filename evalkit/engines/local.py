"""The local streaming engine: Arrow's threaded scanner feeding one pipeline, bounded memory.

Batches are decoded in parallel by Arrow (column projection, read-ahead) while this thread
runs the kernel and updates the accumulators; per-row output is appended to a Parquet
writer as it is produced, so memory is flat in the number of rows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence

import pyarrow as pa

from ..io import RowWriter, Source
from ..join import LabelIndex
from .base import EvalState, Plan, batch_preparer, consume

#: Values (rows x classes) per batch: large enough to amortise per-batch overhead, small
#: enough that float64 temporaries stay in cache-friendly tens of MiB.
VALUES_PER_BATCH = 1 << 22
MAX_ROWS_PER_BATCH = 1 << 18
#: Fewest rows per batch (unless MAX_VALUES_PER_BATCH says less). 4k, not 16k: with column
#: chunks streamed (``_reader.READ_BUFFER_BYTES``) pyarrow's list reader has no per-batch
#: cost worth the bigger batches, and a 64 MiB batch (16k rows x 1000 float32 classes) is
#: a fresh mapping the kernel page-faults in every time: reading 1M x 1000 took 4.7 s of
#: system time in 16k-row batches, 2.0 s in 4k-row ones (16 MiB).
MIN_ROWS_PER_BATCH = 1 << 12
#: Hard cap on values per batch: a batch's score matrix and its float64 temporaries must stay
#: bounded whatever the class count (16k rows x 50k classes would be gigabytes).
MAX_VALUES_PER_BATCH = 1 << 24
#: Most bytes of prediction values in one batch (rows x classes x bytes per value), whatever
#: ``batch_size`` asks for: the batch being scored, the one whose accumulators are updated,
#: those decoded ahead and the decoder's own buffers all scale with it. Peak RSS, 200k x 1000
#: float32 list file: 4,194-row batches (16 MiB, the default) 0.56 GiB, 8,388 (32 MiB) 0.73,
#: 16,777 (64 MiB) 0.92; 100k rows (400 MB) peaked at 1.71 GiB on the 1M-row file. A larger
#: request is cut to this size (:func:`batch_rows`; the CLI says so on stderr), never below
#: the rows the default chooses.
MAX_BATCH_BYTES = 32 << 20
#: Update the accumulators on a second thread (:class:`evalkit.engines.base.Stages`)?
#: Only with a second core to run it on.
STAGED = (os.cpu_count() or 1) > 1
#: Score wide list batches on the reader's decode threads (:func:`evalkit.engines.base.batch_preparer`)?
PREPARE = True


def batch_rows(n_classes: int, requested: int | None = None, value_bytes: int = 4) -> int:
    """Rows per batch for K classes: the user's choice (``requested``), cut to
    :data:`MAX_BATCH_BYTES` of prediction values (``value_bytes`` each: 4 for float32), or
    one chosen from the class count. :func:`batch_note` says when a request was cut."""
    k = max(1, n_classes)
    # At least MIN_ROWS_PER_BATCH rows (per-batch costs), unless that many rows would
    # exceed MAX_VALUES_PER_BATCH (a vocabulary of classes).
    rows = max(1, min(max(MIN_ROWS_PER_BATCH, min(MAX_ROWS_PER_BATCH, VALUES_PER_BATCH // k)),
                      MAX_VALUES_PER_BATCH // k))
    if not requested:
        return rows
    return min(int(requested), max(rows, MAX_BATCH_BYTES // (k * max(1, value_bytes))))


#: A requested batch smaller than this many rows (and a quarter of the default) is noted: evalkit's
#: fixed cost per batch (~2 ms of CPU: the stages, the accumulators, the per-row writer) then
#: outweighs the rows' own work (rt-eval F2: --batch-size 1, 40k rows, > 12 min under load).
SMALL_BATCH_ROWS = 256
#: The fixed CPU cost of one batch, measured (rt-eval F2: ~1.8 ms); for the note's estimate.
BATCH_COST_S = 0.002


def batch_note(n_classes: int, requested: int | None, value_bytes: int = 4) -> str | None:
    """What to tell the user when :func:`batch_rows` cut a requested batch size, or when a
    requested size is so small that the per-batch cost dominates (else None). A small size
    is kept, not raised to a floor: it is a legitimate choice (bounding memory, testing batch
    boundaries) and every batch size gives the same results; the note says what it costs."""
    rows = batch_rows(n_classes, requested, value_bytes)
    if not requested:
        return None
    k = max(1, n_classes)
    default = batch_rows(n_classes)
    if rows == requested and requested < SMALL_BATCH_ROWS and 4 * requested <= default:
        per_million = 1e6 / requested * BATCH_COST_S
        return (f"batch size {requested:,} rows is far below the {default:,} evalkit reads for {k:,} classes: "
                f"each batch costs about {BATCH_COST_S * 1e3:g} ms of CPU whatever its size, about "
                f"{per_million:,.0f} s per million rows at this size (leave --batch-size out unless "
                "memory needs it)")
    if rows >= requested:
        return None
    mib = requested * k * value_bytes / 2**20
    return (f"batch size {requested:,} rows is {mib:,.0f} MiB of prediction values ({k:,} classes x "
            f"{value_bytes} bytes); reading batches of {rows:,} rows instead (at most "
            f"{MAX_BATCH_BYTES >> 20} MiB a batch keeps memory bounded)")


def value_bytes(schema: pa.Schema, columns: Sequence[str]) -> int:
    """Bytes per prediction value in ``columns`` of ``schema`` (inside lists and dictionaries):
    the widest integer or float type among them; 8 (read as float64) for anything else."""
    found = []
    for name in columns:
        if name not in schema.names:
            continue
        t = schema.field(name).type
        while pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            t = t.value_type
        if pa.types.is_dictionary(t):
            t = t.value_type
        numeric = pa.types.is_floating(t) or pa.types.is_integer(t)
        found.append(max(1, t.bit_width // 8) if numeric else 8)
    return max(found, default=8)


def run_local(
    plan: Plan,
    source: Source,
    *,
    label_index: LabelIndex | None = None,
    writer: RowWriter | None = None,
    keep_batches: list | None = None,  # type: ignore[type-arg]
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalState:
    """Stream ``source`` through the pipeline; return the final (unmerged) state."""
    state = plan.new_state(label_index.table.num_rows if label_index is not None else 0)
    width = value_bytes(source.schema, plan.layout.pred_columns)
    note = batch_note(plan.layout.n_classes, batch_size, width)
    if note is not None and progress is not None and hasattr(progress, "note"):
        progress.note(note)
    # Wide list batches are scored on the decode threads (batch_preparer): the same results.
    batches = source.batches(plan.input_columns, batch_rows(plan.layout.n_classes, batch_size, width),
                             dictionary_columns=plan.dictionary_columns,
                             prepare=batch_preparer(plan, label_index) if PREPARE else None,
                             key_columns=plan.key_columns)
    # closing(): when a batch raises, stop the reader's threads now, not whenever the garbage
    # collector finalises the abandoned generator (possibly inside threading internals).
    with contextlib.closing(batches):
        consume(plan, state, batches, label_index=label_index, writer=writer, keep=keep_batches,
                progress=progress, staged=STAGED)
    return state
