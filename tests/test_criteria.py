"""Design criteria (noiseprop.criteria): verdicts, limits, noise budget, tolerable noise, remedies, CLI.

Reference values are derived here from docs/THEORY.md, not taken from the program. Symmetric network
(``N`` neurons, weights ``1/N``, no bias), linear ``f(x) = a x + c``: the layer average has mean
``mu`` and variance ``v`` with (exact)::

    mu* = c / (1 - a),  E_f = mu*^2 + a^2 v
    v   = a^2 v + E_f (D_MC + D_MU/N) + D_AC + D_AU/N              (solved for the fixed point)
    per-neuron variance = a^2 v + E_f (D_MU + D_MC) + D_AU + D_AC

so accumulation is bounded for ``a^2 (1 + D_MC + D_MU/N) < 1``, grows linearly at ``a = 1`` without
multiplicative noise, and geometrically above. The logistic sigmoid sits at ``mu* = sigmoid(mu*)``
with slope ``g = mu* (1 - mu*)``, and a layer's own correlated noise ``D_AC`` becomes
``D_AC / (1 - g^2)`` deep in the network.

Monte Carlo checks are statistical tests with ``SIGMAS`` (4) standard errors, seeded by the ``seed``
fixture of conftest.py (``NOISEPROP_TEST_SEEDS=0-49`` reruns them over many seeds).
"""

from __future__ import annotations

import json
import math

import matplotlib
import pytest
import torch
from conftest import assert_within
from typer.testing import CliRunner

import noiseprop.cli.design  # noqa: F401  (registers the command)
from noiseprop import Layer, Network, Noise, propagate, simulate
from noiseprop.classification import accuracy
from noiseprop.cli import app
from noiseprop.criteria import Design, design, plot_noise_budget
from noiseprop.noise import KINDS

matplotlib.use("Agg")

WIDTH = 10


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small tensors: one thread is fastest, and a busy machine slows more threads tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def linear_limit(slope, offset, noise, width=WIDTH):
    """Per-neuron variance deep in a linear symmetric network (module docstring)."""
    mu = offset / (1 - slope)
    averaged = noise.MC + noise.MU / width
    v = (mu**2 * averaged + noise.AC + noise.AU / width) / (1 - slope**2 * (1 + averaged))
    e_f = mu**2 + slope**2 * v
    return slope**2 * v + e_f * (noise.MU + noise.MC) + noise.AU + noise.AC


def sigmoid_fixed_point():
    level = 0.5
    for _ in range(200):
        level = 1 / (1 + math.exp(-level))
    return level


# ------------------------------------------------------------------------------------ verdicts
def test_sigmoid_network_is_bounded_with_the_papers_limit():
    level = sigmoid_fixed_point()
    g = level * (1 - level)
    d_ac = 1e-3
    result = design(Network.symmetric(width=WIDTH, depth=6), Noise(AC=d_ac), 0.3, check=False)
    assert result.growth == "bounded" and result.bounded and result.repeating
    assert result.growth_ratio == pytest.approx(g**2, rel=1e-9)
    assert result.limit_ratio == pytest.approx(1 / (1 - g**2), rel=1e-9)
    assert round(result.limit_ratio, 6) == 1.053177
    assert result.limit == pytest.approx(d_ac / (1 - g**2), rel=1e-9)
    assert result.remedies.slope == pytest.approx(g, rel=1e-9)
    assert result.remedies.critical_slope == pytest.approx(1.0)
    assert "bounded" in result.verdict and "1.053177" in result.verdict


@pytest.mark.parametrize(
    ("offset", "noise"),
    [(0.0, Noise(AU=1e-3, AC=2e-4)), (0.1, Noise(AU=1e-3, AC=2e-4, MU=3e-3, MC=1e-3))],
)
def test_linear_slope_below_one_has_the_closed_form_limit(offset, noise):
    slope = 0.8
    net = Network.symmetric(width=WIDTH, depth=4, activation=f"linear:slope={slope},offset={offset}")
    result = design(net, noise, 0.5, check=False)
    assert result.growth == "bounded"
    assert result.limit == pytest.approx(linear_limit(slope, offset, noise), rel=1e-9)
    if offset == 0:  # the brief's form: a^2 (D_AC + D_AU/N) / (1 - a^2) + D_AU + D_AC
        expected = slope**2 * (noise.AC + noise.AU / WIDTH) / (1 - slope**2) + noise.AU + noise.AC
        assert result.limit == pytest.approx(expected, rel=1e-12)
    gain = result.gains[1]  # weights 1/N: uncorrelated a^2 / N, correlated a^2
    assert gain.uncorrelated_gain == pytest.approx(slope**2 / WIDTH, rel=1e-12)
    assert gain.correlated_gain == pytest.approx(slope**2, rel=1e-12)


