"""``noiseprop train``, ``accuracy`` and ``accuracy-curve`` on real MNIST, through the command line."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from noiseprop import Network
from noiseprop.cli import app
from noiseprop.datasets import mnist


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    return result.stdout if code == 0 else result.stderr


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_train_writes_a_network_that_learns(tmp_path):
    path = tmp_path / "net.safetensors"
    args = ("train", "--output", str(path), "--hidden", "16", "--epochs", "3", "--train-size", "3000",
            "--learning-rate", "1e-2")  # fmt: skip
    payload = json.loads(run(*args, "--json"))
    assert payload["test_accuracy"] > 0.75  # chance is 0.1
    network = Network.load(path)
    assert network.widths == (16, 10) and network.metadata["test_accuracy"] == payload["test_accuracy"]


def test_accuracy_of_the_shipped_network_both_methods():
    payload = json.loads(run("accuracy", "--images", "mnist:60", "--noise", "AU=1e-2", "--repeats", "20",
                             "--json"))  # fmt: skip
    methods = payload["methods"]
    assert set(methods) == {"predicted", "montecarlo"} and payload["images"] == 60
    images, labels = mnist().scaled("test")
    from noiseprop.training import default_network

    logits = default_network().forward(torch.tensor(images[:60], dtype=torch.float64))[-1][1]
    noise_free = float((logits.argmax(-1) == torch.tensor(labels[:60])).double().mean())
    for result in methods.values():
        assert result["noise_free"] == pytest.approx(noise_free)
        assert 0 <= result["accuracy"] <= 1 and result["stderr"] >= 0


def test_correlated_additive_noise_on_the_output_changes_no_decision():
    payload = json.loads(run("accuracy", "--images", "mnist:40", "--noise", "AC=1", "--layers", "output",
                             "--method", "montecarlo", "--repeats", "10", "--json"))  # fmt: skip
    result = payload["methods"]["montecarlo"]
    assert result["accuracy"] == result["noise_free"]


def test_accuracy_curve_writes_figure_and_table(tmp_path):
    figure = tmp_path / "curve.png"
    args = ("accuracy-curve", "--output", str(figure), "--images", "mnist:30", "--kinds", "AU,MC",
            "--intensities", "0.01,0.1", "--repeats", "5", "--json")  # fmt: skip
    payload = json.loads(run(*args))
    assert figure.stat().st_size > 5000
    table = pd.read_csv(tmp_path / "curve.csv")
    assert len(table) == len(payload["points"]) == 2 * 2 * 2  # kinds x intensities x methods
    assert set(table["kind"]) == {"AU", "MC"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("accuracy", "--images", "cifar:10"), "--images: expected 'mnist:N'"),
        (("accuracy", "--images", "mnist:5", "--method", "exact"), "--method: expected one of"),
        (("accuracy-curve", "--output", "x.png", "--intensities", "a,b"), "--intensities: expected"),
        (
            ("train", "--output", "x.safetensors", "--hidden", "ten"),
            "--hidden: expected comma-separated",
        ),
        (
            ("train", "--output", "x.safetensors", "--epochs", "0"),
            "TrainConfig.epochs must be an integer",
        ),
    ],
)
def test_option_errors_exit_2(args, message):
    assert message in run(*args, code=2)


def test_accuracy_with_the_moments_predictor():
    """Correlated additive noise at 0.3 on the shipped network: the moments predictor lands within
    one point (plus 4 standard errors) of the simulation; a bad --predictor is named."""
    args = ("accuracy", "--noise", "AC=0.3", "--images", "mnist:200", "--predictor", "moments",
            "--repeats", "200", "--json")  # fmt: skip
    payload = json.loads(run(*args))["methods"]
    predicted, simulated = payload["predicted"], payload["montecarlo"]
    assert predicted["predictor"] == "moments" and simulated["predictor"] is None
    allowed = 0.01 + 4 * (predicted["stderr"] ** 2 + simulated["stderr"] ** 2) ** 0.5
    assert abs(predicted["accuracy"] - simulated["accuracy"]) <= allowed
    message = run("accuracy", "--predictor", "exact", code=2)
    assert "--predictor" in message and "expected one of covariance, moments; got 'exact'" in message
