"""Deterministic synthetic prediction datasets for the benchmark harness.

Every dataset is a single zstd Parquet file written chunk by chunk, so generation
memory is bounded by one chunk whatever the number of rows.  Chunk ``i`` is drawn
from ``numpy.random.default_rng([seed, i])``: a dataset with more rows starts with
exactly the rows of a smaller one (same seed), and the content never depends on
the machine.

Datasets
--------
``wide10``
    ``id`` int64, ``split`` string (train/val/test), ``label`` int64 in [0, 10),
    ``prob_0`` .. ``prob_9`` float32.
``list10``
    Same rows as ``wide10`` but probabilities in one ``probs`` column of type
    ``fixed_size_list<float32, 10>``.
``list1000``
    ``rows // 10`` rows, 1000 classes, ``probs`` as ``list<float32>``.

Probabilities are a float32 softmax of standard-normal logits with a random positive
bias on the true class.  About 1 row in 10,000 has an exact 0 for the true class and
about 1 in 10,000 is one-hot on the true class (an exact 1), so both clipping bounds
are exercised.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

GENERATOR_VERSION = 1
METADATA_KEY = b"evalkit_bench"
SPLITS = ("train", "val", "test")
SPLIT_P = (0.8, 0.1, 0.1)
ZERO_TRUE_FRACTION = 1e-4
ONE_HOT_FRACTION = 1e-4


@dataclass(frozen=True)
class DatasetSpec:
    """Shape of one benchmark dataset."""

    name: str
    n_classes: int
    layout: str  # "wide", "fixed_list" or "list"
    rows_divisor: int  # dataset rows = --rows // rows_divisor
    chunk_rows: int  # rows per generated chunk == rows per Parquet row group


DATASETS: dict[str, DatasetSpec] = {
    "wide10": DatasetSpec("wide10", 10, "wide", 1, 1_000_000),
    "list10": DatasetSpec("list10", 10, "fixed_list", 1, 1_000_000),
    # 100k rows x 1000 float32 = 400 MB per row group; 1M-row groups would be 4 GB.
    "list1000": DatasetSpec("list1000", 1000, "list", 10, 100_000),
}


def dataset_rows(name: str, rows: int) -> int:
    """Number of rows of dataset ``name`` for a ``--rows`` setting."""
    return max(1, rows // DATASETS[name].rows_divisor)


def _chunk_arrays(
    seed: int, chunk_index: int, start: int, m: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw one chunk: ids, split codes, labels and a C-contiguous (m, k) float32 matrix."""
    rng = np.random.default_rng([seed, chunk_index])
    ids = np.arange(start, start + m, dtype=np.int64)
    label = rng.integers(0, k, size=m, dtype=np.int64)
    split_codes = rng.choice(len(SPLITS), size=m, p=SPLIT_P).astype(np.int8)
    probs = rng.standard_normal((m, k), dtype=np.float32)
    rows = np.arange(m)
    probs[rows, label] += rng.uniform(0.0, 4.0, size=m).astype(np.float32)
    probs -= probs.max(axis=1, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=1, keepdims=True)

    zero = np.flatnonzero(rng.random(m) < ZERO_TRUE_FRACTION)
    if zero.size:
        probs[zero, label[zero]] = 0.0
        probs[zero] /= probs[zero].sum(axis=1, keepdims=True)
    one_hot = np.flatnonzero(rng.random(m) < ONE_HOT_FRACTION)
    if one_hot.size:
        probs[one_hot] = 0.0
        probs[one_hot, label[one_hot]] = 1.0
    return ids, split_codes, label, probs


def _chunk_table(spec: DatasetSpec, seed: int, chunk_index: int, start: int, m: int) -> pa.Table:
    """Build the Arrow table of one chunk in the layout of ``spec``."""
    k = spec.n_classes
    ids, split_codes, label, probs = _chunk_arrays(seed, chunk_index, start, m, k)
    split = pc.take(pa.array(SPLITS, pa.string()), pa.array(split_codes))
    columns: dict[str, pa.Array] = {
        "id": pa.array(ids),
        "split": split,
        "label": pa.array(label),
    }
    if spec.layout == "wide":
        by_class = np.ascontiguousarray(probs.T)
        for j in range(k):
            columns[f"prob_{j}"] = pa.array(by_class[j])
    else:
        values = pa.array(probs.reshape(-1))
        if spec.layout == "fixed_list":
            columns["probs"] = pa.FixedSizeListArray.from_arrays(values, k)
        else:
            offsets = pa.array(np.arange(0, (m + 1) * k, k, dtype=np.int32))
            columns["probs"] = pa.ListArray.from_arrays(offsets, values)
    return pa.table(columns)


def _metadata(spec: DatasetSpec, rows: int, seed: int) -> dict[str, object]:
    return {
        "dataset": spec.name,
        "rows": rows,
        "seed": seed,
        "n_classes": spec.n_classes,
        "version": GENERATOR_VERSION,
    }


def dataset_path(data_dir: Path, name: str, rows: int, seed: int) -> Path:
    """File name of a dataset in ``data_dir`` (rows are the dataset's own row count)."""
    return Path(data_dir) / f"{name}_{rows}_s{seed}.parquet"


def is_current(path: Path, name: str, rows: int, seed: int) -> bool:
    """True if ``path`` is a complete dataset written by this generator version."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return False
    raw = meta.get(METADATA_KEY)
    if raw is None:
        return False
    return json.loads(raw) == _metadata(DATASETS[name], rows, seed)


def generate(name: str, rows: int, path: Path, seed: int = 0) -> Path:
    """Write dataset ``name`` with ``rows`` rows to ``path`` (atomically, via a temp file)."""
    spec = DATASETS[name]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    writer: pq.ParquetWriter | None = None
    try:
        for chunk_index, start in enumerate(range(0, rows, spec.chunk_rows)):
            m = min(spec.chunk_rows, rows - start)
            table = _chunk_table(spec, seed, chunk_index, start, m)
            if writer is None:
                schema = table.schema.with_metadata(
                    {METADATA_KEY: json.dumps(_metadata(spec, rows, seed))}
                )
                writer = pq.ParquetWriter(tmp, schema, compression="zstd")
            writer.write_table(table, row_group_size=spec.chunk_rows)
        if writer is not None:
            writer.close()
            writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return path


def ensure(data_dir: Path, name: str, rows: int, seed: int = 0) -> tuple[Path, bool]:
    """Return ``(path, generated)``; regenerate only if the file is missing or stale.

    ``rows`` is the dataset's own row count (see :func:`dataset_rows`).
    """
    path = dataset_path(data_dir, name, rows, seed)
    if is_current(path, name, rows, seed):
        return path, False
    return generate(name, rows, path, seed), True
