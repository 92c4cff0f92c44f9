"""Reading evaluate reports back: a report directory (``summary.json`` plus Parquet tables) or an
in-memory :class:`~evalkit.api.EvalResult`, as one run (:class:`_Run`) with its metadata,
grouped statistics, per-row loader and file provenance.

The one home for reading reports from disk; :mod:`evalkit.comparison` (and anything else
that reads old runs) loads them through here. Nothing here evaluates or writes.
"""

from __future__ import annotations

import functools
import glob as _glob
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import CompareError, ReportError, UsageError
from .grouped_file import GROUPED_FILE, GroupedFile, KeyChunks, history_columns
from .io import expand_paths, file_provenance, fingerprint_bytes, fingerprint_file, read_json_head


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
    return fingerprint_bytes("\n".join(prints).encode())  # type: ignore[arg-type]


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
    #: Open per-row files the loader reads (kept open since their fingerprint was checked).
    handles: list[pq.ParquetFile] = field(default_factory=list)

    def close(self) -> None:
        """Close the per-row files held for :attr:`rows_loader` (it cannot be used after)."""
        for pf in self.handles:
            pf.close(force=True)
        self.handles.clear()

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


@functools.lru_cache(maxsize=4096)
def _file_stem(name: str) -> str:
    from .escape import grouping_file_stem

    return grouping_file_stem(_grouping_columns(name))


def is_report_dir(path: Any) -> bool:
    """Whether ``path`` is an ``evaluate`` report directory (it holds ``summary.json``)."""
    if not isinstance(path, str | os.PathLike):
        return False
    return (Path(path) / "summary.json").is_file()


