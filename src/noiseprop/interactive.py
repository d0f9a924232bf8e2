"""Interactive figures for the self-contained HTML report: matplotlib figures converted to Plotly.

:func:`plotly_spec` reads a drawn matplotlib figure's artists and returns a Plotly figure
(``{"data": [...], "layout": {...}}``, plain JSON data): each axes becomes a subplot at the same place,
with its title, axis labels, scales, limits and (where matplotlib has fixed text ticks) its tick
labels; lines, error bars, bars, filled areas, scatter points, reference lines, spans and texts become
traces, shapes and annotations. Hover shows each point's values with the axes' labels; the legend
shows each labelled series once, and clicking it hides that series in every panel (series that share
a label share a ``legendgroup``). :func:`plotly_javascript` is the plotly.js bundle of the installed
``plotly`` package, embedded once per page, so nothing is fetched when the page is viewed;
:func:`figure_html` writes one figure's ``<div>`` and the ``<script>`` that draws it;
:func:`toggle_script` swaps the static picture for the interactive one once it is drawn.

Markup of a page (without JavaScript the PNG shows and the interactive ``<div>`` stays hidden; with
it, each figure is drawn into its ``<div>``, shown, and its ``<img>`` hidden)::

    <head> ... <style> ... INTERACTIVE_CSS ... </style> </head>
    <body>
    ...
    <figure id="fig-NAME" class="study-figure">
    <img alt="..." src="data:image/png;base64,...">
    {figure_html(figure, "plot-NAME")}      <!-- <div ... hidden></div><script>...</script> -->
    <figcaption>...</figcaption>
    </figure>
    ...
    {toggle_script()}                        <!-- once, anywhere in the page -->
    <script>{plotly_javascript()}</script>   <!-- once, anywhere in the page (the end of <body>) -->
    </body>

Each figure's script waits for ``DOMContentLoaded``, so plotly.js (4.8 MB with ``plotly`` 7.1) may
come last and the text and static pictures show while it loads. A single click on a legend entry
takes effect after Plotly's double-click delay (300 ms): tests must wait for the change. Do not give
``.interactive-figure`` a CSS ``display`` (it would override ``hidden``); :data:`INTERACTIVE_CSS`
prints the static pictures, not the interactive ones.

Converted: ``Line2D`` (lines, markers, their colours, widths, dash patterns, marker symbols, sizes and
fills, step draw styles), ``ErrorbarContainer`` (as ``error_y`` / ``error_x`` of its data line's
trace, symmetric or not, cap width, colour), ``BarContainer`` (bar traces, vertical or horizontal,
stacked with ``bottom``, with their error bars), ``PolyCollection`` (``fill_between``: filled
traces), ``LineCollection`` (``vlines``/``hlines``: line traces), ``PathCollection`` (``scatter``:
circles with their sizes and colours), lines and patches in axes coordinates on one axis
(``axhline``, ``axvline``, ``axhspan``, ``axvspan``: shapes spanning the axes), other patches
(shapes), texts (annotations, without arrows), axes titles and axis labels (annotations where
matplotlib placed them), the figure's suptitle, log scales, limits, grids, spines, shared axes
(zoomed together), fixed ticks with their texts (``set_xticks(positions, labels)``) and percent tick
formatters (shown as ``90%``).
Not converted: images (``imshow``), meshes and contours, legends' proxy artists (the Plotly legend
lists the series themselves), twin axes' placement (drawn as overlapping subplots), markers of
``scatter`` other than circles, annotation arrows, ``markevery``.
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

__all__ = [
    "CONFIG",
    "DRAWN_EVENT",
    "INTERACTIVE_CSS",
    "PIXELS_PER_INCH",
    "figure_html",
    "plotly_javascript",
    "plotly_spec",
    "script_json",
    "toggle_script",
]

PIXELS_PER_INCH = 120
"""CSS pixels per inch of the matplotlib figure: the interactive figure's widest size, and the scale
of its fonts, line widths and marker sizes (given in points by matplotlib)."""

PIXELS_PER_POINT = PIXELS_PER_INCH / 72
"""CSS pixels per typographic point (1/72 inch) of the matplotlib figure."""

CONFIG: dict[str, Any] = {
    "responsive": True,
    "displaylogo": False,
    "typesetMath": False,
    "showSendToCloud": False,
    "showEditInChartStudio": False,
    "plotlyServerURL": "",
    "modeBarButtonsToRemove": ["select2d", "lasso2d"],
}
"""Plotly's configuration of every figure: resized with the page, no Plotly logo, no MathJax
(nothing is fetched; ``$...$`` stays text), no link to Plotly's cloud, no selection tools (zoom,
pan, reset and download are kept)."""

INTERACTIVE_CSS = """\
@media print {
  .interactive-figure { display: none !important; }
  figure img[hidden] { display: inline !important; }
}"""
"""CSS rules for the page's stylesheet: printed (and saved as PDF) pages show the static pictures."""

DRAWN_EVENT = "noiseprop:interactive"
"""Name of the DOM event a figure's ``<div>`` fires (bubbling) once Plotly has drawn it."""

_ELEMENT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_:.-]*")
"""An HTML id that needs no escaping anywhere (attribute, CSS selector, JavaScript string)."""

# ------------------------------------------------------------------------------ style mappings
MARKER_SYMBOLS = {
    "o": "circle", ".": "circle", ",": "square", "s": "square", "D": "diamond", "d": "diamond-tall",
    "^": "triangle-up", "v": "triangle-down", "<": "triangle-left", ">": "triangle-right",
    "p": "pentagon", "h": "hexagon", "H": "hexagon2", "8": "octagon", "*": "star", "P": "cross",
    "X": "x", "+": "cross-thin-open", "x": "x-thin-open", "_": "line-ew-open", "|": "line-ns-open",
    "1": "y-down-open", "2": "y-up-open", "3": "y-left-open", "4": "y-right-open",
}  # fmt: skip
"""Matplotlib marker -> Plotly marker symbol (``-open`` symbols are strokes only)."""

LINE_DASHES = {"-": "solid", "solid": "solid", "--": "dash", "dashed": "dash", ":": "dot",
               "dotted": "dot", "-.": "dashdot", "dashdot": "dashdot"}  # fmt: skip
"""Matplotlib line style -> Plotly dash pattern."""

DRAW_STYLES = {"steps": "vh", "steps-pre": "vh", "steps-mid": "hvh", "steps-post": "hv"}
"""Matplotlib step draw style -> Plotly line shape."""

NO_LINE = ("None", "none", " ", "", None)
"""Matplotlib's ways of saying "no line" or "no marker"."""

VALUE_FORMAT = ".4~g"
"""d3-format of numbers in hover labels."""

PERCENT_FORMAT = ".2~%"
"""d3-format of fractions shown as percentages in hover labels."""


