"""The sparse / dense quantile sketch (BinCounts) under GroupStats: the 1e-3 relative-error
guarantee for small and large groups, exact counts, associative merges, and the same
answers whichever representation holds the counts."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.aggregate import Confusion, GroupStats, quantile_column_name
from evalkit.aggregate.sketch import BinCounts, LogHistogram

EPS = 1e-7
LO, HI = -np.log1p(-EPS), -np.log(EPS)


def _losses(rng: np.random.Generator, n: int) -> np.ndarray:
    # Spread over the whole clipped range, both bounds included.
    x = np.exp(rng.uniform(np.log(LO), np.log(HI), n))
    x[rng.random(n) < 0.01] = HI
    x[rng.random(n) < 0.01] = LO
    return x


def _keys(rng: np.random.Generator, n: int, groups: int) -> tuple[np.ndarray, pa.Array]:
    # Group sizes from 1 row to thousands: a geometric-ish spread of user ids.
    ids = np.minimum((rng.pareto(0.7, n) * 3).astype(np.int64), groups - 1)
    return ids, pa.array([f"u{i:06d}" for i in ids])


def _stats(sparse: bool, monkeypatch: pytest.MonkeyPatch, **kw) -> GroupStats:
    monkeypatch.setattr(BinCounts, "DENSE_CELLS", 0 if sparse else 1 << 40)
    return GroupStats(("user",), quantile_mode="sketch", eps=EPS, quantiles=(0.0, 0.1, 0.5, 0.9, 0.99, 1.0),
                      **kw)


def _feed(gs: GroupStats, keys: pa.Array, loss: np.ndarray, batch: int) -> GroupStats:
    n = len(loss)
    for s in range(0, n, batch):
        e = min(n, s + batch)
        gs.update([keys.slice(s, e - s)], loss[s:e], np.zeros(e - s, bool), np.zeros(e - s, bool))
    return gs


@pytest.mark.parametrize("sparse", [False, True])
def test_sketch_quantiles_within_rel_err_of_exact_small_and_large_groups(sparse, monkeypatch):
    rng = np.random.default_rng(1)
    n, groups = 40_000, 3_000
    ids, keys = _keys(rng, n, groups)
    loss = _losses(rng, n)
    gs = _feed(_stats(sparse, monkeypatch), keys, loss, 7_000)
    assert gs._bins.sparse is sparse
    df = gs.finalize().set_index("user")
    sizes = np.bincount(ids)
    assert sizes.max() > 1_000 and (sizes == 1).sum() > 10  # large and single-row groups
    frame = pd.DataFrame({"user": keys.to_pylist(), "loss": loss})
    for user, part in frame.groupby("user"):
        x = part["loss"].to_numpy()
        assert df.loc[user, "count"] == len(x)  # counts exact
        for q in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
            want = np.quantile(x, q, method="linear")
            got = df.loc[user, f"p{q * 100:g}"]
            assert abs(got - want) <= 1e-3 * want, (user, q, got, want)


def test_sparse_and_dense_give_identical_tables(monkeypatch):
    rng = np.random.default_rng(2)
    n = 20_000
    _, keys = _keys(rng, n, 2_000)
    loss = _losses(rng, n)
    dense = _feed(_stats(False, monkeypatch), keys, loss, 3_000).finalize()
    sparse = _feed(_stats(True, monkeypatch), keys, loss, 3_000).finalize()
    pd.testing.assert_frame_equal(dense, sparse)


def test_sparse_merge_is_associative_and_exact_in_count(monkeypatch):
    rng = np.random.default_rng(3)
    n = 30_000
    _, keys = _keys(rng, n, 5_000)
    loss = _losses(rng, n)
    parts = []
    for s, e in ((0, 9_000), (9_000, 21_000), (21_000, n)):
        parts.append(_feed(_stats(True, monkeypatch), keys.slice(s, e - s), loss[s:e], 2_500))
    a, b, c = parts
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    swapped = c.merge(a).merge(b)
    whole = _feed(_stats(True, monkeypatch), keys, loss, 4_000)
    t = whole.finalize()
    for other in (left, right, swapped):
        assert other._bins.sparse
        pd.testing.assert_frame_equal(other.finalize()[["user", "count", "min", "max"]],
                                      t[["user", "count", "min", "max"]])
        # The histogram counts themselves are exactly equal, cell by cell.
        want = {(k, b): c for k, b, c in zip(*_cells(whole), strict=True)}
        got = {(k, b): c for k, b, c in zip(*_cells(other), strict=True)}
        assert got == want
        q = [col for col in t.columns if col.startswith("p")]
        pd.testing.assert_frame_equal(other.finalize()[q], t[q])
    # Inputs are not modified by merging.
    assert a.finalize()["count"].sum() == 9_000


def _cells(gs: GroupStats) -> tuple[list, list, list]:
    slot, b, c = gs._bins.entries()
    names = [gs._index.keys[s][0] for s in slot.tolist()]
    return names, b.tolist(), c.tolist()


def test_dense_and_sparse_states_merge_with_each_other(monkeypatch):
    rng = np.random.default_rng(4)
    _, keys = _keys(rng, 8_000, 500)
    loss = _losses(rng, 8_000)
    dense = _feed(_stats(False, monkeypatch), keys.slice(0, 4_000), loss[:4_000], 1_000)
    sparse = _feed(_stats(True, monkeypatch), keys.slice(4_000), loss[4_000:], 1_000)
    whole = _feed(_stats(False, monkeypatch), keys, loss, 1_000).finalize()
    for merged in (dense.merge(sparse), sparse.merge(dense)):
        pd.testing.assert_frame_equal(merged.finalize(), whole)


def test_sparse_state_pickles_small_and_round_trips(monkeypatch):
    rng = np.random.default_rng(5)
    n = 50_000
    _, keys = _keys(rng, n, 20_000)
    loss = _losses(rng, n)
    gs = _feed(_stats(True, monkeypatch), keys, loss, 10_000)
    blob = pickle.dumps(gs)
    # A dense table would be groups x 9.5k bins x 8 bytes (gigabytes); sparse is per row.
    assert len(blob) < 100 * n
    pd.testing.assert_frame_equal(pickle.loads(blob).finalize(), gs.finalize())


def test_pending_keys_are_folded_in_batches(monkeypatch):
    monkeypatch.setattr(BinCounts, "PENDING_KEYS", 1_000)
    bc = BinCounts(LogHistogram.for_eps(EPS).n_bins)
    bc.ensure(1 << 20)  # sparse from the start
    rng = np.random.default_rng(6)
    want: dict[tuple[int, int], int] = {}
    for _ in range(30):
        slots = rng.integers(0, 1 << 20, 50)
        local = rng.integers(0, 50, 700)
        bins = rng.integers(0, 100, 700)
        bc.add(local, slots, bins)
        for s, b in zip(slots[local].tolist(), bins.tolist(), strict=True):
            want[(s, b)] = want.get((s, b), 0) + 1
        # Pending rows stay bounded: by the limit, or by the store they are folded into.
        assert bc._pending_n < max(1_000, len(bc._keys)) + 700
    s, b, c = bc.entries()
    assert dict(zip(zip(s.tolist(), b.tolist(), strict=True), c.tolist(), strict=True)) == want


# -- the sparse confusion table ------------------------------------------------------------


def _confusion_batches(rng: np.random.Generator, k: int, n: int, parts: int):
    true = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.5, true, rng.integers(0, k, n))
    loss = _losses(rng, n)
    cuts = np.linspace(0, n, parts + 1).astype(int)
    return true, pred, loss, [(true[a:b], pred[a:b], loss[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def test_confusion_of_50k_classes_is_sparse_exact_and_associative():
    k = 50_000
    classes = [f"c{i}" for i in range(k)]
    rng = np.random.default_rng(7)
    true, pred, loss, batches = _confusion_batches(rng, k, 6_000, 3)
    states = []
    for t, p, lo in batches:
        c = Confusion(classes)
        c.update(t, p, lo)
        states.append(c)
    a, b, c = states
    assert not a.dense and len(a.count) <= 2_000  # only the occurring pairs: no K x K array
    frame = pd.DataFrame({"class": np.array(classes)[true], "predicted": np.array(classes)[pred], "loss": loss})
    want = frame.groupby(["class", "predicted"]).agg(count=("loss", "size"), mean=("loss", "mean"))
    for merged in (a.merge(b).merge(c), a.merge(b.merge(c)), c.merge(a).merge(b)):
        got = merged.finalize().set_index(["class", "predicted"]).sort_index()
        assert got["count"].tolist() == want["count"].tolist()  # exact counts
        assert got.index.tolist() == want.index.tolist()
        np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-12)
    assert a.finalize()["count"].sum() == 2_000  # inputs untouched by merging


def test_confusion_dense_and_sparse_agree(monkeypatch):
    k = 40
    classes = [f"c{i}" for i in range(k)]
    rng = np.random.default_rng(8)
    _, _, _, batches = _confusion_batches(rng, k, 5_000, 4)
    dense = Confusion(classes)
    monkeypatch.setattr(Confusion, "DENSE_CELLS", 0)
    sparse = Confusion(classes)
    assert dense.dense and not sparse.dense
    for t, p, lo in batches:
        dense.update(t, p, lo)
        sparse.update(t, p, lo)
    d, s = dense.finalize(), sparse.finalize()
    pd.testing.assert_frame_equal(d[["class", "predicted", "count"]], s[["class", "predicted", "count"]])
    np.testing.assert_allclose(d["mean"], s["mean"], rtol=1e-12)


# -- many groups: the key index maps a batch's values to slots by Arrow hashing ---------------


def test_key_slots_by_value_across_dictionaries_nulls_and_merges():
    from evalkit.aggregate.keys import _KeyIndex

    rng = np.random.default_rng(9)
    values = [f"user{i}" for i in range(300)]
    index = _KeyIndex(("user",), ())
    seen: dict = {}
    d1 = pa.array(values)
    d2 = pa.array(list(reversed(values)) + ["late"])  # another row group: another dictionary
    for d in (d1, d1, d2, pa.array(values[:50]), d1):
        idx = rng.integers(0, len(d) + 20, 400)  # codes >= len(d): null rows
        codes = pa.array(np.where(idx < len(d), idx, 0), mask=idx >= len(d), type=pa.int32())
        arr = pa.DictionaryArray.from_arrays(codes, d)
        for col in (arr, arr.cast(pa.string())):  # dictionary-typed and plain
            local, slots = index.encode([col], 400)
            got = [index.keys[s] for s in slots[local]]
            assert got == [(v,) for v in arr.cast(pa.string()).to_pylist()]
            for key, s in zip(got, slots[local].tolist(), strict=True):
                assert seen.setdefault(key, s) == s  # a key keeps its slot
    assert len(index) == len(seen) == len(set(seen))  # only the values that occur
    # Keys that arrive by merge (Python side) are found by value afterwards.
    other = _KeyIndex(("user",), ())
    other.encode([pa.array(["m1", "user3", None])], 3)
    remap = index.merge_from(other)
    assert [index.keys[s] for s in remap] == [("m1",), ("user3",), (None,)]
    local, slots = index.encode([pa.array(["m1", "user3", "new"])], 3)
    assert [index.keys[s] for s in slots[local]] == [("m1",), ("user3",), ("new",)]
    assert slots[local][:2].tolist() == [remap[0], remap[1]]
    # Integers take the same path; copies and pickles rebuild the value cache lazily.
    ints = _KeyIndex(("k",), ())
    ints.encode([pa.array([5, 7, None, 5])], 4)
    again = pickle.loads(pickle.dumps(ints))
    local, slots = again.encode([pa.array([7, 9, 5])], 3)
    assert [again.keys[s] for s in slots[local]] == [(7,), (9,), (5,)]
    assert len(again) == 4


def test_key_slots_of_one_dictionary_reused_every_batch_are_remembered(monkeypatch):
    """The class key arrives every batch through the same dictionary memory (the class names):
    its positions' slots are remembered and looked up without hashing; the slots equal those
    of an index that never remembers, and another dictionary of the same length and type
    (other values) is never taken for it."""
    from evalkit.aggregate import keys

    rng = np.random.default_rng(4)
    names = pa.array([f"c{i}" for i in range(50)])
    others = pa.array([f"c{i}" for i in reversed(range(50))])  # same length, other values
    index, plain = keys._KeyIndex(("class",), ()), keys._KeyIndex(("class",), ())
    plain._remembered = lambda d: np.full(len(d) + 1, -1, dtype=np.int64)  # type: ignore[method-assign]
    hashed: list[tuple[bool, int]] = []  # (the remembering index?, values hashed) per hash pass
    real = keys._KeyIndex._value_slots

    def counting(self, values, known):
        hashed.append((self is index, len(values)))
        return real(self, values, known)

    monkeypatch.setattr(keys._KeyIndex, "_value_slots", counting)
    quiet = 0  # batches the remembering index hashed nothing for
    for b in range(12):
        d = others if b == 7 else names
        hi = 10 if b < 3 else 50  # the first batches hold some classes only
        arr = pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, hi, 300).astype(np.int32)), d)
        before = sum(mine for mine, _ in hashed)
        got = [index.keys[s] for s in (lambda ls: ls[1][ls[0]])(index.encode([arr], 300))]
        quiet += sum(mine for mine, _ in hashed) == before
        want = [plain.keys[s] for s in (lambda ls: ls[1][ls[0]])(plain.encode([arr], 300))]
        assert got == want == [(v,) for v in arr.cast(pa.string()).to_pylist()]
    assert quiet >= 6  # the remembering index hits
    # it hashes each position of a dictionary once (names, others, names again): at most 150
    assert sum(n for mine, n in hashed if mine) <= 150 < sum(n for mine, n in hashed if not mine)
    assert keys._same_memory(names, pa.DictionaryArray.from_arrays(pa.array([0], pa.int32()), names).dictionary)
    assert not keys._same_memory(names, others) and not keys._same_memory(names, names.slice(1))
    assert pickle.loads(pickle.dumps(index))._dict_slots is None and index.copy()._dict_slots is None


# -- one definition of a quantile, exact or sketched (fix6, fault 2) ----------------------

QS_LINEAR = (0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0)


def _group_quantiles(sizes_and_values: list[list[float]], exact_limit: int) -> pd.DataFrame:
    """GroupStats (mode ``auto``) over groups ``g0, g1, ...``, fed in two batches."""
    keys = np.concatenate([[f"g{i}"] * len(v) for i, v in enumerate(sizes_and_values)])
    loss = np.concatenate([np.asarray(v, dtype=np.float64) for v in sizes_and_values])
    gs = GroupStats(("g",), quantile_mode="auto", exact_limit=exact_limit, eps=EPS, quantiles=QS_LINEAR)
    half = len(loss) // 2
    for s, e in ((0, half), (half, len(loss))):
        gs.update([pa.array(keys[s:e])], loss[s:e], np.zeros(e - s, bool), np.zeros(e - s, bool))
    assert gs.quantile_method == ("exact" if len(loss) <= exact_limit else "sketch")
    return gs.finalize().set_index("g")


_in_range = st.floats(min_value=float(LO), max_value=float(HI), allow_nan=False, allow_infinity=False)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small=st.lists(st.lists(_in_range, min_size=1, max_size=6), min_size=1, max_size=4),
       large=st.lists(_in_range, min_size=50, max_size=400),
       repeat=st.integers(min_value=1, max_value=3))
def test_small_and_large_groups_get_numpys_linear_quantile_in_small_and_large_runs(small, large, repeat):
    """Every group's quantiles are numpy's ``method="linear"`` ones: bit for bit while the run is
    small enough to keep its values (exact), within the sketch's 1e-3 relative error once it is
    not, for groups of 1-6 rows as for large ones: a 2-row group's p50 is the mean of its two
    losses, never its lower one, in a run of any size."""
    large = large * repeat  # ties
    groups = [*small, large]
    total = sum(len(v) for v in groups)
    exact = _group_quantiles(groups, exact_limit=total)
    sketched = _group_quantiles(groups, exact_limit=total - 1)  # one row over the limit
    for i, values in enumerate(groups):
        x = np.asarray(values)
        for q in QS_LINEAR:
            want = np.quantile(x, q, method="linear")
            col = quantile_column_name(q)
            assert exact.loc[f"g{i}", col] == want
            got = sketched.loc[f"g{i}", col]
            assert abs(got - want) <= 1e-3 * want, (i, q, got, want, x)


def test_a_two_row_groups_median_is_the_same_whatever_the_runs_size():
    """The fault: above ``exact_limit`` rows a 2-row group's p50 was its lower loss (the sketch's
    rank ``floor(q (n - 1))``), below it the mean of the two (numpy's linear interpolation)."""
    import evalkit

    rng = np.random.default_rng(5)
    n = 400
    p = rng.uniform(0.05, 0.95, n)
    df = pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": "a", "region": "big"})
    df.loc[:1, "region"] = "pair"
    df.loc[0, ["prob_a", "prob_b"]] = [0.9, 0.1]
    df.loc[1, ["prob_a", "prob_b"]] = [0.2, 0.8]
    want = (-np.log(0.9) - np.log(0.2)) / 2
    for limit in (10_000, 100):  # the whole run exact, then sketched
        res = evalkit.evaluate(df, by=["region"], exact_limit=limit, plots=False)
        row = res.groups["region"].set_index("region").loc["pair"]
        assert row["count"] == 2
        assert abs(row["p50"] - want) <= 1e-3 * want, (limit, row["p50"], want)
        assert res.metadata["quantiles"] == ("exact" if limit > n else "sketch")
        assert "linear" in res.metadata["quantile_note"]  # one definition, said in both


def test_quantile_bins_interpolate_between_the_ranks_numpy_uses():
    hist = LogHistogram.for_eps(EPS)
    counts = BinCounts(hist.n_bins)
    counts.ensure(1)
    x = np.array([0.2, 0.5, 1.0, 3.0])
    counts.add(None, np.array([0]), hist.bin_index(x))
    lower, upper, frac = counts.quantile_bins(np.array([4]), (0.0, 0.5, 0.9, 1.0))
    # h = q * 3: 0 -> ranks (0, 1) t 0; 1.5 -> (1, 2) t .5; 2.7 -> (2, 3) t .7; 3 -> (3, 3) t 0
    assert lower[0].tolist() == hist.bin_index(x[[0, 1, 2, 3]]).tolist()
    assert upper[0].tolist() == hist.bin_index(x[[1, 2, 3, 3]]).tolist()
    np.testing.assert_allclose(frac[0], [0.0, 0.5, 0.7, 0.0])
