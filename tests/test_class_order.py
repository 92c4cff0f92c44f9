"""The class order of positional predictions (a list column, a single P(class 1) column) when
the label column is categorical (fix6, fault 3): the categories' declared order, as written by
pandas, pyarrow and polars, unless ``classes`` says otherwise; never a silent re-ordering."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import evalkit
from evalkit.cli import main
from evalkit.errors import LabelError

DECLARED = ["pos", "neg", "neu"]  # not sorted: sorted is neg, neu, pos
N = 240


def _data(seed: int = 0, k: int = 3) -> tuple[np.ndarray, np.ndarray, float]:
    """Class codes (in declared order), probabilities whose column i is class i, and the mean
    loss when class i is the i-th declared category."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, N)
    p = rng.dirichlet(np.ones(k), N) * 0.4
    p[np.arange(N), y] += 0.6
    return y, p, float(np.mean(-np.log(p[np.arange(N), y])))


def _write(tmp_path, writer: str, y: np.ndarray, p: np.ndarray, cats=DECLARED, fixed: bool = False):
    path = tmp_path / f"{writer}.parquet"
    probs = pa.array(list(p), type=pa.list_(pa.float64(), p.shape[1]) if fixed else pa.list_(pa.float64()))
    labels = [cats[i] for i in y]
    if writer == "pandas":
        frame = pd.DataFrame({"id": range(N), "label": pd.Categorical(labels, categories=cats)})
        table = pa.Table.from_pandas(frame, preserve_index=False).append_column("probs", probs)
        pq.write_table(table, path)
    elif writer == "pyarrow":
        label = pa.DictionaryArray.from_arrays(pa.array(y, pa.int32()), pa.array(cats))
        pq.write_table(pa.table({"id": range(N), "probs": probs, "label": label}), path)
    else:
        import polars as pl

        dtype = pl.Enum(cats) if writer == "polars-enum" else pl.Categorical
        pl.DataFrame({"id": range(N), "probs": pl.from_arrow(probs),
                      "label": pl.Series(labels, dtype=dtype)}).write_parquet(path)
    return path


@pytest.mark.parametrize("writer", ["pandas", "pyarrow", "polars-enum"])
@pytest.mark.parametrize("fixed", [False, True])
def test_a_declared_category_order_names_the_positional_classes(tmp_path, writer, fixed):
    y, p, want = _data()
    path = _write(tmp_path, writer, y, p, fixed=fixed)
    res = evalkit.evaluate(path, plots=False)
    assert res.layout.classes == tuple(DECLARED)
    assert res.mean == pytest.approx(want, rel=1e-12)
    counts = res.groups["class"].set_index("class")["count"]
    assert [counts[c] for c in DECLARED] == [int((y == i).sum()) for i in range(3)]
    assert any("class order: the categories label column 'label' declares" in n for n in res.layout.notes)
    # the CLI and inspect say so too
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 0 and "classes (3): pos, neg, neu" in r.output, r.output


def test_classes_given_override_the_declared_order(tmp_path):
    y, p, want = _data(1)
    path = _write(tmp_path, "pandas", y, p)
    res = evalkit.evaluate(path, plots=False, classes=sorted(DECLARED))
    assert res.layout.classes == tuple(sorted(DECLARED))
    as_sorted = np.array([sorted(DECLARED).index(DECLARED[i]) for i in y])
    assert res.mean == pytest.approx(float(np.mean(-np.log(p[np.arange(N), as_sorted]))), rel=1e-12)
    assert res.mean != pytest.approx(want)


def test_unused_categories_count_and_in_memory_frames_agree(tmp_path):
    y, p, want = _data(2)
    y = np.where(y == 2, 0, y)  # 'neu' declared, never used
    want = float(np.mean(-np.log(p[np.arange(N), y])))
    path = _write(tmp_path, "pandas", y, p)
    assert evalkit.evaluate(path, plots=False).mean == pytest.approx(want, rel=1e-12)
    frame = pd.DataFrame({"probs": list(p), "label": pd.Categorical([DECLARED[i] for i in y], categories=DECLARED)})
    res = evalkit.evaluate(frame, plots=False)
    assert res.layout.classes == tuple(DECLARED) and res.mean == pytest.approx(want, rel=1e-12)


