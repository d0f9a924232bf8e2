"""Accuracy under noise: simulated, predicted from the Gaussian output, swept and plotted.

Most tests use a small MNIST classifier trained here (784 -> 64 sigmoid -> 10 linear logits, 2 epochs
on 10,000 training images, a few seconds) and 1,000 test images.
"""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from conftest import SIGMAS, assert_within
from torch import nn

from noiseprop import Layer, Network, Noise
from noiseprop.classification import Accuracy, accuracy
from noiseprop.curves import accuracy_curve, plot_accuracy_curve
from noiseprop.datasets import mnist

matplotlib.use("Agg")


def _phi(x: torch.Tensor) -> torch.Tensor:
    """Standard normal distribution function."""
    return 0.5 * torch.erfc(-x / math.sqrt(2))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These tests run many small tensor operations (10 x 10 covariances, batches of 32 images), for
    which one thread is fastest; with more, a machine busy with other work slows them tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mnist_data():
    data = mnist()
    train_images, train_labels = data.scaled("train")
    test_images, test_labels = data.scaled("test")
    return (
        torch.from_numpy(train_images[:10_000]),
        torch.from_numpy(train_labels[:10_000]),
        torch.from_numpy(test_images[:1000]).double(),
        torch.from_numpy(test_labels[:1000]),
    )


@pytest.fixture(scope="module")
def classifier(mnist_data) -> Network:
    """784 -> 64 sigmoid -> 10 linear, trained with Adam (2 epochs, batches of 100, fixed seeds)."""
    images, labels = mnist_data[:2]
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 64), nn.Sigmoid(), nn.Linear(64, 10))
    with torch.no_grad():
        for linear in (model[0], model[2]):
            bound = 1 / math.sqrt(linear.in_features)
            linear.weight.uniform_(-bound, bound, generator=generator)
            linear.bias.uniform_(-bound, bound, generator=generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 100):
            batch = order[start : start + 100]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return Network.from_torch(model)


@pytest.fixture(scope="module")
def test_set(mnist_data):
    return mnist_data[2:]


def _tied(classes: int) -> Network:
    """One linear layer with zero weights and biases: every output is 0, all classes tie."""
    return Network((Layer(torch.zeros(classes, 1), torch.zeros(classes), "linear"),))


def _two_class() -> Network:
    """``y_0 = x + xi_0``, ``y_1 = xi_1``: class 0 wins with probability ``Phi(x / sqrt(2 D_AU))``."""
    return Network((Layer([[1.0], [0.0]], [0.0, 0.0], "linear"),))


# ------------------------------------------------------------------ agreement with the simulation
def test_the_trained_classifier_is_a_classifier(classifier, test_set):
    result = accuracy(classifier, Noise(), *test_set, method="predicted")
    assert 0.85 < result.noise_free < 0.97


def test_prediction_is_exact_when_the_logits_are_affine_in_the_noise(classifier, test_set, seed):
    """AU on the hidden (sigmoid) layer, added after the activation, and on the linear output layer:
    the logits are an affine function of Gaussian noise, so they are exactly Gaussian with exactly
    the first-order covariance. No tolerance beyond the standard errors (4, combined)."""
    noise = Noise(AU=0.3)
    predicted = accuracy(classifier, noise, *test_set, method="predicted", seed=seed)
    simulated = accuracy(classifier, noise, *test_set, repeats=200, seed=seed)
    assert simulated.noise_free - simulated.accuracy > 0.05  # the noise visibly costs accuracy
    assert predicted.noise_free == simulated.noise_free
    assert_within(predicted.accuracy, simulated.accuracy, math.hypot(predicted.stderr, simulated.stderr))


