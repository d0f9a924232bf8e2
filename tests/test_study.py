"""The study end to end on a reduced grid: every figure and every computed finding in the report."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from noiseprop.experiments import convolution_mean_field
from noiseprop.noise import KINDS
from noiseprop.report import FIGURES
from noiseprop.study import StudyConfig, _cnn_finding, cnn_losses, run_study

TINY = StudyConfig(
    width=6, depth=6, repeats=600, slopes=(0.5, 1.0), accumulation_slopes=(0.5, 1.0), widths=(4, 8),
    width_depth=4, trained_images=8, trained_repeats=200, accuracy_images=40, accuracy_repeats=10,
    accuracy_intensities=(0.01, 0.3), mitigation_images=30, mitigation_repeats=10, mitigation_factor=2,
    cnn_intensities=(0.1, 1.0), cnn_images=20, cnn_repeats=10, beyond_images=4, beyond_repeats=300,
)  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return run_study(TINY, output=tmp_path_factory.mktemp("study"), seed=3)


def test_report_holds_every_figure_and_finding(study):
    page = study.report.read_text(encoding="utf-8")
    assert set(study.figures) == set(FIGURES)
    for name, path in study.figures.items():
        assert path.is_file() and path.stat().st_size > 10_000
        assert f'<section id="{name}">' in page
        finding = study.findings[name]
        assert finding and finding.replace("'", "&#x27;") in page
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == len(FIGURES)
    assert 'id="disagreements"' in page
    for name in ("layers", "slopes", "width", "trained", "accuracy", "mitigation", "disagreements"):
        assert (study.output / "tables" / f"{name}.csv").is_file()


def test_findings_are_computed_from_the_data(study):
    """The sigmoid's slope at its fixed point, 0.2247, and the slope-1 linear growth appear as
    numbers that the tables produce (not typed in)."""
    assert "slope 0.2247" in study.findings["slopes"]
    assert re.search(
        r"slope 1: unbounded, layer 6/layer 1 = [\d.]+ ± [\d.]+ \(theory 6",
        study.findings["accumulation"],
    )
    assert re.search(r"AU: N=4→8 changes the average's variance ×0\.\d+", study.findings["width"])
    assert re.search(
        r"ghosts \+ pooling x2 lift the simulated accuracy from [\d.]+%", study.findings["mitigation"]
    )


def _accuracy_table(noise_free: float, accuracies: dict[str, tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"kind": kind, "intensity": intensity, "method": "montecarlo", "accuracy": value,
             "stderr": 0.01, "noise_free": noise_free}
            for kind in KINDS
            for intensity, value in zip((0.1, 1.0), accuracies[kind])
        ]
    )  # fmt: skip


def test_cnn_directions_from_hand_made_tables():
    """Losses by hand: CNN AU 0.99 - (0.9 + 0.7)/2 = 0.19, MLP AU 0.98 - (0.95 + 0.85)/2 = 0.08,
    difference +0.11 with standard error sqrt(4 x 0.01^2)/2 = 0.01: "additive degrades the CNN
    more" holds. MU the other way round (CNN loses less): holds. AC: equal losses, does not hold.
    MC: losses 0.14 and 0.145, within 3 standard errors: "alike" holds."""
    cnn = _accuracy_table(0.99, {"AU": (0.9, 0.7), "AC": (0.9, 0.8), "MU": (0.97, 0.95),
                                 "MC": (0.9, 0.8)})  # fmt: skip
    mlp = _accuracy_table(0.98, {"AU": (0.95, 0.85), "AC": (0.89, 0.79), "MU": (0.9, 0.7),
                                 "MC": (0.89, 0.78)})  # fmt: skip
    losses = cnn_losses(cnn, mlp)
    assert losses.loc["AU", "difference"] == pytest.approx(0.11)
    assert losses.loc["AU", "stderr"] == pytest.approx(0.01)
    text = _cnn_finding(losses)
    assert "AU: mean loss CNN 19.00 vs MLP 8.00 points, difference +11.00 ± 1.00" in text
    verdicts = re.findall(r"'[^']+' (holds|does not hold)", text)
    assert verdicts == ["holds", "does not hold", "holds", "holds"]


def test_correlated_noise_through_a_convolution_is_the_per_channel_sum():
    """Correlated additive noise moves every element of relu1 (and of pool1 after it) by the same
    draw, so conv2's output moves by ``(sum of the channel's weights) x draw``: the per-channel rule
    is exact, within the simulation's standard errors."""
    row = convolution_mean_field(seed=1, kind="AC", layer="conv2", images=4, repeats=2000).iloc[0]
    assert row["fan_in"] == 8 * 5 * 5
    assert abs(row["per_channel"] - row["simulated"]) <= 4 * row["stderr"] + 1e-3 * row["simulated"]
    assert row["meanfield"] < 0.8 * row["simulated"]  # the layer-wide mean misses the channels


def test_resume_reuses_every_point(study):
    again = run_study(TINY, output=study.output, seed=3, resume=True)
    for name, table in study.tables.items():
        assert (
            table.sort_values(["point"])
            .reset_index(drop=True)
            .equals(again.tables[name].sort_values(["point"]).reset_index(drop=True))
        )


def test_existing_output_needs_resume(study):
    with pytest.raises(FileExistsError, match="pass resume=True"):
        run_study(TINY, output=study.output)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 1}, r"StudyConfig\.width must be an integer >= 2; got 1"),
        ({"slopes": ()}, r"StudyConfig\.slopes must list at least one value"),
        ({"accumulation_slopes": (0.3,)}, r"accumulation_slopes must be among slopes"),
        ({"intensity": -1.0}, r"StudyConfig\.intensity must be a finite variance > 0"),
    ],
)
def test_config_errors(change, message):
    with pytest.raises(ValueError, match=message):
        StudyConfig(**change)
