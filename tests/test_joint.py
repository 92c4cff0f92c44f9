"""Joint accumulation (aggregate/joint.py, GroupStats.project): several groupings accumulated
through one GroupStats over their joint key equal separate accumulation, whatever the batching,
merge order or the moment the joint state splits into per-grouping states."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from evalkit.aggregate import CalibrationBatch, CalibrationBins, GroupStats, JointStats
from evalkit.inference import poisson_weights
from evalkit.scores import calibration_terms

CLASSES = pa.array([f"c{i}" for i in range(5)])
GROUPINGS = {"overall": (), "class": ("class",), "split": ("split",),
             "split_region": ("split", "region"), "region_class": ("region", "class")}


def _data(n: int, seed: int = 0, regions: int = 4) -> dict:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    p = rng.dirichlet(np.ones(5), n)
    p[::97] = np.eye(5)[y[::97]]  # exact 1s and 0s: clipped rows, zero-probability entropy terms
    pt = p[np.arange(n), y]
    eps = 1e-7
    loss = -np.log(np.clip(pt, eps, 1 - eps))
    split = np.array(["train", "val", "test", None], dtype=object)[rng.integers(0, 4, n)]
    region = rng.integers(0, regions, n).astype(float)
    region[::13] = np.nan  # NaN and null are one missing key
    return {
        "class": pa.DictionaryArray.from_arrays(pa.array(y.astype(np.int32)), CLASSES),
        "split": pa.array(split, type=pa.string()),
        "region": pa.array(region),
        "loss": loss, "low": pt < eps, "high": pt > 1 - eps, "correct": p.argmax(1) == y,
        "w": rng.exponential(1.0, n), "rows": np.arange(n), "calib": calibration_terms(p, from_logits=False, p_true=pt),
    }


def _slice(d: dict, sl: slice) -> dict:
    out = {k: (v[sl] if k != "calib" else v) for k, v in d.items()}
    c = d["calib"]
    out["calib"] = type(c)(c.confidence[sl], c.brier[sl], c.entropy[sl])
    return out


SETTINGS = dict(calibration_bins=15, dict_order_keys=("class",))


def _update(acc, d: dict, cols, boot: int, weighted: bool) -> None:
    kw = dict(clipped_high=d["high"], calibration=CalibrationBatch.of(d["calib"], 15),
              boot_weights=poisson_weights(d["rows"], 0, boot) if boot else None)
    w = d["w"] if weighted else None
    if isinstance(acc, JointStats):
        acc.update({c: d[c] for c in acc.columns}, d["loss"], d["low"], d["correct"], w, **kw)
    else:
        acc.update([d[c] for c in cols], d["loss"], d["low"], d["correct"], w, **kw)


def _separate(d: dict, batches, boot=0, weighted=False, **settings) -> dict[str, GroupStats]:
    out = {}
    for name, cols in GROUPINGS.items():
        acc = GroupStats(cols, **SETTINGS, bootstrap_samples=boot, weighted=weighted, **settings)
        for sl in batches:
            _update(acc, _slice(d, sl), cols, boot, weighted)
        out[name] = acc
    return out


def _joint(d: dict, batches, boot=0, weighted=False, max_groups=10_000, **settings) -> JointStats:
    acc = JointStats(GROUPINGS, dict(SETTINGS, bootstrap_samples=boot, weighted=weighted, **settings),
                     max_groups=max_groups)
    for sl in batches:
        _update(acc, _slice(d, sl), None, boot, weighted)
    return acc


def _assert_same(a: GroupStats, b: GroupStats) -> None:
    fa, fb = a.finalize(), b.finalize()
    assert list(fa.columns) == list(fb.columns)
    assert len(fa) == len(fb)
    for col in fa.columns:
        x, y = fa[col], fb[col]
        if pd.api.types.is_float_dtype(x) and not col.startswith("p"):
            np.testing.assert_allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-12, atol=1e-300,
                                       err_msg=col)
        else:  # keys, counts, quantiles (exact values or sketch bins): identical
            pd.testing.assert_series_equal(x, y, check_names=False, obj=col)
    pd.testing.assert_frame_equal(a.calibration_table(), b.calibration_table(), rtol=1e-12)


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, s + size) for s in range(0, n, size)]


@pytest.mark.parametrize("mode", ["exact", "sketch"])
@pytest.mark.parametrize("weighted", [False, True])
def test_joint_equals_separate_accumulation(mode, weighted):
    d = _data(3000, seed=1)
    batches = _batches(3000, 700)
    sep = _separate(d, batches, weighted=weighted, quantile_mode=mode)
    joint = _joint(d, batches, weighted=weighted, quantile_mode=mode)
    assert joint.is_joint
    got = joint.stats()
    assert list(got) == list(GROUPINGS)
    for name in GROUPINGS:
        _assert_same(got[name], sep[name])


def test_joint_bootstrap_equals_separate():
    d = _data(1500, seed=2)
    batches = _batches(1500, 400)
    sep = _separate(d, batches, boot=20)
    got = _joint(d, batches, boot=20).stats()
    for name in GROUPINGS:
        _assert_same(got[name], sep[name])


@pytest.mark.parametrize("size", [1, 37, 500, 2000])
def test_streaming_equals_in_memory(size):
    d = _data(2000, seed=3)
    whole = _joint(d, [slice(0, 2000)]).stats()
    streamed = _joint(d, _batches(2000, size)).stats()
    for name in GROUPINGS:
        _assert_same(streamed[name], whole[name])


@pytest.mark.parametrize("max_groups", [1, 6, 25, 70])
def test_split_into_groupings_at_any_point_equals_separate(max_groups):
    """The joint state splits when its key combinations pass ``max_groups`` (here at the
    first batch, or after some batches): every grouping still equals separate accumulation."""
    d = _data(2500, seed=4, regions=12)
    batches = _batches(2500, 300)
    sep = _separate(d, batches)
    joint = _joint(d, batches, max_groups=max_groups)
    assert not joint.is_joint
    got = joint.stats()
    for name in GROUPINGS:
        _assert_same(got[name], sep[name])


def test_merge_is_associative_and_mixes_joint_and_split_states():
    d = _data(3000, seed=5, regions=12)
    parts = [slice(0, 900), slice(900, 2000), slice(2000, 3000)]
    # The middle part splits (a limit of 5 joint groups); the others stay joint.
    a = _joint(d, [parts[0]])
    b = _joint(d, [parts[1]], max_groups=5)
    c = _joint(d, [parts[2]])
    assert a.is_joint and c.is_joint and not b.is_joint
    left = a.merge(b).merge(c).stats()
    right = a.merge(b.merge(c)).stats()
    joint_only = a.merge(c)
    assert joint_only.is_joint
    sep = _separate(d, parts)
    for name in GROUPINGS:
        _assert_same(left[name], right[name])
        _assert_same(left[name], sep[name])


def test_merge_of_joint_states_equals_one_stream():
    d = _data(2000, seed=6)
    one = _joint(d, [slice(0, 2000)]).stats()
    merged = functools.reduce(JointStats.merge, [_joint(d, [sl]) for sl in _batches(2000, 450)])
    assert merged.is_joint
    for name in GROUPINGS:
        _assert_same(merged.stats()[name], one[name])


def test_project_onto_no_keys_is_the_overall_line():
    d = _data(1200, seed=7)
    by_split_region = GroupStats(("split", "region"), **SETTINGS)
    overall = GroupStats((), **SETTINGS)
    for sl in _batches(1200, 500):
        _update(by_split_region, _slice(d, sl), ("split", "region"), 0, False)
        _update(overall, _slice(d, sl), (), 0, False)
    _assert_same(by_split_region.project(()), overall)
    # Key order of the projection is the caller's, and the projection can go on accumulating.
    proj = by_split_region.project(("region", "split"))
    assert proj.key_names == ("region", "split")
    with pytest.raises(ValueError, match="cannot project"):
        by_split_region.project(("class",))


def test_joint_state_pickles():
    import pickle

    d = _data(800, seed=8)
    j = _joint(d, _batches(800, 300))
    back = pickle.loads(pickle.dumps(j))
    for name in GROUPINGS:
        _assert_same(back.stats()[name], j.stats()[name])


def _calibration_state_equal(a: GroupStats, b: GroupStats) -> None:
    """The raw calibration sums per group, groups aligned by key (slots differ by merge order)."""
    sa, sb = a.calibration.state(), b.calibration.state()
    oa, ob = a._output_order(), b._output_order()
    assert len(oa) == len(ob) == a.n_groups == b.n_groups
    for name in ("count", "correct"):
        np.testing.assert_array_equal(sa[name][oa], sb[name][ob], err_msg=name)
    for name in ("conf_sum", "brier_sum", "entropy_sum"):
        np.testing.assert_allclose(sa[name][oa], sb[name][ob], rtol=1e-12, err_msg=name)


def _sparse_calibration(monkeypatch, pending: int = 37):
    """Every calibration state created inside is sparse from its first group, and folds its
    queued rows every few dozen rows."""
    monkeypatch.setattr(CalibrationBins, "DENSE_CELLS", 0)
    monkeypatch.setattr(CalibrationBins, "PENDING_ROWS", pending)


def test_sparse_calibration_cells_equal_dense(monkeypatch):
    """The sparse (group, bin) calibration cells (used beyond DENSE_CELLS, e.g. a million
    users) give the dense form's counts exactly and its sums to 1e-12: streamed in batches,
    merged in any order (sparse with sparse, sparse with dense), projected and pickled."""
    d = _data(2500, seed=11, regions=9)
    parts = [slice(0, 700), slice(700, 1600), slice(1600, 2500)]
    batches = _batches(2500, 130)
    dense = _separate(d, batches)
    dense_parts = [_separate(d, [sl]) for sl in parts]
    assert not dense["split_region"].calibration.sparse
    _sparse_calibration(monkeypatch)
    sparse = _separate(d, batches)
    sparse_parts = [_separate(d, [sl]) for sl in parts]
    assert sparse["split_region"].calibration.sparse
    for name in GROUPINGS:
        s, ref = sparse[name], dense[name]
        _assert_same(s, ref)
        _calibration_state_equal(s, ref)
        a, b, c = (p[name] for p in sparse_parts)
        da, db, dc = (p[name] for p in dense_parts)
        for merged in (a.merge(b).merge(c), a.merge(b.merge(c)), c.merge(a).merge(b),
                       a.merge(db).merge(c), da.merge(b).merge(dc), dc.merge(b.merge(da))):
            _assert_same(merged, ref)
            _calibration_state_equal(merged, ref)
        back = pickle.loads(pickle.dumps(s))
        _calibration_state_equal(back, ref)
    # Projection of a sparse state onto coarser keys == direct (dense) accumulation.
    fine = sparse["split_region"]
    for keys, name in (((), "overall"), (("split",), "split")):
        proj = fine.project(keys)
        _assert_same(proj, dense[name])
        _calibration_state_equal(proj, dense[name])


def test_joint_accumulation_with_sparse_calibration_equals_dense(monkeypatch):
    d = _data(1800, seed=12)
    dense = _joint(d, _batches(1800, 300)).stats()
    _sparse_calibration(monkeypatch, pending=101)
    joint = functools.reduce(JointStats.merge, [_joint(d, [sl]) for sl in _batches(1800, 450)])
    for name in GROUPINGS:
        assert joint.stats()[name].calibration.sparse or joint.stats()[name].n_groups == 0
        _assert_same(joint.stats()[name], dense[name])
        _calibration_state_equal(joint.stats()[name], dense[name])