@pytest.mark.parametrize(
    ("slope", "noise", "growth"),
    [
        (1.0, Noise(AU=1e-3, AC=1e-4), "linear"),
        (1.0, Noise(AU=1e-3, MU=1e-3), "geometric"),  # ratio 1 + D_MU / N
        (1.1, Noise(AU=1e-3, AC=1e-4), "geometric"),
    ],
)
def test_slope_one_and_above_is_unbounded(slope, noise, growth):
    net = Network.symmetric(width=WIDTH, depth=4, activation=f"linear:slope={slope}")
    result = design(net, noise, 0.5, check=False)
    assert result.growth == growth and not result.bounded
    assert result.growth_ratio == pytest.approx(slope**2 * (1 + noise.MC + noise.MU / WIDTH), rel=1e-12)
    assert result.limit == math.inf
    assert result.verdict.startswith("unbounded")


def test_a_slow_approach_to_a_slope_one_fixed_point_is_linear_growth():
    """``s <- tanh(s)`` creeps to 0 like ``sqrt(3 / (2 n))``; the slope there is exactly 1."""
    net = Network.symmetric(width=WIDTH, depth=3, activation="tanh")
    result = design(net, Noise(AC=1e-3), 0.3, check=False)
    assert result.growth == "linear" and result.limit == math.inf
    assert result.remedies.slope == pytest.approx(1.0, abs=1e-12)


def test_a_trained_style_network_reports_its_largest_gain():
    net = Network.random([5, 8, 8, 3], ["tanh", "tanh", "linear"], seed=2, weight_scale=3.0)
    result = design(net, Noise(AU=1e-3), torch.randn(4, 5, dtype=torch.float64), check=False)
    assert not result.repeating and result.limit is None
    largest = max(max(g.uncorrelated_gain, g.correlated_gain) for g in result.gains[1:])
    assert result.growth_ratio == largest
    assert result.growth == ("bounded" if largest < 1 else "geometric")


# -------------------------------------------------------------------------------------- budget
def _mixed_network():
    return Network.random([6, 12, 9, 4], ["tanh", "sigmoid:gain=2", "linear"], seed=3)


@pytest.mark.parametrize("injection", ["after", "before"])
def test_budget_parts_add_up_to_the_first_order_total(injection):
    net, x = (
        _mixed_network(),
        torch.randn(7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)),
    )
    spec = [
        Noise(AU=1e-3, AC=2e-3, MU=3e-3, MC=1e-3, injection=injection),
        Noise(AU=1e-4, MC=1e-3, injection=injection),
        Noise(AC=1e-3, MU=1e-2, injection=injection),
    ]
    budget = design(net, spec, x, check=False).budget
    parts = sum(sum(row) for row in budget.contributions)
    assert parts == pytest.approx(budget.first_order_total, rel=1e-12, abs=0)
    assert sum(budget.by_layer) == pytest.approx(sum(budget.by_kind.values()), rel=1e-12)
    assert budget.propagated_total == propagate(net, spec, x)[-1].layer_variance
    # the rest is second order: scaling every intensity by t scales the difference by t^2
    half = design(net, [noise.scaled(0.5) for noise in spec], x, check=False).budget
    assert half.difference / budget.difference == pytest.approx(0.25, rel=0.02)


