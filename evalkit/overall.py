"""The overall line of an evaluation as a typed record: counts as ``int``, figures as ``float``.

A pandas Series holds one dtype, so the overall line was either an ``object`` Series or
counts as floats (``150.0``). :class:`Overall` keeps each statistic's own type, reads like
a mapping (``overall["mean"]``, ``"ci_low" in overall``, ``dict(overall)``) and like a
record (``overall.mean``, ``overall.count``), and converts to pandas on request.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class Overall(Mapping[str, "int | float"]):
    """The overall statistics of a run (see :attr:`evalkit.EvalResult.overall`).

    Counts (``count``, ``clipped_low``, ``clipped_high``) are ``int``; every other figure
    (``mean``, ``std``, quantiles, ``sum``, ``accuracy``, interval bounds, calibration
    figures, weighted figures) is ``float``, losses in nats. A figure that is undefined (the
    interval of a single row) is ``nan``.

    >>> o = Overall({"count": 3, "mean": 0.385, "clipped_low": 0})
    >>> o["count"], o.mean, "mean" in o
    (3, 0.385, True)
    >>> o
    Overall(count=3, mean=0.385, clipped_low=0)
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values: dict[str, int | float] = {k: _typed(v) for k, v in values.items()}

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Overall:
        """The first row of a one-row statistics frame, each column typed by its dtype
        (integer columns ``int``, the others ``float``)."""
        import pandas as pd

        row = {}
        for name in frame.columns:
            value = frame[name].iloc[0]
            if pd.api.types.is_integer_dtype(frame[name].dtype) or pd.api.types.is_bool_dtype(frame[name].dtype):
                row[str(name)] = int(value)
            else:
                row[str(name)] = float(value)
        return cls(row)

    def __getitem__(self, name: str) -> int | float:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> int | float:
        if name.startswith("_"):  # never a statistic; also keeps unpickling from recursing
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no overall statistic {name!r}; statistics are: {', '.join(self._values)}") from None

    def __getstate__(self) -> dict[str, int | float]:
        return self._values

    def __setstate__(self, state: dict[str, int | float]) -> None:
        self._values = state

    @property
    def index(self) -> list[str]:
        """The statistic names in order (as a Series' index reads)."""
        return list(self._values)

    def to_series(self) -> pd.Series:
        """A float64 pandas Series named ``overall`` (counts as floats, exact below 2**53)."""
        import pandas as pd

        return pd.Series({k: float(v) for k, v in self._values.items()}, name="overall", dtype="float64")

    def to_frame(self) -> pd.DataFrame:
        """A one-row DataFrame: counts int64, figures float64."""
        import pandas as pd

        return pd.DataFrame({k: [v] for k, v in self._values.items()})

    def __repr__(self) -> str:
        return "Overall(" + ", ".join(f"{k}={v!r}" for k, v in self._values.items()) + ")"


def _typed(value: Any) -> int | float:
    """A Python ``int`` for integer values (numpy integers, bools), else ``float``."""
    import numbers

    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)
