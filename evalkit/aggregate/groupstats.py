"""GroupStats: mergeable per-group loss statistics (count, mean, M2, min, max, flags,
weights) with exact or sketched quantiles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from ..inference import check_confidence, effective_n, mean_interval
from .bootstrap import PoissonBootstrap
from .calibration import BinRows, CalibrationBatch, CalibrationBins
from .keys import _KeyIndex
from .sketch import BinCounts, LogHistogram, quantile_column_name

_QUANTILE_MODES = ("auto", "exact", "sketch")


#: The scale exponent of a group with no weight yet (any real exponent exceeds it).
_NO_WEIGHT_EXP = -4000


def _flag_bits(flag: np.ndarray, bit: int) -> np.ndarray:
    """``bit`` where ``flag`` is true (bool, or 0 / 1 integers), else 0, as a new uint8 array."""
    if flag.dtype == np.bool_:
        return np.multiply(flag.view(np.uint8), np.uint8(bit))
    return np.multiply(flag.astype(np.uint8), np.uint8(bit))


def _exp32(e: np.ndarray) -> np.ndarray:
    return np.clip(e, -4000, 4000).astype(np.int32)


def _add_scaled(a: dict[str, np.ndarray], slots: np.ndarray, ws: np.ndarray, wl: np.ndarray,
                exp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Add scaled weight sums into ``a`` at ``slots``.

    Weighted sums are kept as ``(weight_sum, wloss_sum, weight_exp)`` with the true sums equal
    to ``weight_sum * 2**weight_exp`` (likewise for ``wloss_sum``), ``weight_exp`` being the
    binary exponent of the largest weight seen: every stored term is then at most 1 (times
    the loss), so weights up to the float maximum (``[1e308, 1e308, 1]``) never overflow.
    Two partial sums combine at the larger exponent (powers of two: rescaling is exact until
    a term underflows, and a term 2**1074 times smaller than the largest weight cannot move
    the mean). Mergeable in any order, like every other field.
    """
    old = a["weight_exp"][slots]
    new = np.maximum(old, exp)
    with np.errstate(under="ignore"):
        a["weight_sum"][slots] = (np.ldexp(a["weight_sum"][slots], _exp32(old - new))
                                  + np.ldexp(ws, _exp32(exp - new)))
        a["wloss_sum"][slots] = (np.ldexp(a["wloss_sum"][slots], _exp32(old - new))
                                 + np.ldexp(wl, _exp32(exp - new)))
    a["weight_exp"][slots] = new
    return old - new, exp - new


def _add_weight_moments(a: dict[str, np.ndarray], slots: np.ndarray, b: dict[str, np.ndarray],
                        src: np.ndarray | slice) -> None:
    """Fold a partial's weighted moments (``b`` at ``src``) into ``a`` at ``slots``.

    ``wsum``, ``wm2`` (scale 1) and ``weight_sq_sum`` (scale 2) are kept scaled by
    ``2**weight_exp`` like ``weight_sum``, so Kish's ``n_eff = wsum**2 / weight_sq_sum`` and
    the weighted sd do not depend on the weights' magnitude (all weights 1e-200 or 1e300:
    n_eff = n, no underflow to NaN); ``wmean`` is scale-free. Powers of two: exact, mergeable.
    """
    da, db = _add_scaled(a, slots, b["weight_sum"][src], b["wloss_sum"][src], b["weight_exp"][src])
    da, db = _exp32(da), _exp32(db)
    with np.errstate(under="ignore"):
        for name in ("wsum", "wm2"):
            a[name][slots] = np.ldexp(a[name][slots], da)
        a["weight_sq_sum"][slots] = (np.ldexp(a["weight_sq_sum"][slots], 2 * da)
                                     + np.ldexp(b["weight_sq_sum"][src], 2 * db))
        wb, m2b = np.ldexp(b["wsum"][src], db), np.ldexp(b["wm2"][src], db)
    _combine_weighted(a, slots, wb, b["wmean"][src], m2b)