@pytest.mark.parametrize("injection", ["after", "before"])
def test_first_order_total_is_propagate_for_additive_noise(injection):
    net, x = _mixed_network(), torch.randn(5, 6, dtype=torch.float64)
    spec = [
        Noise(AU=1e-3, AC=2e-3, injection=injection),
        Noise(AU=3e-4, injection=injection),
        Noise(AC=1e-4),
    ]
    budget = design(net, spec, x, check=False).budget
    assert budget.first_order_total == pytest.approx(budget.propagated_total, rel=1e-12, abs=0)
    # one source alone, through propagate: that source's part
    for layer in (1, 2):
        for kind in ("AU", "AC"):
            alone = {layer: Noise(**{kind: 1e-3}, injection=injection)}
            part = design(net, alone, x, check=False).budget.contributions[layer - 1][KINDS.index(kind)]
            assert part == pytest.approx(propagate(net, alone, x)[-1].layer_variance, rel=1e-12)


def test_the_dominant_source_is_found():
    """Rows of the next weights that sum to zero block correlated additive noise (docs/THEORY.md
    section 3): a huge AC on layer 1 contributes nothing, and its small AU (through rows of squared
    norm 2) dominates."""
    first = Layer(torch.eye(3), torch.zeros(3), "linear")
    second = Layer([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]], [0.0, 0.0], "linear")
    net = Network((first, second))
    spec = [Noise(AU=1e-3, AC=1.0), Noise(AU=1e-4)]
    budget = design(net, spec, [0.2, 0.5, 0.9], check=False).budget
    rows = budget.contributions
    assert rows[0][KINDS.index("AC")] == pytest.approx(0.0, abs=1e-15)
    assert rows[0][KINDS.index("AU")] == pytest.approx(2e-3, rel=1e-12)
    assert rows[1][KINDS.index("AU")] == pytest.approx(1e-4, rel=1e-12)
    assert (budget.dominant_layer, budget.dominant_kind) == (1, "AU")
    frame = budget.to_frame()
    assert len(frame) == 2 * len(KINDS) and frame["share"].sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- tolerable noise
def test_tolerable_noise_matches_the_closed_form_and_the_simulation(seed):
    """Linear symmetric network, slope 1, depth L, one kind on every layer: the output neurons'
    variance is ``D ((L-1)/N + 1)`` for AU and ``L D`` for AC, so the largest D for a target SNR is
    ``mu^2 10^(-target/10)`` over that factor. The first-order theory is exact here; a simulation at
    the answer sits on the target within its statistical error."""
    depth, level, target = 3, 0.5, 25.0
    net = Network.symmetric(width=WIDTH, depth=depth, activation="linear")
    result = design(net, Noise(AU=1e-3), level, target_snr_db=target, check=False)
    allowed = level**2 * 10 ** (-target / 10)
    by_kind = {t.kind: t for t in result.tolerances}
    assert by_kind["AU"].intensity == pytest.approx(allowed / ((depth - 1) / WIDTH + 1), rel=1e-3)
    assert by_kind["AC"].intensity == pytest.approx(allowed / depth, rel=1e-3)
    for tolerance in result.tolerances:
        assert tolerance.status == "limited" and tolerance.layers == (1, 2, 3)
        assert tolerance.predicted >= target - 1e-9 and tolerance.simulated is None
        spec = Noise(**{tolerance.kind: tolerance.intensity})
        output = simulate(net, spec, level, repeats=20_000, seed=seed)[-1]
        stderr_db = 10 / math.log(10) * output.layer_variance_stderr / output.layer_variance
        assert_within(10 * math.log10(output.layer_snr), target, stderr_db)


def test_the_check_simulation_is_reported():
    net = Network.symmetric(width=WIDTH, depth=3, activation="linear:slope=0.9")
    result = design(net, Noise(AU=1e-3, MC=1e-3), 0.5, target_snr_db=20, repeats=2000, seed=3)
    assert [t.kind for t in result.tolerances] == list(KINDS)
    for tolerance in result.tolerances:
        assert tolerance.simulated_stderr > 0 and tolerance.meets_target is True
        assert abs(tolerance.simulated - tolerance.predicted) < 5 * tolerance.simulated_stderr


