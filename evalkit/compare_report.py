"""Rendering a comparison for reading: the Markdown report (``compare.md``) and the order in
which groups are listed (regressions first)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from .escape import md_code
from .gates import gates_markdown
from .report import _bytes, _escape, fmt_number, markdown_table
from .reports import _file_stem, _grouping_columns

STATUS_ORDER = {"regression": 0, "only_in_candidate": 1, "only_in_baseline": 2, "unchanged": 3,
                "improvement": 4}


def _sorted_for_reading(df: pd.DataFrame) -> pd.DataFrame:
    """Regressions first (largest delta first), then groups in one run only, then the rest."""
    order = df["status"].map(STATUS_ORDER).fillna(9)
    return (df.assign(_o=order, _d=-df["delta"].fillna(0.0))
              .sort_values(["_o", "_d"], kind="stable").drop(columns=["_o", "_d"]))


_MARK = {"regression": "**▲ REGRESSION**", "improvement": "▼ improvement", "unchanged": "unchanged",
         "only_in_baseline": "only in baseline", "only_in_candidate": "only in candidate"}


def _display(df: pd.DataFrame, cols: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    out = _sorted_for_reading(df).copy()
    out["status"] = out["status"].map(_MARK).fillna(out["status"])
    out["rel_delta"] = [f"{100 * v:+.1f}%" if pd.notna(v) else "" for v in out["rel_delta"]]
    out["delta"] = [f"{v:+.4g}" if pd.notna(v) else "" for v in out["delta"]]
    out["CI"] = [f"[{lo:+.4g}, {hi:+.4g}]" if pd.notna(lo) else "" for lo, hi in
                 zip(out["ci_low"], out["ci_high"], strict=True)]
    shown = ["status", *cols, "baseline_count", "candidate_count", "baseline_mean",
             "candidate_mean", "delta", "rel_delta", "CI", "method"]
    return out, shown


def _header(meta: dict[str, Any], gate_note: str | None = None) -> list[str]:
    """Title, the two runs side by side, the comparison's settings and any notes (but
    ``gate_note``, which the gates section shows)."""
    b, c = meta["baseline"], meta["candidate"]
    conf = meta["settings"]["confidence"]
    lines = ["# evalkit compare", ""]
    lines += ["| | baseline | candidate |", "| --- | --- | --- |"]

    def row(label: str, fn: Callable[[dict[str, Any]], Any], escaped: bool = False) -> None:
        vb, vc = (str(fn(b)), str(fn(c))) if escaped else (_escape(fn(b)), _escape(fn(c)))
        lines.append(f"| {label} | {vb} | {vc} |")

    row("source", lambda r: f"{md_code(r['source'])} ({_escape(r['kind'])})", escaped=True)
    row("input", lambda r: md_code(r.get("input")) + (f" ({_bytes(r['input_bytes'])})" if r.get("input_bytes") else ""),
        escaped=True)
    row("rows", lambda r: " · ".join(f"{fmt_number(r.get(k))} {w}" for k, w in
                                      (("rows_read", "read"), ("rows_used", "used"), ("rows_skipped", "skipped"))))
    row("eps", lambda r: f"{r['eps']:g}" if r.get("eps") is not None else "")
    row("classes", lambda r: ", ".join(map(str, r.get("classes") or [])))
    row("engine", lambda r: r.get("engine") or "")
    row("evalkit", lambda r: r.get("evalkit_version") or "")
    row("created", lambda r: r.get("created") or "")
    row("config hash", lambda r: r.get("config_hash") or "")
    row("fingerprint", lambda r: r.get("fingerprint") or "")
    row("per-row output", lambda r: "yes" if r.get("per_row_output") else "no")
    lines += ["", f"Comparison: evalkit {meta['evalkit_version']}, created {meta['created']}, "
              f"{meta['duration_s']:.2f} s; {100 * conf:g}% intervals of the delta "
              f"(candidate - baseline, positive = worse)"
              + (f" of weighted means (weight column {md_code(meta['weight'])})" if meta.get("weight") else "")
              + f"; {meta['pairing']['reason']}; "
              f"bootstrap {meta['settings']['n_boot']} resamples, seed {meta['settings']['seed']}; "
              f"config hash {meta['config_hash']}.", ""]
    for note in meta.get("mismatches") or []:
        lines.append(f"> **Mismatch allowed:** {_escape(note)}")
    notes = [n for n in meta.get("notes") or [] if n != gate_note]  # the gates section says it
    for note in notes:
        lines.append(f"> Note: {_escape(note)}")
    if meta.get("mismatches") or notes:
        lines.append("")

    return lines


def _render_markdown(res: Any) -> str:
    """The Markdown report of a :class:`~evalkit.comparison.CompareResult`."""
    meta = res.metadata
    lines = _header(meta, res.gate_note)
    lines += gates_markdown(res.gates_record(), "compare.json")
    counts = res.counts()
    lines += ["## Summary", "",
              ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items()) + " (groups over all groupings)", ""]
    reg = res.regressions
    lines += [f"## Regressions ({len(reg)})", ""]
    if reg.empty:
        lines += ["_No group got significantly worse._", ""]
    else:
        disp, shown = _display(reg, ["grouping", "group"])
        lines.append(markdown_table(disp, shown))
    for name, df in res.tables.items():
        cols = list(_grouping_columns(name))
        title = "Overall" if name == "overall" else f"By {' × '.join(cols)}"
        lines += [f"## {title}", ""]
        disp, shown = _display(df, cols)
        lines.append(markdown_table(disp, shown, keys=cols, where=f"{_file_stem(name)}.parquet"))
    for key, title in (("groupings_only_in_baseline", "Groupings only in the baseline"),
                       ("groupings_only_in_candidate", "Groupings only in the candidate")):
        if meta.get(key):
            lines += [f"## {title}", "", ", ".join(f"`{g}`" for g in meta[key]), ""]
    return "\n".join(lines).rstrip() + "\n"
