"""Property-based tests of the kernel through ``evaluate``, and a fuzz run of bad Parquet.

Kernel properties: the loss is >= 0 and finite, equals the by-hand definition, does not
depend on row order nor on how rows are split into batches, and a row is flagged clipped
exactly when p[y] lies outside [eps, 1 - eps].

Fuzz: random schemas and truncated / bit-flipped Parquet bytes fed to ``evaluate`` may only
ever produce a result or an :class:`~evalkit.errors.EvalkitError`, never another exception.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import evalkit
from evalkit.errors import CorruptFileError, EvalkitError

FAST = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# Weights that include exact zeros and tiny values, so that some p[y] fall outside [eps, 1-eps].
weights = st.one_of(st.just(0.0), st.floats(1e-12, 1e-6), st.floats(1e-3, 1.0))


@st.composite
def problems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    """(probabilities (n, K), labels (n,), eps)."""
    n = draw(st.integers(1, 40))
    k = draw(st.integers(2, 5))
    w = draw(hnp.arrays(np.float64, (n, k), elements=weights))
    # Rows of all zeros get a one-hot on a drawn class (still a valid distribution).
    hot = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    empty = w.sum(axis=1) == 0
    w[empty, hot[empty]] = 1.0
    p = w / w.sum(axis=1, keepdims=True)
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, k - 1)))
    eps = draw(st.sampled_from([1e-7, 1e-12, 1e-3, 0.05, 0.3]) | st.floats(1e-15, 0.49))
    return p, y, eps


def frame(p: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    df = pd.DataFrame({f"prob_{j}": p[:, j] for j in range(p.shape[1])})
    df["label"] = y
    return df


def by_hand(p: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """-log(clip(p[y], eps, 1 - eps)), written without evalkit."""
    py = np.array([p[i, y[i]] for i in range(len(y))], dtype=np.float64)
    return np.array([-math.log(min(max(v, eps), 1.0 - eps)) for v in py])


def run(df: pd.DataFrame, eps: float, **kw: object) -> evalkit.EvalResult:
    return evalkit.evaluate(df, eps=eps, top_k=0, plots=False, **kw)


@FAST
@given(problems())
def test_loss_matches_definition(case: tuple[np.ndarray, np.ndarray, float]) -> None:
    p, y, eps = case
    result = run(frame(p, y), eps)
    rows = result.rows.sort_index()
    loss = rows["loss"].to_numpy()
    assert np.isfinite(loss).all() and (loss >= 0).all()
    assert (loss <= -math.log(eps) + 1e-12).all()
    np.testing.assert_allclose(loss, by_hand(p, y, eps), rtol=1e-13, atol=0)
    py = p[np.arange(len(y)), y]
    np.testing.assert_array_equal(rows["clipped_low"].to_numpy(), py < eps)
    np.testing.assert_array_equal(rows["clipped_high"].to_numpy(), py > 1 - eps)
    assert int(result.overall["clipped_low"]) == int((py < eps).sum())
    assert int(result.overall["clipped_high"]) == int((py > 1 - eps).sum())
    assert result.mean == pytest.approx(by_hand(p, y, eps).mean(), rel=1e-12, abs=1e-300)


@FAST
@given(problems(), st.randoms(use_true_random=False), st.integers(1, 7))
def test_row_order_and_batches_do_not_matter(case, random, batch) -> None:  # type: ignore[no-untyped-def]
    p, y, eps = case
    df = frame(p, y)
    one = run(df, eps)
    order = list(range(len(df)))
    random.shuffle(order)
    shuffled = run(df.iloc[order], eps)
    batched = run(df, eps, batch_size=batch)
    for other in (shuffled, batched):
        assert other.overall["count"] == one.overall["count"]
        assert other.overall["clipped_low"] == one.overall["clipped_low"]
        assert other.overall["clipped_high"] == one.overall["clipped_high"]
        assert other.mean == pytest.approx(one.mean, rel=1e-12)
        for q in ("min", "p50", "p90", "max"):
            if q in one.overall.index:
                assert other.overall[q] == pytest.approx(one.overall[q], rel=1e-12)
        # Per-row output is aligned to the input index whatever the order / batches.
        pd.testing.assert_series_equal(other.rows["loss"].sort_index(), one.rows["loss"].sort_index())
        a = one.groups["class"].set_index("class")
        b = other.groups["class"].set_index("class")
        assert a["count"].tolist() == b["count"].tolist()
        np.testing.assert_allclose(b["sum"].fillna(0), a["sum"].fillna(0), rtol=1e-12)


@FAST
@given(problems(), st.floats(-30, 30))
def test_logits_match_probabilities(case, shift) -> None:  # type: ignore[no-untyped-def]
    """Logits path: log-softmax, clipped in log space, equals the probability path."""
    p, y, eps = case
    p = 0.999 * p + 0.001 / p.shape[1]  # log(p) must be finite
    z = np.log(p) + shift  # softmax(z) == p
    df = pd.DataFrame({f"logit_{j}": z[:, j] for j in range(z.shape[1])})
    df["label"] = y
    loss = run(df, eps).rows.sort_index()["loss"].to_numpy()
    assert np.isfinite(loss).all() and (loss >= 0).all()
    np.testing.assert_allclose(loss, by_hand(p, y, eps), rtol=1e-9, atol=1e-12)


# -- fuzz: random schemas and corrupted bytes ----------------------------------------------

COLUMN_KINDS = ["f64", "f32", "int", "str", "null_f64", "bool", "list", "list_str", "nan"]


@st.composite
def tables(draw: st.DrawFn) -> pa.Table:
    n = draw(st.integers(0, 30))
    names = draw(st.lists(st.sampled_from(
        ["prob_a", "prob_b", "prob_c", "logit_a", "logit_b", "label", "probs", "id", "split", "target_a",
         "target_b", "prob", "y"]), min_size=1, max_size=6, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cols = {}
    for name in names:
        kind = draw(st.sampled_from(COLUMN_KINDS))
        if kind == "f64":
            cols[name] = pa.array(rng.random(n))
        elif kind == "f32":
            cols[name] = pa.array(rng.random(n).astype(np.float32))
        elif kind == "int":
            cols[name] = pa.array(rng.integers(-2, 4, n))
        elif kind == "str":
            cols[name] = pa.array(rng.choice(["a", "b", "c", "0.5"], n))
        elif kind == "null_f64":
            cols[name] = pa.array([None if rng.random() < 0.5 else float(rng.random()) for _ in range(n)],
                                  pa.float64())
        elif kind == "bool":
            cols[name] = pa.array(rng.random(n) < 0.5)
        elif kind == "list":
            cols[name] = pa.array([list(rng.random(int(rng.integers(1, 4)))) for _ in range(n)])
        elif kind == "list_str":
            cols[name] = pa.array([["x"] * int(rng.integers(0, 3)) for _ in range(n)], pa.list_(pa.string()))
        else:
            cols[name] = pa.array(np.where(rng.random(n) < 0.3, np.nan, rng.random(n)))
    return pa.table(cols)


def valid_bytes(seed: int, n: int, compression: str, checksum: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    t = pa.table({"id": np.arange(n), "prob_a": p[:, 0], "prob_b": p[:, 1], "prob_c": p[:, 2],
                  "label": rng.integers(0, 3, n), "split": rng.choice(["train", "val"], n)})
    buf = io.BytesIO()
    pq.write_table(t, buf, compression=compression, row_group_size=max(1, n // 3),
                   write_page_checksum=checksum)
    return buf.getvalue()


@st.composite
def corrupted(draw: st.DrawFn) -> bytes:
    raw = bytearray(valid_bytes(draw(st.integers(0, 1000)), draw(st.integers(1, 300)),
                                draw(st.sampled_from(["none", "zstd", "snappy"])), draw(st.booleans())))
    how = draw(st.sampled_from(["truncate", "flip", "overwrite", "footer", "prefix"]))
    if how == "truncate":
        return bytes(raw[: draw(st.integers(0, len(raw) - 1))])
    if how == "prefix":
        return draw(st.binary(max_size=64)) + bytes(raw[draw(st.integers(0, 16)):])
    if how == "footer":  # the footer holds the schema and offsets: damage it
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(max(0, len(raw) - 200), len(raw) - 9))
            raw[i] ^= draw(st.integers(1, 255))
        return bytes(raw)
    if how == "overwrite":
        i = draw(st.integers(0, len(raw) - 1))
        junk = draw(st.binary(min_size=1, max_size=200))
        raw[i:i + len(junk)] = junk
        return bytes(raw)
    for _ in range(draw(st.integers(1, 20))):
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << draw(st.integers(0, 7))
    return bytes(raw)


def evaluate_only_evalkit_errors(data: object, **kw: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = evalkit.evaluate(data, plots=False, **kw)
        except EvalkitError as exc:
            assert str(exc)
            return
    # Whatever was accepted is a real number, never NaN / inf / negative.
    assert result.overall["count"] >= 1
    assert np.isfinite(result.mean) and result.mean >= 0


@FUZZ
@given(corrupted())
def test_corrupt_parquet_only_evalkit_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "preds.parquet"
        path.write_bytes(data)
        evaluate_only_evalkit_errors(str(path))
        assert path.read_bytes() == data
        assert sorted(os.listdir(d)) == ["preds.parquet"]


@FUZZ
@given(tables(), st.sampled_from([{}, {"on_invalid": "skip"}, {"renormalize": True}, {"classes": ["a", "b"]},
                                  {"label": "y"}, {"predictions": ["probs"]}, {"by": "split"}]))
def test_random_schemas_only_evalkit_errors(table: pa.Table, kw: dict) -> None:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "t.parquet"
        pq.write_table(table, path)
        evaluate_only_evalkit_errors(str(path), **kw)
    evaluate_only_evalkit_errors(table, **kw)


@FUZZ
@given(st.lists(corrupted(), min_size=1, max_size=2))
def test_corrupt_file_in_a_dataset_is_named(files: list[bytes]) -> None:
    """A corrupt file among good ones: only EvalkitErrors, and the good file is never blamed."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "part-0.parquet").write_bytes(valid_bytes(1, 50, "zstd"))
        for i, data in enumerate(files, start=1):
            Path(d, f"part-{i}.parquet").write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                evalkit.evaluate(d, plots=False)
            except CorruptFileError as exc:
                assert not str(exc).split(": ")[0].endswith("part-0.parquet"), str(exc)
            except EvalkitError:
                pass
