"""``--model``/``--weights``/``--sites`` on the command line: simulate, accuracy and sweep.

Reference values are derived here. A tanh site with additive noise injected after it (and noise-free
input) has variance exactly ``D_AU`` per neuron; a linear layer ``w`` after it has output variance
``D_AU |w|^2``. Correlated additive noise on a classifier's logits shifts them all by the same draw,
so no decision changes. Monte Carlo checks allow ``SIGMAS`` standard errors (conftest.py).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import assert_within
from safetensors.torch import save_file
from typer.testing import CliRunner

from noiseprop.cli import app

AU = 1e-3
READOUT = [[3.0, 4.0]]  # |w|^2 = 25

SOURCE = """
from torch import nn


def build():
    return nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1))


def broken():
    raise RuntimeError("cannot build")
"""


def invoke(*args: str, code: int = 0) -> tuple[str, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result.stdout, result.stderr


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("model")
    (folder / "net.py").write_text(SOURCE)
    generator = torch.Generator().manual_seed(1)
    tensors = {
        "0.weight": torch.randn(2, 3, generator=generator),
        "0.bias": torch.randn(2, generator=generator),
        "2.weight": torch.tensor(READOUT),
        "2.bias": torch.tensor([0.5]),
    }
    save_file(tensors, str(folder / "net.safetensors"))
    save_file({**tensors, "2.weight": torch.zeros(3, 2)}, str(folder / "wrong.safetensors"))
    (folder / "raises.py").write_text("raise ImportError('no such thing here')\n")
    return {
        "model": folder / "net.py",
        "weights": folder / "net.safetensors",
        "wrong": folder / "wrong.safetensors",
        "raises": folder / "raises.py",
        "folder": folder,
    }


def test_help_lists_the_model_options():
    for command in ("simulate", "accuracy", "predict", "compare", "design"):
        stdout, _ = invoke(command, "--help")
        for option in ("--model", "--weights", "--sites"):
            assert option in stdout, (command, option)


def test_simulate_a_model_file_with_weights_matches_closed_form(files, seed):
    payload = json.loads(
        invoke(
            "simulate", "--model", f"{files['model']}:build", "--weights", str(files["weights"]),
            "--input", "0.1,0.2,0.3", "--noise", f"AU={AU:g}", "--repeats", "4000",
            "--seed", str(seed), "--dtype", "float64", "--json",
        )[0]
    )  # fmt: skip
    assert payload["model"] == f"{files['model']}:build with weights {files['weights']}"
    assert payload["sites"] == ["1", "output"] and payload["noise"] == [f"AU={AU:g}", "none"]
    site, output = payload["layers"]
    assert (site["site"], site["neurons"], output["neurons"]) == ("1", 2, 1)
    assert_within(site["variance"], AU, site["variance_stderr"])
    assert_within(output["variance"], 25 * AU, output["variance_stderr"])


def test_predict_a_model_file_by_linearisation_is_the_closed_form(files):
    """The tanh site's own additive noise, then the readout ``w``: first order is exact here,
    ``D_AU`` at the site and ``D_AU |w|^2`` at the output."""
    payload = json.loads(
        invoke(
            "predict", "--model", f"{files['model']}:build", "--weights", str(files["weights"]),
            "--input", "0.1,0.2,0.3", "--noise", f"AU={AU:g}", "--json",
        )[0]
    )  # fmt: skip
    site, output = payload["layers"]
    assert (site["site"], output["site"]) == ("1", "output")
    assert site["variance"] == pytest.approx(AU, rel=1e-12)
    assert output["variance"] == pytest.approx(25 * AU, rel=1e-12)


def test_compare_the_shipped_cnn_site_by_site():
    """Correlated noise at the shipped CNN's ReLUs: its linearisation agrees with its simulation on
    every site (z within 3 in the table, as the summary line says); uncorrelated noise at its tied
    max-pooling windows is refused in one line that names --model."""
    stdout, _ = invoke(
        "compare", "--model", "cnn", "--input", "mnist:2", "--noise", "AC=1e-3", "--repeats", "2000",
        "--no-progress",
    )  # fmt: skip
    rows = [line.split()[1] for line in stdout.splitlines() if line.startswith("│")]
    assert rows == ["relu1", "relu2", "output"]
    assert "covariance: 3/3 layers agree within 3 standard errors" in stdout
    _, stderr = invoke("predict", "--model", "cnn", "--input", "mnist:2", "--noise", "AU=1e-3", code=2)
    assert stderr.count("\n") == 1 and "Error: --model: the model is not differentiable" in stderr


def test_design_the_shipped_cnn_site_by_site(tmp_path):
    figure = tmp_path / "budget.png"
    stdout, _ = invoke(
        "design", "--model", "cnn", "--input", "mnist:4", "--noise", "AC=1e-3", "--target-snr-db",
        "20", "--repeats", "300", "--figure", str(figure),
    )  # fmt: skip
    assert figure.stat().st_size > 10_000  # the budget by site, as a figure
    rows = [line.split()[1] for line in stdout.splitlines() if line.startswith("│ ")]
    assert rows[:4] == ["relu1", "relu2", "relu1", "relu2"]  # the gains, then the budget
    assert "AU: not linearisable here" in " ".join(stdout.split())


def test_simulate_the_shipped_cnn_prints_a_row_per_site(seed):
    args = ["simulate", "--model", "cnn", "--input", "mnist:2", "--noise", "AU=1e-3", "--repeats", "200"]
    stdout, _ = invoke(*args, "--no-progress")
    rows = {line.split()[3]: line for line in stdout.splitlines() if line.startswith("│")}
    assert list(rows) == ["relu1", "relu2", "output"]
    assert "model: cnn; input: mnist:2 (shape 2x784)" in stdout
    assert "AU=0.001 at relu1, relu2; none at output" in stdout
    payload = json.loads(invoke(*args, "--seed", str(seed), "--json")[0])
    relu1 = payload["layers"][0]
    assert (relu1["site"], relu1["neurons"]) == ("relu1", 8 * 24 * 24)
    assert_within(relu1["variance"], 1e-3, relu1["variance_stderr"])


def test_simulate_sites_choose_where_noise_acts():
    payload = json.loads(
        invoke(
            "simulate",
            "--model",
            "cnn",
            "--sites",
            "conv*",
            "--sites",
            "fc",
            "--input",
            "mnist:1",
            "--noise",
            "AU=1e-3",
            "--repeats",
            "20",
            "--json",
        )[0]  # fmt: skip
    )
    assert payload["sites"] == ["conv1", "conv2", "fc"]  # fc's output is the model's: no "output" row


def _noise_free_accuracy(images: int) -> float:
    from noiseprop.cnn import default_cnn
    from noiseprop.datasets import mnist

    pixels, labels = mnist().scaled("test")
    with torch.no_grad():
        logits = default_cnn()(torch.from_numpy(pixels[:images]).float())
    return float((logits.argmax(1) == torch.from_numpy(labels[:images])).double().mean())


def test_accuracy_of_the_shipped_cnn():
    payload = json.loads(
        invoke(
            "accuracy",
            "--model",
            "cnn",
            "--images",
            "mnist:50",
            "--noise",
            "AU=0.1",
            "--repeats",
            "10",
            "--json",
        )[0]  # fmt: skip
    )
    assert payload["model"] == "cnn" and payload["sites"] == ["relu1", "relu2"]
    assert list(payload["methods"]) == ["montecarlo"] and payload["images"] == 50
    result = payload["methods"]["montecarlo"]
    assert result["noise_free"] == pytest.approx(_noise_free_accuracy(50))
    assert 0 <= result["accuracy"] <= 1 and result["stderr"] > 0
    stdout, _ = invoke("accuracy", "--model", "cnn", "--images", "mnist:20", "--repeats", "5")
    assert "montecarlo" in stdout and "AU=0.01 at every site (relu1, relu2)" in stdout


def test_correlated_noise_on_the_logits_changes_no_decision():
    payload = json.loads(
        invoke(
            "accuracy",
            "--model",
            "cnn",
            "--sites",
            "fc",
            "--images",
            "mnist:40",
            "--noise",
            "AC=1",
            "--method",
            "montecarlo",
            "--repeats",
            "10",
            "--json",
        )[0]  # fmt: skip
    )
    result = payload["methods"]["montecarlo"]
    assert result["accuracy"] == result["noise_free"]


def test_the_predicted_accuracy_of_a_model_goes_beyond_first_order():
    """--method predicted on a model whose cut is narrow (noise only on the logits, ``fc``: its
    256 inputs are the cut) runs the rest of the model at quasi-random points (--predictor moments
    by default): correlated additive noise on the logits changes no decision at any point, so the
    prediction equals the noise-free accuracy exactly."""
    args = ["--sites", "fc", "--images", "mnist:40", "--noise", "AC=1", "--method", "predicted"]
    payload = json.loads(invoke("accuracy", "--model", "cnn", *args, "--json")[0])
    result = payload["methods"]["predicted"]
    assert result["predictor"] == "moments" and result["points"] == 1024
    assert result["accuracy"] == result["noise_free"] and result["stderr"] == 0


def _pickle_that_touches(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps(Payload())


def test_a_pickle_given_as_weights_is_refused_and_never_unpickled(files, tmp_path):
    marker = tmp_path / "unpickled"
    for name in ("weights.pt", "weights.safetensors"):
        path = tmp_path / name
        path.write_bytes(_pickle_that_touches(marker))
        _, stderr = invoke("simulate", "--model", f"{files['model']}:build", "--weights", str(path),
                           "--input", "1,2,3", code=2)  # fmt: skip
        assert stderr.startswith("Error: --weights: weights file") and stderr.count("\n") == 1
        assert "safetensors.torch.save_file" in stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("args", "option", "fragment"),
    [
        (["simulate", "--model", "missing.py:build"], "--model", "'missing.py' does not exist"),
        (["simulate", "--model", "net.py"], "--model", "model spec must be PATH.py:FUNCTION"),
        (["simulate", "--model", "MODEL:nope"], "--model", "no function 'nope'; it has: broken, build"),
        (["simulate", "--model", "MODEL:broken"], "--model", "raised RuntimeError: cannot build"),
        (["simulate", "--model", "RAISES:build"], "--model", "raised ImportError: no such thing here"),
        (["simulate", "--model", "MODEL:build", "--weights", "WRONG"], "--weights",
         "shapes that differ: 2.weight (3, 2) (model: (1, 2))"),
        (["simulate", "--model", "MODEL:build", "--weights", "absent.safetensors"], "--weights",
         "does not exist"),
        (["simulate", "--model", "cnn", "--width", "3"], "--model",
         "give either --model or --network/--width/--depth/--activation, not both; got --model with "
         "--width"),
        (["simulate", "--weights", "WRONG"], "--weights", "got --weights without --model"),
        (["simulate", "--sites", "relu*"], "--sites", "got --sites without --model"),
        (["predict", "--model", "cnn", "--input", "mnist:2", "--method", "moments"], "--method",
         "moments needs a dense network"),
        (["simulate", "--model", "cnn", "--layers", "hidden"], "--layers",
         "with --model choose the noise sites with --sites"),
        (["simulate", "--model", "cnn", "--sites", "zz*"], "--sites", "pattern 'zz*' matches no module"),
        (["simulate", "--model", "cnn"], "--input", "a model takes a batch of inputs"),
        (["simulate", "--model", "cnn", "--input", "1,2,3"], "--model",
         "its forward pass failed on --input of shape (1, 3) with RuntimeError"),
        (["accuracy", "--model", "cnn", "--images", "mnist:2", "--method", "predicted",
          "--predictor", "moments"], "--predictor", "site ('relu2') as Gaussian, and that input"),
        (["accuracy", "--model", "cnn", "--network", "net.safetensors"], "--model",
         "give either --model or --network, not both"),
        (["accuracy", "--model", "cnn", "--layers", "output"], "--layers", "selects layers of a dense"),
        (["accuracy", "--weights", "WRONG"], "--weights", "got --weights without --model"),
    ],
)  # fmt: skip
def test_errors_name_the_option_in_one_line_and_exit_2(files, args, option, fragment):
    placeholders = {"MODEL": files["model"], "RAISES": files["raises"], "WRONG": files["wrong"]}
    for placeholder, path in placeholders.items():
        args = [arg.replace(placeholder, str(path)) for arg in args]
    stdout, stderr = invoke(*args, code=2)
    assert stderr.startswith(f"Error: {option}: ") and stderr.count("\n") == 1, stderr
    assert fragment in stderr and "Traceback" not in stderr + stdout


def test_sweep_accuracy_of_a_model(tmp_path):
    args = ["sweep", "accuracy", "--output", str(tmp_path), "--set", "model=cnn", "--grid",
            "intensity=0.01,0.1", "--set", "images=20", "--set", "repeats=5", "--json"]  # fmt: skip
    payload = json.loads(invoke(*args)[0])
    assert payload["computed"] == 2 and payload["rows"] == 2 and payload["failures"] == []
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert set(table["method"]) == {"montecarlo"} and set(table["model"]) == {"cnn"}
    assert table["noise_free"].tolist() == pytest.approx([_noise_free_accuracy(20)] * 2)


def test_sweep_trained_rows_per_site_and_a_refused_point(tmp_path):
    args = ["sweep", "trained", "--output", str(tmp_path), "--set", "model=cnn", "--grid",
            "network=default,net.safetensors", "--set", "images=3", "--set", "repeats=40",
            "--json"]  # fmt: skip
    payload = json.loads(invoke(*args, code=1)[0])  # a failed point: exit code 1, the rest kept
    assert payload["computed"] == 2 and payload["rows"] == 3
    (failure,) = payload["failures"]
    assert failure["network"] == "net.safetensors"
    assert "give network or model, not both" in failure["error"]
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert table["site"].tolist() == ["relu1", "relu2", "output"]
    assert set(table["method"]) == {"montecarlo"}
