"""Real exports detected with no flags (issue 14.4): scikit-learn models trained on its bundled
datasets, their outputs saved the way analysts save them; Spark ML output as Spark writes it."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_breast_cancer, load_iris, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

import evalkit
from evalkit.cli import main
from evalkit.errors import ColumnTypeError, LabelError, LayoutError, UsageError


def _sk_loss(y, proba, labels) -> float:
    """scikit-learn's log_loss at evalkit's clip (it clips at float64 eps itself)."""
    clipped = np.clip(proba, 1e-7, 1 - 1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y_prob values do not sum to one" after the clip
        return float(log_loss(y, clipped, labels=labels))


@pytest.fixture(scope="module")
def iris():
    data = load_iris(as_frame=True)
    X, y = data.data, data.target_names[data.target]  # string labels, as analysts map them
    model = LogisticRegression(max_iter=1000).fit(X, y)
    return X, y, model


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer(as_frame=True)
    model = RandomForestClassifier(n_estimators=25, random_state=0).fit(data.data, data.target)
    return data.data, data.target, model


def test_class_named_columns_with_string_target(tmp_path, iris):
    X, y, model = iris
    df = pd.DataFrame(model.predict_proba(X), columns=model.classes_)
    df["target"] = y
    df.to_parquet(tmp_path / "iris.parquet")
    result = evalkit.evaluate(tmp_path / "iris.parquet")
    assert result.layout.kind == "wide" and result.layout.pred_columns == tuple(model.classes_)
    assert result.layout.classes == ("setosa", "versicolor", "virginica")
    assert result.mean == pytest.approx(_sk_loss(y, model.predict_proba(X), model.classes_), rel=1e-9)
    assert list(result.groups["class"]["class"]) == list(model.classes_)


def test_class_named_columns_find_a_label_column_of_any_name(tmp_path, iris):
    """predict_proba saved with columns=model.classes_ next to a label column named after what
    it holds (species): the one string column whose values name float columns is the label."""
    import duckdb
    import polars as pl

    X, y, model = iris
    df = pd.DataFrame(model.predict_proba(X), columns=model.classes_).assign(species=y, site="a")
    want = _sk_loss(y, model.predict_proba(X), model.classes_)
    pl.from_pandas(df).write_parquet(tmp_path / "polars.parquet")
    duckdb.sql("select * from df").write_parquet(str(tmp_path / "duckdb.parquet"))
    for data in (df, pl.from_pandas(df), str(tmp_path / "polars.parquet"), str(tmp_path / "duckdb.parquet")):
        result = evalkit.evaluate(data)
        assert result.layout.label_columns == ("species",) and result.layout.kind == "wide"
        assert result.mean == pytest.approx(want, rel=1e-9)
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "polars.parquet")])
    assert "label column 'species' detected" in res.output and "--by species" not in res.output
    # Two string columns whose values name the columns: ambiguous, not guessed.
    with pytest.raises(LayoutError, match="cannot"):
        evalkit.evaluate(df.assign(other=df["species"]))


@pytest.mark.parametrize("prefix", ["prob_", "proba_", "p_"])
def test_prefixed_class_columns_find_a_label_column_of_any_name(tmp_path, iris, prefix):
    """The README's label table: the one string column whose values name the prediction
    columns' classes is the label, prefixed columns (prob_setosa ...) as well as bare ones
    (rt T18: only inspect found it; evaluate refused with "cannot find the label column")."""
    import polars as pl

    X, y, model = iris
    proba = model.predict_proba(X)
    df = pd.DataFrame(proba, columns=[prefix + c for c in model.classes_]).assign(species=y, site="a")
    want = _sk_loss(y, proba, model.classes_)
    pl.from_pandas(df).write_parquet(tmp_path / "polars.parquet")
    for data in (df, str(tmp_path / "polars.parquet")):
        result = evalkit.evaluate(data, plots=False)
        assert result.layout.label_columns == ("species",) and result.layout.kind == "wide"
        assert result.mean == pytest.approx(want, rel=1e-9)
    with pytest.raises(LayoutError, match="cannot"):  # two candidates: not guessed
        evalkit.evaluate(df.assign(other=df["species"]))


def test_class_named_columns_with_integer_target_and_features(tmp_path):
    # Wine: integer classes 0..2, the features kept next to the probabilities.
    data = load_wine(as_frame=True)
    model = LogisticRegression(max_iter=5000).fit(data.data, data.target)
    proba = pd.DataFrame(model.predict_proba(data.data), columns=[str(c) for c in model.classes_])
    df = pd.concat([data.data, proba], axis=1).assign(target=data.target)
    df.to_parquet(tmp_path / "wine.parquet")
    result = evalkit.evaluate(str(tmp_path / "wine.parquet"))
    assert result.layout.pred_columns == ("0", "1", "2")
    assert result.mean == pytest.approx(
        _sk_loss(data.target, model.predict_proba(data.data), [0, 1, 2]), rel=1e-9)


def test_prefixed_class_columns(tmp_path, iris):
    """predict_proba saved as p_<class> columns next to a string target: no flags."""
    X, y, model = iris
    proba = model.predict_proba(X)
    pd.DataFrame(proba, columns=[f"p_{c}" for c in model.classes_]).assign(target=y).to_parquet(tmp_path / "p.parquet")
    result = evalkit.evaluate(tmp_path / "p.parquet")
    assert result.layout.kind == "wide" and result.layout.classes == tuple(model.classes_)
    assert result.mean == pytest.approx(_sk_loss(y, proba, model.classes_), rel=1e-9)


def test_list_column_of_arrays(tmp_path, iris):
    X, y, model = iris
    codes = np.searchsorted(model.classes_, y)
    pd.DataFrame({"id": np.arange(len(y)), "proba": list(model.predict_proba(X)), "label": codes}).to_parquet(
        tmp_path / "list.parquet")
    result = evalkit.evaluate(str(tmp_path / "list.parquet"))
    assert result.layout.kind == "list" and result.layout.pred_columns == ("proba",)
    assert result.mean == pytest.approx(_sk_loss(codes, model.predict_proba(X), [0, 1, 2]), rel=1e-9)


@pytest.mark.parametrize("column", ["p_benign", "pred", "prob", "y_proba"])
def test_binary_single_column(tmp_path, cancer, column):
    X, y, model = cancer
    p1 = model.predict_proba(X)[:, 1]  # classes_ = [0, 1]: P(benign)
    pd.DataFrame({column: p1, "target": y}).to_parquet(tmp_path / "bc.parquet")
    result = evalkit.evaluate(str(tmp_path / "bc.parquet"))
    assert result.layout.kind == "binary" and result.layout.pred_columns == (column,)
    assert result.mean == pytest.approx(_sk_loss(y, model.predict_proba(X), [0, 1]), rel=1e-9)


def test_binary_column_suffix_names_the_positive_class(tmp_path, cancer):
    X, y, model = cancer
    names = np.array(["malignant", "benign"])[y]
    proba = model.predict_proba(X)
    pd.DataFrame({"p_malignant": proba[:, 0], "diagnosis": names}).to_parquet(tmp_path / "m.parquet")
    result = evalkit.evaluate(str(tmp_path / "m.parquet"), label="diagnosis")
    assert result.layout.classes == ("benign", "malignant")
    assert result.mean == pytest.approx(_sk_loss(y, proba, [0, 1]), rel=1e-9)
    pd.DataFrame({"p_0": proba[:, 0], "label": y}).to_parquet(tmp_path / "p0.parquet")
    assert evalkit.evaluate(str(tmp_path / "p0.parquet")).mean == pytest.approx(result.mean, rel=1e-12)
    # No flags: 'diagnosis' is the one string column holding the class p_malignant names (and
    # one more value); a second such column is ambiguous, so nothing is guessed.
    import polars as pl

    pl.DataFrame({"p_malignant": proba[:, 0], "diagnosis": names, "site": "x"}).write_parquet(tmp_path / "n.parquet")
    found = evalkit.evaluate(str(tmp_path / "n.parquet"))
    assert found.layout.label_columns == ("diagnosis",) and found.mean == pytest.approx(result.mean, rel=1e-12)
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "n.parquet")])
    assert "label column 'diagnosis' detected" in res.output and "--by diagnosis" not in res.output
    with pytest.raises(LayoutError, match="cannot find the label column"):
        evalkit.evaluate(pd.DataFrame({"p_malignant": proba[:, 0], "diagnosis": names, "copy": names}))


def test_single_logit_column(tmp_path):
    data = load_breast_cancer(as_frame=True)
    model = LogisticRegression(max_iter=10000).fit(data.data, data.target)
    pd.DataFrame({"logit": model.decision_function(data.data), "y": data.target}).to_parquet(
        tmp_path / "logit.parquet")
    result = evalkit.evaluate(str(tmp_path / "logit.parquet"))
    assert result.layout.kind == "binary" and result.layout.from_logits
    assert result.mean == pytest.approx(_sk_loss(data.target, model.predict_proba(data.data), [0, 1]), rel=1e-9)


def test_on_inferred_from_the_one_shared_key(tmp_path, iris):
    X, y, model = iris
    codes = np.searchsorted(model.classes_, y)
    pd.DataFrame({"id": np.arange(150), "split": "test", "probs": list(model.predict_proba(X))}).to_parquet(
        tmp_path / "preds.parquet")
    pd.DataFrame({"id": np.arange(150)[::-1], "split": "test", "label": codes[::-1]}).to_parquet(
        tmp_path / "labels.parquet")
    result = evalkit.evaluate(str(tmp_path / "preds.parquet"), labels=str(tmp_path / "labels.parquet"))
    assert result.metadata["on"] == ["id"]
    assert result.mean == pytest.approx(_sk_loss(codes, model.predict_proba(X), [0, 1, 2]), rel=1e-9)
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "preds.parquet"), "--labels",
                                    str(tmp_path / "labels.parquet"), "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    # Two plausible keys and neither a conventional key name: refuse, naming them.
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "probs": [[0.5, 0.5]] * 2}).to_parquet(tmp_path / "p2.parquet")
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "label": [0, 1]}).to_parquet(tmp_path / "l2.parquet")
    with pytest.raises(UsageError, match="share the columns a, b") as err:
        evalkit.evaluate(str(tmp_path / "p2.parquet"), labels=str(tmp_path / "l2.parquet"))
    assert "--on" not in str(err.value) and 'on=KEY' in str(err.value)
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p2.parquet"), "--labels", str(tmp_path / "l2.parquet")])
    assert res.exit_code == 2 and "--on KEY" in res.output


def _spark_dir(tmp_path, vector: bool = False):
    """Spark ML output as written by df.write.partitionBy("split").parquet(out)."""
    out = tmp_path / "spark_out"
    probs = [[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]]
    for split in ("train", "val"):
        d = out / f"split={split}"
        d.mkdir(parents=True)
        if vector:
            typ = pa.struct([("type", pa.int8()), ("size", pa.int32()), ("indices", pa.list_(pa.int32())),
                             ("values", pa.list_(pa.float64()))])
            col = pa.array([{"type": 1, "size": None, "indices": None, "values": p} for p in probs], typ)
        else:
            col = pa.array(probs, pa.list_(pa.float64()))
        pq.write_table(pa.table({"label": [0.0, 1.0, 1.0], "probability": col, "prediction": [0.0, 1.0, 0.0]}),
                       d / "part-00000-abc.snappy.parquet")
        (d / ".part-00000-abc.snappy.parquet.crc").write_bytes(b"\x00crc")
    (out / "_SUCCESS").write_bytes(b"")
    return out


def test_spark_ml_probability_list_column_and_glob(tmp_path):
    out = _spark_dir(tmp_path)
    want = -np.log([0.9, 0.7, 0.4]).mean()
    for given in (str(out), str(out / "*"), str(out / "*" / "*.parquet"), str(out / "**" / "*.parquet")):
        result = evalkit.evaluate(given)
        assert result.layout.kind == "list" and result.layout.pred_columns == ("probability",), given
        assert result.mean == pytest.approx(want, rel=1e-12), given
        # The partition column survives the glob: a split grouping is made.
        assert list(result.groups["split"]["split"]) == ["train", "val"], given


def test_glob_skips_spark_marker_files(tmp_path):
    out = tmp_path / "flat"
    out.mkdir()
    pq.write_table(pa.table({"probability": pa.array([[0.9, 0.1]]), "label": [0]}), out / "part-0.parquet")
    (out / "_SUCCESS").write_bytes(b"")
    (out / "part-0.parquet.crc").write_bytes(b"x")
    assert evalkit.evaluate(str(out / "*")).metadata["rows_read"] == 1


def test_unconverted_spark_vector_names_vector_to_array(tmp_path):
    out = _spark_dir(tmp_path, vector=True)
    with pytest.raises(ColumnTypeError, match=r"pyspark\.ml\.functions\.vector_to_array"):
        evalkit.evaluate(str(out))
    with pytest.raises(ColumnTypeError, match="vector_to_array"):
        evalkit.evaluate(str(out), predictions=["probability"])


def test_short_predictions_flag_takes_a_comma_list(tmp_path):
    df = pd.DataFrame({"a": [0.7, 0.2], "b": [0.3, 0.8], "y_true": [0, 1]})
    df.to_parquet(tmp_path / "ab.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "ab.parquet"), "-p", "a,b", "--format", "json", "-q"])
    assert res.exit_code == 0, res.output
    import json

    assert json.loads(res.output)["overall"]["mean"] == pytest.approx(-np.log([0.7, 0.8]).mean(), rel=1e-12)


def test_string_labels_with_numbered_predictions_suggest_classes(tmp_path, iris):
    X, y, model = iris
    pd.DataFrame({"probs": list(model.predict_proba(X)), "target": y}).to_parquet(tmp_path / "l.parquet")
    with pytest.raises(LabelError) as err:
        evalkit.evaluate(str(tmp_path / "l.parquet"))
    assert "classes=['setosa', 'versicolor', 'virginica']" in str(err.value)
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "l.parquet")])
    assert res.exit_code == 3 and "--classes setosa,versicolor,virginica" in res.output
    spam = pd.DataFrame({"prob": [0.9, 0.2], "label": ["spam", "ham"]})
    spam.to_parquet(tmp_path / "spam.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "spam.parquet")])
    assert res.exit_code == 3 and "--classes ham,spam" in res.output


def test_undetectable_layout_names_what_matched(tmp_path):
    pd.DataFrame({"setosa": [0.9], "versicolor": [0.1], "target": ["virginica"]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(LayoutError, match="cannot detect") as err:
        evalkit.evaluate(str(tmp_path / "x.parquet"))
    assert "predictions=" in str(err.value) and "--predictions" not in str(err.value)
    assert os.fspath(tmp_path / "x.parquet") in str(err.value)


# -- inspect says what evaluate will do ---------------------------------------------------


def _export_cases(root, iris, cancer) -> tuple[dict[str, list[str]], dict[str, float]]:
    """Every export layout above, written to ``root``: name -> the inspect arguments, and
    the scikit-learn loss of the cases whose class names inspect must find."""
    X, y, model = iris
    proba = model.predict_proba(X)
    codes = np.searchsorted(model.classes_, y)
    cases: dict[str, list[str]] = {}
    expected: dict[str, float] = {}

    def save(name: str, df: pd.DataFrame, *args: str) -> None:
        df.to_parquet(root / f"{name}.parquet")
        cases[name] = [str(root / f"{name}.parquet"), *args]

    save("class_named_string_target", pd.DataFrame(proba, columns=model.classes_).assign(target=y))
    save("class_named_any_label_name", pd.DataFrame(proba, columns=model.classes_).assign(species=y, site="a"))
    expected["class_named_any_label_name"] = _sk_loss(y, proba, model.classes_)
    wine = load_wine(as_frame=True)
    wmodel = LogisticRegression(max_iter=5000).fit(wine.data, wine.target)
    save("class_named_int_target_with_features", pd.concat(
        [wine.data, pd.DataFrame(wmodel.predict_proba(wine.data), columns=["0", "1", "2"])],
        axis=1).assign(target=wine.target))
    save("list_of_arrays", pd.DataFrame({"id": np.arange(150), "proba": list(proba), "label": codes}))
    save("list_with_string_labels", pd.DataFrame({"probs": list(proba), "target": y}))
    save("spark_style_list_string_labels", pd.DataFrame({"probability": list(proba), "species": y}),
         "--label", "species")
    cx, cy, cmodel = cancer
    cp = cmodel.predict_proba(cx)
    for column in ("p_benign", "pred", "prob", "y_proba"):
        save(f"binary_{column}", pd.DataFrame({column: cp[:, 1], "target": cy}))
    names = np.array(["malignant", "benign"])[cy]
    smodel = RandomForestClassifier(n_estimators=10, random_state=0).fit(cx, names)  # classes_ sorted
    save("binary_string_labels", pd.DataFrame({"prob": smodel.predict_proba(cx)[:, 1], "label": names}))
    expected["binary_string_labels"] = _sk_loss(names, smodel.predict_proba(cx), smodel.classes_)
    expected["list_with_string_labels"] = _sk_loss(y, proba, model.classes_)
    save("binary_suffix", pd.DataFrame({"p_malignant": cp[:, 0], "diagnosis": np.array(["malignant", "benign"])[cy]}),
         "--label", "diagnosis")
    save("binary_p0", pd.DataFrame({"p_0": cp[:, 0], "label": cy}))
    save("binary_suffix_no_flags", pd.DataFrame({"p_malignant": cp[:, 0], "diagnosis": names}))
    save("prefixed_class_columns", pd.DataFrame(proba, columns=[f"p_{c}" for c in model.classes_]).assign(target=y))
    expected["prefixed_class_columns"] = _sk_loss(y, proba, model.classes_)
    lmodel = LogisticRegression(max_iter=10000).fit(cx, cy)
    save("single_logit", pd.DataFrame({"logit": lmodel.decision_function(cx), "y": cy}))
    pd.DataFrame({"id": np.arange(150)[::-1], "label": codes[::-1]}).to_parquet(root / "labels.parquet")
    save("separate_labels", pd.DataFrame({"id": np.arange(150), "split": "test", "probs": list(proba)}),
         "--labels", str(root / "labels.parquet"))
    pd.DataFrame({"id": np.arange(150)[::-1], "species": y[::-1]}).to_parquet(root / "names.parquet")
    save("separate_string_labels", pd.DataFrame({"id": np.arange(150), "probs": list(proba)}),
         "--labels", str(root / "names.parquet"), "--label", "species")
    spark = _spark_dir(root)
    cases["spark_dir"] = [str(spark)]
    cases["spark_glob"] = [str(spark / "*")]
    save("declared_columns", pd.DataFrame({"a": [0.7, 0.2], "b": [0.3, 0.8], "y_true": [0, 1]}), "-p", "a,b")
    return cases, expected


def test_inspect_try_line_runs_for_every_export_layout(tmp_path, iris, cancer, monkeypatch):
    """For each export layout: the try line exits 0, and inspect warns exactly when evaluate,
    given the same settings, refuses."""
    import shlex

    root = tmp_path / "exports"
    root.mkdir()
    cases, expected = _export_cases(root, iris, cancer)
    warned = set()
    for name, args in cases.items():
        run_dir = tmp_path / name
        run_dir.mkdir()
        monkeypatch.chdir(run_dir)
        res = CliRunner().invoke(main, ["inspect", *args])
        assert res.exit_code == 0, (name, res.output)
        assert "(not detected)" not in res.output, (name, res.output)
        [line] = [x for x in res.output.splitlines() if x.startswith("try: ")]
        words = shlex.split(line[len("try: "):])
        run = CliRunner().invoke(main, [*words[1:], "--format", "none"])
        assert run.exit_code == 0, (name, line, run.output)
        if name in expected:
            import json

            mean = json.loads((run_dir / "report" / "summary.json").read_text())["overall"]["mean"]
            assert mean == pytest.approx(expected[name], rel=1e-9), name
        plain = CliRunner().invoke(main, ["evaluate", *args, "--out", str(run_dir / "plain"), "--format", "none"])
        if "warning: evaluate will refuse" in res.output:
            warned.add(name)
            assert plain.exit_code == 3 and "--classes" in plain.output, (name, plain.output)
            assert "--classes" in words, (name, line)
            assert "classes=" not in res.output and "label=" not in res.output  # CLI spelling only
        else:
            assert plain.exit_code == 0, (name, res.output, plain.output)
    assert warned == {"list_with_string_labels", "spark_style_list_string_labels", "binary_string_labels",
                      "separate_string_labels"}


def test_inspect_warns_about_labels_evaluate_refuses(tmp_path):
    """Not only string labels: indices out of range and fractional labels are what evaluate
    refuses too; the ignored label is left out as evaluate leaves it out; the Python caller
    gets keyword spelling."""
    from evalkit.inspect import inspect_input

    probs = [[0.7, 0.2, 0.1]] * 4
    pd.DataFrame({"probs": probs, "label": [0, 1, 3, -100]}).to_parquet(tmp_path / "idx.parquet")
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "idx.parquet")])
    assert "label out of range" in res.output and "2 of 4 distinct" in res.output, res.output
    assert "--on-invalid skip leaves them out" in res.output
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "idx.parquet"), "--ignore-label", "-100"])
    assert "1 of 3 distinct" in res.output and "3" in res.output, res.output
    plain = CliRunner().invoke(main, ["evaluate", str(tmp_path / "idx.parquet"), "--ignore-label", "-100",
                                      "--out", str(tmp_path / "o1")])
    assert plain.exit_code == 3 and "label out of range" in plain.output
    pd.DataFrame({"probs": probs, "label": [0, 1, 2, 1]}).to_parquet(tmp_path / "ok.parquet")
    assert "warning" not in CliRunner().invoke(main, ["inspect", str(tmp_path / "ok.parquet")]).output
    pd.DataFrame({"probs": probs, "target": ["a", "b", "a", "b"]}).to_parquet(tmp_path / "two.parquet")
    info = inspect_input(str(tmp_path / "two.parquet"))
    [warning] = info["warnings"]
    # two names for three classes: no class list to suggest, and no CLI flag from Python
    assert "every row" in warning and "classes=name0,name1,name2" in warning and "--" not in warning
    assert "--classes" not in info["suggested_command"]
    info = inspect_input(str(tmp_path / "two.parquet"), cli=True)
    assert "--classes name0,name1,name2" in info["warnings"][0]


def test_marker_files_given_explicitly_are_skipped(tmp_path):
    """`evalkit evaluate out/*` unquoted: the shell passes Spark's _SUCCESS and .crc files as
    explicit inputs; they are skipped with a warning, and a marker alone is still an error."""
    d = tmp_path / "out"
    d.mkdir()
    df = pd.DataFrame({"probs": [[0.7, 0.3], [0.2, 0.8]], "label": [0, 1]})
    df.to_parquet(d / "part-00000.parquet")
    (d / "_SUCCESS").write_bytes(b"")
    (d / "part-00000.parquet.crc").write_bytes(b"x")
    given = [str(d / "_SUCCESS"), str(d / "part-00000.parquet"), str(d / "part-00000.parquet.crc")]
    with pytest.warns(evalkit.EvalkitWarning, match="skipped 2 Spark / Hadoop marker"):
        r = evalkit.evaluate(given)
    assert r.metadata["rows_read"] == 2 and r.mean == pytest.approx(-np.log([0.7, 0.8]).mean(), rel=1e-12)
    res = CliRunner().invoke(main, ["evaluate", *given, "--out", str(tmp_path / "r"), "--no-plots"])
    assert res.exit_code == 0 and "skipped 2 Spark / Hadoop marker" in res.output
    with pytest.raises(evalkit.EvalkitError):
        evalkit.evaluate(str(d / "_SUCCESS"))
