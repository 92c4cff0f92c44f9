"""evalkit: evaluate classification models from their saved predictions.

Clipped categorical cross-entropy per row, aggregated overall, by true class, by split and
by any slice columns; reports as Parquet, Markdown and JSON.

>>> import evalkit
>>> evalkit.cross_entropy([[0.7, 0.1, 0.2], [0.1, 0.5, 0.4], [0.02, 0.9, 0.08]], [0, 1, 1]).mean()
np.float64(0.38506088005216804)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# Heavy modules (pandas, pyarrow) load on first use, so `evalkit --help` starts fast.
_LAZY = {
    "EvalResult": "api",
    "evaluate": "api",
    "run": "api",
    "EvalConfig": "config",
    "cross_entropy": "loss",
    "DEFAULT_EPS": "loss",
    "compare": "comparison",
    "CompareResult": "comparison",
    "history": "trend",
    "HistoryResult": "trend",
}
_ERRORS = (
    "ClassesError", "ClusterError", "ColumnTypeError", "CompareError", "ConfigError", "CorruptFileError", "EmptyInputError",
    "EvalkitError", "EvalkitWarning", "InputError", "InvalidProbabilityError", "JoinError", "LabelError",
    "LayoutError", "ListLengthError", "MissingColumnError", "MissingDependencyError",
    "OutputError", "OutputExistsError", "PartitionConflictError", "ProbabilitySumError", "ReportError",
    "SchemaDriftError", "TargetSumError", "UsageError",
)
_LAZY.update({name: "errors" for name in _ERRORS})

if TYPE_CHECKING:
    from .api import EvalResult, evaluate, run
    from .comparison import CompareResult, compare
    from .config import EvalConfig
    from .errors import (
        ClassesError,
        ClusterError,
        ColumnTypeError,
        CompareError,
        ConfigError,
        CorruptFileError,
        EmptyInputError,
        EvalkitError,
        EvalkitWarning,
        InputError,
        InvalidProbabilityError,
        JoinError,
        LabelError,
        LayoutError,
        ListLengthError,
        MissingColumnError,
        MissingDependencyError,
        OutputError,
        OutputExistsError,
        PartitionConflictError,
        ProbabilitySumError,
        ReportError,
        SchemaDriftError,
        TargetSumError,
        UsageError,
    )
    from .loss import DEFAULT_EPS, cross_entropy
    from .trend import HistoryResult, history


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evalkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | {"__version__"})


__all__ = [
    "DEFAULT_EPS",
    "CompareResult",
    "EvalConfig",
    "EvalResult",
    "HistoryResult",
    "__version__",
    "compare",
    "history",
    "cross_entropy",
    "evaluate",
    "run",
    "ClassesError",
    "ClusterError",
    "ColumnTypeError",
    "CompareError",
    "ConfigError",
    "CorruptFileError",
    "EmptyInputError",
    "EvalkitError",
    "EvalkitWarning",
    "InputError",
    "InvalidProbabilityError",
    "JoinError",
    "LabelError",
    "LayoutError",
    "ListLengthError",
    "MissingColumnError",
    "MissingDependencyError",
    "OutputError",
    "OutputExistsError",
    "PartitionConflictError",
    "ProbabilitySumError",
    "ReportError",
    "SchemaDriftError",
    "TargetSumError",
    "UsageError",
]
