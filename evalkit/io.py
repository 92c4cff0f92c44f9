"""Reading Parquet datasets as record batches, and writing outputs atomically.

Inputs are opened read-only through :mod:`pyarrow.dataset`: a file, a directory (hive
partitions such as ``split=val/`` become columns), a glob, or a list of those. Each file's
footer is read up front so a corrupt file or schema drift is reported by name before any
number is computed. Batches are decoded by Arrow's threaded scanner with column projection.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob as _glob
import hashlib
import os
import posixpath
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ._reader import FilePart
from .errors import (
    CorruptFileError,
    EmptyInputError,
    InputError,
    OutputError,
    PartitionConflictError,
    SchemaDriftError,
    UsageError,
    missing_column,
)
from .normalize import conform_table, logical_type, read_schema, unify_types
from .worker import SerialWorker

PathLike = str | os.PathLike[str]


def _has_glob(s: str) -> bool:
    return any(ch in s for ch in "*?[")


def _not_data(name: str) -> bool:
    """Files a writer leaves beside its data: Spark / Hadoop's ``_SUCCESS``, ``.part-*.crc``
    checksums, hidden and temporary files. Skipped in directories and globs alike."""
    return name.startswith((".", "_")) or name.endswith(".crc")


def current_dir_gone() -> bool:
    """True when this process's working directory no longer exists (removed, or replaced by
    a directory of the same name, since the process entered it)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return True
    return False


def cwd_gone_error(path: PathLike | None = None) -> UsageError:
    """The error of a run whose working directory no longer exists, when a relative path
    (``path``, if known) must be resolved against it."""
    from .escape import terminal

    what = f"the relative path {terminal(path)} cannot be resolved" if path is not None else \
        "relative paths cannot be resolved"
    return UsageError(
        f"the current directory no longer exists (it was removed or replaced since this shell "
        f"entered it), so {what}: change to an existing directory (cd \"$PWD\" enters a new "
        "directory of the same name) or give absolute paths")


def real_path(path: PathLike) -> str:
    """``os.path.realpath(path)``, or :func:`cwd_gone_error` when ``path`` is relative and the
    working directory no longer exists (realpath would raise FileNotFoundError)."""
    try:
        return os.path.realpath(path)
    except FileNotFoundError:
        if current_dir_gone():
            raise cwd_gone_error(path) from None
        raise


#: The file that makes a directory an evalkit report (see :mod:`evalkit.outdir`).
MANIFEST_NAME = "evalkit-manifest.json"
#: Names of Parquet data files (Spark, DuckDB, polars, pandas: ``.parquet``; Impala: ``.parq``).
PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def select_data_files(root: str, files: Sequence[str], *, root_is_report: bool = False,
                      pathmod: Any = os.path) -> tuple[list[str], list[str], list[str]]:
    """Which of the ``files`` found in directory input ``root`` are data, as Spark, Hive,
    DuckDB and polars read a dataset directory: ``(data, reports, other)``.

    - An evalkit report inside the input (a directory holding ``evalkit-manifest.json``:
      ``--out data/report``) is never data: its directory is in ``reports`` and its files are
      skipped. ``root_is_report``: ``root`` itself counts (a directory a glob matched).
    - When the directory holds files named ``*.parquet`` (``.parq``, ``.pq``), only those are
      read; the rest (a README.txt, notes, a CSV beside them) is ``other``.
    - Else, when it holds files without an extension (Hive's ``000000_0``, Spark's
      ``part-00000-...-c000``), those are read; files with an extension are ``other``.
    - Else every file is read (a file that is not Parquet is then named by the error).

    Hidden and ``_``-prefixed entries are skipped before (:func:`_not_data`, Arrow's discovery)."""
    norm = pathmod.normpath(root)
    report_dirs = {pathmod.normpath(pathmod.dirname(f)) for f in files if pathmod.basename(f) == MANIFEST_NAME}
    if not root_is_report:
        report_dirs.discard(norm)

    def report_of(f: str) -> str | None:
        d = pathmod.normpath(pathmod.dirname(f))
        while True:
            if d in report_dirs:
                return d
            if d == norm or d == pathmod.dirname(d) or len(d) < len(norm):
                return None
            d = pathmod.dirname(d)

    reports: list[str] = []
    rest: list[str] = []
    for f in files:
        r = report_of(f) if report_dirs else None
        if r is None:
            rest.append(f)
        elif r not in reports:
            reports.append(r)
    named = [f for f in rest if pathmod.basename(f).lower().endswith(PARQUET_SUFFIXES)]
    if not named:  # part files without an extension (Hive's 000000_0) beside a README.txt
        named = [f for f in rest if "." not in pathmod.basename(f)]
    if not named:
        return rest, reports, []
    chosen = set(named)
    return named, reports, [f for f in rest if f not in chosen]


def _glob_base(pattern: str) -> str:
    """The directory a glob starts from: its longest prefix of plain directory names."""
    parts = Path(pattern).parts
    static: list[str] = []
    for part in parts[:-1]:
        if _has_glob(part):
            break
        static.append(part)
    return str(Path(*static)) if static else "."


def _is_url(s: str) -> bool:
    return "://" in s and not s.startswith("file://")


def _listed(items: Sequence[str], shown: int = 5) -> str:
    more = f" (+{len(items) - shown} more)" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