def test_a_polars_categorical_declares_no_order(tmp_path):
    """Its dictionary lists values as polars first saw them: refused as plain text labels are
    (classes needed), in a file and in memory, never read in that order."""
    import polars as pl

    y, p, _ = _data(3)
    path = _write(tmp_path, "polars-categorical", y, p)
    with pytest.raises(LabelError, match="does not name its classes"):
        evalkit.evaluate(path, plots=False)
    frame = pl.read_parquet(path)
    assert frame["label"].dtype == pl.Categorical
    with pytest.raises(LabelError, match="does not name its classes"):
        evalkit.evaluate(frame, plots=False)
    res = evalkit.evaluate(frame, plots=False, classes=DECLARED)
    assert res.mean == pytest.approx(_data(3)[2], rel=1e-12)


def test_plain_text_labels_and_number_named_categories_keep_the_old_rule(tmp_path):
    y, p, _ = _data(4)
    pq.write_table(pa.table({"probs": pa.array(list(p)), "label": [DECLARED[i] for i in y]}), tmp_path / "t.parquet")
    with pytest.raises(LabelError, match="does not name its classes"):
        evalkit.evaluate(tmp_path / "t.parquet", plots=False)
    # categories that are class numbers already name the classes by value, whatever their order
    frame = pd.DataFrame({"probs": list(p), "label": pd.Categorical([str(i) for i in y], categories=["2", "0", "1"])})
    res = evalkit.evaluate(frame, plots=False)
    assert res.layout.classes == ("0", "1", "2")
    assert res.mean == pytest.approx(float(np.mean(-np.log(p[np.arange(N), y]))), rel=1e-12)


def test_a_binary_column_is_p_of_the_second_declared_category(tmp_path):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, N)
    p_no = np.where(y == 1, 0.8, 0.3)  # the column holds P(class 1) = P('no')
    frame = pd.DataFrame({"prob": p_no, "label": pd.Categorical(np.array(["yes", "no"])[y], categories=["yes", "no"])})
    frame.to_parquet(tmp_path / "b.parquet")
    res = evalkit.evaluate(tmp_path / "b.parquet", plots=False)
    assert res.layout.classes == ("yes", "no")
    assert res.overall["accuracy"] == 1.0
    assert any("P(class 1) = P('no')" in n for n in res.layout.notes)


