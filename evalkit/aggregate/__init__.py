"""Mergeable per-group accumulators for streaming loss aggregation.

Every accumulator here follows the same life cycle: ``update()`` once per Arrow
record batch, ``merge()`` partial states computed on different batches/workers
(associative and commutative, returns a new object), and ``finalize()`` once
into a :class:`pandas.DataFrame`.  States are plain Python objects holding numpy
arrays, lists, dicts and small Arrow tables, so they pickle cheaply (this is how
the Dask engine ships partition results around).

Per-batch work is vectorised numpy; Python-level loops only run over the
distinct group keys present in a batch, never over rows.

Modules: ``keys`` (group key index shared by GroupStats and TopK), ``sketch``
(LogHistogram quantile sketch, quantile column names), ``groupstats`` (GroupStats),
``topk`` (TopK), ``confusion`` (Confusion).  Import the public names from here.
"""

from __future__ import annotations

from .confusion import Confusion
from .groupstats import GroupStats
from .sketch import LogHistogram, quantile_column_name
from .topk import TopK

__all__ = ["Confusion", "GroupStats", "LogHistogram", "TopK", "quantile_column_name"]
