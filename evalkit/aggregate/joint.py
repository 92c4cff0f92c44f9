"""Several groupings accumulated as one: a GroupStats over the union of their key columns.

A report groups the same rows several ways (overall, by class, by split, ``--by``...). While
the combinations of key values are few (10 classes x 3 splits = 30 cells), one
:class:`~evalkit.aggregate.GroupStats` over the joint key ``(class, split, ...)`` does the
per-row work once per batch instead of once per grouping; each grouping is derived from the
joint cells when asked (:meth:`GroupStats.project`: counts, sums, histogram, calibration and
bootstrap sums add exactly; mean and M2 combine by Chan et al.'s formula, min / max and
exact-quantile values are the same values). The result equals separate accumulation to
rounding (about 1e-15 relative on sums and moments; counts, quantile bins, min and max
identical).

When the joint cells grow beyond :data:`JOINT_MAX_GROUPS` (a high-cardinality ``--by user``
crossed with the classes), the joint state is split once into one GroupStats per grouping
(by projection) and the groupings are updated separately from then on, so neither memory
nor per-batch time ever exceeds what separate accumulation costs. Merge is associative in
either form: two joint states merge as one GroupStats; a split state splits its partner first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .groupstats import GroupStats
from .sketch import BinCounts, LogHistogram

#: Most joint groups (key combinations) kept in one GroupStats: the joint histogram counts
#: stay a dense table (:attr:`BinCounts.DENSE_CELLS` cells) up to here, so one joint update
#: is never slower than the separate ones it replaces.
JOINT_MAX_GROUPS = max(1, BinCounts.DENSE_CELLS // LogHistogram.for_eps(1e-7).n_bins)


def _distinct_bound(col: Any) -> int:
    """An upper bound of the distinct values (null counted) of one key column of a batch:
    its dictionary's length for dictionary arrays, else a hash count."""
    if isinstance(col, pa.ChunkedArray):
        if pa.types.is_dictionary(col.type):
            return sum(len(c.dictionary) for c in col.chunks) + (1 if col.null_count else 0)
        col = col.combine_chunks()
    if not isinstance(col, pa.Array):
        col = pa.array(col)
    if pa.types.is_dictionary(col.type):
        return len(col.dictionary) + (1 if col.null_count else 0)
    if pa.types.is_null(col.type):  # an all-null column (count_distinct has no kernel for it)
        return 1 if len(col) else 0
    return int(pc.count_distinct(col, mode="all").as_py())


class JointStats:
    """The statistics of several groupings, accumulated jointly while their key combinations
    are few (see the module docstring).

    ``groupings`` maps each grouping's name to its key columns; ``settings`` are the
    keyword arguments of every :class:`GroupStats` (eps, quantiles, calibration_bins, ...);
    ``max_groups`` the joint limit (0: never joint). :meth:`stats` gives one GroupStats per
    grouping, equal to separate accumulation.
    """

    def __init__(self, groupings: Mapping[str, Sequence[str]], settings: Mapping[str, Any] | None = None,
                 max_groups: int = JOINT_MAX_GROUPS):
        self.groupings = {name: tuple(cols) for name, cols in groupings.items()}
        self.settings = dict(settings or {})
        self.max_groups = int(max_groups)
        self.columns = tuple(dict.fromkeys(c for cols in self.groupings.values() for c in cols))
        self.joint: GroupStats | None = None
        self.parts: dict[str, GroupStats] | None = None
        if len(self.groupings) > 1 and self.max_groups > 0:
            self.joint = GroupStats(self.columns, **self.settings)
        else:
            self.parts = {name: GroupStats(cols, **self.settings)
                          for name, cols in self.groupings.items()}
        self._stats: dict[str, GroupStats] | None = None

    @property
    def is_joint(self) -> bool:
        """Whether the groupings are still accumulated as one joint state."""
        return self.joint is not None

    def any_stats(self) -> GroupStats:
        """One of the underlying accumulators (they share settings and row count)."""
        return self.joint if self.joint is not None else next(iter(self.parts.values()))  # type: ignore[union-attr]

    def update(self, keys: Mapping[str, Any], loss: np.ndarray, *args: Any, **kwargs: Any) -> None:
        """Add one batch: ``keys`` maps every key column to its Arrow array; the other
        arguments are those of :meth:`GroupStats.update` (after ``keys``)."""
        self._stats = None
        if self.joint is not None:
            bound = math.prod(_distinct_bound(keys[c]) for c in self.columns)
            if bound > self.max_groups:
                self._split()
        if self.joint is not None:
            self.joint.update([keys[c] for c in self.columns], loss, *args, **kwargs)
            if self.joint.n_groups > self.max_groups:
                self._split()
            return
        assert self.parts is not None
        for name, cols in self.groupings.items():
            self.parts[name].update([keys[c] for c in cols], loss, *args, **kwargs)

    def _split(self) -> None:
        """From now on one GroupStats per grouping (each the projection of the joint state)."""
        assert self.joint is not None
        self.parts = self._projected()
        self.joint = None

    def _projected(self) -> dict[str, GroupStats]:
        joint = self.joint
        assert joint is not None
        return {name: joint if cols == joint.key_names else joint.project(cols)
                for name, cols in self.groupings.items()}

    def stats(self) -> dict[str, GroupStats]:
        """One GroupStats per grouping, in the order the groupings were given (derived from
        the joint state when there is one; do not update them)."""
        if self._stats is None:
            self._stats = self._projected() if self.joint is not None else dict(self.parts)  # type: ignore[arg-type]
        return self._stats

    def merge(self, other: JointStats) -> JointStats:
        """New state equal to having seen both inputs' data (associative); inputs unchanged."""
        if self.groupings != other.groupings:
            raise ValueError(f"cannot merge different groupings: {self.groupings} vs {other.groupings}")
        new = JointStats.__new__(JointStats)
        new.groupings, new.settings, new.max_groups = self.groupings, self.settings, self.max_groups
        new.columns = self.columns
        new._stats = None
        if self.joint is not None and other.joint is not None:
            new.joint, new.parts = self.joint.merge(other.joint), None
            if new.joint.n_groups > new.max_groups:
                new._split()
        else:
            mine, theirs = self.stats(), other.stats()
            new.joint = None
            new.parts = {name: mine[name].merge(theirs[name]) for name in self.groupings}
        return new

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stats"] = None
        return state
