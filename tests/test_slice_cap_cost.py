"""Slice sets over the limit cost nothing more (red team 16): a set holding the columns of a set
already over --slice-limit is over it too and is dropped at once; a batch whose distinct values
of any one plain column exceed the limit drops every set holding that column; once every set
is dropped, a batch is not even encoded."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from evalkit.aggregate import slices as slices_mod
from evalkit.aggregate.slices import SliceStats, assess_slices


def _batch(stats, cols, loss, lo, hi):
    stats.update({k: pa.array(v[lo:hi]) for k, v in cols.items()}, loss[lo:hi], rows=np.arange(lo, hi))


def test_supersets_of_a_capped_set_are_dropped_with_it_and_later_batches_are_not_encoded(monkeypatch):
    rng = np.random.default_rng(0)
    n = 3000
    cols = {"hs": np.arange(n).astype(str), "r": rng.choice(list("abc"), n), "u": rng.choice(list("xy"), n)}
    loss = rng.exponential(1.0, n)
    stats = SliceStats(list(cols), 3, max_slices=1000)
    _batch(stats, cols, loss, 0, 600)  # 600 distinct hs: under the limit in one batch
    assert stats._acc[("hs", "r")] is not None
    _batch(stats, cols, loss, 600, 1200)  # 1200 hs seen: (hs,) over, and every set with hs
    dropped = {s for s, a in stats._acc.items() if a is None}
    assert dropped == {s for s in stats.sets if "hs" in s}
    assert all(stats.capped[s] >= 1001 for s in dropped)
    _, summary = assess_slices(stats)
    assert {c["columns"] for c in summary["capped"]} == {",".join(s) for s in dropped}

    one_batch = SliceStats(list(cols), 3, max_slices=1000)
    _batch(one_batch, cols, loss, 0, 1500)  # a batch alone shows hs,r and hs,r,u are over
    assert {s for s, a in one_batch._acc.items() if a is None} == dropped

    calls = []
    real = slices_mod.canonical_keys
    monkeypatch.setattr(slices_mod, "canonical_keys", lambda c: calls.append(1) or real(c))
    only_hs = SliceStats(["hs"], 1, max_slices=1000)
    _batch(only_hs, cols, loss, 0, 1500)
    assert only_hs._acc[("hs",)] is None and len(calls) == 1
    _batch(only_hs, cols, loss, 1500, 3000)
    assert len(calls) == 1  # nothing left to accumulate: the second batch is not encoded
