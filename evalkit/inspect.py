"""``evalkit inspect``: schema, row count and the layout evalkit would use."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .config import EvalConfig
from .errors import EvalkitError, LabelError, LayoutError, option, render_options
from .io import Source, open_source
from .join import check_label_orders, infer_join_key, suggest_join_key
from .layout import (
    LABEL_NAMES,
    LABEL_SAMPLE_ROWS,
    Layout,
    LayoutSpec,
    binary_values,
    check_label_sample,
    detect_layout,
    is_empty_fixed_list,
    label_sampler,
)
from .loss import sparse_loss
from .validate import ClassOrderFit, ReversedBinary, class_order_fit, unit_interval_logits

MAX_GROUP_CARDINALITY = 100

#: Schema lines ``render_inspect`` prints before it shortens the list (the first and last
#: columns, the count; ``--format json`` lists every one).
SCHEMA_LINES = 60


def inspect_input(
    path: str | os.PathLike[str] | Sequence[str],
    *,
    labels: str | None = None,
    config: EvalConfig | None = None,
    cli: bool = False,
) -> dict[str, Any]:
    """Describe an input: files, rows, schema, detected layout, candidate group columns and a
    ``suggested_command`` that runs as pasted (inputs and names shell-quoted, the layout
    settings and the labels join kept, never grouping by the label).

    ``layout_error`` and ``warnings`` name settings as flags (``--classes a,b``) with
    ``cli=True`` (``evalkit inspect``) and as keywords (``classes=['a', 'b']``) otherwise.
    ``warnings`` say what ``evaluate`` will refuse among the first rows' labels; when class
    names fix it, ``suggested_command`` carries them."""
    cfg = config or EvalConfig()
    src = open_source(path)
    label_src = open_source(labels) if labels else None
    info: dict[str, Any] = {
        "input": src.label,
        "files": len(src.files),
        "bytes": src.file_sizes(),
        "rows": src.count_rows(),
        "schema": [{"name": f.name, "type": str(f.type)} for f in src.schema],
    }
    # A fixed-size list of size 0 cannot be read back by Arrow: left out here, the layout
    # detection names it (an empty prediction list) instead of a read failure.
    head = src.head(10_000, [f.name for f in src.schema if f.name not in src.drift and not is_empty_fixed_list(f.type)])
    first = head.to_batches()[0] if head.num_rows else None
    spec = LayoutSpec(predictions=cfg.predictions or None, prefix=cfg.prefix, logits=cfg.logits,
                      label=cfg.label, targets=cfg.targets or None, target_prefix=cfg.target_prefix,
                      classes=cfg.classes or None, keys=cfg.keys, weight=cfg.weight)
    on = list(cfg.on)
    used: set[str] = {cfg.label or "", *LABEL_NAMES}  # never suggest grouping by the label
    notes = [n for s in (src, label_src) if s is not None for n in s.notes()]
    info["warnings"] = [f"warning: {note}" for note in notes if note is not None]
    try:
        if label_src is not None and not on:
            on = _join_key(src, label_src, warnings_=info["warnings"])
        layout, warnings, cfg = _detect_and_check(src, label_src, spec, first, cfg)
        warnings += _logit_warnings(layout, head)
        blocked, more, cfg = _refusals(src, label_src, layout, on, head, info["rows"], cfg)
        warnings += more
        info["layout"] = layout.describe()
        info["layout_error"] = None
        info["warnings"] += [render_options(w, cli=cli) for w in warnings]
        used |= set(layout.pred_columns) | set(layout.label_columns) | set(layout.keys) | set(on)
    except EvalkitError as exc:
        info["layout"] = []
        info["layout_error"] = exc.cli_text() if cli else str(exc)
        blocked = False
    info["blocked"] = blocked
    info["warnings"] = [render_options(w, cli=cli) for w in info["warnings"]]
    info["on"] = on
    candidates = []
    for f in src.schema:
        if f.name in used:
            continue
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)
                or pa.types.is_integer(t)):
            continue
        n_distinct = len(pc.unique(head.column(f.name))) if head.num_rows and f.name in head.column_names else 0
        if 0 < n_distinct <= MAX_GROUP_CARDINALITY and n_distinct < max(2, head.num_rows):
            candidates.append({"column": f.name, "distinct_in_sample": n_distinct})
    info["group_candidates"] = candidates
    by = [c["column"] for c in candidates if c["column"] != "split"][:3]
    info["suggested_command"] = suggested_command(path, labels, on, cfg, by)
    info["classes_note"] = _classes_note(layout, spec, cfg, cli) if info["layout_error"] is None else None
    return info


def _guess_label(src: Source, lschema: pa.Schema | None, spec: LayoutSpec, first: pa.RecordBatch | None,
                 sampler: Any, cfg: EvalConfig) -> Layout:
    """When no column has a label name: the layout with the one integer, string or boolean
    column whose first rows' values evaluate would all accept as labels (class indices in
    range, or the class names), judged by :func:`~evalkit.layout.check_label_sample`. Raises
    the detection's own :class:`~evalkit.errors.LayoutError` when there is not exactly one."""
    try:
        detect_layout(src.schema, spec, label_schema=lschema, source=src.label, first_batch=first,
                      label_sample=sampler)
    except LayoutError as exc:
        error = exc
    if spec.label or spec.targets or spec.target_prefix:
        raise error
    found = []
    for f in lschema or src.schema:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_boolean(t)) or f.name in cfg.on or f.name in (spec.keys or ()):
            continue
        try:
            layout = detect_layout(src.schema, replace(spec, label=f.name), label_schema=lschema,
                                   source=src.label, first_batch=first, label_sample=sampler)
        except EvalkitError:
            continue
        check = check_label_sample(layout, sampler, f.type, cfg.ignore_label)
        if not check.problems and len(sampler(f.name)) >= 2 and f.name not in layout.keys:
            found.append(layout)
    if len(found) > 1:
        names = ", ".join(repr(lay.label_columns[0]) for lay in found)
        raise LayoutError(f"{error.message}; columns whose first rows' values could all be labels: {names}")
    if not found:
        raise error
    return found[0]


