"""The streaming Poisson bootstrap keeps few-row groups as rows and many-row groups as
replicate sums (evalkit.aggregate.bootstrap): its intervals must equal the replicate sums
computed by hand from the same Poisson weights, whatever the batches, merges, projections
and pickling, and its memory must follow what the groups hold (rt-api9 F23: 146k one-row
groups x 400 replicates took 2.7 GB)."""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from evalkit.aggregate import GroupStats
from evalkit.aggregate.bootstrap import PoissonBootstrap
from evalkit.inference import poisson_weights


def _by_hand(slots, loss, weight, n_groups, B, seed, confidence):
    """Percentile interval of each group's replicate means, from the whole input at once."""
    w = poisson_weights(np.arange(len(slots)), seed, B).astype(np.float64)
    if weight is not None:
        w *= weight[:, None]
    ws = np.zeros((n_groups, B))
    wl = np.zeros((n_groups, B))
    np.add.at(ws, slots, w)
    np.add.at(wl, slots, w * loss[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(ws > 0, wl / np.where(ws > 0, ws, 1.0), np.nan)
    lo = np.full(n_groups, np.nan)
    hi = np.full(n_groups, np.nan)
    ok = np.isfinite(means).sum(axis=1) >= 2
    if ok.any():
        q = np.nanquantile(means[ok], [(1 - confidence) / 2, (1 + confidence) / 2], axis=1)
        lo[ok], hi[ok] = q[0], q[1]
    return lo, hi


def _fed(slots, loss, weight, cuts, B, seed, n_groups):
    boot = PoissonBootstrap(B)
    boot.resize(n_groups)
    bounds = [0, *sorted(cuts), len(slots)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b > a:
            boot.add(slots[a:b], poisson_weights(np.arange(a, b), seed, B), loss[a:b],
                     None if weight is None else weight[a:b])
    return boot


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=12),
    B=st.sampled_from([2, 7, 100]),
    weighted=st.booleans(),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    split=st.integers(0, 400),
    seed=st.integers(0, 3),
)
def test_sparse_and_dense_groups_equal_the_sums_by_hand(sizes, B, weighted, cuts, split, seed):
    rng = np.random.default_rng(seed)
    slots = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    n = len(slots)
    loss = rng.exponential(size=n)
    weight = rng.choice([0.0, 0.5, 3.0, 1e300], size=n) if weighted else None
    lo, hi = _by_hand(slots, loss, weight, len(sizes), B, seed, 0.9)
    order = np.arange(len(sizes))

    whole = _fed(slots, loss, weight, [c for c in cuts if c < n], B, seed, len(sizes))
    got = whole.interval(order, 0.9)
    np.testing.assert_allclose(got[0], lo, rtol=1e-12)
    np.testing.assert_allclose(got[1], hi, rtol=1e-12)

    # Two partial states (rows before / after `split`) absorbed into one: the same.
    k = min(split, n)
    first = PoissonBootstrap(B)
    first.resize(len(sizes))
    if k:
        first.add(slots[:k], poisson_weights(np.arange(k), seed, B), loss[:k],
                  None if weight is None else weight[:k])
    second = PoissonBootstrap(B)
    second.resize(len(sizes))
    if k < n:
        second.add(slots[k:], poisson_weights(np.arange(k, n), seed, B), loss[k:],
                   None if weight is None else weight[k:])
    second = pickle.loads(pickle.dumps(second.trimmed(len(sizes))))
    first.absorb(second, order, order)
    got = first.interval(order, 0.9)
    np.testing.assert_allclose(got[0], lo, rtol=1e-12)
    np.testing.assert_allclose(got[1], hi, rtol=1e-12)

    # Every group into one (several sources per destination, as GroupStats.project does).
    one = PoissonBootstrap(B)
    one.resize(1)
    one.absorb(whole, order, np.zeros(len(order), dtype=np.int64))
    lo1, hi1 = _by_hand(np.zeros(n, dtype=np.int64), loss, weight, 1, B, seed, 0.9)
    got = one.interval(np.arange(1), 0.9)
    np.testing.assert_allclose(got[0], lo1, rtol=1e-12)
    np.testing.assert_allclose(got[1], hi1, rtol=1e-12)


def test_one_row_groups_are_kept_as_rows_and_large_groups_as_sums():
    B = 400
    boot = PoissonBootstrap(B)
    n_groups = 150_000
    boot.resize(n_groups)
    slots = np.arange(n_groups)
    boot.add(slots, poisson_weights(slots, 0, B), np.ones(n_groups), None)
    # 150k groups x 400 replicates as sums: 16 B bytes each = 0.96 GB; as rows: ~64 MB.
    assert boot.nbytes < n_groups * (B + 24) + 16 * n_groups + 1
    assert boot.nbytes < n_groups * 16 * B / 10
    # A group with many rows turns into sums (its rows are not all kept).
    big = np.zeros(50_000, dtype=np.int64)
    boot.add(big, poisson_weights(np.arange(n_groups, n_groups + 50_000), 0, B), np.ones(50_000), None)
    assert boot.nbytes < (n_groups + 2 * boot.promote_at) * (B + 24) + 16 * n_groups + 32 * B


def test_groupstats_with_many_one_row_groups_stays_small():
    """Through GroupStats (what evaluate --by user --ci bootstrap runs)."""
    n = 100_000
    gs = GroupStats(["user"], bootstrap_samples=400)
    users = pa.array(np.arange(n).astype(str))
    loss = np.random.default_rng(0).exponential(size=n)
    weights = poisson_weights(np.arange(n), 0, 400)
    tracemalloc.start()
    try:
        gs.update([users], loss, np.zeros(n, bool), np.zeros(n, bool), boot_weights=weights)
        df = gs.finalize()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 150e6, peak  # as sums: 100k x 6.4 KB = 640 MB, and more while growing
    assert df["ci_low"].isna().all()  # one row each: no interval
    merged = gs.merge(gs)
    out = merged.finalize()
    assert out["ci_low"].notna().all()  # two rows each now


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(float("nan"))),
                           min_size=1, max_size=30), min_size=1, max_size=20),
    qs=st.lists(st.floats(0, 1), min_size=1, max_size=3),
)
def test_row_quantiles_are_numpys_nanquantile_to_the_bit(data, qs):
    from evalkit.aggregate.bootstrap import nan_row_quantiles

    width = max(len(r) for r in data)
    arr = np.full((len(data), width), np.nan)
    for i, r in enumerate(data):
        arr[i, : len(r)] = r
    arr = arr[np.isfinite(arr).any(axis=1)]
    if not len(arr):
        return
    want = np.nanquantile(arr, qs, axis=1)
    got = nan_row_quantiles(arr, tuple(qs))
    np.testing.assert_array_equal(got, want)
