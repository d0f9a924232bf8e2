"""The result type: tidy tables, SNR definitions and the prediction/simulation comparison."""

from __future__ import annotations

import math

import pytest
import torch

import noiseprop
from noiseprop import LayerStatistics, Network, Noise, NoiseStatistics, compare, propagate, simulate

NET = Network.random([3, 4, 2], ["tanh", "linear"], seed=0)
X = torch.tensor([[0.1, 0.2, 0.3], [0.3, -0.1, 0.5]], dtype=torch.float64)
NOISE = Noise(AU=1e-3, MU=1e-3)


def test_snr_definitions():
    layer = LayerStatistics(mean=torch.tensor([[2.0, -1.0]]), variance=torch.tensor([[0.04, 0.01]]))
    torch.testing.assert_close(layer.snr, torch.tensor([[100.0, 100.0]]))
    torch.testing.assert_close(layer.snr_db, torch.tensor([[20.0, 20.0]]))
    assert layer.layer_snr == pytest.approx((4 + 1) / 2 / ((0.04 + 0.01) / 2))


def test_prediction_frame_is_tidy():
    frame = propagate(NET, NOISE, X).to_frame()
    assert list(frame.columns) == [
        "layer",
        "site",
        "neuron",
        "input",
        "mean",
        "variance",
        "snr",
        "snr_db",
        "mean_stderr",
        "variance_stderr",
        "method",
    ]
    assert len(frame) == 2 * (4 + 2)
    assert frame["variance_stderr"].isna().all()
    row = frame[(frame.layer == 2) & (frame.neuron == 1) & (frame.input == 0)].iloc[0]
    assert row["snr"] == pytest.approx(row["mean"] ** 2 / row["variance"])
    assert row["snr_db"] == pytest.approx(10 * math.log10(row["snr"]))


def test_simulation_frame_and_summary_carry_standard_errors():
    stats = simulate(NET, NOISE, X, repeats=200, seed=0)
    frame = stats.to_frame()
    assert frame["variance_stderr"].notna().all() and (frame["method"] == "montecarlo").all()
    summary = stats.summary()
    assert list(summary.columns) == [
        "layer",
        "site",
        "neurons",
        "mean",
        "variance",
        "variance_stderr",
        "snr",
        "snr_db",
    ]
    assert summary["variance"].tolist() == pytest.approx(
        [layer.layer_variance for layer in stats.layers]
    )
    assert stats.repeats == 200 and stats.is_simulation


def test_comparison_flags_layers_outside_the_error_bars():
    simulated = simulate(NET, NOISE, X, repeats=400, seed=0)
    shifted = NoiseStatistics(
        layers=tuple(
            LayerStatistics(mean=layer.mean, variance=layer.variance * factor)
            for layer, factor in zip(simulated.layers, (1.0, 2.0))
        ),
        method="covariance",
        noise=simulated.noise,
    )
    frame = compare(shifted, simulated).to_frame()
    assert frame["within"].tolist() == [True, False]
    assert frame["relative_error"].tolist() == pytest.approx([0.0, 1.0])


def test_compare_errors():
    prediction = propagate(NET, NOISE, X)
    simulation = simulate(NET, NOISE, X, repeats=10, seed=0)
    with pytest.raises(ValueError, match="simulation must be a Monte Carlo result"):
        compare(prediction, prediction)
    with pytest.raises(ValueError, match="prediction must be an analytic result"):
        compare(simulation, simulation)
    with pytest.raises(ValueError, match="differ in shape"):
        compare(propagate(NET, NOISE, X[:1]), simulation)
    with pytest.raises(ValueError, match="sigmas must be a finite number > 0"):
        compare(prediction, simulation, sigmas=0)


def test_public_api_is_pinned():
    assert noiseprop.__all__ == [
        "Accuracy", "Activation", "Comparison", "Design", "ELU", "GELU", "GELUTanh", "Hardtanh",
        "KINDS", "Layer", "LayerStatistics", "LeakyReLU", "Linear", "Network", "Noise",
        "NoiseStatistics", "NoisySites", "ReLU", "Sigmoid", "Softplus", "Tanh", "TrainConfig",
        "accuracy", "add_ghosts", "compare", "design", "find_sites", "load_model", "noisy",
        "parse_activation", "pool", "propagate", "register_activation", "sample", "simulate",
        "sweep", "train", "__version__",
    ]  # fmt: skip
    for name in noiseprop.__all__:
        assert getattr(noiseprop, name) is not None
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        noiseprop.nothing  # noqa: B018


def test_per_input_comparison_has_one_row_per_layer_and_input(seed):
    """Each input's layer variance against its batch-means standard error, for a linear network
    where the prediction is exact: |z| stays within 4.5 for all 2 x 3 rows."""
    net = Network.random([3, 4, 2], ["linear", "linear"], seed=0)
    prediction = propagate(net, NOISE, X)
    frame = prediction.compare(
        simulate(net, NOISE, X, repeats=4000, seed=seed, dtype="float64")
    ).per_input()
    assert list(frame.columns) == [
        "layer",
        "input",
        "predicted",
        "simulated",
        "stderr",
        "relative_error",
        "z",
        "within",
    ]
    assert len(frame) == 2 * len(X)
    assert frame["predicted"].tolist() == pytest.approx(
        [float(v) for layer in prediction.layers for v in layer.variance.mean(-1)]
    )
    assert (frame["z"].abs() < 4.5).all()
