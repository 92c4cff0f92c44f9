"""The math: clipped categorical cross-entropy, per row. Pure numpy, no I/O.

For probabilities ``p`` (rows sum to 1) and true class ``y``::

    loss = -log(clip(p[y], eps, 1 - eps))

for one-hot or soft targets ``t``::

    loss = -sum_j t_j * log(clip(p_j, eps, 1 - eps))

From logits the same clip is applied in log space to the log-softmax, which equals the
probability path (log is monotone) and never overflows. Everything is accumulated in float64,
whatever the input dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import EvalkitError, InvalidProbabilityError, LabelError, UsageError
from .scores import row_argmax, shift_by_row_max
from .validate import check_scores, check_targets

DEFAULT_EPS = 1e-7

FloatArray = npt.NDArray[np.float64]


def _number(name: str, value: object, interval: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise UsageError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_eps(eps: float) -> float:
    """Validate ``eps``: a number (not text, not a bool) in the open interval (0, 0.5). The one
    check of ``evaluate`` (:meth:`evalkit.config.EvalConfig.validate`) and :func:`cross_entropy`."""
    value = _number("eps", eps, "(0, 0.5)")
    if not (0.0 < value < 0.5) or math.isnan(value):
        raise UsageError(f"eps must be in the open interval (0, 0.5), got {eps!r}")
    return value


def check_sum_tol(sum_tol: float) -> float:
    """Validate ``sum_tol``: a number (not text, not a bool) in the open interval (0, 1). The one
    check of ``evaluate`` and :func:`cross_entropy` (rt-api9 F27: ``sum_tol=-1`` blamed a perfect
    row, ``2`` was accepted)."""
    value = _number("sum_tol", sum_tol, "(0, 1)")
    if not (0.0 < value < 1.0) or math.isnan(value):
        raise UsageError(f"sum_tol must be in the open interval (0, 1), got {sum_tol!r}")
    return value


def loss_bounds(eps: float) -> tuple[float, float]:
    """The range ``[-log(1-eps), -log(eps)]`` every clipped loss lies in.

    Computed exactly as the kernel computes it (``1 - eps`` rounded to float64 first), so the
    bounds are attained values, not approximations of them.
    """
    return -math.log(1.0 - eps), -math.log(eps)


@dataclass(frozen=True)
class RowLoss:
    """Per-row output of the kernel (every array has length n)."""

    loss: FloatArray
    """Clipped cross-entropy per row, in nats (float64)."""
    clipped_low: npt.NDArray[np.bool_]
    """True where a probability that entered the loss was below ``eps`` (raised to ``eps``):
    a confident mistake, whose loss the clip caps at ``-log(eps)``. For soft targets: any
    class with positive target weight."""
    clipped_high: npt.NDArray[np.bool_]
    """True where a probability that entered the loss was above ``1 - eps`` (lowered to it):
    a confident, correct prediction; the clip changes its loss by less than ``eps``."""
    predicted: npt.NDArray[np.int64]
    """Arg-max class of the predictions."""
    true_class: npt.NDArray[np.int64]
    """The true class (for soft targets: the arg-max of the target row)."""
    p_true: FloatArray
    """Unclipped predicted probability of the true class (for soft targets: of its arg-max)."""

    @property
    def correct(self) -> npt.NDArray[np.bool_]:
        """Whether the arg-max prediction equals the true class."""
        return self.predicted == self.true_class


def log_softmax(z: np.ndarray, cols: np.ndarray | None = None) -> FloatArray:
    """Log-softmax of each row of logits ``z`` (n, K), in float64.

    Returns an (n, K) matrix, or the (n,) values at class ``cols[i]`` of row ``i`` when
    ``cols`` is given. Computed as ``(z - m) - log(sum(exp(z - m)))`` with ``m`` the row
    maximum (the form of ``scipy.special.log_softmax``): ``z - m`` is exact for the largest
    entries, so large logits or a large common offset lose nothing, and ``exp`` never
    overflows. Adding ``log(sum(...))`` to ``m`` first (``z - (m + lse)``) would round the
    log-sum away at |z| ~ 1e16. Finite inputs up to ~1e307 in magnitude are exact to a few ulp;
    every finite input gives a finite result: a log-probability below the most negative
    float64 (logits ~1e308 apart) is that float (:func:`~evalkit.scores.shift_by_row_max`),
    where ``scipy.special.log_softmax`` gives -inf; either way its probability is 0.
    """
    shifted = shift_by_row_max(np.asarray(z))
    log_sum = np.log(np.exp(shifted).sum(axis=1))
    if cols is None:
        return shifted - log_sum[:, None]
    return shifted[np.arange(len(shifted)), cols] - log_sum


def sparse_loss(
    scores: np.ndarray, y: np.ndarray, eps: float = DEFAULT_EPS, from_logits: bool = False,
    predicted: np.ndarray | None = None,
) -> RowLoss:
    """Loss of each row of ``scores`` (n, K) against integer classes ``y`` (n,).

    ``scores`` holds probabilities, or logits when ``from_logits``. Labels must already be
    validated to lie in ``[0, K)``.
    """
    n = scores.shape[0]
    rows = np.arange(n)
    y = np.asarray(y, dtype=np.int64)
    if predicted is None:
        predicted = row_argmax(scores)
    if from_logits:
        logp = log_softmax(scores, y) if n else np.zeros(0)
        lo, hi = math.log(eps), math.log1p(-eps)
        low, high = logp < lo, logp > hi
        loss = -np.clip(logp, lo, hi)
        p_true = np.exp(logp)
    else:
        return loss_of_p_true(scores[rows, y], y, eps, predicted)
    return RowLoss(loss, low, high, predicted, y, p_true)


def loss_of_p_true(p_true: np.ndarray, y: np.ndarray, eps: float, predicted: np.ndarray) -> RowLoss:
    """:func:`sparse_loss` of probabilities from each row's probability of its true class
    (``p_true``, gathered as ``scores[rows, y]`` by the caller) and its arg-max: the same
    values, for a caller that gathered them earlier and no longer holds the matrix."""
    p_true = p_true.astype(np.float64, copy=False)
    low, high = p_true < eps, p_true > 1.0 - eps
    # -log(clip(p)) in one array (fresh batch-sized temporaries are page-faulted in).
    loss = np.clip(p_true, eps, 1.0 - eps)
    np.log(loss, out=loss)
    np.negative(loss, out=loss)
    return RowLoss(loss, low, high, predicted, np.asarray(y, dtype=np.int64), p_true)


def soft_loss(
    scores: np.ndarray, targets: np.ndarray, eps: float = DEFAULT_EPS, from_logits: bool = False
) -> RowLoss:
    """Loss of each row of ``scores`` (n, K) against one-hot / soft ``targets`` (n, K)."""
    n = scores.shape[0]
    t = np.asarray(targets, dtype=np.float64)
    if from_logits:
        logp = log_softmax(scores) if n else np.zeros((0, scores.shape[1]))
        lo, hi = math.log(eps), math.log1p(-eps)
        below, above = logp < lo, logp > hi
        logc = np.clip(logp, lo, hi)
    else:
        p = np.asarray(scores, dtype=np.float64)
        below, above = p < eps, p > 1.0 - eps
        logc = np.log(np.clip(p, eps, 1.0 - eps))
    # 0 * log(clip(p)) is always finite thanks to the clip, so no 0 * -inf NaNs appear.
    loss = -(t * logc).sum(axis=1)
    # Only classes that carry target weight enter the loss, so only they count as clipped.
    weighted = t > 0
    low = (below & weighted).any(axis=1)
    high = (above & weighted).any(axis=1)
    predicted = row_argmax(scores)
    true_class = t.argmax(axis=1).astype(np.int64) if n else np.zeros(0, np.int64)
    rows = np.arange(n)
    p_true = np.exp(logp[rows, true_class]) if from_logits else p[rows, true_class]
    return RowLoss(loss, low, high, predicted, true_class, p_true)


def binary_scores(p1: np.ndarray, from_logits: bool = False) -> FloatArray:
    """Turn a binary P(class 1) (or its logit) column into an (n, 2) score matrix."""
    p1 = np.asarray(p1, dtype=np.float64)
    if from_logits:
        return np.column_stack([np.zeros_like(p1), p1])
    return np.column_stack([1.0 - p1, p1])


def _rectangular(values: npt.ArrayLike, name: str, error: type[EvalkitError]) -> np.ndarray:
    """``values`` as a numpy array; ragged rows (lists of different lengths) are ``error``."""
    try:
        return np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise error(f"{name} must be a rectangular array (every row the same length): {exc}") from None


def cross_entropy(
    probs: npt.ArrayLike,
    targets: npt.ArrayLike,
    eps: float = DEFAULT_EPS,
    from_logits: bool = False,
    *,
    validate: bool = True,
    sum_tol: float = 1e-3,
) -> FloatArray:
    """Clipped categorical cross-entropy of each row, in nats (natural logarithm).

    ``loss_i = -log(clip(p_i[y_i], eps, 1 - eps))`` for a class index ``y_i``, and
    ``loss_i = -sum_j t_ij * log(clip(p_ij, eps, 1 - eps))`` for a target row ``t_i``: the
    categorical cross-entropy (log loss) of Goodfellow, Bengio and Courville, *Deep
    Learning* (2016), eq. 6.12 / section 3.13, which is scikit-learn's
    ``sklearn.metrics.log_loss`` per sample and Keras' ``categorical_crossentropy``
    (``sparse_`` for class indices); the clip to ``[eps, 1 - eps]`` is Keras' (scikit-learn
    clips at the float64 machine epsilon). From logits the log-probabilities come from an
    exact log-softmax ``(z - max z) - log(sum(exp(z - max z)))`` (as
    ``scipy.special.log_softmax``), clipped to ``[log(eps), log(1 - eps)]``.

    Parameters
    ----------
    probs:
        (n, K) predicted class probabilities whose rows sum to 1, or (n,) binary
        P(class 1); logits of the same shapes when ``from_logits``. Any array-like of
        numbers (lists, numpy arrays, float32 is read as float64).
    targets:
        (n,) integer class indices in ``[0, K)`` (for a binary (n,) ``probs``: 0 or 1), or
        an (n, K) one-hot / soft target matrix whose rows sum to 1.
    eps:
        Probabilities are clipped to ``[eps, 1 - eps]`` so that one confident mistake
        cannot make the mean infinite (its loss is at most ``-log(eps)``, 16.118 nats for
        the default 1e-7). Must lie in (0, 0.5).
    from_logits:
        Treat ``probs`` as raw logits (unnormalised log-probabilities).
    validate:
        Check ranges, finiteness, row sums (within ``sum_tol``) and labels first, raising an
        :class:`~evalkit.errors.EvalkitError` subclass instead of returning a wrong number.
        ``validate=False`` skips these checks (the caller vouches for the input).
    sum_tol:
        Largest accepted ``|row sum - 1|`` of probabilities and targets (default 1e-3).

    Returns
    -------
    numpy.ndarray
        Shape (n,), float64: the loss of each row in nats (accumulated in float64 also for
        float32 inputs).

    Raises
    ------
    UsageError
        ``eps`` outside (0, 0.5); arrays of the wrong rank (``probs`` not 1-D or 2-D,
        ``targets`` not 1-D or 2-D), row counts or class counts that differ, K = 0.
    InvalidProbabilityError
        Non-numeric, ragged, NaN / infinite, negative or above-1 probabilities (non-finite
        logits with ``from_logits``).
    ProbabilitySumError
        Probability rows that do not sum to 1 within ``sum_tol`` (scale them to sum 1
        first, e.g. ``p / p.sum(axis=1, keepdims=True)``, if that is what they mean).
    LabelError
        Class indices that are not whole numbers or lie outside ``[0, K)``; ragged or
        non-numeric targets.
    TargetSumError
        Target rows that are negative or do not sum to 1 within ``sum_tol``.

    Examples
    --------
    >>> import evalkit
    >>> p = [[0.7, 0.1, 0.2], [0.1, 0.5, 0.4], [0.02, 0.9, 0.08]]
    >>> evalkit.cross_entropy(p, [0, 1, 1]).round(9).tolist()
    [0.356674944, 0.693147181, 0.105360516]
    """
    eps = check_eps(eps)
    sum_tol = check_sum_tol(sum_tol)
    scores = _rectangular(probs, "probs", InvalidProbabilityError)
    if scores.dtype.kind not in "fiu":
        raise InvalidProbabilityError(f"probabilities must be numeric, got dtype {scores.dtype}")
    if scores.ndim == 1:
        scores = binary_scores(scores, from_logits)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise UsageError(f"probs must be 1-D (binary) or 2-D (n, K) with K >= 1, got shape {scores.shape}")
    t = _rectangular(targets, "targets", LabelError)
    n, k = scores.shape
    if t.ndim not in (1, 2):
        raise UsageError(f"targets must be 1-D class indices or 2-D (n, K) targets, got shape {t.shape}")
    if t.shape[0] != n:
        raise UsageError(f"probs has {n} rows but targets has {t.shape[0]}")
    if validate:
        check_scores(scores, from_logits=from_logits, sum_tol=sum_tol, source="probs")
    if t.ndim == 2:
        if t.shape[1] != k:
            raise UsageError(f"targets has {t.shape[1]} columns but probs has {k} classes")
        if validate:
            check_targets(t, sum_tol=sum_tol, source="targets")
        return soft_loss(scores, t, eps, from_logits).loss
    if t.dtype.kind == "f":
        frac = t != np.floor(t)
        if frac.any():
            raise LabelError(f"targets: labels must be whole numbers, got {t[frac][:5].tolist()}")
        t = t.astype(np.int64)
    elif t.dtype.kind == "b":
        t = t.astype(np.int64)
    elif t.dtype.kind not in "iu":
        raise LabelError(f"targets must be integer class indices, got dtype {t.dtype}")
    bad = (t < 0) | (t >= k)
    if bad.any():
        raise LabelError(
            f"targets: labels must lie in [0, {k}), got {t[bad][:5].tolist()} "
            f"at rows {np.flatnonzero(bad)[:5].tolist()}"
        )
    return sparse_loss(scores, t, eps, from_logits).loss


__all__ = [
    "DEFAULT_EPS",
    "RowLoss",
    "binary_scores",
    "check_eps",
    "cross_entropy",
    "log_softmax",
    "loss_bounds",
    "loss_of_p_true",
    "soft_loss",
    "sparse_loss",
]
