"""The steps of evalkit.pipeline, each on its own, and their composition equal to evaluate()."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import evalkit
from evalkit import errors as E
from evalkit import pipeline as P
from evalkit.config import EvalConfig
from evalkit.engines.base import Grouping

from .conftest import by_hand, random_probs, write


def _frame(n=30, k=3, seed=0, split=True):
    rng = np.random.default_rng(seed)
    p = random_probs(rng, n, k)
    y = rng.integers(0, k, n)
    cols = {"id": np.arange(n), "label": y, **{f"prob_{i}": p[:, i] for i in range(k)}}
    if split:
        cols["split"] = rng.choice(["train", "test"], n)
    cols["region"] = rng.choice(["EU", "US"], n)
    return pd.DataFrame(cols), p, y


def _steps_up_to_plan(data, cfg, labels=None):
    inputs = P.resolve_inputs(data, labels, cfg)
    layout = P.detect_input_layout(inputs, cfg)
    groupings = P.resolve_groupings(cfg, inputs.names)
    return inputs, layout, groupings, P.build_plan(cfg, inputs, layout, groupings)


# -- resolve_config ---------------------------------------------------------------------


def test_resolve_config_applies_arguments_over_config():
    base = EvalConfig.coerce({"eps": 1e-3, "by": [["region"]]})
    cfg = P.resolve_config(base, {"top_k": 3}, eps=1e-5, on="id", by="split",
                           labels="labels.parquet")
    assert cfg.eps == 1e-5 and cfg.top_k == 3
    assert cfg.on == ["id"]
    assert [tuple(b) for b in cfg.by] == [("split",)]
    assert cfg.labels == "labels.parquet"
    untouched = P.resolve_config({"eps": 1e-3}, {})
    assert untouched.eps == 1e-3 and untouched.on == []


def test_resolve_config_rejects_unknown_option():
    with pytest.raises(E.ConfigError, match="no_such_option"):
        P.resolve_config(None, {"no_such_option": 1})


# -- resolve_inputs ---------------------------------------------------------------------


def test_resolve_inputs_dataframe_keeps_index_and_counts_rows():
    df, _, _ = _frame(12)
    df.index = pd.RangeIndex(100, 112)
    totals = []

    class Progress:
        def set_total(self, n):
            totals.append(n)

        def __call__(self, done, total):  # pragma: no cover - not called by this step
            pass

    inputs = P.resolve_inputs(df, None, EvalConfig(), Progress())
    assert inputs.in_memory and inputs.label_index is None and inputs.label_names == []
    assert list(inputs.index) == list(range(100, 112))
    assert set(inputs.names) == set(df.columns)
    assert totals == [12]


def test_resolve_inputs_path_is_streamed(tmp_path):
    df, _, _ = _frame(10)
    path = write(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "p.parquet")
    inputs = P.resolve_inputs(str(path), None, EvalConfig())
    assert not inputs.in_memory and inputs.index is None
    assert inputs.source.count_rows() == 10


def test_resolve_inputs_rejects_other_types_and_labels_without_keys():
    with pytest.raises(E.UsageError, match="predictions: expected a path"):
        P.resolve_inputs(42, None, EvalConfig())
    df, _, _ = _frame(5)
    # The one shared key column is the join key; none shared: an error naming the setting.
    cfg = EvalConfig()
    P.resolve_inputs(df.drop(columns="label"), df[["id", "label"]], cfg)
    assert cfg.on == ["id"]
    with pytest.raises(E.UsageError, match="on=KEY"):
        P.resolve_inputs(df.drop(columns=["label", "id"]), df[["id", "label"]], EvalConfig())


def test_resolve_inputs_labels_are_indexed_and_checked():
    df, _, _ = _frame(5)
    cfg = EvalConfig.coerce({"on": ["id"]})
    inputs = P.resolve_inputs(df.drop(columns="label"), df[["id", "label"]], cfg)
    assert inputs.label_index is not None and inputs.label_names == ["id", "label"]
    with pytest.raises(E.MissingColumnError, match="key"):
        P.resolve_inputs(df, df[["label"]], cfg)
    with pytest.raises(E.EmptyInputError, match="labels input has no rows"):
        P.resolve_inputs(df, df[["id", "label"]].iloc[:0], cfg)


# -- detect_input_layout ----------------------------------------------------------------


def test_detect_input_layout_declared_and_detected():
    df, _, _ = _frame(6, k=4)
    inputs = P.resolve_inputs(df, None, EvalConfig())
    layout = P.detect_input_layout(inputs, EvalConfig())
    assert list(layout.classes) == ["0", "1", "2", "3"]
    assert list(layout.pred_columns) == [f"prob_{i}" for i in range(4)]
    with pytest.raises(E.EvalkitError):
        P.detect_input_layout(inputs, EvalConfig.coerce({"label": "no_such_column"}))


def test_peek_reads_first_list_row_only_for_list_columns():
    t = pa.table({"probs": pa.array([[0.5, 0.5], [0.1, 0.9]]), "label": [0, 1]})
    inputs = P.resolve_inputs(t, None, EvalConfig())
    first = P.peek(inputs.source)
    assert first is not None and first.num_rows == 1 and first.schema.names == ["probs"]
    df, _, _ = _frame(3)
    assert P.peek(P.resolve_inputs(df, None, EvalConfig()).source) is None


# -- groupings and gates ----------------------------------------------------------------


@pytest.mark.parametrize("settings, names, expected", [
    ({}, ["split"], ["overall", "class", "split"]),
    ({}, ["region"], ["overall", "class"]),
    ({"by_class": False, "by_split": False}, ["split"], ["overall"]),
    ({"by": [["region"], ["class"], ["split", "region"]]}, ["split", "region"],
     ["overall", "class", "split", "region", "split,region"]),
    ({"by": [["split"]]}, ["split"], ["overall", "class", "split"]),
])
def test_resolve_groupings_order(settings, names, expected):
    gs = P.resolve_groupings(EvalConfig.coerce(settings), names)
    assert [g.name for g in gs] == expected
    assert gs[0] == Grouping("overall", ())


def test_check_gated_groupings_names_the_unknown_grouping():
    cfg = EvalConfig.coerce({"gates": {"groups": {"region": {"max_mean_loss": 1.0}}}})
    with pytest.raises(E.ConfigError, match="no grouping 'region'.*overall, class"):
        P.check_gated_groupings(cfg, P.resolve_groupings(cfg, []))
    P.check_gated_groupings(cfg, (Grouping("overall", ()), Grouping("region", ("region",))))


# -- build_plan -------------------------------------------------------------------------


def test_build_plan_columns_and_settings():
    df, _, _ = _frame(20)
    df["w"] = 1.0
    cfg = EvalConfig.coerce({"by": [["region"]], "keys": ["id"], "weight": "w", "eps": 1e-4,
                             "top_k": 2})
    _, _, _, plan = _steps_up_to_plan(df, cfg)
    assert plan.carry == ("id", "split", "region", "w")
    assert plan.eps == 1e-4 and plan.top_k == 2 and plan.label_columns_from_join == ()
    assert set(plan.input_columns) >= {"prob_0", "prob_1", "prob_2", "label", "id", "w"}


def test_build_plan_group_columns_from_the_label_side():
    df, _, _ = _frame(8)
    preds = df.drop(columns=["label", "region"])
    labels = df[["id", "label", "region"]]
    cfg = EvalConfig.coerce({"on": ["id"], "by": [["region"]]})
    _, _, _, plan = _steps_up_to_plan(preds, cfg, labels)
    assert plan.label_columns_from_join == ("label", "region")
    assert plan.on == ("id",)


def test_build_plan_missing_group_column():
    df, _, _ = _frame(8)
    with pytest.raises(E.MissingColumnError, match="nope"):
        _steps_up_to_plan(df, EvalConfig.coerce({"by": [["nope"]]}))


def test_quantile_mode_resolved_from_row_count():
    df, _, _ = _frame(20)
    src = P.resolve_inputs(df, None, EvalConfig()).source
    assert P.quantile_mode(EvalConfig.coerce({"exact_limit": 10}), src) == "sketch"
    assert P.quantile_mode(EvalConfig.coerce({"exact_limit": 20}), src) == "auto"
    # Rows may be dropped: the total does not decide it yet.
    assert P.quantile_mode(EvalConfig.coerce({"exact_limit": 10, "on_invalid": "skip"}),
                           src) == "auto"
    assert P.quantile_mode(EvalConfig.coerce({"quantiles": "exact", "exact_limit": 10}),
                           src) == "exact"


# -- open_spool -------------------------------------------------------------------------


def test_open_spool_kinds(tmp_path):
    assert P.open_spool(EvalConfig.coerce({"write_rows": False}), False, tmp_path) == P.RowSpool()
    mem = P.open_spool(EvalConfig(), True, tmp_path)
    assert mem.kept == [] and mem.path is None and mem.table() is None
    local = P.open_spool(EvalConfig(), False, tmp_path)
    assert local.path.name == "rows.parquet" and local.path.parent.parent == tmp_path
    assert local.writer is not None
    local.discard()
    assert not local.path.parent.exists()
    dask = P.open_spool(EvalConfig.coerce({"engine": "dask"}), False, tmp_path)
    assert dask.path.name == "rows" and dask.writer is None
    P.cleanup_spool(dask.path)
    assert list(tmp_path.iterdir()) == []


# -- run_engine, check_run --------------------------------------------------------------


def test_run_engine_then_check_run(tmp_path):
    df, p, y = _frame(40)
    path = write(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "in" / "p.parquet")
    cfg = EvalConfig()
    inputs, layout, groupings, plan = _steps_up_to_plan(str(path), cfg)
    spool = P.open_spool(cfg, inputs.in_memory, tmp_path / "spool")
    state = P.run_engine(plan, inputs, cfg, spool)
    assert state.rows_read == state.rows_used == 40
    assert spool.path.is_file()
    assert P.check_run(state, inputs, cfg, spool) == 0
    total = state.stats["overall"].finalize()["sum"].iloc[0]
    assert math.isclose(total, by_hand(p, y).sum(), rel_tol=1e-12)
    P.cleanup_spool(spool.path)


def test_run_engine_removes_the_spool_on_error(tmp_path):
    df, _, _ = _frame(10)
    df.loc[3, "prob_0"] = 7.0
    path = write(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "in" / "p.parquet")
    cfg = EvalConfig()
    inputs, _, _, plan = _steps_up_to_plan(str(path), cfg)
    spool_parent = tmp_path / "spool"
    spool = P.open_spool(cfg, inputs.in_memory, spool_parent)
    with pytest.raises(E.InvalidProbabilityError):
        P.run_engine(plan, inputs, cfg, spool)
    assert list(spool_parent.iterdir()) == []


def test_check_run_empty_and_all_skipped(tmp_path):
    df, _, _ = _frame(6)
    cfg = EvalConfig()
    inputs, _, _, plan = _steps_up_to_plan(df.iloc[:0], cfg)
    spool = P.open_spool(cfg, inputs.in_memory)
    state = P.run_engine(plan, inputs, cfg, spool)
    with pytest.raises(E.EmptyInputError, match="no rows"):
        P.check_run(state, inputs, cfg, spool)
    bad = df.assign(prob_0=5.0)
    cfg = EvalConfig.coerce({"on_invalid": "skip"})
    inputs, _, _, plan = _steps_up_to_plan(bad, cfg)
    spool = P.open_spool(cfg, inputs.in_memory)
    state = P.run_engine(plan, inputs, cfg, spool)
    with pytest.raises(E.InputError, match="every row was invalid"):
        P.check_run(state, inputs, cfg, spool)


def test_check_run_unmatched_labels():
    df, _, _ = _frame(6)
    preds = df.drop(columns="label").iloc[:4]
    labels = df[["id", "label"]]
    for unmatched, expect in (("error", E.JoinError), ("drop", None)):
        cfg = EvalConfig.coerce({"on": ["id"], "unmatched": unmatched})
        inputs, _, _, plan = _steps_up_to_plan(preds, cfg, labels)
        spool = P.open_spool(cfg, inputs.in_memory)
        state = P.run_engine(plan, inputs, cfg, spool)
        if expect is not None:
            with pytest.raises(expect, match="no prediction row"):
                P.check_run(state, inputs, cfg, spool)
        else:
            assert P.check_run(state, inputs, cfg, spool) == 2
            assert state.skipped["unmatched_label_key"] == 2


# -- finalise_stats, build_metadata, and the whole chain ---------------------------------


def test_finalise_stats_lists_every_class():
    df, _, _ = _frame(10)
    df["label"] = 0  # classes 1 and 2 never occur
    cfg = EvalConfig()
    inputs, layout, _, plan = _steps_up_to_plan(df, cfg)
    state = P.run_engine(plan, inputs, cfg, P.open_spool(cfg, True))
    tables = P.finalise_stats(state, layout)
    assert tables.groups["class"]["count"].tolist() == [10, 0, 0]
    assert tables.groups["class"]["count"].dtype == np.int64
    # The overall line is typed: counts int, figures float; its one-row frame keeps counts int64.
    assert type(tables.overall["count"]) is int and tables.overall["count"] == 10
    assert type(tables.overall["mean"]) is float
    assert tables.overall_frame["count"].dtype == np.int64
    assert tables.class_hist is None
    assert list(tables.hardest) == ["overall", "class"]


def test_all_classes_keeps_full_tables():
    full = pd.DataFrame({"class": ["a", "b"], "count": [1, 2]})
    assert P.all_classes(full, ["a", "b"]) is full
    out = P.all_classes(full.iloc[[1]], ["a", "b", "c"])
    assert out["class"].tolist() == ["a", "b", "c"] and out["count"].tolist() == [0, 2, 0]


def test_steps_compose_to_evaluate():
    df, _, _ = _frame(50, seed=3)
    cfg = P.resolve_config(None, {}, by=["region"])
    inputs, layout, groupings, plan = _steps_up_to_plan(df, cfg)
    spool = P.open_spool(cfg, inputs.in_memory)
    state = P.run_engine(plan, inputs, cfg, spool)
    unmatched = P.check_run(state, inputs, cfg, spool)
    tables = P.finalise_stats(state, layout)
    meta = P.build_metadata(cfg, inputs.source, layout, state, plan, 0.0, 1.5, unmatched, None)
    ref = evalkit.evaluate(df, by=["region"])
    assert dict(tables.overall) == dict(ref.overall)
    assert tables.groups.keys() == ref.groups.keys()
    for name, frame in tables.groups.items():
        pd.testing.assert_frame_equal(frame, ref.groups[name])
    pd.testing.assert_frame_equal(tables.confusion, ref.confusion)
    assert meta["groupings"] == ref.metadata["groupings"] == ["overall", "class", "split", "region"]
    assert meta["created"] == "1970-01-01T00:00:00Z" and meta["duration_s"] == 1.5
    for key in ("rows_read", "rows_used", "classes", "layout", "config_hash", "quantiles"):
        assert meta[key] == ref.metadata[key], key


def test_per_row_file_codecs_and_statistics(tmp_path):
    """rows.parquet: every column lz4 (LZ4_RAW); min / max statistics for every column but
    the class columns label / predicted; the values are the run's."""
    import pyarrow.parquet as pq

    df, p, y = _frame(40)
    path = write(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "in" / "p.parquet")
    result = evalkit.evaluate(str(path), out=tmp_path / "r", plots=False)
    meta = pq.ParquetFile(tmp_path / "r" / "rows.parquet").metadata.row_group(0)
    cols = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert {c.compression for c in cols.values()} == {"LZ4"}
    assert {n for n, c in cols.items() if not c.is_stats_set} == {"label", "predicted"}
    assert cols["loss"].statistics.max == result.rows["loss"].max()
    np.testing.assert_array_equal(pq.read_table(tmp_path / "r" / "rows.parquet")["loss"].to_numpy(),
                                  result.rows["loss"].to_numpy())