class _ReportFiles:
    """The files of one report directory, read so that they are known to belong together.

    ``summary.json`` is read once; when the report records ``table_fingerprints`` (evalkit
    writes them, see :meth:`evalkit.outdir.AtomicDir.write_summary`), every table is opened
    once, its fingerprint computed from that open handle and compared with the recorded one,
    and then read through the same handle: a table edited, copied from another run, or
    replaced while compare reads the directory is refused (:class:`CompareError`, exit 3),
    never read. ``summary.json`` itself is checked against ``evalkit-manifest.json`` the
    same way. Reports written before fingerprints existed are read without these checks.
    """

    def __init__(self, d: Path, role: str) -> None:
        from .outdir import MANIFEST_NAME, read_manifest

        self.d, self.role = d, role
        where = d / "summary.json"
        try:
            raw = where.read_bytes()
        except OSError as exc:
            raise CompareError(f"{where}: cannot read the {role} report's summary "
                               f"({exc.strerror or exc})") from None
        try:
            summary = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CompareError(f"{where}: the {role} report's summary.json is corrupt or "
                               f"truncated ({exc}); rerun evaluate") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("metadata", {}), dict):
            raise CompareError(f"{where}: not an evalkit summary.json (it holds a "
                               f"{type(summary).__name__}, not an object with 'metadata'); "
                               f"the {role} report was edited or is not an evalkit report")
        self.summary = summary
        fps = summary.get("table_fingerprints")
        if fps is not None and not (isinstance(fps, dict) and all(
                isinstance(v, dict) for v in fps.values())):
            raise CompareError(f"{where}: 'table_fingerprints' is damaged; the {role} report was edited")
        self.fingerprints: dict[str, dict[str, Any]] | None = fps
        manifest, _ = read_manifest(d)
        if manifest is not None:
            entry = manifest["files"].get("summary.json")
            # summary.json is read whole here: its whole-file hash (kind sha256) is checked
            got = fingerprint_bytes(raw)
            if entry is not None and entry.get("fingerprint_kind") == "sha256" \
                    and entry.get("fingerprint") != got:
                raise CompareError(f"{where}: changed since evalkit wrote it (its fingerprint differs "
                                   f"from {MANIFEST_NAME}); the {role} report was edited or replaced "
                                   "while being read: rerun evaluate or restore it")
            run_id = summary.get("metadata", {}).get("run_id")
            if run_id is not None and manifest.get("run_id") != run_id:
                raise CompareError(f"{where}: belongs to another run than {MANIFEST_NAME} (run ids "
                                   f"differ); the {role} report is mixed from two runs")

    def _refuse(self, rel: str, why: str) -> CompareError:
        return CompareError(
            f"{self.d / rel}: {why}; the {self.role} report's files do not belong to one run "
            "(edited, copied from another run, or replaced while compare was reading it): "
            "rerun evaluate, or restore the report")

    def open(self, rel: str) -> pq.ParquetFile | None:
        """The table ``rel`` (None when absent and not recorded), checked as described."""
        path = self.d / rel
        try:
            fh = open(path, "rb")  # noqa: SIM115 - kept open: later reads use this very file
        except FileNotFoundError:
            if self.fingerprints is not None and rel in self.fingerprints:
                raise self._refuse(rel, "recorded in summary.json but missing") from None
            return None
        except OSError as exc:
            raise CompareError(f"{path}: cannot read ({exc.strerror or exc})") from None
        if self.fingerprints is not None:
            want = self.fingerprints.get(rel)
            if want is None:
                fh.close()
                raise self._refuse(rel, "not one of the tables summary.json records")
            size = os.fstat(fh.fileno()).st_size
            got, _kind = fingerprint_file(fh, size, want.get("fingerprint_kind"))
            if size != want.get("bytes") or got != want.get("fingerprint"):
                fh.close()
                raise self._refuse(rel, "its content differs from the fingerprint summary.json recorded")
            fh.seek(0)
        try:
            return pq.ParquetFile(fh)
        except (pa.ArrowException, OSError, ValueError) as exc:
            fh.close()
            raise CompareError(f"{path}: not a readable Parquet table ({_short(exc)}); the "
                               f"{self.role} report is damaged: rerun evaluate") from None

    def row_parts(self) -> list[str]:
        """The per-row output's files: ``rows.parquet``, or the Dask engine's
        ``rows/part-N.parquet`` in part order."""
        if (self.d / "rows.parquet").exists() or (
                self.fingerprints is not None and "rows.parquet" in self.fingerprints):
            return ["rows.parquet"]
        # Recorded and present alike: open() refuses a recorded part that is missing and a
        # present part that is not recorded.
        rels = {f"rows/{p.name}" for p in (self.d / "rows").glob("*.parquet")}
        rels |= {r for r in self.fingerprints or () if r.startswith("rows/")}

        def order(rel: str) -> tuple[int, str]:
            digits = "".join(ch for ch in Path(rel).stem if ch.isdigit())
            return (int(digits) if digits else -1, rel)

        return sorted(rels, key=order)

    def read(self, rel: str, required: Sequence[str] = ()) -> pd.DataFrame | None:
        """Table ``rel`` as a DataFrame (None when absent); ``required`` columns must exist."""
        pf = self.open(rel)
        if pf is None:
            return None
        try:
            missing = [c for c in required if c not in pf.schema_arrow.names]
            if missing:
                raise CompareError(
                    f"{self.d / rel}: the {self.role} report's table has no column "
                    f"{', '.join(repr(c) for c in missing)} (columns: {', '.join(pf.schema_arrow.names)}); "
                    "it was edited or is not an evalkit table")
            return pf.read().to_pandas()
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise CompareError(f"{self.d / rel}: not a readable Parquet table ({_short(exc)}); the "
                               f"{self.role} report is damaged: rerun evaluate") from None
        finally:
            pf.close(force=True)  # the handle open() kept: the table is read whole


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _load_report(path: str | os.PathLike[str], role: str) -> _Run:
    d = Path(path)
    files_in = _ReportFiles(d, role)
    summary = files_in.summary
    meta = dict(summary.get("metadata") or {})
    groups_json = summary.get("groups") if isinstance(summary.get("groups"), dict) else {}
    groupings = meta.get("groupings") or ["overall", *groups_json]
    if not isinstance(groupings, list) or not all(isinstance(g, str) for g in groupings):
        raise CompareError(f"{d / 'summary.json'}: 'groupings' is damaged; the {role} report was edited")
    groupings = list(groupings)
    if "overall" not in groupings:
        groupings.insert(0, "overall")
    odf = files_in.read("overall.parquet", required=("count", "mean"))
    if odf is not None:
        if len(odf) != 1:
            raise CompareError(f"{d / 'overall.parquet'}: holds {len(odf)} rows, not 1; the {role} "
                               "report was edited")
        overall = pd.Series({c: odf[c].iloc[0] for c in odf.columns}, dtype=object)
    else:
        overall = pd.Series(summary.get("overall") or {}, dtype=object)
    groups: dict[str, pd.DataFrame] = {}
    for g in groupings:
        if g == "overall":
            continue
        rel = f"{_file_stem(g)}.parquet"
        cols = _grouping_columns(g)
        df = files_in.read(rel, required=(*cols, "count", "mean"))
        if df is not None:
            groups[g] = df
        elif g in groups_json and isinstance(groups_json[g], list):
            groups[g] = pd.DataFrame.from_records(groups_json[g])
        else:
            raise CompareError(f"{d}: the {role} report lists grouping {g!r} but has no {rel}")
    loader = None
    row_parts = files_in.row_parts()
    parts = [(rel, pf) for rel in row_parts if (pf := files_in.open(rel)) is not None]
    if parts:
        def loader(columns: list[str], _parts: list[tuple[str, pq.ParquetFile]] = parts) -> pd.DataFrame:
            tables = []
            for rel, pf in _parts:
                try:
                    tables.append(pf.read(columns=[c for c in columns if c in pf.schema_arrow.names]))
                except (pa.ArrowException, OSError, ValueError) as exc:
                    raise CompareError(f"{d / rel}: not a readable Parquet table "
                                       f"({_short(exc)}); the {role} report is damaged") from None
            return pa.concat_tables(tables, promote_options="permissive").to_pandas()

    names = ["summary.json", *row_parts, "overall.parquet"] + [
        f"{_file_stem(g)}.parquet" for g in groupings if g != "overall"]
    files = [file_provenance(d / n) for n in names if (d / n).is_file()]
    return _Run(role, str(d), "report", meta, overall, groups, groupings,
                _row_keys_from_metadata(meta), loader, files, handles=[pf for _, pf in parts])


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
                names = pq.read_schema(_r._rows_path).names
                table = pq.read_table(_r._rows_path, columns=[c for c in columns if c in names])
            return table.select([c for c in columns if c in table.column_names]).to_pandas()

    files: list[dict[str, Any]] = []
    if kind == "evaluated":
        files = [file_provenance(f) for f in _input_files(source)]
    keys = tuple(getattr(result.layout, "keys", ()) or _row_keys_from_metadata(meta))
    overall = result.overall if isinstance(result.overall, pd.Series) else pd.Series(dict(result.overall), dtype=float)
    return _Run(role, source, kind, meta, overall, dict(result.groups), groupings, keys, loader,
                files)


# -- many runs at once (evalkit history): metadata first, grouped tables by grouping --------


@dataclass(frozen=True)
class FileStamp:
    """What was known of one input file when it was checked: size, modification time and
    the fingerprint its report's ``evalkit-manifest.json`` records (None before manifests)."""

    bytes: int
    mtime_ns: int
    fingerprint: str | None


def report_key(path: str | os.PathLike[str]) -> str:
    """A report directory as a history's ``sources.parquet`` records it and finds it again:
    its resolved path (symbolic links, ``.`` and ``..`` resolved), so the same report named
    another way (another working directory, a relative or absolute glob, ``./``) is the same
    report, whose rows are reused (rt-hist8 F4)."""
    return os.path.realpath(path)


