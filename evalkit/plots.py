"""PNG plots for the report (optional extra ``evalkit[plot]``, which installs matplotlib).

* ``loss_by_class.png``: per-class loss distribution on a log axis, drawn from per-class
  histograms (:func:`class_histograms`) so the per-row losses need not be in memory; without
  them, a box-like summary from the class table's min / quantiles / max.
* ``mean_loss_<file_stem>.png`` (``mean_loss_by_region.png``...): mean loss per group with
  95% confidence intervals, one per grouping that has columns.

matplotlib is imported lazily and only through its object-oriented API with the Agg canvas
(never ``pyplot``), so no GUI backend is touched and no global figure state is kept.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .columns import history_key_column
from .disparity import group_label
from .display import MAX_PLOT_GROUPS, bounded_groups, mean_column, row_mean
from .errors import EvalkitWarning, OutputError
from .escape import MISSING_KEY, fmt_key, is_missing, terminal
from .escape import distinct_shortenings as _distinct_truncations
from .escape import shorten as _truncate

#: How to get plots when matplotlib is missing (for the report).
INSTALL_HINT = "pip install 'evalkit[plot]'"

MAX_CLASSES = 30  # classes drawn in loss_by_class.png (the highest and lowest mean loss when more)
MAX_GROUPS = MAX_PLOT_GROUPS  # groups drawn per mean-loss chart (likewise)
MAX_RELIABILITY_PANELS = 6  # reliability panels: overall and up to five splits
DISPLAY_BINS = 60  # display bins of the class histograms
MAX_AXIS_LABEL = 20  # a vertical axis label longer than this is truncated (fits a one-group figure)
#: A mean-loss chart's x axis ends at most this many times the longest bar (or the overall
#: mean): confidence intervals reaching further run off it, marked (see _plot_group_means).
CI_ROOM = 2.0
WIDTH = 8.0  # inches
DPI = 110

_BAR = "#4C72B0"
_FILL = "#4C72B0"
_MEAN = "#C44E52"
_REF = "#555555"


def plots_available() -> bool:
    """Whether matplotlib can be imported (the ``evalkit[plot]`` extra is installed)."""
    return plots_unavailable() is None


def plots_unavailable() -> str | None:
    """Why no plot can be drawn, or None when matplotlib imports: ``"matplotlib is not
    installed"``, or ``"matplotlib failed to import (RuntimeError: ...)"`` for an installed
    one that is broken (named apart: installing the extra does not help that)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "matplotlib":
            return "matplotlib is not installed"
        return f"matplotlib failed to import ({type(exc).__name__}: {_first_line(exc)})"
    except Exception as exc:  # noqa: BLE001 - a broken installation: named, not raised
        return f"matplotlib failed to import ({type(exc).__name__}: {_first_line(exc)})"
    return None


def note_no_plots(result: Any) -> None:
    """Plots were asked for and none could be drawn: say why (matplotlib absent, or installed
    and failing to import), once, on stderr and in ``metadata.plots_off`` (rt-final8 F12:
    every plot was dropped silently and a broken matplotlib read "not installed"). The one
    home of that warning for every command: an evaluate result (``result.warnings``) keeps it
    as a run warning (``summary.json`` ``metadata.warnings``, report.md); a history result
    (``result.notes``) as a note of history.md and history.json."""
    import warnings

    from .errors import EvalkitWarning, option

    why = plots_unavailable()
    if why is None or result.metadata.get("plots_off") == why:
        return
    result.metadata["plots_off"] = why
    fix = f"install it with {INSTALL_HINT}" if why.endswith("not installed") else "repair or reinstall it"
    w = EvalkitWarning(f"no plots were drawn: {why}; {fix}, or use {option('plots', False)}")
    if hasattr(result, "warnings"):
        result.warnings.append(w)
        result.metadata.setdefault("warnings", []).append(w.file_text())
    else:
        result.notes.append(str(w))
    warnings.warn(w, stacklevel=4)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


# --------------------------------------------------------------------------- #
# Histogram data
# --------------------------------------------------------------------------- #


