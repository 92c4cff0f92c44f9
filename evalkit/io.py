"""Reading Parquet datasets as record batches, and writing outputs atomically.

Inputs are opened read-only through :mod:`pyarrow.dataset`: a file, a directory (hive
partitions such as ``split=val/`` become columns), a glob, or a list of those. Each file's
footer is read up front so a corrupt file or schema drift is reported by name before any
number is computed. Batches are decoded by Arrow's threaded scanner with column projection.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .errors import (
    CorruptFileError,
    EmptyInputError,
    InputError,
    OutputError,
    OutputExistsError,
    SchemaDriftError,
    missing_column,
)

PathLike = str | os.PathLike[str]
REPORT_MARKERS = ("report.md", "summary.json", "compare.md", "compare.json")


def _has_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _is_url(s: str) -> bool:
    return "://" in s and not s.startswith("file://")


@dataclass
class Source:
    """A resolved Parquet input: its files, schema and a scanner factory."""

    label: str
    """How the input is named in messages (the path the user gave)."""
    dataset: ds.Dataset
    files: list[str]
    filesystem: object | None = None

    @property
    def schema(self) -> pa.Schema:
        """Unified schema, partition columns included."""
        return self.dataset.schema

    def count_rows(self) -> int:
        """Row count from Parquet metadata (no data read)."""
        return int(self.dataset.count_rows())

    def file_sizes(self) -> int:
        """Total size in bytes of the input files (0 when unknown)."""
        total = 0
        for f in self.files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(f)
        return total

    def check_columns(self, columns: Sequence[str], role: str = "input") -> None:
        """Raise a MissingColumnError for the first column that is not in the schema."""
        names = self.schema.names
        for c in columns:
            if c not in names:
                raise missing_column(c, role, names, self.label)

    def check_drift(self, columns: Sequence[str]) -> None:
        """Every file must hold every needed column with the same type."""
        if len(self.files) < 2:
            return
        part_cols = set(self.schema.names) - set(_physical_names(self.dataset))
        expected = {c: self.schema.field(c).type for c in columns if c in self.schema.names}
        for frag in self.dataset.get_fragments():
            try:
                phys = frag.physical_schema
            except (pa.ArrowInvalid, OSError) as exc:
                raise CorruptFileError(f"{frag.path}: not a readable Parquet file ({exc})") from None
            for c, t in expected.items():
                if c in part_cols:
                    continue
                idx = phys.get_field_index(c)
                if idx < 0:
                    raise SchemaDriftError(
                        f"{self.label}: file {frag.path} has no column {c!r}, which other files of "
                        "the dataset have"
                    )
                got = phys.field(idx).type
                if got != t:
                    raise SchemaDriftError(
                        f"{self.label}: column {c!r} has type {got} in file {frag.path} but {t} "
                        "elsewhere in the dataset"
                    )

    def batches(
        self, columns: Sequence[str], batch_size: int = 131_072, use_threads: bool = True
    ) -> Iterator[tuple[str, pa.RecordBatch]]:
        """Yield ``(file path, batch)`` in file order, decoding with Arrow's thread pool."""
        scanner = self.dataset.scanner(
            columns=list(columns), batch_size=batch_size, use_threads=use_threads,
            batch_readahead=4, fragment_readahead=2,
        )
        it = scanner.scan_batches()
        path = self.label
        while True:
            try:
                tagged = next(it)
            except StopIteration:
                return
            except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as exc:
                raise CorruptFileError(f"{path}: cannot read Parquet data ({_short(exc)})") from None
            path = getattr(tagged.fragment, "path", self.label)
            yield path, tagged.record_batch


def _physical_names(dataset: ds.Dataset) -> list[str]:
    try:
        frag = next(iter(dataset.get_fragments()))
    except StopIteration:
        return list(dataset.schema.names)
    return list(frag.physical_schema.names)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def expand_paths(path: PathLike | Sequence[PathLike]) -> list[str]:
    """Expand globs; keep files and directories as given. Raises EmptyInputError on no match."""
    items = [path] if isinstance(path, str | os.PathLike) else list(path)
    out: list[str] = []
    for item in items:
        s = os.fspath(item)
        if s.startswith("file://"):
            s = s[len("file://"):]
        if _is_url(s):
            out.append(s)
        elif _has_glob(s):
            matches = sorted(_glob.glob(s, recursive=True))
            if not matches:
                raise EmptyInputError(f"{s}: the glob matches no file")
            out.extend(matches)
        else:
            if not os.path.exists(s):
                raise EmptyInputError(f"{s}: no such file or directory")
            out.append(s)
    if not out:
        raise EmptyInputError("no input path given")
    return out


