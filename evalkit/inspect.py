"""``evalkit inspect``: schema, row count and the layout evalkit would use."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .config import EvalConfig
from .errors import EvalkitError
from .io import open_source
from .layout import LayoutSpec, detect_layout

MAX_GROUP_CARDINALITY = 100


def inspect_input(
    path: str | os.PathLike[str] | Sequence[str],
    *,
    labels: str | None = None,
    config: EvalConfig | None = None,
) -> dict[str, Any]:
    """Describe an input: files, rows, schema, detected layout and candidate group columns."""
    cfg = config or EvalConfig()
    src = open_source(path)
    label_schema = open_source(labels).schema if labels else None
    info: dict[str, Any] = {
        "input": src.label,
        "files": len(src.files),
        "bytes": src.file_sizes(),
        "rows": src.count_rows(),
        "schema": [{"name": f.name, "type": str(f.type)} for f in src.schema],
    }
    head = src.dataset.head(10_000)
    first = head.to_batches()[0] if head.num_rows else None
    spec = LayoutSpec(predictions=cfg.predictions or None, prefix=cfg.prefix, logits=cfg.logits,
                      label=cfg.label, targets=cfg.targets or None, target_prefix=cfg.target_prefix,
                      classes=cfg.classes or None, keys=cfg.keys, weight=cfg.weight)
    used: set[str] = set()
    try:
        layout = detect_layout(src.schema, spec, label_schema=label_schema, source=src.label,
                               first_batch=first)
        info["layout"] = layout.describe()
        info["layout_error"] = None
        used = set(layout.pred_columns) | set(layout.label_columns) | set(layout.keys)
    except EvalkitError as exc:
        info["layout"] = []
        info["layout_error"] = str(exc)
    candidates = []
    for f in src.schema:
        if f.name in used:
            continue
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)
                or pa.types.is_integer(t)):
            continue
        n_distinct = len(pc.unique(head.column(f.name))) if head.num_rows else 0
        if 0 < n_distinct <= MAX_GROUP_CARDINALITY and n_distinct < max(2, head.num_rows):
            candidates.append({"column": f.name, "distinct_in_sample": n_distinct})
    info["group_candidates"] = candidates
    cmd = f"evalkit evaluate {src.label}"
    others = [c["column"] for c in candidates if c["column"] != "split"]
    if others:
        cmd += " " + " ".join(f"--by {c}" for c in others[:3])
    info["suggested_command"] = cmd + " --out report/"
    return info


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
    width = max((len(c["name"]) for c in info["schema"]), default=0)
    lines += [f"  {c['name'].ljust(width)}  {c['type']}" for c in info["schema"]]
    lines += ["", "detected layout:"]
    if info["layout_error"]:
        lines.append(f"  (not detected) {info['layout_error']}")
    else:
        lines += [f"  {line}" for line in info["layout"]]
    lines += ["", "candidate group columns (--by):"]
    if info["group_candidates"]:
        lines += [f"  {c['column']} ({c['distinct_in_sample']} distinct in the first rows)"
                  for c in info["group_candidates"]]
    else:
        lines.append("  (none)")
    lines += ["", f"try: {info['suggested_command']}", ""]
    return "\n".join(lines)
