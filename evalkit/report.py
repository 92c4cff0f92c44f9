"""Rendering result tables: Markdown (report.md), JSON (summary.json) and aligned terminal text.

One place formats numbers for reading: losses with 4 significant digits, counts with
thousands separators, accuracy and fractions as percentages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .columns import rows_column
from .display import MAX_REPORT_GROUPS, bounded_groups, left_out_note
from .escape import (
    distinct_shortenings,
    fmt_key,
    is_missing,
    md_code,
    md_link_target,
    md_text,
    terminal,
)
from .gates import gates_markdown


class EvalResultLike(Protocol):
    """What rendering reads of an :class:`evalkit.api.EvalResult`.

    A protocol rather than an import: ``api`` builds results and calls this module to render
    them, so this module must not import ``api`` (a lower layer never imports a higher one).
    """

    overall: pd.Series
    groups: dict[str, pd.DataFrame]
    metadata: dict[str, Any]
    confusion: pd.DataFrame
    hardest: dict[str, pd.DataFrame]
    groupings: tuple[Any, ...]

    def table(self, name: str) -> pd.DataFrame: ...

COUNT_COLUMNS = {"count", "clipped", "clipped_low", "clipped_high", "rows", "n", "baseline_count", "candidate_count", "skipped"}
PERCENT_COLUMNS = {"accuracy", "clipped_fraction"}
#: p-value columns: a p-value below :data:`P_FLOOR` (down to an underflowed 0) reads
#: ``<1e-300``, never ``0`` (the Parquet tables keep the float, 0 included).
P_COLUMNS = {"p_value", "p_adjusted"}
P_FLOOR = 1e-300


def fmt_number(value: Any, column: str = "") -> str:
    """Format one cell for reading."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        # Thousands separators for counts; ids and other integers are shown verbatim.
        return f"{int(value):,}" if column in COUNT_COLUMNS or not column else str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if column in PERCENT_COLUMNS:
            return f"{100 * v:.1f}%"
        if column in COUNT_COLUMNS and v.is_integer():
            return f"{int(v):,}"
        if column in P_COLUMNS and v < P_FLOOR:
            return f"<{P_FLOOR:g}"
        if v == 0:
            return "0"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        a = abs(v)
        if a >= 1e5 or a < 1e-3:
            return f"{v:.3e}"
        if a >= 1:
            # '#' keeps trailing zeros (2.560 next to 2.491 reads as a column); drop a bare '.'.
            return f"{v:#.4g}".rstrip(".")
        return f"{v:.4f}"
    return str(value)


def _escape(s: Any) -> str:
    """Data shown in Markdown (kept for callers; the one definition is :func:`md_text`)."""
    return md_text(s)


def _cell(value: Any, column: str) -> str:
    """One Markdown table cell: numbers formatted, anything else escaped as text."""
    text = fmt_number(value, column)
    if isinstance(value, int | float | np.integer | np.floating | bool | np.bool_) or value is None:
        return text
    return md_text(text)


def _records(df: pd.DataFrame, cols: Sequence[str], keys: Sequence[str]) -> Any:
    """The rows of ``df[cols]`` as tuples; a float32 key column's values stay numpy float32
    (plain iteration makes them Python floats, 0.10000000149011612), so :func:`fmt_key`
    shows them at float32 precision (0.1)."""
    narrow = {i: df[c].to_numpy() for i, c in enumerate(cols)
              if c in keys and df[c].dtype in (np.float32, np.float16)}
    rows = df[list(cols)].itertuples(index=False, name=None)
    if not narrow:
        return rows
    return (tuple(narrow[i][j] if i in narrow else v for i, v in enumerate(rec)) for j, rec in enumerate(rows))