def open_source(path: PathLike | Sequence[PathLike], label: str | None = None) -> Source:
    """Open one Parquet input (file, directory, glob, list of them or an fsspec URL)."""
    paths = expand_paths(path)
    label = label or (paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more)")
    filesystem = None
    if any(_is_url(p) for p in paths):
        filesystem, paths = _fsspec_paths(paths)
    try:
        if len(paths) == 1 and (filesystem is None and os.path.isdir(paths[0])):
            dataset = ds.dataset(paths[0], format="parquet", partitioning="hive")
        elif len(paths) == 1 and filesystem is not None and _fs_isdir(filesystem, paths[0]):
            dataset = ds.dataset(paths[0], format="parquet", partitioning="hive", filesystem=filesystem)
        else:
            files: list[str] = []
            for p in paths:
                if filesystem is None and os.path.isdir(p):
                    files.extend(sorted(str(f) for f in Path(p).rglob("*") if f.is_file()
                                        and not f.name.startswith((".", "_"))))
                else:
                    files.append(p)
            if not files:
                raise EmptyInputError(f"{label}: no Parquet file found")
            dataset = ds.dataset(files, format="parquet", filesystem=filesystem)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptFileError(f"{label}: not a readable Parquet dataset ({_short(exc)})") from None
    files = list(dataset.files)  # type: ignore[attr-defined]
    if not files:
        raise EmptyInputError(f"{label}: the directory holds no Parquet file")
    # Reading every footer up front names a corrupt or non-Parquet file before any work.
    for frag in dataset.get_fragments():
        try:
            frag.physical_schema  # noqa: B018
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptFileError(f"{frag.path}: not a readable Parquet file ({_short(exc)})") from None
    return Source(label, dataset, files, filesystem)


def _fs_isdir(fs: object, path: str) -> bool:
    try:
        return bool(fs.isdir(path))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any backend failure means "treat as a file"
        return False


def _fsspec_paths(paths: list[str]) -> tuple[object, list[str]]:
    try:
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem
    except ImportError:
        from .errors import MissingDependencyError

        raise MissingDependencyError(
            "reading URLs needs fsspec: pip install 'evalkit[dask]' (plus s3fs / gcsfs / adlfs "
            "for s3:// / gs:// / abfs://)"
        ) from None
    fs, _, resolved = fsspec.get_fs_token_paths(paths)
    out: list[str] = []
    for p in resolved:
        if _has_glob(p):
            out.extend(sorted(fs.glob(p)))
        else:
            out.append(p)
    if not out:
        raise EmptyInputError(f"{paths[0]}: matches no file")
    return PyFileSystem(FSSpecHandler(fs)), out


def table_source(table: pa.Table, label: str = "<table>") -> Source:
    """Wrap an in-memory Arrow table as a Source (one dataset, no files)."""
    if not isinstance(table, pa.Table):
        raise InputError(f"expected a pyarrow Table, got {type(table).__name__}")
    return Source(label, ds.dataset(table), [])


# -- atomic output ---------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class AtomicDir:
    """Build an output directory beside its target, then rename it into place.

    All files of a run appear together or not at all: a crash, Ctrl-C or disk-full error
    leaves the previous report (if any) untouched, and the temporary directory is removed
    (or, after a hard kill, swept by the next run).
    """

    def __init__(self, target: PathLike, overwrite: bool = False) -> None:
        self.target = Path(target).absolute()
        self.overwrite = overwrite
        self.tmp: Path | None = None

    def check(self) -> None:
        """Refuse an existing report unless overwriting; refuse a non-empty unrelated dir."""
        t = self.target
        if t.exists() and not t.is_dir():
            raise OutputError(f"{t}: exists and is not a directory")
        if t.is_dir() and not self.overwrite:
            entries = [e.name for e in t.iterdir()]
            if any(m in entries for m in REPORT_MARKERS):
                raise OutputExistsError(f"{t}: already holds a report; pass --overwrite to replace it")
            if entries:
                raise OutputExistsError(
                    f"{t}: directory is not empty ({len(entries)} entries); pass --overwrite to replace it"
                )

    def __enter__(self) -> Path:
        self.check()
        parent = self.target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._sweep(parent)
            self.tmp = parent / f".{self.target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.tmp.mkdir()
        except OSError as exc:
            raise OutputError(f"{self.target}: cannot create the output directory ({exc.strerror or exc})") from None
        return self.tmp

    def _sweep(self, parent: Path) -> None:
        # Temp dirs of runs that were killed hard (SIGKILL) are left behind; remove them.
        for p in parent.glob(f".{self.target.name}.tmp-*"):
            try:
                pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
            except (IndexError, ValueError):
                continue
            if not _pid_alive(pid):
                shutil.rmtree(p, ignore_errors=True)

    def commit(self) -> Path:
        """Move the finished directory into place (replacing the old one if overwriting)."""
        assert self.tmp is not None
        self.check()
        old: Path | None = None
        try:
            if self.target.exists():
                old = self.target.parent / f".{self.target.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(self.target, old)
            os.replace(self.tmp, self.target)
        except OSError as exc:
            if old is not None and not self.target.exists():
                os.replace(old, self.target)
            raise OutputError(f"{self.target}: cannot move the report into place ({exc})") from None
        self.tmp = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def write_table(table: pa.Table, path: PathLike) -> None:
    """Write one Parquet file (zstd), mapping OS failures to OutputError."""
    try:
        pq.write_table(table, os.fspath(path), compression="zstd")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc})") from None


def write_text(text: str, path: PathLike) -> None:
    """Write a text file, mapping OS failures to OutputError."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None


class RowWriter:
    """Incremental per-row Parquet writer (one file, row groups appended per batch)."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Append a batch (the first one fixes the schema)."""
        try:
            if self._writer is None:
                self._writer = pq.ParquetWriter(os.fspath(self.path), batch.schema, compression="zstd")
            self._writer.write_batch(batch)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write per-row output ({exc})") from None
        self.rows += batch.num_rows

    def close(self, schema: pa.Schema | None = None) -> None:
        """Finish the file (an empty one with ``schema`` if nothing was written)."""
        try:
            if self._writer is None and schema is not None:
                pq.write_table(schema.empty_table(), os.fspath(self.path), compression="zstd")
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write per-row output ({exc})") from None
