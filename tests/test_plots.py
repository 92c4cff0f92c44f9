"""Tests for evalkit.plots (PNG charts for the report)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import evalkit
from evalkit.aggregate import GroupStats
from evalkit.plots import class_histograms, plots_available, write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIGITS = Path(__file__).resolve().parent.parent / "sample_data" / "digits.parquet"


def _probs_frame(n: int, classes: list[str], seed: int = 0, **extra: object) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(len(classes), 0.3), n)
    df = pd.DataFrame(p, columns=[f"prob_{c}" for c in classes])
    df["label"] = rng.choice(classes, n)
    for k, v in extra.items():
        df[k] = v
    return df


def _stats_from_rows(result: evalkit.EvalResult) -> GroupStats:
    """The per-class GroupStats an evaluation would hold, rebuilt from its rows."""
    rows = result.rows
    gs = GroupStats(("class",), eps=result.metadata["eps"])
    # Two batches, so the histogram counts accumulate across updates.
    for part in np.array_split(np.arange(len(rows)), 2):
        sub = rows.iloc[part]
        gs.update([pa.array(sub["label"].astype(str).tolist(), type=pa.string())],
                  sub["loss"].to_numpy(), sub["clipped_low"].to_numpy(), sub["correct"].to_numpy(),
                  clipped_high=sub["clipped_high"].to_numpy())
    return gs


def _assert_pngs(out: Path, written: list[tuple[str, str]]) -> None:
    assert written
    for title, name in written:
        assert title
        assert "/" not in name and name.endswith(".png")
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000


# -- availability ----------------------------------------------------------------------


def test_plots_available_true_with_matplotlib() -> None:
    pytest.importorskip("matplotlib")
    assert plots_available() is True


def test_plots_available_false_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert plots_available() is False


# -- class_histograms ------------------------------------------------------------------


def test_class_histograms_sums_equal_class_counts() -> None:
    result = evalkit.evaluate(DIGITS)
    ch = class_histograms(_stats_from_rows(result))
    edges = ch["edges"]
    assert edges.ndim == 1 and np.all(np.diff(edges) > 0)
    n_bins = len(edges) - 1
    assert 30 <= n_bins <= 60
    table = result.groups["class"].set_index("class")
    assert list(ch["counts"]) == [str(c) for c in table.index]
    for name, counts in ch["counts"].items():
        assert counts.shape == (n_bins,)
        assert int(counts.sum()) == int(table.loc[name, "count"])
    # The edges cover every loss (trimmed to the occupied range).
    loss = result.rows["loss"].to_numpy()
    assert edges[0] <= loss.min() * 1.001 and edges[-1] >= loss.max() / 1.001


def test_class_histograms_single_group_and_empty() -> None:
    gs = GroupStats(("class",))
    empty = class_histograms(gs)
    assert empty["counts"] == {} and len(empty["edges"]) >= 2
    gs.update([pa.array(["only"] * 3)], np.array([0.1, 0.1, 0.1]), np.zeros(3, bool),
              np.ones(3, bool))
    ch = class_histograms(gs)
    assert list(ch["counts"]) == ["only"]
    assert int(ch["counts"]["only"].sum()) == 3
    assert ch["edges"][0] <= 0.1 <= ch["edges"][-1]


# -- write_plots -----------------------------------------------------------------------


def test_write_plots_digits(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = evalkit.evaluate(DIGITS)
    ch = class_histograms(_stats_from_rows(result))
    written = write_plots(result, tmp_path, ch)
    names = [n for _, n in written]
    assert names == ["loss_by_class.png", "mean_loss_by_class.png", "mean_loss_by_split.png",
                     "reliability.png"]
    titles = dict((n, t) for t, n in written)
    assert titles["reliability.png"] == "Reliability diagram (overall and by split)"
    _assert_pngs(tmp_path, written)
    # Deterministic: same inputs, same bytes.
    again = tmp_path / "again"
    write_plots(result, again, ch)
    for n in names:
        assert (again / n).read_bytes() == (tmp_path / n).read_bytes()


def test_write_plots_without_histograms_and_combined_grouping(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    df = _probs_frame(300, ["a", "b", "c"], split=np.repeat(["train", "test"], 150),
                      region=np.tile(["EU", "US", "APAC"], 100))
    result = evalkit.evaluate(df, by=["region", ["split", "region"]])
    written = write_plots(result, tmp_path)
    assert [n for _, n in written] == ["loss_by_class.png", "mean_loss_by_class.png",
                                       "mean_loss_by_split.png", "mean_loss_by_region.png",
                                       "mean_loss_by_split_region.png", "reliability.png"]
    _assert_pngs(tmp_path, written)


def test_write_plots_one_class_with_data(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    df = _probs_frame(5, ["a", "b"])
    df["label"] = "a"
    result = evalkit.evaluate(df)
    for ch in (class_histograms(_stats_from_rows(result)), None):
        written = write_plots(result, tmp_path, ch)
        _assert_pngs(tmp_path, written)
        assert "loss_by_class.png" in [n for _, n in written]


def test_write_plots_many_classes_are_capped(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    classes = [f"class_with_a_rather_long_name_{i:04d}" for i in range(1000)]
    result = evalkit.evaluate(_probs_frame(3000, classes))
    ch = class_histograms(_stats_from_rows(result))
    written = write_plots(result, tmp_path, ch)
    _assert_pngs(tmp_path, written)
    titles = dict((n, t) for t, n in written)
    n_with_data = int((result.groups["class"]["count"] > 0).sum())
    assert titles["loss_by_class.png"] == (
        f"Loss distribution by true class (30 of {n_with_data:,}: highest and lowest mean loss)")
    assert titles["mean_loss_by_class.png"] == (
        f"Mean loss by class (40 of {n_with_data:,}: highest and lowest mean loss)")
    # Sensible size: the figure does not grow with the number of classes.
    from matplotlib.image import imread

    h, w = imread(tmp_path / "mean_loss_by_class.png").shape[:2]
    assert 800 <= w <= 1000 and h <= 1600


def test_write_plots_groups_with_count_one(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    region = ["EU"] * 50 + ["US"] * 49 + ["a very long region name that needs truncation " * 3]
    df = _probs_frame(100, ["x", "y", "z"], region=region)
    result = evalkit.evaluate(df, by="region")
    table = result.groups["region"]
    assert table["std"].isna().any()  # the one-row group has no std
    written = write_plots(result, tmp_path, class_histograms(_stats_from_rows(result)))
    _assert_pngs(tmp_path, written)
    assert "mean_loss_by_region.png" in [n for _, n in written]


#: A Markdown image whose destination is written without <...>: CommonMark then allows no
#: space or control character, and only balanced parentheses.
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^\s()<>]*(?:\([^\s()<>]*\)[^\s()<>]*)*)\)")


def test_plot_links_resolve_whatever_the_names(tmp_path: Path) -> None:
    """Groupings named with spaces, unicode and parentheses: every image link in report.md
    is a valid CommonMark destination that names a PNG of the report."""
    pytest.importorskip("matplotlib")
    from urllib.parse import unquote

    from evalkit.report import render_markdown

    rng = np.random.default_rng(0)
    n = 60
    p = rng.dirichlet([1, 1], n)
    df = pd.DataFrame({"prob_a": p[:, 0], "prob_b": p[:, 1], "label": rng.integers(0, 2, n),
                       "région (EU)": rng.choice(["x", "y"], n), "a b#c": rng.choice(["u", "v"], n)})
    result = evalkit.evaluate(df, by=["région (EU)", ["région (EU)", "a b#c"]])
    out = result.write(tmp_path / "rep (1) é")
    text = (out / "report.md").read_text(encoding="utf-8")
    links = [m for line in text.splitlines() if line.startswith("![") for m in _IMAGE.findall(line)]
    assert len(links) == text.count("![") >= 3
    for target in links:
        assert (out / unquote(target)).is_file(), target
    # The renderer itself, given names that need escaping.
    odd = ["mean loss (EU).png", "région é.png", "a#b?c.png", "sub dir/x y.png"]
    text = render_markdown(result, plots=[(name, name) for name in odd])
    found = [m for line in text.splitlines() if line.startswith("![") for m in _IMAGE.findall(line)]
    assert [unquote(t) for t in found] == odd


# -- layout (plots._place) -----------------------------------------------------------------


def _drawn_figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Keep each figure write_plots saves (after it was drawn), by file name."""
    from evalkit import plots

    figures: dict[str, object] = {}
    real = plots._save

    def keep(fig, path):
        real(fig, path)
        figures[Path(path).name] = fig

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def _check_layout(fig) -> None:
    """Every text inside the figure; axes decorations clear of each other: tick labels
    left / right of their axes, titles above, x labels below, the legend below every axes'
    decorations and the suptitle above them."""
    renderer = fig.canvas.get_renderer()
    W, H = fig.bbox.width, fig.bbox.height
    from evalkit.plots import shown_ticklabels

    texts = [*fig.texts, *(t for lg in fig.legends for t in lg.get_texts())]
    for ax in fig.axes:
        texts += [*ax.texts, ax.title, ax.xaxis.label, ax.yaxis.label,
                  *shown_ticklabels(ax.xaxis), *shown_ticklabels(ax.yaxis)]
    texts = [t for t in texts if t.get_visible() and t.get_text()]
    for t in texts:
        bb = t.get_window_extent(renderer)
        assert bb.x0 >= -1 and bb.y0 >= -1 and bb.x1 <= W + 1 and bb.y1 <= H + 1, (t.get_text(), bb, W, H)
    decorated = []
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for lab in shown_ticklabels(ax.yaxis):
            if lab.get_text():
                bb = lab.get_window_extent(renderer)
                assert bb.x1 <= box.x0 + 1 or bb.x0 >= box.x1 - 1, (lab.get_text(), bb, box)
        if ax.title.get_text():
            assert ax.title.get_window_extent(renderer).y0 >= box.y1 - 1
        if ax.xaxis.label.get_text():
            assert ax.xaxis.label.get_window_extent(renderer).y1 <= box.y0 + 1
        decorated.append(ax.get_tightbbox(renderer))
    for legend in fig.legends:
        top = legend.get_window_extent(renderer).y1
        assert all(top <= d.y0 + 1 for d in decorated), (top, [d.y0 for d in decorated])
    if fig._suptitle is not None:
        bottom = fig._suptitle.get_window_extent(renderer).y0
        assert all(bottom >= d.y1 - 1 for d in decorated), (bottom, [d.y1 for d in decorated])
    # Cells of a grid do not overlap (reliability panels).
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes]
    specs = [(ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) for ax in fig.axes]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            if specs[i] != specs[j]:  # a twin shares its parent's cell
                a, b = boxes[i], boxes[j]
                overlap_w = min(a.x1, b.x1) - max(a.x0, b.x0)
                overlap_h = min(a.y1, b.y1) - max(a.y0, b.y0)
                assert overlap_w <= 1 or overlap_h <= 1, (specs[i], specs[j], a, b)


