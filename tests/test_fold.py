"""The sorted-store fold shared by the sparse sketch and the sparse calibration cells."""

from __future__ import annotations

import numpy as np
import pytest

from evalkit.aggregate.calibration import CalibrationBins
from evalkit.aggregate.sketch import BinCounts, fold_sorted


def _by_hand(keys, vals, new_keys, new_vals):
    out: dict[int, list] = {int(k): [v[i] for v in vals] for i, k in enumerate(keys)}
    for i, k in enumerate(new_keys):
        cur = out.setdefault(int(k), [v.dtype.type(0) for v in new_vals])
        for j, v in enumerate(new_vals):
            cur[j] = cur[j] + v[i]
    ks = sorted(out)
    return np.array(ks, dtype=np.int64), [np.array([out[k][j] for k in ks]) for j in range(len(vals))]


@pytest.mark.parametrize("n_store,n_new,span", [(0, 5, 10), (5, 0, 10), (50, 50, 60),
                                               (50, 50, 10_000), (200, 3, 1000), (1, 300, 400)])
@pytest.mark.parametrize("seed", range(4))
def test_fold_sorted_equals_dict_by_hand_and_leaves_inputs_alone(n_store, n_new, span, seed):
    rng = np.random.default_rng(seed)
    keys = np.unique(rng.integers(0, span, n_store)).astype(np.int64)
    vals = [rng.integers(1, 9, len(keys)).astype(np.int64), rng.random(len(keys))]
    new_keys = np.unique(rng.integers(0, span, n_new)).astype(np.int64)
    new_vals = [rng.integers(1, 9, len(new_keys)).astype(np.int64), rng.random(len(new_keys))]
    before = [keys.copy(), *(v.copy() for v in vals), new_keys.copy(), *(v.copy() for v in new_vals)]
    want_k, want_v = _by_hand(keys, vals, new_keys, new_vals)
    got_k, got_v = fold_sorted(keys, list(vals), new_keys, list(new_vals))
    np.testing.assert_array_equal(got_k, want_k)
    np.testing.assert_array_equal(got_v[0], want_v[0])
    np.testing.assert_allclose(got_v[1], want_v[1], rtol=1e-15)
    assert got_k.dtype == np.int64 and got_v[0].dtype == np.int64
    for a, b in zip(before, [keys, *vals, new_keys, *new_vals], strict=True):
        np.testing.assert_array_equal(a, b)  # inputs (maybe shared by a copy) untouched


def test_sparse_stores_fold_often_and_equal_dense(monkeypatch):
    """Tiny PENDING thresholds: many folds into a growing store == the dense tables."""
    monkeypatch.setattr(BinCounts, "PENDING_KEYS", 5)
    monkeypatch.setattr(CalibrationBins, "PENDING_ROWS", 5)
    rng = np.random.default_rng(11)
    groups, nb = 40, 7
    sparse, dense = BinCounts(nb), BinCounts(nb)
    monkeypatch.setattr(sparse, "DENSE_CELLS", 0)
    cs, cd = CalibrationBins(4), CalibrationBins(4)
    monkeypatch.setattr(cs, "DENSE_CELLS", 0)
    for h in (sparse, dense):
        h.ensure(groups)
    cs.resize(groups)
    cd.resize(groups)
    for _ in range(30):
        n = int(rng.integers(1, 40))
        local = rng.integers(0, groups, n)
        bins = rng.integers(0, nb, n)
        for h in (sparse, dense):
            h.add(local, np.arange(groups), bins)
        cb = rng.integers(0, 4, n)
        conf, ok = rng.random(n), rng.random(n) < 0.5
        for c in (cs, cd):
            c.add(local, groups, np.arange(groups), None, cb, conf, ok, rng.random(n) * 0, conf * 0)
    assert sparse._dense is None and dense._dense is not None and cs.sparse and not cd.sparse
    for a, b in zip(sparse.entries(), dense.entries(), strict=True):
        np.testing.assert_array_equal(a, b)
    sa, sd = cs.state(), cd.state()
    np.testing.assert_array_equal(sa["count"], sd["count"])
    np.testing.assert_array_equal(sa["correct"], sd["correct"])
    np.testing.assert_allclose(sa["conf_sum"], sd["conf_sum"], rtol=1e-13)