@dataclass(frozen=True)
class RunInfo:
    """One ``evaluate`` report directory, as history sees it (from ``summary.json`` and
    ``evalkit-manifest.json``).

    ``run_uid`` is the report's own ``metadata.run_id`` (two directories holding the same
    run are copies); ``manifest`` maps each file name to its manifest entry (``None``: a
    report written before manifests, read unverified); ``stamps`` holds the size,
    modification time and recorded fingerprint of ``summary.json`` and every grouped table.
    """

    path: Path
    created: pd.Timestamp
    eps: float | None
    classes: tuple[str, ...] | None
    groupings: tuple[str, ...]
    metadata: dict[str, Any] = field(repr=False, hash=False, compare=False)
    run_uid: str | None = None
    manifest: Mapping[str, Mapping[str, Any]] | None = field(default=None, repr=False, hash=False,
                                                              compare=False)
    stamps: Mapping[str, FileStamp] = field(default_factory=dict, repr=False, hash=False, compare=False)
    weight: str | None = None  # the weight column of a weighted run (``metadata.config.weight``)
    #: the report's ``grouped.parquet`` (every grouping in one file), which history reads
    #: instead of the per-grouping tables when the manifest lists it
    grouped: GroupedFile | None = field(default=None, repr=False, hash=False, compare=False)

    @functools.cached_property
    def key(self) -> str:
        """The directory as a history records it (:func:`report_key`)."""
        return report_key(self.path)

    def file(self, grouping: str) -> Path:
        """The Parquet table of one grouping (``overall.parquet``, ``by_split_region.parquet``)."""
        return self.path / f"{_file_stem(grouping)}.parquet"

    def source(self, grouping: str) -> str:
        """The file (name inside the report) history reads ``grouping``'s rows from:
        ``grouped.parquet`` when the report has one, else the grouping's own table."""
        return GROUPED_FILE if self.grouped is not None else f"{_file_stem(grouping)}.parquet"

    @property
    def verified(self) -> bool:
        """Whether the report has a manifest its files are checked against."""
        return self.manifest is not None

    @property
    def recorded_id(self) -> str:
        """The run id history gives this run's rows (the tidy tables' and ``runs.parquet``'s
        ``run_id``): the report's own ``metadata.run_id`` (as in its ``summary.json`` and
        manifest), else (a report written before run ids) :attr:`identity`,
        ``summary:<fingerprint>``. Whatever other reports a history reads, the same report
        gets the same id."""
        return self.run_uid or self.identity

    @property
    def identity(self) -> str:
        """What makes two directories the same run: the recorded run id, else (reports
        before run ids) the fingerprint of ``summary.json`` (:func:`evalkit.io.fingerprint_file`)."""
        if self.run_uid:
            return f"run_id:{self.run_uid}"
        fp = self.stamps.get("summary.json")
        if fp is not None and fp.fingerprint:
            return f"summary:{fp.fingerprint}"
        from .outdir import fingerprint_entry

        try:
            return f"summary:{fingerprint_entry(self.path / 'summary.json')['fingerprint']}"
        except OSError:
            return f"path:{self.path.absolute()}"


def read_summary_metadata(path: str | os.PathLike[str], chunk: int = 1 << 16) -> dict[str, Any]:
    """The ``metadata`` object of a ``summary.json`` without parsing the rest of the file.

    ``evaluate`` writes ``metadata`` first; a report of 50 groupings x 1,000 groups holds
    15 MB of group records after it, which this never decodes
    (:func:`evalkit.io.read_json_head`); falls back to parsing the whole file when
    ``metadata`` is not the first key. Raises :class:`ReportError` naming the file when it
    is not JSON, or holds no ``metadata`` object.
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            head = read_json_head(fh, "metadata", chunk)
            if head is None:
                fh.seek(0)
                return _metadata_of(json.loads(fh.read().decode("utf-8")), p)
            return _metadata_of({"metadata": head[0]}, p)
    except OSError as exc:
        raise ReportError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if "not a JSON object" in str(exc):
            raise ReportError(f"{p}: not an evalkit summary.json (it does not hold a JSON object)") from None
        raise ReportError(f"{p}: summary.json is corrupt or truncated ({exc})") from None


def _metadata_of(summary: Any, p: Path) -> dict[str, Any]:
    meta = summary.get("metadata") if isinstance(summary, dict) else None
    if not isinstance(meta, dict):
        raise ReportError(f"{p}: not an evalkit summary.json (no 'metadata' object)")
    return meta


def _parse_created(value: Any, where: Path, precise: Any = None) -> pd.Timestamp:
    """A run's start time (UTC): ``metadata.created`` (ISO 8601, whole seconds), refined by
    ``metadata.created_us`` (microseconds since the epoch, which evalkit records since
    sub-second start times) when that falls within the same second. A ``created`` set by
    hand (to place a backfilled run) wins over a ``created_us`` it no longer matches."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        ts = pd.NaT
    if value is None or pd.isna(ts):
        raise ReportError(f"{where}: summary.json records no valid start time "
                          f"(metadata.created = {value!r}); cannot place the run in a history")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if precise is None:
        return ts
    if isinstance(precise, bool) or not isinstance(precise, int):
        raise ReportError(f"{where}: metadata.created_us must be a whole number of microseconds, "
                          f"got {precise!r}; the report was edited or damaged")
    fine = pd.Timestamp(precise, unit="us", tz="UTC")
    return fine if fine.floor("s") == ts.floor("s") else ts


#: The last evalkit version that wrote reports without ``evalkit-manifest.json``. Manifests
#: came in commit cd25da9 (issue 11) without a version bump, so a 0.1.0 report may predate
#: them; that commit also added ``metadata.run_id``, which only manifest-writing versions record.
LAST_VERSION_WITHOUT_MANIFESTS = (0, 1, 0)


def _writes_manifests(meta: Mapping[str, Any]) -> bool:
    """Whether the evalkit that wrote a report (its ``summary.json`` metadata) wrote a
    manifest: it recorded a ``run_id``, or its version is newer than
    :data:`LAST_VERSION_WITHOUT_MANIFESTS` (an unreadable version counts as newer)."""
    if meta.get("run_id") is not None:
        return True
    version = meta.get("evalkit_version")
    if version is None:
        return False
    import re

    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", str(version))
    return m is None or tuple(int(x) for x in m.groups()) > LAST_VERSION_WITHOUT_MANIFESTS