def _join_key(src: Source, label_src: Source, warnings_: list[str]) -> list[str]:
    """The key the suggested command joins on (:func:`~evalkit.join.suggest_join_key`, judged
    on the first label rows), with a warning when it is not the one ``evaluate`` infers by
    itself; raises ``evaluate``'s own error when no key fits."""
    shared = [c for c in label_src.schema.names if c in src.schema.names and c not in label_src.drift]
    on = suggest_join_key(src.schema, label_src.head(10_000, shared))
    try:
        inferred = infer_join_key(src.schema, label_src.schema, src.label, label_src.label)
    except EvalkitError:
        if not on:
            raise
        inferred = []
    if on and on != inferred:
        warnings_.append(f"note: the suggested command joins with {option('on', on)}: its values are unique "
                         f"in the first {min(10_000, label_src.count_rows()):,} label rows"
                         + (f" ({inferred[0]} alone is not)" if inferred else
                            " (evaluate infers a key only when one shared column is plausible)"))
    return on or inferred


def _detect_and_check(src: Source, label_src: Source | None, spec: LayoutSpec, first: pa.RecordBatch | None,
                      cfg: EvalConfig) -> tuple[Layout, list[str], EvalConfig]:
    """The layout ``evaluate`` detects, what it will do with the first rows' labels
    (:func:`~evalkit.layout.check_label_sample`, the run's own label mapping), and the
    settings the suggested command needs: the class names that map string labels when the
    predictions only number their classes."""
    sampler = label_sampler((label_src or src).head)
    lschema = label_src.schema if label_src else None
    guessed: list[str] = []
    try:
        layout = detect_layout(src.schema, spec, label_schema=lschema, source=src.label, first_batch=first,
                               label_sample=sampler)
    except LayoutError:
        layout = _guess_label(src, lschema, spec, first, sampler, cfg)
        spec, cfg = replace(spec, label=layout.label_columns[0]), replace(cfg, label=layout.label_columns[0])
        guessed.append(f"note: no column has a label name; the suggested command names the one column whose "
                       f"first rows' values all name a class: {option('label', layout.label_columns[0])}")
    conflict = _order_conflict(src, label_src, layout)
    if conflict:  # the suggested command names the first file's order
        guessed += conflict
        cfg = replace(cfg, classes=list(layout.classes))
    if layout.label_kind not in ("index", "name"):
        return layout, guessed, cfg
    label_type = (lschema or src.schema).field(layout.label_columns[0]).type
    check = check_label_sample(layout, sampler, label_type, cfg.ignore_label)
    refuse = ("warning: evaluate will refuse the input (exit 3)" if check.coding else
              "warning: evaluate will refuse every row (exit 3)" if check.all_refused else
              f"warning: evaluate will refuse these rows (exit 3; {option('on_invalid', meta='skip')} "
              f"leaves them out)")
    warnings = guessed + [f"{refuse}: {p}" for p in check.problems]
    column = layout.label_columns[0]
    nulls = (label_src or src).head(LABEL_SAMPLE_ROWS, [column]).column(0).null_count
    if nulls:
        warnings.append(f"warning: evaluate will refuse these rows (exit 3): column {column}: null label: "
                        f"{nulls:,} of the first {LABEL_SAMPLE_ROWS:,} rows")
    if check.sentinel is not None and cfg.ignore_label is None:
        after = check_label_sample(layout, sampler, label_type, check.sentinel)
        warnings.append(f"with {option('ignore_label', check.sentinel)} (the suggested command below) the rows "
                        f"labelled {check.sentinel} are left out of every statistic and counted apart")
        cfg = replace(cfg, ignore_label=check.sentinel)
        check = replace(after, classes=after.classes or check.classes)
    if check.coding is not None:
        return _class_coding(src, label_src, spec, first, cfg, layout, warnings, check, label_type, sampler)
    if check.classes is not None:
        fixed = replace(spec, classes=list(check.classes))
        named = detect_layout(src.schema, fixed, label_schema=lschema, source=src.label, first_batch=first,
                              label_sample=sampler)
        if not check_label_sample(named, sampler, label_type, cfg.ignore_label).problems:
            order, why = _class_order(named, first if label_src is None else None, cfg.eps)
            warnings.append(f"with {option('classes', order)} (the suggested command below) the label values "
                            f"name the classes{why}")
            cfg = replace(cfg, classes=order)
            check = replace(check, problems=())
    if ((check.problems and not check.all_refused) or nulls) and cfg.on_invalid != "skip":
        warnings.append(f"the suggested command below leaves the refused rows out with "
                        f"{option('on_invalid', meta='skip')} (counted per reason in the report)")
        cfg = replace(cfg, on_invalid="skip")
    return layout, warnings, cfg