# ------------------------------------------------------------------------------- public API
def plotly_spec(figure: Figure) -> dict[str, Any]:
    """The Plotly figure (``{"data": [...], "layout": {...}}``, plain JSON data) of a matplotlib
    figure, read from its artists after a draw (so that its layout and ticks are final).

    Each visible axes is a subplot whose domain is its position in the figure (rescaled to the box
    around the axes, their labels and the suptitle, the figure's legends left out: the Plotly legend
    goes below); see the module's docstring for what is converted.
    """
    figure.draw_without_rendering()
    axes_list = [ax for ax in figure.axes if ax.get_visible()]
    paper = _Paper(figure, axes_list)
    book = _LegendBook(axes_list)
    data: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    layout: dict[str, Any] = {}
    for number, ax in enumerate(axes_list, start=1):
        panel = _Panel(ax, number, axes_list, paper)
        layout[panel.x_name] = _axis_layout(panel, "x")
        layout[panel.y_name] = _axis_layout(panel, "y")
        traces, panel_shapes, texts = _panel_artists(panel, book)
        data += traces
        shapes += panel_shapes
        annotations += texts
        for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
            label = _placed_text(text, panel.paper)
            if label is not None:
                annotations.append(label)
    layout.update(_figure_layout(figure, axes_list, paper, book))
    layout["shapes"] = shapes
    layout["annotations"] = annotations
    return _plain({"data": data, "layout": layout})


@functools.lru_cache(maxsize=1)
def plotly_javascript() -> str:
    """The plotly.js bundle of the installed ``plotly`` package (no network), ready to be put inside
    one ``<script>`` element: any ``</script`` or ``<!--`` in it is written so that it cannot end or
    confuse the element (``<\\/script``, ``<\\!--``: the same text to JavaScript)."""
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    bundle = re.sub(r"</(script)", r"<\\/\1", bundle, flags=re.IGNORECASE)
    return bundle.replace("<!--", "<\\!--")


def figure_html(figure: Figure, element_id: str) -> str:
    """The interactive figure of ``figure``: a hidden ``<div id=element_id class="interactive-figure">``
    as wide as the page allows (at most the figure's width at :data:`PIXELS_PER_INCH`), with the
    figure's aspect ratio, and a ``<script>`` that, once the page is parsed and if plotly.js is loaded,
    shows it, draws the figure into it with ``Plotly.newPlot`` (config :data:`CONFIG`) and fires
    :data:`DRAWN_EVENT` on it; on failure the ``<div>`` is hidden again and the error logged.

    Raises:
        ValueError: ``element_id`` is not a plain HTML id (a letter, then letters, digits, ``_:.-``).
    """
    if not isinstance(element_id, str) or not _ELEMENT_ID.fullmatch(element_id):
        raise ValueError(
            "element_id must be a letter followed by letters, digits, '_', ':', '.' or '-'; "
            f"got {element_id!r}."
        )
    width, height = (float(size) for size in figure.get_size_inches())
    style = (
        f"width: 100%; max-width: {width * PIXELS_PER_INCH:.0f}px; "
        f"aspect-ratio: {width:.4g} / {height:.4g};"
    )
    spec = plotly_spec(figure) | {"config": CONFIG}
    script = _DRAW_TEMPLATE.replace("ELEMENT_ID", json.dumps(element_id)).replace("EVENT", DRAWN_EVENT)
    script = script.replace("SPEC", script_json(spec))
    return (
        f'<div id="{element_id}" class="interactive-figure" style="{style}" hidden></div>\n'
        f"<script>{script}</script>\n"
    )


def toggle_script() -> str:
    """A ``<script>`` (once per page): when a figure's interactive ``<div>`` has been drawn, hide the
    ``<img>`` elements of the ``<figure>`` around it and add the class ``interactive-shown`` to that
    ``<figure>`` (without JavaScript, or without plotly.js, the pictures stay; a ``<div>`` outside a
    ``<figure>`` hides nothing)."""
    return f"<script>{_TOGGLE_TEMPLATE.replace('EVENT', DRAWN_EVENT)}</script>\n"


def script_json(value: Any) -> str:
    """``value`` as JSON safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and the line
    separators U+2028/U+2029 written as ``\\u`` escapes (they can only occur inside strings), so no
    text of the figure can end the element.

    Example:
        >>> script_json({"text": "</script><b>"})
        '{"text": "\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e"}'
    """
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    for character in "<>&\u2028\u2029":
        text = text.replace(character, f"\\u{ord(character):04x}")
    return text


_DRAW_TEMPLATE = """
(function () {
  var spec = SPEC;
  function draw() {
    var element = document.getElementById(ELEMENT_ID);
    if (!element || !window.Plotly) { return; }
    var failed = function (error) {
      element.hidden = true;
      console.error("interactive figure " + element.id + " not drawn: " + error);
    };
    element.hidden = false;
    try {
      Plotly.newPlot(element, spec.data, spec.layout, spec.config).then(function () {
        element.dispatchEvent(new CustomEvent("EVENT", {bubbles: true}));
      }, failed);
    } catch (error) { failed(error); }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else { draw(); }
})();
"""
"""JavaScript drawing one figure (ELEMENT_ID, SPEC, EVENT replaced)."""

_TOGGLE_TEMPLATE = """
document.addEventListener("EVENT", function (event) {
  var figure = event.target.closest("figure");
  if (!figure) { return; }
  figure.classList.add("interactive-shown");
  figure.querySelectorAll("img").forEach(function (image) { image.hidden = true; });
});
"""
"""JavaScript hiding a figure's static pictures once its interactive one is drawn (EVENT replaced)."""


# --------------------------------------------------------------------------- the figure's frame
class _Paper:
    """Plotly's paper (the plotting area inside the margins) as a box of the matplotlib figure: the
    union of the axes with their decorations and the suptitle, in figure fractions."""

    def __init__(self, figure: Figure, axes_list: list[Axes]):
        to_fraction = figure.transFigure.inverted()
        boxes = [ax.get_tightbbox().transformed(to_fraction) for ax in axes_list]
        title = _suptitle(figure)
        if title is not None:
            boxes.append(title.get_window_extent().transformed(to_fraction))
        self.x0 = max(0.0, min((box.x0 for box in boxes), default=0.0))
        self.y0 = max(0.0, min((box.y0 for box in boxes), default=0.0))
        self.x1 = min(1.0, max((box.x1 for box in boxes), default=1.0))
        self.y1 = min(1.0, max((box.y1 for box in boxes), default=1.0))
        self.to_fraction = to_fraction

    def x(self, fraction: float) -> float:
        """A figure fraction along x -> a paper fraction."""
        return (fraction - self.x0) / max(self.x1 - self.x0, 1e-9)

    def y(self, fraction: float) -> float:
        """A figure fraction along y -> a paper fraction."""
        return (fraction - self.y0) / max(self.y1 - self.y0, 1e-9)

    def point(self, display: Iterable[float]) -> tuple[float, float]:
        """A point in display (pixel) coordinates -> paper fractions."""
        fx, fy = self.to_fraction.transform(np.asarray(display, dtype=float))
        return self.x(fx), self.y(fy)


