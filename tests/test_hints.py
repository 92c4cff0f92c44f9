"""Plausibility checks and hints that lead to the fix (issue 14.3), worded for the caller."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import (
    EvalkitError,
    InvalidProbabilityError,
    ProbabilitySumError,
    option,
    render_options,
)


def _probs(n=200, k=3, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 3
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return z, p, rng.integers(0, k, n)


def _frame(values, prefix, y):
    df = pd.DataFrame({f"{prefix}{c}": values[:, i] for i, c in enumerate("abc")})
    return df.assign(label=y)


def test_probabilities_declared_as_logits_are_refused(tmp_path):
    z, p, y = _probs()
    df = _frame(p, "prob_", y)
    with pytest.raises(InvalidProbabilityError, match="look like probabilities") as err:
        evalkit.evaluate(df, logits=True)
    assert "logits=False" in str(err.value) and "--" not in str(err.value)
    # Skipping invalid rows does not hide a wrong setting.
    with pytest.raises(InvalidProbabilityError, match="look like probabilities"):
        evalkit.evaluate(df, logits=True, on_invalid="skip")
    # Detected by name (logit_ prefix) but holding probabilities: the same.
    df.rename(columns=lambda c: c.replace("prob_", "logit_")).to_parquet(tmp_path / "x.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "x.parquet")])
    assert res.exit_code == 3 and "--probs" in res.output
    # Real logits are fine, and probabilities read as such give the right loss.
    assert evalkit.evaluate(_frame(z, "logit_", y)).mean == pytest.approx(evalkit.evaluate(df).mean, rel=1e-9)


def test_option_spelling_in_files():
    msg = f"set {option('logits', False)}, {option('on', meta='KEY')}, {option('classes', ['a', 'b'])}"
    assert render_options(msg, cli=None) == 'set logits: false, on: KEY, classes: ["a", "b"]'


def _logit_loss(z, y, eps=1e-7):
    """Clipped binary cross-entropy of logits, in log space (numpy by hand)."""
    return float(np.mean(np.clip(np.logaddexp(0, np.where(y == 1, -z, z)), -np.log1p(-eps), -np.log(eps))))


def _binary_probabilities():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    data = load_breast_cancer(as_frame=True)
    model = LogisticRegression(max_iter=10000).fit(data.data, data.target)
    return model, data.data, data.target.to_numpy()


def test_binary_probabilities_declared_as_logits_warn_loudly(tmp_path):
    """Decision: a binary column read as logits whose every value lies in [0, 1] is warned
    about, not refused (a weak or prior-only model has such logits): on stderr, in
    EvalResult.warnings (and warnings.warn), report.md and summary.json."""
    import json

    from evalkit import EvalkitWarning

    model, X, y = _binary_probabilities()
    p1 = model.predict_proba(X)[:, 1]
    df = pd.DataFrame({"logit": p1, "y": y})  # probabilities under a logit name: detected as logits
    with pytest.warns(EvalkitWarning, match="logit column 'logit' in every row used lies in"):
        result = evalkit.evaluate(df, batch_size=64)  # the range spans every batch
    [w] = result.warnings
    assert "logits=False" in str(w) and "--" not in str(w)
    assert "--probs" in w.cli_text() and "logits: false" in w.file_text()
    assert f"max {p1.max():.6g}" in str(w) and f"min {p1.min():.6g}" in str(w)
    # computed as declared: the loss of the values read as logits (not refused)
    want = _logit_loss(p1, y)
    assert result.mean == pytest.approx(want, rel=1e-9)
    out = result.write(tmp_path / "out")
    assert json.loads((out / "summary.json").read_text())["metadata"]["warnings"] == [w.file_text()]
    report = (out / "report.md").read_text()
    assert report.index("## ⚠️ Warnings") < report.index("## Overall") and "logits: false" in report
    assert "warning:" in repr(result) and "⚠️" in result._repr_markdown_() and "⚠️" in result._repr_html_()
    # The CLI: one warning line on stderr with the flag, exit 0; declared --logits on `prob` too.
    df.rename(columns={"logit": "prob"}).to_parquet(tmp_path / "p.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "p.parquet"), "--logits", "--out",
                                    str(tmp_path / "cli"), "--format", "none"])
    assert res.exit_code == 0, res.output
    [line] = [x for x in res.output.splitlines() if x.startswith("warning:")]
    assert "--probs" in line and "logits=False" not in line and "EvalkitWarning" not in res.output
    ins = CliRunner().invoke(main, ["inspect", str(tmp_path / "p.parquet"), "--logits"])
    assert "warning: evaluate will warn: every value of the binary logit column 'prob' in the first 569 rows" \
        in ins.output and "--probs" in ins.output


def test_genuine_logit_columns_are_not_warned_about(tmp_path):
    import warnings

    from evalkit import EvalkitWarning

    model, X, y = _binary_probabilities()
    z = model.decision_function(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvalkitWarning)
        result = evalkit.evaluate(pd.DataFrame({"logit": z, "y": y}))
    assert result.warnings == [] and result.metadata["warnings"] == []
    assert result.mean == pytest.approx(_logit_loss(z, y), rel=1e-9)
    # Logits of a prior-only model (60% positives: logit 0.405 on every row) are possible:
    # warned about, computed all the same.
    prior = np.full(len(y), np.log(0.6 / 0.4))
    with pytest.warns(EvalkitWarning):
        result = evalkit.evaluate(pd.DataFrame({"logit": prior, "y": y}))
    assert result.mean == pytest.approx(_logit_loss(prior, y), rel=1e-9)
    # A negative value anywhere ends the warning, even in the last batch.
    mixed = np.concatenate([prior[:-1], [-0.1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvalkitWarning)
        evalkit.evaluate(pd.DataFrame({"logit": mixed, "y": y}), batch_size=100)


def test_logit_values_read_as_probabilities_suggest_logits(tmp_path):
    z, p, y = _probs()
    with pytest.raises(InvalidProbabilityError, match=r"look like logits: read them as such with logits=True"):
        evalkit.evaluate(_frame(z, "prob_", y))
    log_p = np.log(p)
    with pytest.raises(InvalidProbabilityError, match="logits or log-probabilities"):
        evalkit.evaluate(_frame(log_p, "prob_", y))
    with pytest.raises(InvalidProbabilityError, match="look like logits"):
        evalkit.evaluate(pd.DataFrame({"prob": z[:, 0], "label": y % 2}))
    _frame(z, "prob_", y).to_parquet(tmp_path / "z.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "z.parquet")])
    assert res.exit_code == 3 and "with --logits" in res.output


def test_percentages_are_named():
    _, p, y = _probs()
    with pytest.raises(InvalidProbabilityError, match="sum to 100"):
        evalkit.evaluate(_frame(p * 100, "prob_", y))


def test_renormalize_is_suggested_only_for_probabilities():
    _, p, y = _probs()
    with pytest.raises(ProbabilitySumError, match=r"renormalize=True") as err:
        evalkit.evaluate(_frame(p * 0.9, "prob_", y))
    assert "--renormalize" not in str(err.value)
    # Rows off 1 that are not probabilities: skipped rows aside, no renormalize advice.
    z, _, _ = _probs()
    with pytest.raises(EvalkitError) as err:
        evalkit.evaluate(_frame(z, "prob_", y), on_invalid="skip")
    assert "renormalize" not in str(err.value)


def test_option_spelling():
    msg = f"pass {option('on', meta='KEY')}, {option('renormalize', True)}, {option('logits', False)}, " \
          f"{option('classes', ['a b', 'c'])}, {option('write_rows', False)}"
    assert render_options(msg, cli=True) == "pass --on KEY, --renormalize, --probs, --classes 'a b,c', --no-rows"
    assert render_options(msg, cli=False) == (
        "pass on=KEY, renormalize=True, logits=False, classes=['a b', 'c'], write_rows=False")
    err = EvalkitError(msg)
    assert str(err) == render_options(msg, cli=False) and err.cli_text() == render_options(msg, cli=True)
    import pickle

    assert pickle.loads(pickle.dumps(err)).cli_text() == err.cli_text()


def test_cross_entropy_gives_no_cli_advice():
    with pytest.raises(ProbabilitySumError) as err:
        evalkit.cross_entropy([[0.5, 0.3]], [0])
    # cross_entropy has no renormalize option: it is not offered.
    assert "--" not in str(err.value) and "renormalize" not in str(err.value)
    assert "sum_tol=" in str(err.value) and "divide each row by its sum first" in str(err.value)


def test_cross_entropy_names_its_own_keywords():
    z, p, y = _probs()
    with pytest.raises(InvalidProbabilityError, match="from_logits=True"):
        evalkit.cross_entropy(z, y)
    with pytest.raises(InvalidProbabilityError, match="from_logits=False"):
        evalkit.cross_entropy(p, y, from_logits=True)


# -- the Python API in a notebook or a pipeline (issue 14.6) ---------------------------

def _tiny():
    return {"prob_a": [0.7, 0.1, 0.02, 1.0], "prob_b": [0.3, 0.9, 0.98, 0.0], "label": ["a", "b", "b", "b"]}


def test_arrow_stream_tables_are_accepted_as_is():
    import duckdb
    import polars as pl
    import pyarrow as pa

    want = evalkit.evaluate(pd.DataFrame(_tiny()))
    con = duckdb.connect()
    rel = con.sql("select * from (values (0.7::double, 0.3::double, 'a'), (0.1, 0.9, 'b'), "
                  "(0.02, 0.98, 'b'), (1.0, 0.0, 'b')) t(prob_a, prob_b, label)")
    for data in (pl.DataFrame(_tiny()), pa.table(_tiny()), rel, pa.table(_tiny()).to_reader()):
        got = evalkit.evaluate(data)
        assert got.mean == pytest.approx(want.mean, rel=1e-15), type(data)
        assert got.overall["clipped_low"] == 1
    labels = pl.DataFrame({"id": [0, 1], "label": [0, 1]})
    preds = pl.DataFrame({"id": [1, 0], "probs": [[0.2, 0.8], [0.6, 0.4]]})
    assert evalkit.evaluate(preds, labels=labels).mean == pytest.approx(-np.log([0.8, 0.6]).mean(), rel=1e-12)


def test_lazy_tables_are_collected(tmp_path):
    """A polars LazyFrame (predictions or labels) is collected with the streaming engine, no
    polars import in evalkit; anything whose collect() gives an Arrow stream table works; a
    failing query is an InputError, a collect() giving no table a UsageError; DuckDB
    relations and pandas frames (numpy or Arrow dtypes) are read as they are."""
    import duckdb
    import polars as pl

    want = evalkit.evaluate(pd.DataFrame(_tiny()))
    pd.DataFrame(_tiny()).to_parquet(tmp_path / "t.parquet")
    lazy = pl.scan_parquet(tmp_path / "t.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning from the way it is collected
        got = evalkit.evaluate(lazy)
    assert got.mean == pytest.approx(want.mean, rel=1e-15) and "LazyFrame" in got.metadata["input"]
    assert evalkit.evaluate(lazy.filter(pl.col("label") == "b")).overall["count"] == 3
    labels = pl.LazyFrame({"id": [0, 1], "label": [0, 1]})
    preds = pl.LazyFrame({"id": [1, 0], "probs": [[0.2, 0.8], [0.6, 0.4]]})
    assert evalkit.evaluate(preds, labels=labels).mean == pytest.approx(-np.log([0.8, 0.6]).mean(), rel=1e-12)

    class Lazy:  # a lazy table of another library: collect() without a streaming option
        def collect(self):
            return pa.table(_tiny())

    assert evalkit.evaluate(Lazy()).mean == pytest.approx(want.mean, rel=1e-15)
    with pytest.raises(evalkit.InputError, match="collecting the LazyFrame failed.*nope"):
        evalkit.evaluate(lazy.select(pl.col("nope")))

    class NotATable:
        def collect(self):
            return [1, 2]

    with pytest.raises(evalkit.UsageError, match="collect.. gave a list"):
        evalkit.evaluate(NotATable())
    rel = duckdb.sql(f"select * from '{tmp_path / 't.parquet'}'")
    assert evalkit.evaluate(rel).mean == pytest.approx(want.mean, rel=1e-15)
    arrow_dtypes = pd.read_parquet(tmp_path / "t.parquet", dtype_backend="pyarrow")
    assert evalkit.evaluate(arrow_dtypes).mean == pytest.approx(want.mean, rel=1e-15)


def test_result_prints_short_and_renders_in_jupyter():
    r = evalkit.evaluate(pd.DataFrame(_tiny()))
    text = repr(r)
    assert text.startswith("EvalResult: mean loss") and "nats" in text and len(text.splitlines()) <= 4
    assert "class (2 groups)" in text
    md = r._repr_markdown_()
    assert "| class | count |" in md and "clipped_low" in md
    html = r._repr_html_()
    assert "<table>" in html and "<th>class</th>" in html and "p_true &lt; eps" in html


def test_overall_is_typed():
    """Counts are ints, every other figure a float (issue 14.6): in the record, its frame,
    its Series, summary.json; it reads as a mapping and as attributes, and pickles."""
    import json
    import pickle

    from evalkit.overall import Overall

    r = evalkit.evaluate(pd.DataFrame(_tiny()))
    o = r.overall
    assert isinstance(o, Overall)
    counts = {"count", "clipped_low", "clipped_high"}
    assert {k for k, v in o.items() if type(v) is int} == counts
    assert all(type(v) is float for k, v in o.items() if k not in counts)
    assert o["count"] == 4 and o.count == 4 and o.mean == o["mean"] == r.mean > 0
    assert "ci_low" in o and "ci_low" in o.index and "nope" not in o and o.get("nope") is None
    with pytest.raises(AttributeError, match="no overall statistic 'nope'"):
        o.nope  # noqa: B018
    assert o.to_series().dtype == np.float64 and o.to_series()["count"] == 4.0
    assert pickle.loads(pickle.dumps(o)) == o
    assert repr(o).startswith("Overall(count=4, mean=")
    assert json.loads(json.dumps(r.to_dict()["overall"]))["count"] == 4
    frame = r.table("overall")
    assert frame["count"].dtype == np.int64 and frame["clipped_low"].dtype == np.int64
    assert frame["mean"].dtype == np.float64


# -- a binary column read for the wrong class (issue 14.3/14.4) ---------------------------

@pytest.fixture(scope="module")
def cancer_probs():
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    X, y = load_breast_cancer(return_X_y=True)
    p = LogisticRegression(max_iter=5000).fit(X, y).predict_proba(X)[:, 1]  # P(benign): sklearn's class 1
    return p, y


def _by_hand(p_true: np.ndarray) -> float:
    return float(-np.log(np.clip(p_true, 1e-7, 1 - 1e-7)).mean())


def test_reversed_binary_column_warns_and_changes_no_number(cancer_probs, tmp_path):
    """String labels sorted (benign, malignant) make P(benign) read as P(malignant): accuracy
    4%. The run warns, naming the column and the reversed --classes order, and its numbers
    are those of the declared reading; the reversed order gives sklearn's loss, no warning."""
    from sklearn.metrics import log_loss

    p, y = cancer_probs
    names = np.array(["malignant", "benign"])[y]
    df = pd.DataFrame({"prob": p, "label": names})
    with pytest.warns(evalkit.EvalkitWarning, match=r"binary column 'prob' looks reversed") as rec:
        r = evalkit.evaluate(df, classes=["benign", "malignant"])
    text = str(rec[0].message)
    assert "classes=['malignant', 'benign']" in text and "accuracy 4.2%" in text, text
    assert r.mean == pytest.approx(_by_hand(np.where(y == 1, 1 - p, p)), rel=1e-12)  # the declared reading
    assert r.overall["accuracy"] < 0.1 and any("looks reversed" in w for w in r.metadata["warnings"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = evalkit.evaluate(df, classes=["malignant", "benign"])
    assert good.mean == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), rel=1e-9)
    # Integer labels with a column holding P(class 0): the advice classes=['1', '0'] fixes it.
    flipped = pd.DataFrame({"prob": 1 - p, "label": y})
    with pytest.warns(evalkit.EvalkitWarning, match=r"classes=\['1', '0'\]"):
        evalkit.evaluate(flipped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert evalkit.evaluate(flipped, classes=["1", "0"]).mean == pytest.approx(good.mean, rel=1e-12)
    # Logits too.
    z = np.log(p) - np.log1p(-p)
    with pytest.warns(evalkit.EvalkitWarning, match="looks reversed"):
        evalkit.evaluate(pd.DataFrame({"logit": -z, "label": y}))
    # At the CLI: a warning line with the flag, summary.json lists it.
    df.to_parquet(tmp_path / "bc.parquet")
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "bc.parquet"), "--classes", "benign,malignant",
                                    "--out", str(tmp_path / "r"), "--no-plots"])
    assert res.exit_code == 0 and "looks reversed" in res.output and "--classes malignant,benign" in res.output


