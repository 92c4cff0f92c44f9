"""Shared fixtures: small Parquet inputs built in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REF_PROBS = np.array([[0.7, 0.1, 0.2], [0.1, 0.5, 0.4], [0.02, 0.9, 0.08]])
REF_LABELS = np.array([0, 1, 1])
REF_LOSS = np.array([0.356674944, 0.693147181, 0.105360516])
REF_MEAN = 0.38506088005216804


def random_probs(rng: np.random.Generator, n: int, k: int, dtype=np.float64) -> np.ndarray:
    """Random probability rows (softmax of normal logits)."""
    z = rng.normal(size=(n, k)) * 2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(dtype)


def by_hand(p: np.ndarray, y: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """The notebook's definition, written independently of evalkit."""
    return -np.log(np.clip(p[np.arange(len(y)), y].astype(np.float64), eps, 1 - eps))


def process_members(ident: int, *, by: str, zombies: bool) -> list[str]:
    """Processes of process group (``by="group"``) or session (``by="session"``) ``ident``,
    from /proc (``"pid state name"`` each); zombies only when ``zombies``."""
    field = {"group": 2, "session": 3}[by]
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[field]) == ident and (zombies or fields[0] != "Z"):
            found.append(f"{pid} {fields[0]} {stat[stat.find('(') + 1:stat.rfind(')')]}")
    return found


def assert_group_ended(pgid: int, wait_s: float = 10.0) -> None:
    """After a command of process group ``pgid`` has exited: nothing of its group still runs,
    and its zombies go. A helper that ended as the command exited is an orphan zombie until
    init reaps it, which this project's VM init (process_api) can delay under load; it is
    dead and holds nothing, so it is waited for (up to ``wait_s``), never a live process."""
    import time

    left = process_members(pgid, by="group", zombies=True)
    assert [m for m in left if m.split()[1] != "Z"] == [], left
    deadline = time.monotonic() + wait_s
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = process_members(pgid, by="group", zombies=True)
    assert left == [], left


def write(table: pa.Table, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kw)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def wide_file(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 3-class wide-layout file with id, split, region, label columns."""
    n, k = 600, 3
    p = random_probs(rng, n, k, np.float32)
    y = rng.integers(0, k, n)
    t = pa.table({
        "id": np.arange(n),
        "split": rng.choice(["train", "val", "test"], n),
        "region": rng.choice(["EU", "US"], n),
        "label": y,
        **{f"prob_{i}": p[:, i] for i in range(k)},
    })
    return write(t, tmp_path / "preds.parquet", row_group_size=128), p, y
