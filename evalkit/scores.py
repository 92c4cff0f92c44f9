"""Whole-batch facts about a score matrix, in one cache-friendly pass: per-row sum and arg-max,
global min and max.

Shared by validation (:mod:`evalkit.validate`: row sums, range) and the kernel
(:mod:`evalkit.loss`: arg-max for accuracy), so both read the batch once. Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def row_argmax(scores: np.ndarray) -> npt.NDArray[np.int64]:
    """Arg-max of each row (first maximum on ties), fast for column-major score matrices.

    numpy's argmax along a short, strided axis runs one tiny reduction per row. For up to
    32 classes in column-major (wide-layout) order, a vectorised row max plus one bit per
    class ("is this column the max?") is ~5x faster: the first maximum is the highest set
    bit of the packed code, read off with frexp.
    """
    n, k = scores.shape
    if n == 0:
        return np.zeros(0, np.int64)
    if k > 32 or scores.strides[0] != scores.itemsize:
        return scores.argmax(axis=1).astype(np.int64, copy=False)
    mx = scores.max(axis=1)
    code = np.zeros(n, dtype=np.uint32)
    eq = np.empty(n, dtype=bool)
    for j in range(k):
        np.equal(scores[:, j], mx, out=eq)
        code |= eq.view(np.uint8).astype(np.uint32) << np.uint32(k - 1 - j)
    # code lies in [2**(e-1), 2**e): the first maximum is class k - e. Rows with a NaN have
    # code 0 (never reached for validated input) and get class 0.
    e = np.frexp(code.astype(np.float64))[1]
    return np.clip(k - e, 0, k - 1).astype(np.int64)


@dataclass(frozen=True)
class ScoreStats:
    """Per-row sum and arg-max plus the global min / max of a probability matrix."""

    row_sum: FloatArray
    argmax: npt.NDArray[np.int64]
    lo: float
    hi: float


#: Values per block in :func:`score_stats`: a block (4 MiB of float32) stays in cache while
#: it is summed, arg-maxed and min/max-ed, instead of streaming the batch from RAM 4 times.
BLOCK_VALUES = 1 << 20


def score_stats(scores: np.ndarray) -> ScoreStats:
    """Everything validation and the kernel need from a score matrix, in one cache-friendly pass.

    For many classes (row-major list layouts) the batch is walked in blocks of rows; each
    block is reduced while it is in cache (3x faster at 1000 classes). Row sums use einsum
    in the input dtype (exact enough against a 1e-3 tolerance): twice as fast as ``sum`` and,
    unlike a BLAS matrix-vector product, it does not start spinning BLAS threads that fight
    the Parquet decoder for the cores.
    """
    n, k = scores.shape
    if n == 0:
        return ScoreStats(np.zeros(0), np.zeros(0, np.int64), 0.0, 0.0)
    if k <= 32 or not scores.flags.c_contiguous:
        return ScoreStats(scores.sum(axis=1).astype(np.float64, copy=False), row_argmax(scores),
                          float(scores.min()), float(scores.max()))
    row_sum = np.empty(n, dtype=np.float64)
    argmax = np.empty(n, dtype=np.int64)
    lo, hi = math.inf, -math.inf
    step = max(1, BLOCK_VALUES // k)
    for start in range(0, n, step):
        block = scores[start:start + step]
        row_sum[start:start + step] = np.einsum("ij->i", block)
        argmax[start:start + step] = block.argmax(axis=1)
        # NaN propagates through min/max, so a NaN anywhere still fails the checks.
        lo = min(lo, float(block.min()))
        hi = max(hi, float(block.max()))
    return ScoreStats(row_sum, argmax, lo, hi)


__all__ = ["BLOCK_VALUES", "ScoreStats", "row_argmax", "score_stats"]