def _classifier():
    """tanh hidden layer, linear logits: with noise on the hidden layer only, the logits are exactly
    Gaussian with the first-order covariance, so the predicted accuracy is exact up to integration."""
    net = Network.random([6, 16, 4], ["tanh", "linear"], seed=5, weight_scale=2.0)
    x = torch.randn(48, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    labels = net.forward(x)[-1][1].argmax(-1)
    return net, x, labels


def test_tolerable_noise_for_a_target_accuracy_meets_it_in_simulation(seed):
    net, x, labels = _classifier()
    target = 0.9
    result = design(
        net, {1: Noise(AU=1e-2)}, x, labels=labels, target_accuracy=target, check=False, points=4096
    )
    assert result.noise_free_accuracy == 1.0
    for tolerance in result.tolerances:
        assert tolerance.criterion == "accuracy" and tolerance.layers == (1,)
        assert tolerance.status == "limited" and tolerance.predicted >= target
        spec = {1: Noise(**{tolerance.kind: tolerance.intensity})}
        predicted = accuracy(net, spec, x, labels, method="predicted", points=4096)
        simulated = accuracy(net, spec, x, labels, repeats=4000, seed=seed)
        assert_within(simulated.accuracy, target, math.hypot(simulated.stderr, predicted.stderr))


def test_correlated_additive_noise_on_the_output_cannot_lower_the_accuracy():
    net, x, labels = _classifier()
    result = design(net, {2: Noise(AC=1e-2)}, x, labels=labels, target_accuracy=0.99, check=False)
    assert {t.status for t in result.tolerances if t.kind == "AC"} == {"unlimited"}
    assert next(t.intensity for t in result.tolerances if t.kind == "AC") == math.inf


# -------------------------------------------------------------------------------------- remedies
@pytest.mark.parametrize("target", [21.0, 23.5])
def test_pooling_and_width_bring_the_output_under_the_target(target):
    """Slope 1, AU on every layer: the hidden layers give ``(L-1) D / N`` at the output, the output
    layer ``D``; pooling by P (or widening to N P) divides the first by P. At 21 dB the target is met
    with room to spare (P < 1, a narrower network would do), at 23.5 dB it needs P > 1."""
    depth, level, d_au = 4, 0.5, 1e-3
    net = Network.symmetric(width=WIDTH, depth=depth, activation="linear")
    remedies = design(net, Noise(AU=d_au), level, target_snr_db=target, check=False).remedies
    allowed = level**2 * 10 ** (-target / 10)
    pooling = (depth - 1) * d_au / WIDTH / (allowed - d_au)
    assert remedies.pooling == pytest.approx(pooling, rel=1e-12)
    assert remedies.width == math.ceil(WIDTH * pooling)
    wider = Network.symmetric(width=remedies.width, depth=depth, activation="linear")
    assert design(wider, Noise(AU=d_au), level, check=False).snr_db >= target
    narrower = Network.symmetric(width=remedies.width - 1, depth=depth, activation="linear")
    assert design(narrower, Noise(AU=d_au), level, check=False).snr_db < target


def test_no_pooling_helps_against_correlated_noise():
    net = Network.symmetric(width=WIDTH, depth=3, activation="linear")
    remedies = design(net, Noise(AU=1e-4, AC=1e-2), 0.5, target_snr_db=20, check=False).remedies
    assert remedies.pooling is None and remedies.width is None
    assert any("correlated noise" in note for note in remedies.notes)


def test_critical_gain_of_a_sigmoid_centred_on_its_fixed_point():
    """A sigmoid of gain k centred on 0.5 has the fixed point 0.5, slope k / 4: gain 4 is critical."""
    net = Network.symmetric(width=WIDTH, depth=3, activation="sigmoid:gain=2,centre=0.5")
    result = design(net, Noise(AC=1e-3), 0.5, check=False)
    assert result.remedies.slope == pytest.approx(
        0.5
    ) and result.remedies.critical_gain == pytest.approx(4.0)
    assert result.remedies.slope_factor == pytest.approx(2.0)
    critical = Network.symmetric(width=WIDTH, depth=3, activation="sigmoid:gain=4,centre=0.5")
    assert design(critical, Noise(AC=1e-3), 0.5, check=False).growth == "linear"


# ------------------------------------------------------------------------------------------ plot
def test_plot_draws_one_stack_per_kind():
    import matplotlib.pyplot as plt

    net = Network.symmetric(width=WIDTH, depth=3, activation="linear:slope=0.9")
    result = design(net, Noise(AU=1e-3, MU=2e-3), 0.5, check=False)
    figure, ax = plt.subplots()
    assert plot_noise_budget(result, ax) is ax
    assert [container.get_label() for container in ax.containers] == ["AU", "MU"]
    rows = result.budget.contributions
    for container, kind in zip(ax.containers, ("AU", "MU")):
        assert [patch.get_height() for patch in container] == pytest.approx(
            [row[KINDS.index(kind)] for row in rows]
        )
    tops = [au.get_y() + au.get_height() for au in ax.containers[0]]
    assert [mu.get_y() for mu in ax.containers[1]] == pytest.approx(tops)
    plt.close(figure)


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"target_snr_db": math.nan}, ValueError, "target_snr_db must be a finite real number; got nan"),
        (
            {"target_accuracy": 1.5},
            ValueError,
            r"target_accuracy must be a fraction in \(0, 1\]; got 1.5",
        ),
        ({"target_accuracy": 0.9}, ValueError, "target_accuracy needs labels"),
        ({"repeats": 1}, ValueError, r"repeats must be an integer >= 2 and <= 9007199254740992; got 1"),
        ({"rtol": 2.0}, ValueError, r"rtol must be a relative precision in \(0, 1\); got 2.0"),
        ({"sigmas": 0}, ValueError, "sigmas must be a finite number > 0; got 0"),
        ({"labels": [0, 1]}, ValueError, r"labels must have shape \(1,\)"),
    ],
)
def test_bad_arguments_raise_naming_the_parameter(options, error, message):
    net = Network.symmetric(width=WIDTH, depth=2)
    with pytest.raises(error, match=message):
        design(net, Noise(AU=1e-3), 0.5, **options)


