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
    option,
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
        self, source: str, column: str, row_offset: int | np.ndarray = 0, keys: Sequence[Any] | None = None
    ) -> EvalkitError:
        """The exception that names file, column and a sample of offending rows (``row_offset``:
        the first row's position, or every row's, as :func:`~evalkit.errors.sample_rows`)."""
        return self.error(
            f"{source}: column {column}: {self.what}: "
            f"{sample_rows(self.mask, row_offset, self.values, keys)}"
        )


def score_problems(
    scores: np.ndarray, *, from_logits: bool, sum_tol: float = 1e-3, check_sum: bool = True,
    stats: ScoreStats | None = None, can_renormalize: bool = True, logits_key: str = "logits",
) -> list[Problem]:
    """Problems of an (n, K) matrix of probabilities (or logits).

    ``stats`` (from :func:`evalkit.scores.score_stats`) saves recomputing row sums and extremes.
    """
    if scores.shape[0] == 0:
        return []
    problems: list[Problem] = []
    if from_logits:
        # One reduction: a NaN or inf anywhere makes the total non-finite (finite logits of
        # +-1e308 overflow it too: the row test below then finds no bad row).
        with np.errstate(over="ignore", invalid="ignore"):
            total = scores.sum(dtype=np.float64)
        if not np.isfinite(total):
            bad = ~np.isfinite(scores).all(axis=1)
            if bad.any():
                problems.append(
                    Problem("nonfinite_logit", InvalidProbabilityError, "NaN or infinite logits", bad, scores)
                )
        elif scores.shape[1] > 1 and scores.min() >= 0 and scores.max() <= 1:
            row_sum = scores.sum(axis=1, dtype=np.float64)
            if (np.abs(row_sum - 1.0) <= sum_tol).all():
                problems.append(Problem(
                    PROBABILITIES_AS_LOGITS, InvalidProbabilityError,
                    f"these values were taken as logits but look like probabilities: every row lies in "
                    f"[0, 1] and sums to 1 (within {sum_tol:g}), and a softmax over probabilities gives a "
                    f"wrong loss; read them as probabilities with {option(logits_key, False)}; row sums",
                    np.ones(len(row_sum), dtype=bool), row_sum))
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
                                f"negative probabilities{logits_hint(lo, hi, row_sum, logits_key)}", neg, scores))
    if hi > 1:
        big = (scores > 1).any(axis=1) & ~nonfinite
        problems.append(Problem("probability_above_one", InvalidProbabilityError,
                                f"probabilities greater than 1{logits_hint(lo, hi, row_sum, logits_key)}", big, scores))
    if check_sum:
        off = ~nonfinite & ~(np.abs(row_sum - 1.0) <= sum_tol)
        if off.any():
            # Dividing by the row sum only makes sense for values that are probabilities.
            divide = (f"with {option('renormalize', True)}" if can_renormalize else "first")
            fix = (f"fix the model output, raise {option('sum_tol', meta='TOL')}, or divide each row by "
                   f"its sum {divide}" if lo >= 0 and hi <= 1
                   else f"values outside [0, 1] are not probabilities{logits_hint(lo, hi, row_sum, logits_key)}")
            problems.append(Problem("probability_sum", ProbabilitySumError,
                                    f"probability rows do not sum to 1 within {sum_tol:g} ({fix}); row sums",
                                    off, row_sum))
    return [p for p in problems if p.mask.any()]


#: Reason of a batch of probabilities declared (or detected) as logits: never skipped row by
#: row, since it is a wrong setting, not bad rows.
PROBABILITIES_AS_LOGITS = "probabilities_as_logits"