@dataclass
class Source:
    """A resolved Parquet input: its files, unified schema and a batch reader.

    ``schema`` is the *logical* schema: every column in its canonical type (see
    :mod:`evalkit.normalize`), unified across the files, partition columns included (as
    strings). Every batch the source yields is conformed to it, whatever wrote each file.
    """

    label: str
    """How the input is named in messages (the path the user gave)."""
    dataset: ds.Dataset
    files: list[str]
    filesystem: object | None = None
    root: str | None = None
    """Base directory of a hive-partitioned dataset (None for explicit file lists)."""
    logical: pa.Schema | None = None
    """Unified canonical schema (None: the in-memory dataset's own, already canonical)."""
    partitions: dict[str, dict[str, str | None]] = field(default_factory=dict)
    """Hive partition values of each file (``None``: ``__HIVE_DEFAULT_PARTITION__``)."""
    drift: dict[str, str] = field(default_factory=dict)
    """Column -> why its files cannot be read as one column (raised only if it is needed)."""
    duplicates: list[str] = field(default_factory=list)
    """Files the inputs reached more than once (``'dir/**'`` matches a directory and the files
    in it; a path given twice), read once: the later spellings, in the order met."""
    markers: list[str] = field(default_factory=list)
    """Marker / checksum files given explicitly (a shell-expanded ``out/*``) and skipped."""
    skipped_reports: list[str] = field(default_factory=list)
    """evalkit report directories inside a directory input, skipped (:func:`select_data_files`)."""
    skipped_files: list[str] = field(default_factory=list)
    """Files of a directory input that are not Parquet data beside its ``*.parquet`` files."""

    def notes(self) -> list[str]:
        """The input's warnings: files reached more than once (:meth:`duplicates_note`), and
        what a directory input holds but is not data (skipped, each kind in one note)."""
        out = [n for n in (self.duplicates_note(),) if n is not None]
        if self.skipped_reports:
            out.append(f"{self.label}: skipped the evalkit report(s) inside it, never read as data: "
                       f"{_listed([d + '/' for d in self.skipped_reports])}")
        if self.skipped_files:
            out.append(f"{self.label}: skipped {len(self.skipped_files)} file(s) that are not Parquet data: "
                       f"{_listed(self.skipped_files)} (a directory input reads its *.parquet files, or, "
                       "when it holds none, its files without an extension)")
        return out

    def duplicates_note(self) -> str | None:
        """The warning for files reached more than once (read once), or None; it also names
        marker files given explicitly and skipped (``_SUCCESS``, ``.crc``)."""
        if self.markers and not self.duplicates:
            return (f"{self.label}: skipped {len(self.markers)} Spark / Hadoop marker or checksum file(s) "
                    f"given as inputs: {', '.join(self.markers[:3])}")
        if not self.duplicates:
            return None
        shown = ", ".join(self.duplicates[:3]) + (f" (+{len(self.duplicates) - 3} more)" if len(self.duplicates) > 3 else "")
        return (f"{self.label}: {len(self.duplicates)} input file spelling(s) reached a file already read "
                f"(a path given twice, or a directory and a file in it): {shown}; "
                "each file is read once")

    @property
    def schema(self) -> pa.Schema:
        """Unified logical schema, partition columns included."""
        return self.logical if self.logical is not None else self.dataset.schema

    def count_rows(self) -> int:
        """Row count from Parquet metadata (no data read)."""
        try:
            return int(self.dataset.count_rows())
        except _READ_ERRORS as exc:
            raise CorruptFileError(f"{self.label}: cannot read Parquet metadata ({_short(exc)})") from None

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
        """Every needed column must exist in every file, in types that unify losslessly.

        Raises SchemaDriftError naming the file that lacks a column, or both files and both
        types of a real conflict (string vs number, ...).
        """
        for c in columns:
            if c in self.drift:
                raise SchemaDriftError(f"{self.label}: {self.drift[c]}")

    def parts(self) -> list[FilePartInfo]:
        """Each file with its partition values and row-group count (metadata only)."""
        out = []
        try:
            for frag in self.dataset.get_fragments():
                # Footers were parsed when the input was opened: hand them on, never re-parse.
                md = frag.metadata
                out.append(FilePartInfo(frag.path, self.partitions.get(frag.path, {}),
                                        [md.row_group(i).num_rows for i in range(md.num_row_groups)], md))
        except _READ_ERRORS as exc:
            raise CorruptFileError(f"{self.label}: cannot read Parquet metadata ({_short(exc)})") from None
        return out

    def read_schema(self, columns: Sequence[str], dictionary_columns: Sequence[str] = ()) -> pa.Schema:
        """The exact schema of the batches :meth:`batches` yields for these columns."""
        if not self.files:
            return pa.schema([self.schema.field(c) for c in columns])
        return read_schema(self.schema, columns, dictionary_columns)

    def batches(
        self, columns: Sequence[str], batch_size: int = 131_072, use_threads: bool = True,
        dictionary_columns: Sequence[str] = (), prepare: Callable[[pa.RecordBatch], Any] | None = None,
        key_columns: Sequence[str] = (),
    ) -> Iterator[tuple[str, Any]]:
        """Yield ``(file path, batch)`` in file order, decoding ahead on worker threads.

        Every batch has exactly :meth:`read_schema` ``(columns, dictionary_columns)``.
        ``prepare``: files only, see :attr:`evalkit._reader.RowGroupReader.prepare` (what it
        returns is yielded in place of the batch). ``key_columns``: those of ``columns`` the
        run uses as keys (group, slice, join key, class label), read by the key rule (a float32
        file's values as they print: :attr:`evalkit._reader.RowGroupReader.key_columns`); the
        others are values, read exactly.
        """
        if self.files:
            yield from self._row_group_batches(columns, batch_size, dictionary_columns, prepare, key_columns)
            return
        scanner = self.dataset.scanner(columns=list(columns), batch_size=batch_size, use_threads=use_threads)
        try:
            for batch in scanner.to_batches():
                yield self.label, batch
        except _READ_ERRORS as exc:
            raise CorruptFileError(f"{self.label}: cannot read data ({_short(exc)})") from None

    def _row_group_batches(
        self, columns: Sequence[str], batch_size: int, dictionary_columns: Sequence[str],
        prepare: Callable[[pa.RecordBatch], Any] | None = None, key_columns: Sequence[str] = (),
    ) -> Iterator[tuple[str, Any]]:
        parts = [FilePart(p.path, p.partition_values, len(p.row_group_rows), metadata=p.metadata)
                 for p in self.parts()]
        yield from read_file_parts(parts, columns, self.read_schema(columns, dictionary_columns),
                                   self.filesystem, batch_size, prepare, key_columns)

    def head(self, n: int, columns: Sequence[str], key_columns: Sequence[str] = ()) -> pa.Table:
        """The first ``n`` rows of some columns (canonical types; ``key_columns`` as in
        :meth:`batches`), mapping read failures to CorruptFileError. Reads one batch of the
        first non-empty row group, not whole files."""
        schema = self.read_schema(columns)
        it = self.batches(columns, batch_size=max(1, n), key_columns=key_columns)
        with contextlib.closing(it):
            for _, batch in it:
                if batch.num_rows:
                    return pa.Table.from_batches([batch.slice(0, n)], schema=schema)
        return schema.empty_table()

    def to_table(self, columns: Sequence[str] | None = None, key_columns: Sequence[str] = ()) -> pa.Table:
        """Read the whole input in canonical types (small inputs only, e.g. a labels table;
        ``key_columns`` as in :meth:`batches`)."""
        cols = list(columns) if columns is not None else list(self.schema.names)
        schema = self.read_schema(cols)
        return pa.Table.from_batches([b for _, b in self.batches(cols, key_columns=key_columns)], schema=schema)