def test_prediction_through_a_sigmoid_agrees_within_half_a_percent(classifier, test_set, seed):
    """AU injected before the hidden sigmoid: the Gaussian is then a linearisation. Tolerance:
    4 combined standard errors plus 0.5 % (absolute). Why 0.5 %: the neglected terms (curvature of
    the sigmoid, which shifts the mean and compresses the tails) grow faster than the accuracy
    drop; at this noise, which costs about 1-2 % accuracy, the departure measured on this network
    is 0.3 %; at ten times smaller noise it is below 0.1 % (within the error bars), at three times
    larger about 1.4 %. So 0.5 % is what "small noise" buys here."""
    noise = {1: Noise(AU=3.0, injection="before")}
    predicted = accuracy(classifier, noise, *test_set, method="predicted", seed=seed)
    simulated = accuracy(classifier, noise, *test_set, repeats=200, seed=seed)
    assert simulated.noise_free - simulated.accuracy > 0.01
    stderr = math.hypot(predicted.stderr, simulated.stderr)
    assert abs(predicted.accuracy - simulated.accuracy) <= SIGMAS * stderr + 0.005


def test_all_classes_tied_are_equally_likely(seed):
    """Ten tied outputs with i.i.d. noise: by symmetry each class wins with probability 1/10,
    a 9-dimensional orthant probability."""
    labels = torch.arange(40) % 10
    images = torch.zeros(40, 1)
    predicted = accuracy(_tied(10), Noise(AU=1.0), images, labels, method="predicted", seed=3)
    assert_within(predicted.accuracy, 0.1, predicted.stderr)
    simulated = accuracy(_tied(10), Noise(AU=1.0), images, labels, repeats=500, seed=seed)
    assert_within(simulated.accuracy, 0.1, simulated.stderr)
    assert simulated.noise_free == 0.1  # argmax of a tie is the first class: right for label 0


@pytest.mark.parametrize("noise", [Noise(), Noise(AC=0.5)])
def test_exact_ties_go_to_the_first_class_in_the_prediction(noise):
    """Every output equal in every draw (zero weights; no noise, or one correlated offset shared by
    all outputs): argmax picks class 0 every time, so an image labelled 0 is always right and any
    other never. The orthant integral must keep that rule exactly, at every point."""
    labels = torch.tensor([0, 3, 9, 0])
    predicted = accuracy(
        _tied(10), noise, torch.zeros(4, 1), labels, method="predicted", predictor="covariance"
    )
    assert predicted.per_image.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_two_classes_closed_form_and_the_standard_error(seed):
    """``p_i = Phi(x_i / sqrt(2 D))``. The prediction integrates a 1-D indicator with a scrambled
    Sobol net of n = 512 points per scrambling, one point in each interval of width 1/n: its error
    is at most 1/n for every image. The simulation's standard error must be the Bernoulli one,
    ``sqrt(sum_i p_i (1 - p_i) / R) / B``, up to its own estimation error (a few % here: 5 %)."""
    variance = 0.5
    x = torch.linspace(-2.0, 2.0, 200, dtype=torch.float64).unsqueeze(-1)
    labels = torch.zeros(200, dtype=torch.int64)
    exact = _phi(x.squeeze(-1) / math.sqrt(2 * variance))
    predicted = accuracy(_two_class(), Noise(AU=variance), x, labels, method="predicted", seed=seed)
    assert float((predicted.per_image - exact).abs().max()) <= 1 / 512
    repeats = 400
    simulated = accuracy(_two_class(), Noise(AU=variance), x, labels, repeats=repeats, seed=seed)
    assert_within(simulated.accuracy, float(exact.mean()), simulated.stderr)
    expected_stderr = math.sqrt(float((exact * (1 - exact)).sum()) / repeats) / len(x)
    assert abs(simulated.stderr / expected_stderr - 1) < 0.05
    per_image_z = (simulated.per_image - exact) / (exact * (1 - exact) / repeats).sqrt()
    assert float(per_image_z.abs().max()) < 5  # 200 images, each within 5 of its standard errors


