"""Reading evaluate reports back: a report directory (``summary.json`` plus Parquet tables) or an
in-memory :class:`~evalkit.api.EvalResult`, as one run (:class:`_Run`) with its metadata,
grouped statistics, per-row loader and file provenance.

The one home for reading reports from disk; :mod:`evalkit.comparison` (and anything else
that reads old runs) loads them through here. Nothing here evaluates or writes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import CompareError
from .io import expand_paths, file_provenance

CLASS = "class"


def _input_files(spec: Any) -> list[str]:
    """The files behind an input spec (file, directory, glob or list of them)."""
    try:
        paths = expand_paths(spec)
    except Exception:  # noqa: BLE001 - provenance must never fail a run
        return []
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            files.extend(sorted(str(f) for f in Path(p).rglob("*") if f.is_file()
                                and not any(part.startswith((".", "_"))
                                            for part in f.relative_to(p).parts)))
        elif os.path.exists(p):
            files.append(p)
    return files


def _combined_fingerprint(files: Sequence[Mapping[str, Any]]) -> str | None:
    prints = [f.get("fingerprint") for f in files]
    if not prints or any(p is None for p in prints):
        return None
    return hashlib.sha256("\n".join(prints).encode()).hexdigest()[:32]  # type: ignore[arg-type]


# -- one side of the comparison ---------------------------------------------------------


@dataclass
class _Run:
    role: str
    source: str
    kind: str  # "report" | "result" | "evaluated"
    metadata: dict[str, Any]
    overall: pd.Series
    groups: dict[str, pd.DataFrame]
    groupings: list[str]
    row_keys: tuple[str, ...]
    rows_loader: Callable[[list[str]], pd.DataFrame] | None
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def has_rows(self) -> bool:
        return self.rows_loader is not None

    def stats(self, grouping: str) -> pd.DataFrame:
        if grouping == "overall":
            return self.overall.to_frame().T.reset_index(drop=True).infer_objects()
        return self.groups[grouping]

    def provenance(self) -> dict[str, Any]:
        m = self.metadata
        out: dict[str, Any] = {
            "source": self.source,
            "kind": self.kind,
            "input": m.get("input"),
            "input_files": m.get("input_files"),
            "input_bytes": m.get("input_bytes"),
            "labels": m.get("labels"),
            "rows_read": m.get("rows_read"),
            "rows_used": m.get("rows_used"),
            "rows_skipped": m.get("rows_skipped"),
            "eps": m.get("eps"),
            "classes": m.get("classes"),
            "engine": m.get("engine"),
            "evalkit_version": m.get("evalkit_version"),
            "created": m.get("created"),
            "duration_s": m.get("duration_s"),
            "config_file": m.get("config_file"),
            "config_hash": m.get("config_hash"),
            "row_keys": list(self.row_keys),
            "per_row_output": self.has_rows,
            "files": self.files,
            "fingerprint": _combined_fingerprint(self.files),
        }
        for extra in ("inputs", "input_fingerprint", "config"):
            if extra in m:
                out[extra] = m[extra]
        return out


def _row_keys_from_metadata(meta: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(meta.get("keys"), list):
        return tuple(str(k) for k in meta["keys"])
    for line in meta.get("layout") or []:
        if isinstance(line, str) and line.startswith("keys: "):
            return tuple(k.strip() for k in line[len("keys: "):].split(",") if k.strip())
    return ()


def _grouping_columns(name: str) -> tuple[str, ...]:
    return () if name == "overall" else tuple(name.split(","))


def _file_stem(name: str) -> str:
    cols = _grouping_columns(name)
    return "overall" if not cols else "by_" + "_".join(cols)


def _rows_column(col: str) -> str:
    """The per-row output names the true class ``label``; groupings call it ``class``."""
    return "label" if col == CLASS else col


def is_report_dir(path: Any) -> bool:
    """Whether ``path`` is an ``evaluate`` report directory (it holds ``summary.json``)."""
    if not isinstance(path, str | os.PathLike):
        return False
    return (Path(path) / "summary.json").is_file()


def _load_report(path: str | os.PathLike[str], role: str) -> _Run:
    import pyarrow.parquet as pq

    d = Path(path)
    try:
        summary = json.loads((d / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CompareError(f"{d}: cannot read summary.json of the {role} report ({exc})") from None
    meta = dict(summary.get("metadata") or {})
    groupings = list(meta.get("groupings") or ["overall", *(summary.get("groups") or {})])
    if "overall" not in groupings:
        groupings.insert(0, "overall")
    if (d / "overall.parquet").is_file():
        odf = pd.read_parquet(d / "overall.parquet")
        overall = pd.Series({c: odf[c].iloc[0] for c in odf.columns}, dtype=object)
    else:
        overall = pd.Series(summary.get("overall") or {}, dtype=object)
    groups: dict[str, pd.DataFrame] = {}
    for g in groupings:
        if g == "overall":
            continue
        f = d / f"{_file_stem(g)}.parquet"
        if f.is_file():
            groups[g] = pd.read_parquet(f)
        elif g in (summary.get("groups") or {}):
            groups[g] = pd.DataFrame.from_records(summary["groups"][g])
        else:
            raise CompareError(f"{d}: the {role} report lists grouping {g!r} but has no {f.name}")
    rows_path = d / "rows.parquet"
    loader = None
    if rows_path.is_file():
        available = set(pq.read_schema(rows_path).names)

        def loader(columns: list[str], _p: Path = rows_path, _a: set[str] = available) -> pd.DataFrame:
            return pq.read_table(_p, columns=[c for c in columns if c in _a]).to_pandas()

    names = ["summary.json", "rows.parquet", "overall.parquet"] + [
        f"{_file_stem(g)}.parquet" for g in groupings if g != "overall"]
    files = [file_provenance(d / n) for n in names if (d / n).is_file()]
    return _Run(role, str(d), "report", meta, overall, groups, groupings,
                _row_keys_from_metadata(meta), loader, files)


def _from_result(result: Any, role: str, source: str, kind: str) -> _Run:
    meta = dict(result.metadata)
    groupings = [g.name for g in result.groupings]
    has_rows = result._rows_df is not None or result._rows_table is not None or (
        result._rows_path is not None and Path(result._rows_path).exists())
    loader = None
    if has_rows:
        def loader(columns: list[str], _r: Any = result) -> pd.DataFrame:
            # Only the needed columns: avoid materialising the whole per-row table.
            if _r._rows_df is not None:
                rows = _r._rows_df
                return rows[[c for c in columns if c in rows.columns]].reset_index(drop=True)
            if _r._rows_table is not None:
                table = _r._rows_table
            else:
                import pyarrow.parquet as pq

                names = pq.read_schema(_r._rows_path).names
                table = pq.read_table(_r._rows_path, columns=[c for c in columns if c in names])
            return table.select([c for c in columns if c in table.column_names]).to_pandas()

    files: list[dict[str, Any]] = []
    if kind == "evaluated":
        files = [file_provenance(f) for f in _input_files(source)]
    keys = tuple(getattr(result.layout, "keys", ()) or _row_keys_from_metadata(meta))
    overall = result.overall if isinstance(result.overall, pd.Series) else pd.Series(result.overall)
    return _Run(role, source, kind, meta, overall, dict(result.groups), groupings, keys, loader,
                files)


__all__ = ["is_report_dir"]
