"""--batch-size is bounded in bytes (engines.local.MAX_BATCH_BYTES: rows x classes x bytes per
value): a bigger request is cut, the run says so on stderr (not under --quiet), and the
results are those of a run asking for the cut size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
import evalkit.engines.local as local
from evalkit.cli import main


def test_batch_rows_caps_a_request_in_bytes_never_below_the_default():
    k = 1000
    default = local.batch_rows(k)
    cap32 = local.MAX_BATCH_BYTES // (k * 4)
    assert default < cap32  # 4,194 and 8,388 rows at 1000 float32 classes
    assert local.batch_rows(k, 100_000) == cap32
    assert local.batch_rows(k, 100_000, value_bytes=8) == max(default, local.MAX_BATCH_BYTES // (k * 8))
    assert local.batch_rows(k, 500) == 500  # small requests are kept
    assert local.batch_rows(k, cap32) == cap32
    assert local.batch_rows(k) == default and local.batch_rows(k, None) == default
    # a request never goes below what the default would read (float64, many classes)
    big = 8192
    assert local.batch_rows(big, 10**6, value_bytes=8) == max(local.batch_rows(big),
                                                              local.MAX_BATCH_BYTES // (big * 8))
    assert local.batch_note(k, 500) is None and local.batch_note(k, None) is None
    note = local.batch_note(k, 100_000)
    assert note is not None and "100,000 rows" in note and f"{cap32:,} rows" in note and "381 MiB" in note


def test_value_bytes_of_prediction_columns():
    schema = pa.schema([("p32", pa.list_(pa.float32())), ("p64", pa.large_list(pa.float64())),
                        ("fx", pa.list_(pa.float16(), 3)), ("w", pa.float32()),
                        ("d", pa.dictionary(pa.int8(), pa.float32())), ("dec", pa.decimal128(10, 3))])
    assert local.value_bytes(schema, ["p32"]) == 4
    assert local.value_bytes(schema, ["p64"]) == 8
    assert local.value_bytes(schema, ["fx"]) == 2
    assert local.value_bytes(schema, ["w", "p32", "d"]) == 4
    assert local.value_bytes(schema, ["w", "p64"]) == 8
    assert local.value_bytes(schema, ["dec"]) == 8  # read as float64
    assert local.value_bytes(schema, ["missing"]) == 8


@pytest.fixture
def list_file(tmp_path, monkeypatch):
    """1,000 rows of 100 float32 classes; the cap set to 50 rows' worth, the default to 10 rows."""
    rng = np.random.default_rng(3)
    n, k = 1_000, 100
    p = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
    table = pa.table({"probs": pa.FixedSizeListArray.from_arrays(p.ravel(), k).cast(pa.list_(pa.float32())),
                      "label": rng.integers(0, k, n), "split": rng.choice(["a", "b"], n)})
    path = tmp_path / "p.parquet"
    pq.write_table(table, path, row_group_size=n)
    monkeypatch.setattr(local, "MAX_BATCH_BYTES", 50 * k * 4)
    monkeypatch.setattr(local, "MIN_ROWS_PER_BATCH", 1)
    monkeypatch.setattr(local, "VALUES_PER_BATCH", 10 * k)
    return path


class _Progress:
    def __init__(self) -> None:
        self.rows: list[int] = []
        self.notes: list[str] = []

    def __call__(self, rows_done: int, batch_bytes: int) -> None:
        self.rows.append(rows_done)

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_a_big_request_reads_batches_of_the_cap_with_the_same_results(list_file):
    seen = _Progress()
    cut = evalkit.evaluate(str(list_file), by=["split"], batch_size=400, progress=seen)
    steps = np.diff([0, *seen.rows])
    assert steps.max() == 50 and steps.sum() == 1_000
    assert len(seen.notes) == 1 and "400 rows" in seen.notes[0] and "50 rows instead" in seen.notes[0]
    asked = _Progress()
    same = evalkit.evaluate(str(list_file), by=["split"], batch_size=50, progress=asked)
    assert asked.notes == [] and asked.rows == seen.rows
    assert dict(cut.overall) == dict(same.overall)
    for name in cut.groups:
        pd.testing.assert_frame_equal(cut.groups[name], same.groups[name])


def test_the_cli_says_so_on_stderr_unless_quiet(list_file, tmp_path):
    args = ["evaluate", str(list_file), "--batch-size", "400", "--format", "none", "--no-plots"]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "evalkit: batch size 400 rows" in r.stderr and "50 rows instead" in r.stderr
    r = CliRunner().invoke(main, [*args, "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0 and "batch size" not in r.stderr
    r = CliRunner().invoke(main, ["evaluate", "--help"])
    assert "At most 32 MiB" in " ".join(r.output.split())


def test_a_tiny_request_is_kept_and_its_cost_noted(tmp_path):
    """rt-eval F2: --batch-size 1 cost ~2 ms of CPU a batch (40k rows > 12 min under load)
    without a word, while a too-big size was cut with a note. A tiny size is kept (same
    results, and a legitimate choice) but noted on stderr, with its cost; not under -q."""
    assert local.batch_rows(10, 1) == 1
    note = local.batch_note(10, 1)
    assert note is not None and "batch size 1 rows is far below" in note and "2,000 s per million rows" in note
    assert local.batch_note(10, local.SMALL_BATCH_ROWS) is None and local.batch_note(10, None) is None
    assert local.batch_note(10**6, 10) is None  # the default itself is that small: nothing to say
    p = np.linspace(0.2, 0.9, 40)
    pd.DataFrame({"prob_a": p, "prob_b": 1 - p, "label": "a"}).to_parquet(tmp_path / "p.parquet")
    outs = []
    for extra in (["--batch-size", "4"], ["--batch-size", "4", "-q"], []):
        r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--no-plots", "--format", "json",
                                      *extra])
        assert r.exit_code == 0, r.output
        assert ("batch size 4 rows is far below" in r.stderr) is (extra == ["--batch-size", "4"]), r.stderr
        outs.append(evalkit.evaluate(tmp_path / "p.parquet", plots=False, **(
            {"batch_size": 4} if extra else {})).overall["mean"])
    assert outs[0] == outs[2]