def test_stderr_formula_is_the_unbiased_bernoulli_estimate():
    x, labels = torch.linspace(-1, 1, 50).unsqueeze(-1), torch.zeros(50, dtype=torch.int64)
    result = accuracy(_two_class(), Noise(AU=0.3), x, labels, repeats=37, seed=1)
    p = result.per_image
    assert torch.equal(p * 37, (p * 37).round())  # fractions of 37 draws
    expected = math.sqrt(float((p * (1 - p)).sum()) / 36) / 50
    assert result.stderr == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------- invariances
def test_zero_noise_gives_exactly_the_noise_free_accuracy(classifier, test_set):
    images, labels = test_set
    right = (classifier.forward(images)[-1][1].argmax(-1) == labels).double()
    for method in ("montecarlo", "predicted"):
        result = accuracy(classifier, Noise(), images, labels, method=method, repeats=10)
        assert result.accuracy == result.noise_free == float(right.mean())
        assert torch.equal(result.per_image, right)
        assert result.stderr == 0.0


def test_correlated_additive_output_noise_changes_no_decision(classifier, test_set):
    """AC on the output layer shifts every logit by the same amount: every draw is decided as
    without noise, and the predicted difference covariance is exactly zero."""
    noise = {2: Noise(AC=1.0)}
    simulated = accuracy(classifier, noise, *test_set, repeats=50, seed=2, dtype="float64")
    predicted = accuracy(classifier, noise, *test_set, method="predicted")
    for result in (simulated, predicted):
        assert result.accuracy == result.noise_free
        assert result.stderr == 0.0
        assert set(result.per_image.tolist()) <= {0.0, 1.0}
    assert torch.equal(simulated.per_image, predicted.per_image)


def test_correlated_multiplicative_output_noise_acts_only_through_its_sign(classifier, test_set, seed):
    """MC on the output layer alone multiplies every logit by ``1 + xi``: the decision is kept
    when ``1 + xi > 0`` (probability ``Phi(1/sqrt(D))``) and becomes the argmin otherwise."""
    images, labels = test_set
    logits = classifier.forward(images)[-1][1]
    right = (logits.argmax(-1) == labels).double()
    lowest = (logits.argmin(-1) == labels).double()
    small = accuracy(classifier, {2: Noise(MC=0.01)}, images, labels, repeats=50, seed=seed)
    assert small.accuracy == small.noise_free  # P(1 + xi < 0) = Phi(-10) ~ 1e-23
    flipped = float(_phi(torch.tensor(-1.0, dtype=torch.float64)))  # D = 1
    exact = (1 - flipped) * right + flipped * lowest
    predicted = accuracy(classifier, {2: Noise(MC=1.0)}, images, labels, method="predicted")
    torch.testing.assert_close(predicted.per_image, exact)
    simulated = accuracy(classifier, {2: Noise(MC=1.0)}, images, labels, repeats=200, seed=seed)
    assert_within(simulated.accuracy, float(exact.mean()), simulated.stderr)


# ---------------------------------------------------------------------------- reproducibility
def test_same_seed_same_result_and_batch_size_does_not_matter(classifier, test_set):
    images, labels = test_set[0][:300], test_set[1][:300]
    noise = Noise(AU=0.1, MU=0.05)
    for method in ("montecarlo", "predicted"):
        first = accuracy(classifier, noise, images, labels, method=method, repeats=50, seed=7)
        again = accuracy(
            classifier, noise, images, labels, method=method, repeats=50, seed=7, batch_size=33
        )
        other = accuracy(classifier, noise, images, labels, method=method, repeats=50, seed=8)
        assert torch.equal(first.per_image, again.per_image)
        assert (first.accuracy, first.stderr) == (again.accuracy, again.stderr)
        assert not torch.equal(first.per_image, other.per_image)


def test_image_blocks_are_independent_of_the_rest_of_the_set(classifier, test_set):
    """The draws of an image block depend on its position, not on which images follow."""
    images, labels = test_set
    noise = Noise(AU=0.3)
    whole = accuracy(classifier, noise, images[:96], labels[:96], repeats=300, seed=4)
    part = accuracy(classifier, noise, images[:64], labels[:64], repeats=300, seed=4)
    assert torch.equal(whole.per_image[:64], part.per_image)