def test_files_declaring_different_orders_are_refused_not_mixed(tmp_path):
    y, p, _ = _data(6)
    (tmp_path / "d").mkdir()
    for k, cats in enumerate((DECLARED, DECLARED[::-1])):
        part = slice(k * N // 2, (k + 1) * N // 2)
        frame = pd.DataFrame({"probs": list(p[part]), "label": pd.Categorical([cats[i] for i in y[part]],
                                                                               categories=cats)})
        frame.to_parquet(tmp_path / "d" / f"part{k}.parquet")
    with pytest.raises(LabelError, match=r"part1.parquet: column label: this part of the input declares its "
                                         r"categories in another order \(neu, neg, pos\)"):
        evalkit.evaluate(tmp_path / "d", plots=False)
    res = evalkit.evaluate(tmp_path / "d", plots=False, on_invalid="skip")
    assert res.overall["count"] == N // 2 and res.metadata["skipped"] == {"label_order": N // 2}


def test_an_integer_categorical_keeps_its_values_as_class_indices(tmp_path):
    """Rule (2) is for categories of text: integer categories declared as [2, 0, 1] still name
    class 2 by the value 2 (rt-eval F4)."""
    y, p, want = _data(8)
    frame = pd.DataFrame({"probs": list(p), "label": pd.Categorical(y, categories=[2, 0, 1])})
    frame.to_parquet(tmp_path / "i.parquet")
    for data in (frame, tmp_path / "i.parquet"):
        res = evalkit.evaluate(data, plots=False)
        assert res.layout.classes == ("0", "1", "2") and res.layout.label_kind == "index"
        assert res.mean == pytest.approx(want, rel=1e-12)
        assert not any("class order" in n for n in res.layout.notes)



def _declared(n: int, seed: int, categories: list[str] | None = None):  # type: ignore[no-untyped-def]
    """Labels declared as the categories low, medium, high (or ``categories``) and 3-class
    probabilities putting 0.8 on each row's label, in that order: (cats, labels, probs)."""
    cats = ["low", "medium", "high"]
    rng = np.random.default_rng(seed)
    lab = pd.Categorical(rng.choice(cats, n), categories=categories or cats)
    probs = np.full((n, 3), 0.1)
    probs[np.arange(n), lab.codes] = 0.8
    return cats, lab, probs

def test_a_separate_labels_file_declares_the_order_like_a_label_column(tmp_path):
    """The declared-order rule held for a label column in the predictions file, but a label
    read from a separate --labels Parquet file (decoded into the join index) was plain text:
    LabelError with a hint for the sorted order (high, low, medium), wrong for these
    probabilities. Same rule for both now."""
    n = 300
    cats, lab, probs = _declared(n, 0)
    pd.DataFrame({"id": range(n), "probs": list(probs)}).to_parquet(tmp_path / "pred.parquet")
    pd.DataFrame({"id": range(n), "label": lab}).to_parquet(tmp_path / "lab.parquet")
    pd.DataFrame({"id": range(n), "probs": list(probs), "label": lab}).to_parquet(tmp_path / "both.parquet")
    one = evalkit.evaluate(tmp_path / "both.parquet", plots=False)
    joined = evalkit.evaluate(tmp_path / "pred.parquet", labels=tmp_path / "lab.parquet", plots=False)
    assert list(joined.metadata["classes"]) == cats == list(one.metadata["classes"])
    assert joined.overall["accuracy"] == one.overall["accuracy"] == 1.0
    assert joined.overall["mean"] == one.overall["mean"]
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pred.parquet"), "--labels", str(tmp_path / "lab.parquet"),
                                  "--no-plots", "--format", "none"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("separate", [False, True])
def test_a_category_count_other_than_k_gets_no_sorted_hint(tmp_path, separate):
    """Four declared categories (one unused) for three positional classes: the declared order
    cannot name them, and the hint suggested the sorted used values (high, low, medium),
    which mis-assigns these probabilities. It now says why no order is known and names none."""
    n = 300
    cats, lab, probs = _declared(n, 0, ["low", "medium", "high", "unknown"])
    if separate:
        pd.DataFrame({"id": range(n), "probs": list(probs)}).to_parquet(tmp_path / "p.parquet")
        pd.DataFrame({"id": range(n), "label": lab}).to_parquet(tmp_path / "l.parquet")
        kw = {"labels": tmp_path / "l.parquet"}
    else:
        pd.DataFrame({"id": range(n), "probs": list(probs), "label": lab}).to_parquet(tmp_path / "p.parquet")
        kw = {}
    with pytest.raises(LabelError) as err:
        evalkit.evaluate(tmp_path / "p.parquet", plots=False, **kw)
    text = str(err.value)
    assert "declares 4 categories (low, medium, high, unknown) for 3 classes" in text
    assert "high,low,medium" not in text and "'high', 'low', 'medium'" not in text and "sorted" not in text


def test_labels_files_declaring_different_category_orders_are_refused(tmp_path):
    """Several --labels files whose categorical label declares its categories in different
    orders were not checked against each other: the first file's order named the classes of
    the positional predictions, the other file's order was ignored silently. Now a LabelError
    (exit 3) naming both files and both orders; the same order (or some of the classes in
    the same relative order) is fine, and --classes settles it."""
    n = 200
    cats, lab, probs = _declared(n, 3)
    pd.DataFrame({"id": range(n), "probs": list(probs)}).to_parquet(tmp_path / "pred.parquet")
    first = pd.DataFrame({"id": range(100), "label": lab[:100]})
    cases = {"same": cats, "reversed": cats[::-1], "subset": ["low", "high"]}
    for name, order in cases.items():
        d = tmp_path / name
        d.mkdir()
        first.to_parquet(d / "1.parquet")
        values = np.asarray(lab[100:].astype(str))
        keep = np.isin(values, order)  # (subset: only rows of the classes it declares)
        pd.DataFrame({"id": np.arange(100, n)[keep], "label": pd.Categorical(values[keep], categories=order)}
                     ).to_parquet(d / "2.parquet")
    ok = evalkit.evaluate(tmp_path / "pred.parquet", labels=tmp_path / "same", plots=False)
    assert list(ok.metadata["classes"]) == cats and ok.overall["accuracy"] == 1.0
    sub = evalkit.evaluate(tmp_path / "pred.parquet", labels=tmp_path / "subset", unmatched="drop", plots=False)
    assert list(sub.metadata["classes"]) == cats and sub.overall["accuracy"] == 1.0
    with pytest.raises(LabelError, match=r"declare the categories of 'label' in different orders: .*1\.parquet "
                                         r"declares \(low, medium, high\).* but .*2\.parquet declares "
                                         r"\(high, medium, low\)"):
        evalkit.evaluate(tmp_path / "pred.parquet", labels=tmp_path / "reversed", plots=False)
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pred.parquet"), "--labels", str(tmp_path / "reversed"),
                                  "--no-plots", "--format", "none"])
    assert r.exit_code == 3 and "--classes low,medium,high" in r.stderr, r.output
    named = evalkit.evaluate(tmp_path / "pred.parquet", labels=tmp_path / "reversed", classes=cats, plots=False)
    assert named.overall["accuracy"] == 1.0