def class_histograms(group_stats: Any, n_bins: int = DISPLAY_BINS) -> dict[str, Any]:
    """Per-group loss histograms from a :class:`evalkit.aggregate.GroupStats`, coarsened.

    Returns ``{"edges": array (m+1,), "counts": {name: array (m,)}}`` with ``m <= n_bins``
    log-spaced bins in loss units.  The fine histogram (about 9.5k bins) is trimmed to the
    range any group occupies, then consecutive fine bins are summed, so each group's counts
    add up to its row count.  Names are the group key (several key columns joined with
    ``", "``), in the order of the finalized table.
    """
    hist = group_stats.hist
    g = group_stats.n_groups
    nb = hist.n_bins
    fine_edges = np.exp(hist._log_lo + np.arange(nb + 1) * hist._log_gamma)
    fine_edges[-1] = max(fine_edges[-1], hist.hi)
    # Only the occupied (group, bin) cells: 50k classes never build a 50k x 9.5k table.
    slot, fine_bin, count = group_stats._bins.entries()
    if len(fine_bin):
        first, last = int(fine_bin.min()), int(fine_bin.max()) + 1
    else:
        first, last = 0, nb
    span = last - first
    step = max(1, math.ceil(span / max(1, int(n_bins))))
    m = math.ceil(span / step)
    coarse = np.zeros((g, m), dtype=np.int64)
    np.add.at(coarse, (slot, (fine_bin - first) // step), count)
    idx = np.minimum(first + np.arange(m + 1) * step, last)
    edges = fine_edges[idx]

    rank = group_stats._index.sort_rank()
    order = np.empty(g, dtype=np.int64)
    order[rank] = np.arange(g)
    keys = group_stats._index.keys
    counts: dict[str, np.ndarray] = {}
    for i in order.tolist():
        counts[_hist_name(keys[i])] = coarse[i]
    return {"edges": edges, "counts": counts}


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


class PlotFontWarning(UserWarning):
    """Some labels of a plot use characters its font lacks (drawn as boxes): issued once
    per :func:`write_plots` / :func:`write_history_plot` call instead of matplotlib's
    warning per missing glyph (see :func:`font_note`). Cosmetic, so not an
    :class:`~evalkit.errors.EvalkitWarning`: ``-q`` (``quiet_warnings``) silences it like
    the library warnings it replaces."""


class PlotFailedWarning(EvalkitWarning):
    """A plot could not be drawn (any error while drawing it: a label matplotlib cannot
    lay out, a bug): the rest of the report is written all the same, that PNG says so in
    place of the figure, and this warning names it (shown with ``-q`` too: a nightly log
    must say that a figure is missing) and is a run warning of the report
    (:func:`plot_warnings_kept`). A PNG that cannot be *written* (disk full, a file-size
    limit) is no such case: it is the run's :class:`~evalkit.errors.OutputError` (exit 4),
    as for every other file of the report."""


def plot_write_error(path: Any, exc: OSError) -> OutputError:
    """The error of a PNG that could not be written: the report cannot be complete."""
    name = getattr(path, "name", path)
    return OutputError(f"{terminal(Path(name).name)}: cannot write the plot ({exc.strerror or exc}); "
                       "no report was written and any previous report is intact")


@contextlib.contextmanager
def plot_warnings_kept(result: Any) -> Any:
    """Keep every :class:`PlotFailedWarning` issued in the block (by :func:`write_plots` in
    this process, or by the drawing helpers, whose warnings :meth:`PlotHelper.finish
    <evalkit.plot_process.PlotHelper.finish>` issues here) as a run warning of ``result``
    (``result.warnings``, ``metadata.warnings``: report.md and summary.json, written after
    the block), each once; every warning is then issued as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    known = {str(w) for w in result.warnings}
    for w in caught:
        if isinstance(w.message, PlotFailedWarning) and str(w.message) not in known:
            known.add(str(w.message))
            result.warnings.append(w.message)
            result.metadata.setdefault("warnings", []).append(w.message.file_text())
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)


def _plot_failed(path: Path, exc: BaseException) -> None:
    """In place of a figure that could not be drawn: a PNG saying so (or none, if even
    that fails) and a :class:`PlotFailedWarning` naming it."""
    detail = (str(exc).strip().splitlines() or [""])[0][:200]
    reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
    try:
        fig = _new_figure(2)
        fig.text(0.5, 0.5, f"{path.name} could not be drawn\n{reason}", ha="center", va="center",
                 fontsize=10, wrap=True, parse_math=False, usetex=False)
        _write_png(fig, path)
    except OutputError:  # not written: the run's output error, not this figure's
        raise
    except Exception:  # noqa: BLE001 - the warning says it all; no file rather than half of one
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    warnings.warn(PlotFailedWarning(f"plot {path.name} could not be drawn ({reason}); the rest of the "
                                    "report is written"), stacklevel=3)


def warn_font_note(message: str = "", category: type[Warning] | None = None) -> None:
    """Issue :class:`PlotFontWarning` as one line, ``evalkit: PlotFontWarning: ...``,
    without a source line of evalkit (``warn_explicit`` with no file to quote)."""
    warnings.warn_explicit(message or FONT_NOTE, category or PlotFontWarning, "evalkit", 0,
                           module="evalkit.plots")


#: The text of :class:`PlotFontWarning`.
FONT_NOTE = "some plot labels use characters the plot font lacks (shown as boxes)"

#: matplotlib's warning for one glyph its font lacks ("Glyph 26085 (...) missing from
#: font(s) DejaVu Sans.", from the Agg renderer or its text layout).
_MISSING_GLYPH = re.compile(r"^Glyph \d+ .*missing from (?:current )?font")


@contextlib.contextmanager
def font_note() -> Any:
    """Draw inside: matplotlib's missing-glyph warnings (one per character, with a source
    line of this module) become one :class:`PlotFontWarning` at the end; any other warning
    is issued again as it was."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    missing = False
    for w in caught:
        if issubclass(w.category, UserWarning) and _MISSING_GLYPH.match(str(w.message)):
            missing = True
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
    if missing:
        warn_font_note()


#: Every text of an evalkit figure is literal: group and class names, paths and titles come
#: from the user's data, where ``$5-$10`` is a price band, not mathtext (matplotlib would
#: typeset it as math, eating the dollars, and fail on ``$\\foo$``), and LaTeX is never run.
_LITERAL_TEXT = {"text.parse_math": False, "text.usetex": False}


#: evaluate's figures draw their text unhinted (FreeType's outlines as they are, not fitted
#: to the pixel grid by the font's hinting program): the same text, anti-aliased a little
#: softer, a tenth less drawing time (the glyphs of every new string are loaded and
#: rendered once with hinting: most of the figures' text cost). Same size, same positions
#: to within a fraction of a pixel.
_UNHINTED_TEXT = {"text.hinting": "none"}


@contextlib.contextmanager
def literal_text(hinted: bool = True) -> Any:
    """Draw inside: every text created is drawn as written (:data:`_LITERAL_TEXT`), whatever
    the user's matplotlibrc says, and unhinted unless ``hinted`` (:data:`_UNHINTED_TEXT`);
    matplotlib's settings are restored after."""
    from matplotlib import rc_context

    with rc_context(_LITERAL_TEXT if hinted else {**_LITERAL_TEXT, **_UNHINTED_TEXT}):
        yield


def _value_label(v: Any) -> str:
    """The lookup name of a class in :func:`class_histograms` (not a label: see
    :func:`_key_label`)."""
    if is_missing(v):
        return MISSING_KEY
    if isinstance(v, float | np.floating):
        return f"{float(v):g}"
    return str(v)


def _hist_name(key: Sequence[Any]) -> str:
    return ", ".join(_value_label(v) for v in key)


def _key_label(key: Sequence[Any]) -> str:
    """A group's label in a plot: each key value as report.md and the terminal show it
    (:func:`evalkit.escape.fmt_key`: a null key ``∅``, the text "∅" and the empty string
    quoted), control characters as visible escapes (:func:`evalkit.escape.terminal`: a tab
    reads ``\\t``); several key columns joined by ``", "``."""
    return ", ".join(terminal(fmt_key(v)) for v in key)


def _input_name(result: Any) -> str:
    name = str((getattr(result, "metadata", None) or {}).get("input") or "")
    if len(name) > 60:
        name = "\u2026" + name[-59:]
    return name


def _height(rows: int) -> float:
    return min(12.0, max(2.8, 1.5 + 0.26 * rows))


def _fmt_loss(x: float, _pos: Any = None) -> str:
    if x <= 0 or not math.isfinite(x):
        return ""
    if x >= 1:
        return f"{x:g}"
    return f"{x:.0e}".replace("e-0", "e-") if x < 1e-3 else f"{x:g}"


def _fmt_count(n: float) -> str:
    return f"n={int(n):,}"


def _canvas(fig: Any) -> Any:
    """Attach the Agg canvas of :func:`_canvas_class` to ``fig``."""
    return _canvas_class()(fig)


_CANVAS: Any = None
#: Entries kept in each text cache of :func:`_canvas_class` (cleared when full).
TEXT_CACHE_SIZE = 20_000


def _canvas_class() -> Any:
    """matplotlib's Agg canvas with a renderer that remembers text work across drawings
    and figures of this process, for the same pixels: a string's measured size and glyph
    layout (per font, size, dpi, hinting), and each glyph's anti-aliased bitmap per
    sub-pixel position (FreeType renders a glyph moved by whole pixels as the same bitmap,
    moved), so repeated labels (tick labels, axis labels, a history's dates and titles)
    are laid out and rendered once. The PNGs are those of matplotlib's own canvas (tested).
    """
    global _CANVAS
    if _CANVAS is not None:
        return _CANVAS
    from matplotlib import ft2font
    from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg, get_hinting_flag

    if not (hasattr(ft2font.FT2Font, "_layout") and hasattr(ft2font.FT2Font, "_render_glyph")
            and hasattr(ft2font, "RenderMode") and hasattr(RendererAgg, "_draw_text_glyphs_and_boxes")):
        _CANVAS = FigureCanvasAgg  # an older matplotlib, which draws text otherwise
        return _CANVAS
    Renderer = _caching_renderer(RendererAgg, get_hinting_flag, ft2font.RenderMode)

    class Canvas(FigureCanvasAgg):  # type: ignore[misc, valid-type]
        def get_renderer(self) -> Any:
            w, h = self.get_width_height(physical=True)
            key = w, h, self.figure.dpi
            if self._lastKey != key:
                self.renderer = Renderer(w, h, self.figure.dpi)
                self._lastKey = key
            return self.renderer

    _CANVAS = Canvas
    return Canvas


def _caching_renderer(RendererAgg: Any, get_hinting_flag: Any, RenderMode: Any) -> Any:  # noqa: N803
    """The Agg renderer of :func:`_canvas_class` (its text caches live with the class)."""
    sizes: dict[tuple[Any, ...], tuple[float, float, float]] = {}
    heights: dict[tuple[Any, ...], tuple[float | None, float | None, float | None]] = {}
    layouts: dict[tuple[Any, ...], list[tuple[Any, int, float, float]]] = {}
    glyphs: dict[tuple[Any, ...], tuple[Any, int, int, Any]] = {}
    metrics: dict[tuple[Any, ...], tuple[int, int, int]] = {}  # per glyph: (y min, y max, advance)

    def room(cache: dict) -> dict:
        if len(cache) >= TEXT_CACHE_SIZE:
            cache.clear()
        return cache

    layout = _cached_layout(layouts, room)

    class Renderer(RendererAgg):  # type: ignore[misc, valid-type]
        def _get_font_height_metrics(self, prop: Any) -> tuple[float | None, float | None, float | None]:
            # Text._get_layout asks a renderer that has this method for the font's ascent,
            # descent and line gap; without it, it reads them from the font's tables (what
            # is done here, once per font properties and dpi)
            key = (prop, self.dpi)
            got = heights.get(key)
            if got is None:
                got = room(heights)[(prop.copy(), self.dpi)] = _font_height_metrics(prop, self.dpi)
            return got

        def get_text_width_height_descent(self, s: str, prop: Any, ismath: Any) -> Any:
            if ismath:
                return super().get_text_width_height_descent(s, prop, ismath)
            font = self._prepare_font(prop)
            size, flags = prop.get_size_in_points(), get_hinting_flag()
            key = (font, size, self.dpi, s, flags)
            got = sizes.get(key)
            if got is None:
                try:
                    got = _laid_out_size(font, size, self.dpi, s, flags, layout, metrics, room)
                except (TypeError, AttributeError):  # another matplotlib's internals: its own way
                    got = None
                if got is None:
                    got = super().get_text_width_height_descent(s, prop, ismath)
                room(sizes)[key] = got
            return got

        def draw_text(self, gc: Any, x: float, y: float, s: str, prop: Any, angle: float,
                      ismath: Any = False, mtext: Any = None) -> None:
            if ismath or not gc.get_antialiased():
                return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
            font = self._prepare_font(prop)
            features = getattr(mtext, "get_fontfeatures", lambda: None)()
            language = getattr(mtext, "get_language", lambda: None)()
            size, flags = prop.get_size_in_points(), get_hinting_flag()
            key = (font, size, self.dpi, s, flags, None if features is None else tuple(features),
                   language if isinstance(language, str | None) else repr(language))
            try:
                items = layout(key, features, language)
            except (TypeError, AttributeError):  # another matplotlib's internals: its own way
                return super().draw_text(gc, x, y, s, prop, angle, ismath, mtext)
            room(glyphs)
            _draw_glyphs(self, gc, x, y, angle, size, flags, items, glyphs, RenderMode)
            return None

    return Renderer


def _cached_layout(layouts: dict, room: Any) -> Any:
    """``layout(key, features, language)``: the glyphs of ``key`` = (font, size, dpi, text,
    flags, ...) as FreeType lays them out (``FT2Font._layout``; the font's size set),
    ``(font, index, x, y)`` each, remembered in ``layouts`` (``room`` keeps it bounded)."""
    def layout(key: tuple[Any, ...], features: Any, language: Any) -> list[tuple[Any, int, float, float]]:
        items = layouts.get(key)
        if items is None:
            font, _size, _dpi, s, flags = key[:5]
            laid = font._layout(s, flags=flags, features=features, language=language)
            items = room(layouts)[key] = [(it.ft_object, it.glyph_index, it.x, it.y) for it in laid]
        return items

    return layout


def _laid_out_size(font: Any, size: float, dpi: float, s: str, flags: Any, layout: Any, metrics: dict,
                   room: Any) -> tuple[float, float, float] | None:
    """``(width, height, descent)`` of ``s`` in pixels as ``RendererAgg`` measures it
    (``FT2Font.set_text``: the pen's end after the last glyph's advance; the height and
    descent of the union of the glyphs' boxes), computed from the glyph layout the drawing
    uses (``layout(key, None, None)``, shaped once for both) and each glyph's box and
    advance (``metrics``, per font, size, dpi, glyph and flags): FreeType shapes and loads a
    string's glyphs once instead of twice. None (measure with ``set_text``) for the empty
    string and for a glyph the font lacks (drawn from a fallback font; ``set_text`` warns
    about it). The same numbers as ``set_text`` (tested)."""
    items = layout((font, size, dpi, s, flags, None, None), None, None)  # draw_text's key, no features
    if not items:
        return None
    lo, hi = math.inf, -math.inf
    advance = 0
    for ft, index, _x, y in items:
        if ft is not font or not index:
            return None
        got = metrics.get((ft, size, dpi, index, flags))
        if got is None:
            glyph = ft.load_glyph(index, flags)
            _x0, y0, _x1, y1 = glyph.bbox
            got = room(metrics)[(ft, size, dpi, index, flags)] = (y0, y1, glyph.horiAdvance)
        y0, y1, advance = got
        pen_y = round(y * 64)
        lo, hi = min(lo, pen_y + y0), max(hi, pen_y + y1)
    width = round(items[-1][2] * 64) + advance
    return width / 64.0, (hi - lo) / 64.0, -lo / 64.0


def _draw_glyphs(renderer: Any, gc: Any, x: float, y: float, angle: float, size: float, flags: Any,
                 items: list[tuple[Any, int, float, float]], glyphs: dict, RenderMode: Any) -> None:  # noqa: N803
    """Draw laid-out glyphs ``(font, index, dx, dy)`` at ``(x, y)`` as matplotlib's
    ``RendererAgg._draw_text_glyphs_and_boxes`` does, each glyph's bitmap taken from (or
    put in) ``glyphs`` by its sub-pixel offset."""
    import math

    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    matrix = (0x10000 * np.array([[cos, -sin], [sin, cos]])).round().astype(int)
    rotation = tuple(matrix.ravel().tolist())
    height, dpi = renderer.height, renderer.dpi
    for ft, index, dx, dy in items:
        px = round(0x40 * (x + dx * cos - dy * sin))
        py = round(0x40 * (height - y + dx * sin + dy * cos))
        gkey = (ft, size, dpi, index, flags, rotation, px & 63, py & 63)
        got = glyphs.get(gkey)
        if got is None:
            ft.set_size(size, dpi)
            ft._set_transform(matrix, [px, py])
            bitmap = ft._render_glyph(index, flags, RenderMode.NORMAL)
            got = glyphs[gkey] = (bitmap.buffer, bitmap.left - (px >> 6), bitmap.top - (py >> 6), bitmap)
        buffer, left, top, _ = got
        renderer._renderer.draw_text_image(buffer, left + (px >> 6),
                                           int(height) - (top + (py >> 6)) + buffer.shape[0], 0, gc)


def _font_height_metrics(prop: Any, dpi: float) -> tuple[float | None, float | None, float | None]:
    """``(ascent, descent, line gap)`` in pixels of the font of ``prop`` at ``dpi``, read as
    matplotlib's ``Text._get_layout`` reads them (OS/2 table, else hhea); Nones when the font
    has neither (the text is then measured instead)."""
    from matplotlib.font_manager import fontManager, get_font

    font = get_font(fontManager._find_fonts_by_props(prop))
    for table_name, linegap_key, ascent_key, descent_key in (
            ("OS/2", "sTypoLineGap", "sTypoAscender", "sTypoDescender"),
            ("hhea", "lineGap", "ascent", "descent")):
        table = font.get_sfnt_table(table_name)
        if table is None:
            continue
        fontsize = prop.get_size_in_points()
        units_per_em = font.get_sfnt_table("head")["unitsPerEm"]
        scale = 1 / units_per_em * fontsize * dpi / 72
        return (table[ascent_key] * scale, -table[descent_key] * scale, table[linegap_key] * scale)
    return None, None, None


def _new_figure(rows: int) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, _height(rows)), dpi=DPI)
    _canvas(fig)
    return fig


