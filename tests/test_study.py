"""The study end to end on a reduced grid: every figure and every computed finding in the report."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from noiseprop.experiments import convolution_mean_field, injection_accuracy, noise_aware_accuracy
from noiseprop.noise import KINDS
from noiseprop.report import FIGURES
from noiseprop.study import (
    StudyConfig,
    _aware_finding,
    _cnn_finding,
    _injection_finding,
    aware_gains,
    cnn_losses,
    injection_losses,
    run_study,
)

TINY = StudyConfig(
    width=6, depth=6, repeats=600, slopes=(0.5, 1.0), accumulation_slopes=(0.5, 1.0), widths=(4, 8),
    width_depth=4, trained_images=8, trained_repeats=200, accuracy_images=40, accuracy_repeats=10,
    accuracy_intensities=(0.01, 0.3), mitigation_images=30, mitigation_repeats=10, mitigation_factor=2,
    cnn_intensities=(0.1, 1.0), pooling_intensities=(0.1, 1.0), cnn_images=20, cnn_repeats=10,
    beyond_images=4, beyond_repeats=300,
    injection_images=20, injection_repeats=4, aware_epochs=1, aware_train_size=1000, aware_images=20,
    aware_repeats=4,
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


def _injection_table(losses: dict[tuple[str, str, str, int], float]) -> pd.DataFrame:
    """Rows of the ``injection`` sweep with the given losses (noise-free 0.99, stderr 0.005)."""
    return pd.DataFrame(
        [{"kind": kind, "injection": injection, "layer": layer, "pool": pool,
          "accuracy": 0.99 - loss, "stderr": 0.005, "noise_free": 0.99}
         for (kind, injection, layer, pool), loss in losses.items()]
    )  # fmt: skip


def test_injection_directions_from_hand_made_tables():
    """Losses by hand, the same on both layers unless said: AU 0.20 after, 0.01 before; MU 0.05
    after, 0.08 before; AC and MC 0.1 either way; AU after split 0.30 (layer 1) and 0.10 (layer 2).
    Every row has standard error 0.005: a mean over the two layers has 0.005/sqrt(2), a difference
    of two such means 0.005 (0.50 points), a difference of two rows 0.005 sqrt(2) (0.71 points).
    Pooling halves AU and MU everywhere and leaves AC and MC as they are (over both injections and
    layers: standard error 0.0025 per mean of four rows, 0.35 points for the difference)."""
    base = {("AU", "after"): 0.2, ("AU", "before"): 0.01, ("MU", "after"): 0.05,
            ("MU", "before"): 0.08, ("AC", "after"): 0.1, ("AC", "before"): 0.1,
            ("MC", "after"): 0.1, ("MC", "before"): 0.1}  # fmt: skip
    losses = {}
    for (kind, injection), loss in base.items():
        for layer in ("1", "2"):
            split = loss + (0.1 if layer == "1" else -0.1) * (kind == "AU" and injection == "after")
            losses[(kind, injection, layer, 1)] = split
            losses[(kind, injection, layer, 4)] = split / 2 if kind in ("AU", "MU") else split
    text = _injection_finding(injection_losses(_injection_table(losses)))
    assert "before hurts less than after (loss after - before): AU +19.00 ± 0.50 points (holds)" in text
    assert "MU -3.00 ± 0.50 points (does not hold)" in text
    assert "AU - MU +15.00 ± 0.50 points (holds), AC - MC +0.00 ± 0.50 points (does not hold)" in text
    assert "(loss 1 - 2, after): AU +20.00 ± 0.71 points (holds), AC +0.00" in text
    assert "pooling x4 helps before and after (loss without - with): AU after +10.00 ± 0.50" in text
    assert "one draw shared by every copy: AC +0.00 ± 0.35 points (none, as expected)" in text


def test_noise_aware_directions_from_hand_made_tables():
    """Control and aware accuracies by hand (stderr 0.003 each, so 0.0042 combined): AU +5, AC +3,
    MU +0.5 points (within 3 standard errors: "raises" does not hold), MC +0.4 points (below one
    point: "barely matters" holds)."""
    control = {"AU": 0.80, "AC": 0.85, "MU": 0.90, "MC": 0.88}
    gains = {"AU": 0.05, "AC": 0.03, "MU": 0.005, "MC": 0.004}
    rows = [{"trained_with": "none", "kind": kind, "accuracy": value, "stderr": 0.003,
             "noise_free": 0.95} for kind, value in control.items()]  # fmt: skip
    for trained in KINDS:
        rows += [{"trained_with": trained, "kind": kind,
                  "accuracy": control[kind] + (gains[kind] if kind == trained else -0.1),
                  "stderr": 0.003, "noise_free": 0.95} for kind in KINDS]  # fmt: skip
    table = aware_gains(pd.DataFrame(rows))
    assert table.loc["AU", "gain"] == pytest.approx(0.05)
    text = _aware_finding(table)
    assert "AU: 80.00% -> 85.00% (+5.00 ± 0.42 points): 'raises accuracy' holds" in text
    assert re.findall(r"' (holds|does not hold)", text) == ["holds", "holds", "does not hold", "holds"]


def test_correlated_noise_is_untouched_by_pooling_and_zero_noise_by_training():
    """Two exact properties of the new experiments: pooling copies every hidden neuron, and the
    copies share a layer's correlated draw, so AC gives the same accuracy pooled or not, draw for
    draw; and training with noise of intensity 0 is training without noise."""
    plain, pooled = (injection_accuracy(seed=2, kind="AC", intensity=0.5, layer="1", pool=pool,
                                        images=30, repeats=6) for pool in (1, 4))  # fmt: skip
    assert plain.equals(pooled) and plain["accuracy"].iloc[0] < plain["noise_free"].iloc[0]
    small = {"intensity": 0.0, "epochs": 1, "train_size": 500, "images": 20, "repeats": 2}
    assert noise_aware_accuracy(seed=1, trained_with="none", **small).equals(
        noise_aware_accuracy(seed=1, trained_with="AU", **small)
    )


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
