"""Tests for the ``noiseprop`` command line (noiseprop.cli).

Reference values come from docs/THEORY.md section 2, derived here, not from program output. Linear
symmetric network (slope 1, no bias, weights 1/N), additive noise, noise-free input: the layer average
``s_n`` gains ``D_AC + D_AU/N`` of variance in every layer (correlated noise passes whole, uncorrelated
noise is averaged over N neurons), so ``Var s_n = n (D_AC + D_AU/N)``; every neuron of layer n receives
``s_{n-1}`` and adds its own ``D_AU + D_AC``, so its variance is ``(n-1)(D_AC + D_AU/N) + D_AC + D_AU``.

Monte Carlo checks are statistical tests with ``SIGMAS`` (4) standard errors as the tolerance; they take
the ``seed`` fixture of conftest.py, so ``NOISEPROP_TEST_SEEDS=0-99 pytest tests/test_cli.py`` reruns
them over many seeds.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import SIGMAS, assert_within
from typer.testing import CliRunner

import noiseprop
from noiseprop.cli import app

WIDTH, DEPTH = 10, 3
AU, AC = 1e-3, 1e-4
LINEAR = [
    "--activation", "linear", "--width", str(WIDTH), "--depth", str(DEPTH),
    "--noise", f"AU={AU:g},AC={AC:g}", "--input", "1",
]  # fmt: skip


def linear_variance(layer: int, *, width: int = WIDTH, au: float = AU, ac: float = AC) -> float:
    """Per-neuron variance of layer ``layer`` (1-based) of the linear symmetric network above."""
    return (layer - 1) * (ac + au / width) + ac + au


def _reject_constant(name: str) -> None:
    raise AssertionError(f"JSON output holds {name}, which is not valid JSON")


def invoke(*args: str, code: int = 0) -> tuple[str, str]:
    """Run the command line in-process; check the exit code; return (stdout, stderr)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr, result.exception)
    return result.stdout, result.stderr


def invoke_json(*args: str) -> dict:
    stdout, _ = invoke(*args, "--json")
    return json.loads(stdout, parse_constant=_reject_constant)


def variances(payload: dict) -> list[float]:
    return [row["variance"] for row in payload["layers"]]


# ------------------------------------------------------------------------------- basics
def test_help_lists_the_commands_and_options():
    stdout, _ = invoke("--help")
    for command in ("predict", "simulate", "compare"):
        assert command in stdout
    for command, options in {
        "predict": ["--network", "--width", "--noise", "--layers", "--input", "--method", "--json"],
        "simulate": ["--repeats", "--seed", "--dtype", "--device", "--no-progress"],
        "compare": ["--method", "--repeats", "--sigmas"],
    }.items():
        stdout, _ = invoke(command, "--help")
        for option in options:
            assert option in stdout, (command, option)


def test_version():
    stdout, _ = invoke("--version")
    assert stdout.strip() == f"noiseprop {noiseprop.__version__}"