def _write_png(fig: Any, path: Path | Any) -> None:
    """Draw the figure and write it as PNG: its pixels (what ``savefig`` writes) without a
    timestamp or any other metadata (the bytes depend only on the data and matplotlib),
    the figure's dpi recorded (``pHYs``, as ``savefig``).

    Encoded here rather than by ``savefig`` (Pillow): rows unfiltered (Pillow tries every
    PNG filter on every row) and zlib level 1, RGB when every pixel is opaque (always, but
    for a transparent figure face): about half of Pillow's encoding time at level 1, files
    of about the same size. ``path`` may be a binary file object.
    """
    import struct
    import zlib

    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    h, w = rgba.shape[:2]
    opaque = bool((rgba[:, :, 3] == 255).all())
    px = rgba[:, :, :3] if opaque else rgba
    rows = np.empty((h, 1 + w * px.shape[2]), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None
    view = rows[:, 1:].reshape(h, w, px.shape[2])  # a view (rows are contiguous): one copy
    if np.shares_memory(view, rows):
        view[...] = px
    else:  # pragma: no cover - numpy could not make a view
        rows[:, 1:] = px.reshape(h, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ppm = int(fig.dpi / 0.0254 + 0.5)  # pixels per metre, as Pillow writes savefig's dpi
    png = b"".join([b"\x89PNG\r\n\x1a\n",
                    chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2 if opaque else 6, 0, 0, 0)),
                    chunk(b"pHYs", struct.pack(">IIB", ppm, ppm, 1)),
                    chunk(b"IDAT", zlib.compress(rows, 1)),
                    chunk(b"IEND", b"")])
    try:
        if hasattr(path, "write"):
            path.write(png)
        else:
            Path(path).write_bytes(png)
    except OSError as exc:
        raise plot_write_error(path, exc) from None


#: Space around the figure's edge and between its blocks (title, axes, legend), in points:
#: the pad of matplotlib's constrained layout.
PAD_PT = 3.0


def _save(fig: Any, path: Path) -> None:
    """Lay the figure out (:func:`_place`), draw its axes' ticks (:class:`_Ticks`) and write
    it as PNG (:func:`_write_png`)."""
    ticks = {axis: _Ticks(axis) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)}
    _place(fig, ticks)
    for t in ticks.values():
        t.install()
    _write_png(fig, path)


class _Ticks:
    """One axis' major ticks drawn as plain artists of its axes, in place of matplotlib's
    tick objects (each a tick mark, a grid line and two labels, built and updated on every
    layout and drawing pass: about a third of the drawing time of these figures).

    The ticks are the axis' own (its locator and formatter, those shown in the view, as
    ``Axis._update_ticks`` picks them) with the properties matplotlib gives them (copied
    from one template tick of the axis): the labels, one line of tick marks and the grid
    lines, at the axis' drawing order; the axis label goes where matplotlib would put it
    (beyond the tick labels and the spine with its tick marks). The pixels are those of
    matplotlib's own ticks (tested). An axis whose formatter shows an offset or that has
    minor ticks keeps matplotlib's ticks.

    ``extra`` holds further labels beside the axes (:func:`_right_labels`): drawn as they
    are, measured by :func:`_place` with the tick labels of their side.
    """

    def __init__(self, axis: Any) -> None:
        from matplotlib.ticker import NullLocator

        self.axis = axis
        self.extra: list[Any] = getattr(axis, "_evalkit_extra", [])
        self.own = (not isinstance(axis.get_major_locator(), NullLocator)
                    and isinstance(axis.get_minor_locator(), NullLocator)
                    and axis.get_label_position() in ("bottom", "left"))
        # matplotlib's first tick: the one its other ticks copy their properties from
        self.tick = axis.majorTicks[0] if self.own else None
        if self.tick is not None and (  # labels on both sides, or marks on the far one
                (self.tick.label1.get_visible() and self.tick.label2.get_visible())
                or (self.tick.tick2line.get_visible() and self.tick.tick2line.get_markersize() > 0)):
            self.own, self.tick = False, None
        self._made: tuple[list[tuple[float, str]], list[Any]] | None = None

    def shown(self) -> list[tuple[float, str]]:
        """The major ticks in the view now: ``(location, label)``."""
        from matplotlib.transforms import _interval_contains_close

        axis = self.axis
        locs = axis.get_majorticklocs()
        labels = axis.get_major_formatter().format_ticks(locs)
        lo, hi = sorted(axis.get_view_interval())
        trans = axis.get_transform()
        view = trans.transform([lo, hi])
        return [(loc, label) for loc, label in zip(locs, labels, strict=True)
                if _interval_contains_close(view, trans.transform(loc))]

    def labels(self, shown: list[tuple[float, str]] | None = None) -> list[Any]:
        """Tick labels of ``shown`` (default: :meth:`shown`) on the side the axis shows
        them (``label1``: below / left; ``label2``: a twin's, right), not added to the axes."""
        from matplotlib.text import Text

        if self.tick is None:
            return []
        template = next((t for t in (self.tick.label1, self.tick.label2) if t.get_visible()), None)
        if template is None:
            return []
        shown = self.shown() if shown is None else shown
        if self._made is not None and self._made[0] == shown:
            return self._made[1]
        out = []
        for loc, label in shown:
            t = Text()
            t.update_from(template)
            t.set_figure(self.axis.figure)
            t.set_text(label)
            if self.axis.axis_name == "x":
                t.set_x(loc)
            else:
                t.set_y(loc)
            out.append(t)
        self._made = (shown, out)
        return out

    def room(self, renderer: Any, px: float) -> float:
        """Pixels the tick labels need beside the axes (height below for x, width left for
        y): the widest label, its pad and the tick mark's length."""
        labels = [t for t in (self.labels() if self.own else shown_ticklabels(self.axis)) if t.get_text()]
        if not labels:
            return 0.0
        tick = self.tick if self.own else self.axis.get_major_ticks()[0]
        length = tick.tick1line.get_markersize() if tick.tick1line.get_visible() else 0.0
        which = "height" if self.axis.axis_name == "x" else "width"
        return _text_size(labels, renderer, which) + (tick.get_pad() + max(length, 0.0)) * px

    def install(self) -> None:
        """Add the ticks at the axes' final size as artists and turn the axis' own off."""
        from matplotlib.lines import Line2D
        from matplotlib.ticker import NullLocator
        from matplotlib.transforms import Bbox

        axis, ax = self.axis, self.axis.axes
        for t in self.extra:
            t.set_zorder(axis.get_zorder())
        if not self.own or self.tick is None:
            return
        if axis.get_major_formatter().get_offset():
            return  # an offset text sits beside the labels: matplotlib places it
        shown = self.shown()
        labels = self.labels(shown)
        tick, z, x_axis = self.tick, axis.get_zorder(), axis.axis_name == "x"
        locs = [float(loc) for loc, _ in shown]
        if tick.gridline.get_visible():  # clipped to the axes (add_artist), as matplotlib's
            for loc in locs:
                g = Line2D([], [])
                g.update_from(tick.gridline)
                g.set_data(([loc, loc], [0, 1]) if x_axis else ([0, 1], [loc, loc]))
                g.get_path()._interpolation_steps = tick.gridline.get_path()._interpolation_steps
                g.set_zorder(z)
                ax.add_artist(g)
        unclipped = list(labels)
        if tick.tick1line.get_visible() and tick.tick1line.get_markersize() > 0 and locs:
            marks = Line2D([], [])
            marks.update_from(tick.tick1line)
            marks.set_data((locs, [0.0] * len(locs)) if x_axis else ([0.0] * len(locs), locs))
            unclipped.insert(0, marks)
        for a in unclipped:
            _add_unclipped(ax, a)
            a.set_zorder(z)
        axis._evalkit_labels = labels  # for shown_ticklabels
        axis.set_major_locator(NullLocator())
        # the axis label beyond the tick labels and the spine (with its tick marks), as
        # Axis._update_label_position puts it
        renderer = ax.figure.canvas.get_renderer()
        px = ax.figure.dpi / 72.0
        spine = ax.spines.get("bottom" if x_axis else "left", None)
        box = spine.get_window_extent(renderer) if spine is not None else ax.get_window_extent(renderer)
        if spine is not None and locs and tick.tick1line.get_visible():
            out = tick._size * {"out": 1.0, "in": 0.0, "inout": 0.5}[tick._tickdir] * px
            grown = box.frozen()
            if x_axis:
                grown.y0 -= out
            else:
                grown.x0 -= out
            box = Bbox.union([box, grown])
        if tick.label1.get_visible():  # labels on the label's side push it out
            box = Bbox.union([box, *(t.get_window_extent(renderer) for t in labels)])
        x, y = axis.label.get_position()
        if x_axis and axis.get_label_position() == "bottom":
            axis.label.set_position((x, box.y0 - axis.labelpad * px))
        elif not x_axis and axis.get_label_position() == "left":
            axis.label.set_position((box.x0 - axis.labelpad * px, y))
        else:
            return
        axis._autolabelpos = False


def _add_unclipped(ax: Any, artist: Any) -> None:
    """Add ``artist`` to the axes without the clipping to the axes ``add_artist`` sets."""
    ax.add_artist(artist)
    artist.set_clip_box(None)
    artist.set_clip_path(None)


def _text_size(texts: Sequence[Any], renderer: Any, which: str) -> float:
    shown = [t for t in texts if t.get_visible() and t.get_text()]
    return max((getattr(t.get_window_extent(renderer), which) for t in shown), default=0.0)


