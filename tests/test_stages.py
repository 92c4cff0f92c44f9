"""The local engine's second stage (evalkit.engines.base.Stages): the accumulators of batch i
are updated on a worker thread while batch i + 1 is scored. Same results bit for bit as the
serial loop, errors in batch order, no thread left behind."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import evalkit
from evalkit import errors as E
from evalkit.engines import base, local

from .conftest import random_probs, write

BATCH = 1_000


def _file(tmp_path, n=12_000, k=4, seed=3, bad_row=None):
    rng = np.random.default_rng(seed)
    p = random_probs(rng, n, k)
    if bad_row is not None:
        p[bad_row, 0] = 1.7  # a probability above 1: an InvalidProbabilityError in its batch
    cols = {"id": np.arange(n), "label": rng.integers(0, k, n),
            "split": rng.choice(["train", "test", "val"], n),
            "region": rng.choice(["EU", "US", "APAC"], n),
            **{f"prob_{i}": p[:, i].astype(np.float32) for i in range(k)}}
    return write(pa.table(cols), tmp_path / f"p{seed}_{bad_row}.parquet")


def _run(path, staged, monkeypatch, **kw):
    monkeypatch.setattr(local, "STAGED", staged)
    return evalkit.evaluate(path, by=["region", ["split", "region"]], batch_size=BATCH, **kw)


def _no_worker_left() -> bool:
    return not any(t.name == "evalkit-accumulate" for t in threading.enumerate())


def test_staged_results_equal_the_serial_loop_bit_for_bit(tmp_path, monkeypatch):
    path = _file(tmp_path)
    serial = _run(path, False, monkeypatch, top_k=7)
    staged = _run(path, True, monkeypatch, top_k=7)
    assert serial.groups.keys() == staged.groups.keys()
    for name in serial.groups:
        pd.testing.assert_frame_equal(serial.groups[name], staged.groups[name], check_exact=True)
    pd.testing.assert_frame_equal(serial.confusion, staged.confusion, check_exact=True)
    pd.testing.assert_frame_equal(serial.calibration, staged.calibration, check_exact=True)
    for name in serial.hardest:
        pd.testing.assert_frame_equal(serial.hardest[name], staged.hardest[name], check_exact=True)
    pd.testing.assert_frame_equal(serial.rows, staged.rows, check_exact=True)
    assert dict(serial.overall) == dict(staged.overall)
    assert _no_worker_left()


def test_the_worker_really_runs_the_accumulators(tmp_path, monkeypatch):
    """Staged: every batch's accumulators run on the worker thread, never on the caller's."""
    seen: list[str] = []
    real = base._accumulate

    def spy(*args, **kw):
        seen.append(threading.current_thread().name)
        return real(*args, **kw)

    monkeypatch.setattr(base, "_accumulate", spy)
    _run(_file(tmp_path), True, monkeypatch)
    assert len(seen) == 12 and set(seen) == {"evalkit-accumulate"}
    seen.clear()
    _run(_file(tmp_path), False, monkeypatch)
    assert len(seen) == 12 and threading.current_thread().name in set(seen)


def _fail_on_call(monkeypatch, n_call: int):
    real = base._accumulate
    calls = {"n": 0}

    def failing(*args, **kw):
        calls["n"] += 1
        if calls["n"] == n_call:
            raise E.InputError(f"accumulator failed on batch {n_call}")
        return real(*args, **kw)

    monkeypatch.setattr(base, "_accumulate", failing)


@pytest.mark.parametrize("staged", [False, True])
def test_an_earlier_batchs_accumulator_error_wins_over_a_later_validation_error(
        tmp_path, monkeypatch, staged):
    """Batch 3's accumulators fail; batch 4 holds an invalid probability. Serial or staged,
    the error raised is batch 3's (the staged loop may already be scoring batch 4)."""
    path = _file(tmp_path, bad_row=3 * BATCH + 5)
    _fail_on_call(monkeypatch, 3)
    with pytest.raises(E.InputError, match="accumulator failed on batch 3"):
        _run(path, staged, monkeypatch)
    assert _no_worker_left()


@pytest.mark.parametrize("staged", [False, True])
def test_a_validation_error_is_raised_when_no_earlier_batch_failed(tmp_path, monkeypatch, staged):
    path = _file(tmp_path, bad_row=7 * BATCH + 2)
    with pytest.raises(E.InvalidProbabilityError) as err:
        _run(path, staged, monkeypatch)
    assert "7,002" in str(err.value) or "7002" in str(err.value)
    assert _no_worker_left()


def test_an_accumulator_error_in_the_last_batch_is_not_lost(tmp_path, monkeypatch):
    _fail_on_call(monkeypatch, 12)
    with pytest.raises(E.InputError, match="batch 12"):
        _run(_file(tmp_path), True, monkeypatch)
    assert _no_worker_left()


def test_stages_run_jobs_in_order_and_raise_a_jobs_error_at_the_next_submit():
    stages = base.Stages()
    out: list[int] = []
    for i in range(50):
        stages.submit(lambda i=i: out.append(i))
    stages.finish()
    assert out == list(range(50))

    stages = base.Stages()
    ran: list[int] = []
    stages.submit(lambda: (_ for _ in ()).throw(ValueError("job 0")))
    with pytest.raises(ValueError, match="job 0"):
        for i in range(1000):  # the error surfaces at a later submit, once the worker ran job 0
            stages.submit(lambda i=i: ran.append(i))
            stages._worker.thread.join(0.01)
    assert ran == []  # the jobs after the failed one are skipped
    assert stages.close() is None
    assert _no_worker_left()