# -------------------------------------------------------------------------------------- sweep
def test_predicted_accuracy_falls_monotonically_with_additive_noise(classifier, test_set):
    levels = [0.0, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0]
    frame = accuracy_curve(classifier, ["AU"], levels, *test_set, methods=["predicted"], seed=5)
    assert frame["intensity"].tolist() == levels
    values = frame["accuracy"].to_numpy()
    assert values[0] == frame["noise_free"].iloc[0]
    assert (values[1:] < values[:-1]).all(), values
    assert values[-1] < 0.6


def test_curve_frame_layout_layers_and_seeds(classifier, test_set):
    images, labels = test_set[0][:100], test_set[1][:100]
    frame = accuracy_curve(classifier, ["MC", "AU"], [0.01, 0.1], images, labels, repeats=20, seed=1)
    assert list(frame.columns) == ["kind", "intensity", "method", "accuracy", "stderr", "noise_free"]
    assert frame[["kind", "intensity", "method"]].values.tolist() == [
        [kind, level, method]
        for kind in ("MC", "AU")
        for level in (0.01, 0.1)
        for method in ("predicted", "montecarlo")
    ]
    # each point's numbers depend on (seed, kind, point) only, not on the other kinds swept
    alone = accuracy_curve(classifier, "AU", [0.01, 0.1], images, labels, repeats=20, seed=1)
    assert alone.values.tolist() == frame[frame["kind"] == "AU"].values.tolist()
    # noise on the output layer only: AC there cannot change a decision
    output = accuracy_curve(classifier, ["AC"], [1.0], images, labels, repeats=20, layers=[2])
    assert (output["accuracy"] == output["noise_free"]).all()


def test_plot_draws_one_line_and_one_errorbar_set_per_kind(classifier, test_set):
    images, labels = test_set[0][:100], test_set[1][:100]
    frame = accuracy_curve(classifier, ["AU", "MU"], [0.0, 0.01, 0.1], images, labels, repeats=20)
    ax = plot_accuracy_curve(frame)
    assert len(ax.containers) == 2  # one ErrorbarContainer per kind
    labels_drawn = ax.get_legend_handles_labels()[1]
    kinds = ("AU", "MU")
    expected = [f"{kind} {method}" for kind in kinds for method in ("predicted", "simulated")]
    assert sorted(labels_drawn) == [*expected, "noise-free"]
    predicted = [line for line in ax.lines if line.get_label() == "AU predicted"][0]
    assert list(predicted.get_xdata()) == [0.01, 0.1]  # intensity 0 has no place on a log axis
    assert ax.get_xscale() == "log"
    import matplotlib.pyplot as plt

    _, own = plt.subplots()
    assert plot_accuracy_curve(frame[frame["method"] == "predicted"], ax=own) is own
    assert len(own.containers) == 0
    plt.close("all")


