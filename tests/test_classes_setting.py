"""The classes setting (``--classes``) against prediction columns that carry class names
(rt-api9 F4, F5): a column named after a class is that class, whatever order ``classes``
lists them in; a count or a name that contradicts the columns is refused (exit 2), never a
silent relabelling by position or an internal error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import ClassesError

NAMES = ["cat", "dog", "bird"]  # the order the columns are written in; sorted is bird, cat, dog
N = 300


def _frame(seed: int = 0) -> tuple[pd.DataFrame, float]:
    """p_cat, p_dog, p_bird + label (names), and the right mean loss (column i is class NAMES[i])."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, N)
    p = rng.dirichlet(np.ones(3), N) * 0.5
    p[np.arange(N), y] += 0.5
    frame = pd.DataFrame({f"p_{c}": p[:, i] for i, c in enumerate(NAMES)})
    frame["label"] = [NAMES[i] for i in y]
    return frame, float(np.mean(-np.log(p[np.arange(N), y])))


def _write(tmp_path, writer: str, frame: pd.DataFrame):
    path = tmp_path / f"{writer}.parquet"
    if writer == "pandas":
        frame.to_parquet(path, index=False)
    elif writer == "pyarrow":
        pq.write_table(pa.Table.from_pydict({c: frame[c].tolist() for c in frame.columns}), path)
    elif writer == "polars":
        import polars as pl

        pl.from_pandas(frame).write_parquet(path)
    else:
        import duckdb

        con = duckdb.connect()
        con.register("f", frame)
        con.execute(f"COPY (SELECT * FROM f) TO '{path}' (FORMAT PARQUET)")
        con.close()
    return path


@pytest.mark.parametrize("writer", ["pandas", "pyarrow", "polars", "duckdb"])
@pytest.mark.parametrize("order", [["bird", "cat", "dog"], ["dog", "bird", "cat"], NAMES])
def test_classes_in_another_order_reorder_the_named_columns(tmp_path, writer, order):
    frame, want = _frame()
    path = _write(tmp_path, writer, frame)
    plain = evalkit.evaluate(path, plots=False)
    res = evalkit.evaluate(path, plots=False, classes=order)
    assert plain.mean == pytest.approx(want, rel=1e-12)
    assert res.mean == pytest.approx(want, rel=1e-12)
    assert res.layout.classes == tuple(order)
    assert res.layout.pred_columns == tuple(f"p_{c}" for c in order)
    by_class = res.groups["class"].set_index("class")
    assert by_class.loc["cat", "count"] == (frame["label"] == "cat").sum()
    assert res.overall.accuracy == plain.overall.accuracy


def test_explicit_columns_and_prefix_honour_the_names_too(tmp_path):
    frame, want = _frame(1)
    path = _write(tmp_path, "pandas", frame)
    for kw in ({"predictions": ["p_bird", "p_dog", "p_cat"], "classes": ["cat", "dog", "bird"]},
               {"prefix": "p_", "classes": ["dog", "cat", "bird"]},
               {"predictions": ["p_bird", "p_dog", "p_cat"]}):
        assert evalkit.evaluate(path, plots=False, **kw).mean == pytest.approx(want, rel=1e-12), kw
    # In memory (a DataFrame), as in the CLI.
    assert evalkit.evaluate(frame, plots=False, classes=sorted(NAMES)).mean == pytest.approx(want, rel=1e-12)
    runner = CliRunner()
    r = runner.invoke(main, ["evaluate", str(path), "--classes", "bird,cat,dog", "--no-plots", "--format", "json",
                             "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    import json

    assert json.loads((tmp_path / "o" / "summary.json").read_text())["overall"]["mean"] == pytest.approx(want)


def test_class_names_the_columns_contradict_are_refused(tmp_path):
    frame, _ = _frame()
    path = _write(tmp_path, "pandas", frame)
    with pytest.raises(ClassesError, match=r"names class 'fish', which no prediction column carries, "
                                           r"while column 'p_bird' is class 'bird'"):
        evalkit.evaluate(path, plots=False, classes=["cat", "dog", "fish"])
    r = CliRunner().invoke(main, ["evaluate", str(path), "--classes", "fish,cat,dog", "--no-plots",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--classes names class 'fish'" in r.output, r.output
    with pytest.raises(ClassesError, match="names class 'cat' twice"):
        evalkit.evaluate(path, plots=False, classes=["cat", "cat", "dog"])


def test_columns_that_carry_no_class_name_stay_positional(tmp_path):
    """prob_0, prob_1, prob_2 (numbered) with named classes: by position, as before."""
    frame, want = _frame()
    numbered = frame.rename(columns={f"p_{c}": f"prob_{i}" for i, c in enumerate(NAMES)})
    res = evalkit.evaluate(numbered, plots=False, classes=NAMES)
    assert res.mean == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("classes", [["d", "a", "b", "c"], ["a", "b", "c", "d"], ["a", "b"]])
def test_a_count_that_differs_from_the_columns_is_refused(tmp_path, classes):
    """F5: more (or fewer) classes than prediction columns: an IndexError or a phantom class before."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 30)
    frame = pd.DataFrame({"prob_a": p[:, 0], "prob_b": p[:, 1], "prob_c": p[:, 2],
                          "label": rng.choice(["a", "b", "c"], 30)})
    path = tmp_path / "abc.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(ClassesError, match=f"3 prediction columns .* but {len(classes)} classes"):
        evalkit.evaluate(frame, plots=False, classes=classes)
    r = CliRunner().invoke(main, ["evaluate", str(path), "--classes", ",".join(classes), "--no-plots",
                                  "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and f"3 prediction columns (prob_a, prob_b, prob_c) but {len(classes)} classes" \
        in r.output, r.output


def test_binary_column_classes_are_checked(tmp_path):
    """A binary P(class 1) column: 2 classes, and a p_<name> column is P(<name>), never the negative class."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.05, 0.95, 40)
    y = (rng.uniform(size=40) < p).astype(int)
    frame = pd.DataFrame({"prob": p, "label": y})
    with pytest.raises(ClassesError, match="1 prediction column .* but 3 classes"):
        evalkit.evaluate(frame, plots=False, classes=["a", "b", "c"])
    named = pd.DataFrame({"p_spam": p, "label": np.where(y == 1, "spam", "ham")})
    want = evalkit.evaluate(named, plots=False).mean
    assert evalkit.evaluate(named, plots=False, classes=["ham", "spam"]).mean == pytest.approx(want, rel=1e-12)
    with pytest.raises(ClassesError, match=r"'p_spam' is P\('spam'\).*classes=\['ham', 'spam'\]"):
        evalkit.evaluate(named, plots=False, classes=["spam", "ham"])