def _layout_case(case: str) -> evalkit.EvalResult:
    """An evaluation whose plots stress the layout: the digits sample, long and unusual
    labels, 200 long class names, five splits."""
    if case == "digits":
        return evalkit.evaluate(DIGITS)
    if case == "long_labels":
        region = (["a very long region name that needs truncation"] * 40 + ["EU"] * 40
                  + ["région \u00e9 (x) $y$"] * 20)
        return evalkit.evaluate(_probs_frame(100, ["x" * 40, "y", "z"], region=region), by="region")
    if case == "many_classes":
        classes = [f"class_with_a_rather_long_name_{i:04d}" for i in range(200)]
        return evalkit.evaluate(_probs_frame(2000, classes))
    split = np.repeat(["train", "test", "val", "holdout", "a rather long split name"], 60)
    return evalkit.evaluate(_probs_frame(300, ["a", "b", "c"], split=split))


@pytest.mark.parametrize("case", ["digits", "long_labels", "many_classes", "five_splits"])
def test_every_plot_is_laid_out_inside_the_figure_without_overlaps(tmp_path: Path, monkeypatch, case) -> None:
    """plots._place positions axes from measured text (no layout engine): whatever the
    labels, nothing leaves the figure or runs into its neighbour."""
    pytest.importorskip("matplotlib")
    result = _layout_case(case)
    figures = _drawn_figures(monkeypatch)
    for hist in (class_histograms(_stats_from_rows(result)), None):
        written = write_plots(result, tmp_path, hist)
        _assert_pngs(tmp_path, written)
        assert set(figures) == {n for _, n in written}
        for name, fig in figures.items():
            try:
                _check_layout(fig)
            except AssertionError as exc:
                raise AssertionError(f"{case}: {name}: {exc}") from None
        figures.clear()


@pytest.mark.parametrize("with_hist", [True, False])
def test_minor_tick_marks_are_the_pixels_of_matplotlibs_minor_ticks(tmp_path: Path, monkeypatch,
                                                                    with_hist: bool) -> None:
    """plots._minor_marks draws the log axis' minor ticks as one line of marks: the PNG is
    the one matplotlib draws with its own minor tick objects, pixel for pixel."""
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from evalkit import plots

    for name, result in [("digits", evalkit.evaluate(DIGITS)),
                         ("narrow", evalkit.evaluate(_probs_frame(400, ["a", "b"], seed=3)))]:
        hist = class_histograms(_stats_from_rows(result)) if with_hist else None
        write_plots(result, tmp_path / f"{name}_marks", hist, only=["loss_by_class.png"])
        with monkeypatch.context() as m:
            m.setattr(plots, "_minor_marks", lambda ax: None)  # matplotlib's own minor ticks
            write_plots(result, tmp_path / f"{name}_ticks", hist, only=["loss_by_class.png"])
        a = imread(tmp_path / f"{name}_marks" / "loss_by_class.png")
        b = imread(tmp_path / f"{name}_ticks" / "loss_by_class.png")
        assert a.shape == b.shape and np.array_equal(a, b), name


# -- history plots -----------------------------------------------------------------------------