def _class_coding(src: Source, label_src: Source | None, spec: LayoutSpec, first: pa.RecordBatch | None,
                  cfg: EvalConfig, layout: Layout, warnings: list[str], check: Any, label_type: pa.DataType,
                  sampler: Any) -> tuple[Layout, list[str], EvalConfig]:
    """:func:`_detect_and_check` for labels that are a class coding (-1/1, -1/0/1, 1..K:
    :func:`~evalkit.layout.class_coding`): every value is a class, so the suggested command
    names the classes by those values (when the predictions take them: a list or binary
    column), else says to recode; it never leaves a value out (that would drop a class)."""
    coding = list(check.coding)
    lschema = label_src.schema if label_src else None
    try:
        named = detect_layout(src.schema, replace(spec, classes=coding), label_schema=lschema,
                              source=src.label, first_batch=first, label_sample=sampler)
        fits = not check_label_sample(named, sampler, label_type, cfg.ignore_label).problems
    except EvalkitError:
        fits = False
    if not fits:
        warnings.append(f"the label values {', '.join(coding)} are a class coding: recode them to "
                        f"0..{len(coding) - 1} (the suggested command below refuses them; leaving any out "
                        f"would drop a class)")
        return layout, warnings, cfg
    order, why = _class_order(named, first if label_src is None else None, cfg.eps)
    warnings.append(f"with {option('classes', order)} (the suggested command below) the label values "
                    f"{', '.join(coding)}, a class coding, name the classes{why}")
    return layout, warnings, replace(cfg, classes=order)