class _Panel:
    """One axes as a Plotly subplot: its axes' names (``xaxis2``), references (``x2``), domains and
    the facts read from matplotlib that several mappings need."""

    def __init__(self, ax: Axes, number: int, axes_list: list[Axes], paper: _Paper):
        suffix = "" if number == 1 else str(number)
        self.ax, self.number, self.axes_list, self.paper = ax, number, axes_list, paper
        self.x_name, self.y_name = f"xaxis{suffix}", f"yaxis{suffix}"
        self.x_ref, self.y_ref = f"x{suffix}", f"y{suffix}"
        position = ax.get_position()
        self.x_domain = [_clip01(paper.x(position.x0)), _clip01(paper.x(position.x1))]
        self.y_domain = [_clip01(paper.y(position.y0)), _clip01(paper.y(position.y1))]
        self.categories = {"x": _categories(ax.xaxis), "y": _categories(ax.yaxis)}
        self.percent = {"x": _is_percent(ax.xaxis), "y": _is_percent(ax.yaxis)}
        self.log = {"x": ax.get_xscale() == "log", "y": ax.get_yscale() == "log"}
        self.labels = {"x": _hover_label(ax, "x"), "y": _hover_label(ax, "y")}

    def on_data(self, transform: Any) -> tuple[bool, bool]:
        """Whether an artist's ``transform`` takes x, and y, in data coordinates (else axes
        fractions, or something else)."""
        return transform.contains_branch_seperately(self.ax.transData)

    def refs(self, x_data: bool, y_data: bool) -> dict[str, str]:
        """``xref``/``yref`` of a shape or annotation: the data, or the axes' domain (fractions)."""
        return {
            "xref": self.x_ref if x_data else f"{self.x_ref} domain",
            "yref": self.y_ref if y_data else f"{self.y_ref} domain",
        }


def _hover_label(ax: Axes, which: str) -> str:
    """The label naming an axis's values in hover labels: the axis's label, else that of an axis
    shared with it (inner panels of a grid have theirs removed), else ``"x"`` or ``"y"``."""
    group = ax.get_shared_x_axes() if which == "x" else ax.get_shared_y_axes()
    for other in [ax, *group.get_siblings(ax)]:
        label = other.get_xlabel() if which == "x" else other.get_ylabel()
        if label:
            return _plain_text(label)
    return which


def _clip01(value: float) -> float:
    return min(1.0, max(0.0, value))


# ------------------------------------------------------------------------------------- layout
def _figure_layout(figure: Figure, axes_list: list[Axes], paper: _Paper, book: _LegendBook) -> dict:
    """The figure-wide layout: size behaviour, margins, colours, fonts, legend below the paper,
    hover, overlaid bars and the suptitle as the title."""
    from matplotlib import rcParams

    # the figure's own sizes where it has them: the caller may be outside the style it was drawn in
    font_size = float(axes_list[0].xaxis.label.get_fontsize() if axes_list else rcParams["font.size"])
    legend_size = _legend_font_size(figure, axes_list) or _font_size_points(
        rcParams["legend.fontsize"], font_size
    )
    background = axes_list[0].get_facecolor() if axes_list else "white"
    layout: dict[str, Any] = {
        "autosize": True,
        "margin": {"l": 4, "r": 4, "t": 4, "b": 4, "pad": 0},
        "paper_bgcolor": _css_colour(figure.get_facecolor()),
        "plot_bgcolor": _css_colour(background),
        "font": {"family": _font_family(), "size": _px(font_size), "color": "#222"},
        "showlegend": book.any_shown,
        "legend": {
            "orientation": "h", "x": 0.5, "xanchor": "center", "y": 0.0, "yanchor": "top",
            "yref": "paper", "font": {"size": _px(legend_size)}, "itemsizing": "constant",
            "groupclick": "togglegroup",
        },
        "hovermode": "closest",
        "hoverlabel": {"namelength": -1},
        "barmode": "overlay",
    }  # fmt: skip
    suptitle = _suptitle(figure)
    title = _placed_text(suptitle, paper) if suptitle is not None else None
    if title is not None:
        layout["title"] = {key: title[key] for key in ("text", "x", "y", "xref", "yref", "xanchor",
                                                       "yanchor", "font")}  # fmt: skip
    return layout


def _suptitle(figure: Figure) -> Any:
    """The figure's suptitle (a ``Text``), or None when it has none."""
    title = getattr(figure, "_suptitle", None)  # matplotlib keeps the artist itself private
    return title if title is not None and title.get_text() and title.get_visible() else None


def _legend_font_size(figure: Figure, axes_list: list[Axes]) -> float | None:
    """Font size (points) of the figure's first legend (the figure's own, else an axes'), if any."""
    legends = [*figure.legends, *(ax.get_legend() for ax in axes_list)]
    for legend in legends:
        if legend is not None and legend.get_texts():
            return float(legend.get_texts()[0].get_fontsize())
    return None


