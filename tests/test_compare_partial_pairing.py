"""compare of two runs whose rows are partly the same examples (ids dropped from or added to
the candidate): the rows both hold are paired, the others counted and said (table, metadata,
compare.md, stderr), never a silent fall-back to an unpaired bootstrap of everything."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import evalkit
from evalkit.inference import paired_ci, partly_paired_ci

from .test_compare import frame, run


def _partial(n: int = 600, seed: int = 0, drop: float = 0.1, added: int = 60, delta: float = -0.2):
    """Candidate = baseline loss + delta (+ noise) on the rows it keeps; it drops ``drop`` of
    the ids and adds ``added`` new rows of high loss."""
    rng = np.random.default_rng(seed)
    lb = 0.5 + rng.exponential(1.0, n)
    grp = rng.choice(["x", "y"], n)
    keep = rng.random(n) > drop
    lc = lb + delta + rng.normal(0, 0.05, n)
    new = 3.0 + rng.exponential(0.5, added)
    ids_c = np.concatenate([np.arange(n)[keep], n + np.arange(added)])
    grp_c = np.concatenate([grp[keep], rng.choice(["x", "y"], added)])
    b = frame(lb, np.arange(n), grp=grp)
    c = frame(np.concatenate([lc[keep], new]), ids_c, grp=grp_c)
    return b, c, keep


def test_rows_in_one_run_only_pair_the_rest_and_are_counted(tmp_path: Path) -> None:
    b, c, keep = _partial()
    rb, rc = run(b, out=tmp_path / "b"), run(c, out=tmp_path / "c")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evalkit.compare(str(rb.path), str(rc.path), out=tmp_path / "cmp")
    o = res.tables["overall"].iloc[0]
    assert o["method"] == "partly paired" and o["ci_method"] == "t"
    assert o["n_paired"] == keep.sum()
    assert o["baseline_count"] - o["n_paired"] == (~keep).sum() and o["candidate_count"] - o["n_paired"] == 60
    # the delta is of the means both reports show; its interval is that of the partially
    # overlapping samples test, narrower than the unpaired one on the same rows
    assert o["delta"] == pytest.approx(o["candidate_mean"] - o["baseline_mean"])
    unpaired = evalkit.compare(str(rb.path), str(rc.path), pair_on=[]).tables["overall"].iloc[0]
    assert unpaired["method"] == "unpaired" and unpaired["delta"] == pytest.approx(o["delta"])
    assert (o["ci_high"] - o["ci_low"]) < 0.8 * (unpaired["ci_high"] - unpaired["ci_low"])
    g = res.tables["grp"].set_index("grp")
    assert (g["method"] == "partly paired").all() and g["n_paired"].sum() == keep.sum()
    # said: the metadata counts them, compare.md and stderr say what the delta and interval are
    pairing = res.metadata["pairing"]
    assert pairing["unpaired_baseline_rows"] == (~keep).sum() and pairing["unpaired_candidate_rows"] == 60
    said = f"{(~keep).sum():,} baseline and 60 candidate row(s) have no partner"
    assert said in pairing["reason"] and "over the" in pairing["reason"]
    assert said in (tmp_path / "cmp" / "compare.md").read_text()
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["metadata"]["pairing"][
        "unpaired_candidate_rows"] == 60
    assert any(said in str(w.message) for w in caught)
    # the change over the rows in both alone (the model's), which the added rows hide
    assert "the mean loss changed by -0.2" in pairing["reason"]


def test_a_row_whose_group_changed_is_no_pair_in_either_group() -> None:
    """Pairs are of one group: a row whose key is in both runs but in another group there
    (its grp changed) is one run's row only in each group."""
    b, c, _ = _partial(drop=0.0, added=0)
    c = c.copy()
    moved = np.flatnonzero(c["grp"].to_numpy() == "x")[:20]
    c.loc[moved, "grp"] = "y"
    res = evalkit.compare(run(b), run(c))
    g = res.tables["grp"].set_index("grp")
    assert g.loc["x", "n_paired"] == g.loc["x", "baseline_count"] - 20
    assert g.loc["y", "n_paired"] == g.loc["y", "baseline_count"]
    assert set(g["method"]) == {"partly paired"}
    assert res.tables["overall"].iloc[0]["method"] == "paired"  # overall: every row has its partner


def test_partly_paired_interval_reduces_to_paired_and_welch_and_covers() -> None:
    rng = np.random.default_rng(3)
    x = rng.exponential(1.0, 80)
    y = x + rng.normal(0.1, 0.3, 80)
    assert partly_paired_ci(x, y, np.arange(80), np.arange(80)) == pytest.approx(paired_ci(y - x))
    a, b = rng.normal(0, 1, 30), rng.normal(0.5, 2, 40)
    stats = pytest.importorskip("scipy.stats")
    welch = stats.ttest_ind(b, a, equal_var=False).confidence_interval()  # no pair: Welch's t-interval
    assert partly_paired_ci(a, b, np.array([], int), np.array([], int)) == pytest.approx(tuple(welch), rel=1e-9)
    # coverage of the true difference of means over many draws, 30% of each side unpaired
    hits, n_sim = 0, 600
    for _ in range(n_sim):
        common = rng.exponential(1.0, 70)
        xb = np.concatenate([common, rng.exponential(1.0, 30)])
        xc = np.concatenate([common + 0.1 + rng.normal(0, 0.3, 70), 0.1 + rng.exponential(1.0, 30)])
        lo, hi = partly_paired_ci(xb, xc, np.arange(70), np.arange(70))
        hits += lo < 0.1 < hi
    assert 0.92 <= hits / n_sim <= 0.98
