"""A table given in memory that fails while it is read (a DuckDB relation whose query fails,
an Arrow stream whose producer raises mid-stream) is an InputError naming the input and
what failed, with the original exception as its cause, for the predictions and the labels
alike (tester T24): only EvalkitError subclasses leave the library."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

import evalkit

SCHEMA = pa.schema([("id", pa.int64()), ("prob", pa.float64()), ("label", pa.int64())])


def _failing_batches():
    yield pa.record_batch({"id": [1], "prob": [0.5], "label": [1]}, schema=SCHEMA)
    raise RuntimeError("upstream failed mid-stream")


class _Capsule:
    """A producer speaking only the Arrow PyCapsule stream interface."""

    def __arrow_c_stream__(self, requested_schema=None):
        return pa.RecordBatchReader.from_batches(SCHEMA, _failing_batches()).__arrow_c_stream__(requested_schema)


def _duckdb_relation():
    duckdb = pytest.importorskip("duckdb")
    return duckdb.sql("select i as id, 0.5 as prob, cast(s as integer) as label "
                      "from (values (1, '1'), (2, 'x'), (3, '0')) t(i, s)")


MAKERS = {
    "duckdb": (_duckdb_relation, "DuckDBPyRelation", "Could not convert string 'x'"),
    "reader": (lambda: pa.RecordBatchReader.from_batches(SCHEMA, _failing_batches()), "RecordBatchReader",
               "RuntimeError: upstream failed mid-stream"),
    "capsule": (_Capsule, "_Capsule", "upstream failed mid-stream"),
}


@pytest.mark.parametrize("role", ["predictions", "labels"])
@pytest.mark.parametrize("maker", sorted(MAKERS))
def test_a_table_failing_while_read_is_an_input_error_naming_it(role, maker):
    make, kind, why = MAKERS[maker]
    table = make()
    if role == "predictions":
        call = lambda: evalkit.evaluate(table, plots=False)  # noqa: E731
    else:
        preds = pd.DataFrame({"id": [1, 2, 3], "prob": [0.5, 0.5, 0.5]})
        call = lambda: evalkit.evaluate(preds, labels=table, on="id", plots=False)  # noqa: E731
    with pytest.raises(evalkit.InputError, match=rf"^{role} <{kind}>: reading the table failed: .*{why}") as info:
        call()
    assert info.value.__cause__ is not None  # the producer's exception, for a traceback
    assert "Traceback" not in str(info.value)
