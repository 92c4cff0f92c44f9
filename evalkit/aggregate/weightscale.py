"""Scale-free sums of sample weights: the one home of the shared weight scale.

Sums of weights (and of their powers) overflow for weights near the float maximum
(``1e300 ** 2``) and underflow for tiny ones (``(1e-200) ** 3``). An accumulator that
keeps such sums stores every weight times ``2**-exp`` instead, ``exp`` being the binary
exponent of the largest weight seen so far (:class:`WeightScale`): stored weights are then
at most 1, and the statistics built from the sums (means, Kish's ``n_eff``, skewness terms,
bootstrap replicate means) are ratios in which the scale cancels. Powers of two make the
rescaling exact (until a term underflows: a weight ``2**1074`` times smaller than the
largest cannot move a weighted statistic). When a larger weight arrives, the sums already
stored are multiplied by ``2**(power * shift)`` (``shift`` = old minus new exponent,
``power`` = the power of ``w`` in the sum); two partial states combine at the larger of their
exponents, so the state merges in any order.

Users: :class:`evalkit.aggregate.slices.SliceStats` (one scale for all slices) and
:class:`evalkit.aggregate.bootstrap.PoissonBootstrap` (one scale for all groups' replicate
sums). ``GroupStats`` keeps one exponent per group (``weight_exp``), because its weighted
sums are also read per group unscaled (``weight_sum``).
"""

from __future__ import annotations

import math

import numpy as np

#: ``exp`` before any positive weight: below every float64 exponent, so the first weight's
#: exponent always wins ``max`` and accumulated zeros stay zero when rescaled.
UNSET_EXP = -100_000


def weight_exponent(weight: np.ndarray) -> int:
    """The binary exponent ``e`` of the largest weight (``max w < 2**e``), or
    :data:`UNSET_EXP` when no weight is positive."""
    top = float(weight.max()) if len(weight) else 0.0
    return math.frexp(top)[1] if top > 0 else UNSET_EXP


def shift_sums(arrays: dict[str, np.ndarray], powers: dict[str, int], shift: int) -> None:
    """Multiply each ``arrays[name]`` in place by ``2**(powers[name] * shift)`` (exact for
    powers of two; terms too small for float64 become 0)."""
    if shift == 0:
        return
    with np.errstate(under="ignore"):
        for name, power in powers.items():
            arr = arrays[name]
            arr[...] = np.ldexp(arr, power * shift)


class WeightScale:
    """The exponent ``exp`` weights are stored under (``w * 2**-exp``), raised as larger
    weights arrive. :meth:`observe` returns the shift to apply to the sums already stored
    (:func:`shift_sums`); :meth:`scale` gives a batch's stored weights."""

    __slots__ = ("exp",)

    def __init__(self, exp: int = UNSET_EXP):
        self.exp = int(exp)

    def observe(self, weight: np.ndarray) -> int:
        """Raise ``exp`` to cover ``weight``; return ``old - new`` (0 or negative): the
        shift for the sums stored so far."""
        return self.observe_exp(weight_exponent(weight))

    def observe_exp(self, exp: int) -> int:
        """Raise ``exp`` to at least ``exp`` (another state's, when merging); return the
        shift for the sums stored so far, as :meth:`observe`."""
        new = max(self.exp, int(exp))
        shift, self.exp = self.exp - new, new
        return shift

    def scale(self, weight: np.ndarray) -> np.ndarray:
        """``weight * 2**-exp`` (float64; a new array)."""
        with np.errstate(under="ignore"):
            return np.ldexp(np.asarray(weight, dtype=np.float64), -self.exp)

    def __repr__(self) -> str:
        return f"WeightScale(exp={self.exp})"