def _history_input(n_runs: int, cols: list[str], groups: list[tuple], picked: list[tuple],
                   segments: tuple[int, ...] = (), seed: int = 0) -> tuple[pd.DataFrame, str, pd.DataFrame, pd.DataFrame]:
    """A history plot's arguments: ``groups`` (key tuples) over ``n_runs`` runs, each missing
    from one run; one CI missing; ``picked`` the groups drawn; segments start at ``segments``."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(1, n_runs + 1):
        for j, key in enumerate(groups):
            if r == 3 + j:
                continue  # not in this run
            m = 0.4 + 0.05 * j + 0.01 * rng.standard_normal()
            rows.append({"run": r, **dict(zip(cols, key, strict=True)), "mean": m, "ci_low": m - 0.02,
                         "ci_high": m + 0.02})
    table = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    if len(table) > 5:
        table.loc[5, "ci_low"] = np.nan
    picks = pd.DataFrame(picked, columns=cols) if cols else pd.DataFrame()
    runs = pd.DataFrame({"run": np.arange(1, n_runs + 1),
                         "created": pd.date_range("2026-01-01T02:30:00Z", periods=n_runs, freq="D"),
                         "note": ["segment 2 starts" if r in segments else "" for r in range(1, n_runs + 1)]})
    return table, ",".join(cols) if cols else "overall", picks, runs


_HISTORY_CASES = {
    "overall": _history_input(40, [], [()], [], segments=(20,)),
    "region": _history_input(30, ["region"], [("EU",), (None,), ("",), ("US",), ("APAC",)],
                             [("US",), ("",), (None,), ("EU",)], segments=(7, 19)),
    "region_other_labels": _history_input(30, ["region"], [("EU",), (None,), ("",), ("US",), ("b" * 30,)],
                                          [("b" * 30,), ("EU",), ("US",), ("",)], segments=(7, 19), seed=1),
    "two_columns_long": _history_input(90, ["region", "split"], [(a, b) for a in ("EU", "US", "a" * 40)
                                                                 for b in (1, 2)],
                                       [("US", 2), ("a" * 40, 1), ("EU", 1)], seed=3),
}


def _history_series_reference(table: pd.DataFrame, cols: list[str], picks: pd.DataFrame) -> list[tuple]:
    """The series as the plot draws them, with pandas (merge, then groupby in the picks' order)."""
    from evalkit.escape import fmt_key, terminal
    from evalkit.plots import _truncate

    if not cols:
        parts = [("overall", table)]
    else:
        sel = picks[cols].drop_duplicates().merge(table, on=cols, how="inner")
        parts = [(_truncate(", ".join(terminal(fmt_key(v)) for v in (k if isinstance(k, tuple) else (k,)))), p)
                 for k, p in sel.groupby(cols, sort=False, dropna=False, observed=True)]
    return [(label, *(p.sort_values("run")[c].to_numpy(float) for c in ("run", "mean", "ci_low", "ci_high")))
            for label, p in parts]


@pytest.mark.parametrize("case", sorted(_HISTORY_CASES))
def test_history_plot_draws_every_series_band_label_and_segment(tmp_path: Path, monkeypatch, case) -> None:
    """What a reader sees: one line per picked group (labels as the tables show keys, in the
    picks' order: history.md's, worse first), its CI band (one polygon per stretch of runs with both bounds), markers
    on series of up to 60 runs, a dashed line per segment start, legend and title."""
    pytest.importorskip("matplotlib")
    from matplotlib.collections import PolyCollection

    from evalkit import plots

    table, grouping, picks, runs = _HISTORY_CASES[case]
    cols = [] if grouping == "overall" else grouping.split(",")
    want = _history_series_reference(table, cols, picks)
    got = plots._history_series(table, cols, picks, runs)
    assert [s[0] for s in got] == [s[0] for s in want]
    if cols:  # rt-hist8 F2: the legend in the stated order (the picks'), not the table's
        back = plots._history_series(table, cols, picks.iloc[::-1], runs)
        assert [s[0] for s in back] == [s[0] for s in _history_series_reference(table, cols, picks.iloc[::-1])]
        assert [s[0] for s in back] == [s[0] for s in got][::-1]
    for g, w in zip(got, want, strict=True):
        for a, b in zip(g[1:], w[1:], strict=True):
            np.testing.assert_array_equal(a, b)
    figures = []
    real = plots._write_png
    monkeypatch.setattr(plots, "_write_png", lambda fig, path: (figures.append(fig), real(fig, path)))
    title = plots.write_history_plot(table, grouping, picks, tmp_path / "h.png", runs)
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC
    (fig,) = figures
    (ax,) = fig.axes
    n_seg = int(runs["note"].str.contains("segment").sum())
    data_lines, seg_lines = ax.lines[:len(want)], ax.lines[len(want):]
    assert len(seg_lines) == n_seg and all(ln.get_linestyle() == "--" for ln in seg_lines)
    for line, (_label, x, mean, _lo, _hi) in zip(data_lines, want, strict=True):
        np.testing.assert_array_equal(line.get_xdata(), x)
        np.testing.assert_array_equal(line.get_ydata(), mean)
        assert line.get_marker() == ("o" if len(x) <= 60 else "None")
    (bands,) = ax.collections
    assert isinstance(bands, PolyCollection)
    stretches = sum(len(plots._band_polygons(x, lo, hi)) for _l, x, _m, lo, hi in want)
    assert len(bands.get_paths()) == stretches >= len(want)
    (legend,) = fig.legends
    labels = [t.get_text() for t in legend.get_texts()]  # column by column, as matplotlib fills them
    columns = [list(c) for c in np.array_split(np.array(labels, dtype=object), min(4, len(labels))) if len(c)]
    read = [c[r] for r in range(len(columns[0])) for c in columns if r < len(c)]  # row by row
    assert read == [s[0] for s in want] + (["settings change (eps / classes / weight)"] if n_seg else [])
    assert fig._suptitle.get_text().startswith(title) and title == f"Mean loss over runs \u2014 {grouping.replace(',', ', ')}"


def test_band_polygons_are_those_of_fill_between() -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from evalkit.plots import _band_polygons

    x = np.arange(1.0, 11.0)
    lo = np.array([1, 2, np.nan, 4, 5, 6, 7, np.nan, np.nan, 9.0])
    hi = lo + 1.5
    ax = Figure().add_subplot()
    want = [p.vertices[:-1] for p in ax.fill_between(x, lo, hi).get_paths()]  # without the closing vertex
    got = _band_polygons(x, lo, hi)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_history_plots_on_a_kept_figure_are_the_pngs_of_new_figures(tmp_path: Path, monkeypatch) -> None:
    """keep_figures (the drawing helpers): every plot of a sequence, each on the figure of the
    one before, is byte for byte the PNG a new figure gives."""
    pytest.importorskip("matplotlib")
    from evalkit import plots

    order = ["region", "region_other_labels", "region", "overall", "two_columns_long", "region", "overall",
             "overall"]
    for kept in (False, True):
        monkeypatch.setattr(plots, "_kept", {} if kept else None)
        for i, case in enumerate(order):
            table, grouping, picks, runs = _HISTORY_CASES[case]
            assert plots.write_history_plot(table, grouping, picks, tmp_path / f"{kept}_{i}.png", runs)
    for i in range(len(order)):
        assert (tmp_path / f"True_{i}.png").read_bytes() == (tmp_path / f"False_{i}.png").read_bytes(), order[i]


def test_history_legend_laid_out_once_per_drawing_is_matplotlibs_legend(tmp_path: Path, monkeypatch) -> None:
    """plots._laid_out_once (each legend box laid out once per drawing): every history PNG,
    on new and on kept figures (relabelled and rebuilt legends), is byte for byte the one
    matplotlib's own legend layout gives; outside a drawing nothing is remembered."""
    pytest.importorskip("matplotlib")
    from evalkit import plots

    order = ["region", "region_other_labels", "region", "overall", "two_columns_long", "region", "overall"]
    legends = []
    real = plots._laid_out_once
    for fast in (False, True):
        with monkeypatch.context() as m:
            m.setattr(plots, "_laid_out_once", (lambda lg: (legends.append(lg), real(lg))[1]) if fast
                      else (lambda lg: lg))
            for kept in (False, True):
                m.setattr(plots, "_kept", {} if kept else None)
                for i, case in enumerate(order):
                    table, grouping, picks, runs = _HISTORY_CASES[case]
                    assert plots.write_history_plot(table, grouping, picks, tmp_path / f"{fast}_{kept}_{i}.png", runs)
    assert legends
    for kept in (False, True):
        for i in range(len(order)):
            assert (tmp_path / f"True_{kept}_{i}.png").read_bytes() == \
                (tmp_path / f"False_{kept}_{i}.png").read_bytes(), (kept, order[i])
    # after a drawing, a relabelled legend is measured anew (its box grows with the label)
    legend = legends[-1]
    renderer = legend.figure.canvas.get_renderer()
    before = legend.get_window_extent(renderer).width
    legend.get_texts()[0].set_text("a much longer label than any group's " * 2)
    assert legend.get_window_extent(renderer).width > before


@pytest.mark.parametrize("face", ["white", "none"])
def test_write_png_holds_the_pixels_savefig_writes(tmp_path: Path, face: str) -> None:
    """plots._write_png (unfiltered rows, zlib level 1, RGB when opaque): decoded, the pixels
    of matplotlib's savefig, transparent figures included; the dpi recorded alike."""
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from evalkit.plots import DPI, _write_png

    fig = Figure(figsize=(3, 2), dpi=DPI, facecolor=face)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [1, 0, 2], marker="o")
    ax.fill_between([0, 1, 2], [0, 0, 1], [1, 1, 2], alpha=0.3)
    ax.set_title("title \u2014 \u00e9")
    fig.savefig(tmp_path / "a.png", format="png", dpi=DPI, metadata={"Software": None})
    _write_png(fig, tmp_path / "b.png")
    a, b = Image.open(tmp_path / "a.png"), Image.open(tmp_path / "b.png")
    assert b.mode == ("RGB" if face == "white" else "RGBA")
    assert np.array_equal(np.asarray(a.convert("RGBA")), np.asarray(b.convert("RGBA")))
    assert a.info.get("dpi") == b.info.get("dpi") and round(b.info["dpi"][0]) == DPI
    assert b"tEXt" not in (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize("horizontal", [False, True])
def test_bars_are_the_pixels_of_matplotlibs_bar(horizontal: bool) -> None:
    """plots._bars (one collection): the pixels ax.bar / ax.barh draw with a patch a bar."""
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from evalkit.plots import _BAR, _bars

    at = (np.arange(15) + 0.5) / 15
    value = np.linspace(0.03, 1.0, 15) ** 2
    pixels = []
    for ours in (False, True):
        fig = Figure(figsize=(3, 3), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if ours:
            _bars(ax, at, value, 0.92 / 15, horizontal=horizontal)
        elif horizontal:
            ax.barh(at, value, height=0.92 / 15, color=_BAR, alpha=0.85)
        else:
            ax.bar(at, value, width=0.92 / 15, color=_BAR, alpha=0.85)
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, 1.05)
        fig.canvas.draw()
        pixels.append(np.asarray(fig.canvas.buffer_rgba()).copy())
    assert np.array_equal(pixels[0], pixels[1])


def test_class_ridges_mark_every_class_median_and_mean(tmp_path: Path, monkeypatch) -> None:
    """loss_by_class.png with histograms: a median mark (from y to y + 0.85) and a mean
    diamond for every class drawn, the means the table's, each diamond drawn after (over) the
    medians."""
    pytest.importorskip("matplotlib")
    result = evalkit.evaluate(DIGITS)
    figures = _drawn_figures(monkeypatch)
    write_plots(result, tmp_path, class_histograms(_stats_from_rows(result)), only=["loss_by_class.png"])
    ax = figures["loss_by_class.png"].axes[0]
    shown = result.groups["class"][result.groups["class"]["count"] > 0]
    n = len(shown)
    (means,) = [ln for ln in ax.lines if ln.get_marker() == "D"]
    (medians,) = [ln for ln in ax.lines if ln.get_color() == "black" and ln.get_linewidth() == 1.2]
    assert ax.lines.index(medians) < ax.lines.index(means)
    assert sorted(np.round(means.get_xdata(), 9)) == sorted(np.round(shown["mean"].to_numpy(float), 9))
    y = np.asarray(medians.get_ydata(), dtype=float).reshape(n, 3)
    assert np.isnan(y[:, 2]).all() and np.allclose(y[:, 1] - y[:, 0], 0.85)
    x = np.asarray(medians.get_xdata(), dtype=float).reshape(n, 3)
    assert np.array_equal(x[:, 0], x[:, 1]) and (x[:, 0] > 0).all()


def _twin_right_labels(ax, ys, labels) -> None:
    """The right-hand labels as they were drawn before plots._right_labels: tick labels of a
    twin axis."""
    ax2 = ax.twinx()
    ax2.set_ylim(ax.get_ylim())
    ax2.set_yticks(list(ys), list(labels), fontsize=8, color="#333333")
    ax2.tick_params(axis="y", length=0)
    for side in ("top", "right", "left", "bottom"):
        ax2.spines[side].set_visible(False)


@pytest.mark.parametrize("case", ["digits", "long_labels", "five_splits"])
def test_ticks_and_right_labels_are_the_pixels_of_matplotlibs_tick_objects(tmp_path: Path, monkeypatch,
                                                                           case) -> None:
    """plots._Ticks draws every axis' ticks (marks, grid lines, labels, the axis label beyond
    them) as plain artists and plots._right_labels the per-row labels as texts: every PNG is
    the one matplotlib draws with its own tick objects and a twin axis, pixel for pixel."""
    pytest.importorskip("matplotlib")
    from matplotlib.image import imread

    from evalkit import plots

    result = _layout_case(case)
    for hist in (class_histograms(_stats_from_rows(result)), None):
        written = write_plots(result, tmp_path / "own", hist)
        with monkeypatch.context() as m:  # matplotlib's tick objects, the twin axis
            m.setattr(plots._Ticks, "install", lambda self: None)
            m.setattr(plots, "_right_labels", _twin_right_labels)
            m.setattr(plots, "_fixed_ticks", lambda axis, locs, labels: axis.set_ticks(locs, labels))
            write_plots(result, tmp_path / "mpl", hist)
        for _, name in written:
            a = imread(tmp_path / "own" / name)
            b = imread(tmp_path / "mpl" / name)
            assert a.shape == b.shape and np.array_equal(a, b), (case, name, hist is None)


def test_text_caching_canvas_draws_the_pixels_of_matplotlibs_canvas(tmp_path: Path, monkeypatch) -> None:
    """plots._canvas_class remembers text sizes, glyph layouts and glyph bitmaps across
    drawings: every report and history PNG, drawn twice (the second time from the caches,
    the same strings at other positions in other figures), is matplotlib's own Agg
    canvas' PNG, pixel for pixel."""
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imread

    from evalkit import plots

    split = np.repeat(["train", "test", "val", "holdout"], 60)
    result = evalkit.evaluate(_probs_frame(240, ["a", "b", "c"], split=split, region=np.tile(["EU", "US"], 120)),
                              by=["region"])
    hist = class_histograms(_stats_from_rows(result))

    def draw(out: Path) -> list[str]:
        names = [n for _, n in write_plots(result, out, hist)] + [n for _, n in write_plots(result, out / "again", hist)]
        for i, case in enumerate(sorted(_HISTORY_CASES)):
            table, grouping, picks, runs = _HISTORY_CASES[case]
            plots.write_history_plot(table, grouping, picks, out / f"history_{i}.png", runs)
            names.append(f"history_{i}.png")
        return names

    names = draw(tmp_path / "cached")
    with monkeypatch.context() as m:
        m.setattr(plots, "_canvas_class", lambda: FigureCanvasAgg)
        draw(tmp_path / "mpl")
    for name in names:
        for sub in ("", "again"):
            a, b = tmp_path / "cached" / sub / name, tmp_path / "mpl" / sub / name
            if a.exists():
                x, y = imread(a), imread(b)
                assert x.shape == y.shape and np.array_equal(x, y), (sub, name)


# -- labels: keys as report.md and the terminal show them -------------------------------


_AMBIGUOUS = ["", "\u2205", None, "x", '"quoted"', "tab\there", " pad"]


def test_group_labels_are_the_reports_key_strings(tmp_path: Path, monkeypatch) -> None:
    """The empty string, the text "∅" and a null key each get their own label (the one
    report.md and the terminal use: ``""``, ``"∅"``, ``∅``), quotes are escaped and a tab
    reads ``\\t``: no two groups share a label and none is blank."""
    pytest.importorskip("matplotlib")
    from evalkit.escape import fmt_key, terminal
    from evalkit.plots import shown_ticklabels

    g = pd.array([_AMBIGUOUS[i % len(_AMBIGUOUS)] for i in range(700)], dtype=object)
    result = evalkit.evaluate(_probs_frame(700, ["a", "b"], g=g), by="g")
    figures = _drawn_figures(monkeypatch)
    write_plots(result, tmp_path, None)
    fig = figures["mean_loss_by_g.png"]
    (ax, *_) = fig.axes
    drawn = sorted(t.get_text() for t in shown_ticklabels(ax.yaxis) if not t.get_text().startswith("mean "))
    want = sorted(terminal(fmt_key(v)) for v in _AMBIGUOUS)
    assert drawn == want
    assert {'""', '"\u2205"', "\u2205", '"\\"quoted\\""', "tab\\there", '" pad"'} <= set(drawn)


def test_reliability_panel_titles_escape_split_keys() -> None:
    from evalkit import plots

    row = {"ece": 0.1, "count": 10}
    assert plots._panel_title("split", 'tab\there', row).startswith("split = tab\\there:")
    assert "\n" not in plots._panel_title("split", "a\nb", row)


def test_history_legend_labels_are_the_reports_key_strings() -> None:
    from evalkit import plots

    table = pd.DataFrame({"g": pd.array(["", "\u2205", None, "tab\there"], dtype=object),
                          "run": [0, 0, 0, 0], "mean": [1.0, 2.0, 3.0, 4.0],
                          "ci_low": [0.5] * 4, "ci_high": [5.0] * 4})
    got = [s[0] for s in plots._history_series(table, ["g"], table[["g"]], None)]
    assert sorted(got) == sorted(['""', '"\u2205"', "\u2205", "tab\\there"])


# -- characters the plot font lacks -----------------------------------------------------


def _font_lacks(ch: str) -> bool:
    from matplotlib import rcParams
    from matplotlib.font_manager import findfont, get_font

    return get_font(findfont(rcParams["font.sans-serif"][0])).get_char_index(ord(ch)) == 0


def _cjk_result() -> evalkit.EvalResult:
    classes = ["\u65e5\u672c", "\u4e2d\u6587"]
    g = np.repeat(["\ud55c\uad6d", "x"], 150)
    split = np.tile(["\u8a13\u7df4", "\u30c6\u30b9\u30c8"], 150)
    return evalkit.evaluate(_probs_frame(300, classes, g=g, split=split), by="g")


def test_missing_glyphs_are_one_evalkit_warning(tmp_path: Path) -> None:
    """matplotlib warns once per missing character (with a source line of plots.py);
    write_plots issues one PlotFontWarning instead, and no other warning."""
    pytest.importorskip("matplotlib")
    import warnings

    from evalkit.errors import EvalkitWarning
    from evalkit.plots import FONT_NOTE, PlotFontWarning

    if not _font_lacks("\u65e5"):
        pytest.skip("the plot font has CJK glyphs here")
    result = _cjk_result()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_plots(result, tmp_path, class_histograms(_stats_from_rows(result)))
    assert [(w.category, str(w.message)) for w in caught] == [(PlotFontWarning, FONT_NOTE)]
    assert not issubclass(PlotFontWarning, EvalkitWarning)  # cosmetic: -q silences it
    with warnings.catch_warnings(record=True) as caught:  # no missing glyph: no warning
        warnings.simplefilter("always")
        write_plots(evalkit.evaluate(DIGITS), tmp_path, None)
    assert caught == []


def test_missing_glyphs_in_a_history_plot_are_one_warning(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import warnings

    from evalkit import plots

    if not _font_lacks("\u65e5"):
        pytest.skip("the plot font has CJK glyphs here")
    table = pd.DataFrame({"g": ["\u65e5\u672c", "\u8a9e", "x"] * 2, "run": [0, 0, 0, 1, 1, 1],
                          "mean": np.arange(6.0), "ci_low": np.arange(6.0) - 1, "ci_high": np.arange(6.0) + 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots.write_history_plot(table, "g", table[["g"]].drop_duplicates(), tmp_path / "h.png")
    assert [w.category for w in caught] == [plots.PlotFontWarning]


def test_cli_prints_one_line_for_missing_glyphs(tmp_path: Path) -> None:
    """Through the CLI (plots drawn by the forked helpers, two drawers): one line on
    stderr, no raw matplotlib warning."""
    pytest.importorskip("matplotlib")
    import os
    import subprocess

    if not _font_lacks("\u65e5"):
        pytest.skip("the plot font has CJK glyphs here")
    src = tmp_path / "cjk.parquet"
    classes = ["\u65e5\u672c", "\u4e2d\u6587"]
    _probs_frame(300, classes, g=np.repeat(["\ud55c\uad6d", "x"], 150),
                 split=np.tile(["\u8a13\u7df4", "\u30c6\u30b9\u30c8"], 150)).to_parquet(src, index=False)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "evalkit", "evaluate", str(src), "--by", "g", "--format", "none",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "Glyph" not in proc.stderr
    assert [ln for ln in lines if "plot font" in ln] == [
        "warning: some plot labels use characters the plot font lacks (shown as boxes)"]
    assert (tmp_path / "out" / "mean_loss_by_g.png").exists()
    quiet = subprocess.run([sys.executable, "-m", "evalkit", "evaluate", str(src), "--by", "g", "--format", "none",
                            "--out", str(tmp_path / "out"), "--overwrite", "-q"], capture_output=True, text=True,
                           env=env, check=False)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr  # -q: no line (evaluate, as history)


# -- mean-loss bars: no CI, intervals far past the bars ---------------------------------


def _bars_frame() -> pd.DataFrame:
    df = _probs_frame(200, ["a", "b"], g=np.repeat(["u", "v"], 100))
    # a 2-row group: losses about 0.01 and 9.2 nats, its 95% t interval reaches ~60 nats
    two = pd.DataFrame({"prob_a": [0.99, 1e-4], "prob_b": [0.01, 1 - 1e-4], "label": ["a", "a"], "g": "w"})
    one = pd.DataFrame({"prob_a": [0.3], "prob_b": [0.7], "label": ["a"], "g": "solo"})
    return pd.concat([df, two, one], ignore_index=True)


def test_group_bars_clip_far_intervals_and_draw_no_cap_without_ci(tmp_path: Path, monkeypatch) -> None:
    """A group of one row has no error bar (no cap at its bar's end); an interval running
    far past every bar does not set the axis: the axis stops at CI_ROOM x the longest bar,
    an arrow marks the interval at the edge and the label beside the bar gives its end."""
    pytest.importorskip("matplotlib")
    from matplotlib.collections import LineCollection

    from evalkit import plots

    result = evalkit.evaluate(_bars_frame(), by="g")
    table = result.groups["g"].set_index("g")
    assert table.loc["w", "ci_high"] > 5 * table["mean"].max()  # the case this is about
    figures = _drawn_figures(monkeypatch)
    write_plots(result, tmp_path, None)
    fig = figures["mean_loss_by_g.png"]
    ax = fig.axes[0]
    top = max(float(table["mean"].max()), float(result.overall["mean"]))
    assert ax.get_xlim()[1] == pytest.approx(plots.CI_ROOM * top * 1.05)
    # error bars (one segment each) for the three groups with an interval, none for "solo"
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert sum(len(c.get_segments()) for c in bars) == 3
    texts = [t.get_text() for t in plots.shown_ticklabels(ax.yaxis)]
    labels = dict(zip(texts[: len(texts) // 2], texts[len(texts) // 2:], strict=True))
    assert labels["solo"].endswith("(no CI)") and "CI to" not in labels["solo"]
    assert labels["w"].endswith(f"(CI to {table.loc['w', 'ci_high']:.3g})")
    assert "CI to" not in labels["u"] + labels["v"]
    arrows = [ln for ln in ax.lines if ln.get_marker() == ">"]
    assert len(arrows) == 1 and len(arrows[0].get_ydata()) == 1


def test_group_bars_keep_the_axis_when_intervals_are_near_the_bars(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    result = evalkit.evaluate(_probs_frame(300, ["a", "b"], g=np.repeat(["u", "v", "x"], 100)), by="g")
    table = result.groups["g"]
    figures = _drawn_figures(monkeypatch)
    write_plots(result, tmp_path, None)
    ax = figures["mean_loss_by_g.png"].axes[0]
    right = max(float(table["ci_high"].max()), float(result.overall["mean"]))
    assert ax.get_xlim()[1] == pytest.approx(right * 1.05)
    assert not [ln for ln in ax.lines if ln.get_marker() == ">"]


# -- every text is literal (rt-eval8 F2/F4) ----------------------------------------------

_DOLLARS = ["$5-$10", "$10-$20", "under_score_$x$", "$\\foo$", "$^$", "$_$", "$ #tag $"]


def _drawn_strings(fig) -> list[str]:  # type: ignore[no-untyped-def]
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def test_group_and_class_names_are_drawn_as_written_never_as_mathtext(tmp_path: Path, monkeypatch) -> None:
    """A name holding ``$`` is text, not mathtext: ``$5-$10`` keeps its dollars (matplotlib
    typesets it as ``5 − 10``), and invalid mathtext (``$\\foo$``) no longer fails the whole
    run. Every text artist of every figure is literal, whatever the user's matplotlibrc says."""
    pytest.importorskip("matplotlib")
    import matplotlib

    g = pd.array([_DOLLARS[i % len(_DOLLARS)] for i in range(700)], dtype=object)
    result = evalkit.evaluate(_probs_frame(700, ["$a$", "b$"], g=g, split=g), by="g")
    figures = _drawn_figures(monkeypatch)
    monkeypatch.setitem(matplotlib.rcParams, "text.parse_math", True)  # matplotlib's default
    write_plots(result, tmp_path, None)
    assert matplotlib.rcParams["text.parse_math"] is True  # the user's setting is left alone
    assert figures
    for name, fig in figures.items():
        from matplotlib.text import Text

        for t in fig.findobj(Text):
            assert t._preprocess_math(t.get_text()) == (t.get_text(), False), (name, t.get_text())
    drawn = set(_drawn_strings(figures["mean_loss_by_g.png"]))
    assert set(_DOLLARS) <= drawn


def test_history_group_names_are_drawn_as_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from evalkit.plots import write_history_plot

    table, grouping, picks, runs = _history_input(8, ["band"], [("$5-$10",), ("$\\foo$",)],
                                                  [("$5-$10",), ("$\\foo$",)])
    assert write_history_plot(table, grouping, picks, tmp_path / "h.png", runs)
    assert (tmp_path / "h.png").read_bytes()[:8] == PNG_MAGIC


def test_a_weighted_runs_bars_are_its_weighted_means_with_their_intervals(tmp_path: Path, monkeypatch) -> None:
    """rt-eval8 F7: with ``--weight`` the tables' interval (and report.md, the gates) are of
    the weighted mean; the bar chart drew the unweighted mean with that interval stretched to
    meet it. Bars, labels, order and the overall line are the weighted means now."""
    pytest.importorskip("matplotlib")
    from matplotlib.text import Text

    rng = np.random.default_rng(3)
    df = _probs_frame(3000, ["a", "b", "c"], g=rng.choice(["x", "y", "z"], 3000))
    p_true = df[[f"prob_{c}" for c in "abc"]].to_numpy()[np.arange(3000), df["label"].map("abc".index)]
    df["w"] = np.where(p_true < 0.1, 20.0, 1.0)  # weights move every group's mean a lot
    result = evalkit.evaluate(df, by="g", weight="w")
    table = result.groups["g"]
    assert not np.allclose(table["weighted_mean"], table["mean"], rtol=0.05)
    figures = _drawn_figures(monkeypatch)
    write_plots(result, tmp_path, None)
    fig = figures["mean_loss_by_g.png"]
    texts = [t.get_text() for t in fig.findobj(Text)]
    by_weighted = table.sort_values("weighted_mean", ascending=False)
    want = [f"weighted mean {v:.3g}, " for v in by_weighted["weighted_mean"]]
    got = [t for t in texts if re.match(r"weighted mean [-+.\de]+, ", t)]
    assert [t[: len(w)] for t, w in zip(got, want, strict=True)] == want
    assert not any(t.startswith("mean ") for t in texts)
    assert f"overall weighted mean ({float(result.overall['weighted_mean']):.3g})" in texts


def test_bounded_groups_rank_a_weighted_table_by_its_weighted_mean() -> None:
    from evalkit.display import bounded_groups, mean_column

    df = pd.DataFrame({"g": list("abcdef"), "count": [5] * 6, "mean": [6.0, 5, 4, 3, 2, 1],
                       "weighted_mean": [1.0, 2, 3, 4, 5, 6]})
    assert mean_column(df) == "weighted_mean" and mean_column(df.drop(columns="weighted_mean")) == "mean"
    assert mean_column(df.assign(weighted_mean=np.nan)) == "mean"
    shown, left = bounded_groups(df, 4)
    assert list(shown["g"]) == ["f", "e", "b", "a"] and left == 2


def test_reliability_diagram_past_its_panels_shows_the_splits_of_highest_ece_and_says_so(tmp_path: Path) -> None:
    """rt-eval8 F3: with more splits than panels, the diagram draws those of highest ECE
    (as the other capped figures draw the worst groups) and its caption and subtitle say how
    many of how many; with few splits, all of them in table order, as before."""
    pytest.importorskip("matplotlib")
    from evalkit import plots

    classes = ["a", "b", "c"]
    n_splits, per = 9, 400
    df = _probs_frame(n_splits * per, classes, seed=3)
    df["split"] = np.repeat([f"s{i}" for i in range(n_splits)], per)
    rng = np.random.default_rng(4)
    for i in (2, 5, 7):  # badly calibrated splits: confident and random
        rows = df["split"] == f"s{i}"
        p = rng.dirichlet(np.full(3, 0.05), int(rows.sum()))
        df.loc[rows, [f"prob_{c}" for c in classes]] = p
    result = evalkit.evaluate(df)
    by_split = result.groups["split"]
    worst = list(by_split.sort_values("ece", ascending=False, kind="stable")["split"][:5])
    calib = plots.reliability_bins(result)
    shown, total = plots._reliability_splits(result, calib)
    assert (shown, total) == (worst, n_splits)
    assert {"s2", "s5", "s7"} <= set(shown)
    titles = dict((n, t) for t, n in plots.plot_plan(result))
    assert titles["reliability.png"] == "Reliability diagram (overall and 5 of 9 splits: highest ECE)"
    drawn: list[str] = []
    real = plots._panel_title
    import unittest.mock

    with unittest.mock.patch.object(plots, "_panel_title", lambda g, grp, row, *shown: drawn.append(grp) or real(g, grp, row, *shown)), \
            unittest.mock.patch.object(plots, "_finish", wraps=plots._finish) as finish:
        write_plots(result, tmp_path, only=["reliability.png"])
    assert drawn == ["all", *worst]
    assert finish.call_args[0][2].endswith("rows per bin\nthe 5 splits of highest ECE of 9 (every split's bins in "
                                           "calibration.parquet)")  # a line of its own (rt-eval8 F18)
    few = evalkit.evaluate(df[df["split"].isin(["s1", "s0", "s2"])])
    assert plots._reliability_splits(few, plots.reliability_bins(few))[0] == list(pd.unique(
        plots.reliability_bins(few).query("grouping == 'split'")["group"]))


def test_a_long_grouping_column_name_is_shortened_like_its_values(tmp_path: Path, monkeypatch) -> None:
    """rt-eval8 F19: a 300-character --by column ran the title and the y-axis label off the figure."""
    pytest.importorskip("matplotlib")
    from evalkit.plots import MAX_AXIS_LABEL

    col = "c" * 300
    result = evalkit.evaluate(_probs_frame(200, ["a", "b"], **{col: ["x", "y"] * 100}), by=col)
    figures = _drawn_figures(monkeypatch)
    write_plots(result, tmp_path, None)
    (name,) = [n for n in figures if n.startswith("mean_loss_by_c") and n != "mean_loss_by_class.png"]
    ax = figures[name].axes[0]
    assert len(ax.get_ylabel()) <= MAX_AXIS_LABEL and "\u2026" in ax.get_ylabel()
    _check_layout(figures[name])


def test_report_figures_draw_their_text_unhinted_and_history_keeps_hinting(tmp_path: Path, monkeypatch) -> None:
    """evaluate's figures are drawn with unhinted text (plots._UNHINTED_TEXT: a tenth less
    drawing time), the user's setting restored after; a history plot keeps matplotlib's."""
    pytest.importorskip("matplotlib")
    from matplotlib import rcParams

    from evalkit import plots

    seen: list[str] = []
    real = plots._write_png

    def record(fig, path):
        seen.append(rcParams["text.hinting"])
        real(fig, path)

    monkeypatch.setattr(plots, "_write_png", record)
    before = rcParams["text.hinting"]
    written = write_plots(evalkit.evaluate(DIGITS), tmp_path)
    assert written and seen == ["none"] * len(written)
    assert rcParams["text.hinting"] == before
    seen.clear()
    table, grouping, picks, runs = _HISTORY_CASES[sorted(_HISTORY_CASES)[0]]
    plots.write_history_plot(table, grouping, picks, tmp_path / "history.png", runs)
    assert seen == [before]


@pytest.mark.parametrize("histograms", [True, False])
def test_a_weighted_runs_class_distribution_marks_its_weighted_means(tmp_path: Path, monkeypatch,
                                                                     histograms: bool) -> None:
    """rt-eval8 N8: in a weighted run loss_by_class.png marked and labelled the unweighted
    mean ("mean 2.49") while the bar charts, report.md and the class order are of the
    weighted mean: its diamonds, labels and legend are the weighted means now, and the
    subtitle says the distribution is of the rows (unweighted)."""
    pytest.importorskip("matplotlib")
    from matplotlib.text import Text

    rng = np.random.default_rng(5)
    df = _probs_frame(3000, ["a", "b", "c"], g=rng.choice(["x", "y"], 3000))
    p_true = df[[f"prob_{c}" for c in "abc"]].to_numpy()[np.arange(3000), df["label"].map("abc".index)]
    df["w"] = np.where(p_true < 0.1, 20.0, 1.0)  # weights move every class's mean a lot
    result = evalkit.evaluate(df, weight="w")
    table = result.groups["class"]
    assert not np.allclose(table["weighted_mean"], table["mean"], rtol=0.05)
    figures = _drawn_figures(monkeypatch)
    hist = class_histograms(_stats_from_rows(result)) if histograms else None
    write_plots(result, tmp_path, hist, only=["loss_by_class.png"])
    fig = figures["loss_by_class.png"]
    texts = [t.get_text() for t in fig.findobj(Text)]
    want = sorted(f"weighted mean {v:.3g}, n={n:,}" for v, n in zip(table["weighted_mean"], table["count"], strict=True))
    assert sorted(t for t in texts if t.startswith("weighted mean ")) == want
    assert not any(t.startswith("mean ") for t in texts)
    (diamonds,) = [ln for ln in fig.axes[0].lines if ln.get_marker() == "D"]
    x = diamonds.get_xdata()
    assert sorted(np.round(x, 9)) == sorted(np.round(table["weighted_mean"].to_numpy(float), 9))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "weighted mean" in legend and "mean" not in legend
    assert "(rows, unweighted); diamonds: weighted mean" in fig._suptitle.get_text()


_MIDDLE = ["customer_segment_enterprise_north_america_2024", "customer_segment_smallbiz_north_america_2024",
           "customer_segment_enterprise_south_america_2024"]


def test_long_names_differing_in_the_middle_get_distinct_labels(tmp_path: Path, monkeypatch) -> None:
    """rt-final8 F5: long group names differing only in the middle were shortened to the same
    label ("customer_segme…_america_2024" three times) on the bars and in a history legend:
    each label now keeps the part where they differ, within the same length; a lone long
    name is shortened as before."""
    pytest.importorskip("matplotlib")
    from evalkit import plots
    from evalkit.escape import MAX_LABEL
    from evalkit.plots import _distinct_truncations, _truncate, shown_ticklabels

    assert len({_truncate(s) for s in _MIDDLE}) == 1  # what a reader got
    short = _distinct_truncations(_MIDDLE)
    assert len(set(short)) == 3 and all(len(s) <= MAX_LABEL for s in short)
    assert ["enterprise" in short[0], "smallbiz" in short[1], "enterprise_sou" in short[2]] == [True] * 3
    assert _distinct_truncations([_MIDDLE[0], "x", _MIDDLE[0]]) == [_truncate(_MIDDLE[0]), "x", _truncate(_MIDDLE[0])]
    alike = ["a" * 40 + c + "b" * 40 for c in "123"]  # the difference alone is one character
    assert len(set(_distinct_truncations(alike))) == 3

    names = _MIDDLE + ["other"]
    g = pd.array([names[i % 4] for i in range(400)], dtype=object)
    result = evalkit.evaluate(_probs_frame(400, ["a", "b"], g=g), by="g")
    figures = _drawn_figures(monkeypatch)
    write_plots(result, tmp_path, None)
    (ax, *_) = figures["mean_loss_by_g.png"].axes
    drawn = [t.get_text() for t in shown_ticklabels(ax.yaxis) if not t.get_text().startswith("mean ")]
    assert len(drawn) == 4 and len(set(drawn)) == 4 and set(short) <= set(drawn)

    table, grouping, picks, runs = _history_input(6, ["g"], [(n,) for n in names], [(n,) for n in _MIDDLE])
    legends = []
    real = plots._write_png
    monkeypatch.setattr(plots, "_write_png", lambda fig, path: legends.append(
        [t.get_text() for t in fig.legends[0].get_texts()]) or real(fig, path))
    plots.write_history_plot(table, grouping, picks, tmp_path / "history.png", runs)
    assert sorted(legends[0]) == sorted(short)


def test_text_sizes_from_the_glyph_layout_are_set_texts() -> None:
    """plots._laid_out_size measures a string from the layout the drawing uses (FreeType
    shapes it once, not twice): the width, height and descent RendererAgg gets from
    FT2Font.set_text, for kerned pairs, spaces, negative bearings, sizes and both hinting
    modes; None (set_text measures, and warns) for a glyph the font lacks and for ''."""
    pytest.importorskip("matplotlib")
    from matplotlib.font_manager import FontProperties, fontManager, get_font
    from matplotlib.ft2font import LoadFlags

    from evalkit.plots import _laid_out_size

    strings = ["mean 1.29, n=601,003", "0.2", "confidence (max probability)", "Ty", "AV", "  x  ", "jjj",
               "f", "office", "Reliability diagram \u2014 /tmp/x_6000000_s0.parquet", "split = \u2205: ECE", "W."]
    for size in (6, 8, 9, 10.5):
        for flags in (LoadFlags.NO_HINTING, LoadFlags.DEFAULT):
            font = get_font(fontManager._find_fonts_by_props(FontProperties(size=size)))
            font.clear()
            font.set_size(size, 110)

            def layout(key, features, language, font=font):
                return [(it.ft_object, it.glyph_index, it.x, it.y)
                        for it in font._layout(key[3], flags=key[4], features=features, language=language)]

            for s in strings:
                font.set_text(s, 0.0, flags=flags)
                w, h = font.get_width_height()
                want = (w / 64.0, h / 64.0, font.get_descent() / 64.0)
                assert _laid_out_size(font, size, 110, s, flags, layout, {}, lambda c: c) == want, (s, size, flags)
            assert _laid_out_size(font, size, 110, "", flags, layout, {}, lambda c: c) is None
            assert _laid_out_size(font, size, 110, "x\u65e5", flags, layout, {}, lambda c: c) is None


def test_step_fill_is_the_polygon_fill_between_fills() -> None:
    """plots._step_fill (every class's ridge fill in one collection): the polygon
    ax.fill_between(edges, base, tops, step="post") fills, vertex for vertex."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from evalkit.plots import _step_fill

    edges = np.geomspace(1e-3, 20.0, 13)
    tops = 3.0 + np.append(np.linspace(0.1, 0.85, 12) ** 2, 0.85)
    ax = Figure().add_subplot()
    want = ax.fill_between(edges, 3.0, tops, step="post").get_paths()[0].vertices
    got = _step_fill(edges, 3.0, tops)
    assert np.array_equal(want[: len(got)], got) and (len(want) == len(got) or np.array_equal(want[-1], got[0]))


def test_reliability_panels_of_long_splits_differing_in_the_middle_are_told_apart(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    """rt-final8 F5 in reliability.png: split names too long for a panel title, differing
    only in the middle, were shortened to the same name; each keeps where it differs."""
    pytest.importorskip("matplotlib")
    from evalkit.plots import _truncate

    assert len({_truncate(s, 24) for s in _MIDDLE}) == 1
    result = evalkit.evaluate(_probs_frame(300, ["a", "b", "c"], split=np.repeat(_MIDDLE, 100)))
    figures = _drawn_figures(monkeypatch)
    write_plots(result, tmp_path, only=["reliability.png"])
    titles = [ax.get_title() for ax in figures["reliability.png"].axes if ax.get_title().startswith("split")]
    names = [t.split("\n")[0] for t in titles]
    assert len(names) == 3 and len(set(names)) == 3 and all(len(n) <= 8 + 24 for n in names)


def _drawn_history_figure(tmp_path: Path, monkeypatch, *args, **kw) -> tuple[object, str]:
    from evalkit import plots

    figures = []
    real = plots._write_png
    monkeypatch.setattr(plots, "_write_png", lambda fig, path: (figures.append(fig), real(fig, path)))
    title = plots.write_history_plot(*args, **kw)
    (fig,) = figures
    return fig, title


def test_history_bands_stop_at_zero_for_tiny_groups(tmp_path: Path, monkeypatch) -> None:
    """rt-final8 F6: a group of two rows has a t interval far below 0; a mean loss is never
    negative: the band stops at 0 (the line and the table's interval are unchanged)."""
    pytest.importorskip("matplotlib")
    table, grouping, picks, runs = _history_input(10, ["region"], [("TWO",), ("big",)], [("TWO",), ("big",)])
    table.loc[table["region"] == "TWO", "ci_low"] = -5.0
    fig, _title = _drawn_history_figure(tmp_path, monkeypatch, table, grouping, picks, tmp_path / "h.png", runs)
    (ax,) = fig.axes
    (bands,) = ax.collections
    low = min(p.vertices[:, 1].min() for p in bands.get_paths())
    assert low == 0.0  # clipped, not dropped: the band reaches down to 0
    assert ax.get_ylim()[0] > -1  # the axis is not stretched to -5 any more
    assert (table["ci_low"] == -5.0).any()  # the caller's table untouched


def test_a_capped_history_plot_says_of_how_many_groups(tmp_path: Path, monkeypatch) -> None:
    """rt-final8 F9: 8 groups drawn of 820 said "8 group(s)"; it says "8 of 820 groups
    (history.md's first 8)" now, and "N group(s)" when all are drawn."""
    pytest.importorskip("matplotlib")
    keys = [(f"k{i}",) for i in range(8)]
    table, grouping, picks, runs = _history_input(6, ["u"], keys, keys)
    fig, _t = _drawn_history_figure(tmp_path, monkeypatch, table, grouping, picks, tmp_path / "a.png", runs, 820)
    heading = fig._suptitle.get_text()
    assert "\n8 of 820 groups (history.md's first 8), worse first" in heading
    width = fig._suptitle.get_window_extent(fig.canvas.get_renderer()).x1
    assert width <= fig.bbox.width  # both lines inside the figure
    fig, _t = _drawn_history_figure(tmp_path, monkeypatch, table, grouping, picks, tmp_path / "b.png", runs, 8)
    assert "\n8 group(s), worse first" in fig._suptitle.get_text()


@pytest.mark.filterwarnings("ignore::evalkit.plots.PlotFontWarning")
@pytest.mark.parametrize("label", ["United States of America — North", "亜太地域 APAC 亜太地域 APAC 亜太地域", "EU" * 20])
def test_a_history_legend_of_long_labels_stays_inside_the_figure(tmp_path: Path, monkeypatch, label) -> None:
    """rt-hist8 F5: long labels in 4 columns ran off both edges of the figure: the legend
    gets as many columns as fit (measured), read row by row still, and the axes move up to
    make room for its rows; short labels keep 4 columns and the usual margin."""
    pytest.importorskip("matplotlib")
    from evalkit import plots

    keys = [(f"{label} {i}",) for i in range(8)]
    table, grouping, picks, runs = _history_input(6, ["region"], keys, keys, segments=(3,))
    fig, _t = _drawn_history_figure(tmp_path, monkeypatch, table, grouping, picks, tmp_path / "h.png", runs)
    (legend,) = fig.legends
    box = legend.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width  # inside the figure
    assert legend._ncols < plots.LEGEND_COLUMNS
    ax_box = fig.axes[0].get_window_extent(fig.canvas.get_renderer())
    assert box.y1 < ax_box.y0  # below the axes, not over them
    texts = [t.get_text() for t in legend.get_texts()]
    rows = -(-len(texts) // legend._ncols)
    by_rows = [texts[c * rows + r] for r in range(rows) for c in range(legend._ncols) if c * rows + r < len(texts)]
    assert by_rows[:8] == [plots._truncate(f"{label} {i}") for i in range(8)]  # worse first, row by row

    short = [(f"k{i}",) for i in range(8)]
    table, grouping, picks, runs = _history_input(6, ["region"], short, short, segments=(3,))
    fig, _t = _drawn_history_figure(tmp_path, monkeypatch, table, grouping, picks, tmp_path / "s.png", runs)
    assert fig.legends[0]._ncols == plots.LEGEND_COLUMNS
    assert fig.subplotpars.bottom == plots.HISTORY_BOTTOM


def test_a_tiny_groups_wide_band_does_not_set_the_history_axis(tmp_path: Path, monkeypatch) -> None:
    """rt-final9 F6: a 2-row group's t band (to 110, mean 8) set the y axis to 0-110, every
    other group flat at the bottom, nothing said. The axis now ends at BAND_CAP times the
    largest plotted mean and the heading says the bands are cut; a plot whose bands fit is
    unchanged (same limits as before, heading without the note), also on a kept figure
    drawn after a cut one."""
    pytest.importorskip("matplotlib")
    from evalkit import plots

    keys = [("tiny",), ("a",), ("b",)]
    table, grouping, picks, runs = _history_input(10, ["region"], keys, keys)
    tiny = table["region"] == "tiny"
    table.loc[tiny, "mean"] = 8.0
    table.loc[tiny, "ci_high"] = 110.0
    table.loc[tiny, "ci_low"] = -90.0
    fig, _t = _drawn_history_figure(tmp_path, monkeypatch, table, grouping, picks, tmp_path / "cut.png", runs)
    (ax,) = fig.axes
    assert ax.get_ylim()[1] == pytest.approx(plots.BAND_CAP * 8.0)
    heading = fig._suptitle.get_text()
    assert f"cut at {plots.BAND_CAP:g}x the largest mean" in heading
    assert fig._suptitle.get_window_extent(fig.canvas.get_renderer()).x1 <= fig.bbox.width

    normal, grouping, picks, runs = _history_input(10, ["region"], keys, keys)
    fig2, _t = _drawn_history_figure(tmp_path, monkeypatch, normal, grouping, picks, tmp_path / "n.png", runs)
    assert "cut at" not in fig2._suptitle.get_text() and "3 group(s), worse first" in fig2._suptitle.get_text()
    fresh = fig2.axes[0].get_ylim()
    assert fresh[1] < 1  # the data's own scale
    monkeypatch.setattr(plots, "_kept", {})  # a drawing helper: one figure for every plot
    plots.write_history_plot(table, grouping, picks, tmp_path / "k1.png", runs)
    plots.write_history_plot(normal, grouping, picks, tmp_path / "k2.png", runs)
    assert (tmp_path / "k2.png").read_bytes() == (tmp_path / "n.png").read_bytes()
