"""The report as a reader gets it: publication figures (PNG at 200 dpi, SVG, PDF) with legends that
explain their styles and one colour per kind of noise, and an HTML page that stands alone (numbered
figures with captions, methods, provenance, every table downloadable, every disagreement listed).

The study is built from small hand-made tables with the columns of the sweeps, so that drawing
takes a second: every figure is drawn, and the report is written for a few of them (saving each
figure three times is what takes time); the design noise budget is the real one, computed once.
"""

from __future__ import annotations

import math
import re
import struct
import xml.etree.ElementTree as ElementTree
from dataclasses import fields

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from noiseprop import report  # noqa: E402
from noiseprop.figures import DPI, KIND_COLOURS, activation_title  # noqa: E402
from noiseprop.noise import KINDS  # noqa: E402
from noiseprop.report import FIGURES, draw_figures, write_report  # noqa: E402
from noiseprop.study import LAYER_ACTIVATIONS, Study, StudyConfig, _linear, _sigmoid  # noqa: E402

SEED = 7
CONFIG = StudyConfig(
    width=6, depth=4, repeats=600, slopes=(0.5, 1.0), accumulation_slopes=(0.5, 1.0), widths=(4, 8),
    width_depth=3, trained_images=8, trained_repeats=200, accuracy_images=40, accuracy_repeats=10,
    accuracy_intensities=(0.01, 0.1, 1.0), mitigation_images=30, mitigation_repeats=10,
    mitigation_factor=2, cnn_intensities=(0.1, 1.0), pooling_intensities=(0.1, 1.0), cnn_images=20,
    cnn_repeats=10, beyond_images=4, beyond_repeats=300,
)  # fmt: skip
SIGMOID_FIXED_POINT = 0.659046


# ----------------------------------------------------------------------------- the small study
def _variances(rows: list[dict], methods: tuple[str, ...], layers: int, **parameters) -> None:
    """Per-layer rows of a variance sweep: ``montecarlo`` and each prediction method."""
    point = len({row["point"] for row in rows})
    for layer in range(1, layers + 1):
        for method in methods:
            variance = 1e-3 * layer * (1.05 if method == "montecarlo" else 1.0)
            stderr = 2e-5 if method == "montecarlo" else math.nan
            rows.append({**parameters, "layer": layer, "method": method, "variance": variance,
                         "variance_stderr": stderr, "point": point})  # fmt: skip


def _symmetric(activations: list[str], kinds: tuple[str, ...], **extra) -> pd.DataFrame:
    rows: list[dict] = []
    for activation in activations:
        value = SIGMOID_FIXED_POINT if activation == "sigmoid" else 0.5
        for kind in kinds:
            _variances(rows, ("montecarlo", "symmetric"), CONFIG.depth, activation=activation,
                       kind=kind, input_value=value, width=CONFIG.width, depth=CONFIG.depth,
                       intensity=CONFIG.intensity, **extra)  # fmt: skip
    return pd.DataFrame(rows)


def _width() -> pd.DataFrame:
    rows: list[dict] = []
    for kind in ("AU", "AC"):
        for width in CONFIG.widths:
            _variances(rows, ("montecarlo", "symmetric"), CONFIG.width_depth + 1, activation="sigmoid",
                       kind=kind, input_value=SIGMOID_FIXED_POINT, width=width,
                       depth=CONFIG.width_depth)  # fmt: skip
    return pd.DataFrame(rows)


def _trained(methods: tuple[str, ...], intensities: tuple[float, ...]) -> pd.DataFrame:
    rows: list[dict] = []
    for kind in KINDS:
        for intensity in intensities:
            _variances(rows, methods, 3, kind=kind, intensity=intensity)
    return pd.DataFrame(rows)


def _accuracies(methods: tuple[str, ...], intensities: tuple[float, ...], **parameters) -> list[dict]:
    return [
        {**parameters, "kind": kind, "intensity": intensity, "method": method,
         "accuracy": 0.97 - 0.1 * intensity - 0.01 * index, "stderr": 0.004, "noise_free": 0.98}
        for kind in KINDS
        for intensity in intensities
        for index, method in enumerate(methods)
    ]  # fmt: skip


