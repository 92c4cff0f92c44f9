"""Regenerate the sample datasets in this folder, deterministically.

    python sample_data/generate.py

Writes:
- ``sentiment/split=<train|val|test>/part-0.parquet``: a 3-class sentiment model, wide
  float32 probability columns ``prob_negative``, ``prob_neutral``, ``prob_positive``, string
  labels, a ``region`` slice column; the split comes from the hive partition directories.
- ``digits.parquet``: a 10-class model, one ``probs`` fixed-size-list column, integer labels,
  ``split`` and ``region`` columns.
- ``separate_labels/predictions.parquet`` + ``separate_labels/labels.parquet``: a 3-class
  model's raw logits (``logit_cat``, ...) with labels kept in a separate file joined on ``id``.

The models are simulated: logits are the true class's signal plus noise, with a few
confidently wrong rows (probability exactly 0 for the true class) so clipping shows up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SEED = 20261125
REGIONS = np.array(["EU", "US", "APAC", "LATAM"])


def _logits(rng: np.random.Generator, y: np.ndarray, k: int, signal: np.ndarray) -> np.ndarray:
    z = rng.normal(0.0, 1.0, size=(len(y), k))
    z[np.arange(len(y)), y] += signal
    return z


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sentiment(rng: np.random.Generator) -> None:
    classes = ["negative", "neutral", "positive"]
    out = HERE / "sentiment"
    for split, n, signal in (("train", 3000, 3.0), ("val", 1000, 2.2), ("test", 1000, 2.0)):
        y = rng.choice(3, size=n, p=[0.3, 0.3, 0.4])
        region = REGIONS[rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])]
        # The model is worse on neutral text and in LATAM: visible in the grouped tables.
        s = np.full(n, signal) - 1.0 * (y == 1) - 0.8 * (region == "LATAM")
        p = _softmax(_logits(rng, y, 3, s)).astype(np.float32)
        wrong = rng.choice(n, size=max(1, n // 500), replace=False)
        p[wrong] = 0.0
        p[wrong, (y[wrong] + 1) % 3] = 1.0
        p = (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
        offset = {"train": 0, "val": 100_000, "test": 200_000}[split]
        table = pa.table({
            "id": pa.array(np.arange(n, dtype=np.int64) + offset),
            "region": pa.array(region),
            "label": pa.array(np.array(classes)[y]),
            **{f"prob_{c}": pa.array(p[:, i]) for i, c in enumerate(classes)},
        })
        (out / f"split={split}").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out / f"split={split}" / "part-0.parquet", compression="zstd")


def digits(rng: np.random.Generator) -> None:
    n, k = 5000, 10
    y = rng.integers(0, k, size=n)
    split = np.array(["train", "val", "test"])[rng.choice(3, size=n, p=[0.6, 0.2, 0.2])]
    region = REGIONS[rng.choice(4, size=n)]
    s = 3.0 - 1.5 * np.isin(y, [3, 5, 8])  # 3, 5 and 8 are the hard digits
    p = _softmax(_logits(rng, y, k, s)).astype(np.float32)
    wrong = rng.choice(n, size=8, replace=False)
    p[wrong] = 0.0
    p[wrong, (y[wrong] + 3) % k] = 1.0
    probs = pa.FixedSizeListArray.from_arrays(pa.array(p.reshape(-1)), k)
    table = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64)),
        "split": pa.array(split),
        "region": pa.array(region),
        "label": pa.array(y.astype(np.int64)),
        "probs": probs,
    })
    pq.write_table(table, HERE / "digits.parquet", compression="zstd", row_group_size=2000)


def separate_labels(rng: np.random.Generator) -> None:
    n = 2000
    classes = np.array(["cat", "dog", "bird"])
    y = rng.choice(3, size=n)
    z = _logits(rng, y, 3, np.full(n, 2.5)) * 1.5
    ids = rng.permutation(np.arange(10_000, 10_000 + n))
    out = HERE / "separate_labels"
    out.mkdir(exist_ok=True)
    preds = pa.table({
        "id": pa.array(ids.astype(np.int64)),
        "split": pa.array(np.where(rng.random(n) < 0.8, "val", "test")),
        **{f"logit_{c}": pa.array(z[:, i].astype(np.float32)) for i, c in enumerate(classes)},
    })
    order = rng.permutation(n)  # labels are stored in another order: the join must not care
    labels = pa.table({"id": pa.array(ids[order].astype(np.int64)), "label": pa.array(classes[y][order])})
    pq.write_table(preds, out / "predictions.parquet", compression="zstd")
    pq.write_table(labels, out / "labels.parquet", compression="zstd")


def main() -> None:
    """Write every sample dataset."""
    rng = np.random.default_rng(SEED)
    sentiment(rng)
    digits(rng)
    separate_labels(rng)
    for f in sorted(HERE.rglob("*.parquet")):
        print(f"{f.relative_to(HERE)}: {pq.read_metadata(f).num_rows} rows")


if __name__ == "__main__":
    main()