@pytest.mark.parametrize("n,span", [(0, 1), (1, 5), (2, 1), (1000, 7), (5000, 1 << 20), (3000, 1 << 52),
                                    (64, 1 << 62)])
def test_stable_key_order_is_the_stable_argsort(n, span):
    """The packed sort orders equal keys by position, as a stable sort does; keys too large to
    pack beside a position (and negative ones) take the stable argsort itself."""
    from evalkit.aggregate.sketch import stable_key_order

    rng = np.random.default_rng(n)
    keys = rng.integers(0, span, n, dtype=np.int64)
    np.testing.assert_array_equal(stable_key_order(keys), np.argsort(keys, kind="stable"))
    neg = keys - span // 2
    np.testing.assert_array_equal(stable_key_order(neg), np.argsort(neg, kind="stable"))


def test_calibration_cells_sum_as_with_the_stable_argsort(monkeypatch):
    """The sparse calibration cells keep each key's rows in row order before summing (the
    packed sort of :func:`stable_key_order`), so the confidence sums are those of a stable
    argsort, bit for bit, and the counts are exact."""
    from evalkit.aggregate import calibration

    rng = np.random.default_rng(2)
    n = 4000
    local = rng.integers(0, 10, n)
    bins = rng.integers(0, 3, n)
    conf = rng.random(n) * 1e3 + rng.random(n) * 1e-9  # sums that depend on the order of additions
    ok = rng.random(n) < 0.5

    def cells():
        cal = CalibrationBins(3)
        cal.DENSE_CELLS = 0  # type: ignore[misc]
        cal.resize(10)
        for part in np.array_split(np.arange(n), 3):
            cal.add(local[part], 10, np.arange(10), None, bins[part], conf[part], ok[part],
                    np.zeros(len(part)), np.zeros(len(part)))
        return cal.entries()

    packed = cells()
    monkeypatch.setattr(calibration, "stable_key_order", lambda k: np.argsort(k, kind="stable"))
    for a, b in zip(packed, cells(), strict=True):
        np.testing.assert_array_equal(a, b)
    slot, b, cnt, cor, _ = packed
    for s, bb, c, k in zip(slot, b, cnt, cor, strict=True):
        rows = (local == s) & (bins == bb)
        assert c == rows.sum() and k == ok[rows].sum()


def test_settle_in_the_background_folds_the_same_cells_and_raises_its_error(monkeypatch):
    """GroupStats.finalize folds the histogram's and the calibration cells' rows still waiting
    on threads of their own (settle(background=True)) while it computes the rest: the same
    cells as a fold where they are read, and a failure of the fold is raised by the wait."""
    from evalkit.aggregate import sketch

    monkeypatch.setattr(sketch, "SETTLE_THREAD_ROWS", 1)
    monkeypatch.setattr(sketch.os, "cpu_count", lambda: 2)
    rng = np.random.default_rng(5)
    n = 3000
    args = (rng.integers(0, 50, n), 50, np.arange(50), None, rng.integers(0, 4, n), rng.random(n),
            rng.random(n) < 0.5, np.zeros(n), np.zeros(n))
    made = []
    for _ in range(3):
        c = CalibrationBins(4)
        c.DENSE_CELLS = 0  # type: ignore[misc]
        c.resize(50)
        c.add(*args)
        made.append(c)
    here, there, broken = made
    assert there._pending_n == n
    there.settle(background=True)()
    assert there._pending_n == 0
    for a, b in zip(here.entries(), there.entries(), strict=True):
        np.testing.assert_array_equal(a, b)

    def fail() -> None:
        raise MemoryError("fold")
    monkeypatch.setattr(broken, "_compact", fail)
    wait = broken.settle(background=True)
    with pytest.raises(MemoryError, match="fold"):
        wait()
    local, bins = rng.integers(0, 50, n), rng.integers(0, 7, n)
    hist, plain = BinCounts(7), BinCounts(7)
    for h in (hist, plain):
        h.DENSE_CELLS = 0  # type: ignore[misc]
        h.ensure(50)
        h.add(local, np.arange(50), bins)
    assert hist.sparse and hist._pending_n == n
    hist.settle(background=True)()
    assert hist._pending_n == 0
    for a, b in zip(hist.entries(), plain.entries(), strict=True):
        np.testing.assert_array_equal(a, b)