def logits_hint(lo: float, hi: float, row_sum: np.ndarray | None = None, logits_key: str = "logits") -> str:
    """What values outside [0, 1] look like, and the setting that reads them right."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return ""
    if row_sum is not None and lo >= 0 and len(row_sum):
        finite = row_sum[np.isfinite(row_sum)]
        if len(finite) and np.allclose(finite, 100.0, rtol=1e-3):
            return " (rows sum to 100: percentages? divide them by 100)"
    if lo >= 0 and hi <= LOGIT_LOOKING_MAX:
        return ""  # non-negative and barely above 1: badly normalised, not logits
    what = "logits or log-probabilities" if hi <= 0 else "logits"
    return f" (the values look like {what}: read them as such with {option(logits_key, True)})"


def unit_interval_logits(column: str, lo: float, hi: float, where: str) -> str | None:
    """The warning for a binary column read as logits whose values all lie in [0, 1], or None.

    Such a column is implausible as logits, since it means P(class 1) between 0.5 and
    sigmoid(1) = 0.731 on every row: no row predicts class 0. It is what probabilities
    declared as logits look like. But a weak or prior-only model does produce such logits
    (a constant prior of 60% is the logit 0.405 on every row), so this is a warning, not a
    refusal. (Wide and list columns are refused instead: rows of logits that all sum to 1
    are conclusive, see :data:`PROBABILITIES_AS_LOGITS`.) ``lo`` / ``hi`` are the column's
    extremes over ``where`` (e.g. "in every row used").
    """
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
        return None
    return (f"every value of the binary logit column {column!r} {where} lies in [0, 1] (min {lo:.6g}, "
            f"max {hi:.6g}): probabilities read as logits? As logits they mean P(class 1) between 0.5 and "
            f"0.731 on every row, so no row predicts class 0. If they are probabilities, set "
            f"{option('logits', False)} to read them as such (the loss differs)")


#: Rows of each partition a run checks for a reversed binary column (:class:`ReversedBinary`).
REVERSAL_SAMPLE_ROWS = 1 << 20


@dataclass
class ReversedBinary:
    """Mergeable evidence that a binary column holds the probability of the *other* class:
    over the first :data:`REVERSAL_SAMPLE_ROWS` rows used (of each partition), the loss and
    the accuracy as read, and with the two classes swapped (the true class's probability
    ``1 - p_true``). One subtraction, clip and log per sampled row; it never changes a result,
    it only decides the warning of :meth:`warning`."""

    n: int = 0
    loss: float = 0.0
    """Sum of the rows' losses as read (nats)."""
    loss_swapped: float = 0.0
    """Sum of ``-log(clip(1 - p_true, eps, 1 - eps))``: the loss with the classes swapped."""
    correct: int = 0
    correct_swapped: int = 0
    """Rows whose true class wins once swapped (``1 - p_true > p_true``)."""

    def update(self, p_true: np.ndarray, loss: np.ndarray, correct: np.ndarray, eps: float) -> None:
        """Add a batch's rows (unclipped ``p_true``, per-row ``loss``, ``correct`` flags)."""
        m = min(len(p_true), REVERSAL_SAMPLE_ROWS - self.n)
        if m <= 0:
            return
        q = 1.0 - p_true[:m]
        self.n += m
        self.loss += float(loss[:m].sum())
        self.loss_swapped += float(-np.log(np.clip(q, eps, 1.0 - eps)).sum())
        self.correct += int(np.count_nonzero(correct[:m]))
        self.correct_swapped += int(np.count_nonzero(q > 0.5))

    def merge(self, other: ReversedBinary | None) -> ReversedBinary:
        """Both partitions' evidence (associative)."""
        if other is None:
            return self
        return ReversedBinary(self.n + other.n, self.loss + other.loss, self.loss_swapped + other.loss_swapped,
                              self.correct + other.correct, self.correct_swapped + other.correct_swapped)

    def reads_reversed(self) -> bool:
        """Whether the evidence says the column holds the other class's probability (see
        :meth:`warning`)."""
        if self.n < 20:
            return False
        mean, mean_sw = self.loss / self.n, self.loss_swapped / self.n
        far_below_chance = below_chance(self.correct, self.n, 2) and mean_sw < mean
        much_better = mean > float(np.log(2.0)) and mean_sw < mean / 2
        return far_below_chance or much_better

    def figures(self, column: str, classes: Sequence[str]) -> str:
        """Both readings of the column: accuracy and mean loss as P(class 1) and as P(class 0)."""
        c0, c1 = classes[0], classes[1]
        return (f"read as P({c1!r}), {column!r} has accuracy {100 * self.correct / self.n:.1f}% and mean loss "
                f"{self.loss / self.n:.4g} nats; read as P({c0!r}), {100 * self.correct_swapped / self.n:.1f}% "
                f"and {self.loss_swapped / self.n:.4g} nats (first {self.n:,} rows used)")

    def warning(self, column: str, classes: Sequence[str]) -> str | None:
        """The warning when the column looks reversed, or None.

        Two signals (at least 20 rows): the accuracy is far below chance (under 1/3, where a
        binary coin flip gets 1/2) while the swapped reading loses less; or the mean loss is
        above log 2 = 0.693 nats (worse than predicting 0.5 on every row) while the swapped
        reading has less than half of it. Either is what a correct model gives when its
        probability column is read for the wrong class (a sorted ``classes`` order that
        makes P(positive) read as P(negative))."""
        if not self.reads_reversed():
            return None
        c0, c1 = classes[0], classes[1]
        return (f"the binary column {column!r} looks reversed (classes {c0}, {c1}): {self.figures(column, classes)}. "
                f"If the column holds P({c0!r}), name the classes the other way round: {option('classes', [c1, c0])}")


