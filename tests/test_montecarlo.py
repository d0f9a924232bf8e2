"""Monte Carlo engine: reproducibility, streaming statistics, dtypes, progress and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import assert_within

from noiseprop import Network, Noise, simulate
from noiseprop._inputs import all_finite
from noiseprop._streaming import chunks as _chunks
from noiseprop.montecarlo import default_chunk

NET = Network.random([4, 8, 6], ["tanh", "sigmoid"], seed=1)
NOISE = Noise(AU=1e-3, AC=1e-3, MU=1e-3, MC=1e-3)
X = torch.linspace(-1, 1, 12, dtype=torch.float64).reshape(3, 4)


def _same(a, b) -> bool:
    return all(
        torch.equal(p.mean, q.mean) and torch.equal(p.variance, q.variance)
        for p, q in zip(a.layers, b.layers)
    )


def test_same_seed_same_numbers_other_seed_other_numbers():
    first = simulate(NET, NOISE, X, repeats=500, seed=4)
    again = simulate(NET, NOISE, X, repeats=500, seed=4)
    other = simulate(NET, NOISE, X, repeats=500, seed=5)
    assert _same(first, again)
    assert not _same(first, other)


def test_chunking_changes_draws_not_statistics(seed):
    """Different chunk sizes consume the random stream differently; the estimates agree."""
    a = simulate(NET, NOISE, X, repeats=20_000, seed=seed, dtype="float64", chunk=7)
    b = simulate(NET, NOISE, X, repeats=20_000, seed=seed + 1, dtype="float64")
    for p, q in zip(a.layers, b.layers):
        stderr = (p.layer_variance_stderr**2 + q.layer_variance_stderr**2) ** 0.5
        assert_within(p.layer_variance, q.layer_variance, stderr)


def test_float32_and_float64_agree(seed):
    single = simulate(NET, NOISE, X, repeats=20_000, seed=seed, dtype=torch.float32)
    double = simulate(NET, NOISE, X, repeats=20_000, seed=seed + 1, dtype=torch.float64)
    for p, q in zip(single.layers, double.layers):
        assert p.variance.dtype == torch.float64  # statistics are float64 whatever the pass
        stderr = (p.layer_variance_stderr**2 + q.layer_variance_stderr**2) ** 0.5
        assert_within(p.layer_variance, q.layer_variance, stderr)


def test_mean_and_its_standard_error(seed):
    """Additive noise on a linear network does not move the mean: E[y] = s-bar exactly."""
    net = Network.random([3, 5, 4], ["linear", "linear"], seed=2)
    stats = simulate(
        net, Noise(AU=1e-2, AC=1e-2), [0.2, 0.4, 0.6], repeats=5_000, seed=seed, dtype="float64"
    )
    clean = net.forward(torch.tensor([[0.2, 0.4, 0.6]], dtype=torch.float64))
    for layer, (_, signal) in zip(stats.layers, clean):
        z = (layer.mean - signal) / layer.mean_stderr
        assert float(z.abs().max()) < 4.5


def test_variance_standard_error_matches_the_gaussian_formula():
    """For Gaussian outputs the sample variance has stderr sigma^2 sqrt(2/(n-1)); the batch-means
    estimate (32 groups) must agree within its own precision (about 1/sqrt(2*31) = 13 %)."""
    net = Network.symmetric(width=1, depth=1, activation="linear")
    stats = simulate(net, Noise(AU=0.5), 1.0, repeats=64_000, seed=3, dtype="float64")
    expected = 0.5 * (2 / 63_999) ** 0.5
    assert float(stats[0].variance_stderr) == pytest.approx(expected, rel=0.4)
    assert stats[0].layer_variance_stderr == pytest.approx(expected, rel=0.4)


@pytest.mark.parametrize(("repeats", "groups", "chunk"), [(100, 8, 1000), (100, 8, 30), (100, 8, 5)])
def test_batch_means_against_a_plain_computation_on_the_same_draws(repeats, groups, chunk):
    """Additive noise on one linear layer is ``y = s + sqrt(D_AU) xi``, one normal per neuron drawn
    chunk by chunk: the same draws, split into the same ``groups`` by plain NumPy, give the same
    statistics, whether the groups share chunks (1000, 30) or span several (5)."""
    net = Network.random([4, 5], "linear", seed=3)
    noise, seed = Noise(AU=0.01), 7
    stats = simulate(
        net, noise, X, repeats=repeats, seed=seed, groups=groups, chunk=chunk, dtype="float64"
    )
    generator = torch.Generator().manual_seed(seed)
    normals = [
        torch.empty(count, 3, 5, dtype=torch.float64).normal_(generator=generator)
        for count, _, _ in _chunks(repeats, groups, chunk)
    ]
    deviation = (0.01**0.5 * torch.cat(normals)).numpy()
    small, extra = divmod(repeats, groups)
    sizes = [small + 1] * extra + [small] * (groups - extra)
    by_group = np.stack([part.var(0, ddof=1) for part in np.split(deviation, np.cumsum(sizes)[:-1])])
    layer = stats[0]
    np.testing.assert_allclose(layer.variance, deviation.var(0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(layer.mean - net.forward(X)[0][1], deviation.mean(0), atol=1e-12)
    root = groups**0.5
    np.testing.assert_allclose(layer.variance_stderr, by_group.std(0, ddof=1) / root, rtol=1e-9)
    per_input = by_group.mean(-1)
    np.testing.assert_allclose(layer.input_variance_stderr, per_input.std(0, ddof=1) / root, rtol=1e-9)
    assert layer.layer_variance_stderr == pytest.approx(per_input.mean(-1).std(ddof=1) / root, rel=1e-9)


def test_noise_free_layers_have_zero_variance():
    stats = simulate(NET, {2: NOISE}, X, repeats=100, seed=0)
    assert float(stats[0].variance.abs().max()) == 0.0
    assert float(stats[1].variance.min()) > 0.0


def test_progress_reports_every_chunk():
    calls = []
    simulate(
        NET,
        NOISE,
        X,
        repeats=100,
        seed=0,
        chunk=30,
        groups=2,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(30, 100), (50, 100), (80, 100), (100, 100)]


def test_covariance_estimate_is_symmetric_with_variance_on_the_diagonal():
    stats = simulate(NET, NOISE, X, repeats=2_000, seed=0, covariance=True, dtype="float64")
    for layer in stats.layers:
        torch.testing.assert_close(layer.covariance, layer.covariance.transpose(1, 2))
        torch.testing.assert_close(layer.covariance.diagonal(dim1=-2, dim2=-1), layer.variance)


def test_default_chunk_bounds_the_working_set():
    net = Network.symmetric(width=2000, depth=2)
    chunk = default_chunk(net, batch=100, dtype=torch.float32)
    assert chunk * 100 * 2000 * 4 <= 2**25
    assert default_chunk(net, batch=10**6, dtype=torch.float64) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"repeats": 1}, ValueError, r"repeats must be an integer >= 2 and <= 9007199254740992; got 1"),
        ({"repeats": 2.5}, TypeError, r"repeats must be an integer >= 2 and <= \d+; got float 2\.5"),
        ({"groups": 1}, ValueError, r"groups must be an integer >= 2; got 1"),
        ({"chunk": 0}, ValueError, r"chunk must be an integer >= 1; got 0"),
        ({"seed": 1.5}, TypeError, r"seed must be an integer; got float 1\.5"),
        ({"dtype": "float16"}, ValueError, r"dtype must be one of 'float32', 'float64'"),
    ],
)
def test_argument_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        simulate(NET, NOISE, X, **{"repeats": 10, **kwargs})


def test_inputs_are_checked_finite_in_the_run_dtype():
    """The finiteness check runs on the converted inputs: 1e39 is finite in float64 but not in
    float32; values whose sum overflows are still finite (the element-wise fallback)."""
    net = Network.random([3, 2], "tanh", seed=0)
    huge = torch.tensor([[1e39, 0.0, 0.0]], dtype=torch.float64)
    assert simulate(net, Noise(AU=1e-3), huge, repeats=4, dtype="float64")[0].variance.isfinite().all()
    with pytest.raises(ValueError, match=r"inputs must be finite \(in float32\)"):
        simulate(net, Noise(AU=1e-3), huge, repeats=4, dtype="float32")
    big = torch.full((1, 3), 3e38, dtype=torch.float32)
    assert all_finite(big) and not all_finite(torch.tensor([1.0, math.nan]))
    assert not all_finite(torch.tensor([math.inf, -math.inf]))
    simulate(net, Noise(AU=1e-3), big, repeats=4, dtype="float32")


def test_network_must_be_a_network():
    with pytest.raises(TypeError, match="network must be a Network; got str"):
        simulate("net", NOISE, X)  # type: ignore[arg-type]


def test_repeats_that_could_not_finish_are_refused():
    """More than 2^53 repeats cannot be counted exactly in float64 (nor finish): refused at once,
    in Python as on the command line, instead of running until killed."""
    net = Network.symmetric(width=3, depth=2)
    with pytest.raises(ValueError, match=r"repeats must be an integer >= 2 and <= 9007199254740992"):
        simulate(net, Noise(AU=1e-3), 0.5, repeats=10**30)
