"""Input validation, in one place, before any number is reported.

Each check returns :class:`Problem` objects (a reason, the error class, a row mask) rather
than raising, so the engine can either fail with a precise message (the default) or, under
the opt-in ``on_invalid="skip"`` policy, drop the rows and count them per reason.
The fast path is a handful of whole-batch reductions; per-row masks are only built when a
reduction says something is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import (
    EvalkitError,
    InvalidProbabilityError,
    ProbabilitySumError,
    TargetSumError,
    sample_rows,
)
from .scores import ScoreStats


@dataclass
class Problem:
    """Rows of one batch that fail one check."""

    reason: str
    """Stable short name, used as the key of skipped-row counts (e.g. ``"probability_sum"``)."""
    error: type[EvalkitError]
    what: str
    """Human description of the failure, e.g. ``"probabilities do not sum to 1 (tol 0.001)"``."""
    mask: np.ndarray
    values: Any = None
    """Per-row values shown in the message (indexable by row position)."""

    def to_error(
        self, source: str, column: str, row_offset: int = 0, keys: Sequence[Any] | None = None
    ) -> EvalkitError:
        """The exception that names file, column and a sample of offending rows."""
        return self.error(
            f"{source}: column {column}: {self.what}: "
            f"{sample_rows(self.mask, row_offset, self.values, keys)}"
        )


def score_problems(
    scores: np.ndarray, *, from_logits: bool, sum_tol: float = 1e-3, check_sum: bool = True,
    stats: ScoreStats | None = None,
) -> list[Problem]:
    """Problems of an (n, K) matrix of probabilities (or logits).

    ``stats`` (from :func:`evalkit.scores.score_stats`) saves recomputing row sums and extremes.
    """
    if scores.shape[0] == 0:
        return []
    problems: list[Problem] = []
    if from_logits:
        # One reduction: a NaN or inf anywhere makes the total non-finite.
        if not np.isfinite(scores.sum(dtype=np.float64)):
            bad = ~np.isfinite(scores).all(axis=1)
            if bad.any():
                problems.append(
                    Problem("nonfinite_logit", InvalidProbabilityError, "NaN or infinite logits", bad, scores)
                )
        return problems
    # Summing in the input dtype (float32 for most models) is twice as fast and, against a
    # tolerance of 1e-3, exact enough (pairwise float32 sums of 1000 terms err by ~1e-6).
    row_sum = stats.row_sum if stats is not None else scores.sum(axis=1).astype(np.float64, copy=False)
    nonfinite = ~np.isfinite(row_sum)
    if nonfinite.any():
        problems.append(
            Problem("nonfinite_probability", InvalidProbabilityError,
                    "NaN, null or infinite probabilities", nonfinite, scores)
        )
    lo, hi = (stats.lo, stats.hi) if stats is not None else (scores.min(), scores.max())
    if lo < 0:
        neg = (scores < 0).any(axis=1) & ~nonfinite
        problems.append(Problem("negative_probability", InvalidProbabilityError,
                                "negative probabilities", neg, scores))
    if hi > 1:
        big = (scores > 1).any(axis=1) & ~nonfinite
        problems.append(Problem("probability_above_one", InvalidProbabilityError,
                                "probabilities greater than 1", big, scores))
    if check_sum:
        off = ~nonfinite & ~(np.abs(row_sum - 1.0) <= sum_tol)
        if off.any():
            problems.append(
                Problem(
                    "probability_sum",
                    ProbabilitySumError,
                    f"probability rows do not sum to 1 within {sum_tol:g} "
                    "(fix the model output, raise --sum-tol, or opt in to --renormalize); "
                    "row sums",
                    off,
                    row_sum,
                )
            )
    return [p for p in problems if p.mask.any()]


def target_problems(targets: np.ndarray, *, sum_tol: float = 1e-3) -> list[Problem]:
    """Problems of an (n, K) one-hot / soft target matrix."""
    if targets.shape[0] == 0:
        return []
    problems: list[Problem] = []
    row_sum = targets.sum(axis=1, dtype=np.float64)
    nonfinite = ~np.isfinite(row_sum)
    if nonfinite.any():
        problems.append(Problem("nonfinite_target", TargetSumError,
                                "NaN, null or infinite targets", nonfinite, targets))
    if targets.min() < 0:
        neg = (targets < 0).any(axis=1) & ~nonfinite
        problems.append(Problem("negative_target", TargetSumError, "negative targets", neg, targets))
    off = ~nonfinite & ~(np.abs(row_sum - 1.0) <= sum_tol)
    if off.any():
        problems.append(Problem("target_sum", TargetSumError,
                                f"target rows do not sum to 1 within {sum_tol:g}; row sums", off, row_sum))
    return [p for p in problems if p.mask.any()]


def check_scores(scores: np.ndarray, *, from_logits: bool, sum_tol: float, source: str) -> None:
    """Raise the first problem of ``scores``, if any."""
    for problem in score_problems(scores, from_logits=from_logits, sum_tol=sum_tol):
        raise problem.to_error(source, "probs" if not from_logits else "logits")


def check_targets(targets: np.ndarray, *, sum_tol: float, source: str) -> None:
    """Raise the first problem of a target matrix, if any."""
    for problem in target_problems(targets, sum_tol=sum_tol):
        raise problem.to_error(source, "targets")
