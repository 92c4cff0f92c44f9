"""``grouped.parquet``: every grouping's group statistics of one evaluate report in one file.

``evaluate`` writes one Parquet table per grouping (``overall.parquet``, ``by_region.parquet``
...), which is what a person opens. ``history`` reads the same statistics of every grouping
from hundreds of reports; one file per report (instead of one per grouping: 18,980 files for
365 nights of 52 groupings, each opened, hashed against the manifest and decoded, 1-2 ms
apiece: about 23 s of CPU) roughly halves a cold history of a year (README, Performance).
This module is the one home of
that file's layout: :func:`write_grouped` (used by ``evaluate``) and :class:`GroupedFile`
(used by :mod:`evalkit.reports`).

Layout: one row group per grouping (a grouping of more than :data:`MAX_ROW_GROUP` rows: several,
consecutive), in the order written. The statistic columns are those history reads
(:func:`history_columns`: ``count``, ``mean``, ``sem`` (else ``std``), ``clipped_low`` (else
``clipped``), ``accuracy``, ``weighted_mean``, ``n_eff``), typed as in the per-grouping
tables. Key columns are positional and typed: ``key0:large_string`` holds the first key
column of every grouping whose first key is ``large_string``, and is null elsewhere; so a
grouping's keys come back with the exact Arrow types of its own table, while the file keeps a
handful of columns (its footer, parsed once per report, stays small). The schema's
key-value metadata ``evalkit.grouped`` maps each grouping to its key column names, its
file columns and its row groups. LZ4: decoding a small column chunk costs about a fifth of
zstd's (zstd sets up a decoder per page).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import OutputError, ReportError

#: The file name inside a report directory.
GROUPED_FILE = "grouped.parquet"
#: Rows per row group at most (a grouping with more rows gets several).
MAX_ROW_GROUP = 1 << 20
#: Groupings decoded in one read of a report's file (history then asks for them in turn);
#: while fewer than this many wait decoded, the next ones are decoded on a thread
#: (:meth:`GroupedFile.read_ahead`).
READ_AHEAD = 4
#: ... and rows at most, so that what waits per report stays small.
READ_AHEAD_ROWS = 8192
_META_KEY = b"evalkit.grouped"
_CODEC = "lz4"


_STATS = ("count", "mean", "sem", "std", "clipped_low", "clipped", "accuracy", "weighted_mean", "n_eff")


def history_columns(names: Sequence[str]) -> list[str]:
    """The statistic columns history reads from a grouped table with columns ``names``:
    ``count``, ``mean``, the run's spread (``sem``; reports before it: ``std``), its clipped
    count (``clipped_low``; before it: ``clipped``), ``accuracy``, and a weighted run's
    ``weighted_mean`` and ``n_eff``; only those present."""
    want = ["count", "mean", "sem" if "sem" in names else "std",
            "clipped_low" if "clipped_low" in names else "clipped", "accuracy", "weighted_mean", "n_eff"]
    return [c for c in want if c in names]


def _key_name(position: int, ty: pa.DataType) -> str:
    return f"key{position}:{ty}"


def grouped_table_parts(tables: Sequence[tuple[str, Sequence[str], pa.Table]]
                        ) -> tuple[pa.Schema, list[pa.Table]] | None:
    """The schema and the row groups (in order) of ``grouped.parquet`` for ``tables``
    (``(grouping name, key column names, its grouped table)``, the tables evaluate writes).
    None when the groupings' statistic columns cannot share one type each (never so for
    tables evaluate writes; history then reads the per-grouping files)."""
    stats: dict[str, pa.DataType] = {}
    keys: dict[str, pa.DataType] = {}
    plan = []
    for name, cols, t in tables:
        mine = history_columns(t.column_names)
        if "count" not in mine or "mean" not in mine or any(c not in t.column_names for c in cols):
            return None
        for c in mine:
            ty = t.schema.field(c).type
            if stats.setdefault(c, ty) != ty:
                if pa.types.is_null(stats[c]):
                    stats[c] = ty
                elif not pa.types.is_null(ty):
                    return None
        file_keys = [_key_name(j, t.schema.field(c).type) for j, c in enumerate(cols)]
        for fk, c in zip(file_keys, cols, strict=True):
            keys[fk] = t.schema.field(c).type
        plan.append((name, list(cols), file_keys, mine, t))
    schema = pa.schema([*keys.items(), *stats.items()])
    index = []
    parts: list[pa.Table] = []
    for name, cols, file_keys, _mine, t in plan:
        start = len(parts)
        arrays = []
        for f in schema:
            if f.name in file_keys:
                arrays.append(t.column(cols[file_keys.index(f.name)]))
            elif f.name in t.column_names and f.name in stats:
                arrays.append(t.column(f.name).cast(f.type))
            else:
                arrays.append(pa.nulls(t.num_rows, f.type))
        whole = pa.Table.from_arrays(arrays, schema=schema)
        parts += [whole.slice(i, MAX_ROW_GROUP) for i in range(0, t.num_rows, MAX_ROW_GROUP)]
        index.append({"grouping": name, "columns": cols, "keys": file_keys,
                      "row_groups": [start, len(parts) - start]})
    meta = {_META_KEY: json.dumps({"version": 1, "groupings": index}).encode()}
    return schema.with_metadata(meta), parts


def write_grouped(tables: Sequence[tuple[str, Sequence[str], pa.Table]], path: str | os.PathLike[str]) -> bool:
    """Write ``grouped.parquet`` (see the module docs) for ``tables`` (``(grouping name, key
    column names, grouped table)``) to ``path``; False (nothing written) when they cannot
    share one file (:func:`grouped_table_parts`). Raises :class:`OutputError` when the file
    cannot be written."""
    built = grouped_table_parts(tables)
    if built is None:
        return False
    schema, parts = built
    try:
        # dictionaries for the keys only: random floats in dictionaries decode 1.5x slower
        keys = [f.name for f in schema if f.name not in _STATS]
        with pq.ParquetWriter(os.fspath(path), schema, compression=_CODEC, write_statistics=False,
                              use_dictionary=keys) as w:
            for part in parts:
                w.write_table(part, row_group_size=max(1, part.num_rows))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc})") from None
    return True


class GroupedFile:
    """One report's ``grouped.parquet``, opened once: the whole file hashed against its
    manifest entry (``entry``, None for no check) when first needed, its footer parsed once,
    the file kept open (the bytes read later are those hashed: same open file) until
    :meth:`close`; :meth:`read` then decodes one grouping's row groups. Thread-safe.

    Raises :class:`ReportError` naming the file when it cannot be read, differs from its
    manifest entry, or is not such a file."""

    def __init__(self, path: Path, entry: Mapping[str, Any] | None, keys: KeyChunks | None = None) -> None:
        self.path = path
        self._entry = entry
        self._keys = keys  # key columns decoded from other reports' files, by their bytes
        self._chunk_at: dict[tuple[int, str], tuple[int, int, int]] = {}  # offset, bytes, rows
        self._lock = threading.Lock()
        self._fh: Any = None
        self._meta: pq.FileMetaData | None = None
        self._pf: pq.ParquetFile | None = None  # opened once: a reader per read costs 60 us
        self._index: dict[str, dict[str, Any]] = {}
        self._stats: list[str] = []
        self._empty: pa.Schema | None = None
        self._error: ReportError | None = None
        self._ahead: dict[str, pa.Table] = {}
        self._nrows: dict[str, int] = {}
        self._at: dict[str, int] = {}  # each grouping's position in the file
        self._queued = False  # a read_ahead waits on its pool

    def open(self) -> None:
        """Open the file now (checked against its manifest entry, footer parsed) instead of at
        the first :meth:`read`; an error is not raised here: :meth:`read` raises it. For a
        process about to fork workers that read the file: they share the open file (reads at
        offsets, never the file position) and its parsed footer, and none checks it again."""
        with self._lock, contextlib.suppress(ReportError):
            self._open()

    def _open(self) -> None:
        from .io import fingerprint_file

        if self._error is not None:
            raise self._error
        if self._fh is not None:
            return
        try:
            fh = pa.OSFile(os.fspath(self.path))
        except OSError as exc:
            self._error = ReportError(f"{self.path}: cannot read ({exc})")
            raise self._error from None
        try:
            size = fh.size()
            if self._entry is not None:
                from .outdir import BlockReads

                got, kind = fingerprint_file(BlockReads(fh), size, self._entry.get("fingerprint_kind"))
                if size != self._entry.get("bytes") or kind != self._entry.get("fingerprint_kind") \
                        or got != self._entry.get("fingerprint"):
                    from .outdir import MANIFEST_NAME

                    raise ReportError(f"{self.path}: its content differs from what {MANIFEST_NAME} records; "
                                      "the report was edited, truncated or replaced since evalkit wrote it: "
                                      "rerun evaluate, or restore it")
            pf = pq.ParquetFile(fh)
            meta = pf.metadata
            raw = (meta.metadata or {}).get(_META_KEY)
            index = json.loads(raw.decode()) if raw is not None else None
            if not isinstance(index, dict) or not isinstance(index.get("groupings"), list):
                raise ReportError(f"{self.path}: not an evalkit grouped.parquet (no '{_META_KEY.decode()}' index)")
            self._index = {g["grouping"]: g for g in index["groupings"]}
            self._at = {name: k for k, name in enumerate(self._index)}
            schema = meta.schema.to_arrow_schema()
            keys = {k for g in self._index.values() for k in g.get("keys", ())}
            self._stats = history_columns([n for n in schema.names if n not in keys])
            self._empty = schema
        except ReportError as exc:
            fh.close()
            self._error = exc
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            fh.close()
            self._error = ReportError(f"{self.path}: cannot read ({type(exc).__name__}: {exc})")
            raise self._error from None
        self._fh, self._meta, self._pf = fh, meta, pf

    def read(self, grouping: str, columns: Sequence[str]) -> pa.Table:
        """``grouping``'s rows: its key ``columns`` (named and typed as in its own table)
        and the statistic columns (:func:`history_columns`).

        The groupings that follow it in the file are decoded in the same call (up to
        :data:`READ_AHEAD` groupings and :data:`READ_AHEAD_ROWS` rows) and kept until they
        are asked for (history asks grouping by grouping, in the order evaluate wrote them):
        one read per report for several groupings, its memory bounded per report."""
        with self._lock:
            self._open()
            entry = self._index.get(grouping)
            if entry is None or list(entry.get("columns", ())) != list(columns):
                raise ReportError(f"{self.path}: holds no table of grouping {grouping!r}; "
                                  "the report was edited or damaged")
            t = self._ahead.pop(grouping, None)
            if t is None:
                self._ahead = self._read_from(grouping)
                t = self._ahead.pop(grouping)
        return t

    @property
    def has_spread(self) -> bool:
        """Whether the file holds a spread column (``sem``, or ``std`` before it), which
        every grouping's rows need; known once the file was read (:meth:`read`)."""
        return "sem" in self._stats or "std" in self._stats

    def read_ahead(self, after: str, pool: Any) -> None:
        """Decode the groupings that follow ``after`` (the one just read) and those waiting
        decoded, on ``pool`` (a ``concurrent.futures`` executor), when fewer than
        :data:`READ_AHEAD` wait: the next batch is decoded while the caller works on this
        one, instead of when it is asked for. At most one batch more waits per file. An
        error is not raised here: :meth:`read` meets it when that grouping is asked for."""
        if self.wants_ahead():
            pool.submit(self.decode_after, after)

    def wants_ahead(self) -> bool:
        """Whether a batch read ahead is worth decoding now (fewer than :data:`READ_AHEAD`
        groupings wait and none is queued); True marks one queued: the caller then calls
        :meth:`decode_after` (on a thread). For a caller queuing many files' decodes as a few
        tasks (:func:`evalkit.reports.read_grouping`) instead of one per file."""
        if self._queued or self._fh is None or len(self._ahead) >= READ_AHEAD:
            return False
        self._queued = True
        return True

    def decode_after(self, after: str) -> None:
        """The read ahead :meth:`wants_ahead` queued: the groupings following ``after`` and
        those waiting decoded. An error is not raised here (see :meth:`read_ahead`)."""
        with self._lock:
            self._queued = False
            if self._fh is None or after not in self._at or len(self._ahead) >= READ_AHEAD:
                return
            start = max([self._at[after], *(self._at[k] for k in self._ahead)]) + 1
            if start >= len(self._at):
                return
            with contextlib.suppress(ReportError):  # read() raises it for that grouping
                self._ahead.update(self._read_from(list(self._index)[start]))

    def decoded(self, grouping: str) -> bool:
        """Whether ``grouping``'s rows wait decoded (read ahead with an earlier grouping):
        :meth:`read` then only hands them out, which is not worth a trip to a thread."""
        return grouping in self._ahead

    def _read_from(self, grouping: str) -> dict[str, pa.Table]:
        """``grouping`` and the next groupings of the file (see :meth:`read`), decoded in one
        call: name -> its key columns and statistic columns, named as in its own table."""
        assert self._pf is not None and self._empty is not None
        names = list(self._index)
        at = names.index(grouping)
        batch, rows = [grouping], self._rows(grouping)
        for name in names[at + 1:at + READ_AHEAD]:
            rows += self._rows(name)
            if rows > READ_AHEAD_ROWS or self._index[name]["row_groups"][0] != \
                    sum(self._index[batch[-1]]["row_groups"]):  # consecutive row groups only
                break
            batch.append(name)
        first = self._index[grouping]["row_groups"][0]
        last = sum(self._index[batch[-1]]["row_groups"])
        keys = list(dict.fromkeys(k for name in batch for k in self._index[name]["keys"]))
        try:
            whole = self._decode(list(range(first, last)), keys) if last > first \
                else self._empty.empty_table().select([*keys, *self._stats])
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise ReportError(f"{self.path}: cannot read the rows of grouping {grouping!r} "
                              f"({type(exc).__name__}: {exc})") from None
        # each grouping's table built once from slices of the decoded columns (not sliced,
        # selected and renamed: three tables each, for 365 reports x 52 groupings)
        out, offset, columns = {}, 0, whole.columns
        at = {c: k for k, c in enumerate(whole.column_names)}
        stats = [at[c] for c in self._stats]
        for name in batch:
            n, entry = self._rows(name), self._index[name]
            out[name] = pa.Table.from_arrays([columns[k].slice(offset, n) for k in [*(at[c] for c in entry["keys"]),
                                                                                   *stats]],
                                             names=[*entry.get("columns", ()), *self._stats])
            offset += n
        return out

    def _decode(self, row_groups: list[int], keys: list[str]) -> pa.Table:
        """The key columns ``keys`` and the statistic columns of ``row_groups``. A key column
        chunk whose bytes equal one already decoded (from any report's file: nightly reports
        hold the same groups night after night) is taken from :attr:`_keys`, not decoded
        again: decoding text keys is half the cost of reading the file."""
        assert self._pf is not None and self._empty is not None
        raw = {(rg, k): self._chunk_bytes(rg, k) for rg in row_groups for k in keys} \
            if self._keys is not None else {}
        known = self._keys.get(raw) if self._keys is not None and raw else None
        if known is None:
            whole = self._pf.read_row_groups(row_groups, columns=[*keys, *self._stats], use_threads=False)
            if raw and self._keys is not None:
                self._keys.put(raw, whole, row_groups, [raw[(rg, keys[0])][1] for rg in row_groups])
            return whole
        stats = self._pf.read_row_groups(row_groups, columns=self._stats, use_threads=False)
        arrays = [pa.chunked_array([known[(rg, k)] for rg in row_groups], self._empty.field(k).type)
                  for k in keys]
        return pa.Table.from_arrays([*arrays, *stats.columns], names=[*keys, *self._stats])

    def _chunk_bytes(self, rg: int, column: str) -> tuple[str, int, bytes]:
        """The column chunk ``column`` of row group ``rg`` as stored (pages, compressed), with
        its name (which holds its type) and row count: equal bytes decode to equal values."""
        at = self._chunk_at.get((rg, column))
        if at is None:
            assert self._meta is not None
            group = self._meta.row_group(rg)
            chunk = group.column(self._empty.get_field_index(column))
            start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            at = self._chunk_at[(rg, column)] = (int(start), int(chunk.total_compressed_size), group.num_rows)
        assert self._fh is not None
        return column, at[2], self._fh.read_at(at[1], at[0])

    def rows(self, grouping: str) -> int | None:
        """``grouping``'s number of rows in this file, once opened (:meth:`open`); None when
        not known (not opened, an unreadable file, no such grouping)."""
        with self._lock:
            if self._meta is None or grouping not in self._index:
                return None
            return self._rows(grouping)

    def _rows(self, grouping: str) -> int:
        if grouping not in self._nrows:
            assert self._meta is not None
            first, n = self._index[grouping]["row_groups"]
            self._nrows[grouping] = sum(self._meta.row_group(i).num_rows for i in range(first, first + n))
        return self._nrows[grouping]

    def close(self) -> None:
        with self._lock:
            self._ahead = {}
            if self._fh is not None:
                self._fh.close()
                self._fh = None
                self._meta = None
                self._pf = None