def _refusals(src: Source, label_src: Source | None, layout: Layout, on: Sequence[str], head: pa.Table,
              rows: int, cfg: EvalConfig) -> tuple[bool, list[str], EvalConfig]:
    """What ``evaluate`` refuses before or whatever the labels: no rows, files that disagree on
    a column the run reads (:attr:`~evalkit.io.Source.drift`, judged on every file's footer,
    both files named), null predictions in the first rows. Returns whether the suggested command
    cannot run as it is (the input itself must change), the warnings, and the settings (null
    predictions in some rows: ``on_invalid`` skip, as for null labels)."""
    warnings: list[str] = []
    if rows == 0:
        warnings.append("warning: evaluate will refuse the input (exit 3): the input has no rows")
        return True, warnings, cfg
    label_side = label_src if label_src is not None else src
    needed = [(src, c) for c in (*layout.pred_columns, *layout.keys, *on, *([layout.weight] if layout.weight else []))]
    needed += [(label_side, c) for c in (*layout.label_columns, *(on if label_src is not None else ()))]
    seen: set[tuple[int, str]] = set()
    for source, column in needed:
        if (id(source), column) in seen or column not in source.drift:
            continue
        seen.add((id(source), column))
        warnings.append(f"warning: evaluate will refuse the input (exit 3): {source.label}: {source.drift[column]}")
    if warnings:
        return True, warnings, cfg
    present = [c for c in layout.pred_columns if c in head.column_names]
    if not present or not head.num_rows:
        return False, warnings, cfg
    null = np.zeros(head.num_rows, dtype=bool)
    empty = np.zeros(head.num_rows, dtype=bool)
    for c in present:
        null |= head.column(c).is_null().to_numpy(zero_copy_only=False)
        if layout.kind == "list":
            empty |= pc.fill_null(pc.list_value_length(head.column(c)), -1).to_numpy(zero_copy_only=False) == 0
    if not (null | empty).any():
        return False, warnings, cfg
    shown = _short_list_text(present)
    what = "; ".join(f"{text} in {shown}: {int(mask.sum()):,} of the first {head.num_rows:,} rows"
                     for text, mask in (("null (missing) prediction", null),
                                        ("empty prediction list (0 classes)", empty & ~null)) if mask.any())
    null |= empty
    if null.all():
        warnings.append(f"warning: evaluate will refuse every row (exit 3): {what}")
        return True, warnings, cfg
    warnings.append(f"warning: evaluate will refuse these rows (exit 3; {option('on_invalid', meta='skip')} "
                    f"leaves them out): {what}")
    if cfg.on_invalid != "skip":
        warnings.append(f"the suggested command below leaves the refused rows out with "
                        f"{option('on_invalid', meta='skip')} (counted per reason in the report)")
        cfg = replace(cfg, on_invalid="skip")
    return False, warnings, cfg


