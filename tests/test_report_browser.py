"""The study's report in a real browser: headless Chromium (noiseprop.browser) over a small report.

The report is built in seconds, not by the whole study: four of the study's sweeps (``layers``,
``slopes``, ``width``, ``trained``) run at tiny sizes, point by point in this process, and
:func:`noiseprop.report.write_report` writes the page from them. In Chromium: the page loads with no
console error and no uncaught exception; every figure renders (each image decoded, each SVG or canvas
of non-zero size, and each figure's pixels not one blank colour); every relative link resolves (to a
file, or to an element of the page); a sortable table sorts when a header is clicked; ``print_pdf``
and ``noiseprop study --pdf`` write a PDF.

Without a browser these tests are skipped and say why; with the environment variable ``CI`` set they
fail instead (``.ci/run`` installs Debian's ``chromium``).

Every figure is interactive (:mod:`noiseprop.interactive`): each shows its Plotly plot in place of
its PNG, and a click on a legend entry hides that series (:func:`figure_snapshot` holds both the
markup of the figure's inline SVGs and a screenshot of it, so the check fails when a click changes
neither what the figure holds nor what it shows).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from noiseprop.browser import (
    BrowserNotFoundError,
    BrowserTimeoutError,
    Chromium,
    Page,
    find_chromium,
    print_pdf,
)
from noiseprop.cli import app
from noiseprop.experiments import resolve
from noiseprop.report import write_report
from noiseprop.study import Study, StudyConfig, disagreements, findings, sweeps
from noiseprop.sweeps import grid_points, point_id, point_seed

NO_BROWSER = "no Chromium: apt-get install chromium, or set NOISEPROP_CHROMIUM"
"""Why the browser tests are skipped on a machine without a browser."""

SMALL = StudyConfig(
    width=4, depth=4, repeats=200, slopes=(0.5, 1.0), accumulation_slopes=(0.5, 1.0), widths=(4, 8),
    width_depth=3, trained_images=2, trained_repeats=50,
)  # fmt: skip
"""Sizes of the report's sweeps: seconds in all."""

SWEEPS = ("layers", "slopes", "width", "trained")
"""The study's sweeps run for the report (the others take minutes even at tiny sizes)."""

DISAGREEMENT_ROWS = 12
"""Rows of the report's disagreement table: the largest |z| of every comparison, whatever their z, so
that the table to sort always has rows."""

DRAWN_FRACTION = 0.01
"""Least fraction of a figure's pixels that differ from its most common colour (its background)."""

BORDER = 3
"""Pixels left out at each edge of a figure's screenshot when looking for what is drawn (a frame
around a blank figure is not a figure)."""


