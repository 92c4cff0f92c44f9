"""Streaming Poisson bootstrap of the mean loss per group (mergeable).

Each row enters replicate ``b`` with an integer weight ``w_rb ~ Poisson(1)``, so a replicate
is a resample of the data with replacement that can be accumulated row by row and merged by
addition (Oza & Russell 2001; Chamandy et al. 2012; the form TensorFlow Model Analysis uses
for its confidence intervals). Per group the state is two ``(B,)`` float64 vectors:
``sum_r w_rb * x_r`` and ``sum_r w_rb`` (times the sample weight with ``--weight``); the
replicate means are their ratio, and the interval is the percentile interval of the
replicate means.

The weights are a hash of the row's global position in the input and the seed
(:func:`evalkit.inference.poisson_weights`): the result is the same for any batch size,
row-group layout, partitioning or engine. Cost: ``B`` hashes per row (once per batch,
shared by every grouping) and ``2 B`` numbers per group (1.6 KB at B = 100).

With sample weights the sums are kept for the weights times ``2**-scale.exp`` (one
:class:`~evalkit.aggregate.weightscale.WeightScale` for all groups): weights of ``1e300``
or ``1e-300`` neither overflow nor underflow the replicate sums, and the replicate means
(ratios) do not depend on the weights' scale.
"""

from __future__ import annotations

import numpy as np

from .weightscale import WeightScale, shift_sums

DEFAULT_SAMPLES = 100
DEFAULT_SEED = 0
# Rows per block: the float64 (rows, B) temporaries stay near 6.5 MB at B = 100.
_BLOCK_ROWS = 8192


class PoissonBootstrap:
    """Per-group replicate sums, indexed by the owning GroupStats' slots."""

    def __init__(self, n: int = DEFAULT_SAMPLES):
        if n < 2:
            raise ValueError(f"bootstrap needs at least 2 replicates, got {n!r}")
        self.n = int(n)
        self.wsum = np.zeros((0, self.n), dtype=np.float64)
        self.wloss = np.zeros((0, self.n), dtype=np.float64)
        # Weighted: the sums hold weights times 2**-scale.exp (unweighted: exp stays unset).
        self.scale = WeightScale()

    def _rescale(self, shift: int) -> None:
        shift_sums({"wsum": self.wsum, "wloss": self.wloss}, {"wsum": 1, "wloss": 1}, shift)

    def resize(self, cap: int) -> None:
        """Grow (or trim) to ``cap`` slots, keeping the used ones."""
        for name in ("wsum", "wloss"):
            old = getattr(self, name)
            new = np.zeros((cap, self.n), dtype=np.float64)
            keep = min(cap, len(old))
            new[:keep] = old[:keep]
            setattr(self, name, new)

    def trimmed(self, g: int) -> PoissonBootstrap:
        """A copy holding the first ``g`` slots."""
        new = PoissonBootstrap.__new__(PoissonBootstrap)
        new.n = self.n
        new.wsum = self.wsum[:g].copy()
        new.wloss = self.wloss[:g].copy()
        new.scale = WeightScale(self.scale.exp)
        return new

    def add(self, slots: np.ndarray, boot: np.ndarray, loss: np.ndarray,
            weight: np.ndarray | None) -> None:
        """Add rows: their global group ``slots``, Poisson weights ``boot`` (n, B), losses and
        optional sample weights (finite, >= 0; any scale, see the module docstring)."""
        if weight is not None:
            self._rescale(self.scale.observe(weight))
            weight = self.scale.scale(weight)
        for start in range(0, len(slots), _BLOCK_ROWS):
            blk = slice(start, start + _BLOCK_ROWS)
            self._add_block(slots[blk], boot[blk], loss[blk], None if weight is None else weight[blk])

    def _add_block(self, slots: np.ndarray, boot: np.ndarray, loss: np.ndarray,
                   weight: np.ndarray | None) -> None:
        w = boot.astype(np.float64)
        if weight is not None:
            w *= weight[:, None]
        order = np.argsort(slots, kind="stable")
        s = slots[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        groups = s[starts]
        ws = w[order]
        self.wsum[groups] += np.add.reduceat(ws, starts, axis=0)
        ws *= loss[order][:, None]
        self.wloss[groups] += np.add.reduceat(ws, starts, axis=0)

    def absorb(self, other: PoissonBootstrap, src: np.ndarray, dst: np.ndarray) -> None:
        """Add ``other``'s slots ``src`` into slots ``dst``."""
        if other.n != self.n:
            raise ValueError("cannot merge bootstraps with different numbers of replicates")
        exp = max(self.scale.exp, other.scale.exp)
        self._rescale(self.scale.observe_exp(exp))
        shift = other.scale.exp - exp
        with np.errstate(under="ignore"):
            self.wsum[dst] += np.ldexp(other.wsum[src], shift) if shift else other.wsum[src]
            self.wloss[dst] += np.ldexp(other.wloss[src], shift) if shift else other.wloss[src]

    def interval(self, order: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval of the replicate means for the groups in ``order`` (NaN for
        groups with fewer than 2 rows' worth of replicates)."""
        ws = self.wsum[order]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(ws > 0, self.wloss[order] / np.where(ws > 0, ws, 1.0), np.nan)
        a = (1.0 - confidence) / 2
        lo = np.full(len(order), np.nan)
        hi = np.full(len(order), np.nan)
        ok = np.isfinite(means).sum(axis=1) >= 2
        if ok.any():
            q = np.nanquantile(means[ok], [a, 1 - a], axis=1)
            lo[ok], hi[ok] = q[0], q[1]
        return lo, hi