@dataclass(frozen=True)
class FilePartInfo:
    """One file of a source: path, hive partition values and row counts of its row groups."""

    path: str
    partition_values: dict[str, str | None]
    row_group_rows: list[int]
    metadata: Any = None
    """The parsed Parquet footer."""


def read_file_parts(
    parts: Sequence[Any], columns: Sequence[str], schema: pa.Schema, filesystem: object | None,
    batch_size: int, prepare: Callable[[pa.RecordBatch], Any] | None = None,
    key_columns: Sequence[str] = (),
) -> Iterator[tuple[str, Any]]:
    """Stream ``(path, batch)`` over file parts, every batch conformed to ``schema`` (the one
    read path of both engines: same batch boundaries, same types, same errors; the
    ``key_columns`` by the key rule, see :meth:`Source.batches`)."""
    from ._reader import ReadFailure, RowGroupReader

    dictionary_columns = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    fs = filesystem
    reader = RowGroupReader(
        parts, columns, schema, batch_size=batch_size,
        open_file=(lambda p: fs.open_input_file(p)) if fs is not None else (lambda p: p),  # type: ignore[attr-defined]
        dictionary_columns=dictionary_columns, prepare=prepare, key_columns=key_columns,
    )
    try:
        yield from reader
    except ReadFailure as exc:
        if isinstance(exc.cause, _READ_ERRORS):
            raise CorruptFileError(f"{exc.path}: cannot read Parquet data ({_short(exc.cause)})") from None
        raise exc.cause from None


#: What Arrow raises on bad bytes: ArrowInvalid, ArrowIOError (an OSError), ArrowNotImplemented
#: (e.g. an unknown encoding), ArrowMemoryError (absurd lengths), ... all ArrowException.
_READ_ERRORS = (pa.ArrowException, OSError, EOFError, UnicodeDecodeError)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _not_found(path: str, why: str) -> EmptyInputError:
    """EmptyInputError for an input path or glob that names nothing; ``.path`` is the path, so
    a caller can say where it came from (:func:`evalkit.config.relative_path_error`)."""
    err = EmptyInputError(f"{path}: {why}")
    err.path = path  # type: ignore[attr-defined]
    return err


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
            found = sorted(_glob.glob(s, recursive=True))
            matches = [m for m in found if not _not_data(os.path.basename(m))]
            if not matches:
                raise _not_found(s, "the glob matches no file" if not found else
                                 f"the glob matches no data file (only {', '.join(found[:3])})")
            out.extend(_glob_leaves(matches))
        else:
            if not os.path.exists(s):
                if not os.path.isabs(s) and current_dir_gone():
                    raise cwd_gone_error(s)
                raise _not_found(s, "no such file or directory")
            out.append(s)
    if not out:
        raise EmptyInputError("no input path given")
    return out


def _glob_leaves(matches: Sequence[str], pathmod: Any = os.path) -> list[str]:
    """A glob's matches without the directories other matches lie in: ``dir/**`` matches
    ``dir/``, ``dir/split=a/`` and ``dir/split=a/x.parquet``; only the file is read (a
    directory matched alone, as by ``dir/*``, is kept and read whole). ``pathmod``:
    :mod:`os.path` for local paths, :mod:`posixpath` for fsspec ones."""
    ancestors: set[str] = set()
    for m in matches:
        d = pathmod.dirname(pathmod.normpath(m))
        while d and d not in ancestors and d != pathmod.dirname(d):
            ancestors.add(d)
            d = pathmod.dirname(d)
    return [m for m in matches if pathmod.normpath(m) not in ancestors]


def parquet_format() -> ds.ParquetFileFormat:
    """Parquet reading options: verify page CRC checksums where the writer stored them
    (Spark / parquet-mr do by default), so flipped bits are an error, not a wrong number."""
    try:
        # Extension types (arrow.uuid) as pq.ParquetFile reads them: one type per column.
        opts = ds.ParquetFragmentScanOptions(page_checksum_verification=True, arrow_extensions_enabled=True)
    except TypeError:  # older pyarrow
        return ds.ParquetFileFormat()
    return ds.ParquetFileFormat(default_fragment_scan_options=opts)