def read_run_info(path: str | os.PathLike[str],
                  trusted: Mapping[tuple[str, str], FileStamp] | None = None,
                  keys: KeyChunks | None = None) -> RunInfo:
    """Check that ``path`` is an ``evaluate`` report directory and read what history needs.

    A report with ``evalkit-manifest.json`` (every report evalkit writes since manifests
    exist) is checked against it: the manifest must be an ``evaluate`` manifest of the same
    run as ``summary.json`` (``run_id``), ``summary.json`` must still have the fingerprint the
    manifest records, and every grouped table must be listed with its size on disk (their
    content is checked when read, :func:`read_grouping`); a report whose manifest lists
    ``grouped.parquet`` (every grouping in one file) is read from that file alone
    (:attr:`RunInfo.grouped`), the per-grouping tables are not opened. ``trusted`` maps ``(directory,
    file name)`` to a :class:`FileStamp` checked before (by an earlier history run): a file
    whose size, modification time and recorded fingerprint all still match is not hashed
    again. ``keys`` (shared by the reports of one history) holds key columns already decoded
    from another report's ``grouped.parquet`` (:class:`evalkit.grouped_file.KeyChunks`).
    A report without a manifest is read unverified (:attr:`RunInfo.verified` is
    False; history notes it) only when it was written before manifests
    (:data:`LAST_VERSION_WITHOUT_MANIFESTS`, no ``run_id``); any other is refused.

    Raises :class:`ReportError` naming the directory and file when the directory does not
    exist, is a ``compare`` or ``history`` report, has no (or a corrupt) ``summary.json``,
    records no start time, lacks a grouped table that its metadata lists, lost the manifest
    its evalkit wrote, or was edited
    since evalkit wrote it (a damaged manifest, a fingerprint or size that differs).
    """
    from .outdir import MANIFEST_NAME, not_an_evaluate_report, read_manifest

    d = Path(path)
    if not d.is_dir():
        raise ReportError(f"{d}: not a directory" if d.exists() else f"{d}: no such report directory")
    summary = d / "summary.json"
    if not summary.is_file():
        for marker, kind in (("compare.json", "compare"), ("history.json", "history")):
            if (d / marker).is_file():
                raise ReportError(not_an_evaluate_report(d, kind))
        raise ReportError(f"{d}: not an evalkit report directory (no summary.json)")
    manifest, why = read_manifest(d)
    head = (manifest["files"].get("summary.json") or {}) if manifest is not None else {}
    verified_head = isinstance(head.get("metadata_bytes"), int) and not isinstance(head["metadata_bytes"], bool)
    meta = _verified_metadata(summary, head) if verified_head else read_summary_metadata(summary)
    if manifest is None and (d / MANIFEST_NAME).exists():
        raise ReportError(f"{d / MANIFEST_NAME}: {why}; the report was edited or damaged "
                          "(rerun evaluate, or restore the report)")
    if manifest is None and _writes_manifests(meta):
        why = ("its summary.json records a run id" if meta.get("run_id") is not None
               else "that version writes manifests")
        raise ReportError(f"{d}: {MANIFEST_NAME} is missing, but evalkit "
                          f"{meta.get('evalkit_version', '?')} wrote this report with one ({why}): "
                          "the report was edited or damaged (rerun evaluate, or restore the report)")
    if manifest is not None and manifest.get("command") != "evaluate":
        raise ReportError(f"{d}: is a {manifest.get('command')} report, not an evaluate report "
                          f"({MANIFEST_NAME} says so)")
    run_uid = meta.get("run_id")
    if manifest is not None and run_uid is not None and manifest.get("run_id") != run_uid:
        raise ReportError(f"{summary}: belongs to another run than {MANIFEST_NAME} (run ids differ); "
                          "the report is mixed from two runs: rerun evaluate or restore it")
    created = _parse_created(meta.get("created"), summary, meta.get("created_us"))
    groupings = meta.get("groupings")
    if not isinstance(groupings, list) or not all(isinstance(g, str) for g in groupings):
        raise ReportError(f"{summary}: metadata.groupings is missing or not a list of names")
    groupings = list(dict.fromkeys(["overall", *groupings]))
    files = manifest["files"] if manifest is not None else None
    # the metadata head history reads was checked above (verified_head); else the whole file
    stamps = {"summary.json": _checked_stamp(d, "summary.json", files, trusted, hash_it=not verified_head)}
    grouped = None
    if files is not None and GROUPED_FILE in files:  # every grouping in one file: read only it
        stamps[GROUPED_FILE] = _checked_stamp(d, GROUPED_FILE, files, trusted, hash_it=False)
        grouped = GroupedFile(d / GROUPED_FILE, files[GROUPED_FILE], keys)
    for g in groupings if grouped is None else ():
        rel = f"{_file_stem(g)}.parquet"
        if files is None and not _looks_like_parquet(d / rel):
            what = "is missing" if not (d / rel).exists() else "is not a Parquet file (truncated or corrupt)"
            raise ReportError(f"{d}: {rel} of grouping {g!r} {what}")
        stamps[rel] = _checked_stamp(d, rel, files, trusted, hash_it=False, grouping=g)
    eps = meta.get("eps")
    classes = meta.get("classes")
    return RunInfo(
        path=d, created=created, eps=float(eps) if isinstance(eps, int | float) else None,
        classes=tuple(str(c) for c in classes) if isinstance(classes, list) else None,
        groupings=tuple(groupings), metadata=meta, run_uid=str(run_uid) if run_uid else None,
        manifest=files, stamps=stamps, weight=_weight_of(meta), grouped=grouped)


def _weight_of(meta: Mapping[str, Any]) -> str | None:
    """The weight column a run's statistics are weighted by (None: unweighted)."""
    cfg = meta.get("config")
    w = cfg.get("weight") if isinstance(cfg, Mapping) else None
    return str(w) if w else None


def _edited(where: Path, what: str) -> ReportError:
    """``what`` differs from the manifest: ``"size"`` or ``"content"``."""
    from .outdir import MANIFEST_NAME

    return ReportError(f"{where}: its {what} differs from what {MANIFEST_NAME} records; the report "
                       "was edited, truncated or replaced since evalkit wrote it: rerun evaluate, "
                       "or restore it")