def _place(fig: Any, ticks: dict[Any, _Ticks] | None = None) -> None:
    """Position the figure's grid of axes, its title block and its legend from the measured
    size of their text, as matplotlib's constrained layout would, without its extra
    drawing pass (that pass builds and lays out every tick and label a second time: about
    40% of the drawing time of these figures).

    Each grid cell reserves, outside its axes: the y label and tick labels on the left
    (on the right, a twin's tick labels or the labels of :func:`_right_labels`), the title
    above, the x tick labels and x label below. The suptitle sits at the top, the legend
    centred at the bottom. ``ticks``: the axes' :class:`_Ticks` (made here by default).
    """
    if ticks is None:
        ticks = {axis: _Ticks(axis) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)}
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72.0
    pad = PAD_PT * px
    width, height = fig.bbox.width, fig.bbox.height
    cells: dict[tuple[int, int], list[Any]] = {}
    for ax in fig.axes:  # a twin has its parent's subplot spec, after it
        spec = ax.get_subplotspec()
        cells.setdefault((spec.rowspan.start, spec.colspan.start), []).append(ax)
    if not cells:
        return
    n_rows, n_cols = next(iter(cells.values()))[0].get_subplotspec().get_gridspec().get_geometry()
    deco = {key: _decorations(axs, renderer, px, ticks) for key, axs in cells.items()}
    left_of = [max((d[0] for (_, c), d in deco.items() if c == col), default=0.0) for col in range(n_cols)]
    right_of = [max((d[1] for (_, c), d in deco.items() if c == col), default=0.0) for col in range(n_cols)]
    top_of = [max((d[2] for (r, _), d in deco.items() if r == row), default=0.0) for row in range(n_rows)]
    below_of = [max((d[3] for (r, _), d in deco.items() if r == row), default=0.0) for row in range(n_rows)]
    top = pad
    if fig._suptitle is not None:
        fig._suptitle.set_y(1.0 - pad / height)
        fig._suptitle.set_verticalalignment("top")
        top += fig._suptitle.get_window_extent(renderer).height + pad
    bottom = pad
    for legend in fig.legends:
        legend.set_bbox_to_anchor((0.5, pad / height), transform=fig.transFigure)
        bottom += legend.get_window_extent(renderer).height + pad
    left = pad + left_of[0]
    right = pad + right_of[-1]
    top += top_of[0]
    bottom += below_of[-1]
    gap_w = max((right_of[c] + pad + left_of[c + 1] for c in range(n_cols - 1)), default=0.0)
    gap_h = max((below_of[r] + pad + top_of[r + 1] for r in range(n_rows - 1)), default=0.0)
    ax_w = max(1.0, (width - left - right - (n_cols - 1) * gap_w) / n_cols)
    ax_h = max(1.0, (height - top - bottom - (n_rows - 1) * gap_h) / n_rows)
    fig.subplots_adjust(left=left / width, right=1.0 - right / width, top=1.0 - top / height,
                        bottom=bottom / height, wspace=gap_w / ax_w, hspace=gap_h / ax_h)


def _decorations(axs: list[Any], renderer: Any, px: float,
                 ticks: dict[Any, _Ticks]) -> tuple[float, float, float, float]:
    """Pixels a grid cell's axes (and its twin) need outside the axes box: left, right,
    above, below."""
    ax = axs[0]
    left = ticks[ax.yaxis].room(renderer, px)
    if ax.yaxis.label.get_text():
        left += _text_size([ax.yaxis.label], renderer, "width") + ax.yaxis.labelpad * px
    right = max((ticks[twin.yaxis].room(renderer, px) for twin in axs[1:]), default=0.0)
    extra = ticks[ax.yaxis].extra
    if extra:  # _right_labels: the width of the widest and their pad
        right = max(right, _text_size(extra, renderer, "width") + extra[0]._evalkit_pad * px)
    xticks = ticks[ax.xaxis]
    xlabels = xticks.labels() if xticks.own else shown_ticklabels(ax.xaxis)
    if xlabels:  # the last x tick label reaches half its width past the axes
        right = max(right, _text_size(xlabels[-1:], renderer, "width") / 2.0)
    above = 0.0
    if ax.title.get_text():
        from matplotlib import rcParams

        above = _text_size([ax.title], renderer, "height") + rcParams["axes.titlepad"] * px
    below = xticks.room(renderer, px)
    if ax.xaxis.label.get_text():
        below += _text_size([ax.xaxis.label], renderer, "height") + ax.xaxis.labelpad * px
    return left, right, above, below


def shown_ticklabels(axis: Any) -> list[Any]:
    """The major tick labels of a matplotlib axis that a drawing shows (visible, not empty,
    at a tick inside the view: a locator also returns ticks beyond it); for an axis whose
    ticks :class:`_Ticks` drew, those labels and the labels beside it (:func:`_right_labels`)."""
    drawn = getattr(axis, "_evalkit_labels", None)
    if drawn is not None or getattr(axis, "_evalkit_extra", None):
        return [t for t in [*(drawn or []), *getattr(axis, "_evalkit_extra", [])]
                if t.get_visible() and t.get_text()]
    axis.get_majorticklabels()  # formats the labels for the current view
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-9 * max(abs(lo), abs(hi), 1e-300)
    labels = []
    for tick, loc in zip(axis.get_major_ticks(), axis.get_majorticklocs(), strict=False):
        if lo - slack <= loc <= hi + slack:
            labels += [t for t in (tick.label1, tick.label2) if t.get_visible() and t.get_text()]
    return labels


def _fixed_ticks(axis: Any, locs: Sequence[float], labels: Sequence[str]) -> None:
    """Ticks at ``locs`` labelled ``labels`` (``Axis.set_ticks(locs, labels)`` without
    building matplotlib's tick objects, which :class:`_Ticks` replaces); the view must
    already hold ``locs``."""
    from matplotlib.ticker import FixedFormatter, FixedLocator

    axis.set_major_locator(FixedLocator(list(locs)))
    axis.set_major_formatter(FixedFormatter(list(labels)))


#: Pad between the axes and the labels of :func:`_right_labels`, in points (a y tick
#: label's: the labels were a twin axis' tick labels, without tick marks).
RIGHT_PAD_PT = 3.5


def _right_labels(ax: Any, ys: Sequence[float], labels: Sequence[str]) -> None:
    """Per-row annotations right of the axes at data heights ``ys``, laid out by
    :func:`_place`: placed and drawn as the tick labels of a right-hand twin axis were
    (size 8, dark grey, left-aligned, centred on the row's baseline centre), as plain
    texts of the axes (no second axes)."""
    from matplotlib.text import Text

    trans, va, ha = ax.get_yaxis_text2_transform(RIGHT_PAD_PT)
    texts = []
    for y, label in zip(ys, labels, strict=True):
        t = Text(1, y, label, fontsize=8, color="#333333", verticalalignment=va,
                 horizontalalignment=ha, transform=trans)
        t._evalkit_pad = RIGHT_PAD_PT
        _add_unclipped(ax, t)
        texts.append(t)
    ax.yaxis._evalkit_extra = texts


def _finish(fig: Any, title: str, subtitle: str, handles: list[Any]) -> None:
    """Left-aligned title block above, legend below the axes (both layout-managed)."""
    fig.suptitle(f"{title}\n{subtitle}", x=0.01, ha="left", fontsize=10.5, linespacing=1.4)
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)),
               fontsize=8, frameon=False, borderaxespad=0.0)


def _style(ax: Any) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(axis="y", length=0, labelsize=9)
    ax.tick_params(axis="x", labelsize=9)


def _log_axis(ax: Any) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=15))
    ax.xaxis.set_major_formatter(FuncFormatter(_fmt_loss))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(axis="x", which="major", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)


def _minor_marks(ax: Any) -> None:
    """Draw the x axis' minor ticks (a log axis has about 8 a decade) as one line of tick
    marks at the final limits, in place of one matplotlib tick object each: the same marks
    (size, width, colour, outward), a fifth less drawing time for the class distribution."""
    from matplotlib import rcParams
    from matplotlib.lines import TICKDOWN, Line2D
    from matplotlib.ticker import NullLocator

    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi)  # fixed from here: the marks must not move the limits
    locs = np.asarray(ax.xaxis.get_minorticklocs(), dtype=float)  # without the major ones
    locs = locs[(locs >= min(lo, hi)) & (locs <= max(lo, hi))]
    ax.xaxis.set_minor_locator(NullLocator())
    marks = Line2D(locs, np.zeros(len(locs)), transform=ax.get_xaxis_transform(), linestyle="none",
                   marker=TICKDOWN, markersize=rcParams["xtick.minor.size"],
                   markeredgewidth=rcParams["xtick.minor.width"], color=rcParams["xtick.color"],
                   clip_on=False, zorder=ax.xaxis.get_zorder())
    ax.add_artist(marks)


def _bars(ax: Any, at: np.ndarray, value: np.ndarray, width: float, horizontal: bool = False) -> None:
    """Bars from 0 to ``value`` centred on ``at`` (``_BAR``, alpha 0.85), as ``ax.bar`` /
    ``ax.barh`` draw them (the same pixels) but one collection instead of a patch each; the
    caller sets the limits."""
    from matplotlib.collections import PolyCollection

    lo = np.asarray(at, dtype=float) - width / 2.0
    verts = np.zeros((len(lo), 4, 2))
    verts[:, :2, 0] = lo[:, None]  # corners (lo, 0), (lo, v), (lo + w, v), (lo + w, 0)
    verts[:, 2:, 0] = (lo + width)[:, None]
    verts[:, 1:3, 1] = np.asarray(value, dtype=float)[:, None]
    if horizontal:
        verts = verts[:, :, ::-1]
    ax.add_collection(PolyCollection(list(verts), facecolors=_BAR, edgecolors="none", linewidths=0,
                                     alpha=0.85), autolim=False)


def _quantile_columns(df: pd.DataFrame) -> list[str]:
    cols = [c for c in df.columns if isinstance(c, str) and re.fullmatch(r"p\d+(\.\d+)?", c)]
    return sorted(cols, key=lambda c: float(c[1:]))


def _pick_classes(table: pd.DataFrame) -> tuple[pd.DataFrame, int, bool]:
    """Classes to draw (top to bottom), total with data, whether the list was cut."""
    has = table[table["count"] > 0]
    shown, n_left = bounded_groups(has, MAX_CLASSES)
    return shown, len(has), n_left > 0


# --------------------------------------------------------------------------- #
# Plots
# --------------------------------------------------------------------------- #