def _short_list_text(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _order_conflict(src: Source, label_src: Source | None, layout: Any) -> list[str]:
    """``evaluate``'s refusal of files whose categorical label declares its categories in
    different orders when that order names the classes (rt-eval8 F8: inspect did not see it
    and its suggested command failed with exit 3): judged on each file's first batch of the
    label column (its dictionary), a warning and the note that the suggested command names
    the first file's order with ``--classes``. Empty when there is no conflict."""
    if not layout.declared_order or not layout.label_columns:
        return []
    source, files = (label_src, "labels files") if label_src is not None else (src, "files")
    try:
        check_label_orders(source, layout.label_columns[0], layout.classes, files=files, first_batch_only=True)
    except LabelError as exc:
        return [f"warning: evaluate will refuse the input (exit 3): {exc.message}",
                f"with {option('classes', list(layout.classes))} (the suggested command below) the first file's "
                f"declared order names the classes: check that it is the order the predictions follow"]
    return []


def _class_order(named: Layout, batch: pa.RecordBatch | None, eps: float) -> tuple[list[str], str]:
    """The class order the suggested command names, and why. Sorted (scikit-learn's
    ``model.classes_``), except for a binary column that reads far better as the probability
    of the other class on the first rows (:class:`~evalkit.validate.ReversedBinary`, the
    check evaluate warns with); for a binary column the text says which class it is read for."""
    order = list(named.classes)
    if named.kind != "binary":
        fit = _first_rows_order_fit(named, batch)
        if fit is not None:  # the rule evaluate warns with, on the first rows
            return list(fit.order), (f" (not the sorted order {', '.join(order)}: on the first {fit.n:,} rows the "
                                     f"predictions are {100 * fit.fitted_accuracy:.1f}% accurate in this order, "
                                     f"{100 * fit.accuracy:.1f}% in the sorted one)")
        return order, f": {', '.join(named.describe()[2:3])}"
    col = named.pred_columns[0]
    check = ReversedBinary()
    if batch is not None and {col, *named.label_columns} <= set(batch.schema.names):
        scores = named.scores(batch)
        y, _, problems = named.labels(batch)
        ok = np.isfinite(scores).all(axis=1)
        if not named.from_logits:
            ok &= (scores >= 0).all(axis=1) & (scores <= 1).all(axis=1)
        for p in problems:
            ok &= ~p.mask
        out = sparse_loss(scores[ok], y[ok], eps, named.from_logits)  # type: ignore[index]
        check.update(out.p_true, out.loss, out.correct, eps)
    if check.reads_reversed():
        return order[::-1], (f" (not the sorted order: {check.figures(col, order)}); {col!r} is read as "
                             f"P({order[0]!r})")
    return order, (f" (sorted, as scikit-learn's model.classes_): {col!r} is read as P({order[1]!r}); if it "
                   f"holds P({order[0]!r}), name them {option('classes', order[::-1])}")


def _first_rows_order_fit(named: Layout, batch: pa.RecordBatch | None) -> ClassOrderFit | None:
    """:func:`~evalkit.validate.class_order_fit` of positional predictions on the first rows
    (their valid rows), None when the order is not positional or nothing fits better."""
    if not named.order_unverified or batch is None:
        return None
    if not {*named.pred_columns, *named.label_columns} <= set(batch.schema.names):
        return None
    if any(p.mask.any() for p in named.structural_problems(batch)):
        return None  # empty / short lists: evaluate's own refusal says it
    scores = named.scores(batch)
    y, _, problems = named.labels(batch)
    if y is None:
        return None
    ok = np.isfinite(scores).all(axis=1)
    for p in problems:
        ok &= ~p.mask
    k = named.n_classes
    predicted = scores[ok].argmax(axis=1)
    counts = np.bincount(y[ok] * k + predicted, minlength=k * k).reshape(k, k)
    return class_order_fit(counts, named.classes)


def _logit_warnings(layout: Layout, head: pa.Table) -> list[str]:
    """The warning ``evaluate`` gives when a binary logit column lies in [0, 1], judged on
    the first rows (:func:`~evalkit.validate.unit_interval_logits`)."""
    col = layout.pred_columns[0]
    if layout.kind != "binary" or not layout.from_logits or col not in head.column_names:
        return []
    values = binary_values(head.column(col)).drop_null()
    if len(values) == 0:
        return []
    z = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    z = z[np.isfinite(z)]
    if not len(z):
        return []
    text = unit_interval_logits(col, float(z.min()), float(z.max()), f"in the first {head.num_rows:,} rows")
    return [] if text is None else [f"warning: evaluate will warn: {text}"]


def _classes_note(layout: Layout, spec: LayoutSpec, cfg: EvalConfig, cli: bool) -> str | None:
    """What the suggested command's class order rests on when inspect chose it for positional
    predictions (:attr:`~evalkit.layout.Layout.order_unverified`): nothing in the data states
    it, so it is a guess (sorted, or the order the first rows fit), to check."""
    if spec.classes or not cfg.classes:
        return None
    named = replace(layout, classes=tuple(str(c) for c in cfg.classes))
    if not named.order_unverified:
        return None
    return render_options(f"the {option('classes')} order above is a guess, as the input does not state its class "
                          f"order: check that it is the model's class-index order; evaluate warns when the "
                          f"predictions fit another order far better", cli=cli)


def suggested_command(path: str | os.PathLike[str] | Sequence[str], labels: str | None, on: Sequence[str],
                      cfg: EvalConfig, by: Sequence[str]) -> str:
    """An ``evalkit evaluate`` line that runs as pasted in a POSIX shell."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    words = ["evalkit", "evaluate", *(os.fspath(p) for p in paths)]
    if labels:
        words += ["--labels", labels] + [w for key in on for w in ("--on", key)]
    words += [w for c in cfg.predictions for w in ("-p", c)]
    for flag, value in (("--prefix", cfg.prefix), ("--label", cfg.label), ("--target-prefix", cfg.target_prefix),
                        ("--weight", cfg.weight)):
        if value:
            words += [flag, value]
    words += [w for c in cfg.targets for w in ("--targets", c)]
    words += [w for c in cfg.keys or () for w in ("--key", c)]
    if cfg.classes:
        from .cli_common import join_names

        words += ["--classes", join_names(list(cfg.classes))]
    if cfg.logits is not None:
        words.append("--logits" if cfg.logits else "--probs")
    if cfg.ignore_label is not None:
        words += ["--ignore-label", str(cfg.ignore_label)]
    if cfg.on_invalid != "error":
        words += ["--on-invalid", cfg.on_invalid]
    words += [w for c in by for w in ("--by", c)]
    return " ".join(shlex.quote(w) for w in words) + " --out report/"


def render_inspect(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`inspect_input`."""
    from .report import _bytes

    lines = [
        f"input:  {info['input']}",
        f"files:  {info['files']:,} ({_bytes(info['bytes'])})",
        f"rows:   {info['rows']:,}",
        "",
        "schema:",
    ]
    schema = info["schema"]
    first, last = (schema, []) if len(schema) <= SCHEMA_LINES else (schema[:SCHEMA_LINES - 10], schema[-5:])
    width = max((len(c["name"]) for c in first + last), default=0)
    lines += [f"  {c['name'].ljust(width)}  {c['type']}" for c in first]
    if last:
        lines.append(f"  ... ({len(schema) - len(first) - len(last):,} more columns; {len(schema):,} in all: "
                     f"--format json lists every one)")
        lines += [f"  {c['name'].ljust(width)}  {c['type']}" for c in last]
    lines += ["", "detected layout:"]
    if info["layout_error"]:
        lines.append(f"  (not detected) {info['layout_error']}")
    else:
        lines += [f"  {line}" for line in info["layout"] + info["warnings"]]
    lines += ["", "candidate group columns (--by):"]
    if info["group_candidates"]:
        lines += [f"  {c['column']} ({c['distinct_in_sample']} distinct in the first rows)"
                  for c in info["group_candidates"]]
    else:
        lines.append("  (none)")
    if info["layout_error"]:  # no command runs before the layout is named
        lines += ["", "next: name the columns as said above, then run evalkit inspect again with those flags", ""]
    elif info.get("blocked"):  # a command that would run as pasted does not exist yet
        lines += ["", "next: evaluate will refuse this input as it is (the warnings above say why); once it is "
                  f"fixed: {info['suggested_command']}", ""]
    else:
        lines += ["", f"try: {info['suggested_command']}"]
        if info.get("classes_note"):
            lines.append(f"     ({info['classes_note']})")
        lines.append("")
    return "\n".join(lines)
