"""Golden report.md and number formatting."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import evalkit
from evalkit.report import fmt_number, markdown_table, text_table

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"


def _stable(result: evalkit.EvalResult) -> evalkit.EvalResult:
    """Pin the run-specific metadata so the rendering is reproducible."""
    result.metadata.update(created="2026-01-01T00:00:00Z", duration_s=0.0, input_bytes=123456,
                           evalkit_version="0.1.0", input="sample_data/sentiment")
    return result


@pytest.mark.parametrize("name", ["sentiment_report.md"])
def test_golden_report(name: str):
    result = _stable(evalkit.evaluate(ROOT / "sample_data" / "sentiment", by=["region"], top_k=3,
                                      slices=["region", "split"]))
    text = result.to_markdown(plots=[("Mean loss by class", "mean_loss_by_class.png")])
    golden = GOLDEN / name
    if os.environ.get("EVALKIT_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert text == golden.read_text(), "report.md changed; rerun with EVALKIT_UPDATE_GOLDEN=1 if intended"


def test_report_without_plot_extra_says_how_to_enable():
    result = evalkit.evaluate(ROOT / "sample_data" / "digits.parquet")
    text = result.to_markdown(plots=[])
    assert "pip install 'evalkit[plot]'" in text


@pytest.mark.parametrize(
    ("value", "column", "want"),
    [(0.38506088, "mean", "0.3851"), (16.11809565, "max", "16.12"), (1234567, "count", "1,234,567"),
     (0.874, "accuracy", "87.4%"), (1.0e-7, "min", "1.000e-07"), (float("nan"), "std", ""),
     (0.0, "sum", "0"), (True, "clipped", "yes")],
)
def test_fmt_number(value, column, want):
    assert fmt_number(value, column) == want


def test_tables_align_and_escape():
    df = pd.DataFrame({"region": ["a|b", "a-very-long-region-name-that-goes-on-and-on"], "mean": [0.5, 12.25]})
    md = markdown_table(df)
    assert "a\\|b" in md and "| ---: |" in md.splitlines()[1] + " |"
    txt = text_table(df, max_width=12)
    assert "…" in txt
    lines = txt.splitlines()
    assert len({len(line) for line in lines[:2]}) == 1
