"""A DataFrame object column mixing kinds of value that pyarrow's conversion silently makes
one type (text and bytes: 'a' = b'a'; a naive and a zoned time: the naive one read as UTC;
dates and times: the time of day dropped) is refused naming the column and a row of each
kind when the run reads it (tester T14), as int / str mixes are; pandas keeps such values
apart, and the README says a naive time never matches a zoned one. An unread column is left
out, as every column Arrow cannot read faithfully."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

import evalkit
from evalkit.errors import ColumnTypeError

N = 12
UTC = datetime(2020, 1, 1, tzinfo=timezone(timedelta(0)))
NAIVE = datetime(2020, 1, 1)

MIXES = {
    "str and bytes": ([b"a", "a", b"b"] * 4, r"mixes text \(str\) and bytes: 2 row\(s\), e.g. row 0: b'a'; row 1: 'a'"),
    "naive and zoned": ([UTC, NAIVE] * 6, r"mixes times without a time zone and times with a time zone: "
                                          r"2 row\(s\), e.g. row 0: '2020-01-01T00:00:00\+00:00'; row 1"),
    "pandas timestamps": ([pd.Timestamp(NAIVE), pd.Timestamp(UTC)] * 6, "mixes times without a time zone and times with"),
    "dates and times": ([date(2020, 1, 1), datetime(2020, 1, 1, 5)] * 6, "mixes dates and times without a time zone"),
}


def _base() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    q = rng.uniform(0.1, 0.9, N)
    return pd.DataFrame({"prob": q, "label": (rng.uniform(size=N) < q).astype(int)})


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_a_read_column_mixing_kinds_is_refused_naming_rows(mix):
    values, message = MIXES[mix]
    df = _base().assign(g=pd.Series(values, dtype=object))
    with pytest.raises(ColumnTypeError, match=rf"<predictions DataFrame>: column 'g' {message}"):
        evalkit.evaluate(df, by=["g"], plots=False)
    labels = df[["g"]].assign(id=range(N), label=df["label"])
    with pytest.raises(ColumnTypeError, match=r"<labels DataFrame>: column 'g' mixes"):
        evalkit.evaluate(df[["prob"]].assign(id=range(N)), labels=labels, on="id", by=["g"], plots=False)


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_an_unread_column_mixing_kinds_is_left_out(mix):
    values, _ = MIXES[mix]
    df = _base()
    r = evalkit.evaluate(df.assign(notes=pd.Series(values, dtype=object)), plots=False)
    assert r.overall["mean"] == evalkit.evaluate(df, plots=False).overall["mean"]


@pytest.mark.parametrize("values", [["a", "b", "c"] * 4, [b"a", b"b", b"c"] * 4, [UTC] * 12, [NAIVE] * 12,
                                    [date(2020, 1, 1)] * 12, [UTC, UTC.astimezone(timezone(timedelta(hours=2)))] * 6])
def test_a_column_of_one_kind_is_grouped(values):
    df = _base().assign(g=pd.Series(values, dtype=object))
    r = evalkit.evaluate(df, by=["g"], plots=False)
    assert r.groups["g"]["count"].sum() == N