def test_honest_weak_models_do_not_warn(cancer_probs):
    """No warning for a model that is merely bad: random probabilities against random labels
    (accuracy 50%, loss about 1 nat either way), a prior-only model, a weak 60% model."""
    rng = np.random.default_rng(0)
    n = 5000
    y = rng.integers(0, 2, n)
    cases = [rng.random(n), np.full(n, 0.37), np.where(rng.random(n) < 0.6, y, 1 - y) * 0.2 + 0.4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for p in cases:
            evalkit.evaluate(pd.DataFrame({"prob": p, "label": y}))
        evalkit.evaluate(pd.DataFrame({"prob": 1 - cancer_probs[0][:10], "label": cancer_probs[1][:10]}))  # < 20 rows


def test_reversal_evidence_is_bounded_and_merges():
    from evalkit.validate import REVERSAL_SAMPLE_ROWS, ReversedBinary

    rng = np.random.default_rng(1)
    p_true = rng.random(3000)
    loss = -np.log(p_true)
    correct = p_true > 0.5
    whole = ReversedBinary()
    whole.update(p_true, loss, correct, 1e-7)
    a, b = ReversedBinary(), ReversedBinary()
    a.update(p_true[:1000], loss[:1000], correct[:1000], 1e-7)
    b.update(p_true[1000:], loss[1000:], correct[1000:], 1e-7)
    m = a.merge(b)
    assert (m.n, m.correct, m.correct_swapped) == (whole.n, whole.correct, whole.correct_swapped) == (
        3000, int(correct.sum()), int((p_true < 0.5).sum()))
    assert m.loss_swapped == pytest.approx(-np.log(1 - p_true).sum(), rel=1e-12)
    big = ReversedBinary(n=REVERSAL_SAMPLE_ROWS - 10)
    big.update(p_true, loss, correct, 1e-7)
    assert big.n == REVERSAL_SAMPLE_ROWS and big.correct == int(correct[:10].sum())


def test_dir_lists_the_public_api_once():
    names = dir(evalkit)
    assert len(names) == len(set(names)) and set(names) == set(evalkit.__all__) | {"__version__"}
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib"} & set(names)


def test_join_says_which_shared_column_is_kept():
    """A column in both inputs besides the key: the predictions' values are used, and the
    report says so (metadata.shared_columns, the labels row of report.md)."""
    p = pd.DataFrame({"id": [0, 1, 2], "split": ["a", "a", "b"], "probs": [[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]]})
    labels = pd.DataFrame({"id": [2, 0, 1], "split": ["x", "y", "z"], "label": [0, 0, 1]})
    r = evalkit.evaluate(p, labels=labels)
    assert r.metadata["on"] == ["id"] and r.metadata["shared_columns"] == ["split"]
    assert r.groups["split"]["split"].tolist() == ["a", "b"]
    assert "joined on id (split also in the labels input: the predictions' values are used)" in r.to_markdown()
    assert evalkit.evaluate(p.drop(columns="split"), labels=labels).metadata["shared_columns"] == []


def test_extreme_finite_logits_raise_no_numpy_warning():
    """Logits of +-1e308 are finite: the finiteness check's overflowing sum stays silent and
    the loss is computed (no raw RuntimeWarning reaches a -q run)."""
    z = np.array([[-1e308, -1e308], [0.0, 1.0], [5.0, -1e308]])
    y = np.array([0, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = evalkit.evaluate(pd.DataFrame({"logit_a": z[:, 0], "logit_b": z[:, 1], "label": y}), logits=True)
        lists = evalkit.evaluate(pd.DataFrame({"logits": list(z), "label": y}), logits=True)
    want = np.log(2) + np.log1p(np.exp(-1.0)) - np.log1p(-1e-7)  # row 3: p_true = 1 clipped to 1 - eps
    assert wide.mean == pytest.approx(want / 3, rel=1e-12) and lists.mean == pytest.approx(want / 3, rel=1e-12)