def markdown_table(df: pd.DataFrame, columns: Sequence[str] | None = None, max_rows: int = 200,
                   keys: Sequence[str] = (), where: str | None = None) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned; ``keys`` are group-key
    columns, shown with :func:`fmt_key` (a missing key as ``∅``); ``where``: the file holding
    every row, named in the line under a cut table."""
    cols = list(columns) if columns is not None else list(df.columns)
    if df.empty:
        return "_(no rows)_\n"
    shown = df.head(max_rows)
    header = "| " + " | ".join(md_text(c) for c in cols) + " |"
    aligns = []
    for c in cols:
        numeric = pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
        aligns.append("---:" if numeric else "---")
    lines = [header, "| " + " | ".join(aligns) + " |"]
    for rec in _records(shown, cols, keys):
        lines.append("| " + " | ".join(md_text(fmt_key(v)) if c in keys else _cell(v, c)
                                       for v, c in zip(rec, cols, strict=True)) + " |")
    if len(df) > max_rows:
        lines.append(f"\n_... {len(df) - max_rows:,} more rows in "
                     + (f"{md_code(where)}_" if where else "the Parquet table_"))
    return "\n".join(lines) + "\n"


def text_table(df: pd.DataFrame, columns: Sequence[str] | None = None, max_rows: int = 50,
               max_width: int = 28, keys: Sequence[str] = ()) -> str:
    """Aligned plain-text table for terminals; wide text cells are shortened in the middle to
    ``max_width`` characters, cells of a column that differ kept different
    (:func:`~evalkit.escape.distinct_shortenings`, as the plots' labels); ``keys`` are
    group-key columns, shown with :func:`fmt_key` (a missing key as ``∅``)."""
    cols = list(columns) if columns is not None else list(df.columns)
    shown = df.head(max_rows)
    cells = [[terminal(fmt_key(v) if c in keys else fmt_number(v, c)) for v, c in zip(rec, cols, strict=True)]
             for rec in _records(shown, cols, keys)]
    by_column = [distinct_shortenings(list(col), max_width) for col in zip(*cells, strict=True)]
    cells = [list(row) for row in zip(*by_column, strict=True)] if cells else cells
    heads = [terminal(c) for c in cols]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(heads)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in cols]

    def line(vals: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, widths, numeric, strict=True)).rstrip()

    out = [line(heads), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    if len(df) > max_rows:
        out.append(f"... {len(df) - max_rows:,} more rows")
    return "\n".join(out) + "\n"


STAT_COLUMNS = ["count", "mean", "std", "min", "p50", "p90", "p99", "max", "sum", "clipped_low", "clipped_high",
                "accuracy"]


def overall_line(result: EvalResultLike, quote: Any = terminal) -> str:
    """One sentence: the headline figures (loss in nats; clipped = confident mistakes; the
    rows left out: ignored labels, skipped invalid rows). ``quote`` renders the one data value
    it may hold (the ignore label): :func:`~evalkit.escape.terminal` or ``md_text``."""
    o = result.overall
    n = int(o["count"])
    if not n:
        return "no rows"
    low = int(o["clipped_low"])
    ci = ""
    if "ci_low" in o.index and o["ci_low"] == o["ci_low"]:
        level = f"{100 * float(result.metadata.get('confidence', 0.95)):g}%"
        ci = f" ({level} CI [{fmt_number(float(o['ci_low']))}, {fmt_number(float(o['ci_high']))}])"
    weighted = "weighted_mean" in o.index  # the interval is then of the weighted mean
    line = (f"mean loss {fmt_number(float(o['mean']))} nats{'' if weighted else ci} over {n:,} rows"
            f"{left_out(result.metadata, quote)}"
            f" · accuracy {fmt_number(float(o['accuracy']), 'accuracy')}"
            f" · {low:,} clipped ({100 * low / n:.2f}%: p_true < eps)")
    if weighted:
        line += f" · weighted mean {fmt_number(float(o['weighted_mean']))}{ci}"
    return line


def left_out(meta: dict[str, Any], quote: Any = terminal) -> str:
    """`` (+ 2 ignored: label -100, 1 skipped)``: the rows of the input no statistic counts,
    after the used-row count of a headline; empty when there are none."""
    parts = []
    if meta.get("rows_ignored"):
        parts.append(f"{meta['rows_ignored']:,} ignored: label {quote(str(meta.get('ignore_label')))}")
    if meta.get("rows_skipped"):
        parts.append(f"{meta['rows_skipped']:,} skipped")
    return f" (+ {', '.join(parts)})" if parts else ""


def definitions(eps: float) -> str:
    """What the loss and the clipped counts mean, in one paragraph of the report."""
    floor = fmt_number(-math.log(eps))
    return (f"Loss is the clipped cross-entropy in nats, `-log(clip(p_true, eps, 1 - eps))` with "
            f"eps = {eps:g}. `clipped_low` counts rows with p_true < eps: confident mistakes, "
            f"whose loss the clip caps at -log(eps) = {floor} (the `max_clipped_fraction` gate "
            f"counts these). `clipped_high` counts rows with p_true > 1 - eps: confident correct "
            f"predictions, whose loss the clip changes by less than eps.")


def _meta_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    skipped = meta.get("skipped") or {}
    rows = [
        ("input", md_code(meta['input']) + (f" ({meta['input_files']:,} files, {_bytes(meta['input_bytes'])})"
                                             if meta.get("input_files") else "")),
    ]
    if meta.get("labels"):
        shared = meta.get("shared_columns") or []
        rows.append(("labels", f"{md_code(meta['labels'])} joined on {md_text(', '.join(meta.get('on') or []))}"
                     + (f" ({md_text(', '.join(shared))} also in the labels input: the predictions' values are used)"
                        if shared else "")))
    rows += [
        ("rows", f"{meta['rows_read']:,} read · {meta['rows_used']:,} used · {meta['rows_skipped']:,} skipped"
                 + (f" · {meta['rows_ignored']:,} ignored (label {md_text(meta.get('ignore_label'))})"
                    if meta.get("rows_ignored") else "")),
    ]
    if skipped:
        rows.append(("skipped by reason", md_text(", ".join(f"{k}: {v:,}" for k, v in sorted(skipped.items())))))
    for line in meta.get("layout", []):
        key, _, rest = line.partition(": ")
        rows.append((md_text(key), md_text(rest)) if rest else ("layout", md_text(line)))
    rows += [
        ("eps", f"{meta['eps']:g}"),
        ("quantiles", md_text(meta.get("quantile_note", meta.get("quantiles", "")))),
    ]
    if meta.get("ci_method"):
        rows.append(("intervals", md_text(meta["ci_method"])))
    if meta.get("calibration_bins"):
        rows.append(("calibration", f"{meta['calibration_bins']} equal-width bins of top-label "
                                    "confidence (ECE, MCE: Guo et al. 2017; Brier 1950)"))
    rows += [
        ("engine", md_text(meta.get("engine", "local"))),
        ("evalkit", md_text(meta.get("evalkit_version", ""))),
        ("created", md_text(meta.get("created", ""))),
        ("duration", f"{meta.get('duration_s', 0):.2f} s"),
    ]
    if meta.get("config_file"):
        rows.append(("config", f"{md_code(meta['config_file'])} (hash {md_text(meta.get('config_hash'))})"))
    return rows


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render_markdown(result: EvalResultLike, plots: Sequence[tuple[str, str]] | None = None) -> str:
    """The full report.md text; ``plots`` lists (title, relative PNG path) to embed.

    ``plots=None`` renders no plot section (e.g. printing to a terminal); an empty list
    says plots were asked for but matplotlib is missing, and how to enable them.
    """
    meta = result.metadata
    out = ["# evalkit report", ""]
    gates = meta.get("gates")
    # a gates block that checks nothing is a run warning; the gates section says it instead
    shown = [w for w in meta.get("warnings") or [] if not gates or w != gates.get("note")]
    if shown:
        out += ["## ⚠️ Warnings", ""] + [f"- {md_text(w)}" for w in shown] + [""]
    if getattr(result, "slices", None) is not None:
        out += slice_section(result)
    out += ["| run | |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in _meta_rows(meta)]  # each value escaped where built
    out += ["", *gates_markdown(gates, "summary.json")]
    out += ["## Overall", "", f"**{overall_line(result, md_text)}**", "", definitions(float(meta["eps"])), ""]
    stats = [c for c in STAT_COLUMNS + ["weight_sum", "weighted_mean", "n_eff"]
             if c in result.overall.index]
    level = float(meta.get("confidence", 0.95))
    shown, cols = with_interval(result.table("overall"), stats, level)
    out.append(markdown_table(shown, cols))
    for g in result.groupings:
        if not g.columns:
            continue
        df = result.groups[g.name]
        title = "class" if g.name == "class" else " × ".join(md_text(c) for c in g.columns)
        out += [f"## By {title}", ""]
        shown, n_left = bounded_groups(df, MAX_REPORT_GROUPS)
        shown, cols = with_interval(shown, list(g.columns) + [c for c in stats if c in df.columns],
                                    level)
        out.append(markdown_table(shown, cols, keys=g.columns))
        if n_left:
            out += [f"_{left_out_note(n_left, len(shown), g.file_stem + '.parquet')}_", ""]
    out += disparity_section(getattr(result, "disparity", None))
    out += calibration_section(result)
    if result.hardest:
        out += ["## Hardest examples", ""]
        for scope, df in result.hardest.items():
            out += [f"### {'Overall' if scope == 'overall' else 'Per class'} (top {_k(df, scope)})", ""]
            cols = [c for c in df.columns if c not in ("row",)] if len(df.columns) < 10 else list(df.columns)
            order = ([c for c in ("class",) if c in cols and scope != "overall"]
                     + [c for c in cols if c not in ("class", "loss", "p_true", "clipped_low", "clipped_high",
                                                     "correct")]
                     + [c for c in ("p_true", "loss") if c in cols])
            if scope != "overall" and "label" in order:
                order.remove("label")
            group_cols = {name for g in result.groupings for c in g.columns for name in (c, rows_column(c))}
            out.append(markdown_table(df, order, max_rows=100, keys=[c for c in order if c in group_cols]))
    out += ["## Confusion (mean loss by true × predicted class)", ""]
    out.append(markdown_table(result.confusion, ["class", "predicted", "count", "mean"], max_rows=100))
    if plots is not None:
        out += ["## Plots", ""]
        if plots:
            for title, path in plots:
                out += [f"### {md_text(title)}", "", f"![{md_text(title)}]({md_link_target(path)})", ""]
        else:
            from .plots import INSTALL_HINT

            why = result.metadata.get("plots_off") or "matplotlib is not installed"
            fix = (f"Enable them with `{INSTALL_HINT}`." if why.endswith("not installed")
                   else "Repair or reinstall matplotlib to get them.")
            out += [f"_Plots are off: {md_text(why)}. {fix}_", ""]
    return "\n".join(out).rstrip() + "\n"


def with_interval(df: pd.DataFrame, columns: Sequence[str],
                  confidence: float = 0.95) -> tuple[pd.DataFrame, list[str]]:
    """A display copy whose ``mean`` column reads ``0.6486 [0.5641, 0.7330]`` (the mean and
    its ``ci_low`` / ``ci_high`` interval); returns the frame and the columns to show.
    With a weighted run the interval is of ``weighted_mean`` and is shown next to it."""
    if "ci_low" not in df.columns:
        return df, list(columns)
    target = "weighted_mean" if "weighted_mean" in columns else "mean"
    name = f"{target} [{100 * confidence:g}% CI]"
    text = [
        "" if v != v else (fmt_number(v) + ("" if lo != lo else f" [{fmt_number(lo)}, {fmt_number(hi)}]"))
        for v, lo, hi in zip(df[target].astype(float), df["ci_low"].astype(float),
                             df["ci_high"].astype(float), strict=True)
    ]
    shown = df.assign(**{name: text})
    return shown, [name if c == target else c for c in columns]


def slice_section(result: EvalResultLike, top: int = 10) -> list[str]:
    """The slice-search section at the top of report.md: the significantly worse slices,
    largest effect first, or a line saying none was found; always how many were tested,
    skipped (too small) and capped (too many distinct values)."""
    summary = result.metadata.get("slices", {})
    worst = result.worst_slices(top)
    n_worse = int(summary.get("significantly_worse", len(worst)))
    q = summary.get("q", 0.05)
    test = summary.get("test", "Welch t-test")
    weighted = (f" Weighted by {md_code(summary['weight'])}: means are weighted and the test "
                f"uses Kish's effective sample size n_eff = (sum w)^2 / sum w^2."
                if summary.get("weight") else "")
    unweighed = (f"; {summary['skipped_no_weight']:,} of them: too little weight, n_eff <= 1"
                 if summary.get("skipped_no_weight") else "")
    dup = summary.get("skipped_duplicate", 0)
    duplicates = (f" {dup:,} more slice{'s' if dup != 1 else ''} held exactly the rows of a slice "
                  f"before {'them' if dup != 1 else 'it'} (a constant column, or columns that "
                  f"determine each other) and {'were' if dup != 1 else 'was'} not tested again "
                  "(`duplicate_of` in slices.parquet)." if dup else "")
    counts = (f"{summary.get('tested', 0):,} slices of {md_text(', '.join(summary.get('columns', [])))} "
              f"(depth {summary.get('depth')}) tested against the rest of the data ({test}, "
              f"Benjamini-Hochberg FDR q = {q:g}); {summary.get('skipped_small', 0):,} skipped "
              f"(the slice or the rest of the data has fewer than {summary.get('min_count')} rows"
              f"{unweighed}).{duplicates}{weighted}")
    if n_worse:
        out = [f"## ⚠️ {n_worse} significantly worse slice{'s' if n_worse != 1 else ''} — look here first",
               "", counts, ""]
        out.append(markdown_table(*_worst_shown(worst)))
        if n_worse > len(worst):
            out += [f"_{n_worse - len(worst):,} more in slices.parquet (column `worse`)._", ""]
    else:
        out = ["## Slice search: no significantly worse slice", "", counts, ""]
    for cap in summary.get("capped", []):
        out += [f"- ⚠️ slices of **{cap['columns']}** skipped: more than {cap['limit']:,} distinct "
                f"values (at least {cap['distinct_at_least']:,} seen); raise `slice_limit` or "
                f"lower `slice_depth`."]
    if summary.get("capped"):
        out.append("")
    return out


def _worst_shown(worst: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The worst slices as shown to a person (report.md and the terminal): the difference
    with its interval in one column; returns the frame and the columns to show."""
    shown = worst.assign(**{
        "diff [CI]": [f"+{fmt_number(d)} [{fmt_number(lo)}, {fmt_number(hi)}]"
                      for d, lo, hi in zip(worst["diff"], worst["ci_low"], worst["ci_high"], strict=True)],
    })
    return shown, ["slice", "count", "mean", "complement_mean", "diff [CI]", "effect_size", "p_adjusted"]


def slice_terminal_lines(result: EvalResultLike, top: int = 10) -> list[str]:
    """The slice search for the terminal: how many slices were tested and found significantly
    worse, then the worst ``top`` of them (as in report.md; escaped for a terminal)."""
    summary = result.metadata.get("slices", {})
    worst = result.worst_slices(top)
    n_worse = int(summary.get("significantly_worse", len(worst)))
    head = (f"slices: {n_worse:,} significantly worse of {summary.get('tested', 0):,} tested "
            f"(FDR q = {summary.get('q', 0.05):g})")
    if not n_worse:
        return [head, ""]
    return [head + ":", text_table(*_worst_shown(worst))]


def disparity_section(records: Sequence[dict[str, Any]] | None) -> list[str]:
    """Worst and best group of every grouping: gap and ratio to the overall mean."""
    if not records:
        return []
    notes = [f"- {md_text(r['grouping'])}: {md_text(r['note'])}." for r in records if r.get("note")]
    records = [r for r in records if not r.get("note")]
    if not records:
        return ["## Disparity", "", "Nothing compared:", "", *notes]
    df = pd.DataFrame(records)
    df["worst"] = [f"{w} ({fmt_number(m)}, n={c:,})" for w, m, c in
                   zip(df["worst"], df["worst_mean"], df["worst_count"], strict=True)]
    df["best"] = [f"{b} ({fmt_number(m)}, n={c:,})" for b, m, c in
                  zip(df["best"], df["best_mean"], df["best_count"], strict=True)]
    df = df.rename(columns={"worst_ratio": "worst / overall", "best_ratio": "best / overall"})
    what = "weighted mean loss" if records[0].get("statistic") == "weighted_mean" else "mean loss"
    out = [f"## Disparity (worst and best group by {what})", ""]
    if "min_count" in df.columns:
        small = int(df["too_small"].sum())
        out += [f"Only groups of at least {int(df['min_count'].iloc[0]):,} rows (`slice_min_count`) "
                f"are compared; {small:,} smaller group{'s' if small != 1 else ''} left out.", ""]
    return out + [markdown_table(df, ["grouping", "groups", "worst", "best", "gap",
                                      "worst / overall", "best / overall"])] + (["", *notes] if notes else [])


def calibration_section(result: EvalResultLike) -> list[str]:
    """ECE, MCE, Brier score and mean entropy of the overall line and every group."""
    if "ece" not in result.overall.index:
        return []
    cols = ["count", "accuracy", "ece", "mce", "brier", "entropy"]
    frames = [result.table("overall")[cols].assign(grouping="overall", group="all")]
    from .disparity import group_label

    notes = []
    for g in result.groupings:
        if not g.columns:
            continue
        # The groups of the grouping's own table (bounded the same way: 200k users read as
        # one screen, every group's figures in by_<cols>.parquet).
        df, n_left = bounded_groups(result.groups[g.name], MAX_REPORT_GROUPS)
        labels = [group_label(dict(zip(g.columns, r, strict=True)), list(g.columns))
                  for r in _records(df, list(g.columns), list(g.columns))]
        frames.append(df[cols].assign(grouping=g.name, group=labels))
        if n_left:
            notes.append(f"_{g.name}: {left_out_note(n_left, len(df), g.file_stem + '.parquet')}_")
    table = pd.concat(frames, ignore_index=True)
    bins = result.metadata.get("calibration_bins")
    return ["## Calibration", "",
            f"Top-label confidence in {bins} equal-width bins: ECE = sum_b (n_b / n) |accuracy_b - "
            "confidence_b|, MCE = max_b |accuracy_b - confidence_b| (Guo et al. 2017); Brier = mean "
            "of sum_j (p_j - t_j)^2 over classes, in [0, 2] (Brier 1950; with two classes it is twice "
            "sklearn's brier_score_loss, which scores P(class 1) only); entropy in nats. Bins per "
            "group: calibration.parquet.", "",
            markdown_table(table, ["grouping", "group"] + cols)] + (["", *notes] if notes else [])


def _k(df: pd.DataFrame, scope: str) -> str:
    if scope == "overall" or "class" not in df.columns or df.empty:
        return f"{len(df)}"
    return f"{int(df.groupby('class', observed=True).size().max())} per class"


def json_text(data: Any) -> str:
    """``data`` as strict JSON (RFC 8259) laid out like ``json.dumps(indent=2)``, except that a
    list of records (dicts) holds one record per line.

    Python's C encoder only runs without ``indent``; with it, 50 groupings x 1000 groups
    took over 30 s. Encoding each record compactly keeps it C-speed and the file readable
    (one group per line, diff-friendly). The same values as ``json.dumps`` (ints, floats,
    None for NaN via :func:`to_json_default`), except that a float infinity (an effect size
    or t statistic of a zero-variance slice, say) is written as the string ``"Infinity"`` or
    ``"-Infinity"``, as the proto3 JSON mapping writes them
    (https://protobuf.dev/programming-guides/json/): the bare ``Infinity`` token
    ``json.dumps`` writes is refused by strict parsers (JavaScript's ``JSON.parse``, Go,
    ``jq`` before 1.7), so one such value made the whole file unreadable to them.
    """
    if isinstance(data, dict) and data:
        return json_object(json_members(data))
    return _json_value(data, 0) + "\n"


def json_members(data: dict[str, Any]) -> list[str]:
    """The members of a top-level JSON object as :func:`json_text` lays them out, one string
    each: ``json_object(json_members(a) + json_members(b))`` is ``json_text({**a, **b})`` for
    dicts without common keys, so a large object can be rendered before its last members
    are known (``summary.json`` before its tables' fingerprints)."""
    import json

    return [f"  {json.dumps(str(k))}: {_json_value(x, 1)}" for k, x in data.items()]


def json_object(members: Sequence[str]) -> str:
    """A top-level JSON object from its rendered members (:func:`json_members`)."""
    return "{\n" + ",\n".join(members) + "\n}\n" if members else "{}\n"


def _json_value(v: Any, level: int) -> str:
    """One value of :func:`json_text` at nesting ``level``."""
    import json

    pad = "  " * level
    if isinstance(v, dict) and v:
        items = (f"{pad}  {json.dumps(str(k))}: {_json_value(x, level + 1)}" for k, x in v.items())
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
        recs = (f"{pad}  {_json_compact(x)}" for x in v)
        return "[\n" + ",\n".join(recs) + f"\n{pad}]"
    return _json_compact(v)


def _json_compact(v: Any) -> str:
    """``v`` by Python's C encoder; only a non-finite float sends a value down the slow path."""
    import json

    try:
        return json.dumps(v, default=to_json_default, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(v), default=to_json_default, allow_nan=False)


def _finite(v: Any) -> Any:
    """``v`` with every float NaN as None and every infinity as "Infinity" / "-Infinity"."""
    if isinstance(v, float | np.floating):
        if math.isnan(v):
            return None
        return ("Infinity" if v > 0 else "-Infinity") if math.isinf(v) else v
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def to_json_default(o: Any) -> Any:
    """json.dumps fallback for numpy / pandas scalars."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if math.isnan(o) else _finite(float(o))
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, pd.Timestamp):
        return o.isoformat()
    return str(o)


def frame_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame -> list of dicts with plain Python values (NaN, NaT, pd.NA -> None).

    Column by column: numpy number and bool columns convert in one ``tolist`` (a table of
    1000 classes x 40 figures was 40k Python-level checks), other columns value by value."""
    names = [str(k) for k in df.columns]
    columns = [_plain_values(df.iloc[:, j]) for j in range(df.shape[1])]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)] if columns else [
        {} for _ in range(len(df))]


def _plain_values(col: pd.Series) -> list[Any]:
    """The values of one column as plain Python values, missing ones as None."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        arr = col.to_numpy()
        values = arr.tolist()
        if dtype.kind == "f":
            nan = np.flatnonzero(np.isnan(arr))
            for i in nan.tolist():
                values[i] = None
        return values
    out = []
    for v in col.tolist():
        if is_missing(v):
            v = None  # NaN, NaT, pd.NA: the one missing value, JSON null
        elif isinstance(v, np.generic):
            v = v.item()
        out.append(v)
    return out