# --------------------------------------------------------------------------------- validation
BAD_ACCURACY_ARGUMENTS = [
    ({"images": "short"}, ValueError, r"images must have shape \(B, 784\).*got shape \(10, 100\)"),
    ({"images": "flat"}, ValueError, r"images must have shape \(B, 784\) .*got shape \(784,\)"),
    ({"images": "nan"}, ValueError, r"images must be finite; got NaN or infinite values"),
    ({"labels": "short"}, ValueError, r"labels must have shape \(10,\), one per image; got shape \(9"),
    ({"labels": "float"}, TypeError, r"labels must be integers in \[0, 10\); got dtype torch.float64"),
    ({"labels": "ten"}, ValueError, r"labels must be integers in \[0, 10\) .*got 10 at index 0"),
    ({"labels": "negative"}, ValueError, r"labels must be integers in \[0, 10\) .*got -1 at index 0"),
    ({"method": "exact"}, ValueError, r"method must be one of 'montecarlo', 'predicted'; got 'exact'"),
    ({"repeats": 1}, ValueError, r"repeats must be an integer >= 2 and <= 9007199254740992; got 1"),
    ({"points": 1000}, ValueError, r"points must be a power of two >= 64 \(8 scramblings.*got 1000"),
    ({"points": 32}, ValueError, r"points must be an integer >= 64; got 32"),
    ({"seed": -1}, ValueError, r"seed must be an integer from 0 to 2\^63 - 1; got -1"),
    ({"seed": 1.5}, TypeError, r"seed must be an integer >= 0; got float 1.5"),
    ({"batch_size": 0}, ValueError, r"batch_size must be an integer >= 1; got 0"),
    ({"dtype": "float16"}, ValueError, r"dtype must be one of 'float32', 'float64'"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD_ACCURACY_ARGUMENTS)
def test_accuracy_rejects_bad_arguments(classifier, test_set, change, error, message):
    images, labels = test_set[0][:10], test_set[1][:10]
    variants = {
        ("images", "short"): images[:, :100],
        ("images", "flat"): images[0],
        ("images", "nan"): images * float("nan"),
        ("labels", "short"): labels[:9],
        ("labels", "float"): labels.double(),
        ("labels", "ten"): torch.full((10,), 10),
        ("labels", "negative"): torch.full((10,), -1),
    }
    arguments = {"images": images, "labels": labels}
    for name, value in change.items():
        arguments[name] = variants.get((name, value), value)
    with pytest.raises(error, match=message):
        accuracy(classifier, Noise(AU=0.1), **arguments)


def test_accuracy_of_a_torch_model_equals_its_dense_network(classifier, test_set, seed):
    """The same classifier as a torch model (noise at its activation modules) and as a dense
    network: the noise-free accuracies are equal, and the simulated accuracies agree within the
    standard error of their difference (independent seeds)."""
    images, labels = test_set
    noise = Noise(AU=0.1, MC=0.05)
    dense = accuracy(classifier, noise, images, labels, repeats=64, seed=seed)
    model = accuracy(classifier.to_torch(), noise, images, labels, repeats=64, seed=seed + 1)
    assert model.noise_free == dense.noise_free
    assert dense.accuracy < dense.noise_free - 0.01  # the noise matters here
    assert_within(model.accuracy, dense.accuracy, math.hypot(model.stderr, dense.stderr))


def test_accuracy_of_a_torch_model_bad_input(test_set):
    images, labels = test_set
    with pytest.raises(TypeError, match="network must be a Network or a torch.nn.Module classifier"):
        accuracy("net", Noise(), images, labels)
    model = nn.Sequential(nn.Linear(784, 10), nn.ReLU())
    with pytest.raises(ValueError, match="nodes applies to a dense Network's moments predictor"):
        accuracy(model, Noise(), images, labels, method="predicted", nodes=8)
    with pytest.raises(ValueError, match=r"must output \(B, K\) class scores; got output shape"):
        accuracy(nn.Sequential(nn.Unflatten(1, (28, 28)), nn.ReLU()), Noise(), images, labels)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\)"):
        accuracy(nn.Sequential(nn.Linear(784, 3), nn.ReLU()), Noise(), images, labels)
    with pytest.raises(ValueError, match="sites apply to a torch model"):
        accuracy(Network.random([784, 10], "linear"), Noise(), images, labels, sites="x")