def _plot_class_distribution(result: Any, path: Path, class_hist: dict | None) -> str:
    table = result.groups["class"]
    shown, n_with_data, cut = _pick_classes(table)
    rows = max(1, len(shown))
    fig = _new_figure(rows)
    ax = fig.add_subplot()
    _log_axis(ax)
    _style(ax)
    names = [str(c) for c in shown["class"]]
    ys = np.arange(len(names))[::-1].astype(float)  # first class at the top
    # a weighted run: the weighted mean, as the bar charts, report.md and the class order
    # (bounded_groups) show it (rt-eval8 N8); the distribution itself is of the rows
    stat = mean_column(shown)
    mean_word = "weighted mean" if stat == "weighted_mean" else "mean"
    means = shown[stat].to_numpy(dtype=float)
    counts_col = shown["count"].to_numpy()

    if class_hist is not None:
        label_y, kind, handles = _draw_class_histograms(ax, ys, names, means, class_hist, mean_word)
    else:
        label_y, kind, handles = _draw_class_ranges(ax, ys, names, means, shown, mean_word)
    if stat == "weighted_mean":
        kind += " (rows, unweighted); diamonds: weighted mean"

    n_classes = len(getattr(result.layout, "classes", ()) or ()) or len(table)
    if n_classes >= 2:
        ref = math.log(n_classes)
        lo, hi = ax.get_xlim()
        if lo < ref < hi:
            ax.axvline(ref, color=_REF, linestyle=":", linewidth=1)
            handles.append(_line(color=_REF, linestyle=":", linewidth=1,
                                 label=f"uniform guess (ln {n_classes} = {ref:.2g})"))
    lo, hi = ax.get_xlim()
    if hi / lo < 100:  # under two decades: also label 2x and 5x ticks
        from matplotlib.ticker import LogLocator

        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=15))
    _minor_marks(ax)
    _fixed_ticks(ax.yaxis, label_y, _distinct_truncations([terminal(n) for n in names]))
    _right_labels(ax, label_y, [f"{mean_word} {m:.3g}, {_fmt_count(n)}" if math.isfinite(m)
                                else _fmt_count(n) for n, m in zip(counts_col, means, strict=True)])
    ax.set_xlabel("cross-entropy loss (log scale)", fontsize=10)
    ax.set_ylabel("true class", fontsize=10)
    title = f"Loss distribution by true class \u2014 {_input_name(result)}"
    sub = kind
    if cut:
        sub = (f"the {len(shown) - MAX_CLASSES // 2} highest and {MAX_CLASSES // 2} lowest mean "
               f"loss of {n_with_data:,} classes (all in by_class.parquet)")
    _finish(fig, title, sub, handles)
    _save(fig, path)
    return _class_title(result)


def _class_title(result: Any) -> str:
    n_with_data = int((result.groups["class"]["count"] > 0).sum())
    if n_with_data <= MAX_CLASSES:
        return "Loss distribution by true class"
    return f"Loss distribution by true class ({MAX_CLASSES} of {n_with_data:,}: highest and lowest mean loss)"


def _means_title(result: Any, grouping: Any) -> str:
    total = int((result.groups[grouping.name]["count"] > 0).sum())
    what = ", ".join(grouping.columns)
    if total <= MAX_GROUPS:
        return f"Mean loss by {what}"
    return f"Mean loss by {what} ({MAX_GROUPS} of {total:,}: highest and lowest mean loss)"


def _draw_class_histograms(ax: Any, ys: np.ndarray, names: list[str], means: np.ndarray,
                           class_hist: dict, mean_word: str = "mean") -> tuple[np.ndarray, str, list[Any]]:
    """One ridge per class: its loss histogram scaled to its peak, median and mean marks
    (``means``, called ``mean_word`` in the legend). Returns the label positions, the
    subtitle and the legend handles."""
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import StepPatch

    edges = np.asarray(class_hist["edges"], dtype=float)
    hists = class_hist["counts"]
    med_x: list[float] = []  # every class's median mark, one line (NaN between marks)
    med_y: list[float] = []
    mean_x: list[float] = []
    mean_y: list[float] = []
    fills: list[np.ndarray] = []
    outlines: list[Any] = []
    for y, name, mean in zip(ys, names, means, strict=True):
        c = np.asarray(hists.get(name, np.zeros(len(edges) - 1)), dtype=float)
        if c.sum() <= 0:
            continue
        h = 0.85 * c / c.max()
        fills.append(_step_fill(edges, y, y + np.append(h, h[-1])))
        # ax.stairs(y + h, edges, baseline=y, color=_FILL, linewidth=0.8) without its data
        # limit update (a walk over the outline's segments): the limits are set below
        outlines.append(StepPatch(y + h, edges, baseline=y, fill=False, edgecolor=_FILL, linewidth=0.8))
        cum = np.cumsum(c)
        med_bin = int(np.searchsorted(cum, cum[-1] / 2.0))
        med = math.sqrt(edges[med_bin] * edges[med_bin + 1])
        med_x += [med, med, math.nan]
        med_y += [y, y + 0.85, math.nan]
        if math.isfinite(mean):
            mean_x.append(float(mean))
            mean_y.append(y + 0.12)
    # The fills of every class as one collection (ax.fill_between(edges, y, tops, step="post",
    # color=_FILL, alpha=0.55, linewidth=0) each: the same polygons, without a collection and
    # a data limit update per class), drawn before the outlines as before: a class's fill and
    # outline never overlap another class's (a ridge is at most 0.85 of the 1 between rows).
    if fills:
        ax.add_collection(PolyCollection(fills, color=_FILL, alpha=0.55, linewidth=0), autolim=False)
    for outline in outlines:
        ax.add_artist(outline)
    # medians before means: a class's mean mark is drawn over its median, as before
    ax.plot(med_x, med_y, color="black", linewidth=1.2)
    ax.plot(mean_x, mean_y, marker="D", color=_MEAN, markersize=4.5, linestyle="none")
    ax.set_xlim(edges[0] / 1.2, edges[-1] * 1.2)
    ax.set_ylim(-0.25, len(names) - 0.05)
    label_y = ys + 0.35
    kind = "histogram of each class's losses, scaled to its peak"
    handles = [
        _patch(facecolor=_FILL, alpha=0.55, edgecolor=_FILL, label="histogram (scaled to peak)"),
        _line(color="black", linewidth=1.2, label="median"),
        _line(color=_MEAN, marker="D", markersize=4.5, linestyle="none", label=mean_word),
    ]
    return label_y, kind, handles


def _step_fill(edges: np.ndarray, base: float, tops: np.ndarray) -> np.ndarray:
    """The polygon ``ax.fill_between(edges, base, tops, step="post")`` fills (finite
    values): from ``(edges[0], tops[0])`` along the base's steps, then back along the tops'."""
    n = len(edges)
    t = np.empty(2 * n - 1)
    t[0::2], t[1::2] = edges, edges[1:]
    f2 = np.empty(2 * n - 1)
    f2[0::2], f2[1::2] = tops, tops[:-1]
    m = len(t)
    pts = np.empty((2 * m + 2, 2))
    pts[0] = t[0], f2[0]
    pts[1:m + 1, 0], pts[1:m + 1, 1] = t, base
    pts[m + 1] = t[-1], f2[-1]
    pts[m + 2:, 0], pts[m + 2:, 1] = t[::-1], f2[::-1]
    return pts


def _draw_class_ranges(ax: Any, ys: np.ndarray, names: list[str], means: np.ndarray,
                       shown: pd.DataFrame, mean_word: str = "mean") -> tuple[np.ndarray, str, list[Any]]:
    """Without histograms: per class min-max line, a quantile band, quantile and mean marks.
    Returns the label positions, the subtitle and the legend handles."""
    qcols = _quantile_columns(shown)
    mn = shown["min"].to_numpy(dtype=float)
    mx = shown["max"].to_numpy(dtype=float)
    ax.hlines(ys, mn, mx, color=_REF, linewidth=1.0)
    ax.plot(mn, ys, "|", color=_REF, markersize=8)
    ax.plot(mx, ys, "|", color=_REF, markersize=8)
    handles = [_line(color=_REF, linewidth=1.0, label="min \u2013 max")]
    if len(qcols) >= 2:
        lo_q = shown[qcols[0]].to_numpy(dtype=float)
        hi_q = shown[qcols[-2] if len(qcols) > 2 else qcols[-1]].to_numpy(dtype=float)
        ax.hlines(ys, lo_q, hi_q, color=_FILL, linewidth=7, alpha=0.6)
        hi_name = qcols[-2] if len(qcols) > 2 else qcols[-1]
        handles.append(_line(color=_FILL, linewidth=7, alpha=0.6,
                             label=f"{qcols[0]} \u2013 {hi_name}"))
    markers = ["o", "^", "s", "v", "P", "X"]
    for j, q in enumerate(qcols):
        ax.plot(shown[q].to_numpy(dtype=float), ys, marker=markers[j % len(markers)],
                color="black", markersize=4, linestyle="none")
        handles.append(_line(color="black", marker=markers[j % len(markers)], markersize=4,
                             linestyle="none", label=q))
    ax.plot(means, ys, marker="D", color=_MEAN, markersize=4.5, linestyle="none")
    handles.append(_line(color=_MEAN, marker="D", markersize=4.5, linestyle="none",
                         label=mean_word))
    ax.set_ylim(-0.7, len(names) - 0.3)
    label_y = ys
    kind = "min / quantiles / max per class"
    return label_y, kind, handles


def _patch(**kw: Any) -> Any:
    from matplotlib.patches import Patch

    return Patch(**kw)


def _line(**kw: Any) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], **kw)