def _mitigation() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"transform": transform, "method": method, "accuracy": 0.93 + 0.01 * index,
             "stderr": 0.002, "noise_free": 0.982, "output_snr_db": 9.0 + 2 * index,
             "neurons": 200}
            for index, transform in enumerate(("none", "ghosts", "pool", "ghosts+pool"))
            for method in ("predicted", "montecarlo")
        ]
    )  # fmt: skip


def _pooling() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": model, "sites": site, "kind": kind, "intensity": intensity,
             "method": "montecarlo", "accuracy": 0.9, "stderr": 0.01, "noise_free": 0.99}
            for model in ("cnn", "cnn-mean")
            for site in ("relu1", "pool1")
            for kind in ("AU", "AC")
            for intensity in CONFIG.cnn_intensities
        ]
    )  # fmt: skip


def _convolution() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"kind": kind, "layer": layer, "simulated": 1.0, "stderr": 0.01, "meanfield": 0.9,
             "per_channel": 1.0}
            for kind in ("AU", "AC")
            for layer in ("conv2", "fc")
        ]
    )  # fmt: skip


def _injection() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"kind": kind, "injection": injection, "layer": layer, "pool": pool, "accuracy": 0.9,
             "stderr": 0.01, "noise_free": 0.98}
            for kind in KINDS
            for injection in ("after", "before")
            for layer in ("1", "2")
            for pool in (1, 4)
        ]
    )  # fmt: skip


def _aware() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"trained_with": trained, "kind": kind, "accuracy": 0.8 + 0.05 * (trained == kind),
             "stderr": 0.003, "noise_free": 0.92}
            for trained in ("none", *KINDS)
            for kind in KINDS
        ]
    )  # fmt: skip


def _tables() -> dict[str, pd.DataFrame]:
    slopes = [_linear(s) for s in CONFIG.slopes] + [_sigmoid(s) for s in CONFIG.slopes] + ["sigmoid"]
    accuracy_methods = ("predicted", "first-order", "montecarlo")
    return {
        "layers": _symmetric(list(LAYER_ACTIVATIONS), KINDS),
        "slopes": _symmetric(slopes, ("AC",)),
        "width": _width(),
        "trained": _trained(("montecarlo", "covariance", "meanfield"), (CONFIG.intensity,)),
        "beyond": _trained(("montecarlo", "covariance", "moments"), CONFIG.beyond_intensities),
        "accuracy": pd.DataFrame(_accuracies(accuracy_methods, CONFIG.accuracy_intensities)),
        "mitigation": _mitigation(),
        "cnn": pd.DataFrame(
            _accuracies(("montecarlo",), CONFIG.cnn_intensities, model="cnn")
            + _accuracies(("montecarlo",), CONFIG.cnn_intensities, model="cnn-mean")
        ),
        "mlp": pd.DataFrame(_accuracies(("montecarlo",), CONFIG.cnn_intensities)),
        "pooling": _pooling(),
        "convolution": _convolution(),
        "injection": _injection(),
        "aware": _aware(),
    }


DISAGREEMENTS = 59
"""More rows than the 40 the report used to show."""


def _disagreements() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "figure": ["layers"] * 30 + ["slopes"] * (DISAGREEMENTS - 30),
        "activation": [None] * 30 + ["sigmoid:gain=4.4,centre=0.5"] * (DISAGREEMENTS - 30),
        "kind": "AC", "intensity": 1e-3, "width": [math.nan] * 30 + [20.0] * (DISAGREEMENTS - 30),
        "layer": np.arange(DISAGREEMENTS) % 3 + 1.0, "method": "meanfield",
        "predicted": rng.uniform(0.01, 0.02, DISAGREEMENTS), "simulated": 0.015, "stderr": 1e-4,
        "z": np.linspace(400.0, 5.0, DISAGREEMENTS), "relative_error": 0.123456789,
    })  # fmt: skip
    return frame


WRITTEN = ("layers", "mitigation", "design")
"""The figures of the study whose report is written: panels side by side, a dot plot, the noise
budget."""