def in_ci() -> bool:
    """Whether the environment variable CI is set (to anything but empty, 0 or false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def chromium_path() -> Path:
    """The browser; without one, skip (or fail under CI, which must run these tests)."""
    try:
        return find_chromium()
    except BrowserNotFoundError as error:
        reason = str(error) if os.environ.get("NOISEPROP_CHROMIUM") else NO_BROWSER
        if in_ci():
            pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium)")
        pytest.skip(reason)


def sweep_here(name: str, config: StudyConfig, seed: int) -> pd.DataFrame:
    """The study's sweep ``name`` run point by point in this process, as noiseprop.sweeps tabulates it
    (each point's parameters as columns, its id in ``point``)."""
    experiment, grid = sweeps(config)[name]
    function, _ = resolve(experiment)
    frames = []
    for parameters in grid_points(grid):
        frame = function(seed=point_seed(seed, parameters), **parameters)
        for key, value in reversed(parameters.items()):
            if key not in frame.columns:
                frame.insert(0, key, value)
        frames.append(frame.assign(point=point_id(parameters)))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    """A small study's report: real tables from four sweeps, written like run_study writes them."""
    output = tmp_path_factory.mktemp("report")
    tables = {name: sweep_here(name, SMALL, seed=5) for name in SWEEPS}
    (output / "tables").mkdir()
    for name, table in tables.items():
        table.to_csv(output / "tables" / f"{name}.csv", index=False)
        table.to_parquet(output / "tables" / f"{name}.parquet", index=False)
    small = Study(
        config=SMALL, tables=tables, findings=findings(tables, SMALL),
        disagreements=disagreements(tables, sigmas=0.0).head(DISAGREEMENT_ROWS),
        failures=pd.DataFrame(), output=output,
    )  # fmt: skip
    return write_report(small, seed=5)


@pytest.fixture(scope="module")
def browser(chromium_path) -> Chromium:
    with Chromium(chromium_path, timeout=30) as running:
        yield running


@pytest.fixture(scope="module")
def page(browser, study) -> Page:
    """The report, loaded in the browser (console errors collected from the start), once every
    interactive figure is drawn (each figure then has the class ``interactive-shown``)."""
    opened = browser.open(study.report)
    opened.evaluate(ALL_DRAWN, timeout=60)
    return opened


ALL_DRAWN = """new Promise((resolve, reject) => {
  const started = Date.now();
  const check = () => {
    const figures = document.querySelectorAll("figure.study-figure");
    const drawn = document.querySelectorAll("figure.study-figure.interactive-shown");
    if (figures.length > 0 && drawn.length === figures.length) { resolve(drawn.length); }
    else if (Date.now() - started > 50000) {
      reject(new Error(drawn.length + " of " + figures.length + " figures drawn interactively"));
    } else { setTimeout(check, 50); }
  };
  check();
})"""
"""JavaScript: a promise kept once every figure of the report is drawn interactively."""


# ----------------------------------------------------------------------------------- helpers
def mark(page: Page, selector: str, attribute: str) -> int:
    """Number the elements matching ``selector`` in the attribute ``attribute`` (0, 1, ...), so that
    ``[attribute="i"]`` selects the i-th; return how many there are."""
    return page.evaluate(
        f"(() => {{ const found = document.querySelectorAll({json.dumps(selector)});"
        f" found.forEach((element, i) => element.setAttribute({json.dumps(attribute)}, String(i)));"
        " return found.length; })()"
    )


def drawn_fraction(png: bytes) -> float:
    """Fraction of a PNG's pixels, within a margin of :data:`BORDER` pixels, that differ from its most
    common colour."""
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")  # floats 0 to 1, RGB(A)
    pixels = pixels[BORDER:-BORDER, BORDER:-BORDER]  # not the element's border
    channels = np.rint(pixels * 255).astype(np.int64).reshape(-1, pixels.shape[-1])
    colours = channels @ (256 ** np.arange(channels.shape[1]))  # one integer per colour
    _, counts = np.unique(colours, return_counts=True)
    return 1 - counts.max() / len(colours)


def figure_snapshot(page: Page, selector: str) -> tuple[str, bytes]:
    """What the element ``selector`` (a figure) holds and shows: the markup of its inline SVGs (empty
    for a picture) and a PNG screenshot of it. Two snapshots differ when the figure changed."""
    markup = page.evaluate(
        f"Array.from(document.querySelectorAll({json.dumps(selector + ' svg')}))"
        ".map(svg => svg.outerHTML).join('\\n')"
    )
    return markup, page.screenshot(selector)


RENDERED = """
(element) => {
  const box = element.getBoundingClientRect();
  const tag = element.tagName.toLowerCase();
  if (tag === "img") {
    if (!element.complete || element.naturalWidth === 0) return "image not decoded: " + element.alt;
  } else if (tag === "svg" && !element.querySelector("path, line, polyline, polygon, rect, circle, "
                                                     + "ellipse, text, use, image")) {
    return "SVG without any shape";
  }
  if (box.width === 0 || box.height === 0) return tag + " of size " + box.width + " x " + box.height;
  return "";
}"""
"""JavaScript: why a graphic element did not render (empty text: it did)."""


# ------------------------------------------------------------------------------------- tests
def test_console_problems_are_caught(browser, tmp_path):
    """The check of the next test can fail: an error logged, a missing picture and an exception thrown
    after load are each caught."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        '<!DOCTYPE html><title>broken</title><img src="missing.png"><script>console.error("logged");'
        'setTimeout(() => { throw new Error("thrown"); }, 0);</script>',
        encoding="utf-8",
    )
    problems = browser.open(broken).problems
    assert len(problems) == 3, problems
    assert any("logged" in problem for problem in problems)
    assert any("missing.png" in problem for problem in problems)
    assert any("uncaught exception: Error: thrown" in problem for problem in problems)


def test_every_wait_is_time_limited(browser):
    """A script that never finishes is given up after the time allowed, and the browser goes on."""
    blank = browser.open("about:blank")
    started = time.monotonic()
    with pytest.raises(BrowserTimeoutError, match="Runtime.evaluate"):
        blank.evaluate("new Promise(() => {})", timeout=0.5)
    assert time.monotonic() - started < 5
    assert blank.evaluate("1 + 1") == 2


def test_report_loads_without_console_errors(page, study):
    assert page.evaluate("document.readyState") == "complete"
    assert page.evaluate("document.querySelectorAll('h1').length") == 1, "the report's page is empty"
    assert page.problems == [], "console errors or uncaught exceptions:\n" + "\n".join(page.problems)


def test_every_figure_renders(page, study):
    """Each figure of the study has a graphic in its section; every image of the page is decoded; every
    image, SVG and canvas of a figure has a size; and each figure's pixels are not one colour."""
    assert study.figures, "the report has no figures"
    missing = page.evaluate(
        f"{list(study.figures)!r}.filter(name => {{ const section = document.getElementById(name);"
        " return !section || !section.querySelector('img, svg, canvas'); })"
    )
    assert missing == [], f"figures without a section or a graphic in the page: {missing}"
    shown = "img:not([hidden]), figure .interactive-figure svg.main-svg:first-of-type, figure canvas"
    broken = page.evaluate(
        f"Array.from(document.querySelectorAll({json.dumps(shown)})).map({RENDERED}).filter(why => why)"
    )
    assert broken == [], f"graphics that did not render: {broken}"
    each = "img:not([hidden]), .interactive-figure svg.main-svg:first-of-type, canvas"
    graphics = mark(page, ", ".join(f"#{name} :is({each})" for name in study.figures),
                    "data-test-graphic")  # fmt: skip
    assert graphics >= len(study.figures)
    for index in range(graphics):
        fraction = drawn_fraction(page.screenshot(f'[data-test-graphic="{index}"]'))
        assert fraction > DRAWN_FRACTION, f"graphic {index} shows almost nothing ({fraction:.2%} drawn)"


def hidden_series(page: Page, name: str, hidden: bool, seconds: float = 5.0) -> int:
    """How many series of figure ``name``'s plot are hidden (``visible: "legendonly"``), once some
    are (``hidden``) or none are (not ``hidden``): Plotly applies a legend click after its
    double-click delay. As it is after ``seconds``."""
    count = (
        f"document.getElementById('plot-{name}').data"
        ".filter(trace => trace.visible === 'legendonly').length"
    )
    deadline = time.monotonic() + seconds
    while True:
        hidden_now = page.evaluate(count)
        if (hidden_now > 0) == hidden or time.monotonic() > deadline:
            return hidden_now
        time.sleep(0.05)


def test_every_figure_is_interactive_and_its_static_picture_hidden(page, study):
    """Where JavaScript runs, each figure shows its interactive plot (Plotly, drawn offline from
    the page itself) in place of its PNG, with a legend and values to hover."""
    for name in study.figures:
        assert page.evaluate(f"document.querySelector('#fig-{name} img').hidden"), name
        assert page.evaluate(f"document.querySelectorAll('#plot-{name} .legend .traces').length") > 0
    requested = page.evaluate("performance.getEntriesByType('resource').map(entry => entry.name)")
    assert [url for url in requested if not url.startswith(("data:", "file:"))] == []


def test_hiding_a_series_changes_the_figure(page, study):
    """A real click on the first legend entry of every figure hides that series (the plot's SVG and
    its picture change); a second click shows it again (the plot as it was)."""
    for name in study.figures:
        legend = f"#plot-{name} .legend .traces"
        before = figure_snapshot(page, f"#plot-{name}")
        page.click(legend)
        assert hidden_series(page, name, hidden=True) > 0, f"figure {name}: no series hidden"
        after = figure_snapshot(page, f"#plot-{name}")
        assert after[0] != before[0], f"hiding a series of figure {name} changed nothing"
        assert after[1] != before[1], f"figure {name} looks the same with a series hidden"
        page.click(legend)
        assert hidden_series(page, name, hidden=False) == 0, f"figure {name}: the series stays hidden"


def test_every_relative_link_resolves(page, study):
    """Links to tables, figure files and documents name files that exist; links within the page name
    an element of it."""
    links = page.evaluate(
        "Array.from(document.querySelectorAll('a[href]')).map(a => {"
        " const href = a.getAttribute('href'); if (!href.startsWith('#')) return [href, null];"
        " return [href, document.getElementById(decodeURIComponent(href.slice(1))) !== null]; })"
    )
    inside = [href for href, found in links if found is False]
    assert inside == [], f"links to no element of the page: {inside}"
    files = [href for href, found in links if found is None and not urlsplit(href).scheme]
    folder = study.report.parent
    missing = [href for href in files if not (folder / unquote(urlsplit(href).path)).exists()]
    assert missing == [], f"links to files that do not exist (relative to {folder}): {missing}"
    assert any(href.startswith("tables/") for href in files), f"no link to a table among {files}"


def sortable_columns(page: Page) -> list[dict]:
    """Per ``table.sortable`` of the page (numbered in ``data-test-table``), each column whose cells
    all carry a number (or nothing) in ``data-value``: its number, and whether it is sorted now."""
    mark(page, "table.sortable", "data-test-table")
    return page.evaluate(
        """Array.from(document.querySelectorAll("table.sortable")).flatMap((table, t) => {
          const rows = Array.from(table.tBodies[0] ? table.tBodies[0].rows : []);
          if (rows.length < 2) return [];
          return Array.from(table.tHead.rows[0].cells).map((header, column) => {
            const values = rows.map(row => row.cells[column].getAttribute("data-value"));
            if (values.some(v => v === null || (v !== "" && isNaN(parseFloat(v))))) return null;
            const numbers = values.filter(v => v !== "").map(parseFloat);
            const sorted = numbers.every((v, i) => i === 0 || numbers[i - 1] <= v);
            return {table: t, column: column, sorted: sorted, distinct: new Set(numbers).size};
          }).filter(found => found && found.distinct > 1);
        })"""
    )


def column_values(page: Page, table: int, column: int) -> tuple[list[float | None], list[str]]:
    """The ``data-value`` numbers of a column of the table numbered ``table`` (None where empty), and
    the text of each row, top to bottom."""
    values, rows = page.evaluate(
        f"(() => {{ const rows = Array.from(document.querySelector('[data-test-table=\"{table}\"]')"
        ".tBodies[0].rows);"
        f" return [rows.map(row => row.cells[{column}].getAttribute('data-value')),"
        " rows.map(row => row.textContent)]; })()"
    )
    return [float(value) if value else None for value in values], rows


def sorted_direction(values: list[float | None]) -> str | None:
    """``"ascending"`` or ``"descending"`` if the numbers are in that order with the empty cells (None)
    last, else None."""
    numbers = [value for value in values if value is not None]
    if values != numbers + [None] * (len(values) - len(numbers)):
        return None
    if numbers == sorted(numbers):
        return "ascending"
    return "descending" if numbers == sorted(numbers, reverse=True) else None


def test_sortable_table_sorts_when_a_header_is_clicked(page):
    """Clicking the header of an unsorted numeric column sorts the rows (whole) by it, empty cells
    last; clicking it again sorts them the other way."""
    unsorted = [column for column in sortable_columns(page) if not column["sorted"]]
    assert unsorted, "the report has no table.sortable with an unsorted numeric column to sort by"
    chosen = max(unsorted, key=lambda column: column["distinct"])
    table, column = chosen["table"], chosen["column"]
    header = f'[data-test-table="{table}"] thead th:nth-child({column + 1})'
    _, rows_before = column_values(page, table, column)
    directions = []
    for clicks in (1, 2):
        page.click(header)
        values, rows = column_values(page, table, column)
        directions.append(sorted_direction(values))
        assert directions[-1] is not None, f"after {clicks} click(s) on {header}, not sorted: {values}"
        assert sorted(rows) == sorted(rows_before), "sorting broke rows apart or lost some"
    assert directions[0] != directions[1], f"a second click did not reverse the order ({directions})"


def count_pages(document: bytes) -> int:
    """Pages of a PDF (its ``/Type /Page`` objects)."""
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", document))


def test_print_pdf_writes_the_report_as_pdf(chromium_path, study, tmp_path):
    written = print_pdf(study.report, tmp_path / "report.pdf", executable=chromium_path)
    document = written.read_bytes()
    assert document.startswith(b"%PDF-") and b"%%EOF" in document[-64:]
    assert count_pages(document) >= 2  # the report's figures do not fit on one page


def copy_of_study(study: Study):
    """A stand-in for noiseprop.study.run_study that copies ``study``'s files into ``output``."""

    def run_study(config, *, output, **options):
        shutil.copytree(study.output, output, dirs_exist_ok=True)
        return replace(study, output=Path(output), report=Path(output) / study.report.name)

    return run_study


def test_study_pdf_option_writes_report_pdf(chromium_path, study, tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEPROP_CHROMIUM", str(chromium_path))
    monkeypatch.setattr("noiseprop.study.run_study", copy_of_study(study))
    output = tmp_path / "study"
    result = CliRunner().invoke(app, ["study", "--output", str(output), "--pdf", "--no-progress"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert (output / "report.pdf").read_bytes().startswith(b"%PDF-")
    assert "PDF: " in result.stdout


def test_study_pdf_option_without_a_browser_fails_in_one_line(study, tmp_path, monkeypatch):
    """No browser: one error line naming --pdf and how to install one, exit code 2, and the study's
    files kept."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.delenv("NOISEPROP_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr("noiseprop.study.run_study", copy_of_study(study))
    output = tmp_path / "study"
    result = CliRunner().invoke(app, ["study", "--output", str(output), "--pdf", "--no-progress"])
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --pdf: "), result.stderr
    assert "apt-get install chromium" in lines[0] and "NOISEPROP_CHROMIUM" in lines[0]
    assert (output / "report.html").is_file() and not (output / "report.pdf").exists()


def test_find_chromium_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEPROP_CHROMIUM", str(tmp_path / "no-such-browser"))
    with pytest.raises(BrowserNotFoundError, match="NOISEPROP_CHROMIUM must name a Chromium"):
        find_chromium()
    monkeypatch.delenv("NOISEPROP_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserNotFoundError, match="apt-get install chromium"):
        find_chromium()
    with pytest.raises(FileNotFoundError, match="html_path must be an HTML file"):
        print_pdf(tmp_path / "absent.html", tmp_path / "absent.pdf", executable="/bin/true")