def open_source(path: PathLike | Sequence[PathLike], label: str | None = None) -> Source:
    """Open one Parquet input (file, directory, glob, list of them or an fsspec URL)."""
    paths = expand_paths(path)
    _check_utf8_names(paths)
    label = label or (paths[0] if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} more)")
    filesystem = None
    pattern: str | None = os.fspath(path).removeprefix("file://") if isinstance(path, str | os.PathLike) else None
    if any(_is_url(p) for p in paths):
        filesystem, paths = _fsspec_paths(paths)
        if pattern is not None:
            import fsspec

            pattern = fsspec.core.url_to_fs(pattern)[0]._strip_protocol(pattern)
    target: str | list[str] | None = None  # what dataset discovery read, for its errors
    try:
        root: str | None = None
        duplicates: list[str] = []
        markers: list[str] = []
        skipped_reports: list[str] = []
        skipped_files: list[str] = []
        if len(paths) == 1 and (filesystem is None and os.path.isdir(paths[0])
                                or filesystem is not None and _fs_isdir(filesystem, paths[0])):
            root = paths[0]
            target = root
            dataset, duplicates, skipped_reports, skipped_files = _open_directory(root, filesystem)
        else:
            listed, skipped_reports, skipped_files = _list_files(paths, filesystem, label)
            markers = [f for f in listed if _not_data(os.path.basename(f))]
            if markers and len(markers) < len(listed):  # `out/*` expanded by the shell: _SUCCESS, .crc
                listed = [f for f in listed if f not in markers]
            else:
                markers = []
            files, duplicates = _dedupe_files(listed, filesystem)
            root = (_hive_glob_root(pattern, files) if pattern is not None
                    else _one_directory_root(paths, files, filesystem))
            target = files
            dataset = ds.dataset(files, format=parquet_format(), filesystem=filesystem)  # type: ignore[arg-type]
    except _READ_ERRORS as exc:
        if target is not None and "duplicate field names" in str(exc):  # a valid file, two columns of one name: say so
            _refuse_repeated_names(target, filesystem)
        raise _open_error(label, exc) from None
    files = list(dataset.files)  # type: ignore[attr-defined]
    if not files:
        raise EmptyInputError(f"{label}: the directory holds no Parquet file")
    # Reading every footer up front names a corrupt or non-Parquet file before any work.
    schemas: list[tuple[str, pa.Schema]] = []
    for frag in dataset.get_fragments():
        try:
            phys = frag.physical_schema
            phys.names  # noqa: B018 - a damaged footer can hold names that are not UTF-8
            schemas.append((frag.path, phys))
        except _READ_ERRORS as exc:
            raise _open_error(frag.path, exc) from None
        check_columns_once(phys.names, frag.path)
    # Partition values are read by evalkit, not Arrow (whose inference makes store=007/,
    # store=07/ and store=7/ one integer group 7): always strings, see _hive_partitions.
    partitions = _hive_partitions(root, files, filesystem) if root is not None else {}
    part_cols = list(dict.fromkeys(k for pv in partitions.values() for k in pv))
    logical, drift = unify_schemas(schemas, part_cols)
    return Source(label, dataset, files, filesystem, root, logical, partitions, drift, duplicates, markers,
                  skipped_reports, skipped_files)


def _open_directory(root: str, filesystem: object | None) -> tuple[ds.Dataset, list[str], list[str], list[str]]:
    """A directory input as a dataset of its data files (:func:`select_data_files`), with the
    files reached twice (a symbolic link to a file in it), the evalkit reports and the other
    files skipped. The files are listed here, not by Arrow's discovery, which opens the first
    file it finds for the schema: a README.txt there failed the run before any was chosen."""
    found = _walk(root, filesystem)
    data, skipped_reports, skipped_files = select_data_files(
        root, found, pathmod=os.path if filesystem is None else posixpath)
    kept, duplicates = _dedupe_files(data, filesystem)
    # every file data: Arrow's discovery (a list of 500 files opened as one: 0.13 s against
    # 0.03 s, each path looked up again)
    dataset = ds.dataset(root if len(kept) == len(found) else kept, format=parquet_format(),
                         filesystem=filesystem)  # type: ignore[arg-type]
    return dataset, duplicates, skipped_reports, skipped_files


def _dedupe_files(files: Sequence[str], filesystem: object | None) -> tuple[list[str], list[str]]:
    """Each file once, in first-seen order, whatever spelling reached it (``./a.parquet`` and
    ``a.parquet``, a symlink, a directory and a file inside it, ``dir/**`` matching both the
    directories and their files): local files compare by real path, URLs by their normalised
    path. Returns (files to read, the later spellings dropped)."""
    import posixpath

    seen: set[str] = set()
    kept: list[str] = []
    dropped: list[str] = []
    for f in files:
        key = posixpath.normpath(f) if filesystem is not None else os.path.realpath(f)
        if key in seen:
            dropped.append(f)
        else:
            seen.add(key)
            kept.append(f)
    return kept, dropped


def unify_schemas(
    schemas: Sequence[tuple[str, pa.Schema]], partition_columns: Sequence[str] = ()
) -> tuple[pa.Schema, dict[str, str]]:
    """One logical schema for the files of a dataset, and why some columns cannot be one.

    Every column of every file is included (Arrow alone takes the first file's columns: a
    class only later files have would vanish). Types are made canonical and unified
    losslessly (:func:`evalkit.normalize.unify_types`); partition columns are strings.
    The second result maps a column to the reason it cannot be read as one column (a file
    lacks it, or two files hold types that do not unify: both files and types named); the
    reason is raised only when a run needs that column.
    """
    types: dict[str, pa.DataType] = {}
    first: dict[str, tuple[str, pa.DataType]] = {}
    drift: dict[str, str] = {}
    for path, phys in schemas:
        for f in phys:
            if f.name in partition_columns or f.name in drift:
                continue
            if f.name not in types:
                types[f.name] = logical_type(f.type)
                first[f.name] = (path, f.type)
                continue
            unified = unify_types(types[f.name], f.type)
            if unified is None:
                p0, t0 = first[f.name]
                drift[f.name] = (f"column {f.name!r} has type {t0} in file {p0} but {f.type} in file "
                                 f"{path}; these cannot be read as one column without losing values")
            else:
                types[f.name] = logical_type(unified)
    if len(schemas) > 1:
        for name in types:
            if name in drift:
                continue
            for path, phys in schemas:
                if phys.get_field_index(name) < 0:
                    drift[name] = (f"file {path} has no column {name!r}, which other files of the "
                                   "dataset have")
                    break
    fields = [pa.field(n, t) for n, t in types.items()]
    fields += [pa.field(c, pa.string()) for c in partition_columns]
    return pa.schema(fields), drift


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"