def _plot_group_means(result: Any, grouping: Any, path: Path) -> str:
    df = result.groups[grouping.name]
    cols = list(grouping.columns)
    df = df[df["count"] > 0]
    total = len(df)
    stat = mean_column(df)  # a weighted run: the weighted mean, which its intervals are of
    mean_word = "weighted mean" if stat == "weighted_mean" else "mean"
    mean = df[stat].to_numpy(dtype=float)
    cut = total > MAX_GROUPS
    # Worst first, ties by table order; past MAX_GROUPS the highest and the lowest means.
    sub = bounded_groups(df, MAX_GROUPS)[0] if cut else df.iloc[np.lexsort((np.arange(total), -mean))]
    labels = _distinct_truncations([_key_label(k) for k in sub[cols].itertuples(index=False, name=None)])
    m = sub[stat].to_numpy(dtype=float)
    cnt = sub["count"].to_numpy()
    if "ci_low" in sub.columns:  # the table's own interval (t, Kish or bootstrap)
        lo_err = m - sub["ci_low"].to_numpy(dtype=float)
        hi_err = sub["ci_high"].to_numpy(dtype=float) - m
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            lo_err = hi_err = 1.96 * sub["std"].to_numpy(dtype=float) / np.sqrt(cnt)
    no_ci = ~(np.isfinite(lo_err) & np.isfinite(hi_err))
    lo_err = np.where(no_ci, 0.0, np.maximum(lo_err, 0.0))
    hi_err = np.where(no_ci, 0.0, np.maximum(hi_err, 0.0))
    level = f"{100 * float(result.metadata.get('confidence') or 0.95):g}%"

    rows = max(1, len(sub))
    fig = _new_figure(rows)
    ax = fig.add_subplot()
    _style(ax)
    ys = np.arange(len(sub))[::-1].astype(float)  # worst at the top
    _bars(ax, ys, m, 0.65, horizontal=True)
    overall = _overall_mean(result)
    off = _intervals(ax, ys, m, lo_err, hi_err, no_ci, overall)  # drawn before the mean line
    handles = [_line(color="black", linewidth=1, label=f"{level} CI of the {mean_word}")]
    if overall is not None:
        ax.axvline(overall, color=_MEAN, linestyle="--", linewidth=1)
        handles.append(_line(color=_MEAN, linestyle="--", linewidth=1,
                             label=f"overall {mean_word} ({overall:.3g})"))
    if off.any():
        handles.append(_line(linestyle="none", marker=">", markersize=5, color="black",
                             label="CI runs past the axis (its end beside the bar)"))
    ax.set_ylim(-0.6, len(sub) - 0.4)
    _fixed_ticks(ax.yaxis, ys, labels)
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_axisbelow(True)
    _right_labels(ax, ys, [f"{mean_word} {v:.3g}, {_fmt_count(n)}" + (" (no CI)" if nc else "")
                           + (f" (CI to {v + h:.3g})" if o else "")
                           for v, n, nc, o, h in zip(m, cnt, no_ci, off, hi_err, strict=True)])
    what = ", ".join(_truncate(terminal(c)) for c in cols)
    ax.set_xlabel(f"{mean_word} cross-entropy loss", fontsize=10)
    ax.set_ylabel(_truncate(what, MAX_AXIS_LABEL), fontsize=10)  # vertical: the shortest axes' height
    title = f"Mean loss by {what} \u2014 {_input_name(result)}"
    sub_title = f"sorted by {mean_word} loss; error bars: {level} CI of the {mean_word}"
    if cut:
        sub_title = (f"the {len(sub) - MAX_GROUPS // 2} highest and {MAX_GROUPS // 2} lowest mean "
                     f"loss of {total:,} groups (all in {grouping.file_stem}.parquet); "
                     f"error bars: {level} CI")
    _finish(fig, title, sub_title, handles)
    _save(fig, path)
    return _means_title(result, grouping)


def _intervals(ax: Any, ys: np.ndarray, m: np.ndarray, lo_err: np.ndarray, hi_err: np.ndarray,
               no_ci: np.ndarray, overall: float | None) -> np.ndarray:
    """The error bars of a mean-loss chart and its x axis; returns which intervals run off it.

    A group without an interval (one row) gets no error bar, not a lone cap at its bar's
    end. The axis reaches the longest interval (and the overall mean), but at most
    ``CI_ROOM`` x the longest bar: an interval far past every bar (a tiny group's) would
    squeeze the bars; it runs off the axis, marked with an arrow at the edge (the caller
    gives its end in the label beside the bar)."""
    has_ci = ~no_ci
    if has_ci.any():
        ax.errorbar(m[has_ci], ys[has_ci], xerr=[lo_err[has_ci], hi_err[has_ci]], fmt="none",
                    ecolor="black", elinewidth=1, capsize=3)
    right = float(np.nanmax(m + hi_err)) if len(m) else 1.0
    top = float(np.nanmax(m)) if len(m) else 1.0  # the longest bar
    if overall is not None:
        right = max(right, overall)
        top = max(top, overall)
    off = np.zeros(len(m), dtype=bool)
    if top > 0 and right > CI_ROOM * top:
        right = CI_ROOM * top
        off = m + hi_err > right * 1.05
    ax.set_xlim(0, right * 1.05 if right > 0 else 1.0)
    if off.any():  # the arrow's tip just inside the axes, clear of the labels beside it
        ax.plot(np.full(int(off.sum()), right * 1.05 * 0.99), ys[off], linestyle="none", marker=">",
                markersize=5, color="black", clip_on=False)
    return off


def _overall_mean(result: Any) -> float | None:
    """The overall line's mean (its weighted mean in a weighted run), or None."""
    try:
        v = row_mean(result.overall)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return v if math.isfinite(v) else None


def plot_filename(grouping: Any) -> str:
    """PNG name of a grouping's mean-loss chart: ``mean_loss_by_split_region.png``."""
    return f"mean_loss_{grouping.file_stem}.png"


def _warm_up() -> None:
    """Import what drawing needs and draw a throwaway figure (fonts, text layout, PNG
    encoder), so a helper process that runs this ahead of time draws at full speed."""
    import io

    from matplotlib.ticker import FuncFormatter  # noqa: F401

    with literal_text(hinted=False):  # as write_plots draws
        fig = _new_figure(2)
        ax = fig.add_subplot()
        _log_axis(ax)
        ax.barh([0.0, 1.0], [1.0, 2.0])
        _right_labels(ax, [0.0, 1.0], ["a", "b"])
        _finish(fig, "warm-up", "warm-up", [_patch(label="a"), _line(label="b")])
        _save(fig, io.BytesIO())


def plot_plan(result: Any) -> list[tuple[str, str]]:
    """The report's plots as ``[(title, file name), ...]``, without drawing anything.

    What :func:`write_plots` draws and returns, known before it runs (no matplotlib
    needed), so report.md can be written while the plots are drawn elsewhere.
    """
    return [(title, name) for title, name, _, _ in _plot_specs(result)]


def plot_costs(result: Any) -> dict[str, float]:
    """Estimated drawing time of each plot of :func:`plot_plan`, in seconds of one core of
    the project's machine (file name -> seconds), for sharing the drawing between processes.

    Fitted to measured drawing times (6M x 10 wide, default run, 2026-11-30): the class
    distribution 0.12 s + 0.01 s a class row, a mean-loss chart 0.09 s + 0.008 s a bar, the
    reliability diagram 0.05 s + 0.1 s a panel. Only their ratios matter.
    """
    costs: dict[str, float] = {}
    for _, name, kind, g in _plot_specs(result):
        if kind == "class":
            costs[name] = 0.12 + 0.01 * min(MAX_CLASSES, len(result.groups["class"]))
        elif kind == "reliability":  # g: the bins (reliability_bins)
            n_splits = int(g.loc[g["grouping"] == "split", "group"].nunique())
            costs[name] = 0.05 + 0.1 * min(MAX_RELIABILITY_PANELS, 1 + n_splits)
        else:
            costs[name] = 0.09 + 0.008 * min(MAX_GROUPS, len(result.groups[g.name]))
    return costs


def _plot_specs(result: Any) -> list[tuple[str, str, str, Any]]:
    """``(title, file name, kind, what)`` of each plot: ``what`` is the grouping of a
    mean-loss chart, the bins (:func:`reliability_bins`) of the reliability diagram."""
    specs: list[tuple[str, str, str, Any]] = []
    groups = result.groups
    if "class" in groups and (groups["class"]["count"] > 0).any():
        specs.append((_class_title(result), "loss_by_class.png", "class", None))
    for g in result.groupings:
        if not g.columns or g.name not in groups or not (groups[g.name]["count"] > 0).any():
            continue
        specs.append((_means_title(result, g), plot_filename(g), "means", g))
    calib = reliability_bins(result)
    if calib is not None and len(calib):
        shown, n_splits = _reliability_splits(result, calib)
        title = "Reliability diagram"
        if len(shown) < n_splits:
            title += f" (overall and {len(shown)} of {n_splits:,} splits: highest ECE)"
        elif n_splits:
            title += " (overall and by split)"
        specs.append((title, "reliability.png", "reliability", calib))
    return specs