def _axis_layout(panel: _Panel, which: str) -> dict[str, Any]:
    """One matplotlib axis (``which``: ``"x"`` or ``"y"``) as a Plotly axis: domain, anchor, scale,
    range, label, ticks (fixed text ticks kept, percentages, powers of ten on log axes), grid, spine,
    shared zoom."""
    ax = panel.ax
    axis = ax.xaxis if which == "x" else ax.yaxis
    other_ref = panel.y_ref if which == "x" else panel.x_ref
    low, high = ax.get_xlim() if which == "x" else ax.get_ylim()
    log = panel.log[which]
    spine = ax.spines["bottom" if which == "x" else "left"]
    mirror = ax.spines["top" if which == "x" else "right"]
    tick_labels = [label for label in axis.get_majorticklabels() if label.get_visible()]
    tick_font = tick_labels[0] if tick_labels else axis.label
    ticks = axis.get_major_ticks()
    direction = ticks[0].get_tickdir() if ticks else str(_rc(f"{which}tick.direction", "out"))
    tick_mark = ticks[0].tick1line if ticks else None
    layout: dict[str, Any] = {
        "domain": panel.x_domain if which == "x" else panel.y_domain,
        "anchor": other_ref,
        "type": "log" if log else "linear",
        "range": [_axis_value(low, log), _axis_value(high, log)],
        "autorange": False,
        "showgrid": any(line.get_visible() for line in axis.get_gridlines()),
        "zeroline": False,
        "showline": spine.get_visible(),
        "mirror": bool(mirror.get_visible()),
        "linecolor": _css_colour(spine.get_edgecolor()),
        "linewidth": _px(spine.get_linewidth()),
        "ticks": "inside" if direction == "in" else "outside",
        "ticklen": _px(tick_mark.get_markersize()) if tick_mark else _px(3.5),
        "tickwidth": _px(tick_mark.get_markeredgewidth()) if tick_mark else 1,
        "tickcolor": _css_colour(tick_mark.get_markeredgecolor() if tick_mark else "black"),
        "showticklabels": any(label.get_text() for label in tick_labels),
        "tickfont": {"size": _px(tick_font.get_fontsize()), "color": _css_colour(tick_font.get_color())},
        "automargin": True,
        "visible": bool(ax.axison and axis.get_visible()),
    }  # fmt: skip
    gridlines = axis.get_gridlines()
    if gridlines:
        layout["gridcolor"] = _css_colour(gridlines[0].get_color(), gridlines[0].get_alpha())
        layout["gridwidth"] = _px(gridlines[0].get_linewidth())
    if log:
        layout.update(exponentformat="power", showexponent="all")
        if high > 0 and low > 0 and abs(math.log10(high / low)) >= 1:
            layout["dtick"] = 1  # powers of ten only, as matplotlib labels them (no 2, 3, 5 between)
    if panel.percent[which]:
        layout.update(tickformat="~%", hoverformat=PERCENT_FORMAT)
    fixed = _fixed_ticks(axis)
    if fixed is not None:
        values, texts = fixed
        layout.update(tickmode="array", tickvals=values, ticktext=texts)
    shared = _shared_with(panel, which)
    if shared is not None:
        layout["matches"] = shared
    return layout


def _axis_value(value: float, log: bool) -> float | None:
    """A limit or position on an axis as Plotly takes it: log10 of it on log axes."""
    if log:
        return math.log10(value) if value > 0 else None
    return float(value)


def _shared_with(panel: _Panel, which: str) -> str | None:
    """``"x2"`` (say) when this axis is shared with the axis of an earlier panel (zoomed together)."""
    group = panel.ax.get_shared_x_axes() if which == "x" else panel.ax.get_shared_y_axes()
    for number, other in enumerate(panel.axes_list[: panel.number - 1], start=1):
        if group.joined(panel.ax, other):
            return f"{which}{'' if number == 1 else number}"
    return None


