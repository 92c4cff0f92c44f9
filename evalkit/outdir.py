"""Output directories: what counts as an evalkit report, and replacing one safely.

**Ownership.** Every directory evalkit writes holds ``evalkit-manifest.json``::

    {"format": "evalkit-report", "format_version": 1,
     "command": "evaluate" | "compare" | "history",
     "evalkit_version": "...", "created": "2026-11-30T06:00:00Z", "run_id": "<32 hex>",
     "files": {"report.md": {"bytes": 1234, "fingerprint": "<32 hex>",
                             "fingerprint_kind": "sha256"}, "rows/part-0.parquet": ...}}

``files`` lists every file of the report but the manifest itself (fingerprints from
:func:`evalkit.io.fingerprint_file`). ``--overwrite`` replaces a directory only when its
manifest is valid, was written by the same command, and every entry of the directory is a
file the manifest lists with the same size and fingerprint; anything else (a user's file, a
file edited since, a report of the other command) is refused with
:class:`~evalkit.errors.OutputExistsError` naming the entries.

**Atomic commit.** A report is built in ``.<name>.tmp-<random>`` beside its target and
renamed into place; an existing report is first renamed to ``.<name>.old-<random>`` and
removed after the swap. SIGINT / SIGTERM / SIGHUP are deferred (in whichever thread they
arrive) for the two renames, so the target always holds the old or the new report.

**Liveness.** Each temporary, swap and per-row spool directory is locked (``fcntl.flock`` on
the directory) for as long as its run lives; the kernel drops the lock when the process
dies, however it dies. A later run removes only directories whose lock it can take, which
works across PID namespaces and containers sharing a volume (and never guesses from a pid).
Where locks are unsupported, nothing is ever swept.

**Inputs are never outputs.** :func:`check_out_apart` refuses an ``--out`` equal to, inside,
or a parent of any input before any work; :func:`check_not_cwd` refuses the working directory
and its ancestors (the swap would leave the process, and its shell, in a deleted directory).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import glob as _glob
import json
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import OutputError, OutputExistsError, ReportInterrupted, UsageError, option
from .escape import terminal
from .io import (
    MANIFEST_NAME,
    PathLike,
    _is_url,
    fingerprint_bytes,
    fingerprint_file,
    real_path,
    write_text,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, so nothing is swept
    fcntl = None  # type: ignore[assignment]

MANIFEST_FORMAT = "evalkit-report"
MANIFEST_VERSION = 1
COMMANDS = ("evaluate", "compare", "history")
SPOOL_MARKER = ".evalkit-rows-"
#: New private directories are made under this name, locked, then renamed to their real
#: name, so a sweep never sees an unlocked directory of a live run under a real name. An
#: unlocked staging directory younger than YOUNG_SECONDS may be a run between its mkdir and
#: its lock: it is left alone (a later run sweeps it).
STAGING_MARKER = ".evalkit-staging-"
YOUNG_SECONDS = 60.0
#: Every private directory evalkit makes (staging, ``.NAME.tmp-*``, ``.evalkit-rows-*``) holds
#: this file from its first moment; a sweep removes only directories that hold it (and whose
#: lock is free). A directory of the user's that merely has a look-alike name is never touched.
PRIVATE_MARKER = ".evalkit-private"
PRIVATE_TEXT = ("This directory is private scratch space of an evalkit run; a later evalkit run "
                "removes it once that run is over.\n")
#: At most this many unexpected entries are named in a refusal (the walk stops there too).
SHOWN_ENTRIES = 10


# -- advisory locks ----------------------------------------------------------------------

_HELD: dict[str, int] = {}
_HELD_LOCK = threading.Lock()


def _open_dir(path: PathLike) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))


def _try_lock(path: PathLike) -> int | None:
    """Take the exclusive lock of directory ``path`` without waiting: the open fd (close it
    to release), or None when another process holds it or locks are unsupported here."""
    if fcntl is None:
        return None
    try:
        fd = _open_dir(path)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EWOULDBLOCK: held; ENOLCK / EOPNOTSUPP: cannot tell, so treat as live
        os.close(fd)
        return None
    return fd


def hold_lock(path: PathLike) -> None:
    """Lock directory ``path`` for the lifetime of this run (until :func:`release_lock`).

    On a filesystem without working locks the directory is simply not locked; sweeps there
    cannot take a lock either, so they never remove it."""
    if fcntl is None:
        return
    key = os.path.abspath(path)
    try:
        fd = _open_dir(path)
    except OSError as exc:
        raise OutputError(f"{terminal(path)}: cannot open ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OutputError(f"{terminal(path)}: another evalkit run holds this directory") from None
    except OSError:
        pass  # locks unsupported here: keep the fd (harmless), nobody can sweep it either
    with _HELD_LOCK:
        _HELD[key] = fd


def release_lock(path: PathLike) -> None:
    """Release the lock taken by :func:`hold_lock` (no-op when not held)."""
    with _HELD_LOCK:
        fd = _HELD.pop(os.path.abspath(path), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _mkdir_unique(parent: Path, prefix: str, private: bool) -> Path:
    """Create ``parent/<prefix><random>``: ``private``, mode ``0o700`` (scratch, maybe in a
    shared TMPDIR); else the mode a plain ``mkdir`` gives (``0o777`` less the umask; a
    set-group-ID parent passes on its group and bit), not :func:`tempfile.mkdtemp`'s
    ``0o700``: that directory becomes the user's report, which their team, CI uploader or
    web server must be able to read as they read the files in it."""
    for _ in range(100):
        path = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
        try:
            os.mkdir(path, 0o700 if private else 0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(parent))


def make_locked_dir(parent: PathLike, prefix: str, *, private: bool = False) -> Path:
    """Create ``parent/<prefix><random>`` and lock it (:func:`hold_lock`) before it appears
    under that name: it is made and locked as a staging directory, then renamed. Its mode is
    ``0o700`` when ``private``, else what ``mkdir`` gives under the umask."""
    staging = _mkdir_unique(Path(parent), STAGING_MARKER, private)
    try:
        (staging / PRIVATE_MARKER).write_text(PRIVATE_TEXT, encoding="utf-8")
        hold_lock(staging)
        final = Path(parent) / f"{prefix}{uuid.uuid4().hex[:12]}"
        os.rename(staging, final)
    except BaseException:
        release_lock(staging)
        remove_owned(staging)
        raise
    with _HELD_LOCK:
        fd = _HELD.pop(os.path.abspath(staging), None)
        if fd is not None:
            _HELD[os.path.abspath(final)] = fd
    return final


def _keep_mode(replaced: Path, new: Path) -> None:
    """Give ``new`` the permission bits of the directory it replaces (``--overwrite``): a
    report directory the team opened up (755, a group's 2775) stays so night after night."""
    with contextlib.suppress(OSError):
        st = os.lstat(replaced)
        if stat.S_ISDIR(st.st_mode):
            os.chmod(new, stat.S_IMODE(st.st_mode))


def is_private_dir(path: PathLike) -> bool:
    """True when ``path`` is a directory evalkit made for its own scratch (it holds the
    :data:`PRIVATE_MARKER` file, not as a symbolic link)."""
    marker = Path(path) / PRIVATE_MARKER
    return not marker.is_symlink() and marker.is_file()


def is_swapped_out_report(path: PathLike) -> bool:
    """True when ``path`` (a ``.NAME.old-*`` directory) is an evalkit report exactly as evalkit
    wrote it: a valid manifest and no entry it does not list."""
    manifest, _ = read_manifest(path)
    return manifest is not None and not unexpected_entries(path, manifest, limit=1)


def _stale_dirs(parent: Path, prefix: str, owned: Any = is_private_dir) -> Iterator[Path]:
    """Directories in ``parent`` named ``prefix...`` that evalkit made (``owned(path)``) and
    whose run is over (their lock is free), each yielded while this process holds that lock.
    Names are compared literally (never as glob patterns); a name alone proves nothing: a
    user's ``.report.old-backup/`` is neither removed nor restored."""
    try:
        entries = [e for e in os.scandir(parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for e in entries:
        try:
            if not e.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        path = Path(e.path)
        fd = _try_lock(path)
        if fd is None:
            continue
        try:
            if prefix == STAGING_MARKER and time.time() - os.fstat(fd).st_mtime < YOUNG_SECONDS:
                continue  # maybe a run between mkdir and lock
            if not owned(path):
                continue
            yield path
        except OSError:
            continue
        finally:
            os.close(fd)


def remove_owned(path: Path, mark: str = PRIVATE_MARKER) -> None:
    """Remove directory ``path``, which evalkit owns, with its mark of ownership (``mark``: a
    report's manifest, a scratch directory's :data:`PRIVATE_MARKER`) removed last, and
    SIGINT / SIGTERM / SIGHUP deferred until the removal is done.

    However a removal stops part way (a signal, a crash, power loss), what is left still
    holds its mark, so the next run's sweep recognises it and finishes the job: never an
    anonymous remnant that no run may delete (it would look like the user's). When an entry
    cannot be removed (permissions), the mark stays too."""
    with signals_deferred(), contextlib.suppress(OSError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
            return
        for entry in os.scandir(path):
            if entry.name == mark:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
        if any(entry.name != mark for entry in os.scandir(path)):
            return  # something could not be removed: keep the mark, so a later sweep retries
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path / mark)
        os.rmdir(path)


def _holds_every_file(path: Path) -> bool:
    """True when every file the manifest of report directory ``path`` lists is there (a
    swapped-out report whose removal was cut short is not whole: never put it back)."""
    manifest, _ = read_manifest(path)
    return manifest is not None and all((path / rel).is_file() for rel in manifest["files"])


# -- per-row spool directories -------------------------------------------------------------


def make_spool_dir(parent: PathLike | None = None) -> Path:
    """A private directory for streamed per-row output (beside the report, or in TMPDIR),
    named ``.evalkit-rows-<random>`` and locked until :func:`remove_spool_dir`; a later run
    sweeps it only once that lock is free (the run is over, however it ended)."""
    try:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
            sweep_spool_dirs(parent)
        if parent is None:
            parent = tempfile.gettempdir()
        return make_locked_dir(parent, SPOOL_MARKER, private=True)
    except OSError as exc:
        where = parent if parent is not None else tempfile.gettempdir()
        raise OutputError(
            f"{terminal(where)}: cannot create a temporary directory there ({exc.strerror or exc}); "
            "is the output location writable?"
        ) from None


def remove_spool_dir(path: Path | None) -> None:
    """Remove a spool directory made by :func:`make_spool_dir` and release its lock."""
    if path is None:
        return
    remove_owned(path)
    release_lock(path)


def sweep_spool_dirs(parent: PathLike) -> None:
    """Remove per-row spool and staging directories of finished runs in ``parent``."""
    for marker in (SPOOL_MARKER, STAGING_MARKER):
        for p in _stale_dirs(Path(parent), marker):
            remove_owned(p)


# -- manifests ---------------------------------------------------------------------------------


def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Files this process has found equal to a manifest entry, by path: the file's identity when
#: it was checked (:func:`_identity`) and the entry's size, fingerprint kind and fingerprint.
#: A later check of the same unchanged file (the same identity, against the same entry) needs
#: no second hash: `history` reads its previous report's files after checking that report
#: is replaceable (0.7 GB, ~1 CPU-s of sha256 per night, was done twice).
_INTACT: dict[str, tuple[tuple[int, ...], tuple[Any, Any, Any]]] = {}
_INTACT_LOCK = threading.Lock()


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """Device, inode, size and the modification and change times (ns) of a file: a write
    moves the modification time, and anything that sets it back (``touch -d``, ``os.utime``)
    moves the change time, which no user call can set."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _entry_key(entry: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (entry.get("bytes"), entry.get("fingerprint_kind"), entry.get("fingerprint"))


def known_intact(path: PathLike, st: os.stat_result, entry: dict[str, Any]) -> bool:
    """Has this process already found the file at ``path``, as it is now (``st``), equal to
    manifest ``entry``?"""
    with _INTACT_LOCK:
        hit = _INTACT.get(os.path.abspath(path))
    return hit is not None and hit == (_identity(st), _entry_key(entry))


def remember_intact(path: PathLike, st: os.stat_result, entry: dict[str, Any]) -> None:
    """Record that the file at ``path``, as ``st`` describes it, was found equal to ``entry``."""
    with _INTACT_LOCK:
        _INTACT[os.path.abspath(path)] = (_identity(st), _entry_key(entry))


def read_checked(path: PathLike, entry: dict[str, Any]) -> bytes | None:
    """The bytes of ``path`` when they are what manifest ``entry`` records (size and
    fingerprint), else None; hashed only when this process has not already found the file,
    unchanged since, equal to that entry (:func:`known_intact`). Raises OSError."""
    with open(path, "rb") as fh:
        before = os.fstat(fh.fileno())
        data = fh.read()
        after = os.fstat(fh.fileno())
    if _identity(before) != _identity(after) or len(data) != entry.get("bytes"):
        return None
    if known_intact(path, after, entry):
        return data
    import io as _io

    got, kind = fingerprint_file(_io.BytesIO(data), len(data), entry.get("fingerprint_kind"))
    if (kind, got) != (entry.get("fingerprint_kind"), entry.get("fingerprint")):
        return None
    remember_intact(path, after, entry)
    return data


class BlockReads:
    """An open binary file (Python or Arrow) whose ``read(n)`` fills one block reused from
    read to read and returns a view of it, valid until the next read: for
    :func:`evalkit.io.fingerprint_file`, which hashes each block before reading the next.
    A new bytes object per 1 MiB read costs 256 page faults and a copy: reading to hash the
    ~1,300 files a cold history of a year reads and writes, as much CPU as the hashing. The
    bytes are those ``fh.read`` gives."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh
        self._block = bytearray(0)

    def seek(self, position: int) -> int:
        return self._fh.seek(position)

    def read(self, n: int = -1) -> memoryview:
        if n < 0:  # the rest of the file, as file objects read it
            return memoryview(self._fh.read())
        if len(self._block) < n:
            self._block = bytearray(n)
        view = memoryview(self._block)[:n]
        got = 0
        while got < n:  # a short read is not the end of the file
            k = self._fh.readinto(view[got:])
            if not k:
                break
            got += k
        return view[:got]


def fingerprint_entry(path: PathLike, kind: str | None = None) -> dict[str, Any]:
    """``{"bytes", "fingerprint", "fingerprint_kind"}`` of one file (read through one fd);
    ``kind`` as :func:`evalkit.io.fingerprint_file` (a checker passes the recorded one)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        fingerprint, got = fingerprint_file(BlockReads(fh), size, kind)
    return {"bytes": int(size), "fingerprint": fingerprint, "fingerprint_kind": got}


def _is_row_output(rel: str) -> bool:
    """The per-row output (``rows.parquet``, the Dask engine's ``rows/part-N.parquet``):
    often gigabytes, fingerprinted by head and tail only."""
    return rel == "rows.parquet" or rel.startswith("rows/")


def manifest_entry(path: PathLike, rel: str) -> dict[str, Any]:
    """The manifest entry of one report file. Every file but the per-row output is hashed
    whole (kind ``sha256``), so a reader that checks it has checked every byte it reads;
    ``summary.json`` also records the length and hash of its head up to the end of its
    ``metadata`` object (``metadata_bytes``, ``metadata_fingerprint``): ``history`` reads
    only that head, and checks exactly it."""
    entry = fingerprint_entry(path, None if _is_row_output(rel) else "sha256")
    if rel == "summary.json":
        from .io import read_json_head

        with open(path, "rb") as fh:
            try:
                head = read_json_head(fh, "metadata")
            except ValueError:
                head = None
            if head is not None:
                fh.seek(0)
                entry["metadata_bytes"] = head[1]
                entry["metadata_fingerprint"] = fingerprint_bytes(fh.read(head[1]))
    return entry


def _report_files(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            if rel != MANIFEST_NAME:
                yield rel, p


def write_manifest(directory: PathLike, command: str, run_id: str,
                   known: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``evalkit-manifest.json`` listing every file now in ``directory``. ``known``
    holds entries of files linked unchanged from an earlier report of evalkit's (its
    manifest's entries): used as they are when the size still agrees, not hashed again."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    from ._version import __version__

    root = Path(directory)
    manifest = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "command": command,
        "evalkit_version": __version__,
        "created": _utc_now(),
        "run_id": run_id,
        "files": {rel: _known_or_hashed(p, rel, known) for rel, p in _report_files(root)},
    }
    write_text(json.dumps(manifest, indent=2) + "\n", root / MANIFEST_NAME)
    return manifest


def _known_or_hashed(p: Path, rel: str, known: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    entry = (known or {}).get(rel)
    if entry is not None and entry.get("bytes") == p.stat().st_size:
        return dict(entry)
    return manifest_entry(p, rel)


def read_manifest(directory: PathLike) -> tuple[dict[str, Any] | None, str]:
    """``(manifest, "")`` for a valid evalkit manifest in ``directory``, else ``(None, why)``."""
    path = Path(directory) / MANIFEST_NAME
    try:
        if path.is_symlink() or not path.is_file():
            return None, f"no {MANIFEST_NAME}"
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{MANIFEST_NAME} is unreadable: {exc}"
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        return None, f"{MANIFEST_NAME} is not an evalkit manifest"
    files = data.get("files")
    if data.get("command") not in COMMANDS or not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) for k, v in files.items()):
        return None, f"{MANIFEST_NAME} is damaged"
    return data, ""


#: How a report written before manifests is recognised: its JSON summary and one table of it.
_REPORT_MARKERS = (("evaluate", "summary.json", "overall.parquet"), ("compare", "compare.json", "overall.parquet"),
                   ("history", "history.json", "runs.parquet"))


def report_command(directory: PathLike) -> str | None:
    """The evalkit command that wrote ``directory`` (``evaluate``, ``compare`` or
    ``history``): its manifest says so, or for a report written before manifests, its JSON
    summary and a table beside it. None for anything else (a directory of predictions).

    The one test for "this is evalkit's output, not an input": compare and evaluate refuse a
    report of the wrong command by it, with the message history gives
    (:func:`not_an_evaluate_report`)."""
    d = Path(directory)
    if not d.is_dir():
        return None
    manifest, _why = read_manifest(d)
    if manifest is not None:
        return str(manifest["command"])
    for command, summary, table in _REPORT_MARKERS:
        if (d / summary).is_file() and (d / table).is_file():
            return command
    return None


def not_an_evaluate_report(directory: PathLike, command: str) -> str:
    """What compare and history say of a ``command`` report given where an evaluate report
    belongs (history says it of each such directory: :func:`evalkit.reports.read_run_info`)."""
    return f"{os.fspath(directory)}: is a {command} report, not an evaluate report (no summary.json)"


def unexpected_entries(directory: PathLike, manifest: dict[str, Any], limit: int = SHOWN_ENTRIES,
                       check_content: bool = True, seen: dict[str, tuple[int, int, int]] | None = None,
                       ) -> list[str]:
    """Entries of ``directory`` that evalkit did not write according to ``manifest``: files
    it does not list, symbolic links, and (with ``check_content``) listed files whose size
    or fingerprint changed since. At most ``limit`` are returned (the walk stops there).
    ``seen`` remembers the (size, modification time, inode) of each file found intact, so a
    second check of the same directory (before the swap) hashes only files that changed."""
    root = Path(directory)
    files: dict[str, dict[str, Any]] = manifest["files"]
    dirs = {str(Path(rel).parent.as_posix()) for rel in files}
    dirs |= {p.as_posix() for rel in files for p in Path(rel).parents}
    found: list[str] = []

    def add(rel: str, why: str = "") -> bool:
        found.append(terminal(rel) + (f" ({why})" if why else ""))
        return len(found) >= limit

    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for d in sorted(dirnames):
            rel = (base / d).relative_to(root).as_posix()
            if (base / d).is_symlink() or rel not in dirs:
                dirnames.remove(d)
                if add(rel + "/"):
                    return found
        for f in sorted(filenames):
            p = base / f
            rel = p.relative_to(root).as_posix()
            if rel == MANIFEST_NAME and base == root:
                continue
            if p.is_symlink() or rel not in files:
                if add(rel):
                    return found
                continue
            if not check_content:
                continue
            want = files[rel]
            try:
                st = p.stat()
                stamp = (int(st.st_size), int(st.st_mtime_ns), int(st.st_ino))
                if seen is not None and seen.get(rel) == stamp:
                    continue
                if known_intact(p, st, want):
                    if seen is not None:
                        seen[rel] = stamp
                    continue
                got = fingerprint_entry(p, want.get("fingerprint_kind"))
                after = p.stat()
            except OSError as exc:
                if add(rel, f"unreadable: {exc.strerror or exc}"):
                    return found
                continue
            changed = got["bytes"] != want.get("bytes") or got["fingerprint"] != want.get("fingerprint")
            if changed and add(rel, "changed since evalkit wrote it"):
                return found
            if not changed and _identity(after) == _identity(st):
                remember_intact(p, after, want)
            if not changed and seen is not None:
                seen[rel] = stamp
    return found


def check_replaceable(target: Path, command: str, seen: dict[str, tuple[int, int, int]] | None = None) -> None:
    """Raise OutputExistsError unless ``target`` is an evalkit ``command`` report holding
    only what evalkit wrote (see the module docstring); ``seen`` as in
    :func:`unexpected_entries`."""
    manifest, why = read_manifest(target)
    if manifest is None:
        raise OutputExistsError(
            f"{terminal(target)}: is not empty and holds no evalkit report ({why}); "
            f"{option('overwrite', True)} only replaces a directory evalkit wrote: choose another "
            f"{option('out')} (or move this directory away yourself)")
    if manifest["command"] != command:
        raise OutputExistsError(
            f"{terminal(target)}: holds an evalkit {manifest['command']} report, which "
            f"{'an' if command[0] in 'aeiou' else 'a'} {command} report never replaces: "
            f"choose another {option('out')}")
    extra = unexpected_entries(target, manifest, seen=seen)
    if extra:
        more = " ..." if len(extra) >= SHOWN_ENTRIES else ""
        raise OutputExistsError(
            f"{terminal(target)}: holds entries evalkit did not write: {', '.join(extra)}{more}; "
            f"{option('overwrite', True)} only replaces a report that holds nothing else: move them "
            f"out or choose another {option('out')}")


# -- --out is never an input -------------------------------------------------------------------


#: How to upload a local report to the object stores people name as ``--out`` most.
_UPLOAD_HINTS = {"s3": "aws s3 sync {local} {url}", "s3a": "aws s3 sync {local} {url}",
                 "gs": "gcloud storage rsync -r {local} {url}", "gcs": "gcloud storage rsync -r {local} {url}"}


def local_out(out: PathLike) -> str:
    """``out`` as a local path: ``file://`` is stripped, as for inputs; any other URL
    (``s3://``, ``gs://``, ``memory://``...) is refused (UsageError). A report is built beside
    its directory and renamed into place, which only a local file system does atomically;
    ``Path("s3://b/x")`` would otherwise be the local directory ``s3:/b/x``."""
    s = os.fspath(out)
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    if s.startswith("file://"):
        return s[len("file://"):]
    if _is_url(s):
        scheme = s.split("://", 1)[0].lower()
        upload = _UPLOAD_HINTS.get(scheme, "your storage's upload tool: {local} -> {url}")
        raise UsageError(
            f"{option('out', s)}: is a URL, and reports are written to a local directory only (URLs "
            f"are for inputs): write the report to a local directory ({option('out', 'report')}), "
            f"then upload it ({upload.format(local='report', url=s)})")
    return s


def resolve_out(out: PathLike) -> Path:
    """The real, absolute path of an output directory: a symbolic link is followed (the
    report it points to is the one updated); a dangling one is refused."""
    p = Path(local_out(out))
    if p.is_symlink() and not p.exists():
        raise OutputError(f"{terminal(p)}: is a symbolic link to {terminal(os.readlink(p))}, which "
                          "does not exist; give an existing directory or a new name as --out")
    return Path(real_path(p))


def check_not_cwd(out: PathLike) -> None:
    """Raise UsageError (exit 2) when output directory ``out`` is the working directory or
    holds it: a report replaces its directory as a whole (built beside it, renamed into
    place), so the process, and the shell it was started from, would be left in a deleted
    directory (tester T1: the next run there was "a bug in evalkit")."""
    real = resolve_out(out)
    try:
        cwd = Path(os.path.realpath(os.getcwd()))
    except FileNotFoundError:
        return  # nothing to keep valid; an absolute --out works from anywhere
    if real == cwd or real in cwd.parents:
        how = "is the current directory" if real == cwd else "holds the current directory"
        raise UsageError(
            f"{option('out', os.fspath(out))}: {how} ({terminal(real)}); a report replaces its "
            f"directory as a whole (written beside it, then renamed into place), which would leave "
            f"this shell in a deleted directory: give a new directory as {option('out')} (e.g. "
            f"{option('out', 'report')}), or run from outside {terminal(real)}")


def _local_paths(spec: Any) -> list[str]:
    if spec is None:
        return []
    if isinstance(spec, str | os.PathLike):
        s = os.fspath(spec)
        if isinstance(s, bytes):
            s = os.fsdecode(s)
        if s.startswith("file://"):
            s = s[len("file://"):]
        if "://" in s:
            return []
        if any(ch in s for ch in "*?["):
            return sorted(_glob.glob(s, recursive=True)) or []
        return [s]
    if isinstance(spec, list | tuple):
        return [p for item in spec for p in _local_paths(item)]
    return []


#: Files an evalkit report holds (evaluate, compare, history: the fixed names, the default
#: groupings' tables, Dask's per-row parts), relative to ``--out``: an input glob that would
#: match one of them (or ``--out`` itself) reads the report back on the next run.
REPORT_FILE_PROBES = ("overall.parquet", "by_class.parquet", "by_split.parquet", "grouped.parquet",
                      "confusion.parquet", "calibration.parquet", "hardest.parquet", "slices.parquet",
                      "rows.parquet", "rows/part-0.parquet", "runs.parquet", "trends.parquet",
                      "sources.parquet", "overall/2026-01.parquet", "report.md", "summary.json",
                      "compare.md", "compare.json", "history.md", "history.json", "reliability.png",
                      MANIFEST_NAME)


def _glob_specs(spec: Any) -> list[str]:
    """The local glob patterns of an input spec (``file://`` stripped, URLs skipped)."""
    if isinstance(spec, list | tuple):
        return [g for item in spec for g in _glob_specs(item)]
    if not isinstance(spec, str | os.PathLike):
        return []
    s = os.fspath(spec)
    s = os.fsdecode(s) if isinstance(s, bytes) else s
    s = s.removeprefix("file://")
    return [s] if "://" not in s and any(ch in s for ch in "*?[") else []


def _parts_match(pattern: list[str], parts: list[str]) -> bool:
    """Whether path components ``parts`` match glob components ``pattern`` as
    ``glob.glob(..., recursive=True)`` matches them: ``**`` is any number of directories,
    and a wildcard never matches a hidden name."""
    import fnmatch

    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return _parts_match(rest, parts) or (bool(parts) and not parts[0].startswith(".")
                                             and _parts_match(pattern, parts[1:]))
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _parts_match(rest, parts[1:])


def glob_reaches(pattern: str, out: Path) -> str | None:
    """The first path of a report in directory ``out`` (a real path) that the input glob
    ``pattern`` would match, relative to ``out`` (``""``: ``out`` itself; else one of
    :data:`REPORT_FILE_PROBES`), or None."""
    from .io import _glob_base

    base = _glob_base(pattern)
    try:
        rel = out.relative_to(os.path.realpath(base))
    except ValueError:
        return None
    rest = list(Path(pattern).parts[len(Path(base).parts):])
    for probe in ("", *REPORT_FILE_PROBES):
        parts = [*rel.parts, *(probe.split("/") if probe else [])]
        if _parts_match(rest, parts):
            return probe
    return None


def _mountinfo_unescape(field: str) -> str:
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def is_mount_point(path: PathLike) -> bool:
    """True when ``path`` is a mount point: the root of another file system
    (:func:`os.path.ismount`), or a bind mount of a directory of the same one, which
    ``ismount`` cannot see (Linux: listed in ``/proc/self/mountinfo``)."""
    try:
        if os.path.ismount(path):
            return True
    except (OSError, ValueError):
        return False
    target = os.path.abspath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            return any(len(fields) > 4 and _mountinfo_unescape(fields[4]) == target
                       for fields in (line.split() for line in f))
    except OSError:
        return False


def check_not_mount_point(out: PathLike, target: Path) -> None:
    """Raise UsageError (exit 2) when the output directory ``target`` (``out`` as given) is
    a mount point: a report is built beside its directory and renamed onto it, and a mount
    point can be neither renamed nor replaced (EBUSY), so every run would fail at the end."""
    if target.is_dir() and is_mount_point(target):
        inside = os.path.join(os.fspath(out), "run")
        raise UsageError(
            f"{option('out', os.fspath(out))}: is a mount point ({terminal(target)}: a volume or another "
            f"file system); a report replaces its directory as a whole (built beside it, then renamed "
            f"into place), which a mount point cannot be: give a directory inside it, e.g. "
            f"{option('out', inside)}")


def check_out_apart(out: PathLike, others: Iterable[tuple[str, Any]], *, cwd: bool = True) -> None:
    """Raise UsageError (exit 2) when ``out`` is the same path as, inside, or a parent of
    any of ``others`` (``(role, path spec)`` pairs: inputs, labels, config file, the runs
    being compared). Symbolic links are resolved; URLs other than ``file://`` are skipped. A glob among
    ``others`` that would match ``out`` or a file of the report (:func:`glob_reaches`) is
    refused too: accepted, it would break every later run."""
    o = resolve_out(out)
    check_not_mount_point(out, o)
    for role, spec in others:
        for path in _local_paths(spec):
            p = Path(real_path(path))
            if p == o:
                how = "is"
            elif o in p.parents:
                how = "is a parent of"
            elif p in o.parents:
                how = "is inside"
            else:
                continue
            raise UsageError(
                f"{option('out', os.fspath(out))}: {how} the {role} {terminal(path)}; the report must "
                f"go to a directory apart from every input: choose another {option('out')}")
        for pattern in _glob_specs(spec):  # next run's inputs: refused now, not from the next night on
            hit = glob_reaches(pattern, o)
            if hit is not None:
                from .io import _glob_base

                base = _glob_base(pattern)
                where = "the current directory" if base == "." else terminal(base)
                raise UsageError(
                    f"{option('out', os.fspath(out))}: the {role} glob {terminal(pattern)} would match "
                    f"{'the report directory' if not hit else 'the report file'} "
                    f"{terminal(os.path.join(os.fspath(out), hit) if hit else os.fspath(out))}, so every later run would read the "
                    f"report as input: put the report outside {where} (where the glob searches), or "
                    f"narrow the glob")
    if cwd:  # last: a more specific reason above wins
        check_not_cwd(out)


# -- atomic commit -------------------------------------------------------------------------------

_SIGNALS = tuple(s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None),
                             getattr(signal, "SIGHUP", None)) if s is not None)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Defer SIGINT / SIGTERM / SIGHUP until the block is done.

    Python runs signal handlers in the main thread whichever thread the signal was delivered
    to (often one of Arrow's), so blocking the signal in the current thread is not enough:
    the handlers themselves are swapped for one that records the signal, and the original
    handler runs once the block is over. In other threads (where handlers cannot be set)
    the block runs as is: handlers then interrupt the main thread, not this one.
    """
    pending: list[int] = []
    old: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            with contextlib.suppress(ValueError, OSError):
                old[s] = signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if pending:
            sig = pending[0]
            handler = old.get(sig)
            if callable(handler):
                handler(sig, None)
            elif handler != signal.SIG_IGN:
                signal.raise_signal(sig)


class AtomicDir:
    """Build an output directory beside its target, then swap it into place.

    All files of a run appear together or not at all: a crash, a signal or a disk-full error
    leaves the previous report (if any) untouched, and the temporary directory is removed
    (or, after a hard kill, swept by the next run once its lock is free). ``commit`` writes
    the manifest (``command``: ``"evaluate"`` or ``"compare"``) and swaps; ``run_id`` is the
    id the manifest records (writers put it in ``summary.json`` / ``compare.json`` too).

    Raises OutputExistsError (exit 4) for a target that is not a replaceable report of the
    same command (see :func:`check_replaceable`), OutputError when it cannot be written,
    and :class:`~evalkit.errors.ReportInterrupted` (a KeyboardInterrupt carrying ``result``)
    when a signal arrives after the new report is in place.
    """

    def __init__(self, target: PathLike, overwrite: bool = False, command: str = "evaluate",
                 result: Any = None) -> None:
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}")
        self.result = result
        check_not_cwd(target)
        self.target = resolve_out(target)
        self.overwrite = overwrite
        self.command = command
        self.run_id = uuid.uuid4().hex
        self.tmp: Path | None = None
        #: manifest entries of files linked unchanged from the report being replaced
        self.known: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, tuple[int, int, int]] = {}  # files of the target found intact

    def check(self) -> None:
        """Refuse an existing report unless overwriting; never replace anything else."""
        t = self.target
        try:
            if t.exists() and not t.is_dir():
                raise OutputError(f"{terminal(t)}: exists and is not a directory")
            for parent in t.parents:
                if parent.exists():
                    if not parent.is_dir():
                        raise OutputError(f"{terminal(t)}: cannot be created: {terminal(parent)} "
                                          "is not a directory")
                    break
            if not t.is_dir():
                return
            check_not_mount_point(t, t)
            with os.scandir(t) as entries:
                if not any(entries):
                    return
            if not self.overwrite:
                manifest, _ = read_manifest(t)
                if manifest is not None:
                    raise OutputExistsError(
                        f"{terminal(t)}: already holds an evalkit {manifest['command']} report; "
                        f"pass {option('overwrite', True)} to replace it")
                raise OutputExistsError(
                    f"{terminal(t)}: directory is not empty and holds no evalkit report "
                    f"(no {MANIFEST_NAME}); choose another {option('out')}")
            check_replaceable(t, self.command, self._seen)
        except OSError as exc:
            raise OutputError(f"{terminal(t)}: cannot use as the output directory "
                              f"({exc.strerror or exc})") from None

    def prepare(self) -> Path:
        """Sweep dead runs' leftovers, check the target and create its parent; return it."""
        parent = self.target.parent
        if parent.is_dir():
            # First, so that a report caught mid-swap by a hard kill is back before the check.
            self._sweep(parent)
        self.check()
        try:
            parent.mkdir(parents=True, exist_ok=True)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "Permission denied")
        except OSError as exc:
            raise OutputError(
                f"{terminal(self.target)}: cannot create the output directory in "
                f"{terminal(parent)} ({exc.strerror or exc})") from None
        return parent

    def __enter__(self) -> Path:
        parent = self.prepare()
        try:
            self.tmp = make_locked_dir(parent, f".{self.target.name}.tmp-")
        except OSError as exc:
            raise OutputError(f"{terminal(self.target)}: cannot create the output directory "
                              f"({exc.strerror or exc})") from None
        return self.tmp

    def _sweep(self, parent: Path) -> None:
        # Runs killed hard (SIGKILL, power loss) leave their directories behind: put back a
        # previous report caught between the two renames, remove the rest.
        name = self.target.name
        for p in _stale_dirs(parent, f".{name}.old-", owned=is_swapped_out_report):
            if not os.path.lexists(self.target) and _holds_every_file(p):
                with contextlib.suppress(OSError):
                    os.rename(p, self.target)
                    continue
            remove_owned(p, MANIFEST_NAME)
        for p in _stale_dirs(parent, f".{name}.tmp-"):
            remove_owned(p)
        sweep_spool_dirs(parent)

    def write_summary(self, data: dict[str, Any], name: str,
                      tables_written: Callable[[], None] | None = None) -> None:
        """Write the run's JSON summary (``summary.json`` / ``compare.json``) into the
        temporary directory, adding ``metadata.run_id`` and ``table_fingerprints``: the
        fingerprint of every Parquet table written so far. ``tables_written`` (if given) is
        called once ``data`` is rendered and returns when every table is written (tables
        still being encoded on another thread meanwhile); otherwise write this after the
        tables."""
        from .report import json_members, json_object

        assert self.tmp is not None
        tmp = self.tmp
        members = json_members({k: v for k, v in data.items() if k != "table_fingerprints"} | {
            "metadata": {**(data.get("metadata") or {}), "run_id": self.run_id}})
        if tables_written is not None:
            tables_written()
        fingerprints = {p.relative_to(tmp).as_posix(): fingerprint_entry(p) for p in sorted(tmp.rglob("*.parquet"))}
        members += json_members({"table_fingerprints": fingerprints})
        write_text(json_object(members), tmp / name)

    def commit(self) -> Path:
        """Write the manifest, then swap the finished directory into place."""
        assert self.tmp is not None
        self.check()
        with contextlib.suppress(FileNotFoundError):
            (self.tmp / PRIVATE_MARKER).unlink()  # the report is the user's from here on
        write_manifest(self.tmp, self.command, self.run_id, self.known)
        tmp, target = self.tmp, self.target
        old: Path | None = None
        locked = committed = False
        try:
            with signals_deferred():
                try:
                    if os.path.lexists(target):
                        _keep_mode(target, tmp)
                        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
                        hold_lock(target)  # so no sweep takes the swapped-out report as dead
                        locked = True
                        os.rename(target, old)
                    os.rename(tmp, target)
                except OSError as exc:
                    if old is not None and os.path.lexists(old) and not os.path.lexists(target):
                        os.rename(old, target)
                    busy = (": a mount point cannot be replaced; give a directory inside it as "
                            f"{option('out')}" if exc.errno == errno.EBUSY else "")
                    raise OutputError(f"{terminal(target)}: cannot move the report into place "
                                      f"({exc.strerror or exc}{busy}); any previous report is intact") from None
                committed = True
                self.tmp = None
                release_lock(tmp)
            if old is not None:
                remove_owned(old, MANIFEST_NAME)
        except KeyboardInterrupt:
            if committed:
                raise ReportInterrupted(str(target), self.result) from None
            raise
        finally:
            if locked:
                release_lock(target)
        return target

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if self.tmp is not None:
            with signals_deferred():
                remove_owned(self.tmp)
                release_lock(self.tmp)
            self.tmp = None
        if exc is not None and isinstance(exc, OSError):
            # Any OS failure while the report is written (disk full, quota, ...) is an output
            # error with its own exit code, not an internal error.
            raise OutputError(f"{terminal(self.target)}: cannot write the report "
                              f"({exc.strerror or exc}); nothing was written and any previous "
                              "report is intact") from None


__all__ = ["AtomicDir", "MANIFEST_NAME", "check_not_cwd", "check_not_mount_point", "check_out_apart",
           "check_replaceable", "hold_lock", "is_mount_point", "local_out", "read_checked", "make_spool_dir",
           "read_manifest", "release_lock", "remove_spool_dir", "resolve_out", "manifest_entry",
           "signals_deferred", "sweep_spool_dirs", "unexpected_entries", "write_manifest"]