def below_chance(correct: int, n: int, k: int) -> bool:
    """Accuracy far below what guessing gets: under 2/3 of ``1/k`` (1/3 for two classes)
    over at least 20 rows. A working model read under the wrong class order looks like this
    (:class:`ReversedBinary`, :func:`class_order_fit`); a weak one sits near ``1/k``."""
    return n >= 20 and correct < n * 2 / (3 * k)


@dataclass(frozen=True)
class ClassOrderFit:
    """Another class order under which positional predictions fit far better."""

    order: tuple[str, ...]
    """The class names in the predictions' positions that fit best."""
    accuracy: float
    """Accuracy as read (under the class order given)."""
    fitted_accuracy: float
    """Accuracy of the same predictions read in :attr:`order`."""
    n: int


def class_order_fit(counts: np.ndarray, classes: Sequence[str]) -> ClassOrderFit | None:
    """The class order that positional predictions fit far better than the one they were
    read under, from their confusion counts (``counts[true, predicted]``, K x K), or None.

    The signal (the binary column's, :class:`ReversedBinary`, for K classes): the accuracy
    is far below chance (:func:`below_chance`) while some permutation of the positions (the
    assignment of positions to classes with the most correct rows, Hungarian method) is
    above chance and at least twice as accurate. The order is what the predictions' column
    ``j`` then holds: the true class assigned to it."""
    counts = np.asarray(counts)
    k, n = len(classes), int(counts.sum())
    correct = int(np.trace(counts))
    if k < 2 or not below_chance(correct, n, k):
        return None
    from scipy.optimize import linear_sum_assignment  # only for a run far below chance

    true, pos = linear_sum_assignment(counts, maximize=True)
    fitted = int(counts[true, pos].sum())
    if not (fitted * k > n and fitted >= 2 * correct):
        return None
    order = [""] * k
    for t, j in zip(true, pos, strict=True):
        order[j] = classes[t]
    return ClassOrderFit(tuple(order), correct / n, fitted / n, n)


def class_order_warning(fit: ClassOrderFit, column: str, classes: Sequence[str], mean_loss: float) -> str:
    """The run warning for :func:`class_order_fit`: both readings, and the order to name."""
    k = len(classes)
    return (f"the predictions in {column!r} look read under the wrong class order: in the order given "
            f"({', '.join(classes)}) they have accuracy {100 * fit.accuracy:.1f}% (chance {100 / k:.1f}%) and mean "
            f"loss {mean_loss:.4g} nats (log {k} = {np.log(k):.4g}); read in the order {', '.join(fit.order)} the "
            f"same predictions are {100 * fit.fitted_accuracy:.1f}% accurate ({fit.n:,} rows). A list or unnamed "
            f"column does not say its class order: if the model's class-index order is that one, name it with "
            f"{option('classes', list(fit.order))}")


#: Non-negative scores up to this value are not called logits in hints.
LOGIT_LOOKING_MAX = 1.5


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
    # The settings cross_entropy() has: no renormalize, and logits are ``from_logits``.
    for problem in score_problems(scores, from_logits=from_logits, sum_tol=sum_tol, can_renormalize=False,
                                  logits_key="from_logits"):
        raise problem.to_error(source, "probs" if not from_logits else "logits")


def check_targets(targets: np.ndarray, *, sum_tol: float, source: str) -> None:
    """Raise the first problem of a target matrix, if any."""
    for problem in target_problems(targets, sum_tol=sum_tol):
        raise problem.to_error(source, "targets")
