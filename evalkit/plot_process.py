"""Drawing the report's plots in helper processes, off the critical path of a run.

``import matplotlib`` costs about 0.4 s and drawing the default report's three figures
about 0.5 s, as much as a quarter of a 6M-row run. :func:`start` forks a helper when a run
begins (before any reader thread exists; the CLI forks it earlier still, with
:func:`start_early`): it imports matplotlib while the parent reads and computes, then waits. When the tables are final, :meth:`PlotHelper.draw` hands it the
grouped tables, on two pipes at once: the helper and a second process forked from it
(matplotlib already imported) draw the figures in parallel (shared by :func:`split_work`
so both finish about together) into the report's temporary directory while the
parent writes the Parquet tables, report.md and summary.json; :meth:`PlotHelper.finish`
waits for them before the report is committed. The PNGs are those
:func:`evalkit.plots.write_plots` draws in-process, byte for byte.

Without ``os.fork`` (Windows), with matplotlib missing in the helper, or if a helper dies,
the parent falls back to drawing in-process: the report is the same, only slower.
Helpers ignore Ctrl-C (the parent handles it and kills them) and exit when the parent's
end of the pipe closes, so a killed parent never leaves them behind.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_READY, _UNAVAILABLE = b"R", b"U"


def _write_msg(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(struct.pack("<Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        b = os.read(fd, min(n - got, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _read_msg(fd: int) -> Any:
    head = _read_exact(fd, 8)
    if head is None:
        raise EOFError("plot helper pipe closed")
    body = _read_exact(fd, struct.unpack("<Q", head)[0])
    if body is None:
        raise EOFError("plot helper pipe closed")
    return pickle.loads(body)


class _Channel:
    """One forked process and the two pipe ends the parent holds."""

    def __init__(self, pid: int | None, to_child: int, from_child: int) -> None:
        # pid None: a helper another helper forked (ended with it), only the pipes are ours
        self.pid, self.to_child, self.from_child = pid, to_child, from_child

    def close(self, kill: bool) -> None:
        """Close the pipes and reap the process; ``kill``: end it first. Returns once the
        process and the process it forked (a drawing helper's sibling) are gone: SIGTERM
        makes a helper kill and reap its sibling before it exits (:func:`_on_sigterm`);
        one that does not within :data:`TERM_GRACE_S` gets SIGKILL."""
        for fd in (self.to_child, self.from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.pid is None:
            return
        try:
            self._reap(kill)
        finally:
            _forked.discard(self.pid)

    def _reap(self, kill: bool) -> None:
        if kill:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + TERM_GRACE_S
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                        return
                except ChildProcessError:
                    return
                time.sleep(0.002)
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(self.pid, 0)


#: Seconds a helper gets to end its sibling and exit after SIGTERM before it is killed.
TERM_GRACE_S = 2.0
#: Processes this process forked and has not reaped yet (see :func:`discard_early`).
_forked: set[int] = set()


@contextlib.contextmanager
def _interrupts_deferred() -> Any:
    """Ctrl-C / SIGTERM / SIGHUP arriving inside the block act when it ends, so a fork and
    the note of the process it made happen together or not at all: an interrupt between
    them would leave a helper nobody reaps (a zombie after the command has exited). Outside
    the main thread (where handlers cannot be set) the block runs as it is."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[tuple[int, Any]] = []
    sigs = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    old = {s: signal.signal(s, lambda signum, frame: got.append((signum, frame))) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for signum, frame in got[:1]:
            handler = old[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)
#: The sibling a drawing helper forked (in that helper's process only).
_children: list[_Channel] = []


def _on_sigterm(_signum: int, _frame: Any) -> None:
    """A helper asked to end: kill and reap the process it forked, then exit at once."""
    for ch in _children:
        with contextlib.suppress(OSError):
            os.kill(ch.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(ch.pid, 0)
    os._exit(1)


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the process that forked it dies, so a parent
    killed outright (SIGKILL, a crash) never leaves a helper behind."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _fork(child_main: Any, pipes: tuple[int, int, int, int] | None = None,
          child_closes: Sequence[int] = ()) -> _Channel:
    """Fork a helper running ``child_main(inbox, outbox)``. ``pipes``: the ends
    ``(down_r, down_w, up_r, up_w)`` to use (new pipes by default; -1 for an end this
    process does not hold); ``child_closes``: other descriptors the helper must not keep
    (another helper's pipes), closed in the helper first."""
    down_r, down_w, up_r, up_w = pipes if pipes is not None else (*os.pipe(), *os.pipe())
    with _interrupts_deferred():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            code = 0
            try:
                for fd in (down_w, up_r, *child_closes):
                    if fd >= 0:
                        os.close(fd)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                _children.clear()  # a sibling is not the parent of the first helper's sibling
                _forked.clear()
                signal.signal(signal.SIGTERM, _on_sigterm)
                _die_with_parent()
                child_main(down_r, up_w)
            except BaseException:  # noqa: BLE001 - the parent sees EOF and draws itself
                code = 1
            finally:
                os._exit(code)
        _forked.add(pid)
    os.close(down_r)
    os.close(up_w)
    return _Channel(pid, down_w, up_r)


def _ready_to_draw() -> Any:
    """In a helper: import matplotlib and :mod:`evalkit.plots` and draw a throwaway figure
    (:func:`evalkit.plots._warm_up`); return the plots module. Raises if matplotlib cannot
    be imported.

    Savings for this process only (it never draws anything else): history plots are drawn
    on one kept figure (:func:`evalkit.plots.keep_figures`); matplotlib's import of its 3D
    toolkit (``mpl_toolkits.mplot3d``, about a fifth of the import, only there to register
    the ``3d`` projection) and of the polar and geographic axes is skipped by stand-in
    modules (:func:`_projection_stubs`) while ``matplotlib.projections`` is imported; the objects inherited from the parent, then those of the import, are
    frozen out of the cyclic garbage collector (``gc.freeze``): its full collections,
    frequent while figures are built, scan only what drawing creates (and never write to
    the parent's pages shared copy-on-write).
    """
    import gc
    import sys

    gc.freeze()
    stubs = _projection_stubs() if "matplotlib.projections" not in sys.modules else {}
    stubs = {name: stub for name, stub in stubs.items() if name not in sys.modules}
    sys.modules.update(stubs)
    try:
        with _without_property_docs():
            import matplotlib.projections  # noqa: F401
            from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
            from matplotlib.figure import Figure  # noqa: F401
    finally:
        for name, stub in stubs.items():
            if sys.modules.get(name) is stub:
                del sys.modules[name]  # a later import gets the real module
    from . import plots

    plots._warm_up()
    plots.keep_figures()  # a helper draws many history plots: one figure for all
    gc.freeze()
    return plots


@contextlib.contextmanager
def _without_property_docs() -> Any:
    """Inside, matplotlib builds no property documentation: every ``Artist`` subclass
    defined (``Line2D``, ``Rectangle``, ``Text``, ``Axes``... while matplotlib is imported)
    gets its ``set()`` without the generated signature and docstring listing its
    properties, and ``%(Name:kwdoc)s`` in docstrings reads empty. Generating them
    (``matplotlib.artist.kwdoc``: every setter of every class inspected, its docstring
    parsed) is about a third of ``import matplotlib.figure``, for text no drawing helper
    ever shows; ``Artist.set`` itself is unchanged (it never reads them). For a drawing
    helper only; matplotlib's functions are restored after (classes defined then get their
    documentation again). Another matplotlib without these hooks: imported as it is."""
    import matplotlib.artist as martist

    artist = getattr(martist, "Artist", None)
    update = vars(artist).get("_update_set_signature_and_docstring") if artist is not None else None
    kwdoc = getattr(martist, "kwdoc", None)
    if update is None or kwdoc is None:
        yield
        return

    def mark_only(cls: type) -> None:  # what Artist.__init_subclass__ checks for, nothing else
        cls.set._autogenerated_signature = True  # type: ignore[attr-defined]

    artist._update_set_signature_and_docstring = classmethod(mark_only)  # type: ignore[union-attr]
    martist.kwdoc = lambda _artist: ""
    try:
        yield
    finally:
        artist._update_set_signature_and_docstring = update  # type: ignore[union-attr]
        martist.kwdoc = kwdoc


def _projection_stubs() -> dict[str, Any]:
    """Stand-ins for the modules ``matplotlib.projections`` imports only to register
    projections no plot of evalkit uses: the 3D toolkit (``Axes3D = None``: no ``3d``
    projection) and the polar and geographic axes (classes that only carry their projection
    names; about 20 ms of the import). For a drawing helper only."""
    import types

    def module(name: str, **attrs: Any) -> Any:
        stub = types.ModuleType(name)
        stub.__dict__.update(attrs)
        return stub

    def axes(cls: str, name: str) -> type:
        return type(cls, (), {"name": name, "__doc__": "unavailable in a plot helper"})

    geo = {cls: axes(cls, cls[:-4].lower()) for cls in ("AitoffAxes", "HammerAxes", "LambertAxes", "MollweideAxes")}
    return {"mpl_toolkits.mplot3d": module("mpl_toolkits.mplot3d", Axes3D=None),
            "matplotlib.projections.geo": module("matplotlib.projections.geo", **geo),
            "matplotlib.projections.polar": module("matplotlib.projections.polar",
                                                   PolarAxes=axes("PolarAxes", "polar"))}


def _draw_loop(inbox: int, outbox: int, sibling_inbox: int = -1) -> None:
    """Child: report whether matplotlib imports, then draw the job sent. ``sibling_inbox``:
    the read end of the parent's pipe to the second drawer, which this process forks (the
    parent sends the job to both at once: :meth:`PlotHelper.draw`)."""
    try:
        plots = _ready_to_draw()
    except Exception:  # noqa: BLE001 - missing or broken matplotlib: the parent says so
        os.write(outbox, _UNAVAILABLE)
        return
    # The second drawer is forked now, with matplotlib imported and nothing else running
    # (``_fork`` closes this process's copy of ``sibling_inbox``: EOF there once the parent
    # closes its end).
    sibling = _fork(lambda i, o: _sibling_loop(i, o, inherited=(inbox, outbox)),
                    pipes=(sibling_inbox, -1, *os.pipe()) if sibling_inbox >= 0 else None)
    _children.append(sibling)  # ended with this process on SIGTERM (_on_sigterm)
    os.write(outbox, _READY)
    try:
        job = _read_msg(inbox)
    except EOFError:
        sibling.close(kill=True)
        _children.remove(sibling)
        return
    result, out_dir, class_hist, mine, theirs = job
    if theirs and sibling_inbox < 0:
        _write_msg(sibling.to_child, (result, out_dir, class_hist, mine, theirs))
    reply: Any = "ok"
    import warnings

    theirs_seen: list[tuple[str, type[Warning]]] = []
    # the sibling's warnings come back with its reply: a note both drawers issue (the
    # plot font lacks a character) reaches stderr once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            plots.write_plots(result, Path(out_dir), class_hist, only=mine)
            if theirs:
                sib_reply = _read_msg(sibling.from_child)
                if isinstance(sib_reply, tuple) and sib_reply[0] == "ok":
                    theirs_seen = sib_reply[1]
                elif sib_reply != "ok":
                    reply = sib_reply
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            reply = _failure(exc)
    seen = _unique([(str(w.message), w.category) for w in caught] + list(theirs_seen))
    if reply == "ok" and seen:  # the parent issues them, under its own filters (-q)
        reply = ("ok", seen)
    sibling.close(kill=not (reply == "ok" or (isinstance(reply, tuple) and reply[0] == "ok")))
    _children.remove(sibling)
    try:
        _write_msg(outbox, reply)
    except (pickle.PicklingError, TypeError, AttributeError):
        _write_msg(outbox, ("ok", [(m, UserWarning) for m, _c in reply[1]]))


def _unique(seen: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``(message, category)`` pairs without repeats, in first-seen order."""
    return list(dict.fromkeys(seen))


def _failure(exc: BaseException) -> Any:
    """A drawer's reply for an error: an :class:`~evalkit.errors.EvalkitError` itself (a PNG
    that cannot be written is an OutputError: the run fails with exit 4, never a placeholder),
    to be raised in the parent (:func:`_raise_failure`); anything else as text (the plot
    could not be drawn: the parent draws it itself)."""
    from .errors import EvalkitError

    if isinstance(exc, EvalkitError):
        return ("raise", exc)
    return f"{type(exc).__name__}: {exc}"


def _raise_failure(reply: Any) -> None:
    """Raise the EvalkitError a drawer sent back (:func:`_failure`), if it sent one."""
    if isinstance(reply, tuple) and reply and reply[0] == "raise":
        raise reply[1]


def _issue(seen: list[tuple[str, Any]]) -> None:
    """Issue in this process the warnings a drawer recorded (each once)."""
    import warnings

    from .plots import PlotFontWarning, warn_font_note

    for message, category in _unique(seen):
        if category is PlotFontWarning:
            warn_font_note(message, category)
        else:
            warnings.warn(message, category, stacklevel=3)


def _sibling_loop(inbox: int, outbox: int, inherited: tuple[int, ...]) -> None:
    for fd in inherited:  # the first helper's pipes to the parent are not this process's
        with contextlib.suppress(OSError):
            os.close(fd)
    try:  # the job of both drawers: this one draws the second list
        result, out_dir, class_hist, _first, names = _read_msg(inbox)
    except EOFError:
        return
    import warnings

    from . import plots

    reply: Any
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            plots.write_plots(result, Path(out_dir), class_hist, only=names)
            reply = "ok"
        except BaseException as exc:  # noqa: BLE001 - reported to the first helper
            reply = _failure(exc)
    if reply == "ok" and caught:  # the first helper issues them (once with its own)
        reply = ("ok", [(str(w.message), w.category) for w in caught])
    try:
        _write_msg(outbox, reply)
    except (pickle.PicklingError, TypeError, AttributeError):
        _write_msg(outbox, ("ok", [(m, UserWarning) for m, _c in reply[1]]))


def split_work(names: Sequence[str], costs: dict[str, float]) -> tuple[list[str], list[str]]:
    """Share the plots between the two drawers so that both finish about together: the
    longest first, each to the drawer with less work so far (LPT scheduling; ties to the
    first drawer). Each list keeps the order of ``names``; a name without a cost counts 1."""
    load = [0.0, 0.0]
    where: dict[str, int] = {}
    for name in sorted(names, key=lambda n: -costs.get(n, 1.0)):  # stable: ties in plan order
        k = 0 if load[0] <= load[1] else 1
        where[name] = k
        load[k] += costs.get(name, 1.0)
    return [n for n in names if where[n] == 0], [n for n in names if where[n] == 1]


class PlotHelper:
    """Forked plot drawers of one run (see the module docstring)."""

    def __init__(self, channel: _Channel, to_sibling: int = -1) -> None:
        self._ch: _Channel | None = channel
        self._to_sibling = to_sibling  # the pipe to the second drawer (-1: through the first)
        self._status: bytes | None = None
        self._pending = False

    def available(self) -> bool | None:
        """True: matplotlib is ready in the helper; False: it cannot be imported there;
        None: the helper is gone (draw in-process)."""
        if self._ch is None:
            return None
        if self._status is None:
            try:
                self._status = _read_exact(self._ch.from_child, 1)
            except OSError:
                self._status = None
            if self._status is None:
                self.close()
                return None
        return self._status == _READY

    def draw(self, result: Any, out_dir: Path, class_hist: dict | None,
             names: Sequence[str]) -> bool:
        """Start drawing ``names`` (file names of :func:`evalkit.plots.plot_plan`) into
        ``out_dir``; False if the helper cannot (then draw in-process)."""
        if not self.available() or self._ch is None:
            return False
        from .plots import plot_costs

        job = plot_input(result)
        mine, theirs = split_work(names, plot_costs(job))
        msg = (job, os.fspath(out_dir), class_hist, mine, theirs)
        try:  # the second drawer first: it starts as soon as the first (not after it)
            if theirs and self._to_sibling >= 0:
                _write_msg(self._to_sibling, msg)
            self._close_sibling_pipe()  # its only job, or none: it ends (the first waits for it)
            _write_msg(self._ch.to_child, msg)
        except OSError:
            self.close()
            return False
        self._pending = True
        return True

    def finish(self) -> str | None:
        """Wait for the drawing: None when every PNG was written, else why not (the parent
        then draws them itself). A PNG that could not be written raises its OutputError."""
        if not self._pending or self._ch is None:
            return "no drawing was started"
        self._pending = False
        try:
            reply = _read_msg(self._ch.from_child)
        except (EOFError, OSError) as exc:
            reply = f"plot helper ended: {exc}"
        self.close()
        _raise_failure(reply)  # a PNG that cannot be written: the run's output error
        if isinstance(reply, tuple) and reply[0] == "ok":  # the drawers' warnings, once each
            _issue(reply[1])
            return None
        return None if reply == "ok" else str(reply)

    def _close_sibling_pipe(self) -> None:
        if self._to_sibling >= 0:
            with contextlib.suppress(OSError):
                os.close(self._to_sibling)
            self._to_sibling = -1

    def close(self) -> None:
        """End the helpers (killed if still drawing); idempotent."""
        self._close_sibling_pipe()
        if self._ch is not None:
            self._ch.close(kill=True)
            self._ch = None


_early: PlotHelper | None = None


def start_early() -> None:
    """Fork the plot helper now, for the next :func:`start` of this process to take.

    For the CLI, which calls this as soon as it knows the plots are wanted (after importing
    pandas, which the helper then shares, and before the rest of the library): the helper's
    import of matplotlib overlaps the parent's remaining imports and set-up instead of its
    first batches. Must run before any thread exists, like :func:`start`.
    """
    global _early
    with _interrupts_deferred():  # forked and kept, or neither
        if _early is None:
            _early = _new_helper()


def discard_early() -> None:
    """End a helper :func:`start_early` forked that no run took (the run failed before),
    and any helper an interrupt left unreaped (killed, then reaped)."""
    global _early
    helper, _early = _early, None
    if helper is not None:
        helper.close()
    for pid in list(_forked):
        _Channel(pid, -1, -1).close(kill=True)


def start() -> PlotHelper | None:
    """Fork a plot helper now (or take the one :func:`start_early` forked), or None where
    that is not possible (no ``os.fork``)."""
    global _early
    helper, _early = _early, None
    return helper if helper is not None else _new_helper()


def _new_helper() -> PlotHelper | None:
    if not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        return None  # no fork, or one core: drawing elsewhere would only compete with the run
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return None
    try:
        sib_r, sib_w = os.pipe()  # the parent's pipe to the drawer the first one forks
    except OSError:
        return None
    try:
        channel = _fork(lambda i, o: _draw_loop(i, o, sib_r), child_closes=[sib_w])
    except OSError:
        os.close(sib_w)
        return None
    finally:
        os.close(sib_r)
    return PlotHelper(channel, sib_w)


def plot_input(result: Any) -> Any:
    """What :func:`evalkit.plots.write_plots` reads of a result, and nothing else (the
    per-row table of an in-memory input stays in the parent)."""
    from types import SimpleNamespace

    from .plots import reliability_bins

    return SimpleNamespace(
        groups=result.groups,
        groupings=tuple(result.groupings),
        layout=SimpleNamespace(classes=tuple(getattr(result.layout, "classes", ()) or ())),
        metadata={k: (getattr(result, "metadata", None) or {}).get(k)
                  for k in ("input", "confidence", "calibration_bins")},
        overall=result.overall,
        calibration=reliability_bins(result),
    )


# -- a pool of drawing processes for many independent figures (evalkit history) ----------------


def _pool_main(inbox: int, outbox: int, siblings: Sequence[tuple[int, int]], nice: int = 0) -> None:
    """The first helper of a pool: lower its priority by ``nice`` (the helpers it forks
    inherit it), import matplotlib (:func:`_ready_to_draw`), fork the
    other helpers from this process (each gets its own pipes to the parent, ``siblings``:
    their helper ends), so matplotlib is imported once for all of them, then serve jobs
    (:func:`_serve_jobs`). Without matplotlib every helper answers unavailable."""
    if nice > 0:
        with contextlib.suppress(OSError):
            os.nice(nice)
    try:
        _ready_to_draw()
    except Exception:  # noqa: BLE001 - missing or broken matplotlib: the parent draws itself
        for fd in (outbox, *(up for _down, up in siblings)):
            with contextlib.suppress(OSError):
                os.write(fd, _UNAVAILABLE)
        return
    for k, (down, up) in enumerate(siblings):
        later = [fd for pair in siblings[k + 1:] for fd in pair]  # still open here, not theirs
        _children.append(_fork(_serve_jobs, pipes=(down, -1, -1, up), child_closes=[inbox, outbox, *later]))
    _serve_jobs(inbox, outbox)
    for ch in _children:  # the parent closed every pipe: the siblings are ending too
        with contextlib.suppress(OSError):
            os.waitpid(ch.pid, 0)


def _serve_jobs(inbox: int, outbox: int) -> None:
    """A pool helper with matplotlib imported: say ready, then run each job
    ``(module, function, args)`` sent until EOF, answering ``("ok", value)`` or
    ``("error", text)`` for each."""
    import importlib

    os.write(outbox, _READY)
    while True:
        try:
            module, function, args = _read_msg(inbox)
        except EOFError:
            return
        import warnings

        # warnings (matplotlib's missing glyphs...) go back to the parent, which shows them
        # or not as its own filters say (this process inherited them at the fork)
        with warnings.catch_warnings(record=True) as caught:
            try:
                reply: Any = ("ok", getattr(importlib.import_module(module), function)(*args))
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                failure = _failure(exc)
                reply = failure if isinstance(failure, tuple) else ("error", failure)
        seen = [(str(w.message), w.category) for w in caught]
        try:
            _write_msg(outbox, (*reply, seen))
        except (pickle.PicklingError, TypeError, AttributeError):
            _write_msg(outbox, (*reply, [(m, UserWarning) for m, _c in seen]))


class JobPool:
    """Forked drawing processes that run independent jobs while the parent works on: jobs go
    round-robin, each through a sender thread (a pipe never blocks the parent; the threads
    start with the first job), and
    :meth:`results` returns every job's value in submission order. A job a helper could not
    run comes back as ``None`` in :attr:`failed` order, for the parent to run itself."""

    def __init__(self, channels: list[_Channel]) -> None:
        import queue
        import threading

        self._ch = channels
        self._queues: list[Any] = [queue.Queue() for _ in channels]
        self._jobs: list[tuple[int, tuple[str, str, tuple[Any, ...]]]] = []
        self._ready = [False] * len(channels)
        # started at the first job (or :meth:`results`): until then this process may fork
        # again (evalkit history forks its workers after the helpers)
        self._threads = [threading.Thread(target=self._send, args=(k, self._queues[k], channels[k]), daemon=True)
                         for k in range(len(channels))]
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self._started = True
            for t in self._threads:
                t.start()

    def fds(self) -> tuple[int, ...]:
        """This process's ends of the helpers' pipes (a process forked later closes them)."""
        return tuple(fd for ch in self._ch for fd in (ch.to_child, ch.from_child))

    def _send(self, k: int, jobs: Any, ch: _Channel) -> None:
        try:  # the helper imports matplotlib meanwhile: wait for it here, not in the parent
            ready = _read_exact(ch.from_child, 1) == _READY
        except OSError:
            ready = False
        self._ready[k] = ready
        while True:
            job = jobs.get()
            if job is None:
                return
            if not self._ready[k]:
                continue  # no helper: the parent runs its jobs
            try:
                _write_msg(ch.to_child, job)
            except OSError:
                self._ready[k] = False  # the helper is gone: its jobs are redone by the parent

    def submit(self, module: str, function: str, *args: Any) -> None:
        """Queue ``module.function(*args)`` on the next helper."""
        self._start()
        k = len(self._jobs) % len(self._ch)
        job = (module, function, args)
        self._jobs.append((k, job))
        self._queues[k].put(job)

    def results(self) -> list[tuple[bool, Any]]:
        """``(True, value)`` of every job in submission order, or ``(False, job)`` for a job no
        helper ran (the caller runs it); an error raised by a job is raised here as
        ``RuntimeError``, a warning issued by a job is issued here again. Ends the helpers."""
        self._start()
        for q in self._queues:
            q.put(None)
        self._queues = []
        for t in self._threads:
            t.join()
        out: list[tuple[bool, Any]] = []
        shown: set[tuple[str, Any]] = set()
        alive = list(self._ready)
        for k, job in self._jobs:
            reply: Any = None
            if alive[k]:
                try:
                    reply = _read_msg(self._ch[k].from_child)
                except (EOFError, OSError):
                    alive[k] = False
            if reply is None:
                out.append((False, job))
            elif reply[0] in ("error", "raise"):
                self.close()
                _raise_failure(reply)
                raise RuntimeError(reply[1])
            else:
                import warnings

                fresh = [w for w in reply[2] if w not in shown]  # once, not once per job
                shown.update(fresh)
                for message, category in fresh:
                    if category.__name__ == "PlotFontWarning":
                        from .plots import warn_font_note

                        warn_font_note(message, category)
                    else:
                        warnings.warn(message, category, stacklevel=2)
                out.append((True, reply[1]))
        self.close()
        return out

    def close(self) -> None:
        """End the helpers (killed if still busy) and the sender threads; idempotent."""
        for q in self._queues:
            q.put(None)
        self._queues = []
        for ch in self._ch:
            ch.close(kill=True)
        self._ch = []


def start_pool(n: int, nice: int = 0) -> JobPool | None:
    """Fork ``n`` drawing helpers now (call before any thread of the run exists), or None
    where that is not possible or useful (no ``os.fork``, one core, no matplotlib). The
    first imports matplotlib and forks the others (:func:`_pool_main`); each has its own
    pipes to this process. ``nice``: how much lower than this process the helpers run
    (``os.nice``), so that they draw on the cores this process leaves idle."""
    if n < 1 or not hasattr(os, "fork") or (os.cpu_count() or 1) < 2:
        return None
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return None
    pipes: list[tuple[int, int, int, int]] = []
    try:
        for _ in range(n):
            pipes.append((*os.pipe(), *os.pipe()))
        siblings = [(down_r, up_w) for down_r, _dw, _ur, up_w in pipes[1:]]
        theirs = [fd for down_r, down_w, up_r, up_w in pipes[1:] for fd in (down_w, up_r)]
        first = _fork(lambda i, o: _pool_main(i, o, siblings, nice), pipes=pipes[0], child_closes=theirs)
    except OSError:
        for fd in (fd for p in pipes for fd in p):
            with contextlib.suppress(OSError):
                os.close(fd)
        return None
    channels = [first]
    for down_r, down_w, up_r, up_w in pipes[1:]:
        os.close(down_r)  # the first helper holds these for the helper it forks
        os.close(up_w)
        channels.append(_Channel(None, down_w, up_r))
    return JobPool(channels)


# -- forked workers of one command (evalkit history builds its groupings in them) -------------


class Worker:
    """A process :func:`fork_worker` forked, running ``work(send)``: every ``send(obj)`` there
    pickles ``obj`` to this process, where :meth:`receive` returns them in order (read on a
    thread from :meth:`listen` or the first :meth:`receive` on: a worker never waits for the
    parent to read).
    :meth:`close` ends it (SIGTERM, then SIGKILL after :data:`TERM_GRACE_S`) and reaps it."""

    #: What a worker's messages end with once it is gone (see :meth:`listen`).
    GONE = object()

    def __init__(self, channel: _Channel) -> None:
        self._ch: _Channel | None = channel
        self._queue: Any = None
        self._thread: Any = None

    def fds(self) -> tuple[int, ...]:
        """This process's ends of the worker's pipes (a process forked later closes them)."""
        return () if self._ch is None else (self._ch.to_child, self._ch.from_child)

    @property
    def pid(self) -> int | None:
        return None if self._ch is None else self._ch.pid

    def kill(self) -> None:
        """SIGKILL the worker now (it runs nothing more, not even a stopped one resumed:
        nothing it would still write can land after this); :meth:`close` reaps it."""
        if self._ch is not None and self._ch.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(self._ch.pid, signal.SIGKILL)

    def cpu_ticks(self) -> int | None:
        """The CPU time the worker has used so far (all its threads, in clock ticks), or None
        where that cannot be read (no ``/proc``; the worker gone). A worker whose count stays
        put while it sends nothing makes no progress (stopped, frozen, deadlocked)."""
        if self._ch is None or self._ch.pid is None:
            return None
        try:
            with open(f"/proc/{self._ch.pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return None
        fields = stat[stat.rfind(b")") + 2:].split()
        try:
            return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of stat)
        except (IndexError, ValueError):
            return None

    def receive(self) -> Any:
        """The next object the worker sent; EOFError once it is gone without sending more
        (it returned, raised, was killed, or sent what cannot be read back)."""
        if self._ch is None:
            raise EOFError("worker closed")
        self.listen()
        msg = self._queue.get()
        if msg is Worker.GONE:
            self._queue.put(msg)  # and for every later call
            raise EOFError("worker ended")
        return msg

    def listen(self, sink: Any = None) -> None:
        """Start reading what the worker sends (on a thread; once all forks are done: a
        process forked later would not have the thread). ``sink``: a ``queue.Queue`` shared
        by several workers, which then gets ``(worker, message)``, and ``(worker,
        Worker.GONE)`` once the worker is gone (:meth:`receive` is then not used)."""
        if self._queue is None and self._ch is not None:
            import queue
            import threading

            self._queue = sink if sink is not None else queue.Queue()
            tag = self if sink is not None else None
            self._thread = threading.Thread(target=self._read, args=(self._ch.from_child, self._queue, tag),
                                            daemon=True)
            self._thread.start()

    @staticmethod
    def _read(fd: int, out: Any, tag: Any = None) -> None:
        while True:
            try:
                msg = _read_msg(fd)
            except BaseException:  # noqa: BLE001 - EOF, a closed pipe, a message that does not unpickle
                out.put(Worker.GONE if tag is None else (tag, Worker.GONE))
                return
            out.put(msg if tag is None else (tag, msg))

    def close(self) -> None:
        """End the worker (killed if still running) and reap it; idempotent."""
        ch, self._ch = self._ch, None
        if ch is None:
            return
        # the process first (its end of the pipe closes: the reading thread sees EOF and
        # ends), then this process's read end: never closed under a thread reading it
        _Channel(ch.pid, ch.to_child, -1).close(kill=True)
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(OSError):
            os.close(ch.from_child)


def fork_worker(work: Any, closes: Sequence[int] = ()) -> Worker | None:
    """Fork a process running ``work(send)`` now (call it before any thread exists, as
    :func:`start_pool`), or None where that is not possible (no ``os.fork``). ``closes``:
    descriptors the worker must not keep (other workers' pipes). Like the drawing helpers, a
    worker ignores Ctrl-C (the parent ends it, :meth:`Worker.close`) and dies with the parent;
    it ends with ``os._exit``: nothing the parent set up is cleaned up twice."""
    if not hasattr(os, "fork"):
        return None

    def main(_inbox: int, outbox: int) -> None:
        work(lambda obj: _write_msg(outbox, obj))

    try:
        return Worker(_fork(main, child_closes=closes))
    except OSError:
        return None