def _fixed_ticks(axis: Axis) -> tuple[list[float], list[str]] | None:
    """The tick positions and texts of an axis whose tick positions were given (``set_xticks``, with
    or without labels: matplotlib's ``FixedLocator``), as matplotlib writes them; else None (Plotly
    then chooses ticks, and more of them as one zooms in)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator

    locator, formatter = axis.get_major_locator(), axis.get_major_formatter()
    if not isinstance(locator, FixedLocator) and not isinstance(formatter, FixedFormatter):
        return None
    positions = [float(position) for position in axis.get_majorticklocs()]
    texts = formatter.format_ticks(positions)
    return positions, [_plain_text(text) for text in texts]


def _categories(axis: Axis) -> tuple[np.ndarray, list[str]] | None:
    """Positions and texts of an axis's fixed ticks when none of them reads as a number (the axis of
    a bar or dot plot: its ticks name categories), else None."""
    fixed = _fixed_ticks(axis)
    if fixed is None or not fixed[0] or any(_reads_as_number(text) for text in fixed[1]):
        return None
    return np.asarray(fixed[0]), fixed[1]


def _reads_as_number(text: str) -> bool:
    try:
        float(text.replace("−", "-"))
    except ValueError:
        return False
    return True


def _is_percent(axis: Axis) -> bool:
    """Whether an axis's ticks show fractions as percentages without a sign (0.9 -> "90", a
    ``FuncFormatter`` such as :func:`noiseprop.figures.percent_axis`)."""
    from matplotlib.ticker import FuncFormatter

    formatter = axis.get_major_formatter()
    if not isinstance(formatter, FuncFormatter):
        return False
    try:
        return all(formatter(value, 0) == f"{100 * value:g}" for value in (0.25, 0.5, 0.9))
    except Exception:  # noqa: BLE001 - a formatter that cannot format these is not a percentage
        return False


def _placed_text(text: Any, paper: _Paper) -> dict[str, Any] | None:
    """A text placed on the figure (an axes' title, an axis label) as an annotation at the same place
    on the paper (its centre), in its size, colour and rotation; None when empty or hidden.

    Axis labels are annotations rather than Plotly axis titles so that they sit where matplotlib's
    layout put them (Plotly would place them by its own rules, over a title below them).
    """
    if not text.get_text() or not text.get_visible():
        return None
    x, y = paper.point(text.get_window_extent().get_points().mean(axis=0))
    return {
        "text": _plain_text(text.get_text()), "x": x, "y": y, "xref": "paper", "yref": "paper",
        "xanchor": "center", "yanchor": "middle", "showarrow": False,
        "textangle": -float(text.get_rotation()),
        "font": {"size": _px(text.get_fontsize()), "color": _css_colour(text.get_color())},
    }  # fmt: skip


# ------------------------------------------------------------------------------------- legend
class _LegendBook:
    """Which labels the legend shows: each label once (its first trace or shape), in matplotlib's
    legend order (``legendrank``), in a ``legendgroup`` of that label so that one click hides the
    series in every panel; labels starting with ``_`` (matplotlib's unlabelled) are not shown."""

    def __init__(self, axes_list: list[Axes]):
        self.rank: dict[str, int] = {}
        for ax in axes_list:
            for label in ax.get_legend_handles_labels()[1]:
                self.rank.setdefault(label, len(self.rank) + 1)
        self.shown: set[str] = set()

    @property
    def any_shown(self) -> bool:
        return bool(self.shown)

    def entry(self, label: str | None) -> dict[str, Any]:
        """``name``, ``showlegend``, ``legendgroup`` (and ``legendrank``) of a trace or shape."""
        if not label or label.startswith("_"):
            return {"name": "", "showlegend": False}
        first = label not in self.shown
        self.shown.add(label)
        entry = {"name": _plain_text(label), "legendgroup": label, "showlegend": first}
        if label in self.rank:
            entry["legendrank"] = self.rank[label]
        return entry


# ------------------------------------------------------------------------------------ artists
def _panel_artists(panel: _Panel, book: _LegendBook) -> tuple[list[dict], list[dict], list[dict]]:
    """The traces, shapes and annotations of one axes' artists, in matplotlib's drawing order
    (z-order, then order of addition)."""
    from matplotlib.collections import LineCollection, PathCollection, PolyCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.text import Text

    ax = panel.ax
    roles = _container_roles(ax)
    traces: list[dict] = []
    shapes: list[dict] = []
    texts: list[dict] = []
    artists = sorted(
        (artist for artist in ax.get_children() if artist.get_visible()), key=lambda a: a.get_zorder()
    )
    owned = {id(artist) for artist in [*ax.lines, *ax.patches, *ax.collections, *ax.texts]}
    for artist in artists:
        if id(artist) not in owned:
            continue  # spines, axis, title, legend, background
        role = roles.get(id(artist))
        if role is not None:
            trace = _container_trace(role, panel, book) if role[0] == "draw" else None
            if trace is not None:
                traces.append(trace)
        elif isinstance(artist, Line2D):
            _convert_line(artist, panel, book, traces, shapes)
        elif isinstance(artist, Patch):
            shape = _patch_shape(artist, panel, book)
            if shape is not None:
                shapes.append(shape)
        elif isinstance(artist, PolyCollection):
            traces += _fill_traces(artist, panel, book)
        elif isinstance(artist, LineCollection):
            traces += _segment_traces(artist, panel, book)
        elif isinstance(artist, PathCollection):
            traces += _scatter_traces(artist, panel, book)
        elif isinstance(artist, Text):
            annotation = _text_annotation(artist, panel)
            if annotation is not None:
                texts.append(annotation)
    return traces, shapes, texts


def _container_roles(ax: Axes) -> dict[int, tuple]:
    """Artist id -> its role in a container: ``("draw", container)`` for the artist that stands for
    the whole container (an error bar's data line, or the first bar), ``("part", container)`` for
    the others (caps, bar segments, other bars), drawn with it."""
    from matplotlib.container import BarContainer, ErrorbarContainer

    roles: dict[int, tuple] = {}
    attached = set()
    for container in ax.containers:
        if isinstance(container, BarContainer):
            patches = list(container.patches)
            for patch in patches:
                roles[id(patch)] = ("part", container)
            if patches:
                roles[id(patches[0])] = ("draw", container)
            if container.errorbar is not None:
                attached.add(id(container.errorbar))
                for artist in _errorbar_parts(container.errorbar):
                    roles[id(artist)] = ("part", container)
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer) and id(container) not in attached:
            data_line, caps, bars = container.lines
            for artist in [*caps, *bars]:
                roles[id(artist)] = ("part", container)
            # without a data line (fmt="none"), the first bar collection stands for the container
            leader = data_line if data_line is not None else (bars[0] if bars else None)
            if leader is not None:
                roles[id(leader)] = ("draw", container)
    return roles


def _errorbar_parts(container: Any) -> list[Artist]:
    data_line, caps, bars = container.lines
    return [artist for artist in [data_line, *caps, *bars] if artist is not None]


def _container_trace(role: tuple, panel: _Panel, book: _LegendBook) -> dict[str, Any] | None:
    from matplotlib.container import BarContainer

    container = role[1]
    if isinstance(container, BarContainer):
        return _bar_trace(container, panel, book)
    return _errorbar_trace(container, panel, book)


# ---------------------------------------------------------------------------------- lines
def _convert_line(line: Line2D, panel: _Panel, book: _LegendBook, traces: list, shapes: list) -> None:
    """A ``Line2D``: a trace when both its coordinates are data, a shape spanning the axes when one
    is an axes fraction (``axhline``, ``axvline``), nothing otherwise."""
    x_data, y_data = panel.on_data(line.get_transform())
    if x_data and y_data:
        trace = _line_trace(line, panel, book)
        if trace is not None:
            _add_hover(trace, panel)
            traces.append(trace)
    elif x_data or y_data:
        shape = _reference_line_shape(line, panel, book, x_data, y_data)
        if shape is not None:
            shapes.append(shape)


def _line_trace(line: Line2D, panel: _Panel, book: _LegendBook, label: str | None = None) -> dict | None:
    """A data ``Line2D`` as a scatter trace: mode from its line style and marker, line colour, width,
    dash and step shape, marker symbol, size, face and edge; ``label`` (default the line's) names it
    in the legend. None for a line with neither a line nor a marker."""
    points = np.asarray(line.get_xydata(), dtype=float).reshape(-1, 2)
    has_line = line.get_linestyle() not in NO_LINE and line.get_linewidth() > 0
    has_marker = line.get_marker() not in NO_LINE
    mode = "+".join(part for part, shown in (("lines", has_line), ("markers", has_marker)) if shown)
    if not mode:
        return None
    alpha = line.get_alpha()
    trace: dict[str, Any] = {
        "type": "scatter", "mode": mode, "x": _numbers(points[:, 0]), "y": _numbers(points[:, 1]),
        "xaxis": panel.x_ref, "yaxis": panel.y_ref,
        **book.entry(line.get_label() if label is None else label),
    }  # fmt: skip
    if has_line:
        trace["line"] = {
            "color": _css_colour(line.get_color(), alpha),
            "width": _px(line.get_linewidth()),
            "dash": LINE_DASHES.get(str(line.get_linestyle()), "solid"),
            "shape": DRAW_STYLES.get(line.get_drawstyle(), "linear"),
        }
    if has_marker:
        trace["marker"] = _line_marker(line, alpha)
    return trace


def _line_marker(line: Line2D, alpha: float | None) -> dict[str, Any]:
    """A ``Line2D``'s marker: symbol, size (points -> pixels), face colour (transparent for
    ``"none"``), edge colour and width."""
    marker = str(line.get_marker())
    symbol = MARKER_SYMBOLS.get(marker, "circle")
    edge = _css_colour(line.get_markeredgecolor(), alpha)
    face = line.get_markerfacecolor()
    open_symbol = symbol.endswith("-open")
    size = line.get_markersize() * (0.5 if marker == "." else 1.0)
    return {
        "symbol": symbol,
        "size": _px(size),
        "color": edge if open_symbol else _css_colour(face, alpha),
        "line": {"color": edge, "width": _px(line.get_markeredgewidth())},
    }


def _reference_line_shape(
    line: Line2D, panel: _Panel, book: _LegendBook, x_data: bool, y_data: bool
) -> dict[str, Any] | None:
    """A line with one coordinate in axes fractions (``axhline``, ``axvline``) as a line shape from its
    first to its last point, spanning what it spans of the axes whatever the zoom."""
    points = np.asarray(line.get_xydata(), dtype=float).reshape(-1, 2)
    if len(points) < 2 or line.get_linestyle() in NO_LINE or not np.isfinite(points).all():
        return None
    (x0, y0), (x1, y1) = points[0], points[-1]
    return {
        "type": "line", "x0": x0, "x1": x1, "y0": y0, "y1": y1, **panel.refs(x_data, y_data),
        "line": {"color": _css_colour(line.get_color(), line.get_alpha()),
                 "width": _px(line.get_linewidth()),
                 "dash": LINE_DASHES.get(str(line.get_linestyle()), "solid")},
        "layer": "above" if line.get_zorder() >= 2 else "below",
        **book.entry(line.get_label()),
    }  # fmt: skip


# ---------------------------------------------------------------------------------- error bars
def _errorbar_trace(container: Any, panel: _Panel, book: _LegendBook) -> dict[str, Any] | None:
    """An ``ErrorbarContainer`` as the trace of its data line (named by the container's label) with
    ``error_y`` / ``error_x`` read from its bar segments and caps; without a data line
    (``fmt="none"``) a trace of the error bars alone."""
    data_line, caps, bars = container.lines
    trace = None
    if data_line is not None:
        trace = _line_trace(data_line, panel, book, label=container.get_label())
        points = np.asarray(data_line.get_xydata(), dtype=float).reshape(-1, 2)
    else:
        points = _errorbar_centres(bars[:1])
    if trace is None:
        trace = {
            "type": "scatter", "mode": "none", "x": _numbers(points[:, 0]), "y": _numbers(points[:, 1]),
            "xaxis": panel.x_ref, "yaxis": panel.y_ref, **book.entry(container.get_label()),
        }  # fmt: skip
    cap_width = _px(caps[0].get_markersize() / 2) if caps else 0.0
    for bar_lines in bars:
        direction, error = _error_arrays(bar_lines, points, cap_width)
        if error is not None:
            trace[f"error_{direction}"] = error
    _add_hover(trace, panel)
    return trace


def _errorbar_centres(bars: Iterable[Any]) -> np.ndarray:
    """The points of error bars without a data line: the middles of their segments."""
    segments = [np.asarray(s, dtype=float) for lines in bars for s in lines.get_segments()]
    return np.array([s.mean(axis=0) for s in segments if len(s) == 2]).reshape(-1, 2)


def _error_arrays(bar_lines: Any, points: np.ndarray, cap_width: float) -> tuple[str, dict | None]:
    """One ``LineCollection`` of error bars as Plotly's ``error_y`` (vertical segments) or ``error_x``
    (horizontal): the distance from each point to its segment's ends (``array`` above or right,
    ``arrayminus`` below or left; one ``array`` when they are equal), null where a point has no bar."""
    segments = [np.asarray(segment, dtype=float) for segment in bar_lines.get_segments()]
    segments = [segment for segment in segments if segment.shape == (2, 2)]
    if not segments:
        return "y", None
    vertical = all(np.isclose(s[0, 0], s[1, 0]) for s in segments)
    axis = 1 if vertical else 0  # the coordinate the bars extend along
    across = 1 - axis
    plus: list[float | None] = [None] * len(points)
    minus: list[float | None] = [None] * len(points)
    for segment in segments:
        low, high = sorted(segment[:, axis])
        for index in _matching_points(points, segment[0, across], low, high, axis, across):
            if plus[index] is None:
                plus[index] = _rounded(high - points[index, axis])
                minus[index] = _rounded(points[index, axis] - low)
                break
    colours = bar_lines.get_colors()
    widths = bar_lines.get_linewidths()
    error: dict[str, Any] = {
        "type": "data",
        "array": plus,
        "visible": True,
        "color": _css_colour(colours[0] if len(colours) else "black", bar_lines.get_alpha()),
        "thickness": _px(float(widths[0]) if len(widths) else 1.0),
        "width": cap_width,
    }
    symmetric = all(p is None or np.isclose(p, m) for p, m in zip(plus, minus))
    if symmetric:
        error["symmetric"] = True
    else:
        error.update(symmetric=False, arrayminus=minus)
    return ("y" if vertical else "x"), error


def _rounded(value: float) -> float:
    """A difference of two coordinates to 12 significant digits (without the rounding error of
    ``(y + e) - y``)."""
    return float(f"{value:.12g}")


def _matching_points(
    points: np.ndarray, position: float, low: float, high: float, axis: int, across: int
) -> list[int]:
    """Indices of the points at ``position`` across the bar and within ``[low, high]`` along it."""
    at = np.isclose(points[:, across], position, rtol=1e-9, atol=0.0)
    within = (points[:, axis] >= low - 1e-12 * abs(low)) & (points[:, axis] <= high + 1e-12 * abs(high))
    return [int(index) for index in np.flatnonzero(at & within)]


# ------------------------------------------------------------------------------------- bars
def _bar_trace(container: Any, panel: _Panel, book: _LegendBook) -> dict[str, Any] | None:
    """A ``BarContainer`` as a bar trace: each rectangle's centre, length, base and width, face and
    edge colours, and its error bars if any."""
    patches = list(container.patches)
    if not patches:
        return None
    horizontal = container.orientation == "horizontal"
    x = np.array([p.get_x() for p in patches], dtype=float)
    y = np.array([p.get_y() for p in patches], dtype=float)
    width = np.array([p.get_width() for p in patches], dtype=float)
    height = np.array([p.get_height() for p in patches], dtype=float)
    if horizontal:
        centres, lengths, bases, thickness = y + height / 2, width, x, height
    else:
        centres, lengths, bases, thickness = x + width / 2, height, y, width
    trace: dict[str, Any] = {
        "type": "bar",
        "orientation": "h" if horizontal else "v",
        "x": _numbers(lengths if horizontal else centres),
        "y": _numbers(centres if horizontal else lengths),
        "base": _numbers(bases),
        "width": _numbers(thickness),
        "offset": _numbers(-thickness / 2),
        "xaxis": panel.x_ref,
        "yaxis": panel.y_ref,
        "marker": {
            "color": [_css_colour(p.get_facecolor()) for p in patches],
            "line": {
                "color": [_css_colour(p.get_edgecolor()) for p in patches],
                "width": _px(patches[0].get_linewidth()),
            },
        },  # fmt: skip
        **book.entry(container.get_label()),
    }
    if container.errorbar is not None:
        ends = np.column_stack([bases + lengths, centres] if horizontal else [centres, bases + lengths])
        caps = container.errorbar.lines[1]
        cap_width = _px(caps[0].get_markersize() / 2) if caps else 0.0
        for bar_lines in container.errorbar.lines[2]:
            direction, error = _error_arrays(bar_lines, ends, cap_width)
            if error is not None:
                trace[f"error_{direction}"] = error
    _add_hover(trace, panel)
    return trace


# ------------------------------------------------------------------------------ collections
def _fill_traces(collection: Any, panel: _Panel, book: _LegendBook) -> list[dict[str, Any]]:
    """A ``PolyCollection`` (``fill_between``, ``stackplot``) in data coordinates as one filled
    trace (``fill="toself"``): its polygons separated by gaps, its face colour, its edge if drawn."""
    if not all(panel.on_data(collection.get_transform())) or collection.get_offsets().size > 2:
        return []
    polygons = [np.asarray(p, dtype=float) for path in collection.get_paths()
                for p in path.to_polygons(closed_only=False) if len(p)]  # fmt: skip
    if not polygons:
        return []
    x, y = _joined(polygons)
    faces = collection.get_facecolors()
    edges = collection.get_edgecolors()
    widths = collection.get_linewidths()
    edge_width = float(widths[0]) if len(widths) and len(edges) else 0.0
    entry = book.entry(collection.get_label())
    trace = {
        "type": "scatter", "mode": "lines", "x": x, "y": y, "fill": "toself",
        "fillcolor": _css_colour(faces[0] if len(faces) else "none"),
        "line": {"color": _css_colour(edges[0] if len(edges) else "none"),
                 "width": _px(edge_width)},
        "xaxis": panel.x_ref, "yaxis": panel.y_ref, "hoveron": "fills",
        "hoverinfo": "name" if entry["name"] else "skip", **entry,
    }  # fmt: skip
    return [trace]


def _segment_traces(collection: Any, panel: _Panel, book: _LegendBook) -> list[dict[str, Any]]:
    """A ``LineCollection`` in data coordinates (``vlines``, ``hlines``) as one line trace, its
    segments separated by gaps, in its first colour and width."""
    if not all(panel.on_data(collection.get_transform())):
        return []
    segments = [np.asarray(s, dtype=float) for s in collection.get_segments() if len(s)]
    if not segments:
        return []
    x, y = _joined(segments)
    colours = collection.get_colors()
    widths = collection.get_linewidths()
    style = collection.get_linestyle()
    dash = "solid" if not style or style[0][1] is None else "dash"
    trace = {
        "type": "scatter", "mode": "lines", "x": x, "y": y,
        "line": {"color": _css_colour(colours[0] if len(colours) else "black", collection.get_alpha()),
                 "width": _px(float(widths[0]) if len(widths) else 1.0), "dash": dash},
        "xaxis": panel.x_ref, "yaxis": panel.y_ref, **book.entry(collection.get_label()),
    }  # fmt: skip
    _add_hover(trace, panel)
    return [trace]


def _scatter_traces(collection: Any, panel: _Panel, book: _LegendBook) -> list[dict[str, Any]]:
    """A ``PathCollection`` (``scatter``) whose offsets are data as a markers trace: circles of its
    sizes (area in points² -> diameter in pixels), face and edge colours (one, or one per point)."""
    if not all(panel.on_data(collection.get_offset_transform())):
        return []
    offsets = np.asarray(collection.get_offsets(), dtype=float).reshape(-1, 2)
    if not len(offsets):
        return []
    sizes = np.sqrt(np.asarray(collection.get_sizes(), dtype=float))
    faces = [_css_colour(colour) for colour in collection.get_facecolors()]
    edges = [_css_colour(colour) for colour in collection.get_edgecolors()]
    widths = collection.get_linewidths()
    trace = {
        "type": "scatter", "mode": "markers", "x": _numbers(offsets[:, 0]),
        "y": _numbers(offsets[:, 1]), "xaxis": panel.x_ref, "yaxis": panel.y_ref,
        "marker": {
            "symbol": "circle",
            "size": _px(sizes[0]) if len(sizes) == 1 else [_px(s) for s in sizes],
            "color": _one_or_all(faces, "rgba(0, 0, 0, 0)"),
            "line": {"color": _one_or_all(edges, "rgba(0, 0, 0, 0)"),
                     "width": _px(float(widths[0]) if len(widths) else 0.0)},
        },
        **book.entry(collection.get_label()),
    }  # fmt: skip
    _add_hover(trace, panel)
    return [trace]


def _one_or_all(values: list[str], default: str) -> str | list[str]:
    return default if not values else values[0] if len(values) == 1 else values


def _joined(parts: list[np.ndarray]) -> tuple[list, list]:
    """Polylines (arrays of points) as one x list and one y list, separated by nulls (gaps)."""
    x: list[float | None] = []
    y: list[float | None] = []
    for index, part in enumerate(parts):
        if index:
            x.append(None)
            y.append(None)
        x += _numbers(part[:, 0])
        y += _numbers(part[:, 1])
    return x, y


# --------------------------------------------------------------------------------- patches
def _patch_shape(patch: Any, panel: _Panel, book: _LegendBook) -> dict[str, Any] | None:
    """A patch that no container owns (``axhspan``, ``axvspan``, a rectangle or polygon added by
    hand) as a shape below the data: a rectangle, or a path; each coordinate in data, or in axes
    fractions where the patch is (``axhspan``: x)."""
    from matplotlib.patches import Rectangle

    x_data, y_data = panel.on_data(patch.get_data_transform())
    if not (x_data or y_data) and patch.get_data_transform() != panel.ax.transAxes:
        return None
    style = {
        "fillcolor": _css_colour(patch.get_facecolor()) if patch.get_fill() else "rgba(0, 0, 0, 0)",
        "line": {"color": _css_colour(patch.get_edgecolor()), "width": _px(patch.get_linewidth())},
        "layer": "below" if patch.get_zorder() < 2 else "above",
        **panel.refs(x_data, y_data),
        **book.entry(patch.get_label()),
    }
    if isinstance(patch, Rectangle) and patch.get_angle() == 0:
        x0, y0 = patch.get_xy()
        return {"type": "rect", "x0": x0, "x1": x0 + patch.get_width(), "y0": y0,
                "y1": y0 + patch.get_height(), **style}  # fmt: skip
    path = patch.get_patch_transform().transform_path(patch.get_path())
    polygons = [p for p in path.to_polygons(closed_only=False) if len(p) and np.isfinite(p).all()]
    if not polygons:
        return None
    commands = " ".join(
        "M " + " L ".join(f"{x:.10g},{y:.10g}" for x, y in polygon) + " Z" for polygon in polygons
    )
    return {"type": "path", "path": commands, **style}


# ----------------------------------------------------------------------------------- texts
def _text_annotation(text: Any, panel: _Panel) -> dict[str, Any] | None:
    """A text of the axes as an annotation: at its data position when it is placed in data
    coordinates (log10 on log axes), else at its place on the figure; alignment, size, colour and
    rotation kept, arrows left out."""
    from matplotlib.text import Annotation

    content = text.get_text()
    if not content:
        return None
    x_data, y_data = panel.on_data(text.get_transform())
    anchors = {
        "xanchor": {"left": "left", "right": "right"}.get(text.get_horizontalalignment(), "center"),
        "yanchor": {"top": "top", "bottom": "bottom", "baseline": "bottom"}.get(
            text.get_verticalalignment(), "middle"
        ),
    }
    if x_data and y_data and not isinstance(text, Annotation):
        x, y = text.get_position()
        position = {
            "x": _axis_value(float(x), panel.log["x"]), "y": _axis_value(float(y), panel.log["y"]),
            "xref": panel.x_ref, "yref": panel.y_ref, **anchors,
        }  # fmt: skip
    else:
        x, y = panel.paper.point(text.get_window_extent().get_points().mean(axis=0))
        position = {"x": x, "y": y, "xref": "paper", "yref": "paper", "xanchor": "center",
                    "yanchor": "middle"}  # fmt: skip
    return {
        "text": _plain_text(content), **position, "showarrow": False,
        "textangle": -float(text.get_rotation()),
        "font": {"size": _px(text.get_fontsize()), "color": _css_colour(text.get_color())},
    }  # fmt: skip


# ------------------------------------------------------------------------------------ hover
def _add_hover(trace: dict[str, Any], panel: _Panel) -> None:
    """A hover label naming the axes, ``x label: x`` and ``y label: y`` (the category's name on a
    categorical axis, percentages on a percent axis, ``± error`` where the trace has error bars,
    ``+a −b`` where they are not symmetric), and the series' name."""
    columns: list[list[Any]] = [[] for _ in trace["x"]]  # customdata: one row per point
    lines = []
    for which in ("x", "y"):
        number = PERCENT_FORMAT if panel.percent[which] else VALUE_FORMAT
        categories = panel.categories[which]
        if categories is not None:
            positions = np.asarray([np.nan if v is None else v for v in trace[which]], dtype=float)
            column = _append_column(columns, _nearest_names(positions, categories))
            line = f"{panel.labels[which]}: %{{customdata[{column}]}}"
        else:
            line = f"{panel.labels[which]}: %{{{which}:{number}}}"
        error = trace.get(f"error_{which}")
        if error:
            plus = _append_column(columns, error["array"])
            if error.get("symmetric"):
                line += f" ± %{{customdata[{plus}]:{number}}}"
            else:
                minus = _append_column(columns, error["arrayminus"])
                line += f" +%{{customdata[{plus}]:{number}}} −%{{customdata[{minus}]:{number}}}"
        lines.append(line)
    if columns and columns[0]:
        trace["customdata"] = columns
    trace["hovertemplate"] = "<br>".join(lines) + f"<extra>{trace.get('name') or ''}</extra>"


def _append_column(rows: list[list[Any]], values: list[Any]) -> int:
    """Append one value to each row; return the new column's index."""
    for row, value in zip(rows, values):
        row.append(value)
    return len(rows[0]) - 1 if rows else 0


def _nearest_names(values: np.ndarray, categories: tuple[np.ndarray, list[str]]) -> list[str]:
    """The name of the nearest category tick of each position (empty where a position is missing)."""
    positions, names = categories
    result = []
    for value in values:
        if not np.isfinite(value):
            result.append("")
            continue
        result.append(names[int(np.argmin(np.abs(positions - value)))])
    return result


# ------------------------------------------------------------------------------ conversions
def _px(points: float) -> float:
    """A length in points (matplotlib's unit of sizes and widths) in CSS pixels, rounded."""
    return round(float(points) * PIXELS_PER_POINT, 2)


def _css_colour(colour: Any, alpha: float | None = None) -> str:
    """A matplotlib colour (name, hex, RGB(A) tuple, ``"none"``) as CSS ``rgba(r, g, b, a)``; ``alpha``
    (the artist's) replaces the colour's own when given."""
    from matplotlib.colors import to_rgba

    if isinstance(colour, str) and colour.lower() == "none":
        return "rgba(0, 0, 0, 0)"
    red, green, blue, opacity = to_rgba(colour, alpha)
    return f"rgba({round(red * 255)}, {round(green * 255)}, {round(blue * 255)}, {opacity:.3g})"


def _font_size_points(size: Any, default: float) -> float:
    """A matplotlib font size (points, or a name such as ``"small"``) in points."""
    from matplotlib.font_manager import FontProperties

    try:
        return float(FontProperties(size=size).get_size_in_points())
    except (TypeError, ValueError):
        return default


def _font_family() -> str:
    """CSS font family of the figure's text: matplotlib's first sans-serif font, then any."""
    from matplotlib import rcParams

    fonts = [font for font in rcParams["font.sans-serif"][:1] if font]
    return ", ".join([*fonts, "sans-serif"])


def _rc(name: str, default: Any) -> Any:
    from matplotlib import rcParams

    return rcParams.get(name, default)


def _numbers(values: Any) -> list[float | None]:
    """Numbers as a JSON list: floats, null where missing or not finite (a gap for Plotly)."""
    array = np.asarray(values, dtype=float).ravel()
    return [float(value) if math.isfinite(value) else None for value in array]


_MATH = re.compile(r"\$([^$]*)\$")
_POWER = re.compile(r"([\^_])(?:\{([^}]*)\}|(\\?[A-Za-z0-9+\-−]))")
_COMMAND = re.compile(r"\\([A-Za-z]+)")


def _plain_text(text: str) -> str:
    """Matplotlib text as Plotly text: ``<``, ``>``, ``&`` escaped, newlines as ``<br>``, and mathtext
    (``$...$``) best effort: ``\\mathdefault`` dropped, ``^{..}``/``_{..}`` as superscript/subscript
    and named symbols (``\\times``, ``\\sigma``) as their characters.

    Example:
        >>> _plain_text("$\\\\mathdefault{10^{-4}}$ a<b\\nc")
        '10<sup>-4</sup> a&lt;b<br>c'
    """
    escaped = html.escape(str(text), quote=False)
    escaped = _MATH.sub(lambda match: _plain_math(match.group(1)), escaped)
    return escaped.replace("\n", "<br>")


def _plain_math(body: str) -> str:
    """The inside of one ``$...$`` of mathtext as Plotly text (best effort)."""
    body = re.sub(r"\\mathdefault\{([^}]*)\}", r"\1", body)
    body = re.sub(r"\\math[a-z]+\{([^}]*)\}", r"\1", body)

    def power(match: re.Match) -> str:
        tag = "sup" if match.group(1) == "^" else "sub"
        inner = match.group(2) if match.group(2) is not None else match.group(3)
        return f"<{tag}>{inner}</{tag}>"

    body = _POWER.sub(power, body)
    body = _COMMAND.sub(_symbol, body)
    return body.replace("{", "").replace("}", "").replace("\\,", " ").replace("\\ ", " ")


def _symbol(match: re.Match) -> str:
    """A mathtext command (``\\times``) as its character, or its name when unknown."""
    try:
        from matplotlib._mathtext_data import tex2uni
    except ImportError:  # private module: fall back to the name
        return match.group(1)
    code = tex2uni.get(match.group(1))
    return chr(code) if code is not None else match.group(1)


def _plain(value: Any) -> Any:
    """``value`` with every number a Python int or float (non-finite floats as None) and every
    sequence a list, so that it is plain JSON data."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    return value