def test_import_and_help_do_not_import_torch():
    script = (
        "import sys\n"
        "import noiseprop.cli\n"
        "imported = 'torch' in sys.modules or 'pandas' in sys.modules\n"
        "try:\n"
        "    noiseprop.cli.app(['--help'], prog_name='noiseprop')\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        "print('HEAVY', imported, 'torch' in sys.modules or 'pandas' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "Usage" in done.stdout
    assert "HEAVY False False" in done.stdout, done.stdout


# ------------------------------------------------------------------------------ predict
@pytest.mark.parametrize("method", ["symmetric", "covariance", "meanfield"])
def test_predict_linear_symmetric_matches_closed_form(method):
    payload = invoke_json("predict", *LINEAR, "--method", method)
    assert payload["method"] == method
    assert payload["repeats"] is None
    assert payload["noise"] == [f"AU={AU:g},AC={AC:g}"] * DEPTH
    assert "10x4" in payload["network"]
    for number, row in enumerate(payload["layers"], start=1):
        expected = linear_variance(number)
        assert row["layer"] == number
        assert row["neurons"] == WIDTH
        assert row["mean"] == pytest.approx(1.0, rel=1e-12)  # slope 1 passes the input 1 through
        assert row["variance"] == pytest.approx(expected, rel=1e-12)
        assert row["snr"] == pytest.approx(1 / expected, rel=1e-12)  # SNR = mean^2 / variance
        assert row["snr_db"] == pytest.approx(10 * math.log10(1 / expected), rel=1e-12)
        assert row["variance_stderr"] is None  # NaN for predictions, null in JSON


def test_predict_default_method_is_symmetric_and_table_states_definitions():
    stdout, _ = invoke("predict", *LINEAR)
    assert "symmetric method" in stdout
    assert "SNR = <mean^2> / <variance>" in stdout
    assert f"AU={AU:g},AC={AC:g} on every layer" in stdout
    assert f"{linear_variance(1):g}" in stdout


def test_layers_2_makes_layer_1_noise_free():
    payload = invoke_json("predict", *LINEAR, "--layers", "2")
    assert payload["noise"] == ["none", f"AU={AU:g},AC={AC:g}", "none"]
    first, second, third = payload["layers"]
    assert first["variance"] == 0
    assert first["snr"] is None and first["snr_db"] is None  # infinite SNR: null, valid JSON
    assert second["variance"] == pytest.approx(AU + AC, rel=1e-12)  # own noise on a clean input
    assert third["variance"] == pytest.approx(AC + AU / WIDTH, rel=1e-12)  # layer 2's average


@pytest.mark.parametrize(
    ("layers", "noisy"),
    [("all", [1, 2, 3]), ("hidden", [1, 2]), ("output", [3]), ("1,3", [1, 3]), ("2-3", [2, 3])],
)
def test_layers_selects_the_noisy_layers(layers, noisy):
    payload = invoke_json("predict", *LINEAR, "--layers", layers)
    expected = [f"AU={AU:g},AC={AC:g}" if n in noisy else "none" for n in range(1, DEPTH + 1)]
    assert payload["noise"] == expected


def test_injection_before_is_filtered_by_the_slope():
    # A single linear layer of slope 0.5, noise before the activation: variance 0.5^2 (D_AU + D_AC).
    payload = invoke_json(
        "predict", "--activation", "linear:slope=0.5", "--width", "4", "--depth", "1",
        "--noise", "AU=1e-3,AC=1e-3", "--injection", "before",
    )  # fmt: skip
    assert payload["noise"] == ["AU=0.001,AC=0.001,injection=before"]
    assert variances(payload) == [pytest.approx(0.25 * 2e-3, rel=1e-12)]


# ----------------------------------------------------------------------------- simulate
def test_simulate_is_reproducible_and_agrees_with_closed_form(seed):
    args = ("simulate", *LINEAR, "--repeats", "4000", "--seed", str(seed), "--dtype", "float64")
    first, second = invoke(*args, "--json")[0], invoke(*args, "--json")[0]
    assert first == second  # same seed, same numbers
    payload = json.loads(first, parse_constant=_reject_constant)
    assert payload["method"] == "montecarlo"
    assert payload["repeats"] == 4000
    for number, row in enumerate(payload["layers"], start=1):
        assert_within(row["variance"], linear_variance(number), row["variance_stderr"])
    other = invoke_json("simulate", *LINEAR, "--repeats", "4000", "--seed", str(seed + 1))
    assert variances(other) != variances(payload)


def test_simulate_progress_bar_goes_to_stderr_and_can_be_switched_off():
    stdout, stderr = invoke("simulate", *LINEAR, "--repeats", "200")
    assert "repeats" in stderr
    assert "stderr: standard error of the simulated variance" in stdout
    stdout, stderr = invoke("simulate", *LINEAR, "--repeats", "200", "--no-progress")
    assert stderr == ""
    _, stderr = invoke("simulate", *LINEAR, "--repeats", "200", "--json")
    assert stderr == ""


# ------------------------------------------------------------------------------ compare
def test_compare_small_sigmoid_network_agrees_within_sigmas(seed):
    args = (
        "compare", "--width", "10", "--depth", "4", "--repeats", "4000", "--seed", str(seed),
        "--sigmas", f"{SIGMAS:g}",
    )  # fmt: skip
    methods = ("--method", "covariance", "--method", "meanfield")
    payload = invoke_json(*args, *methods)
    assert payload["repeats"] == 4000
    assert list(payload["methods"]) == ["covariance", "meanfield"]
    for result in payload["methods"].values():
        rows = result["layers"]
        assert [row["layer"] for row in rows] == [1, 2, 3, 4]
        assert all(abs(row["z"]) <= SIGMAS and row["within"] for row in rows), rows
        assert result["all_within"] is True
    # The first layer sees only its own noise on a noise-free input: D_AU + D_AC exactly.
    assert payload["methods"]["covariance"]["layers"][0]["predicted"] == pytest.approx(2e-3)
    stdout, _ = invoke(*args, "--no-progress")
    assert f"symmetric: 4/4 layers agree within {SIGMAS:g} standard errors" in stdout


# ------------------------------------------------------------------------- network files
@pytest.fixture
def network_file(tmp_path):
    from noiseprop import Network

    return Network.random([5, 8, 3], "sigmoid", seed=1).save(tmp_path / "net.safetensors")


def test_network_file_predict_and_simulate(network_file, tmp_path):
    inputs = np.array([[0.1, 0.2, 0.3, 0.4, 0.5], [1.0, -1.0, 0.5, 0.0, 2.0]])
    np.save(tmp_path / "inputs.npy", inputs)
    np.savetxt(tmp_path / "inputs.csv", inputs, delimiter=",")
    common = ("--network", str(network_file), "--noise", "AU=1e-3,AC=1e-3")
    payload = invoke_json("predict", *common, "--input", str(tmp_path / "inputs.npy"))
    assert payload["method"] == "covariance"  # the default for a network file
    assert [row["neurons"] for row in payload["layers"]] == [8, 3]
    assert payload["layers"][0]["variance"] == pytest.approx(2e-3, rel=1e-12)  # D_AU + D_AC
    from_csv = invoke_json("predict", *common, "--input", str(tmp_path / "inputs.csv"))
    assert from_csv == payload
    one_row = invoke_json("predict", *common, "--input", "0.1,0.2,0.3,0.4,0.5")
    assert one_row["layers"][0]["variance"] == pytest.approx(2e-3, rel=1e-12)
    simulated = invoke_json("simulate", *common, "--repeats", "500")
    assert [row["neurons"] for row in simulated["layers"]] == [8, 3]


# ------------------------------------------------------------------------------- errors
SMALL = ("--width", "10", "--depth", "3")


@pytest.mark.parametrize(
    ("args", "option", "fragment"),
    [
        (("predict", *SMALL, "--noise", "XX=1e-3"), "--noise", "unknown kind"),
        (("predict", *SMALL, "--noise", "AU=-1"), "--noise", ">= 0"),
        (("predict", *SMALL, "--activation", "no-such"), "--activation", "no-such"),
        (("predict", "--network", "{net}", "--width", "5"), "--network", "not both"),
        (("predict", *SMALL, "--layers", "7"), "--layers", "from 1 to 3"),
        (("predict", *SMALL, "--layers", "2-x"), "--layers", "'all', 'hidden', 'output'"),
        (("predict", *SMALL, "--input", "1,2"), "--input", "(batch, 10)"),
        (("predict", *SMALL, "--input", "abc"), "--input", "a number"),
        (("predict", "--network", "{missing}"), "--network", "does not exist"),
        (("predict", *SMALL, "--input", "{missing}.npy"), "--input", "does not exist"),
        (("predict", *SMALL, "--method", "exact"), "--method", "covariance, moments, meanfield"),
        (("predict", "--network", "{net}", "--method", "symmetric"), "--method", "symmetric"),
        (("predict", *SMALL, "--injection", "inside"), "--injection", "after, before"),
        (("simulate", *SMALL, "--repeats", "1"), "--repeats", "from 2 to 2^53"),
        (
            ("simulate", *SMALL, "--repeats", "99999999999999999999"),
            "--repeats",
            "(more could not finish); got 99999999999999999999",
        ),
        (("simulate", *SMALL, "--dtype", "float16"), "--dtype", "float32, float64"),
        (("simulate", *SMALL, "--device", "nowhere"), "--device", "nowhere"),
        (("compare", *SMALL, "--sigmas", "0"), "--sigmas", "> 0"),
    ],
)
def test_errors_name_the_option_and_exit_2(args, option, fragment, network_file, tmp_path):
    names = {"net": str(network_file), "missing": str(tmp_path / "missing")}
    args = [arg.format(**names) for arg in args]
    stdout, stderr = invoke(*args, code=2)
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"Error: {option}: "), stderr
    assert fragment in lines[0], stderr


# ---------------------------------------------------------------------- per input, MNIST
def test_per_input_reports_every_image_of_real_mnist(tmp_path):
    """A 784-input network fed the first 3 MNIST test images: per-input rows for every layer and
    image; the first layer's additive noise is D_AU + D_AC whatever the image."""
    from noiseprop import Network

    path = Network.random([784, 16, 10], ["sigmoid", "tanh"], seed=0).save(tmp_path / "m.safetensors")
    payload = invoke_json(
        "predict",
        "--network",
        str(path),
        "--input",
        "mnist:3",
        "--noise",
        "AU=1e-3,AC=1e-3",
        "--per-input",
    )
    rows = payload["per_input"]
    assert [(row["layer"], row["input"]) for row in rows] == [
        (1, 0),
        (1, 1),
        (1, 2),
        (2, 0),
        (2, 1),
        (2, 2),
    ]
    assert [row["variance"] for row in rows[:3]] == pytest.approx([2e-3] * 3, rel=1e-12)
    assert len({round(row["variance"], 12) for row in rows[3:]}) == 3  # images differ downstream
    compared = invoke_json(
        "compare", "--network", str(path), "--input", "mnist:3", "--repeats", "200", "--per-input"
    )
    assert len(compared["methods"]["covariance"]["per_input"]) == 6


def test_mnist_input_errors():
    _, stderr = invoke("predict", "--input", "mnist:0", code=2)
    assert "--input" in stderr and "N >= 1" in stderr
