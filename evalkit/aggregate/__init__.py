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
``joint`` (several groupings accumulated as one), ``topk`` (TopK), ``confusion``
(Confusion), ``calibration`` (reliability bins, ECE, Brier), ``bootstrap`` (streaming
Poisson bootstrap), ``slices`` (slice search).  Import the public names
from here.
"""

from __future__ import annotations

from .bootstrap import PoissonBootstrap
from .calibration import CalibrationBatch, CalibrationBins
from .confusion import Confusion
from .groupstats import GroupStats
from .joint import JointStats
from .sketch import LogHistogram, quantile_column_name
from .slices import SliceStats, assess_slices, worst_slices
from .topk import TopK, concat_frames

__all__ = ["CalibrationBatch", "CalibrationBins", "Confusion", "GroupStats", "JointStats", "LogHistogram",
           "PoissonBootstrap", "SliceStats", "TopK", "assess_slices", "concat_frames", "quantile_column_name",
           "worst_slices"]