class KeyChunks:
    """Key column chunks decoded from ``grouped.parquet`` files, by their stored bytes (see
    :meth:`GroupedFile._decode`): shared by the reports of one history, thread-safe. A chunk
    is found only by bytes equal to those it was decoded from, in a column of the same name
    (type) and row count. Bounded: at most ``limit`` bytes (stored and decoded) are kept, the
    oldest chunks dropped first, and a chunk of more than a quarter of that is not kept."""

    def __init__(self, limit: int = 64 << 20) -> None:
        self._lock = threading.Lock()
        self._chunks: dict[tuple[str, int, bytes], tuple[pa.Array, int]] = {}
        self._limit = limit
        self._bytes = 0

    def get(self, raw: Mapping[tuple[int, str], tuple[str, int, bytes]]) -> dict[tuple[int, str], pa.Array] | None:
        """The decoded chunk of every ``(row group, column)`` in ``raw``, or None when any is unknown."""
        with self._lock:
            hits = {where: self._chunks.get(key) for where, key in raw.items()}
        if any(hit is None for hit in hits.values()):
            return None
        return {where: hit[0] for where, hit in hits.items() if hit is not None}

    def put(self, raw: Mapping[tuple[int, str], tuple[str, int, bytes]], table: pa.Table,
            row_groups: Sequence[int], rows: Sequence[int]) -> None:
        """Remember the key columns of ``table`` (the decoded ``row_groups``, of ``rows`` rows each)."""
        offsets = dict(zip(row_groups, [sum(rows[:i]) for i in range(len(rows))], strict=True))
        decoded = {}
        for where, key in raw.items():
            array = table.column(where[1]).slice(offsets[where[0]], key[1]).combine_chunks()
            size = array.nbytes + len(key[2])
            if size <= self._limit // 4:
                decoded[key] = (array, size)
        with self._lock:
            for key, value in decoded.items():
                old = self._chunks.pop(key, None)
                self._bytes += value[1] - (old[1] if old is not None else 0)
                self._chunks[key] = value
            while self._bytes > self._limit:
                self._bytes -= self._chunks.pop(next(iter(self._chunks)))[1]


__all__ = ["GROUPED_FILE", "GroupedFile", "KeyChunks", "history_columns", "write_grouped"]
