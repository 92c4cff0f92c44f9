"""The local streaming engine: Arrow's threaded scanner feeding one pipeline, bounded memory.

Batches are decoded in parallel by Arrow (column projection, read-ahead) while this thread
runs the kernel and updates the accumulators; per-row output is appended to a Parquet
writer as it is produced, so memory is flat in the number of rows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from ..io import RowWriter, Source
from ..join import LabelIndex
from .base import EvalState, Plan, consume

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
#: Update the accumulators on a second thread (:class:`evalkit.engines.base.Stages`)?
#: Only with a second core to run it on.
STAGED = (os.cpu_count() or 1) > 1


def batch_rows(n_classes: int, requested: int | None = None) -> int:
    """Rows per batch for K classes (or the user's choice)."""
    if requested:
        return int(requested)
    k = max(1, n_classes)
    # At least MIN_ROWS_PER_BATCH rows (per-batch costs), unless that many rows would
    # exceed MAX_VALUES_PER_BATCH (a vocabulary of classes).
    rows = max(MIN_ROWS_PER_BATCH, min(MAX_ROWS_PER_BATCH, VALUES_PER_BATCH // k))
    return max(1, min(rows, MAX_VALUES_PER_BATCH // k))


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
    batches = source.batches(plan.input_columns, batch_rows(plan.layout.n_classes, batch_size),
                             dictionary_columns=plan.dictionary_columns)
    # closing(): when a batch raises, stop the reader's threads now, not whenever the garbage
    # collector finalises the abandoned generator (possibly inside threading internals).
    with contextlib.closing(batches):
        consume(plan, state, batches, label_index=label_index, writer=writer, keep=keep_batches,
                progress=progress, staged=STAGED)
    return state