def write_plots(result: Any, out_dir: Path, class_hist: dict | None = None,
                only: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Write the report's PNGs into ``out_dir``; return ``[(title, file name), ...]``.

    File names are relative to ``out_dir`` (the report's directory), ready to embed as
    ``![title](file)``.  ``class_hist`` (see :func:`class_histograms`) gives the per-class
    loss histograms; without it the class plot summarises the class table's quantiles.
    Groupings without rows with data are skipped. ``only`` restricts drawing to those file
    names (the return value still lists every plot, as :func:`plot_plan`). A plot that
    cannot be drawn is a PNG saying so and a :class:`PlotFailedWarning`, never an error
    (:func:`_plot_failed`); a PNG that cannot be written is an OutputError
    (:func:`plot_write_error`). Needs matplotlib (:func:`plots_available`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = _plot_specs(result)
    with font_note(), literal_text(hinted=False):
        for _, name, kind, g in specs:
            if only is not None and name not in only:
                continue
            try:
                if kind == "class":
                    _plot_class_distribution(result, out_dir / name, class_hist)
                elif kind == "reliability":
                    _plot_reliability(result, g, out_dir / name)
                else:
                    _plot_group_means(result, g, out_dir / name)
            except OutputError:  # the PNG was drawn but cannot be written: no report
                raise
            except Exception as exc:  # noqa: BLE001 - a figure never costs the run its report
                _plot_failed(out_dir / name, exc)
    return [(title, name) for title, name, _, _ in specs]


def reliability_bins(result: Any) -> pd.DataFrame | None:
    """The calibration bins the reliability diagram draws: the overall line and the groups
    of ``split`` (never the whole table: a million users have ten million bins). None when
    calibration is off."""
    table = getattr(result, "_calibration", None)
    if table is not None:
        return table.to_pandas(["overall", "split"])
    calib = getattr(result, "calibration", None)
    if calib is None:
        return None
    if len(calib) <= 100_000:  # a drawer's copy: plain arrays beat Arrow-backed isin (~10 ms)
        grouping = calib["grouping"].to_numpy(dtype=object)
        return calib[(grouping == "overall") | (grouping == "split")].reset_index(drop=True)
    return calib[calib["grouping"].isin(["overall", "split"])].reset_index(drop=True)


#: Longest one-line reliability panel title (characters): a third of the figure's width.
PANEL_TITLE = 40


def _panel_title(grouping: str, group: str, row: Any, shown: Sequence[str] = ()) -> str:
    """``split = test: ECE 0.144, n=600,955``; a title longer than a panel is wide goes on
    two lines, the group's label shortened in the middle (:func:`_truncate`), so that
    neighbouring titles never run into each other; ``shown``: the labels of every split
    panel, whose shortened names are kept apart (:func:`_distinct_truncations`)."""
    label = terminal(group)  # a key label (fmt_key), its control characters made visible
    name = "overall" if grouping == "overall" else f"split = {label}"
    figures = f"ECE {float(row['ece']):.3f}, n={int(row['count']):,}"
    if len(name) + 2 + len(figures) <= PANEL_TITLE:
        return f"{name}: {figures}"
    if grouping != "overall":
        others = [terminal(g) for g in shown] if group in shown else [label]
        short = _distinct_truncations(others, PANEL_TITLE - 16)
        name = f"split = {short[others.index(label)]}"
    return f"{name}\n{figures}"


def _plot_reliability(result: Any, calib: pd.DataFrame, path: Path) -> None:
    """Reliability diagram (Guo et al. 2017, fig. 1): accuracy against mean top-label
    confidence per bin, overall and (when there is one) per split, bin counts printed on
    the bars; the gap to the diagonal is the miscalibration the ECE averages."""
    # plain arrays: comparing Arrow-backed string columns costs milliseconds each time,
    # and so does a boolean selection of the table (a take of every column): ~10 ms a figure
    grouping_of = calib["grouping"].to_numpy(dtype=object)
    group_of = calib["group"].to_numpy(dtype=object)
    bin_of = calib["bin"].to_numpy()
    accuracy_of = calib["accuracy"].to_numpy(dtype=float)
    confidence_of = calib["mean_confidence"].to_numpy(dtype=float)
    count_of = calib["count"].to_numpy()
    splits, n_splits = _reliability_splits(result, calib)
    panels = [("overall", "all")] + [("split", g) for g in splits]
    n_bins = int(result.metadata.get("calibration_bins") or calib["bin"].max() + 1)
    from matplotlib.figure import Figure

    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = Figure(figsize=(WIDTH, 3.4 * rows + 0.9), dpi=DPI)
    _canvas(fig)
    width = 1.0 / n_bins
    labels: list[str] | None = None  # the split table's group labels, once
    for i, (grouping, group) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        _style(ax)
        sel = (grouping_of == grouping) & (group_of == group)
        centers = (bin_of[sel] + 0.5) * width
        accuracy = accuracy_of[sel]
        _bars(ax, centers, accuracy, width * 0.92)
        ax.scatter(centers, confidence_of[sel], marker="_", s=(220 / n_bins) ** 2,
                   color=_MEAN, linewidths=2, zorder=3)
        ax.plot([0, 1], [0, 1], color="#555555", linestyle="--", linewidth=1)
        for x, y, n in zip(centers, accuracy, count_of[sel], strict=True):
            inside = float(y) > 0.25
            ax.text(x, 0.015 if inside else float(y) + 0.015, f"{int(n):,}", ha="center",
                    va="bottom", fontsize=6, rotation=90, color="white" if inside else "#333333")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("confidence (max probability)", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        if grouping == "overall":
            row = result.overall
        else:
            # Find the panel's group by the label it was drawn under (a null key included).
            df = result.groups[grouping]
            if labels is None:
                labels = [group_label(r, [grouping]) for r in df[[grouping]].to_dict("records")]
            row = df.iloc[labels.index(group)]
        ax.set_title(_panel_title(grouping, group, row, splits), fontsize=9)
    handles = [_patch(color=_BAR, alpha=0.85, label="accuracy per bin"),
               _line(color=_MEAN, linewidth=2, label="mean confidence in the bin"),
               _line(color="#555555", linestyle="--", linewidth=1, label="perfect calibration")]
    sub = f"{n_bins} equal-width confidence bins; numbers in the bars: rows per bin"
    if len(splits) < n_splits:  # a line of its own: one line would run off the figure
        sub += (f"\nthe {len(splits)} splits of highest ECE of {n_splits:,} "
                "(every split's bins in calibration.parquet)")
    _finish(fig, f"Reliability diagram \u2014 {_input_name(result)}", sub, handles)
    _save(fig, path)


def _reliability_splits(result: Any, calib: pd.DataFrame) -> tuple[list[str], int]:
    """The splits the reliability diagram draws beside the overall panel (labels of
    ``calib``'s ``group``) and how many splits there are: all of them when they fit
    (``MAX_RELIABILITY_PANELS - 1``, in table order), else those of highest ECE (ties and
    splits without one in table order, those without one last), as the other capped
    figures show the worst groups."""
    grouping_of = calib["grouping"].to_numpy(dtype=object)
    splits = list(pd.unique(calib["group"].to_numpy(dtype=object)[grouping_of == "split"]))
    room = MAX_RELIABILITY_PANELS - 1
    if len(splits) <= room:
        return splits, len(splits)
    df = result.groups.get("split") if hasattr(result.groups, "get") else None
    ece: dict[Any, float] = {}
    if df is not None and "ece" in df.columns:
        labels = [group_label(r, ["split"]) for r in df[["split"]].to_dict("records")]
        ece = dict(zip(labels, df["ece"].to_numpy(dtype=float), strict=True))

    def worst_first(i: int) -> tuple[bool, float, int]:
        e = ece.get(splits[i], math.nan)
        return (not math.isfinite(e), -e if math.isfinite(e) else 0.0, i)

    return [splits[i] for i in sorted(range(len(splits)), key=worst_first)[:room]], len(splits)


# --------------------------------------------------------------------------- #
# History (evalkit history)
# --------------------------------------------------------------------------- #

_PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
            "#8C8C8C", "#CCB974", "#64B5CD"]


def history_x(run: pd.Series, runs: pd.DataFrame | None = None) -> np.ndarray:
    """x positions of a history plot: the run number (1-based, in start-time order), so runs
    started within the same second (or the same day) never share a position; the axis is
    labelled with the runs' dates (:func:`write_history_plot`)."""
    return np.asarray(run, dtype=np.float64)


def _history_axes(ax: Any, runs: pd.DataFrame | None) -> list[Any]:
    """x ticks ``N: date`` of run N, a dashed line where a segment starts (its legend
    handle is returned), few ticks on both axes (creating and laying out tick labels is most
    of a figure's drawing time)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    handles = []
    dates: dict[int, str] = {}
    if runs is not None and len(runs):
        days = pd.DatetimeIndex(runs["created"]).strftime("%Y-%m-%d")
        dates = dict(zip(runs["run"].astype("int64").tolist(), days, strict=True))
        starts = runs["run"][runs["note"].str.contains("segment", na=False)]
        for r in starts:
            ax.axvline(float(r), color=_REF, linestyle="--", linewidth=1)
        if len(starts):
            handles.append(_line(color=_REF, linestyle="--", linewidth=1,
                                 label="settings change (eps / classes / weight)"))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.xaxis.set_major_formatter(FuncFormatter(
        lambda v, _pos: f"{int(v)}: {dates[int(v)]}" if v == int(v) and int(v) in dates else ""))
    ax.set_xlabel("run: start date", fontsize=9)
    ax.set_ylabel("mean cross-entropy loss", fontsize=10)
    return handles


def _history_series(table: pd.DataFrame, cols: list[str], picks: pd.DataFrame,
                    runs: pd.DataFrame | None) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The lines of a history plot: ``(label, x, mean, ci_low, ci_high)`` each, in run order;
    one ``overall`` line, or one per picked group in the order of ``picks`` (history.md's:
    worse first, as the subtitle says; rt-hist8 F2), a group the table lacks left out
    (missing keys are one group, as ``merge`` and ``groupby(dropna=False)`` make them)."""

    run = table["run"].to_numpy()
    values = [table[c].to_numpy(dtype=float) for c in ("mean", "ci_low", "ci_high")]
    groups: list[tuple[str, np.ndarray]] = []
    if not cols:
        groups.append(("overall", np.arange(len(table))))
    else:
        def norm(key: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(_NULL_KEY if is_missing(v) else v for v in key)

        rank: dict[tuple[Any, ...], int] = {}
        for k in zip(*(picks[c].tolist() for c in cols), strict=True):
            rank.setdefault(norm(k), len(rank))
        wanted = rank
        where: dict[tuple[Any, ...], list[int]] = {}
        first: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        for i, key in enumerate(zip(*(table[c].tolist() for c in cols), strict=True)):
            k = norm(key)
            if k in wanted:
                where.setdefault(k, []).append(i)
                first.setdefault(k, key)
        ordered = sorted(where.items(), key=lambda item: rank[item[0]])
        labels = _distinct_truncations([_key_label(first[k]) for k, _ in ordered])
        for label, (_k, rows) in zip(labels, ordered, strict=True):
            groups.append((label, np.asarray(rows, dtype=np.int64)))
    out = []
    for label, rows in groups:
        rows = rows[np.argsort(run[rows], kind="stable")]
        out.append((label, history_x(pd.Series(run[rows]), runs), *(v[rows] for v in values)))
    return out


_NULL_KEY = object()  # every missing key value (None, NaN, NaT, pd.NA) as one


def _band_polygons(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
    """The polygons ``Axes.fill_between(x, lo, hi)`` fills: one per run of points where
    all three are finite, along ``lo`` and back along ``hi``."""
    ok = np.isfinite(x) & np.isfinite(lo) & np.isfinite(hi)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.view(np.int8), [0]))))
    polys = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        n = b - a
        pts = np.empty((2 * n + 2, 2))
        pts[0] = x[a], hi[a]
        pts[1:n + 1, 0], pts[1:n + 1, 1] = x[a:b], lo[a:b]
        pts[n + 1] = x[b - 1], hi[b - 1]
        pts[n + 2:, 0], pts[n + 2:, 1] = x[a:b][::-1], hi[a:b][::-1]
        polys.append(pts)
    return polys


def _draw_history_series(ax: Any, series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> list[Any]:
    """Each series' line (markers on short series) over its confidence band, clipped at 0
    (a mean loss is never below), the bands as one collection (drawn under every line, as
    separate ``fill_between`` calls are, each polygon blended in turn); returns the legend
    handles."""
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D

    polys: list[np.ndarray] = []
    colors: list[str] = []
    handles = []
    for i, (label, x, mean, lo, hi) in enumerate(series):
        color = _PALETTE[i % len(_PALETTE)]
        # a mean loss is >= 0: the band of a tiny group (t interval, n = 2) stops at 0
        # (rt-final8 F6); the tables keep the interval as computed
        bands = _band_polygons(x, np.maximum(lo, 0.0), np.maximum(hi, 0.0))
        polys += bands
        colors += [color] * len(bands)
        marker = "o" if len(x) <= 60 else "None"
        ax.add_line(Line2D(x, mean, color=color, linewidth=1.3, marker=marker, markersize=2.5))
        handles.append(_line(color=color, linewidth=1.3, label=label))
    if polys:
        ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors=colors, linewidths=0,
                                         alpha=0.18))
    ax.set_autoscaley_on(True)  # a kept figure's last plot may have ended its axis (_cut_bands)
    ax.autoscale_view()
    return handles