def _hive_partitions(root: str, files: Sequence[str], filesystem: object | None) -> dict[str, dict[str, str | None]]:
    """``key=value`` directory names between ``root`` and each file, values as strings
    (URL-decoded; ``__HIVE_DEFAULT_PARTITION__`` is None, the null partition).

    One key at two levels of one path with different values (``split=a/split=b/``) raises
    :class:`~evalkit.errors.PartitionConflictError` naming both directories: evalkit never
    picks one of two disagreeing sources (rt-api9 F16), as for a file's own column."""
    import posixpath
    from urllib.parse import unquote

    rel = posixpath.relpath if filesystem is not None else os.path.relpath
    out: dict[str, dict[str, str | None]] = {}
    for f in files:
        segments = rel(f, root).replace(os.sep, "/").split("/")[:-1]
        values: dict[str, str | None] = {}
        level: dict[str, int] = {}
        for i, seg in enumerate(segments):
            if "=" in seg:
                k, v = seg.split("=", 1)
                k, v = unquote(k), unquote(v)
                value = None if v == HIVE_NULL else v
                if k in values and values[k] != value:
                    outer = posixpath.join(root, *segments[:level[k] + 1])
                    inner = posixpath.join(root, *segments[:i + 1])
                    raise PartitionConflictError(
                        f"{f}: the partition key {k!r} is given twice on its path, {values[k]!r} by "
                        f"{outer}/ and {value!r} by {inner}/; evalkit does not pick one: rename one "
                        "of the directories")
                values[k], level[k] = value, i
        out[f] = values
    return out


def _walk(root: str, filesystem: object | None) -> list[str]:
    """Every file under directory ``root`` (local, or on ``filesystem``), sorted, without
    hidden, ``_``-prefixed and checksum entries (:func:`_not_data`, at any depth: Arrow's
    discovery skips the same prefixes)."""
    from pyarrow import fs as pafs

    fsys: Any = filesystem if filesystem is not None else pafs.LocalFileSystem()
    base = root.rstrip("/") + "/"
    out = []
    for info in fsys.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base):] if info.path.startswith(base) else posixpath.basename(info.path)
        if not any(_not_data(part) for part in rel.split("/")):
            out.append(info.path)
    return sorted(out)


def _list_files(paths: Sequence[str], filesystem: object | None,
                label: str) -> tuple[list[str], list[str], list[str]]:
    """The data files of several inputs: local directories are walked (marker, checksum and
    hidden files skipped; their data files chosen by :func:`select_data_files`, a directory
    that is itself an evalkit report, as a glob matches one, skipped), everything else is
    taken as a file. Returns ``(files, skipped reports, skipped other files)``."""
    files: list[str] = []
    reports: list[str] = []
    other: list[str] = []
    for p in paths:
        if filesystem is None and os.path.isdir(p):
            found = sorted(str(f) for f in Path(p).rglob("*") if f.is_file()
                           and not any(_not_data(part) for part in f.relative_to(p).parts))
            data, r, o = select_data_files(p, found, root_is_report=True)
            files += data
            reports += r
            other += o
        else:
            files.append(p)
    if not files:
        raise EmptyInputError(f"{label}: no Parquet file found"
                              + (f" (skipped evalkit report(s): {_listed(reports)})" if reports else ""))
    return files, reports, other


def _hive_glob_root(pattern: str, files: Sequence[str]) -> str | None:
    """For one glob whose files lie under ``key=value/`` directories (``out/*/*.parquet``), the
    directory the partitions start from, so the partition columns are kept as for a directory."""
    if not _has_glob(pattern):
        return None
    base = _glob_base(pattern)
    for f in files:
        try:
            rel = Path(f).relative_to(base)
        except ValueError:
            return None
        if not any("=" in part for part in rel.parts[:-1]):
            return None
    return base


def _one_directory_root(paths: Sequence[str], files: Sequence[str], filesystem: object | None) -> str | None:
    """For a list naming one local directory and files inside it (``hive hive/split=val/x.parquet``),
    that directory, so its partition columns are kept as when it is given alone."""
    dirs = [p for p in paths if filesystem is None and os.path.isdir(p)]
    if not dirs or len({os.path.realpath(d) for d in dirs}) != 1:
        return None
    base = Path(dirs[0])
    for f in files:
        try:
            Path(f).relative_to(base)
        except ValueError:
            return None
    return dirs[0]


def _check_utf8_names(paths: Sequence[str]) -> None:
    """Arrow opens files by UTF-8 names only: name a file whose name is not valid UTF-8
    (kept by Python as surrogate escapes) with an InputError, instead of failing inside Arrow."""
    from .escape import terminal

    def bad(name: str) -> InputError:
        return InputError(f"{terminal(name)}: the file name is not valid UTF-8, which Arrow cannot "
                          "open; rename it (e.g. convmv -f latin1 -t utf8 --notest FILE) or move it "
                          "out of the input")

    for p in paths:
        if _is_url(p):
            continue
        try:
            p.encode("utf-8")
        except UnicodeEncodeError:
            raise bad(p) from None
        if os.path.isdir(p):
            for dirpath, dirnames, filenames in os.walk(os.fsencode(p)):
                dirnames[:] = [d for d in dirnames if not d.startswith((b".", b"_"))]
                for name in dirnames + filenames:
                    try:
                        name.decode("utf-8")
                    except UnicodeDecodeError:
                        raise bad(os.fsdecode(os.path.join(dirpath, name))) from None