BAD_CURVE_ARGUMENTS = [
    ({"kinds": ["AU", "XX"]}, ValueError, r"kinds\[1\] must be one of 'AU', 'AC', 'MU', 'MC'; got 'XX'"),
    ({"kinds": []}, ValueError, r"kinds must hold one or more of 'AU', 'AC', 'MU', 'MC'; got none"),
    ({"kinds": ["AU", "AU"]}, ValueError, r"kinds must not repeat an entry; got \['AU', 'AU'\]"),
    ({"intensities": [0, -1.0]}, ValueError, r"intensities\[1\] must be a finite variance >= 0; got -1"),
    ({"intensities": []}, ValueError, r"intensities must hold at least one variance >= 0; got none"),
    ({"intensities": 0.1}, TypeError, r"intensities must be a list; got float 0.1"),
    (
        {"methods": ["simulated"]},
        ValueError,
        r"methods\[0\] must be one of 'predicted', 'first-order', 'montecarlo'",
    ),
    ({"layers": [3]}, ValueError, r"layers\[0\] must be a layer number in 1..2 .*got 3"),
    ({"layers": []}, ValueError, r"layers must name at least one layer, or be None for all; got none"),
]


@pytest.mark.parametrize(("change", "error", "message"), BAD_CURVE_ARGUMENTS)
def test_accuracy_curve_rejects_bad_arguments(classifier, test_set, change, error, message):
    arguments = {"kinds": ["AU"], "intensities": [0.1], **change}
    with pytest.raises(error, match=message):
        accuracy_curve(classifier, images=test_set[0][:10], labels=test_set[1][:10], **arguments)


def test_plot_rejects_a_frame_without_the_curve_columns():
    import pandas as pd

    frame = pd.DataFrame(columns=["kind", "intensity", "method", "accuracy", "noise_free"])
    with pytest.raises(ValueError, match=r"frame must have the columns of accuracy_curve .*stderr"):
        plot_accuracy_curve(frame)


GOOD_RESULT = {
    "accuracy": 0.5,
    "stderr": 0.01,
    "noise_free": 0.9,
    "method": "montecarlo",
    "repeats": 10,
    "points": None,
    "per_image": torch.full((4,), 0.5),
    "images": 4,
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"accuracy": 1.5}, r"Accuracy.accuracy must be a fraction in \[0, 1\]; got 1.5"),
        ({"noise_free": -0.5}, r"Accuracy.noise_free must be a fraction in \[0, 1\]; got -0.5"),
        ({"accuracy": math.nan}, r"Accuracy.accuracy must be a fraction in \[0, 1\]; got nan"),
        ({"stderr": -0.1}, r"Accuracy.stderr must be a finite number >= 0; got -0.1"),
        ({"method": "guess"}, r"Accuracy.method must be one of 'montecarlo', 'predicted'; got 'guess'"),
        ({"points": 64}, r"Accuracy.points must be None for method='montecarlo'; got 64"),
        ({"repeats": 0}, r"Accuracy.repeats must be an integer >= 1; got 0"),
        ({"per_image": torch.zeros(3)}, r"Accuracy.per_image must be a tensor of shape \(4,\)"),
    ],
)
def test_result_is_validated_on_construction(change, message):
    assert Accuracy(**GOOD_RESULT).as_dict()["accuracy"] == 0.5
    with pytest.raises(ValueError, match=message):
        Accuracy(**{**GOOD_RESULT, **change})


def test_long_work_reports_its_progress():
    """``accuracy`` reports the images done after each block, ending at all of them, for both
    methods; ``accuracy_curve`` reports each method's points, ending at kinds x intensities."""
    net = Network.random([6, 5, 3], ["sigmoid", "linear"], seed=2)
    images = torch.rand(70, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    labels = [0, 1, 2] * 23 + [0]
    for method in ("montecarlo", "predicted"):
        seen: list[tuple[int, int]] = []
        accuracy(net, Noise(AU=0.1), images, labels, method=method, repeats=4,
                 progress=lambda done, total, seen=seen: seen.append((done, total)))  # fmt: skip
        assert seen and seen[-1] == (70, 70), method
        assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    steps: list[tuple[str, int, int]] = []
    accuracy_curve(net, ["AU", "MC"], [0.01, 0.1, 1.0], images, labels, repeats=4,
                   progress=lambda *step: steps.append(step))  # fmt: skip
    for method in ("predicted", "montecarlo"):
        assert [step[1:] for step in steps if step[0] == method] == [(k, 6) for k in range(1, 7)]
