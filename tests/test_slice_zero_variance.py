"""Slices whose losses are constant (red team 16): a zero variance computed from moments is
zero, not rounding noise; t and the effect size are infinite, shown as "inf"."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

import evalkit
from evalkit.aggregate.slices import _M2_ROUNDING
from evalkit.inference import complement_moments


def _constant_slices(n: int = 200) -> pd.DataFrame:
    df = pd.DataFrame({"prob_0": 0.3, "prob_1": 0.7, "label": np.ones(n, int),
                       "s": np.where(np.arange(n) < n // 2, "a", "b")})
    df.loc[df.s == "a", ["prob_0", "prob_1"]] = [0.6, 0.4]
    return df


def test_the_complement_m2_of_a_constant_side_is_rounding_noise_below_the_threshold():
    x = np.r_[np.full(100, -np.log(0.4)), np.full(100, -np.log(0.7))]
    s = x[:100]
    _, _, m2_c, _ = complement_moments(np.array([100.0]), np.array([s.mean()]),
                                       np.array([((s - s.mean()) ** 2).sum()]),
                                       200.0, x.mean(), ((x - x.mean()) ** 2).sum())
    assert 0 < m2_c[0] <= _M2_ROUNDING * ((x - x.mean()) ** 2).sum()  # noise, not 0, unfixed


def test_constant_slices_get_infinite_t_and_effect_size(tmp_path):
    r = evalkit.evaluate(_constant_slices(), slices=["s"], write_rows=False)
    t = r.slices.set_index("slice")
    assert t.loc["s=a", "t"] == np.inf and t.loc["s=b", "t"] == -np.inf
    assert t.loc["s=a", "effect_size"] == np.inf and t.loc["s=b", "effect_size"] == -np.inf
    assert (t["p_value"] == 0).all() and t.loc["s=a", "worse"]
    r.write(tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| s=a"))
    assert "| inf |" in line and "e+0" not in line


def test_a_real_small_spread_is_not_flattened_and_ranks_by_effect():
    """Near-constant slices with real spread keep finite statistics; the planted slice with the
    larger spread-scaled gap ranks first, never a rounding artefact."""
    rng = np.random.default_rng(3)
    n = 400
    p = 0.7 + rng.normal(0, 1e-4, n)
    s = np.repeat(["a", "b", "c", "d"], n // 4)
    p[s == "a"] -= 0.05
    p[s == "b"] -= 0.0002
    df = pd.DataFrame({"prob_0": 1 - p, "prob_1": p, "label": 1, "s": s})
    t = evalkit.evaluate(df, slices=["s"], write_rows=False).slices.set_index("slice")
    assert np.isfinite(t["t"]).all() and np.isfinite(t["effect_size"]).all()
    loss = -np.log(p)
    a, rest = loss[s == "a"], loss[s != "a"]
    ref = np.sqrt(2) * (a.mean() - rest.mean()) / np.sqrt(a.var(ddof=1) + rest.var(ddof=1))
    assert abs(t.loc["s=a", "effect_size"] / ref - 1) < 1e-9


def _strict(text: str) -> object:
    """json.loads that refuses the non-standard NaN / Infinity tokens, as JSON.parse does."""
    import json

    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_infinite_statistics_leave_summary_json_strict_and_readable(tmp_path):
    """An infinite t / effect size is "Infinity" / "-Infinity" (the proto3 JSON mapping) in
    summary.json and in --format json, never the bare token strict parsers refuse."""
    from click.testing import CliRunner

    from evalkit.cli import main

    r = evalkit.evaluate(_constant_slices(), slices=["s"], write_rows=False)
    r.write(tmp_path / "out")
    data = _strict((tmp_path / "out" / "summary.json").read_text())
    text = json.dumps(data)
    assert '"t": "Infinity"' in text and '"effect_size": "Infinity"' in text
    src = tmp_path / "in.parquet"
    _constant_slices().to_parquet(src)
    res = CliRunner().invoke(main, ["evaluate", str(src), "--slices", "s", "--format", "json",
                                    "--no-rows", "-q"])
    assert res.exit_code == 0, res.output
    assert '"Infinity"' in json.dumps(_strict(res.output))


def test_json_text_writes_every_non_finite_float_the_strict_way():
    """Python and numpy floats, in records, nested dicts and lists: NaN is null, an infinity
    its proto3 string; finite values are untouched."""
    from evalkit.report import json_text

    data = {"rows": [{"t": np.float64(-np.inf), "n": float("nan"), "ok": 1.5, "k": [float("inf")]}],
            "x": np.float32(np.inf), "nested": {"y": -math.inf, "z": [1, 2.25]}}
    back = _strict(json_text(data))
    assert back == {"rows": [{"t": "-Infinity", "n": None, "ok": 1.5, "k": ["Infinity"]}],
                    "x": "Infinity", "nested": {"y": "-Infinity", "z": [1, 2.25]}}