def _open_error(label: str, exc: BaseException) -> CorruptFileError:
    """Name the file Arrow could not open (it may not be the first one) and why, briefly."""
    import re

    text = str(exc)
    m = re.search(r"Could not (?:read schema from|open Parquet input source) '([^']+)'", text)
    if m is None:
        return CorruptFileError(f"{label}: not a Parquet file, or a truncated / corrupt one ({_short(exc)})")
    reason = text.rsplit("': ", 1)[-1].strip().splitlines()[0][:300]
    return CorruptFileError(f"{m.group(1)}: not a Parquet file, or a truncated / corrupt one ({reason})")


def _fs_isdir(fs: object, path: str) -> bool:
    from pyarrow.fs import FileType

    try:
        return fs.get_file_info(path).type == FileType.Directory  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any backend failure means "treat as a file"
        return False


#: The extra (pyproject optional dependency) that brings each object-store scheme's driver.
_SCHEME_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "abfs": "azure",
                  "abfss": "azure", "az": "azure", "adl": "azure"}


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
    scheme = paths[0].split("://", 1)[0].lower()
    try:
        fs, _, resolved = fsspec.get_fs_token_paths(paths)
    except ImportError as exc:
        from .errors import MissingDependencyError

        extra = _SCHEME_EXTRAS.get(scheme)
        how = f"pip install 'evalkit[{extra}]'" if extra else "install the fsspec driver it names"
        raise MissingDependencyError(f"{paths[0]}: reading {scheme}:// URLs needs a package that is "
                                     f"not installed ({exc}): {how}") from None
    except ValueError as exc:
        raise UsageError(f"{paths[0]}: cannot read {scheme}:// URLs ({exc}); use a local path, "
                         "file://, memory://, s3://, gs:// or abfs://") from None
    out: list[str] = []
    for p in resolved:
        if _has_glob(p):
            out.extend(m for m in sorted(fs.glob(p)) if not _not_data(m.rsplit("/", 1)[-1]))
        else:
            out.append(p)
    if not out:
        raise EmptyInputError(f"{paths[0]}: matches no file")
    if any(_has_glob(p) for p in paths):  # fsspec expands a glob itself, to directories and files
        import posixpath

        out = _glob_leaves(out, posixpath)
    return PyFileSystem(FSSpecHandler(fs)), out


def check_columns_once(names: Sequence[object], where: str) -> None:
    """Raise :class:`~evalkit.errors.InputError` (exit 3) when an input (a Parquet file, an
    Arrow table, a DataFrame: ``where``) holds two columns of one name, naming the column and
    its positions (from 0, as pandas' ``iloc`` and Arrow count): no role could say which
    one it reads, and Arrow calls such a file one it "can't unify"."""
    seen: dict[object, list[int]] = {}
    for i, name in enumerate(names):
        seen.setdefault(name, []).append(i)
    for name, at in seen.items():
        if len(at) > 1:
            times = "twice" if len(at) == 2 else f"{len(at)} times"
            shown = ", ".join(map(str, at[:-1])) + f" and {at[-1]}"
            raise InputError(f"column {str(name)!r} appears {times} in {where} (columns {shown}): "
                             + ("rename one" if len(at) == 2 else "rename all but one"))


def _refuse_repeated_names(target: str | list[str], filesystem: Any) -> None:
    """Find the file whose columns repeat a name (discovery failed on it) and refuse it."""
    try:
        listing = ds.dataset(target, format=parquet_format(), filesystem=filesystem, schema=pa.schema([]))
        for frag in listing.get_fragments():
            check_columns_once(frag.physical_schema.names, frag.path)
    except _READ_ERRORS:
        return  # another problem: the caller names it


def table_source(table: pa.Table, label: str = "<table>") -> Source:
    """Wrap an in-memory Arrow table as a Source (one dataset, no files)."""
    if not isinstance(table, pa.Table):
        raise InputError(f"expected a pyarrow Table, got {type(table).__name__}")
    check_columns_once(table.column_names, label)
    table = conform_table(table, label)
    return Source(label, ds.dataset(table), [])


# Per-file provenance must stay cheap for datasets of thousands of files: 2 MiB read at most.
_FULL_HASH_LIMIT = 2 << 20
_SAMPLE_BYTES = 1 << 20


def fingerprint_bytes(data: bytes) -> str:
    """The fingerprint of ``data`` already in memory: the first 32 hex digits of its SHA-256,
    what :func:`fingerprint_file` gives a whole file (kind ``sha256``)."""
    return hashlib.sha256(data).hexdigest()[:32]


def fingerprint_file(fh: Any, size: int, kind: str | None = None) -> tuple[str, str]:
    """``(fingerprint, kind)`` of an open binary file of ``size`` bytes.

    The SHA-256 (first 32 hex digits) of the whole file (kind ``sha256``): always with
    ``kind="sha256"``, and by default up to 2 MiB; for larger files by default (or with
    ``kind="sha256-head-tail"``) the SHA-256 of the size plus the first and last 1 MiB
    (``sha256-head-tail``: Parquet keeps its schema, offsets and per-chunk statistics in the
    footer, so any rewrite changes it; reads at most 2 MiB, so fingerprints stay cheap on
    many large files, but an edit in the middle goes unseen). A reader checking a recorded
    fingerprint passes the recorded ``kind``.
    """
    h = hashlib.sha256()
    fh.seek(0)
    if kind == "sha256" or (kind is None and size <= _FULL_HASH_LIMIT) or size < 2 * _SAMPLE_BYTES:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
        return h.hexdigest()[:32], "sha256"
    h.update(str(size).encode())
    h.update(fh.read(_SAMPLE_BYTES))
    fh.seek(size - _SAMPLE_BYTES)
    h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()[:32], "sha256-head-tail"