class GroupStats:
    """Mergeable per-group loss statistics with exact or sketched quantiles.

    Per group it keeps count, sum, mean and M2 (combined with Chan et al.'s
    parallel formula, so variance is numerically stable under any batching or
    merge order), min, max, the counts of rows clipped low (``p_true < eps``) and high
    (``p_true > 1 - eps``), the correct count, and when ``weighted``
    the sums of weights, squared weights and weight * loss and the weighted mean and
    M2.  All accumulation is float64 (counts int64).

    Intervals
    ---------
    ``finalize`` adds ``sem`` and the ``confidence`` t-interval ``ci_low`` /
    ``ci_high`` of the mean (:func:`evalkit.inference.mean_interval`, from count, mean
    and M2). When ``weighted`` they are of the weighted mean instead, with Kish's
    effective sample size ``n_eff = (sum w)^2 / sum w^2`` as n (column ``n_eff``) and the
    weighted sd ``sqrt(wM2 / sum w * n_eff / (n_eff - 1))``. With ``bootstrap_samples``
    the interval is the percentile interval of a streaming Poisson bootstrap
    (:mod:`evalkit.aggregate.bootstrap`) instead; ``sem`` stays analytic.

    Calibration
    -----------
    With ``calibration_bins`` the state also holds the reliability bins of
    :mod:`evalkit.aggregate.calibration` (``O(bins)`` per group) and ``finalize`` adds
    ``ece``, ``mce``, ``brier`` and ``entropy``.

    Quantiles
    ---------
    A per-group :class:`LogHistogram` count array is always kept.  In addition
    the raw ``(group, loss)`` values are kept while they may be needed for exact
    quantiles: mode ``"exact"`` always keeps them, ``"sketch"`` never, ``"auto"``
    keeps them while the total row count is ``<= exact_limit`` and drops them
    for good once it is exceeded.  Since the decision depends only on the total
    count, the output does not depend on how the data was batched or merged.

    * exact: ``np.quantile(x, q, method="linear")`` per group (bit-identical).
    * sketch: the same definition (numpy ``method="linear"``: the values at
      0-based ranks ``floor(q * (n - 1))`` and the next, interpolated), with each
      of the two values read as its histogram bin's representative value,
      clamped into the group's exact ``[min, max]``.  Guarantee: relative error
      ``<= rel_err`` versus ``np.quantile(x, q, method="linear")`` for losses
      inside the histogram range ``[-log1p(-eps), -log(eps)]``, whatever the
      group's size: a 2-row group's p50 is about the mean of its two losses in
      a run of any size, never its lower one.

    The histogram counts are a :class:`BinCounts`: a dense ``groups x n_bins`` table
    while groups are few (``n_bins`` is about 9.5k for the defaults), sparse by occurring
    ``(group, bin)`` cell beyond, so memory is ``O(min(groups * n_bins, distinct cells))``
    (at most 16 bytes per row) plus 12 bytes per row while raw values are kept.
    """

    _FIELDS: tuple[tuple[str, Any, float], ...] = (
        ("count", np.int64, 0),
        ("sum", np.float64, 0.0),
        ("mean", np.float64, 0.0),
        ("m2", np.float64, 0.0),
        ("min", np.float64, np.inf),
        ("max", np.float64, -np.inf),
        ("clipped_low", np.int64, 0),
        ("clipped_high", np.int64, 0),
        ("correct", np.int64, 0),
        ("weight_sum", np.float64, 0.0),
        ("wloss_sum", np.float64, 0.0),
        ("weight_exp", np.int64, _NO_WEIGHT_EXP),
        # Weighted moments for the interval of the weighted mean (Kish effective n).
        ("wsum", np.float64, 0.0),
        ("weight_sq_sum", np.float64, 0.0),
        ("wmean", np.float64, 0.0),
        ("wm2", np.float64, 0.0),
    )

    def __init__(
        self,
        key_names: Sequence[str],
        *,
        eps: float = 1e-7,
        quantiles: Sequence[float] = (0.5, 0.9, 0.99),
        quantile_mode: str = "auto",
        exact_limit: int = 1_000_000,
        rel_err: float = 1e-3,
        weighted: bool = False,
        dict_order_keys: Sequence[str] | None = None,
        confidence: float = 0.95,
        calibration_bins: int | None = None,
        bootstrap_samples: int = 0,
    ):
        if quantile_mode not in _QUANTILE_MODES:
            raise ValueError(f"quantile_mode must be one of {_QUANTILE_MODES}, got {quantile_mode!r}")
        qs = tuple(float(q) for q in quantiles)
        if any(not 0.0 <= q <= 1.0 for q in qs):
            raise ValueError(f"quantiles must be in [0, 1], got {qs}")
        names = [quantile_column_name(q) for q in qs]
        if len(set(names)) != len(names):
            raise ValueError(f"quantiles give duplicate column names: {names}")
        if exact_limit < 0:
            raise ValueError("exact_limit must be >= 0")
        self.eps = float(eps)
        self.quantiles = qs
        self.quantile_mode = quantile_mode
        self.exact_limit = int(exact_limit)
        self.rel_err = float(rel_err)
        self.weighted = bool(weighted)
        self.confidence = check_confidence(confidence)
        self.calibration = None if calibration_bins is None else CalibrationBins(calibration_bins)
        if bootstrap_samples < 0:
            raise ValueError(f"bootstrap_samples must be >= 0, got {bootstrap_samples!r}")
        self.bootstrap = PoissonBootstrap(bootstrap_samples) if bootstrap_samples else None
        self.hist = LogHistogram.for_eps(self.eps, self.rel_err)
        self.n_rows = 0
        self._index = _KeyIndex(key_names, dict_order_keys)
        self._arrays: dict[str, np.ndarray] = {}
        self._bins = BinCounts(self.hist.n_bins)
        self._alloc(0)
        self._ensure(len(self._index))
        # Raw values for exact quantiles: lists of (global slot int32, loss float64) chunks.
        self._raw_codes: list[np.ndarray] | None = None if quantile_mode == "sketch" else []
        self._raw_loss: list[np.ndarray] | None = None if quantile_mode == "sketch" else []

    # -- storage ----------------------------------------------------------- #

    @property
    def key_names(self) -> tuple[str, ...]:
        """Names of the key columns."""
        return self._index.key_names

    @property
    def n_groups(self) -> int:
        """Number of distinct groups seen."""
        return len(self._index)

    def _alloc(self, cap: int) -> None:
        old = self._arrays
        used = len(old["count"]) if old else 0
        new = {}
        for name, dtype, init in self._FIELDS:
            arr = np.full(cap, init, dtype=dtype)
            if used:
                arr[:used] = old[name][:used]
            new[name] = arr
        self._arrays = new
        for part in (self.calibration, self.bootstrap):
            if part is not None:
                part.resize(cap)

    def _ensure(self, n_groups: int) -> None:
        self._bins.ensure(n_groups)
        cap = len(self._arrays["count"])
        if n_groups > cap:
            # Doubling keeps repeated growth (groups trickling in) amortised O(groups).
            self._alloc(max(n_groups, 2 * cap, 4))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        g = self.n_groups
        # Ship only used slots, and raw values as one chunk.
        state["_arrays"] = {k: v[:g].copy() for k, v in self._arrays.items()}
        for name in ("calibration", "bootstrap"):
            if state[name] is not None:
                state[name] = state[name].trimmed(g)
        if self._raw_codes is not None:
            state["_raw_codes"] = [_concat(self._raw_codes, np.int32)]
            state["_raw_loss"] = [_concat(self._raw_loss, np.float64)]
        return state

    # -- public API --------------------------------------------------------- #

    @property
    def quantile_method(self) -> str:
        """``"exact"`` or ``"sketch"``: what finalize() uses for the data seen so far."""
        return "sketch" if self._raw_codes is None else "exact"

    def _check_compatible(self, other: GroupStats) -> None:
        mine = (self.key_names, self.eps, self.quantiles, self.quantile_mode,
                self.exact_limit, self.rel_err, self.weighted, self.confidence,
                self.calibration and self.calibration.n_bins, self.bootstrap and self.bootstrap.n)
        theirs = (other.key_names, other.eps, other.quantiles, other.quantile_mode,
                  other.exact_limit, other.rel_err, other.weighted, other.confidence,
                  other.calibration and other.calibration.n_bins,
                  other.bootstrap and other.bootstrap.n)
        if mine != theirs:
            raise ValueError(f"cannot merge GroupStats with different settings: {mine} vs {theirs}")

    def _drop_raw_if_over_limit(self) -> None:
        if self.quantile_mode == "auto" and self.n_rows > self.exact_limit:
            self._raw_codes = None
            self._raw_loss = None

    def update(
        self,
        keys: Sequence[pa.Array | pa.ChunkedArray],
        loss: np.ndarray,
        clipped_low: np.ndarray,
        correct: np.ndarray,
        weight: np.ndarray | None = None,
        bins: np.ndarray | None = None,
        *,
        clipped_high: np.ndarray | None = None,
        calibration: CalibrationBatch | None = None,
        boot_weights: np.ndarray | None = None,
    ) -> None:
        """Add one batch.

        ``keys``: one Arrow array per key column; ``loss`` (finite, float, nats),
        ``clipped_low`` / ``clipped_high`` (rows whose probability was raised to eps /
        lowered to 1 - eps; ``clipped_high`` defaults to none) and ``correct`` (bool or
        0/1) and, when ``weighted``,
        ``weight`` are row-aligned numpy arrays.  ``weight`` is ignored when the
        accumulator is not weighted.  A zero-length batch is a no-op.  ``bins``
        may pass ``self.hist.bin_index(loss)`` precomputed, so that several groupings
        of one batch share that pass. ``calibration`` (per-row confidence and its bin, Brier
        score and entropy: :class:`~evalkit.aggregate.calibration.CalibrationBatch`) is
        required when the accumulator keeps calibration bins; ``boot_weights`` ((n, B)
        Poisson weights, :func:`evalkit.inference.poisson_weights`) when it keeps a
        bootstrap.
        """
        loss, low, high, correct, weight = self._check_batch(
            loss, clipped_low, clipped_high, correct, weight)
        n = len(loss)
        if n == 0:
            return
        local, slots = self._index.encode(keys, n)
        self._ensure(len(self._index))
        k = len(slots)
        present = None
        if local is None:
            batch = self._batch_moments_one_group(loss, low, high, correct, weight)
        else:
            batch = self._batch_moments(local, k, loss, low, high, correct, weight)
            present = batch["count"] > 0
            if present.all():
                present = None
            else:
                # Dictionary-derived codes can name groups absent from this batch.
                slots = slots[present]
                batch = {name: v[present] for name, v in batch.items()}
        self._combine(slots, batch)
        self._add_to_histograms(local, k, slots, batch["count"], loss, bins)
        if self.calibration is not None:
            if calibration is None:
                raise ValueError("this GroupStats keeps calibration bins: pass calibration")
            c = calibration
            self.calibration.add(local, k, slots, present, c.bins, c.confidence, correct,
                                 c.brier, c.entropy)
        if self.bootstrap is not None:
            if boot_weights is None:
                raise ValueError("this GroupStats keeps a bootstrap: pass boot_weights")
            row_slots = (np.zeros(n, dtype=np.int64) if local is None
                         else self._slot_per_row(local, k, slots, batch["count"]))
            self.bootstrap.add(row_slots, boot_weights, loss, weight if self.weighted else None)
        self.n_rows += n
        self._drop_raw_if_over_limit()
        if self._raw_codes is not None:
            if local is None:
                codes = np.zeros(n, dtype=np.int32)
            else:
                codes = self._slot_per_row(local, k, slots, batch["count"]).astype(np.int32)
            self._raw_codes.append(codes)
            self._raw_loss.append(loss.copy())

    def _check_batch(self, loss: np.ndarray, clipped_low: np.ndarray,
                     clipped_high: np.ndarray | None, correct: np.ndarray,
                     weight: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """The batch's arrays as flat numpy arrays of one length (ValueError otherwise)."""
        loss = np.asarray(loss, dtype=np.float64).reshape(-1)
        n = len(loss)
        low = np.asarray(clipped_low).reshape(-1)
        high = (np.zeros(n, dtype=bool) if clipped_high is None
                else np.asarray(clipped_high).reshape(-1))
        correct = np.asarray(correct).reshape(-1)
        if len(low) != n or len(high) != n or len(correct) != n:
            raise ValueError("loss, clipped_low, clipped_high and correct must have the same length")
        if self.weighted:
            if weight is None:
                raise ValueError("weighted GroupStats needs weight")
            weight = np.asarray(weight, dtype=np.float64).reshape(-1)
            if len(weight) != n:
                raise ValueError("weight must have the same length as loss")
        return loss, low, high, correct, weight

    def _batch_moments_one_group(self, loss: np.ndarray, low: np.ndarray, high: np.ndarray,
                                 correct: np.ndarray, weight: np.ndarray | None
                                 ) -> dict[str, np.ndarray]:
        """The batch's statistics when every row is in one group (arrays of length 1);
        ``mean`` is the batch mean and ``m2`` the batch's sum of squared deviations."""
        n = len(loss)
        s = loss.sum()
        dev = loss - s / n
        out = {
            "count": np.array([n], dtype=np.int64),
            "sum": np.array([s]),
            "mean": np.array([s / n]),
            "m2": np.array([np.einsum("i,i->", dev, dev)]),  # einsum: no BLAS threads
            "min": np.array([loss.min()]),
            "max": np.array([loss.max()]),
            "clipped_low": np.array([np.count_nonzero(low)], dtype=np.int64),
            "clipped_high": np.array([np.count_nonzero(high)], dtype=np.int64),
            "correct": np.array([np.count_nonzero(correct)], dtype=np.int64),
        }
        if self.weighted:
            e = np.frexp(weight.max())[1]
            w = np.ldexp(weight, -e)
            out["weight_sum"] = np.array([w.sum()])
            out["wloss_sum"] = np.array([np.einsum("i,i->", w, loss)])
            out["weight_exp"] = np.array([e], dtype=np.int64)
            # Moments of the scaled weights (see _add_weight_moments).
            ws = w.sum()
            wmean = np.einsum("i,i->", w, loss) / ws if ws > 0 else 0.0
            wdev = loss - wmean
            out["wsum"] = np.array([ws])
            with np.errstate(under="ignore"):
                out["weight_sq_sum"] = np.array([np.einsum("i,i->", w, w)])
            out["wmean"] = np.array([wmean])
            out["wm2"] = np.array([np.einsum("i,i,i->", w, wdev, wdev)])
        return out

    def _batch_moments(self, local: np.ndarray, k: int, loss: np.ndarray, low: np.ndarray,
                       high: np.ndarray, correct: np.ndarray, weight: np.ndarray | None
                       ) -> dict[str, np.ndarray]:
        """The batch's statistics per batch-local group ``0..k-1`` (groups with no row have
        count 0); same fields as :meth:`_batch_moments_one_group`."""
        # One integer bincount over (group, low, high, correct) gives the count and the
        # three flag counts: a quarter of the passes of four separate bincounts. The flags
        # are combined as bytes, then joined to the group code in place (two int64 passes,
        # not seven).
        if 8 * k > len(local):
            # More flag cells than rows (200k users): the 8k-cell table is mostly zeros and
            # scattered into at random; a bincount per flag over its rows is 2.5x faster.
            cnt = np.bincount(local, minlength=k)
            flag_counts = [np.bincount(local[f.astype(bool, copy=False)], minlength=k)
                           for f in (low, high, correct)]
        else:
            flags = _flag_bits(low, 4)
            flags |= _flag_bits(high, 2)
            flags |= _flag_bits(correct, 1)
            code = local << 3
            code |= flags
            cc = np.bincount(code, minlength=8 * k).reshape(k, 8)
            cnt = cc.sum(axis=1)
            flag_counts = [cc[:, 4:].sum(axis=1), cc[:, [2, 3, 6, 7]].sum(axis=1), cc[:, 1::2].sum(axis=1)]
        s = np.bincount(local, weights=loss, minlength=k)
        mn = np.full(k, np.inf)
        np.minimum.at(mn, local, loss)
        mx = np.full(k, -np.inf)
        np.maximum.at(mx, local, loss)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_b = np.where(cnt > 0, s / np.maximum(cnt, 1), 0.0)
        # In place: one batch-sized temporary, not three (fresh multi-MB temporaries are
        # page-faulted in when several are alive at once).
        dev = mean_b[local]
        np.subtract(loss, dev, out=dev)
        np.multiply(dev, dev, out=dev)
        out = {
            "count": cnt,
            "sum": s,
            "mean": mean_b,
            "m2": np.bincount(local, weights=dev, minlength=k),
            "min": mn,
            "max": mx,
            "clipped_low": flag_counts[0],
            "clipped_high": flag_counts[1],
            "correct": flag_counts[2],
        }
        if self.weighted:
            gmax = np.zeros(k)
            np.maximum.at(gmax, local, weight)
            e = np.frexp(gmax)[1].astype(np.int64)
            w = np.ldexp(weight, (-e)[local].astype(np.int32))
            out["weight_sum"] = np.bincount(local, weights=w, minlength=k)
            out["wloss_sum"] = np.bincount(local, weights=w * loss, minlength=k)
            out["weight_exp"] = e
            # Moments of the scaled weights (see _add_weight_moments).
            ws = out["weight_sum"]
            with np.errstate(invalid="ignore", divide="ignore"):
                wmean = np.where(ws > 0, out["wloss_sum"] / np.where(ws > 0, ws, 1.0), 0.0)
            wdev = loss - wmean[local]
            out["wsum"] = ws.copy()
            with np.errstate(under="ignore"):
                out["weight_sq_sum"] = np.bincount(local, weights=w * w, minlength=k)
            out["wmean"] = wmean
            out["wm2"] = np.bincount(local, weights=w * wdev * wdev, minlength=k)
        return out

    def _combine(self, slots: np.ndarray, batch: dict[str, np.ndarray]) -> None:
        """Fold a batch's per-group statistics into the global ``slots`` (one per group)."""
        a = self._arrays
        cnt = batch["count"]
        # Chan et al.: combine (n_a, mean_a, M2_a) with the batch's (n_b, mean_b, M2_b).
        na = a["count"][slots]
        tot = na + cnt
        delta = batch["mean"] - a["mean"][slots]
        a["mean"][slots] += delta * (cnt / tot)
        a["m2"][slots] += batch["m2"] + delta * delta * (na * (cnt / tot))
        a["count"][slots] = tot
        a["sum"][slots] += batch["sum"]
        a["min"][slots] = np.minimum(a["min"][slots], batch["min"])
        a["max"][slots] = np.maximum(a["max"][slots], batch["max"])
        a["clipped_low"][slots] += batch["clipped_low"]
        a["clipped_high"][slots] += batch["clipped_high"]
        a["correct"][slots] += batch["correct"]
        if self.weighted:
            _add_weight_moments(a, slots, batch, slice(None))

    def _add_to_histograms(self, local: np.ndarray | None, k: int, slots: np.ndarray,
                           cnt: np.ndarray, loss: np.ndarray, bins: np.ndarray | None) -> None:
        """Count each row into its group's log histogram (:class:`BinCounts`, dense or sparse)."""
        if bins is None:
            bins = self.hist.bin_index(loss)
        if local is not None and len(slots) != k:
            # slots were filtered to present groups; rebuild the full local -> slot table.
            full = np.zeros(k, dtype=np.int64)
            full[np.flatnonzero(np.bincount(local, minlength=k))] = slots
            slots = full
        self._bins.add(local, slots, bins)

    @staticmethod
    def _slot_per_row(local: np.ndarray, k: int, slots: np.ndarray, cnt: np.ndarray) -> np.ndarray:
        if len(slots) == k:
            return slots[local]
        # slots were filtered to present groups; rebuild the full local -> slot table.
        full = np.zeros(k, dtype=np.int64)
        full[np.flatnonzero(np.bincount(local, minlength=k))] = slots
        return full[local]

    def merge(self, other: GroupStats) -> GroupStats:
        """New state equal to having seen both inputs' data; inputs are not modified."""
        self._check_compatible(other)
        new = GroupStats.__new__(GroupStats)
        new.__dict__.update(self.__getstate__())  # trimmed copies of the arrays
        new._index = self._index.copy()
        new._bins = self._bins.copy()
        remap = new._index.merge_from(other._index)
        new._ensure(len(new._index))
        src = np.flatnonzero(other._arrays["count"][:other.n_groups] > 0)
        new._absorb(other, src, remap[src])
        new._bins.merge_from(other._bins, remap)
        new.n_rows = self.n_rows + other.n_rows
        if new._raw_codes is not None and other._raw_codes is not None:
            new._raw_codes = list(new._raw_codes) + [
                remap[c].astype(np.int32) for c in other._raw_codes
            ]
            new._raw_loss = list(new._raw_loss) + list(other._raw_loss)
        else:
            new._raw_codes = None
            new._raw_loss = None
        new._drop_raw_if_over_limit()
        return new

    def _absorb(self, other: GroupStats, src: np.ndarray, dst: np.ndarray,
                bootstrap: bool = True) -> None:
        """Fold ``other``'s groups ``src`` into this state's slots ``dst`` (distinct slots,
        already allocated): every per-group field and the calibration / bootstrap sums
        (the latter unless ``bootstrap`` is False: the caller absorbs them at once);
        not the histogram counts, raw values or key index (the callers handle those)."""
        b = other._arrays
        a = self._arrays
        na = a["count"][dst]
        nb_ = b["count"][src]
        tot = na + nb_
        delta = b["mean"][src] - a["mean"][dst]
        a["mean"][dst] += delta * (nb_ / tot)
        a["m2"][dst] += b["m2"][src] + delta * delta * (na * (nb_ / tot))
        a["count"][dst] = tot
        a["min"][dst] = np.minimum(a["min"][dst], b["min"][src])
        a["max"][dst] = np.maximum(a["max"][dst], b["max"][src])
        for name in ("sum", "clipped_low", "clipped_high", "correct"):
            a[name][dst] += b[name][src]
        _add_weight_moments(a, dst, b, src)
        if self.calibration is not None:
            self.calibration.absorb(other.calibration, src, dst)
        if bootstrap and self.bootstrap is not None:
            self.bootstrap.absorb(other.bootstrap, src, dst)

    def project(self, key_names: Sequence[str]) -> GroupStats:
        """The statistics of the coarser grouping by ``key_names`` (a subset of this state's
        key columns, any order; empty: one group of everything), derived from this state.

        Each new group combines the groups that share its key values: counts, flags, sums,
        calibration and bootstrap sums and histogram counts add exactly; mean and M2 combine
        by Chan et al.'s formula (the same as :meth:`merge`, so the result equals direct
        accumulation to rounding, about 1e-15 relative); min / max and the raw values kept
        for exact quantiles are the same values. The new state can be updated and merged
        like any other. Raises ValueError for a key name this state does not have.
        """
        missing = [k for k in key_names if k not in self.key_names]
        if missing:
            raise ValueError(f"cannot project onto {missing}: keys are {self.key_names}")
        cols = [self.key_names.index(k) for k in key_names]
        new = GroupStats.__new__(GroupStats)
        new.__dict__.update({k: v for k, v in self.__dict__.items()
                             if k not in ("_index", "_arrays", "_bins", "calibration", "bootstrap",
                                          "_raw_codes", "_raw_loss")})
        new._index, remap = self._index.project(cols)
        new._arrays = {}
        new._bins = BinCounts(self.hist.n_bins)
        new.calibration = None if self.calibration is None else CalibrationBins(self.calibration.n_bins)
        new.bootstrap = None if self.bootstrap is None else PoissonBootstrap(self.bootstrap.n)
        new._alloc(0)
        new._ensure(len(new._index))
        src = np.flatnonzero(self._arrays["count"][:self.n_groups] > 0)
        dst = remap[src]
        # Several groups land in one: absorb in rounds, each round at most one per new group.
        order = np.argsort(dst, kind="stable")
        first = np.searchsorted(dst[order], dst[order], side="left")
        rank = np.empty(len(src), dtype=np.int64)
        rank[order] = np.arange(len(src)) - first
        for r in range(int(rank.max()) + 1 if len(rank) else 0):
            sel = rank == r
            new._absorb(self, src[sel], dst[sel], bootstrap=False)
        if new.bootstrap is not None:  # one pass over the kept rows, not one per round
            new.bootstrap.absorb(self.bootstrap, src, dst)
        new._bins.merge_from(self._bins, remap)
        if self._raw_codes is None:
            new._raw_codes = new._raw_loss = None
        else:
            new._raw_codes = [remap[c].astype(np.int32) for c in self._raw_codes]
            new._raw_loss = list(self._raw_loss)
        return new

    def finalize(self) -> pd.DataFrame:
        """One row per group, sorted by key (see module/class docs for columns)."""
        # The histogram's and the calibration cells' rows still waiting are folded on threads
        # of their own while the order and the moments are computed here (each from its own
        # state); the quantiles wait for the histogram's.
        settled = [self._bins.settle(background=True)]
        if self.calibration is not None:
            settled.append(self.calibration.settle(background=True))
        try:
            cols = self._finalize_figures(settled[0])
        finally:
            failed = []
            for wait in settled:  # every thread ended before this returns or raises
                try:
                    wait()
                except BaseException as exc:  # noqa: BLE001 - the first one raised below
                    failed.append(exc)
        if failed:
            raise failed[0]
        if self.calibration is not None:
            cols.update(self.calibration.group_metrics(self._output_order(), cols["count"]))
        cols.update(cols.pop("_weighted", {}))
        return pd.DataFrame({k: (v.reset_index(drop=True) if isinstance(v, pd.Series) else v)
                             for k, v in cols.items()})

    def _finalize_figures(self, histogram_settled: Callable[[], None]) -> dict[str, Any]:
        """:meth:`finalize`'s columns up to the calibration's (the weighted sums, which
        follow those, under ``_weighted``); the histogram counts are read once
        ``histogram_settled()`` has returned."""
        g = self.n_groups
        order = self._output_order()
        a = {k: v[:g][order] for k, v in self._arrays.items()}
        cnt = a["count"]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = a["sum"] / cnt
            std = np.sqrt(np.maximum(a["m2"], 0.0) / (cnt - 1))
            accuracy = a["correct"] / cnt
        std[cnt < 2] = np.nan
        mn = np.where(cnt > 0, a["min"], np.nan)
        mx = np.where(cnt > 0, a["max"], np.nan)
        if self._raw_codes is not None:
            qv = self._exact_quantiles(g)[order]
        else:
            histogram_settled()
            lower, upper, frac = self._bins.quantile_bins(self._arrays["count"][:g], self.quantiles)
            qv = self._sketch_quantiles((lower[order], upper[order], frac[order]), mn, mx)

        cols: dict[str, Any] = self._index.key_frame(order)
        cols["count"] = cnt.astype(np.int64)
        cols["mean"] = mean
        if self.weighted:
            n_eff = effective_n(a["wsum"], a["weight_sq_sum"])
            with np.errstate(invalid="ignore", divide="ignore"):
                # Weighted sample sd with the reliability-weights correction n_eff / (n_eff - 1).
                wsd = np.sqrt(np.maximum(a["wm2"], 0.0) / a["wsum"] * n_eff / (n_eff - 1))
            sem, lo, hi = mean_interval(n_eff, a["wmean"], wsd, self.confidence)
        else:
            sem, lo, hi = mean_interval(cnt, mean, std, self.confidence)
        if self.bootstrap is not None:
            lo, hi = self.bootstrap.interval(order, self.confidence)
            # A group of one row has no interval, as with the t-interval (n < 2 never gates).
            lo[cnt < 2] = hi[cnt < 2] = np.nan
        # The interval holds its own mean: a constant loss must not be excluded by float noise.
        centre = a["wmean"] if self.weighted else mean
        lo, hi = np.minimum(lo, centre), np.maximum(hi, centre)
        cols["sem"] = sem
        cols["ci_low"] = lo
        cols["ci_high"] = hi
        cols["std"] = std
        cols["min"] = mn
        for j, q in enumerate(self.quantiles):
            cols[quantile_column_name(q)] = qv[:, j]
        cols["max"] = mx
        cols["sum"] = a["sum"]
        cols["clipped_low"] = a["clipped_low"].astype(np.int64)
        cols["clipped_high"] = a["clipped_high"].astype(np.int64)
        cols["accuracy"] = accuracy
        if self.weighted:
            # The sums are kept scaled by 2**weight_exp (see _add_scaled): the mean is their
            # ratio, exact whatever the weights' magnitude; the total weight may exceed the
            # float range (inf), the mean never does.
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                cols["_weighted"] = {"weight_sum": np.ldexp(a["weight_sum"], _exp32(a["weight_exp"])),
                                     "weighted_mean": a["wloss_sum"] / a["weight_sum"], "n_eff": n_eff}
        return cols

    def _output_order(self) -> np.ndarray:
        """Slots in output (key) order."""
        g = self.n_groups
        rank = self._index.sort_rank()
        order = np.empty(g, dtype=np.int64)
        order[rank] = np.arange(g)
        return order

    def calibration_table(self) -> pd.DataFrame:
        """Reliability bins per group, groups in :meth:`finalize` order: the key columns,
        then ``bin``, ``bin_low``, ``bin_high``, ``count``, ``mean_confidence``,
        ``accuracy`` (non-empty bins only; see :mod:`evalkit.aggregate.calibration`)."""
        keys, rows = self.calibration_parts()
        cols = rows.columns(0, len(rows))
        gi = cols.pop("group_index")
        b = cols.pop("bin")
        nb = self.calibration.n_bins
        return pd.DataFrame({**{k: v.iloc[gi].reset_index(drop=True) for k, v in keys.items()},
                             "bin": b, "bin_low": b / nb, "bin_high": (b + 1) / nb, **cols})

    def calibration_parts(self) -> tuple[dict[str, pd.Series], BinRows]:
        """:meth:`calibration_table` in two parts, without repeating the keys on every bin row
        (a million groups have ten million bins): the key columns of every group in
        :meth:`finalize` order, and the bin rows (:class:`~evalkit.aggregate.calibration.BinRows`,
        read in ranges; no ``bin_low`` / ``bin_high``), whose ``group_index`` points into them."""
        if self.calibration is None:
            raise ValueError("this GroupStats keeps no calibration bins")
        order = self._output_order()
        return self._index.key_frame(order), self.calibration.bin_rows(order)

    def _exact_quantiles(self, g: int) -> np.ndarray:
        codes = _concat(self._raw_codes, np.int32)
        loss = _concat(self._raw_loss, np.float64)
        cnt = np.bincount(codes, minlength=g).astype(np.int64)
        ends = np.cumsum(cnt)
        start = ends - cnt
        if g * 16 <= len(loss):
            # Radix-sorting the codes then sorting each group's slice is ~4x faster than lexsort.
            v = loss[np.argsort(codes, kind="stable")]
            for s0, e0 in zip(start.tolist(), ends.tolist(), strict=True):
                v[s0:e0].sort()
        else:
            v = loss[np.lexsort((loss, codes))]
        out = np.full((g, len(self.quantiles)), np.nan)
        has = cnt > 0
        n = cnt[has]
        st = start[has]
        nm1 = (n - 1).astype(np.float64)
        for j, q in enumerate(self.quantiles):
            # Mirrors numpy's method="linear" step by step so results are bit-identical.
            virt = nm1 * q
            prev = np.floor(virt)
            t = virt - prev
            above = virt >= nm1
            pi = np.where(above, n - 1, prev.astype(np.int64))
            ni = np.where(above, n - 1, pi + 1)
            lo_v = v[st + pi]
            hi_v = v[st + ni]
            diff = hi_v - lo_v
            res = lo_v + diff * t
            upper = t >= 0.5
            res[upper] = (hi_v - diff * (1 - t))[upper]
            out[has, j] = res
        return out

    def _sketch_quantiles(self, ranks: tuple[np.ndarray, np.ndarray, np.ndarray], mn: np.ndarray,
                          mx: np.ndarray) -> np.ndarray:
        """Each ``(group, quantile)`` by numpy's ``method="linear"``, as the exact path, with
        the values of the two ranks it interpolates between read from the histogram
        (:meth:`BinCounts.quantile_bins`): each bin's representative value, clamped into the
        group's exact ``[min, max]``, then interpolated with numpy's own formula. Both values
        are within ``rel_err`` of the true ones and the weights are ``1 - t`` and ``t``, so
        the result is within ``rel_err`` of the exact quantile; NaN for empty groups."""
        lower, upper, t = ranks
        lo_v = np.minimum(np.maximum(self.hist.bin_value(np.maximum(lower, 0)), mn[:, None]), mx[:, None])
        hi_v = np.minimum(np.maximum(self.hist.bin_value(np.maximum(upper, 0)), mn[:, None]), mx[:, None])
        diff = hi_v - lo_v
        out = np.where(t >= 0.5, hi_v - diff * (1 - t), lo_v + diff * t)
        out[lower < 0] = np.nan
        return out


def _combine_weighted(a: dict[str, np.ndarray], slots: np.ndarray, wb: np.ndarray,
                      mean_b: np.ndarray, m2_b: np.ndarray) -> None:
    """Weighted Chan et al. update of (wsum, wmean, wm2) at ``slots`` with a batch's."""
    wa = a["wsum"][slots]
    tot = wa + wb
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(tot > 0, wb / np.where(tot > 0, tot, 1.0), 0.0)
    delta = mean_b - a["wmean"][slots]
    a["wmean"][slots] += delta * frac
    a["wm2"][slots] += m2_b + delta * delta * wa * frac
    a["wsum"][slots] = tot


def _concat(chunks: list[np.ndarray], dtype: Any) -> np.ndarray:
    if not chunks:
        return np.zeros(0, dtype=dtype)
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks)