def _study(output, names) -> Study:
    needed = {table for name in names for table in report.TABLES.get(name, (name,))}
    tables = {name: table for name, table in _tables().items() if name in needed}
    findings = {name: f"the {name} finding, computed" for name in names if name != "design"}
    return Study(
        config=CONFIG, tables=tables, findings=findings, disagreements=_disagreements(),
        failures=pd.DataFrame(), output=output,
    )  # fmt: skip


@pytest.fixture(scope="module")
def design():
    return report.noise_budget(CONFIG)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Every table: every figure is drawn."""
    return _study(tmp_path_factory.mktemp("every"), set(FIGURES))


@pytest.fixture(scope="module")
def written(tmp_path_factory, design):
    """The report of a study with the tables of :data:`WRITTEN` (the noise budget computed once)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "noise_budget", lambda config: design)
        study = _study(tmp_path_factory.mktemp("report"), WRITTEN)
        yield write_report(study, seed=SEED, wall_seconds=245.0)


@pytest.fixture(scope="module")
def page(written):
    return written.report.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def drawn(study):
    figures = dict(report._figures(study, None))
    yield figures
    for figure in figures.values():
        plt.close(figure)


# ------------------------------------------------------------------------------------- files
def _png_size(path) -> tuple[int, int, float | None]:
    """Pixel width and height of a PNG and its resolution in dots per inch (pHYs chunk)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    found = data.find(b"pHYs")
    dpi = None
    if found >= 0:
        per_metre_x, _, unit = struct.unpack(">IIB", data[found + 4 : found + 13])
        dpi = per_metre_x * 0.0254 if unit == 1 else None
    return width, height, dpi


def test_every_figure_is_png_at_200_dpi_svg_and_pdf(written, drawn):
    assert list(written.figures) == list(WRITTEN)
    for name, path in written.figures.items():
        assert path == written.output / "figures" / f"{name}.png"
        width, height, dpi = _png_size(path)
        if name in drawn:
            inches = drawn[name].get_size_inches()
            assert (width, height) == (round(inches[0] * DPI), round(inches[1] * DPI)), name
        assert dpi == pytest.approx(DPI, abs=0.5) and DPI >= 200
        assert ElementTree.parse(path.with_suffix(".svg")).getroot().tag.endswith("svg")
        assert path.with_suffix(".pdf").read_bytes().startswith(b"%PDF")


def test_public_behaviour_is_kept(design, written, monkeypatch, tmp_path):
    monkeypatch.setattr(report, "noise_budget", lambda config: design)
    figures = draw_figures(_study(tmp_path, ("accumulation", "aware")))
    try:
        assert list(figures) == ["accumulation", "slopes", "aware", "design"]
        assert all(isinstance(figure, matplotlib.figure.Figure) for figure in figures.values())
    finally:
        for figure in figures.values():
            plt.close(figure)
    assert written.report == written.output / "report.html"
    assert written.findings["design"].startswith("layer ")
    assert re.search(
        r"dominates the output noise with [\d.]+% .* largest kind", written.findings["design"]
    )


def test_every_table_is_downloadable(written, page):
    tables = written.output / "tables"
    stored = pd.read_parquet(tables / "disagreements.parquet")
    assert len(stored) == DISAGREEMENTS and (tables / "disagreements.csv").is_file()
    design = pd.read_parquet(tables / "design.parquet")
    assert set(design["kind"]) == set(KINDS) and design["share"].sum() == pytest.approx(1.0)
    for name in WRITTEN:
        section = page[page.index(f'<section id="{name}">') :]
        section = section[: section.index("</section>")]
        for table in report.TABLES.get(name, (name,)):
            assert (
                f'href="tables/{table}.csv"' in section and f'href="tables/{table}.parquet"' in section
            )
        for suffix in ("png", "svg", "pdf"):
            assert f'href="figures/{name}.{suffix}"' in section


# ---------------------------------------------------------------------------------- the page
def test_figures_are_numbered_with_captions_that_name_repeats_and_seed(page):
    found = re.findall(
        r'<figure id="fig-([a-z]+)" class="study-figure">\n<img alt="Figure (\d+)\. [^"]+" '
        r'src="data:image/png;base64,[A-Za-z0-9+/=]+">\n.*?<figcaption>(.*?)</figcaption>',
        page,
        flags=re.DOTALL,
    )
    assert [name for name, _, _ in found] == list(WRITTEN)
    assert [int(number) for _, number, _ in found] == list(range(1, len(WRITTEN) + 1))
    repeats = {"layers": CONFIG.repeats, "trained": CONFIG.trained_repeats,
               "accuracy": CONFIG.accuracy_repeats, "mitigation": CONFIG.mitigation_repeats,
               "beyond": CONFIG.beyond_repeats, "cnn": CONFIG.cnn_repeats}  # fmt: skip
    for name, number, caption in found:
        assert caption.startswith(f'<span class="figure-number">Figure {number}.</span>')
        assert "{" not in caption  # every placeholder filled
        if name == "design":
            assert "no repeats or seed" in caption and "784-100-100-10" in caption
        else:
            assert f"seed {SEED}" in caption, name
        if name in repeats:
            assert f"{repeats[name]:,} " in caption, name
    mitigation = dict((name, caption) for name, _, caption in found)["mitigation"]
    assert "AU = 0.0225 and AC = 0.0225" in mitigation and "×2" in mitigation


def test_methods_and_provenance_stand_alone(page):
    import torch

    methods = page[page.index('<section id="methods">') :]
    methods = methods[: methods.index("</section>")]
    for words in ("Noise model", "covariance method", "mean-field rule", "moments method",
                  "batch means", "standard error", "THEORY.md"):  # fmt: skip
        assert words in methods
    provenance = page[page.index('<section id="provenance">') :]
    for name, value in report.provenance(245.0):
        if name != "report written":
            assert f'<th scope="row">{name}</th><td>{value}</td>' in provenance
    assert f"<td>{torch.__version__}</td>" in provenance
    assert "<td>4 min 05 s</td>" in provenance


def test_git_commit_is_unknown_outside_a_checkout(monkeypatch, tmp_path):
    commit = report.git_commit()
    assert commit == "unknown" or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)
    monkeypatch.setattr(report, "__file__", str(tmp_path / "report.py"))
    assert report.git_commit() == "unknown"


def _table(page: str, table_id: str) -> str:
    start = page.index(f'<table class="sortable" id="{table_id}">')
    return page[start : page.index("</table>", start)]


def test_every_disagreement_is_listed_formatted_and_sortable(page):
    table = _table(page, "disagreement-table")
    assert table.count("<tr><td") == DISAGREEMENTS
    assert "NaN" not in table and "nan" not in table and "None" not in table
    for header in ("kind of noise", "z (standard errors)", "relative error", "standard error"):
        assert f'<th scope="col">{header}' in table
    assert ">0.1235</td>" in table  # 4 significant digits
    assert 'data-value="0.123456789"' in table  # sorted by the exact value
    assert "sigmoid, gain 4.4, centre 0.5" in table and "mean-field rule" in table
    assert '<a href="#layers">Figure 1</a> (layers)' in table and "<td>slopes</td>" in table
    assert "addEventListener" in page and 'querySelectorAll("table.sortable")' in page


def test_settings_table_holds_every_config_field_and_the_seed(page):
    table = _table(page, "settings-table")
    names = re.findall(r'<th scope="row">([^<]+)</th>', table)
    assert names == ["seed", *(field.name for field in fields(StudyConfig))]
    assert f'<th scope="row">seed</th><td>{SEED}</td>' in table
    assert '<th scope="row">accuracy_intensities</th><td>0.01, 0.1, 1</td>' in table
    assert "{" not in table  # no JSON dump


def test_every_caption_names_its_settings():
    values = report.caption_values(CONFIG, SEED)
    for name, (_, caption) in FIGURES.items():
        text = caption.format(**values)
        assert "{" not in text and "}" not in text, name
        assert f"seed {SEED}" in text or name == "design", name
        assert "repeats" in text or "draws" in text or name in ("design", "pooling"), name


def test_findings_are_shown_beside_their_figures(written, page):
    for name in WRITTEN:
        section = page[page.index(f'<section id="{name}">') :]
        assert f"<strong>Finding.</strong> {written.findings[name]}" in section[:400]


# ------------------------------------------------------------------------------------ drawing
def test_legends_explain_the_styles_and_sit_outside_the_axes(drawn):
    for name, figure in drawn.items():
        figure.draw_without_rendering()
        assert figure.legends, name
        assert all(ax.get_legend() is None for ax in figure.axes), name
        texts = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
        assert texts, name
        renderer = figure.canvas.get_renderer()
        for legend in figure.legends:
            box = legend.get_window_extent(renderer)
            for ax in figure.axes:
                assert not box.overlaps(ax.get_window_extent(renderer)), name


def test_simulation_and_theory_are_named_in_the_legends(drawn):
    def texts(name: str) -> str:
        return " | ".join(t.get_text() for legend in drawn[name].legends for t in legend.get_texts())

    assert "simulation (± 1 standard error)" in texts("layers") and "closed form" in texts("layers")
    assert "deep limit" in texts("accumulation")
    assert "covariance method" in texts("trained") and "mean-field rule" in texts("trained")
    assert "noise-free accuracy" in texts("accuracy") and "first order" in texts("accuracy")
    assert "2 % threshold" in texts("beyond")


def _data_colours(ax) -> set[str]:
    """The colours of the plotted data (lines and error bars), greys and black left out."""
    colours = set()
    for line in ax.lines:
        if len(line.get_xdata()):
            colours.add(to_hex(line.get_color()))
    for collection in ax.collections:
        colours.update(to_hex(colour) for colour in collection.get_edgecolor())
    return {colour for colour in colours if len({colour[1:3], colour[3:5], colour[5:7]}) > 1}


@pytest.mark.parametrize("name", ["trained", "beyond", "accuracy", "cnn", "injection"])
def test_one_colour_per_kind_in_every_panel(drawn, name):
    for ax, kind in zip(drawn[name].axes, KINDS):
        assert ax.get_title().startswith(kind)
        assert _data_colours(ax) == {KIND_COLOURS[kind].lower()}, (name, kind)


def test_layer_ticks_are_integers_and_titles_are_words(drawn):
    axes = drawn["layers"].axes
    assert [ax.get_title() for ax in axes] == [
        "linear, slope 1", "linear, slope 0.8", "logistic sigmoid (slope 0.225)",
    ]  # fmt: skip
    for name in ("layers", "accumulation", "trained"):
        for ax in drawn[name].axes:
            ticks = ax.get_xticks()
            assert len(ticks) and all(float(tick).is_integer() and tick >= 1 for tick in ticks), name


def test_dot_plots_and_bars_from_zero(drawn):
    from matplotlib.container import BarContainer, ErrorbarContainer

    mitigation = drawn["mitigation"].axes
    assert not any(isinstance(c, BarContainer) for ax in mitigation for c in ax.containers)
    errorbars = [c for c in mitigation[0].containers if isinstance(c, ErrorbarContainer)]
    assert len(errorbars) == 2  # simulated and predicted, each with error bars
    assert "0.0225" in drawn["mitigation"].get_suptitle()


def test_accuracy_is_in_percent_on_a_log_intensity_axis(drawn):
    for ax in drawn["accuracy"].axes:
        assert ax.get_xscale() == "log" and ax.get_ylabel() in ("test accuracy (%)", "")
        assert len([line for line in ax.lines if line.get_linestyle() == ":"]) == 1  # first order
        labels = [ax.yaxis.get_major_formatter()(0.9, 0)]
        assert labels == ["90"]


def test_design_budget_bars_start_at_zero(design):
    figure = report._draw_design(design)
    try:
        ax = figure.axes[0]
        assert ax.get_ylim()[0] == 0.0
        assert {patch.get_facecolor()[:3] for patch in ax.containers[0]} == {
            matplotlib.colors.to_rgb(KIND_COLOURS[ax.containers[0].get_label()])
        }
    finally:
        plt.close(figure)


def test_activation_titles_in_words():
    assert activation_title("linear") == "linear, slope 1"
    assert activation_title("sigmoid:gain=4,centre=0.5") == "sigmoid, gain 4, centre 0.5"
    assert activation_title("tanh", slope=0.5) == "tanh (slope 0.5)"