def read_json_head(fh: Any, key: str, chunk: int = 1 << 16) -> tuple[Any, int] | None:
    """The value of ``key`` when it is the first key of the JSON object in the binary file
    ``fh``, decoded without reading the rest, and the number of bytes up to its end
    (``{"key": value`` is ``fh``'s first that-many bytes); None when the first key is another.

    Reads ``chunk`` bytes at a time (doubling) until the value is complete. Raises
    ``ValueError`` (``json.JSONDecodeError``, ``UnicodeDecodeError``) when the head is not JSON.
    """
    import codecs
    import json

    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    text = ""
    fh.seek(0)
    quoted = json.dumps(key)
    while True:
        block = fh.read(chunk)
        text += utf8.decode(block, final=not block)
        head = text.lstrip()
        if head and head[0] != "{":
            raise json.JSONDecodeError("not a JSON object", head, 0)
        body = head[1:].lstrip()
        if len(body) >= len(quoted) and not body.startswith(quoted):
            return None
        if body.startswith(quoted):
            rest = body[len(quoted):].lstrip()
            if rest.startswith(":"):
                value_text = rest[1:].lstrip()
                try:
                    value, end = decoder.raw_decode(value_text)
                except json.JSONDecodeError:
                    if not block:
                        raise
                else:
                    consumed = len(text) - len(value_text) + end
                    return value, len(text[:consumed].encode("utf-8"))
            elif rest:
                raise json.JSONDecodeError("expected ':'", rest, 0)
        if not block:
            raise json.JSONDecodeError("unexpected end of file", text, len(text))
        chunk *= 2


def file_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Size, modification time (UTC) and a content fingerprint (:func:`fingerprint_file`)
    of one file; ``error`` instead when it cannot be read."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        return {"path": str(p), "error": exc.strerror or str(exc)}
    try:
        with p.open("rb") as fh:
            fingerprint, kind = fingerprint_file(fh, st.st_size)
    except OSError as exc:
        return {"path": str(p), "bytes": st.st_size, "error": exc.strerror or str(exc)}
    return {
        "path": str(p),
        "bytes": int(st.st_size),
        "mtime": _dt.datetime.fromtimestamp(st.st_mtime, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fingerprint": fingerprint,
        "fingerprint_kind": kind,
    }


# -- writing ---------------------------------------------------------------------------


def write_table(table: pa.Table, path: PathLike, *, large: bool = False, compression: str = "zstd",
                statistics: bool | Sequence[str] = True, dictionary_floats: Sequence[str] = ()) -> None:
    """Write one Parquet file (zstd), mapping OS failures to OutputError.

    ``large``: the per-column encodings of the per-row writer (dictionaries only for text,
    delta integers, byte-stream-split floats), about 4x faster to encode for big tables;
    ``compression`` then names the codec (``"lz4"`` encodes in about half the time of zstd
    at nearly the same size for tables of statistics). ``statistics``: the columns whose
    min / max the footer records (all by default; computing them for text and random floats
    is a fifth of the encoding time of a table of statistics).

    Float columns are not dictionary-encoded unless named in ``dictionary_floats``
    (:func:`dictionary_columns`): statistics per group rarely repeat, so Parquet built a
    dictionary, found it too big and wrote the values plainly after all. by_user.parquet of
    200k users: 0.37 -> 0.10 CPU-s, 25.2 -> 21.9 MB, the same values.
    """
    stats = statistics if isinstance(statistics, bool) else list(statistics)
    try:
        if large:
            pq.write_table(table, os.fspath(path),  # type: ignore[arg-type]
                           **{**_encoding(table.schema), "compression": compression}, write_statistics=stats)
        else:
            pq.write_table(table, os.fspath(path), compression="zstd", write_statistics=stats,
                           use_dictionary=dictionary_columns(table.schema, dictionary_floats))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc})") from None


def dictionary_columns(schema: pa.Schema, floats: Sequence[str] = ()) -> list[str] | bool:
    """The columns of a table worth a Parquet dictionary: every column but the floats, and
    the float columns named in ``floats`` (few distinct values: a bin's bounds)."""
    cols = [f.name for f in schema if not pa.types.is_floating(f.type) or f.name in floats]
    return cols or False


def write_batches(schema: pa.Schema, tables: Iterable[pa.Table], path: PathLike, *,
                  row_group_size: int, dictionary_floats: Sequence[str] = ()) -> None:
    """Write one Parquet file (zstd) from consecutive tables of ``schema`` without holding
    them all, mapping OS failures to OutputError. Each table of at most ``row_group_size``
    rows is one row group: chunks of exactly ``row_group_size`` rows give the file that
    :func:`write_table` of their concatenation gives (pyarrow's default row group size;
    the same ``dictionary_floats``)."""
    try:
        with pq.ParquetWriter(os.fspath(path), schema, compression="zstd",
                              use_dictionary=dictionary_columns(schema, dictionary_floats)) as writer:
            for table in tables:
                writer.write_table(table, row_group_size=row_group_size)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc})") from None


def write_text(text: str, path: PathLike) -> None:
    """Write a text file, mapping OS failures to OutputError."""
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None


class FileQueue:
    """Output files written one after the other on a background thread while the calling
    thread goes on (``threaded=False``: written at once, in the calling thread).

    pyarrow encodes and compresses Parquet without holding the GIL, so a report's tables
    are encoded on the second core while this thread renders the Markdown, builds the JSON
    summary and converts the next table; the files are the same either way. The first
    failure is kept and raised by the next :meth:`submit` or by :meth:`finish`; jobs after
    it are skipped. :meth:`close` (on the way out of an error) skips the jobs not started
    and waits for the one running, so no file is written into a directory being removed.
    """

    def __init__(self, threaded: bool = True) -> None:
        self._worker = SerialWorker("evalkit-file-writer", maxsize=0) if threaded else None
        self._cancelled = False

    def submit(self, job: Callable[[], object]) -> None:
        """Write a file (``job`` writes it) after those submitted before."""
        if self._worker is None:
            job()
            return
        self._raise_pending()

        def run() -> None:
            if not self._cancelled:
                job()

        self._worker.submit(run)

    def _raise_pending(self) -> None:
        exc = self._worker.take_error() if self._worker is not None else None
        if exc is not None:
            raise exc

    def finish(self) -> None:
        """Wait until every submitted file is written; raise the first failure."""
        if self._worker is not None:
            self._worker.close()
            self._raise_pending()

    def close(self) -> None:
        """Skip the files not started, wait for the one being written (raises nothing)."""
        self._cancelled = True
        if self._worker is not None:
            self._worker.close()