def _laid_out_once(legend: Any) -> Any:
    """``legend`` drawn with each of its boxes laid out once per drawing: returns it.

    matplotlib lays a legend out as nested boxes (rows of handle and label, columns, the
    whole) and every level's ``draw`` computes its children's sizes and offsets again, so a
    label is measured once per level above it (about a third of a history figure's drawing
    time). While the legend draws, each box's layout (``_get_bbox_and_child_offsets``, a
    label's ``get_bbox``) is computed once and remembered; nothing it depends on changes
    during a drawing, so the positions, and the pixels, are matplotlib's (tested). Outside
    a drawing, and at its end, nothing is remembered (a relabelled legend is laid out anew)."""
    from matplotlib.offsetbox import OffsetBox, PackerBase, TextArea

    memo: dict[int, Any] = {}
    drawing = [False]

    def remember(box: Any, name: str) -> None:
        compute = getattr(box, name)

        def once(renderer: Any) -> Any:
            if not drawing[0]:
                return compute(renderer)
            key = id(box)
            if key not in memo:
                memo[key] = compute(renderer)
            return memo[key]

        setattr(box, name, once)

    boxes = [legend._legend_box]
    while boxes:
        box = boxes.pop()
        if isinstance(box, PackerBase):
            remember(box, "_get_bbox_and_child_offsets")
        elif isinstance(box, TextArea):
            remember(box, "get_bbox")
        boxes += [c for c in box.get_children() if isinstance(c, OffsetBox)]
    draw = legend.draw

    def draw_once(renderer: Any) -> Any:
        drawing[0] = True
        try:
            return draw(renderer)
        finally:
            drawing[0] = False
            memo.clear()

    legend.draw = draw_once
    return legend


#: Columns of a history plot's legend (fewer when its labels would not fit across the figure).
LEGEND_COLUMNS = 4
#: The figure's bottom margin (axes fraction) below a history plot's axes: the x tick labels,
#: the axis label and a legend of up to :data:`LEGEND_ROWS` rows.
HISTORY_BOTTOM = 0.25
LEGEND_ROWS = 3


def _fits_surely(fig: Any, entries: list[Any], columns: int) -> bool:
    """Whether a legend of ``entries`` in ``columns`` columns surely fits across ``fig``,
    with no text measured: every character counted as wide as the font size (an upper
    bound: a CJK character is that wide), each column as wide as its longest label, plus
    matplotlib's handle, padding and column spacing (in font sizes)."""
    ncol = max(1, min(columns, len(entries)))
    labels = [len(str(h.get_label())) for h in _row_major(entries, ncol)]
    rows = -(-len(labels) // ncol)
    longest = [max(labels[c * rows:(c + 1) * rows], default=0) for c in range(ncol)]
    em = 8 * fig.dpi / 72  # the legend's font size in pixels
    width = em * (sum(longest) + ncol * (2.0 + 0.8) + (ncol - 1) * 2.0 + 2 * 0.4 + 2)
    return width <= fig.bbox.width * 0.98


def _history_legend(fig: Any, entries: list[Any]) -> int:
    """Add the legend of a history plot below its axes, read row by row
    (:func:`_row_major`): :data:`LEGEND_COLUMNS` columns, or as many as fit across the
    figure (long labels: the legend is measured, rt-hist8 F5: it ran off both edges); more
    rows than :data:`LEGEND_ROWS` move the axes up to make room (the figure keeps its size).
    Returns its number of columns."""
    ncol = min(LEGEND_COLUMNS, len(entries))
    while True:
        legend = fig.legend(handles=_row_major(entries, ncol), loc="lower center", ncol=max(ncol, 1), fontsize=8,
                            frameon=False)
        if ncol <= 1 or _fits_surely(fig, entries, ncol):
            break
        box = legend.get_window_extent(fig.canvas.get_renderer())
        if box.width <= fig.bbox.width * 0.98:
            break
        legend.remove()
        ncol -= 1
    rows = -(-len(entries) // max(ncol, 1))
    extra = max(0, rows - LEGEND_ROWS) * 8 * (1 + 0.5) / 72  # a row: the font size and labelspacing, inches
    fig.subplots_adjust(bottom=min(0.6, HISTORY_BOTTOM + extra / fig.get_figheight()))
    _laid_out_once(legend)
    return ncol


def _row_major(handles: list[Any], columns: int) -> list[Any]:
    """``handles`` reordered so that a legend of ``columns`` columns, which matplotlib fills
    column by column (its first ``len % columns`` columns one entry longer), reads them in
    their order row by row, left to right (rt-hist8 F2: the groups worse first)."""
    n = len(handles)
    ncol = min(columns, n)
    if ncol <= 1:
        return list(handles)
    rows, longer = divmod(n, ncol)
    return [handles[r * ncol + c] for c in range(ncol) for r in range(rows + (c < longer))]


#: Figures kept for the next plot of the same kind, in a process that draws many
#: (:func:`keep_figures`); None: every plot gets a new figure.
_kept: dict[str, Any] | None = None


def keep_figures() -> None:
    """From now on, draw each history plot on the figure of the previous one (set in the
    drawing helpers of ``evalkit history``, which draw one per grouping): the figure, its
    axes and their tick objects are built once, each plot replaces the lines, bands,
    segment lines and title, the limits follow its data, and the legend is rebuilt (or,
    when its entries differ only by their labels, relabelled). The PNG is byte for byte
    the one a new figure gives (tested); a quarter less drawing time."""
    global _kept
    if _kept is None:
        _kept = {}


def write_history_plot(table: pd.DataFrame, grouping: str, picks: pd.DataFrame, path: Path,
                       runs: pd.DataFrame | None = None, groups: int | None = None) -> str:
    """Line plot of a grouping's mean loss over the runs of ``evalkit history``.

    ``table`` is the tidy history (``run``, key columns, ``mean``, ``ci_low``, ``ci_high``);
    ``picks`` the groups to draw (their key columns; for ``overall`` the one line is drawn);
    ``runs`` the history's runs (``run``, ``created``, ``note``); ``groups`` the grouping's
    number of groups, when more than are drawn (the subtitle then says "8 of 820 groups
    (history.md's first 8)", rt-final8 F9). x is the run number
    (:func:`history_x`), ticks labelled with the run number and its start date. Each line gets a band
    of its confidence interval; runs where a new segment starts get a dashed vertical line.
    Legend labels show keys as the tables do (:func:`evalkit.escape.fmt_key`: a null key is
    ``∅``, the empty string ``""``). Returns the title, or ``""`` when there is nothing to
    draw. Needs matplotlib (:func:`plots_available`). Characters the font lacks: one
    :class:`PlotFontWarning` (:func:`font_note`).

    Drawn for speed (a nightly history draws one per grouping): fixed margins instead of
    the layout engine, markers only on short series, the bands as one collection, fast PNG
    compression.
    """
    with font_note(), literal_text():
        return _write_history_plot(table, grouping, picks, path, runs, groups)


#: A history plot's y axis ends at this many times its largest plotted mean when a band
#: reaches above (a group of two rows has a t interval tens of times its mean: rt-final9 F6).
BAND_CAP = 2.0


def _cut_bands(ax: Any, series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> bool:
    """End the y axis at :data:`BAND_CAP` times the largest plotted mean when a band reaches
    above it (the lines, not one tiny group's interval, set the scale); True when cut."""
    means = [m[np.isfinite(m)] for _label, _x, m, _lo, _hi in series]
    highs = [h[np.isfinite(h)] for _label, _x, _m, _lo, h in series]
    top = max((float(m.max()) for m in means if len(m)), default=np.nan)
    high = max((float(h.max()) for h in highs if len(h)), default=np.nan)
    if not (np.isfinite(top) and top > 0 and high > BAND_CAP * top):
        return False
    # the bottom as autoscaling would set it for the drawn range (bands stop at 0)
    lows = [np.maximum(v[np.isfinite(v)], 0.0) for _label, _x, m, lo, _hi in series for v in (m, lo)]
    low = min((float(v.min()) for v in lows if len(v)), default=0.0)
    cap = BAND_CAP * top
    ax.set_ylim(low - 0.05 * (cap - low), cap)
    return True


def _history_heading(title: str, cols: list[str], drawn: int, groups: int | None, cut: bool = False) -> str:
    """A history plot's two heading lines: the title, what is drawn in which order, and
    what the bands are. A capped plot says how many groups the grouping has (rt-final8 F9),
    and bands cut by the axis say so (rt-final9 F6); the bands note is then on the title
    line (both would not fit on one line across the figure)."""
    bands = "bands: confidence interval of each run's mean" + (
        f", cut at {BAND_CAP:g}x the largest mean" if cut else "")
    if not cols:
        return f"{title}\n{bands}"
    order = "worse first (flagged rises, other rises, then drops)"
    if groups is not None and groups > drawn:
        return f"{title} ({bands})\n{drawn} of {groups:,} groups (history.md's first {drawn}), {order}"
    if cut:
        return f"{title} ({bands})\n{drawn} group(s), {order}"
    return f"{title}\n{drawn} group(s), {order}; {bands}"


def _write_history_plot(table: pd.DataFrame, grouping: str, picks: pd.DataFrame, path: Path,
                        runs: pd.DataFrame | None, groups: int | None = None) -> str:
    from matplotlib.figure import Figure

    cols = [] if grouping == "overall" else grouping.split(",")
    if table.empty:
        return ""
    series = _history_series(table, [history_key_column(c) for c in cols], picks, runs)  # (--by t: input:t)
    fig, keys = _kept.pop("history", (None, None)) if _kept is not None else (None, None)
    if fig is not None:  # the last history plot's figure: its data and limits go
        ax = fig.axes[0]
        for artist in [*ax.lines, *ax.collections]:
            artist.remove()
        ax.relim()
    else:
        fig = Figure(figsize=(WIDTH, 4.4), dpi=DPI)
        _canvas(fig)
        fig.subplots_adjust(left=0.09, right=0.98, top=0.84, bottom=HISTORY_BOTTOM)
        ax = fig.add_subplot()
        _style(ax)
        ax.grid(axis="y", color="#dddddd", linewidth=0.8)
        ax.set_axisbelow(True)
    entries = _draw_history_series(ax, series) + _history_axes(ax, runs)
    cut = _cut_bands(ax, series)
    what = "overall" if not cols else ", ".join(cols)
    title = f"Mean loss over runs \u2014 {what}"
    fig.suptitle(_history_heading(title, cols, len(series), groups, cut), x=0.01, ha="left", fontsize=10.5,
                 linespacing=1.4)
    handles = _row_major(entries, LEGEND_COLUMNS)
    # the legend of the last plot serves when only its labels differ (same entries otherwise)
    # and they surely fit across the figure in as many columns
    style = ([(h.get_color(), h.get_linestyle(), h.get_linewidth()) for h in handles],
             min(LEGEND_COLUMNS, len(handles)))
    if fig.legends and keys == style and _fits_surely(fig, entries, LEGEND_COLUMNS):
        for text, handle in zip(fig.legends[0].get_texts(), handles, strict=True):
            text.set_text(handle.get_label())
    else:
        for legend in fig.legends:
            legend.remove()
        style = (style[0], _history_legend(fig, entries))
    _write_png(fig, path)
    if _kept is not None:  # kept only once drawn without error
        _kept["history"] = (fig, style)
    return title