def _verified_metadata(summary: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The ``metadata`` object of ``summary``, parsed from exactly the head bytes whose hash
    ``evalkit-manifest.json`` records (``metadata_bytes``, ``metadata_fingerprint``): every
    byte history reads of ``summary.json`` is checked, and nothing after it is read."""
    import io as _io

    n = int(entry["metadata_bytes"])
    try:
        with summary.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size != entry.get("bytes"):
                raise _edited(summary, f"size ({size} bytes, recorded {entry.get('bytes')})")
            raw = fh.read(n)
    except OSError as exc:
        raise ReportError(f"{summary}: cannot read ({exc.strerror or exc})") from None
    if len(raw) != n or fingerprint_bytes(raw) != entry.get("metadata_fingerprint"):
        raise _edited(summary, "metadata (fingerprint of its first bytes)")
    try:
        head = read_json_head(_io.BytesIO(raw + b"}"), "metadata")
    except ValueError:
        head = None
    if head is None or head[1] != n:
        raise _edited(summary, "metadata (not where the manifest says it ends)")
    return _metadata_of({"metadata": head[0]}, summary)


def _checked_stamp(d: Path, rel: str, files: Mapping[str, Mapping[str, Any]] | None,
                   trusted: Mapping[tuple[str, str], FileStamp] | None, *, hash_it: bool,
                   grouping: str | None = None) -> FileStamp:
    """The :class:`FileStamp` of ``d / rel``, checked against the manifest entry: listed,
    same size, and (``hash_it``, unless ``trusted`` vouches for this exact file) same
    fingerprint."""
    f = d / rel
    try:
        st = f.stat()
    except OSError:
        what = f" of grouping {grouping!r}" if grouping else ""
        raise ReportError(f"{d}: {rel}{what} is missing") from None
    if files is None:
        return FileStamp(int(st.st_size), int(st.st_mtime_ns), None)
    entry = files.get(rel)
    if entry is None:
        from .outdir import MANIFEST_NAME

        raise ReportError(f"{f}: not listed in {MANIFEST_NAME}; the report was edited (a file added "
                          "or replaced): rerun evaluate, or restore it")
    stamp = FileStamp(int(st.st_size), int(st.st_mtime_ns), str(entry.get("fingerprint")))
    if entry.get("bytes") != stamp.bytes:
        raise _edited(f, f"size ({stamp.bytes} bytes, recorded {entry.get('bytes')})")
    known = trusted.get((report_key(d), rel)) if trusted else None
    if hash_it and known != stamp:
        with f.open("rb") as fh:
            got, kind = fingerprint_file(fh, stamp.bytes, entry.get("fingerprint_kind"))
        if kind != entry.get("fingerprint_kind") or got != stamp.fingerprint:
            raise _edited(f, "content (fingerprint)")
    return stamp


def _looks_like_parquet(f: Path) -> bool:
    """Cheap check of a Parquet file: magic bytes at both ends (a truncated copy fails it)."""
    try:
        with f.open("rb") as fh:
            if fh.read(4) != b"PAR1":
                return False
            fh.seek(-4, os.SEEK_END)
            return fh.read(4) == b"PAR1"
    except OSError:
        return False


def expand_reports(specs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
                   exclude: Sequence[str | os.PathLike[str]] = ()) -> ExpandedReports:
    """Report directories named by paths and globs (``reports/*/``), each once.

    A glob that matches nothing is an error (a typo must not give an empty history). A
    path named explicitly is always returned (if it is not a report, reading it says so).
    A glob's matches that are plainly something else are left out and listed in
    ``ignored`` with the reason: files, and directories holding an evalkit ``compare`` or
    ``history`` report (``reports/*/`` next to ``reports/history``). Any other directory
    is returned, so reading it names what is wrong (a damaged report, or a directory that
    is no report at all). Matches of ``exclude`` (the output directory) are dropped and
    listed in ``excluded``.
    """
    if isinstance(specs, str | os.PathLike):
        specs = [specs]
    skip = {os.path.realpath(e) for e in exclude}
    out: dict[str, Path] = {}
    ignored: list[tuple[str, str]] = []
    excluded: list[tuple[str, str]] = []
    for spec in specs:
        s = os.fspath(spec)
        pattern = any(ch in s for ch in "*?[")
        if pattern:
            matches = sorted(_glob.glob(s))
            if not matches:
                raise ReportError(f"{s}: the pattern matches nothing")
        else:
            matches = [s]
        for m in matches:
            p = Path(m)
            key = os.path.realpath(p)  # one directory, however named (relative, absolute, via ..)
            if key in out:
                continue
            if os.path.realpath(p) in skip:
                excluded.append((m, s))
                continue
            why = _not_a_report(p) if pattern else None
            if why is not None:
                ignored.append((m, f"{why} (matched by {s})"))
                continue
            out[key] = p
    if not out and not ignored and not excluded:
        raise UsageError("no report directories given")
    return ExpandedReports(list(out.values()), ignored, excluded)


@dataclass
class ExpandedReports:
    """What :func:`expand_reports` found: the report ``paths``; ``ignored`` glob matches that
    are not ``evaluate`` reports, as ``(path, why)``; ``excluded`` matches of an excluded
    path, as ``(path, the spec that matched it)``."""

    paths: list[Path]
    ignored: list[tuple[str, str]]
    excluded: list[tuple[str, str]]


def _not_a_report(p: Path) -> str | None:
    """Why a glob match cannot be an ``evaluate`` report (None: it may be one)."""
    from .outdir import MANIFEST_NAME, read_manifest

    if not p.is_dir():
        return "not a directory" if p.exists() or p.is_symlink() else "does not exist"
    if (p / "summary.json").exists():  # an evaluate report, maybe a damaged one
        return None
    manifest, _why = read_manifest(p)
    if manifest is not None and manifest.get("command") != "evaluate":
        return f"an evalkit {manifest.get('command')} report, not an evaluate report"
    if manifest is None and not (p / MANIFEST_NAME).exists():
        for marker, kind in (("history.json", "history"), ("compare.json", "compare")):
            if (p / marker).is_file():
                return f"an evalkit {kind} report, not an evaluate report"
    return None


_OPTIONAL = ("std", "sem", "clipped_low", "clipped", "accuracy", "weighted_mean", "n_eff")
#: The columns of :class:`Reused` rows (besides the key columns): ``mean`` is the run's
#: estimate (the weighted mean in a weighted run) and ``n_eff`` its Kish effective size
#: (NaN in an unweighted run).
REUSED_STATS = ("count", "mean", "sem", "n_eff", "clipped_low", "accuracy")
_SAMPLE_ROWS = 5


@dataclass
class GroupedRuns:
    """One grouping's rows over the runs: key columns, statistics and each row's run.

    ``bad`` lists ``(run position, reason)`` of tables left out (``skip_bad``);
    ``key_types`` the key columns' Arrow types per run position (as text), so a later
    history can tell whether reused rows would have been typed alike."""

    run_pos: np.ndarray
    keys: list[pa.ChunkedArray]
    stats: dict[str, np.ndarray]
    bad: list[tuple[int, str]]
    key_types: dict[int, str] = field(default_factory=dict)
    reused: tuple[int, ...] = ()  # run positions whose rows came from an earlier history
    notes: list[str] = field(default_factory=list)  # key columns whose kind differs between runs


@dataclass
class Reused:
    """Rows of one grouping taken from an earlier history instead of the report files:
    ``table`` (key columns and :data:`REUSED_STATS`), ``run_pos`` (each row's run position)
    and ``key_types`` (per run position, as :attr:`GroupedRuns.key_types`)."""

    table: pa.Table
    run_pos: np.ndarray
    key_types: dict[int, str]


def _stat_arrays(t: pa.Table) -> dict[str, np.ndarray]:
    out = {}
    for c in ("count", "mean", *_OPTIONAL):
        if c in t.column_names:
            col = t.column(c)
            out[c] = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False) \
                if col.null_count == 0 else col.cast(pa.float64()).fill_null(np.nan).to_numpy()
    if "clipped" in out:  # reports written before clipped_low / clipped_high
        old = out.pop("clipped")
        out["clipped_low"] = np.where(np.isnan(out["clipped_low"]), old, out["clipped_low"]) \
            if "clipped_low" in out else old
    return out


def _read_one(info: RunInfo, grouping: str, cols: Sequence[str]) -> pa.Table:
    """One grouping's table of one run: its row groups of the report's ``grouped.parquet``
    (hashed whole against the manifest once, :class:`evalkit.grouped_file.GroupedFile`), else
    its own table read in one call and checked against the manifest fingerprint; only the
    key and statistic columns decoded."""
    if info.grouped is not None:
        t = info.grouped.read(grouping, cols)
        if not info.grouped.has_spread:  # of the file's statistic columns (not a key named so)
            raise ReportError(f"{info.grouped.path}: grouped table has no column std (or sem)")
        return t
    f = info.file(grouping)
    try:
        with f.open("rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ReportError(f"{f}: cannot read ({exc.strerror or exc})") from None
    entry = info.manifest.get(f.name) if info.manifest is not None else None
    if entry is not None:
        import io as _io

        got, kind = fingerprint_file(_io.BytesIO(data), len(data), entry.get("fingerprint_kind"))
        if len(data) != entry.get("bytes") or kind != entry.get("fingerprint_kind") \
                or got != entry.get("fingerprint"):
            raise _edited(f, "content (fingerprint)")
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
        names = pf.schema_arrow.names
        missing = [c for c in [*cols, "count", "mean"] if c not in names]
        if not ("sem" in names or "std" in names):
            missing.append("std (or sem)")
        if missing:
            raise ReportError(f"{f}: grouped table has no column(s) {', '.join(missing)}; "
                              f"columns are {', '.join(names)}")
        # a run's interval is recomputed from its sem (or std): one level for every run, and
        # every column read costs a decoded page per file
        return pf.read(columns=[*cols, *history_columns(names)], use_threads=False)
    except ReportError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ReportError(f"{f}: cannot read the grouped table ({type(exc).__name__}: {exc})") from None


def _spread(stats: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """A run's spread per row: its sem, else its std (rows reused from an earlier history
    carry sem, newly read older reports std)."""
    sem, std = stats.get("sem"), stats.get("std")
    return sem if std is None else std if sem is None else np.where(np.isnan(sem), std, sem)


def _all_plausible(stats: Mapping[str, np.ndarray]) -> bool:
    """True when :func:`_bad_values` finds nothing for certain, from a few reductions (no
    mask per check): every count whole and >= 0, every mean, spread, clipped count and
    accuracy finite and in range. False (check row by row) for anything else: a NaN or an
    unused group anywhere, a weighted run (``weighted_mean`` not all NaN)."""
    n = len(next(iter(stats.values()), np.empty(0)))
    if n == 0:
        return True
    count, mean, spread = stats.get("count"), stats.get("mean"), _spread(stats)
    if count is None or mean is None or spread is None:
        return False
    if "weighted_mean" in stats and not np.isnan(stats["weighted_mean"]).all():
        return False  # a weighted run: its n_eff too, row by row
    with np.errstate(invalid="ignore"):
        if not (count.min() >= 0 and count.max() < np.inf and np.array_equal(count, np.floor(count))):
            return False
        if not (mean.min() >= 0 and mean.max() < np.inf and spread.min() >= 0 and spread.max() < np.inf):
            return False
        low = stats.get("clipped_low")
        if low is not None and not (low.min() >= 0 and bool((low <= count).all())):
            return False
        acc = stats.get("accuracy")
        return acc is None or bool(acc.min() >= 0 and acc.max() <= 1)


def _bad_values(stats: Mapping[str, np.ndarray], weighted: np.ndarray | None = None
                ) -> dict[str, tuple[np.ndarray, str]]:
    """Rows whose statistics no evaluate report can hold, per column: ``{column: (mask,
    what)}``. A loss is >= 0 and finite; counts are whole and >= 0; a spread (``std`` /
    ``sem``) is >= 0 and present wherever a group has 2 rows or more; clipped counts lie in
    [0, count]; accuracy in [0, 1]."""
    if _all_plausible(stats):
        return {}
    nan = np.full(len(next(iter(stats.values()), np.empty(0))), np.nan)
    count = stats.get("count", nan)
    used = count > 0
    out: dict[str, tuple[np.ndarray, str]] = {}
    with np.errstate(invalid="ignore"):
        checks = [
            ("count", ~(np.isfinite(count) & (count >= 0) & (count == np.floor(count))),
             "not a whole number >= 0"),
            ("mean", used & ~(np.isfinite(stats.get("mean", nan)) & (stats.get("mean", nan) >= 0)),
             "negative, NaN or infinite"),
        ]
        spread = _spread(stats)
        if spread is not None:
            # In a weighted run (``weighted``: per row) the sem is the weighted mean's: none
            # where n_eff < 2 or the group's weights sum to 0 (no weighted mean, n_eff NaN).
            needed = count >= 2
            if weighted is not None and "sem" in stats and "std" not in stats:
                needed &= ~(weighted & ~(stats.get("n_eff", nan) >= 2))
            checks.append(("sem" if "std" not in stats else "std",
                           used & ((spread < 0) | np.isinf(spread) | (np.isnan(spread) & needed)),
                           "negative, infinite, or missing where count >= 2"))
        if "clipped_low" in stats:
            v = stats["clipped_low"]
            checks.append(("clipped_low", used & ((v < 0) | (v > count)), "outside [0, count]"))
        if "accuracy" in stats:
            v = stats["accuracy"]
            checks.append(("accuracy", used & ((v < 0) | (v > 1)), "outside [0, 1]"))
        if "weighted_mean" in stats:  # NaN: an unweighted run
            v = stats["weighted_mean"]
            checks.append(("weighted_mean", used & ((v < 0) | np.isinf(v)), "negative or infinite"))
            n = stats.get("n_eff", nan)
            checks.append(("n_eff", used & ~np.isnan(v) & ~((n > 0) & (n <= count * (1 + 1e-9))),
                           "missing, or outside (0, count], in a weighted run"))
    for col, mask, what in checks:
        if mask.any():
            out[col] = (mask, what)
    return out


def _check_values(g: GroupedRuns, infos: Sequence[RunInfo], grouping: str, skip_bad: bool) -> GroupedRuns:
    """Refuse (or with ``skip_bad`` leave out, listed in ``bad``) every run whose table holds
    a value :func:`_bad_values` rejects; the error names the file, column and sample rows."""
    bad = _bad_values(g.stats, np.array([infos[int(r)].weight is not None for r in g.run_pos], dtype=bool))
    if not bad:
        return g
    run_bad = np.zeros(len(g.run_pos), dtype=bool)
    for mask, _what in bad.values():
        run_bad |= mask
    reasons: list[tuple[int, str]] = []
    for r in np.unique(g.run_pos[run_bad]):
        rows = np.flatnonzero(g.run_pos == r)
        start = rows[0]
        parts = []
        for col, (mask, what) in bad.items():
            hit = rows[mask[rows]]
            if len(hit):
                shown = g.stats[col] if col in g.stats else g.stats.get("sem", g.stats.get("std"))
                sample = ", ".join(f"row {int(i - start)}"
                                   + (f" ({_row_key(g, int(i))})" if g.keys else "")
                                   + f": {float(shown[i])!r}" for i in hit[:_SAMPLE_ROWS])
                more = f" and {len(hit) - _SAMPLE_ROWS} more" if len(hit) > _SAMPLE_ROWS else ""
                parts.append(f"column {col!r} holds {len(hit)} value(s) {what} ({sample}{more})")
        info = infos[int(r)]
        where = info.file(grouping) if info.grouped is None else f"{info.grouped.path} (grouping {grouping!r})"
        msg = f"{where}: {'; '.join(parts)}; not what evaluate writes: the report was edited or damaged"
        if not skip_bad:
            raise ReportError(msg)
        reasons.append((int(r), msg))
    keep = ~np.isin(g.run_pos, [r for r, _m in reasons])
    take = pa.array(np.flatnonzero(keep))
    return GroupedRuns(g.run_pos[keep], [k.take(take) for k in g.keys],
                       {c: a[keep] for c, a in g.stats.items()}, g.bad + reasons,
                       {r: t for r, t in g.key_types.items() if r not in {x for x, _m in reasons}},
                       g.reused, g.notes)


def _row_key(g: GroupedRuns, i: int) -> str:
    from .report import fmt_key

    return ", ".join(fmt_key(k[i].as_py()) for k in g.keys)


def _key_types(t: pa.Table, cols: Sequence[str]) -> str:
    """The key columns' types as :func:`_key_arrays` first normalises them (text)."""
    out = []
    for c in cols:
        ty = t.schema.field(c).type
        if pa.types.is_dictionary(ty):
            ty = ty.value_type
        out.append(str(pa.large_string() if pa.types.is_string(ty) else ty))
    return ";".join(out)


#: Tasks one grouping's reads (and its reads ahead) are split into on the reading pool: a
#: few per thread (they end unevenly), not one per report: handing out a task (a future, a
#: thread woken) costs about as much as decoding one report's grouping (365 reports x 52
#: groupings: ~1 CPU-s of 5 when each report was its own task).
READ_TASKS = 8


def _parts(items: Sequence[Any], n: int = READ_TASKS) -> list[Sequence[Any]]:
    """``items`` in at most ``n`` consecutive runs of nearly equal length, in order."""
    k = -(-len(items) // max(1, n)) if items else 1
    return [items[i:i + k] for i in range(0, len(items), k)]


def _map_parts(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` on ``pool`` as :data:`READ_TASKS` tasks (:func:`_parts`);
    the first error (in ``items`` order) is raised."""
    return [y for part in pool.map(lambda p: [fn(x) for x in p], _parts(items)) for y in part]


def _read_ahead(infos: Sequence[RunInfo], runs: Sequence[int], grouping: str, pool: ThreadPoolExecutor) -> None:
    """The groupings after ``grouping`` in each run's ``grouped.parquet`` decoded on
    ``pool`` while this one is used (:meth:`evalkit.grouped_file.GroupedFile.read_ahead`),
    as :data:`READ_TASKS` tasks."""
    files = [g for i in runs if (g := infos[i].grouped) is not None and g.wants_ahead()]

    def decode(part: Sequence[GroupedFile]) -> None:
        for g in part:
            g.decode_after(grouping)

    for part in _parts(files):
        pool.submit(decode, part)


def read_grouping(infos: Sequence[RunInfo], idx: Sequence[int], grouping: str, skip_bad: bool,
                  pool: ThreadPoolExecutor, reused: Reused | None = None) -> GroupedRuns:
    """Read one grouping's table from every run in ``idx`` (only the key and statistic
    columns history needs), file by file on ``pool``'s threads (the decoder releases the GIL),
    then combined with the ``reused`` rows (runs an earlier history already read) into one
    set of arrays. Reused rows are dropped and their runs read again when a newly read
    run's key types differ from theirs (so the combined keys are typed as a fresh read
    would type them).

    A file that is unreadable, edited since evalkit wrote it (manifest fingerprint), or holds
    impossible statistics (:func:`_bad_values`) raises :class:`ReportError` naming it (file,
    column, sample rows), or with ``skip_bad`` is left out and listed in
    ``GroupedRuns.bad``."""
    cols = list(_grouping_columns(grouping))

    def one(i: int) -> tuple[pa.Table | None, str]:
        try:
            return _read_one(infos[i], grouping, cols), ""
        except ReportError as exc:
            if not skip_bad:
                raise
            return None, str(exc)

    def each(runs: list[int]) -> list[tuple[pa.Table | None, str]]:
        # rows a report's grouped.parquet decoded ahead are handed out here; only decoding
        # (which releases the GIL) is worth the threads
        ready = {i for i in runs if (g := infos[i].grouped) is not None and g.decoded(grouping)}
        rest = [i for i in runs if i not in ready]
        done = dict(zip(rest, _map_parts(pool, one, rest), strict=True))
        out = [done[i] if i in done else one(i) for i in runs]
        _read_ahead(infos, runs, grouping, pool)
        return out

    idx = list(idx)
    read = each(idx)
    fresh_types = {i: _key_types(t, cols) for i, (t, _e) in zip(idx, read, strict=True) if t is not None}
    if reused is not None and len(set(fresh_types.values()) | set(reused.key_types.values())) > 1:
        again = sorted(reused.key_types)
        read += each(again)
        idx += again
        fresh_types.update({i: _key_types(t, cols) for i, (t, _e) in zip(again, read[-len(again):],
                                                                           strict=True) if t is not None})
        reused = None
    bad = [(i, err) for i, (t, err) in zip(idx, read, strict=True) if t is None]
    good = [(i, t) for i, (t, _e) in zip(idx, read, strict=True) if t is not None]
    tables = [t for _i, t in good]
    run_pos = np.repeat(np.array([i for i, _t in good], dtype=np.int64),
                        [t.num_rows for t in tables]).astype(np.int64)
    key_types = dict(fresh_types)
    from_cache: tuple[int, ...] = ()
    if reused is not None:
        from_cache = tuple(sorted(reused.key_types))
        tables.insert(0, reused.table)
        run_pos = np.concatenate([reused.run_pos.astype(np.int64), run_pos])
        key_types.update(reused.key_types)
    try:
        # one table when the runs agree on the types (missing optional columns become nulls)
        whole = pa.concat_tables(tables, promote_options="default") if tables else None
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        whole = None
    if whole is not None:
        grouped = GroupedRuns(run_pos, _key_arrays([whole], cols), _stat_arrays(whole), bad, key_types,
                              from_cache)
    else:
        parts = [_stat_arrays(t) for t in tables]
        names = [c for c in ("count", "mean", *_OPTIONAL) if any(c in p for p in parts)]
        stats = {c: np.concatenate([p.get(c, np.full(t.num_rows, np.nan))
                                    for p, t in zip(parts, tables, strict=True)])
                 if parts else np.empty(0) for c in names}
        notes: list[str] = []  # none with reused rows: the runs' key types are all alike then
        keys = _key_arrays(tables, cols, notes if reused is None else None, grouping, [infos[i].path for i, _t in good])
        grouped = GroupedRuns(run_pos, keys, stats, bad, key_types, from_cache, notes)
    return _check_values(grouped, infos, grouping, skip_bad)


def _key_arrays(tables: Sequence[pa.Table], cols: Sequence[str], notes: list[str] | None = None,
                grouping: str = "", paths: Sequence[Path] = ()) -> list[pa.ChunkedArray]:
    """Each key column over all runs in one type, by the rule compare matches keys by
    (:func:`evalkit.aggregate.keys.match_key_parts`: float32 ``0.1`` is ``0.1``, a date its
    midnight timestamp, text when the kinds differ...; a note in ``notes`` when a column's type
    changed; :class:`ReportError` naming the run (``paths``) when two groups of a run become one
    key), in the one encoding of
    keys (:func:`evalkit.aggregate.keys.canonical_keys`: ``-0.0`` is ``0.0``, NaN is null),
    as evaluate groups them: reports written before it did can hold ``-0.0`` where later
    ones hold ``0.0``, one group."""
    from .aggregate.keys import canonical_keys, key_match_note, match_key_parts

    out = []
    for c in cols:
        # the one rule for the same key across runs, compare's too (float32 0.1 = 0.1, a
        # date = its midnight timestamp, text when the kinds differ...)
        match = match_key_parts([t.column(c) for t in tables])
        if match.collided:
            # (parts: the earlier history's rows first, when reused, then one per run read)
            off = len(tables) - len(paths)
            runs = ", ".join(str(paths[i - off]) for i in match.collided if i >= off) or "a run"
            raise ReportError(f"{runs}: grouping {grouping!r}: key column {c!r} holds two groups that "
                              "become one key once matched across runs "
                              f"({MATCH_HOW_SHORT}); group by a column that tells them apart")
        note = key_match_note(grouping, c, match)
        if note is not None and notes is not None:
            notes.append(note)
        parts = match.parts
        # one call per run's part, not per chunk: a grouping read from 365 reports has 365
        chunks = [ch for p in parts for ch in canonical_keys(p).chunks]  # type: ignore[arg-type]
        out.append(pa.chunked_array(chunks, type=parts[0].type if parts else pa.large_string()))
    return out


#: Why two groups of one run can become one key in history (:func:`_key_arrays`).
MATCH_HOW_SHORT = "a decimal or large integer key matched on its float value against a float key of another run"


__all__ = ["ExpandedReports", "FileStamp", "GroupedRuns", "Reused", "RunInfo", "expand_reports", "is_report_dir", "read_grouping", "read_run_info",
           "read_summary_metadata"]
