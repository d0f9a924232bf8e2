"""Interactive figures (noiseprop.interactive): matplotlib figures converted to Plotly specs, and the
HTML that draws them offline.

The spec is checked against what was plotted, not against the converter's own reading: the arrays,
errors, scales, limits, places and legend entries of real matplotlib figures (a 1 x 2 figure of error
bar series that share their labels across panels, a log x axis, a dashed ``axhline`` and a band; a
bar chart with category ticks). In headless Chromium (noiseprop.browser), a page with the embedded
plotly.js draws a figure with no console error and no request, hides its static picture, and a real
click on a legend entry hides that series in both panels and changes the drawing; without JavaScript
(or without plotly.js) the static picture shows. Without a browser the browser tests are skipped and
say why; with the environment variable ``CI`` set they fail instead.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from noiseprop.browser import BrowserNotFoundError, Chromium, Page, find_chromium  # noqa: E402
from noiseprop.interactive import (  # noqa: E402
    CONFIG,
    INTERACTIVE_CSS,
    figure_html,
    plotly_javascript,
    plotly_spec,
    script_json,
    toggle_script,
)

X = np.array([1.0, 2.0, 5.0, 10.0, 20.0])
"""Positions of the series (the left panel's x axis is logarithmic)."""
THEORY = {"left": 1e-3 * X, "right": 2e-3 * X**0.5}
SIMULATED = {"left": 1.1e-3 * X, "right": 2.1e-3 * X**0.5}
ERRORS = {
    "left": np.array([1e-4, 2e-4, 3e-4, 4e-4, 5e-4]),
    "right": np.array([5e-5, 6e-5, 7e-5, 8e-5, 9e-5]),
}
REFERENCE = 0.012
"""Height of the dashed reference line (``axhline``) of both panels."""
CATEGORIES = ["as trained", "ghost neurons", "pooling"]
HEIGHTS = np.array([0.91, 0.93, 0.95])

NO_BROWSER = "no Chromium: apt-get install chromium, or set NOISEPROP_CHROMIUM"


# ---------------------------------------------------------------------------------- figures
@pytest.fixture()
def panels():
    """A 1 x 2 figure: in each panel a theory line and simulated points with error bars (labels shared
    by the two panels), an unlabelled dashed reference line; the left x axis logarithmic, a band and
    a text in the right panel; a suptitle and a figure legend below."""
    figure = plt.figure(figsize=(7.0, 3.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    for ax, side in ((left, "left"), (right, "right")):
        ax.plot(X, THEORY[side], "-", color="#0072B2", label="theory")
        ax.errorbar(X, SIMULATED[side], yerr=ERRORS[side], fmt="o", color="#E69F00", capsize=2,
                    label="simulated")  # fmt: skip
        ax.axhline(REFERENCE, color="k", ls="--", lw=1)
        ax.set_xlabel("layer width")
    left.set_xscale("log")
    left.set_ylabel("variance (a.u.²)")
    left.set_title("log x")
    right.fill_between(X, THEORY["right"] * 0.9, THEORY["right"] * 1.1, alpha=0.2, label="±10 %")
    right.text(2.0, 0.01, "note")
    figure.suptitle("two panels")
    figure.legend(loc="outside lower center", ncols=3)
    yield figure
    plt.close(figure)


@pytest.fixture()
def bars():
    """A bar chart with one bar per category (text ticks), with error bars."""
    figure, ax = plt.subplots(figsize=(4.0, 3.0), layout="constrained")
    ax.bar(range(len(CATEGORIES)), HEIGHTS, yerr=[0.01, 0.02, 0.03], color="#009E73", label="accuracy")
    ax.set_xticks(range(len(CATEGORIES)), CATEGORIES)
    ax.set_ylabel("test accuracy")
    yield figure
    plt.close(figure)


def traces_on(spec: dict, axis: str) -> list[dict]:
    """The traces of the subplot whose x axis is ``axis`` (``"x"``, ``"x2"``)."""
    return [trace for trace in spec["data"] if trace.get("xaxis") == axis]


def named(traces: list[dict], name: str) -> dict:
    (found,) = [trace for trace in traces if trace.get("name") == name]
    return found


# ------------------------------------------------------------------------------------- spec
def test_each_series_is_one_trace_with_its_data_and_errors(panels):
    """Per panel: one trace per series (the error bars' segments and caps are no traces of their
    own) and the band; x, y and ``error_y.array`` are what was plotted."""
    spec = plotly_spec(panels)
    assert len(traces_on(spec, "x")) == 2 and len(traces_on(spec, "x2")) == 3
    for axis, side in (("x", "left"), ("x2", "right")):
        traces = traces_on(spec, axis)
        theory, simulated = named(traces, "theory"), named(traces, "simulated")
        assert theory["mode"] == "lines" and theory["x"] == X.tolist()
        np.testing.assert_allclose(theory["y"], THEORY[side], rtol=1e-12)
        assert simulated["mode"] == "markers" and simulated["x"] == X.tolist()
        np.testing.assert_allclose(simulated["y"], SIMULATED[side], rtol=1e-12)
        errors = simulated["error_y"]
        assert errors["symmetric"] is True and errors["visible"] is True
        np.testing.assert_allclose(errors["array"], ERRORS[side], rtol=1e-9)
        assert "error_x" not in simulated and "error_y" not in theory
        assert theory["line"]["dash"] == "solid" and theory["line"]["color"] == "rgba(0, 114, 178, 1)"
        assert simulated["marker"]["symbol"] == "circle"
        assert "± %{customdata[0]" in simulated["hovertemplate"]
        assert "layer width: %{x" in simulated["hovertemplate"]
    band = named(traces_on(spec, "x2"), "±10 %")
    assert band["fill"] == "toself" and band["fillcolor"].endswith(", 0.2)")


def test_a_label_shared_by_panels_is_one_legend_entry_of_one_group(panels):
    """Each label is shown once in the legend, and all its traces are in one legendgroup, so that a
    click hides the series in both panels; the unlabelled reference lines have no entry."""
    spec = plotly_spec(panels)
    for name in ("theory", "simulated"):
        traces = [trace for trace in spec["data"] if trace.get("name") == name]
        assert len(traces) == 2
        assert {trace["legendgroup"] for trace in traces} == {name}
        assert [trace["showlegend"] for trace in traces] == [True, False]
    assert spec["layout"]["showlegend"] is True
    assert not any(shape.get("showlegend") for shape in spec["layout"]["shapes"])


def test_axes_keep_their_scale_limits_labels_and_place(panels):
    """The left x axis is logarithmic (its range in log10, as Plotly takes it; ticked at powers of
    ten), the limits are matplotlib's, the two subplots are side by side at the same height, and the
    titles and labels are on the figure."""
    spec = plotly_spec(panels)
    layout = spec["layout"]
    left, right = panels.axes
    assert layout["xaxis"]["type"] == "log" and layout["xaxis2"]["type"] == "linear"
    assert layout["yaxis"]["type"] == "linear"
    np.testing.assert_allclose(layout["xaxis"]["range"], np.log10(left.get_xlim()))
    # over a decade or more, labels at powers of ten only (as matplotlib puts them), not 2, 3, 5
    assert np.log10(left.get_xlim()[1] / left.get_xlim()[0]) >= 1 and layout["xaxis"]["dtick"] == 1
    np.testing.assert_allclose(layout["xaxis2"]["range"], right.get_xlim())
    np.testing.assert_allclose(layout["yaxis2"]["range"], right.get_ylim())
    (x0, x1), (x2, x3) = layout["xaxis"]["domain"], layout["xaxis2"]["domain"]
    assert 0 <= x0 < x1 < x2 < x3 <= 1
    assert layout["yaxis"]["domain"] == pytest.approx(layout["yaxis2"]["domain"])
    assert layout["xaxis2"]["anchor"] == "y2" and layout["yaxis2"]["anchor"] == "x2"
    texts = [annotation["text"] for annotation in layout["annotations"]]
    assert {"log x", "layer width", "variance (a.u.²)", "note"} <= set(texts)
    assert layout["title"]["text"] == "two panels"


def test_axhline_is_a_dashed_line_across_the_axes(panels):
    spec = plotly_spec(panels)
    lines = [shape for shape in spec["layout"]["shapes"] if shape["type"] == "line"]
    assert [(line["xref"], line["yref"]) for line in lines] == [("x domain", "y"), ("x2 domain", "y2")]
    for line in lines:
        assert (line["x0"], line["x1"]) == (0.0, 1.0)
        assert line["y0"] == line["y1"] == pytest.approx(REFERENCE)
        assert line["line"]["dash"] == "dash"


def test_bar_chart_keeps_bars_errors_and_category_ticks(bars):
    spec = plotly_spec(bars)
    (trace,) = spec["data"]
    assert trace["type"] == "bar" and trace["name"] == "accuracy"
    np.testing.assert_allclose(trace["x"], range(len(CATEGORIES)))
    np.testing.assert_allclose(trace["y"], HEIGHTS)
    np.testing.assert_allclose(trace["base"], 0.0)
    np.testing.assert_allclose(trace["error_y"]["array"], [0.01, 0.02, 0.03], rtol=1e-9)
    axis = spec["layout"]["xaxis"]
    assert axis["tickmode"] == "array"
    np.testing.assert_allclose(axis["tickvals"], range(len(CATEGORIES)))
    assert axis["ticktext"] == CATEGORIES
    # hovering a bar names its category, not its position
    assert [row[0] for row in trace["customdata"]] == CATEGORIES
    assert "%{customdata[0]}" in trace["hovertemplate"]


def test_spec_is_plain_json_with_gaps_as_null():
    """Missing values (NaN) become null (a gap); everything else is plain JSON data."""
    figure, ax = plt.subplots()
    ax.plot([1.0, 2.0, 3.0], [1.0, float("nan"), 3.0], label="with a gap")
    spec = plotly_spec(figure)
    plt.close(figure)
    text = json.dumps(spec, allow_nan=False)
    assert json.loads(text) == spec
    assert spec["data"][0]["y"] == [1.0, None, 3.0]


def test_figure_html_cannot_be_ended_by_the_figure_text(panels):
    """A label holding ``</script>`` cannot end the script; the id must be a plain HTML id."""
    panels.axes[0].set_title("</script><script>alert(1)</script>")
    markup = figure_html(panels, "plot-test")
    assert len(re.findall("</script", markup, flags=re.IGNORECASE)) == 1
    assert markup.startswith('<div id="plot-test" class="interactive-figure"')
    assert " hidden></div>" in markup and "Plotly.newPlot" in markup
    assert script_json({"a": "</script>"}) == '{"a": "\\u003c/script\\u003e"}'
    for config_key, value in (("responsive", True), ("displaylogo", False), ("typesetMath", False)):
        assert CONFIG[config_key] is value
    with pytest.raises(ValueError, match="element_id must be"):
        figure_html(panels, 'x" onload="alert(1)')


def test_plotly_javascript_is_the_offline_bundle():
    bundle = plotly_javascript()
    assert len(bundle) > 1_000_000 and "newPlot" in bundle
    assert re.search("</script", bundle, flags=re.IGNORECASE) is None and "<!--" not in bundle


# ---------------------------------------------------------------------------------- browser
def in_ci() -> bool:
    """Whether the environment variable CI is set (to anything but empty, 0 or false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium; without one, skip (or fail under CI, which must run these tests)."""
    try:
        executable = find_chromium()
    except BrowserNotFoundError as error:
        reason = str(error) if os.environ.get("NOISEPROP_CHROMIUM") else NO_BROWSER
        if in_ci():
            pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium)")
        pytest.skip(reason)
    with Chromium(executable, timeout=60) as running:
        yield running


def write_page(folder: Path, figure, *, with_plotly: bool = True) -> Path:
    """A page as the report writes one: the figure's PNG and its interactive div in a ``<figure>``,
    the toggle script, and plotly.js last."""
    picture = io.BytesIO()
    figure.savefig(picture, format="png", dpi=60)
    encoded = base64.b64encode(picture.getvalue()).decode()
    plotly = f"<script>{plotly_javascript()}</script>" if with_plotly else ""
    page = folder / ("page.html" if with_plotly else "page-without-plotly.html")
    page.write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>figure</title>'
        f"<style>{INTERACTIVE_CSS}</style></head><body>\n"
        f'<figure id="fig-test" class="study-figure">\n'
        f'<img alt="Figure 1." src="data:image/png;base64,{encoded}">\n'
        f"{figure_html(figure, 'plot-test')}<figcaption>Figure 1.</figcaption>\n</figure>\n"
        f"{toggle_script()}{plotly}</body></html>",
        encoding="utf-8",
    )
    return page


def shown(page: Page, selector: str) -> bool:
    """Whether the element ``selector`` takes up room on the page."""
    return page.evaluate(
        f"(() => {{ const box = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
        " return box.width > 0 && box.height > 0; })()"
    )


def hidden_traces(page: Page) -> list[str]:
    """Names of the traces of the drawn figure that are hidden (``visible: "legendonly"``)."""
    return page.evaluate(
        "document.getElementById('plot-test')._fullData.filter(t => t.visible === 'legendonly')"
        ".map(t => t.name)"
    )


def wait_for_change(page: Page, before: str, seconds: float = 5.0) -> str:
    """The figure's SVG markup once it differs from ``before`` (Plotly applies a legend click after
    its double-click delay), or as it is after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        markup = page.evaluate("document.getElementById('plot-test').innerHTML")
        if markup != before or time.monotonic() > deadline:
            return markup
        time.sleep(0.05)


def test_figure_draws_offline_and_hiding_a_series_changes_it(browser, panels, tmp_path):
    """The figure is drawn (SVG paths) with no console error and nothing requested over the network,
    in place of its static picture; a real click on the legend entry "theory" hides that series in
    both panels and changes the SVG and the screenshot; a second click shows it again. Printed, the
    page shows the static picture."""
    page = browser.open(write_page(tmp_path, panels))
    assert page.problems == [], "console errors or uncaught exceptions:\n" + "\n".join(page.problems)
    requested = page.evaluate("performance.getEntriesByType('resource').map(entry => entry.name)")
    assert requested == [], f"the page fetched {requested}"
    assert shown(page, "#plot-test") and not shown(page, "#fig-test img")
    assert page.evaluate("document.querySelectorAll('#plot-test .scatterlayer path').length") > 4
    assert page.evaluate("document.querySelectorAll('#plot-test .legend .traces').length") == 3

    before_markup = page.evaluate("document.getElementById('plot-test').innerHTML")
    before_picture = page.screenshot("#plot-test")
    entry = page.evaluate(
        "Array.from(document.querySelectorAll('#plot-test .legend .traces'))"
        ".findIndex(item => item.textContent === 'theory')"
    )
    assert entry >= 0
    page.click(f"#plot-test .legend .traces:nth-of-type({entry + 1})")
    after_markup = wait_for_change(page, before_markup)
    assert hidden_traces(page) == ["theory", "theory"], "the click did not hide it in both panels"
    assert after_markup != before_markup and page.screenshot("#plot-test") != before_picture

    page.click(f"#plot-test .legend .traces:nth-of-type({entry + 1})")
    wait_for_change(page, after_markup)
    assert hidden_traces(page) == []
    assert page.problems == []

    page.call("Emulation.setEmulatedMedia", {"media": "print"})  # printed: the static picture
    assert shown(page, "#fig-test img") and not shown(page, "#plot-test")
    page.call("Emulation.setEmulatedMedia", {"media": ""})


def test_without_javascript_or_plotly_the_static_picture_shows(browser, panels, tmp_path):
    """With JavaScript off, or without plotly.js, the PNG shows and the interactive div stays hidden
    (and nothing complains)."""
    without_plotly = browser.open(write_page(tmp_path, panels, with_plotly=False))
    assert without_plotly.problems == []
    assert shown(without_plotly, "#fig-test img") and not shown(without_plotly, "#plot-test")

    page = browser.open("about:blank")
    page.call("Emulation.setScriptExecutionDisabled", {"value": True})
    # navigated by hand: Page.goto waits for animation frames, which never come without scripts
    browser.discard_events(page.session)
    page.call("Page.navigate", {"url": write_page(tmp_path, panels).as_uri()})
    browser.wait_for_event("Page.loadEventFired", session=page.session)
    assert page.evaluate("typeof window.Plotly") == "undefined"
    assert shown(page, "#fig-test img") and not shown(page, "#plot-test")
    assert page.evaluate("document.querySelector('#fig-test img').naturalWidth") > 0
    assert page.evaluate("document.querySelectorAll('#plot-test *').length") == 0
