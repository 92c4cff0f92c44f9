"""Bad input gets a clear error, never a wrong number: one table row per case.

Each case builds a small input in ``tmp_path`` and is run twice: through the Python API
(``evalkit.evaluate`` must raise the specific :class:`~evalkit.errors.EvalkitError` subclass
with a message naming the file, the column and offending rows with their values) and through
the CLI (documented exit code, ``error:`` line naming the same things, no traceback, no
report and no temporary directory left behind).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit import errors as E
from evalkit.cli import main
from evalkit.config import EvalConfig

# -- builders --------------------------------------------------------------------------

P = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6],
              [0.5, 0.25, 0.25], [0.05, 0.9, 0.05], [0.3, 0.3, 0.4]])
Y = np.array([0, 1, 2, 0, 1, 2])


def wide(p: np.ndarray = P, y: Any = Y, *, prefix: str = "prob_", **extra: Any) -> dict[str, Any]:
    """Columns of a 3-class wide table: id, prob_a..c, label (overridable)."""
    cols: dict[str, Any] = {"id": np.arange(len(p))}
    for j, c in enumerate("abc"):
        cols[f"{prefix}{c}"] = pa.array(p[:, j])
    if y is not None:
        cols["label"] = y
    cols.update(extra)
    return cols


def write(tmp: Path, name: str, cols: dict[str, Any] | pa.Table, **kw: Any) -> str:
    table = cols if isinstance(cols, pa.Table) else pa.table(cols)
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kw)
    return str(path)


def with_value(p: np.ndarray, row: int, col: int, value: float) -> np.ndarray:
    p = p.copy()
    p[row, col] = value
    return p


@dataclass
class Case:
    """One bad-input case: how to build it, and what must come out."""

    name: str
    build: Callable[[Path], tuple[list[str], dict[str, Any], list[str]]]
    """tmp_path -> (inputs, evaluate() keyword arguments, extra CLI arguments)."""
    error: type[E.EvalkitError]
    must_say: list[str] = field(default_factory=list)
    """Substrings of the message: file, column, rows and values."""
    exit_code: int = E.EXIT_INPUT


def _one(name: str, cols: Callable[[], dict[str, Any] | pa.Table], kwargs: dict[str, Any] | None = None,
         cli: list[str] | None = None) -> Callable[[Path], tuple[list[str], dict[str, Any], list[str]]]:
    def build(tmp: Path) -> tuple[list[str], dict[str, Any], list[str]]:
        return [write(tmp, name, cols())], dict(kwargs or {}), list(cli or [])
    return build


def _drift(kind: str) -> Callable[[Path], tuple[list[str], dict[str, Any], list[str]]]:
    def build(tmp: Path) -> tuple[list[str], dict[str, Any], list[str]]:
        write(tmp, "ds/part-0.parquet", wide())
        other = wide()
        if kind in ("missing", "missing_in_first"):
            del other["prob_c"]
        else:
            # A real conflict (float32 vs float64 is unified losslessly): text vs number.
            other["prob_b"] = pa.array([str(v) for v in P[:, 1]])
        write(tmp, "ds/part-1.parquet", other)
        if kind == "missing_in_first":  # Arrow reads the schema of the first file only
            write(tmp, "ds/part-1.parquet", wide())
            write(tmp, "ds/part-0.parquet", other)
        return [str(tmp / "ds")], {}, []
    return build


def _corrupt(how: str) -> Callable[[Path], tuple[list[str], dict[str, Any], list[str]]]:
    def build(tmp: Path) -> tuple[list[str], dict[str, Any], list[str]]:
        good = Path(write(tmp, "good.parquet", wide()))
        raw = good.read_bytes()
        bad = tmp / "bad.parquet"
        if how == "truncated":
            bad.write_bytes(raw[: len(raw) // 2])
        elif how == "not_parquet":
            bad.write_text("id,prob_a,prob_b,prob_c,label\n0,0.7,0.2,0.1,0\n")
        elif how == "empty_file":
            bad.write_bytes(b"")
        return [str(bad)], {}, []
    return build


def _corrupt_pages(tmp: Path) -> tuple[list[str], dict[str, Any], list[str]]:
    """Two files; the second has a valid footer but garbage compressed pages."""
    rng = np.random.default_rng(0)
    n = 4000
    p = rng.dirichlet([1, 1, 1], n)
    cols = wide(p, rng.integers(0, 3, n))
    write(tmp, "ds/a.parquet", cols, compression="zstd")
    b = Path(write(tmp, "ds/b.parquet", cols, compression="zstd"))
    meta = pq.ParquetFile(b).metadata.row_group(0).column(1)  # prob_a
    assert meta.path_in_schema == "prob_a"
    start = meta.data_page_offset
    raw = bytearray(b.read_bytes())
    for i in range(start + 16, start + meta.total_compressed_size - 16, 5):
        raw[i] ^= 0x55
    b.write_bytes(bytes(raw))
    return [str(tmp / "ds")], {}, []


def _bit_flip(tmp: Path) -> tuple[list[str], dict[str, Any], list[str]]:
    """One flipped bit in a data page of a file written with page checksums (as Spark does)."""
    path = Path(write(tmp, "flipped.parquet", wide(), write_page_checksum=True, compression="none"))
    meta = pq.ParquetFile(path).metadata.row_group(0).column(2)  # prob_b
    raw = bytearray(path.read_bytes())
    raw[meta.data_page_offset + meta.total_compressed_size - 5] ^= 0x04
    path.write_bytes(bytes(raw))
    return [str(path)], {}, []


def _glob(tmp: Path) -> tuple[list[str], dict[str, Any], list[str]]:
    write(tmp, "preds.parquet", wide())
    return [str(tmp / "nothing-*.parquet")], {}, []


def _join(preds: dict[str, Any], labels: dict[str, Any], policy: str | None = None):  # type: ignore[no-untyped-def]
    def build(tmp: Path) -> tuple[list[str], dict[str, Any], list[str]]:
        lab = write(tmp, "labels.parquet", labels)
        kwargs: dict[str, Any] = {"labels": lab, "on": "id"}
        cli = ["--labels", lab, "--on", "id"]
        if policy:
            kwargs["unmatched"] = policy
            cli += ["--unmatched", policy]
        return [write(tmp, "preds.parquet", preds)], kwargs, cli
    return build


PREDS = {"id": np.arange(6), **{f"prob_{c}": P[:, j] for j, c in enumerate("abc")}}
LABELS = {"id": np.arange(6), "label": Y}


def _with(d: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out = dict(d)
    out.update(kw)
    return out


NAN_P = with_value(with_value(P, 2, 0, np.nan), 4, 1, np.nan)
SOFT_OK = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]

CASES = [
    # -- missing columns (with the closest existing names)
    Case("missing_label", _one("preds.parquet", wide, {"label": "lable"}, ["--label", "lable"]),
         E.MissingColumnError, ["preds.parquet", "label column 'lable'", "did you mean 'label'"]),
    Case("missing_prediction",
         _one("preds.parquet", wide, {"predictions": ["prob_a", "prob_bb", "prob_c"]},
              ["-p", "prob_a", "-p", "prob_bb", "-p", "prob_c"]),
         E.MissingColumnError, ["preds.parquet", "prediction column 'prob_bb'", "did you mean 'prob_b'"]),
    Case("missing_key", _one("preds.parquet", wide, {"keys": ["idd"]}, ["--key", "idd"]),
         E.MissingColumnError, ["preds.parquet", "key column 'idd'", "did you mean 'id'"]),
    Case("missing_group",
         _one("preds.parquet", lambda: wide(region=["EU", "US"] * 3), {"by": "regoin"}, ["--by", "regoin"]),
         E.MissingColumnError, ["preds.parquet", "group column 'regoin'", "did you mean 'region'"]),
    Case("missing_join_key",
         _join(PREDS, LABELS) and (lambda tmp: (
             [write(tmp, "preds.parquet", PREDS)],
             {"labels": write(tmp, "labels.parquet", {"idx": np.arange(6), "label": Y}), "on": "id"},
             ["--labels", str(tmp / "labels.parquet"), "--on", "id"])),
         E.MissingColumnError, ["labels.parquet", "join key column 'id'", "did you mean 'idx'"]),
    # -- wrong dtypes
    Case("string_probabilities",
         _one("preds.parquet", lambda: _with(wide(), prob_a=pa.array([str(v) for v in P[:, 0]]))),
         E.ColumnTypeError, ["preds.parquet", "'prob_a'", "string", "numeric"]),
    Case("string_probabilities_declared",
         _one("preds.parquet", lambda: _with(wide(), prob_a=pa.array([str(v) for v in P[:, 0]])),
              {"prefix": "prob_"}, ["--prefix", "prob_"]),
         E.ColumnTypeError, ["preds.parquet", "'prob_a'", "string"]),
    Case("fractional_float_labels",
         _one("preds.parquet", lambda: wide(y=pa.array([0.0, 1.5, 2.0, 0.0, 1.0, 2.25]))),
         E.LabelError, ["preds.parquet", "column label", "not a whole number", "row 1 (key 1): 1.5",
                        "row 5 (key 5): 2.25"]),
    Case("string_soft_targets",
         _one("preds.parquet", lambda: {"probs": pa.array(P[:3].tolist()),
                                        "label": pa.array([["1", "0", "0"]] * 3)}),
         E.ColumnTypeError, ["preds.parquet", "label column 'label'", "list of string"]),
    Case("string_onehot_targets",
         _one("preds.parquet", lambda: _with(wide(y=None), t_a=["1"] * 6, t_b=["0"] * 6, t_c=["0"] * 6),
              {"targets": ["t_a", "t_b", "t_c"]}, ["--targets", "t_a", "--targets", "t_b", "--targets", "t_c"]),
         E.ColumnTypeError, ["preds.parquet", "target column 't_a'", "string"]),
    # -- bad probability values
    Case("nan_probabilities", _one("preds.parquet", lambda: wide(NAN_P)),
         E.InvalidProbabilityError, ["preds.parquet", "prob_a", "NaN", "2 row(s)", "row 2 (key 2): [nan, 0.2, 0.6]",
                                     "row 4 (key 4): [0.05, nan, 0.05]"]),
    Case("null_probabilities",
         _one("preds.parquet", lambda: _with(wide(), prob_b=pa.array([0.2, None, 0.2, 0.25, 0.9, 0.3]))),
         E.InvalidProbabilityError, ["preds.parquet", "prob_b", "null", "row 1 (key 1)"]),
    Case("inf_probabilities", _one("preds.parquet", lambda: wide(with_value(P, 3, 2, np.inf))),
         E.InvalidProbabilityError, ["preds.parquet", "prob_c", "infinite", "row 3 (key 3): [0.5, 0.25, inf]"]),
    Case("nan_logits", _one("preds.parquet", lambda: wide(with_value(P, 1, 1, np.nan), prefix="logit_")),
         E.InvalidProbabilityError, ["preds.parquet", "logit_b", "NaN or infinite logits", "row 1 (key 1): [0.1, nan, 0.3]"]),
    Case("inf_logits", _one("preds.parquet", lambda: wide(with_value(P, 5, 0, -np.inf), prefix="logit_")),
         E.InvalidProbabilityError, ["preds.parquet", "logit_a", "row 5 (key 5): [-inf, 0.3, 0.4]"]),
    Case("negative_probabilities",
         _one("preds.parquet", lambda: wide(with_value(with_value(P, 2, 0, -0.2), 2, 2, 1.0))),
         E.InvalidProbabilityError, ["preds.parquet", "prob_a", "negative", "row 2 (key 2): [-0.2, 0.2, 1.0]"]),
    Case("probabilities_above_one",
         _one("preds.parquet", lambda: wide(with_value(P, 1, 1, 1.3))),
         E.InvalidProbabilityError, ["preds.parquet", "prob_b", "greater than 1", "row 1 (key 1): [0.1, 1.3, 0.3]"]),
    Case("bad_file_in_a_list", lambda tmp: ([write(tmp, "a.parquet", wide()), str(_corrupt("not_parquet")(tmp)[0][0])],
                                            {}, []),
         E.CorruptFileError, ["bad.parquet: not a Parquet file"]),
    Case("binary_probability_above_one",
         _one("preds.parquet", lambda: {"id": np.arange(4), "prob": [0.2, 1.5, 0.7, 0.1], "label": [0, 1, 1, 0]}),
         E.InvalidProbabilityError, ["preds.parquet", "column prob", "greater than 1", "row 1 (key 1): 1.5"]),
    Case("probability_rows_off_one",
         _one("preds.parquet", lambda: wide(with_value(with_value(P, 0, 0, 0.5), 3, 1, 0.3))),
         E.ProbabilitySumError, ["preds.parquet", "prob_a", "do not sum to 1 within 0.001",
                                 E.option("renormalize", True),
                                 "row 0 (key 0): 0.79999", "row 3 (key 3): 1.05"]),
    Case("probability_rows_off_one_tight_tol",
         _one("preds.parquet", lambda: wide(with_value(P, 4, 0, 0.051)), {"sum_tol": 1e-4}, ["--sum-tol", "1e-4"]),
         E.ProbabilitySumError, ["preds.parquet", "within 0.0001", "row 4 (key 4): 1.00"]),
    # -- list columns
    Case("list_lengths_differ_between_rows",
         _one("preds.parquet", lambda: {"probs": pa.array([[0.5, 0.5], [0.2, 0.3, 0.5], [0.1, 0.9], [1.0]]),
                                        "label": [0, 1, 1, 0]}),
         E.ListLengthError, ["preds.parquet", "column probs", "differs from the 2 classes",
                             "row 1: 3", "row 3: 1"]),
    Case("list_length_differs_from_classes",
         _one("preds.parquet", lambda: {"probs": pa.array([[0.5, 0.5], [0.2, 0.8]]), "label": [0, 1]},
              {"classes": ["a", "b", "c"]}, ["--classes", "a,b,c"]),
         E.ListLengthError, ["preds.parquet", "'probs'", "2 values per row", "3 classes"]),
    Case("fixed_size_list_differs_from_classes",
         _one("preds.parquet", lambda: {"probs": pa.array([[0.5, 0.5], [0.2, 0.8]], pa.list_(pa.float64(), 2)),
                                        "label": pa.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                                                          pa.list_(pa.float64(), 3))}),
         E.ListLengthError, ["preds.parquet", "label column 'label'", "3 targets", "2 classes"]),
    Case("soft_target_list_wrong_length",
         _one("preds.parquet", lambda: {"probs": pa.array(P[:3].tolist()),
                                        "label": pa.array([[1.0, 0.0, 0.0], [0.0, 1.0], [0.0, 0.0, 1.0]])}),
         E.ListLengthError, ["preds.parquet", "column label", "target list length", "row 1: 2"]),
    # -- labels
    Case("label_out_of_range", _one("preds.parquet", lambda: wide(y=[0, 1, 5, 0, -1, 2])),
         E.LabelError, ["preds.parquet", "column label", "out of range", "row 2 (key 2): 5", "row 4 (key 4): -1"]),
    Case("label_out_of_range_huge", _one("preds.parquet", lambda: wide(y=pa.array([0, 1, 2, 0, 1, 2**63 + 1], pa.uint64()))),
         E.LabelError, ["preds.parquet", "column label", "row 5 (key 5): 9223372036854775809"]),
    Case("unknown_string_label", _one("preds.parquet", lambda: wide(y=["a", "b", "zebra", "a", "b", "c"])),
         E.LabelError, ["preds.parquet", "column label", "unknown class name", "row 2 (key 2): 'zebra'"]),
    Case("null_label", _one("preds.parquet", lambda: wide(y=pa.array([0, 1, None, 0, None, 2]))),
         E.LabelError, ["preds.parquet", "column label", "null label", "2 row(s)", "row 2 (key 2)", "row 4 (key 4)"]),
    Case("null_string_label", _one("preds.parquet", lambda: wide(y=["a", None, "c", "a", "b", "c"])),
         E.LabelError, ["preds.parquet", "column label", "null label", "row 1 (key 1)"]),
    # -- targets
    Case("onehot_rows_off_one",
         _one("preds.parquet", lambda: _with(wide(y=None), target_a=[1.0, 0, 0, 1, 0, 0.5],
                                             target_b=[0.0, 1, 0, 0, 1, 0.0], target_c=[0.0, 0, 1, 0, 1, 0.0])),
         E.TargetSumError, ["preds.parquet", "column target_a, target_b, target_c", "do not sum to 1", "row 4 (key 4): 2.0",
                            "row 5 (key 5): 0.5"]),
    Case("soft_rows_off_one",
         _one("preds.parquet", lambda: {"probs": pa.array(P[:3].tolist()),
                                        "label": pa.array([[1.0, 0.0, 0.0], [0.5, 0.6, 0.0], [0.0, 0.0, 1.0]])}),
         E.TargetSumError, ["preds.parquet", "column label", "do not sum to 1", "row 1: 1.1"]),
    Case("negative_soft_targets",
         _one("preds.parquet", lambda: {"probs": pa.array(P[:3].tolist()),
                                        "label": pa.array([[1.0, 0.0, 0.0], [1.5, -0.5, 0.0], [0.0, 0.0, 1.0]])}),
         E.TargetSumError, ["preds.parquet", "column label", "negative targets", "row 1: [1.5, -0.5, 0.0]"]),
    # -- empty input
    Case("zero_rows", _one("empty.parquet", lambda: wide(P[:0], Y[:0])),
         E.EmptyInputError, ["empty.parquet", "no rows"]),
    Case("glob_matches_nothing", _glob, E.EmptyInputError, ["nothing-*.parquet", "matches no file"]),
    # -- unreadable files
    Case("truncated_parquet", _corrupt("truncated"), E.CorruptFileError,
         ["bad.parquet: not a Parquet file, or a truncated / corrupt one", "magic bytes"]),
    Case("not_parquet", _corrupt("not_parquet"), E.CorruptFileError, ["bad.parquet: not a Parquet file"]),
    Case("zero_byte_file", _corrupt("empty_file"), E.CorruptFileError, ["bad.parquet", "0 bytes"]),
    Case("bit_flip_in_checksummed_page", _bit_flip, E.CorruptFileError, ["flipped.parquet", "checksum"]),
    Case("corrupt_pages_second_file", _corrupt_pages, E.CorruptFileError, ["b.parquet", "cannot read Parquet data"]),
    # -- schema drift
    Case("drift_missing_column", _drift("missing"), E.SchemaDriftError,
         ["part-1.parquet", "'prob_c'", "no column"]),
    Case("drift_column_missing_in_first_file", _drift("missing_in_first"), E.SchemaDriftError,
         ["part-0.parquet", "'prob_c'", "no column"]),
    Case("drift_column_type", _drift("type"), E.SchemaDriftError,
         ["part-0.parquet", "part-1.parquet", "'prob_b'", "string", "double"]),
    # -- joins
    Case("duplicate_prediction_keys", _join(_with(PREDS, id=[0, 1, 2, 1, 4, 5]), LABELS),
         E.JoinError, ["preds.parquet", "duplicate keys on id", "row 3 (key 1)"]),
    Case("duplicate_label_keys", _join(PREDS, _with(LABELS, id=[0, 1, 2, 3, 3, 5])),
         E.JoinError, ["labels.parquet", "duplicate keys", "on id", "row 3: 3", "row 4: 3"]),
    Case("unmatched_prediction_keys", _join(_with(PREDS, id=[0, 1, 2, 3, 40, 50]), _with(LABELS, id=[0, 1, 2, 3, 4, 5])),
         E.JoinError, ["preds.parquet", "labels.parquet", "no row in the labels",
                       E.option("unmatched", "drop"),
                       "row 4 (key 40): 40", "row 5 (key 50): 50"]),
    Case("unmatched_label_keys",
         _join(PREDS, {"id": np.arange(8), "label": [0, 1, 2, 0, 1, 2, 0, 1]}),
         E.JoinError, ["labels.parquet", "preds.parquet", "no prediction row", "row 6: 6", "row 7: 7"]),
    Case("join_key_type_mismatch", _join(_with(PREDS, id=[str(i) for i in range(6)]), LABELS),
         E.JoinError, ["labels.parquet", "key column 'id'", "int64", "string"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_api_raises_specific_error(case: Case, tmp_path: Path) -> None:
    inputs, kwargs, _ = case.build(tmp_path)
    data: Any = inputs[0] if len(inputs) == 1 else inputs
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(case.error) as info:
        evalkit.evaluate(data, **kwargs)
    msg = str(info.value)
    for s in case.must_say:
        s = E.render_options(s, cli=False)  # settings as keywords (renormalize=True)
        assert s in msg, f"{s!r} not in message: {msg}"
        assert "--" not in msg, f"CLI advice from the API: {msg}"
    assert isinstance(info.value, E.EvalkitError)
    assert info.value.exit_code == case.exit_code
    assert "\n" not in msg.strip() or case.error is E.ConfigError
    # No temporary per-row spool or output is left anywhere in tmp_path.
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cli_exit_code_and_message(case: Case, tmp_path: Path) -> None:
    inputs, _, cli = case.build(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate", *inputs, *cli, "--out", str(out), "-q"])
    assert result.exit_code == case.exit_code, result.output
    assert "error:" in result.output
    assert "Traceback" not in result.output
    for s in case.must_say:
        s = E.render_options(s, cli=True)  # settings as flags (--renormalize)
        assert s in result.output, f"{s!r} not in output: {result.output}"
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_debug_flag_shows_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "preds.parquet", wide(y=[0, 1, 5, 0, 1, 2]))
    result = CliRunner().invoke(main, ["evaluate", path, "--debug"])
    assert result.exit_code == E.EXIT_INPUT
    assert "Traceback" in result.output and "LabelError" in result.output
    assert "error: " + path in result.output


def test_exit_codes_are_distinct_and_documented() -> None:
    codes = {E.UsageError.exit_code, E.InputError.exit_code, E.OutputError.exit_code}
    assert codes == {E.EXIT_USAGE, E.EXIT_INPUT, E.EXIT_OUTPUT} and len(codes) == 3
    assert E.ConfigError.exit_code == E.EXIT_USAGE
    assert E.OutputExistsError.exit_code == E.EXIT_OUTPUT
    help_text = CliRunner().invoke(main, ["--help"]).output
    for code, what in ((2, "usage"), (3, "input"), (4, "output"), (130, "interrupted")):
        assert re.search(rf"\b{code}\s+{what}", help_text), help_text
    for cls in (E.MissingColumnError, E.ColumnTypeError, E.InvalidProbabilityError, E.ProbabilitySumError,
                E.ListLengthError, E.LabelError, E.TargetSumError, E.EmptyInputError, E.CorruptFileError,
                E.SchemaDriftError, E.JoinError):
        assert issubclass(cls, E.InputError) and cls.exit_code == E.EXIT_INPUT


def test_message_shows_at_most_five_rows(tmp_path: Path) -> None:
    n = 40
    y = np.full(n, 7)
    p = np.tile(P[:1], (n, 1))
    path = write(tmp_path, "preds.parquet", wide(p, y))
    with pytest.raises(E.LabelError) as info:
        evalkit.evaluate(path)
    msg = str(info.value)
    assert msg.count("row ") == 5 + 1 - 1  # five samples
    assert "40 row(s)" in msg and "... and 35 more" in msg


def test_row_positions_are_per_file_across_batches(tmp_path: Path) -> None:
    """Positions in messages are rows of the named file, also when it is read in batches."""
    n = 1000
    p = np.tile(P[:1], (n, 1))
    y = np.zeros(n, dtype=np.int64)
    y[777] = 9
    write(tmp_path, "ds/a.parquet", wide(p, np.zeros(n, dtype=np.int64)))
    write(tmp_path, "ds/b.parquet", {**wide(p, y), "id": np.arange(n) + 5000})
    with pytest.raises(E.LabelError, match=r"b\.parquet: column label: .*row 777 \(key 5777\): 9"):
        evalkit.evaluate(str(tmp_path / "ds"), batch_size=64)


# -- opt-in policies -------------------------------------------------------------------

def _mixed(tmp: Path) -> str:
    """Ten rows: two bad labels, one NaN row, one row off 1, one null label."""
    p = np.tile(P, (2, 1))[:10].copy()
    y = pa.array([0, 1, 7, 0, 1, 2, 0, None, -3, 2])
    p[3, 0] = np.nan
    p[5] = [0.5, 0.4, 0.4]
    return write(tmp, "preds.parquet", wide(p, y))


SKIPPED = {"label_out_of_range": 2, "nonfinite_probability": 1, "probability_sum": 1, "null_label": 1}


def _expected_mean(tmp: Path, drop: list[int]) -> float:
    t = pq.read_table(tmp / "preds.parquet").to_pandas()
    t = t.drop(index=drop)
    p = t[["prob_a", "prob_b", "prob_c"]].to_numpy()
    y = t["label"].to_numpy().astype(int)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1 - 1e-7)).mean())


def test_skip_policy_counts_reasons_api(tmp_path: Path) -> None:
    path = _mixed(tmp_path)
    with pytest.raises(E.EvalkitError):
        evalkit.evaluate(path)
    result = evalkit.evaluate(path, on_invalid="skip")
    assert result.metadata["skipped"] == SKIPPED
    assert result.metadata["rows_read"] == 10
    assert result.metadata["rows_used"] == 5
    assert result.metadata["rows_skipped"] == 5
    assert result.mean == pytest.approx(_expected_mean(tmp_path, [2, 3, 5, 7, 8]), rel=1e-12)
    assert sorted(result.rows["row"].tolist()) == [0, 1, 4, 6, 9]


def test_skip_policy_counts_reasons_cli(tmp_path: Path) -> None:
    path = _mixed(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["evaluate", path, "--on-invalid", "skip", "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metadata"]["skipped"] == SKIPPED
    assert summary["metadata"]["rows_skipped"] == 5
    report = (out / "report.md").read_text()
    assert "5 skipped" in report
    for reason, count in SKIPPED.items():
        assert f"{reason}: {count}" in report


def test_skip_policy_list_lengths_and_nothing_left(tmp_path: Path) -> None:
    path = write(tmp_path, "preds.parquet", {"probs": pa.array([[0.5, 0.5], [0.2, 0.3, 0.5], None, [0.1, 0.9]]),
                                              "label": [0, 1, 1, 1]})
    result = evalkit.evaluate(path, on_invalid="skip")
    assert result.metadata["skipped"] == {"list_length": 1, "null_prediction": 1}
    assert result.mean == pytest.approx(-(np.log(0.5) + np.log(0.9)) / 2)
    all_bad = write(tmp_path, "bad.parquet", wide(y=[9] * 6))
    with pytest.raises(E.InputError, match="every row was invalid"):
        evalkit.evaluate(all_bad, on_invalid="skip")


def test_unmatched_drop_policy_reports_dropped_counts(tmp_path: Path) -> None:
    preds = write(tmp_path, "preds.parquet", _with(PREDS, id=[0, 1, 2, 3, 40, 50]))
    labels = write(tmp_path, "labels.parquet", {"id": [0, 1, 2, 3, 4, 5, 6], "label": [0, 1, 2, 0, 1, 2, 0]})
    result = evalkit.evaluate(preds, labels=labels, on="id", unmatched="drop")
    assert result.metadata["skipped"] == {"unmatched_prediction_key": 2, "unmatched_label_key": 3}
    assert result.metadata["rows_used"] == 4
    expected = -np.log(P[np.arange(4), Y[:4]]).mean()
    assert result.mean == pytest.approx(expected, rel=1e-12)
    out = tmp_path / "report"
    r = CliRunner().invoke(main, ["evaluate", preds, "--labels", labels, "--on", "id", "--unmatched", "drop",
                                  "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "summary.json").read_text())["metadata"]
    assert meta["skipped"] == {"unmatched_prediction_key": 2, "unmatched_label_key": 3}
    report = (out / "report.md").read_text()
    assert "unmatched_prediction_key: 2" in report and "unmatched_label_key: 3" in report


def test_renormalize_is_opt_in_and_exact(tmp_path: Path) -> None:
    p = P * np.array([[1.2], [0.8], [1.0], [1.5], [0.9], [1.1]])
    path = write(tmp_path, "preds.parquet", wide(p))
    with pytest.raises(E.ProbabilitySumError, match="renormalize=True"):
        evalkit.evaluate(path)
    result = evalkit.evaluate(path, renormalize=True)
    assert result.mean == pytest.approx(-np.log(P[np.arange(6), Y]).mean(), rel=1e-12)
    assert result.metadata["renormalize"] is True
    r = CliRunner().invoke(main, ["evaluate", path, "--renormalize", "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["overall"]["mean"] == pytest.approx(result.mean, rel=1e-12)
    zero = write(tmp_path, "zero.parquet", wide(with_value(with_value(with_value(P, 1, 0, 0), 1, 1, 0), 1, 2, 0)))
    with pytest.raises(E.ProbabilitySumError, match=r"zero\.parquet.*sum to 0.*row 1 \(key 1\)"):
        evalkit.evaluate(zero, renormalize=True)


def test_sum_tolerance_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "preds.parquet", wide(with_value(P, 0, 0, 0.705)))
    with pytest.raises(E.ProbabilitySumError, match="row 0"):
        evalkit.evaluate(path)
    assert evalkit.evaluate(path, sum_tol=0.01).rows["p_true"].iloc[0] == pytest.approx(0.705)
    assert evalkit.evaluate(path, config={"sum_tol": 0.01}).metadata["sum_tol"] == 0.01


def test_dataframe_inputs_are_named_in_messages() -> None:
    df = pd.DataFrame({"prob_a": [0.5, 0.5], "prob_b": [0.5, 0.5], "label": [0, 3]})
    with pytest.raises(E.LabelError, match=r"<predictions DataFrame>: column label: .*row 1: 3"):
        evalkit.evaluate(df)
    df = pd.DataFrame({"prob_a": ["0.5", "0.5"], "prob_b": [0.5, 0.5], "label": [0, 1]})
    with pytest.raises(E.ColumnTypeError, match="'prob_a'"):
        evalkit.evaluate(df)


def test_valid_edge_values_are_accepted(tmp_path: Path) -> None:
    """Exact 0 / 1 probabilities, bool labels and int class names are not errors."""
    path = write(tmp_path, "preds.parquet", {"prob_3": [1.0, 0.0, 0.5], "prob_5": [0.0, 1.0, 0.5],
                                              "label": [3, 3, 5]})
    r = evalkit.evaluate(path)
    assert r.metadata["rows_used"] == 3 and np.isfinite(r.mean)
    # Row 0 (p = 1 for class 3) is clipped high; row 1 (p = 0 for class 3) is a confident mistake.
    assert int(r.overall["clipped_low"]) == 1 and int(r.overall["clipped_high"]) == 1
    path = write(tmp_path, "bin.parquet", {"prob": [0.0, 1.0, 0.25], "label": [False, True, True]})
    r = evalkit.evaluate(path)
    assert r.mean == pytest.approx(-(np.log1p(-1e-7) * 2 + np.log(0.25)) / 3)


# -- advice spelled for the caller: flags at the CLI, keywords from Python ------------------

#: A setting spelled the Python way (``label=COL``, ``on=KEY``): every EvalConfig key.
_KEYS = "|".join(f.name for f in dataclasses.fields(EvalConfig))
PY_SETTING = re.compile(rf"\b({_KEYS})=")
#: A setting spelled the CLI way (``--label``).
CLI_FLAG = re.compile(r"(?<![\w-])--[a-z]")
#: Flags (with a value) that ``inspect`` takes too.
INSPECT_FLAGS = {"--label", "--labels", "--on", "--prefix", "--classes", "--key", "--targets", "-p"}


def _inspect_args(cli: list[str]) -> list[str]:
    out = []
    for flag, value in zip(cli[::2], cli[1::2], strict=False):
        if flag in INSPECT_FLAGS:
            out += [flag, value]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_advice_is_spelled_for_the_caller(case: Case, tmp_path: Path) -> None:
    """`evaluate` and `inspect` at the CLI never advise ``label=COL``; evaluate() and
    inspect_input() from Python never advise ``--label``, on every bad-input case."""
    from evalkit.inspect import inspect_input

    inputs, kwargs, cli = case.build(tmp_path)
    res = CliRunner().invoke(main, ["evaluate", *inputs, *cli, "--out", str(tmp_path / "r"), "-q"])
    assert res.exit_code == case.exit_code and not PY_SETTING.search(res.output), res.output
    args = _inspect_args(cli)
    res = CliRunner().invoke(main, ["inspect", *inputs, *args])
    assert res.exit_code in (0, case.exit_code) and not PY_SETTING.search(res.output), res.output
    data: Any = inputs[0] if len(inputs) == 1 else inputs
    with pytest.raises(E.EvalkitError) as info:
        evalkit.evaluate(data, **kwargs)
    assert not CLI_FLAG.search(str(info.value)), str(info.value)
    layout_kw = {k: v for k, v in kwargs.items() if k in ("label", "prefix", "classes", "keys", "targets",
                                                         "predictions", "on")}
    try:
        info_ = inspect_input(data, labels=kwargs.get("labels"), config=EvalConfig(**layout_kw))
    except E.EvalkitError as exc:
        assert not CLI_FLAG.search(str(exc)), str(exc)
    else:
        said = [info_["layout_error"] or "", *info_["warnings"], *info_["layout"]]
        assert not any(CLI_FLAG.search(s) for s in said), said
        assert info_["suggested_command"].startswith("evalkit evaluate ")  # a command line by design


def test_inspect_paths_name_flags(tmp_path: Path) -> None:
    """Every kind of message inspect prints, at the CLI: layout errors, join-key errors, label
    and logit warnings; and the same from Python in keyword spelling."""
    from evalkit.inspect import inspect_input

    cases = {
        "no_label": ({"prob_a": [0.5], "prob_b": [0.5]}, [], "--label COL"),
        "no_predictions": ({"x": [0.5], "label": [0]}, [], "--predictions COL"),
        "string_labels": ({"probs": [[0.5, 0.5]] * 2, "target": ["a", "b"]}, [], "--classes a,b"),
        "unit_logits": ({"logit": [0.2, 0.9], "y": [0, 1]}, [], "--probs"),
        "two_keys": ({"a": [1], "b": ["x"], "probs": [[0.5, 0.5]]}, ["--labels", "L"], "--on a"),
    }
    pq.write_table(pa.table({"a": [1], "b": ["x"], "label": [0]}), tmp_path / "L.parquet")
    for name, (cols, extra, flag) in cases.items():
        path = str(tmp_path / f"{name}.parquet")
        pq.write_table(pa.table(cols), path)
        extra = [str(tmp_path / "L.parquet") if e == "L" else e for e in extra]
        res = CliRunner().invoke(main, ["inspect", path, *extra])
        assert res.exit_code == 0 and flag in res.output, (name, res.output)
        assert not PY_SETTING.search(res.output), (name, res.output)
        labels = extra[1] if extra else None
        info = inspect_input(path, labels=labels)
        said = " ".join([info["layout_error"] or "", *info["warnings"]])
        assert said.strip() and not CLI_FLAG.search(said), (name, said)
        assert PY_SETTING.search(said), (name, said)