def test_unreachable_accuracy_and_wrong_types_raise():
    net, x, labels = _classifier()
    wrong = (labels + 1) % 4
    with pytest.raises(ValueError, match="at most the noise-free accuracy of these inputs, 0; got 0.5"):
        design(net, Noise(AU=1e-3), x, labels=wrong, target_accuracy=0.5)
    with pytest.raises(TypeError, match="network must be a Network"):
        design("net", Noise(), 0.5)
    with pytest.raises(TypeError, match="design must be a Design"):
        plot_noise_budget("budget")
    assert isinstance(design(net, Noise(), x, check=False), Design)


# ------------------------------------------------------------------------------------------- CLI
def test_cli_prints_json():
    args = [
        "design", "--activation", "linear:slope=0.8", "--width", str(WIDTH), "--depth", "4",
        "--noise", "AU=1e-3,AC=2e-4", "--input", "0.5", "--target-snr-db", "20", "--no-check", "--json",
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["growth"] == "bounded" and payload["repeating"] is True
    assert payload["limit"] == pytest.approx(linear_limit(0.8, 0.0, Noise(AU=1e-3, AC=2e-4)), rel=1e-9)
    assert [t["kind"] for t in payload["tolerances"]] == list(KINDS)
    assert payload["budget"]["first_order_total"] == pytest.approx(payload["output_variance"], rel=1e-12)
    assert len(payload["budget"]["contributions"]) == 4 and payload["figure"] is None


def test_cli_table_and_figure(tmp_path):
    figure = tmp_path / "budget.png"
    args = [
        "design", "--width", str(WIDTH), "--depth", "3", "--noise", "AC=1e-3", "--input", "0.659046",
        "--target-snr-db", "20", "--repeats", "200", "--figure", str(figure),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bounded" in result.stdout and "Noise budget" in result.stdout and figure.stat().st_size > 0


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--target-accuracy", "1.5"], "--target-accuracy"),
        (["--target-accuracy", "0.9"], "--target-accuracy"),  # needs mnist:N
        (["--target-snr-db", "nan"], "--target-snr-db"),
        (["--figure", "budget.xyz"], "--figure"),
        (["--repeats", "1"], "--repeats"),
    ],
)
def test_cli_bad_options_exit_with_code_2(extra, option):
    result = CliRunner().invoke(app, ["design", "--width", "5", "--depth", "2", *extra])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {option}:")