def test_row_writer_finished_in_the_background_is_the_same_file(tmp_path):
    """RowWriter.close(background=True) finishes the file on the writer's thread: after
    wait() it is byte for byte the file close() writes; closing again only waits."""
    from evalkit.io import RowWriter

    batches = [pa.record_batch({"row": np.arange(i, i + 300), "loss": np.linspace(0, 1, 300)})
               for i in range(0, 3000, 300)]
    paths = []
    for background in (False, True):
        w = RowWriter(tmp_path / f"r{background}.parquet", row_group_rows=1000)
        for b in batches:
            w.write(b)
        w.close(background=background)
        w.wait()
        w.close()
        paths.append(w.path)
    assert paths[0].read_bytes() == paths[1].read_bytes()


def _grouping_frame(**extra: object):  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 60)
    df = pd.DataFrame(p, columns=["prob_a", "prob_b", "prob_c"])
    df["label"] = rng.choice(list("abc"), 60)
    for k, v in extra.items():
        df[k] = v
    return df


@pytest.mark.parametrize("by", [["overall"], ["class"], ["class", "region"]])
def test_groupings_evalkit_names_would_hide_are_usage_errors(by) -> None:  # type: ignore[no-untyped-def]
    """rt-hist8 F13: `--by overall` crashed (the grouping landed in the overall line) and
    `--by class` on an input column `class` that is not the label silently grouped by the true
    class instead: both are usage errors asking to rename the column."""
    import evalkit
    from evalkit.errors import UsageError

    df = _grouping_frame(overall=["x", "y"] * 30, region=["EU", "US", "APAC"] * 20, **{"class": ["p", "q"] * 30})
    with pytest.raises(UsageError, match="rename the input column"):
        evalkit.evaluate(df, by=[by], plots=False)


def test_a_label_column_named_class_may_still_be_grouped_by() -> None:
    import evalkit

    df = _grouping_frame(region=["EU", "US", "APAC"] * 20).rename(columns={"label": "class"})
    result = evalkit.evaluate(df, label="class", by=[["class", "region"]], plots=False)
    assert "class,region" in result.groups
