""""Clipped" means a confident mistake (issue 14.1): clipped_low and clipped_high, apart."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.gates import check_gates
from evalkit.loss import soft_loss, sparse_loss

EPS = 1e-7


def test_perfect_model_is_not_clipped_and_passes_the_gate(tmp_path):
    df = pd.DataFrame({"prob_a": [1.0, 0.0], "prob_b": [0.0, 1.0], "label": ["a", "b"]})
    r = evalkit.evaluate(df, gates={"max_clipped_fraction": 0.01})
    assert r.overall["clipped_low"] == 0 and r.overall["clipped_high"] == 2
    assert r.gate_failures == []
    assert "0 clipped (0.00%" in r.to_markdown()
    df.to_parquet(tmp_path / "p.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--out", str(tmp_path / "out"),
                                    "-q", "--no-plots", "--config", _gate_file(tmp_path)])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["overall"]["clipped_low"] == 0 and summary["overall"]["clipped_high"] == 2
    assert "clipped" not in summary["overall"]
    by_class = pd.read_parquet(tmp_path / "out" / "by_class.parquet")
    assert by_class["clipped_high"].tolist() == [1, 1] and by_class["clipped_low"].tolist() == [0, 0]
    rows = pd.read_parquet(tmp_path / "out" / "rows.parquet")
    assert rows["clipped_high"].all() and not rows["clipped_low"].any() and "clipped" not in rows


def _gate_file(tmp_path):
    path = tmp_path / "gates.yaml"
    path.write_text("gates:\n  max_clipped_fraction: 0.01\n")
    return str(path)


def test_confident_mistakes_fail_the_gate():
    df = pd.DataFrame({"prob_a": [0.0, 0.0, 0.5], "prob_b": [1.0, 1.0, 0.5], "label": ["a", "b", "a"]})
    r = evalkit.evaluate(df, gates={"max_clipped_fraction": 0.3})
    assert (r.overall["clipped_low"], r.overall["clipped_high"]) == (1, 1)
    [failure] = r.gate_failures
    assert failure.observed == pytest.approx(1 / 3)


def test_gate_reads_old_reports_clipped_column():
    old = SimpleNamespace(overall=pd.Series({"count": 10, "mean": 0.1, "clipped": 3, "accuracy": 1.0}),
                          groups={})
    [f] = check_gates(old, {"max_clipped_fraction": 0.2})
    assert f.observed == pytest.approx(0.3)


def test_soft_targets_clip_only_classes_with_target_weight():
    p = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    t = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    out = soft_loss(p, t, EPS)
    # Row 0: p=1 for the only target class (high), zeros elsewhere carry no weight.
    # Row 1: nothing out of range among weighted classes. Row 3: p=0 on a weighted class (low)
    # and p=1 on another (high).
    assert out.clipped_low.tolist() == [False, False, False, True]
    assert out.clipped_high.tolist() == [True, False, True, True]
    z = np.log(np.clip(p, 1e-30, None))  # the same rows as logits: exp(-69) < eps
    lz = soft_loss(z, t, EPS, from_logits=True)
    assert lz.clipped_low.tolist() == out.clipped_low.tolist()
    assert lz.clipped_high.tolist() == out.clipped_high.tolist()


def test_logits_clip_in_log_space():
    z = np.array([[40.0, 0.0], [0.0, 40.0], [1.0, 0.0], [0.0, 17.0]])
    out = sparse_loss(z, np.array([0, 0, 0, 0]), EPS, from_logits=True)
    logp = z[:, 0] - np.logaddexp(z[:, 0], z[:, 1])
    assert out.clipped_low.tolist() == (logp < math.log(EPS)).tolist() == [False, True, False, True]
    assert out.clipped_high.tolist() == (logp > math.log1p(-EPS)).tolist() == [True, False, False, False]


def test_report_explains_clipped_and_nats():
    df = pd.DataFrame({"prob_a": [0.9, 0.0], "prob_b": [0.1, 1.0], "label": ["a", "a"]})
    md = evalkit.evaluate(df).to_markdown()
    assert "nats" in md
    assert "`clipped_low` counts rows with p_true < eps" in md
    assert "`clipped_high` counts rows with p_true > 1 - eps" in md
    assert "| clipped_low | clipped_high |" in md