class RowWriter:
    """Incremental per-row Parquet writer: one file, encoded on a background thread.

    Parquet encoding releases the GIL, so handing batches to a writer thread overlaps
    encoding with decoding and the loss kernel. The queue is bounded (memory stays flat)
    and batches are coalesced into row groups of about ``row_group_rows`` rows. Only
    string / dictionary / bool columns are dictionary-encoded and integer columns use
    delta encoding: trying dictionaries on float columns doubles encode time for nothing.
    Columns are lz4-compressed and the class columns carry no statistics
    (:func:`_row_encoding`).
    """

    def __init__(self, path: PathLike, *, threaded: bool = True, row_group_rows: int = 1 << 20) -> None:
        self.path = Path(path)
        self.rows = 0
        self.row_group_rows = row_group_rows
        self._writer: pq.ParquetWriter | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._threaded = threaded
        self._worker: SerialWorker | None = None
        self._closing = False
        self._unfinished: tuple[pa.Schema | None] | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        """Append a batch (the first one fixes the schema)."""
        self._raise_pending()
        self.rows += batch.num_rows
        if not self._threaded:
            self._add(batch)
            return
        if self._worker is None:
            self._worker = SerialWorker("evalkit-row-writer", maxsize=2)
        self._worker.submit(lambda: self._add(batch))

    def _raise_pending(self) -> None:
        exc = self._worker.take_error() if self._worker is not None else None
        if exc is not None:
            if isinstance(exc, OSError):
                raise OutputError(f"{self.path}: cannot write per-row output ({exc})") from None
            raise exc

    def _add(self, batch: pa.RecordBatch) -> None:
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        if self._buffered >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_batches(self._buffer)
        self._buffer, self._buffered = [], 0
        if self._writer is None:
            self._writer = pq.ParquetWriter(os.fspath(self.path), table.schema, **_row_encoding(table.schema))
        self._writer.write_table(table, row_group_size=table.num_rows)

    def close(self, schema: pa.Schema | None = None, *, background: bool = False) -> None:
        """Finish the file (an empty one with ``schema`` if nothing was written).

        ``background``: encode the last row group and write the footer on the writer thread
        and return at once (the same file); :meth:`wait` waits for it and raises what failed.
        The last row group of a run (up to ``row_group_rows`` rows) then encodes while the
        statistics are finalised, not before. Closing again only waits."""
        if not self._closing:
            self._closing = True
            if self._worker is not None:
                self._worker.submit(lambda: self._finish(schema))
            else:
                self._unfinished = (schema,)
        if not background:
            self.wait()

    def wait(self) -> None:
        """Wait until :meth:`close` has finished the file; raise what failed on the way."""
        if self._worker is not None:
            self._worker.close()
            self._raise_pending()
            self._worker = None
        if self._unfinished is not None:
            (schema,), self._unfinished = self._unfinished, None
            try:
                self._finish(schema)
            except OSError as exc:
                raise OutputError(f"{self.path}: cannot write per-row output ({exc})") from None

    def _finish(self, schema: pa.Schema | None) -> None:
        self._flush()
        if self._writer is None and schema is not None:
            pq.write_table(schema.empty_table(), os.fspath(self.path), compression="zstd")
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _encoding(schema: pa.Schema) -> dict[str, object]:
    dict_cols, delta_cols = [], {}
    for f in schema:
        t = f.type
        if (pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t)
                or pa.types.is_boolean(t)):
            dict_cols.append(f.name)
        elif pa.types.is_integer(t):
            delta_cols[f.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_floating(t):
            # Byte-stream-split groups the bytes of each float: zstd then compresses the
            # exponents well, at half the encode time of plain floats.
            delta_cols[f.name] = "BYTE_STREAM_SPLIT"
    return {"compression": "zstd", "use_dictionary": dict_cols or False, "column_encoding": delta_cols or None}


#: Per-row output columns that are class names (a dictionary of every class): no statistics.
_CLASS_COLUMNS = ("label", "predicted")


#: Values the per-row writer hands its column encoders at a time (pyarrow's default: 1024).
ROW_WRITE_BATCH_SIZE = 1 << 16


def _row_encoding(schema: pa.Schema) -> dict[str, object]:
    """The per-row writer's settings: :func:`_encoding`'s, with these changes measured on 1M
    rows x the 10 default columns (encode CPU 117 -> 90 ms a row group, file +5.6%; then
    90 -> 80 ms, file +2.0%):

    * lz4 (LZ4_RAW), not zstd, for every column: losses barely compress (zstd kept 89% of
      ``loss``) and zstd spent 40% more time on the float columns; on the small columns
      (dictionary indices, booleans, delta-packed integers) zstd saves ~0.26 MB per 1M
      rows and costs ~6 ms (a compression context set up per page);
    * encoders fed :data:`ROW_WRITE_BATCH_SIZE` values at a time instead of 1,024 (-4 ms
      per 1M rows; pages end at slightly different rows, the values are the same);
    * no min / max statistics for the class columns ``label`` and ``predicted``: Parquet
      computes them for dictionary columns from the distinct values of every page (a hash
      pass per row group), and with every class in nearly every row group they prune
      nothing. Statistics of every other column are kept (``loss`` for hard examples, the
      group columns).
    """
    enc = _encoding(schema)
    enc["compression"] = "lz4"
    enc["write_batch_size"] = ROW_WRITE_BATCH_SIZE
    enc["write_statistics"] = [f.name for f in schema if f.name not in _CLASS_COLUMNS] or False
    return enc