def _order_conflicts(tmp_path):
    """pred.parquet + labels dir lab/ (1.parquet low,medium,high; 2.parquet high,medium,low),
    and preds/ (the label inside the prediction files, a.parquet and b.parquet in those orders)."""
    n = 200
    cats, lab, probs = _declared(n, 5)
    pd.DataFrame({"id": range(n), "probs": list(probs)}).to_parquet(tmp_path / "pred.parquet")
    for d in ("lab", "preds"):
        (tmp_path / d).mkdir()
    for name, part, order in (("1", slice(0, 100), cats), ("2", slice(100, n), cats[::-1])):
        values = np.asarray(lab[part].astype(str))
        pd.DataFrame({"id": np.arange(n)[part], "label": pd.Categorical(values, categories=order)}
                     ).to_parquet(tmp_path / "lab" / f"{name}.parquet")
        pd.DataFrame({"probs": list(probs[part]), "label": pd.Categorical(values, categories=order)}
                     ).to_parquet(tmp_path / "preds" / f"{'ab'[int(name) - 1]}.parquet")
    return tmp_path


@pytest.mark.parametrize("separate", [True, False])
def test_inspect_warns_of_the_category_order_conflict_and_its_command_runs(tmp_path, separate):
    """rt-eval8 F8: inspect did not see that the files declare the label's categories in two
    orders, which evaluate refuses (exit 3), and its try: command failed as pasted. Now a
    warning saying evaluate will refuse it, and the suggested command names the first file's
    order with --classes (the other being a valid --classes value too)."""
    import json
    import shlex

    d = _order_conflicts(tmp_path)
    args = [str(d / "pred.parquet"), "--labels", str(d / "lab"), "--on", "id"] if separate else [str(d / "preds")]
    r = CliRunner().invoke(main, ["inspect", *args, "--format", "json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    refusal = [w for w in info["warnings"] if w.startswith("warning: evaluate will refuse the input (exit 3): ")]
    assert len(refusal) == 1 and "declare the categories of 'label' in different orders" in refusal[0], info
    assert "--classes low,medium,high (or --classes high,medium,low)" in refusal[0]
    assert "--classes low,medium,high" in info["suggested_command"]
    argv = shlex.split(info["suggested_command"])[1:]
    r = CliRunner().invoke(main, [*argv[: argv.index("--out")], "--no-plots", "--format", "none"])
    assert r.exit_code == 0, r.output


def test_the_order_refusal_offers_the_other_order_only_when_it_names_every_class(tmp_path):
    """'--classes low,medium,high (or the other)': the other file's order is no --classes
    value when it declares only some of the classes."""
    d = _order_conflicts(tmp_path)
    part = pd.read_parquet(d / "lab" / "2.parquet")
    part = part[part["label"] != "medium"]
    part.assign(label=pd.Categorical(part["label"].astype(str), categories=["high", "low"])).to_parquet(
        d / "lab" / "2.parquet", index=False)
    with pytest.raises(LabelError) as err:
        evalkit.evaluate(d / "pred.parquet", labels=d / "lab", on="id", unmatched="drop", plots=False)
    text = str(err.value)
    assert "classes=['low', 'medium', 'high'] (" in text and "declares 2 of the 3 classes, so its order cannot" in text
    assert "high,low" not in text and "'high', 'low']" not in text
