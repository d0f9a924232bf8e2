"""Monte Carlo of any ``torch.nn.Module`` with noise sites: every site measured, streamed.

The model runs in eval mode (dropout off, batch normalisation on its running statistics, so every
presentation is computed on its own) with its noise attached by :func:`noiseprop.sites.noisy`
(``in_eval=True``), the same mechanism as noise-aware training. A chunk of ``count`` repeats of a batch
of ``B`` inputs is one forward pass of ``count x B`` presentations (repeat-major); a recording forward
hook on every site, registered after the noise, reduces that site's noisy output at once, so the
memory is bounded by the chunk and the model's own activations, whatever the number of repeats.

What is measured: the output of every site module (after its noise for injection "after"; computed
from its noisy input for injection "before"), at every call of it in the forward pass, in the order
the pass reaches them, and the model's output when that is not a site's output. A neuron is one
element of a site's output for one presentation; statistics are per neuron and input, with the same
float64 sums and batch-means standard errors as :mod:`noiseprop.montecarlo`.

Reproducibility: the numbers depend on ``seed``, ``repeats``, ``groups``, ``chunk``, ``dtype`` and the
device type (and on the model), on nothing else: the default chunk is a function of the shapes only.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from noiseprop._inputs import as_device, as_dtype
from noiseprop._streaming import Accumulator, Workspace, chunk_repeats, chunks
from noiseprop._validation import MAX_SEED
from noiseprop.noise import Noise, check_representable
from noiseprop.results import NoiseStatistics
from noiseprop.sites import SiteSelector, add_noise, find_sites, noisy, site_noises

__all__ = [
    "ModelNoise",
    "as_model_inputs",
    "entries",
    "evaluating",
    "model_outputs",
    "model_setup",
    "noise_free_calls",
    "outputs_from_cut",
    "runnable",
    "sample_model",
    "simulate_model",
]


def as_model_inputs(inputs: Any, *, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``inputs`` as a tensor whose first dimension is the batch (every other dimension is the
    model's business).

    Raises:
        TypeError: if ``inputs`` is not an array of numbers.
        ValueError: for a scalar, an empty batch or non-finite values.
    """
    try:
        tensor = torch.as_tensor(inputs).detach()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"inputs must be an array or tensor of numbers, batch first; got {type(inputs).__name__}."
        ) from error
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"inputs must hold real numbers; got dtype {tensor.dtype}.")
    if tensor.ndim == 0 or tensor.shape[0] == 0:
        raise ValueError(
            "inputs of a model must be a batch, shape (batch, ...) with batch >= 1; got shape "
            f"{tuple(tensor.shape)}."
        )
    tensor = tensor.to(device=device, dtype=dtype)
    if not torch.isfinite(tensor).all():
        raise ValueError("inputs must be finite; got NaN or infinite values.")
    return tensor.contiguous()


@dataclass
class ModelNoise:
    """A model prepared for noisy passes: in eval mode, in the run dtype and device, with the noise
    attached (seeded), and the noise-free pass's site outputs, which fix the measured entries.

    Attributes:
        model: the model that runs (the user's, or a copy in another dtype or on another device).
        names: the measured entries: site names (``name#k`` for the k-th call of a site called
            several times), then ``"output"`` when the model's output is not a site's output.
        noises: the noise of every entry (``Noise()`` for ``"output"``).
        references: every entry's noise-free output, ``(batch, *shape)``, in the run dtype.
        output_entry: whether the last entry is the model's output.
    """

    model: nn.Module
    names: tuple[str, ...]
    noises: tuple[Noise, ...]
    references: list[Tensor]
    output_entry: bool
    names_of_sites: tuple[str, ...] = ()
    _calls: list[tuple[int, int]] = field(default_factory=list)  # (site, call) of every entry
    _modules: list[nn.Module] = field(default_factory=list)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(reference.shape[1:]) for reference in self.references]

    @contextlib.contextmanager
    def recording(self, record: Callable[[int, Tensor], None]) -> Iterator[None]:
        """Call ``record(entry, output)`` for every measured site output of the passes run inside."""
        entry_of = {call: index for index, call in enumerate(self._calls)}
        counts = [0] * len(self._modules)
        handles = []

        def make(site: int) -> Callable[..., None]:
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                counts[site] += 1
                entry = entry_of.get((site, counts[site]))
                if entry is None:
                    raise RuntimeError(
                        f"site {self.names_of_sites[site]!r} was called {counts[site]} times in a "
                        "noisy pass, more than in the noise-free pass; a model whose forward pass "
                        "changes with its input values cannot be measured site by site."
                    )
                record(entry, output)

            return hook

        for site, module in enumerate(self._modules):
            handles.append(module.register_forward_hook(make(site)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            counts[:] = [0] * len(self._modules)

    def run(self, inputs: Tensor, record: Callable[[int, Tensor], None]) -> Tensor:
        """One noisy pass over ``inputs`` (repeats folded into the batch), recording every entry."""
        with self.recording(record):
            output = self.model(inputs)
        output = _check_output(output)
        if self.output_entry:
            record(len(self.names) - 1, output)
        return output


def _check_output(output: Any) -> Tensor:
    if not isinstance(output, Tensor) or not output.is_floating_point():
        raise TypeError(
            "the model's output must be a floating-point tensor (batch first); got "
            f"{getattr(output, 'dtype', type(output).__name__)}."
        )
    if output.ndim == 0:
        raise TypeError("the model's output must have a batch dimension; got a scalar.")
    return output


@contextlib.contextmanager
def model_setup(
    model: nn.Module,
    noise: Noise | Sequence[Noise] | Mapping[str, Noise],
    inputs: Tensor,
    *,
    sites: SiteSelector,
    seed: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Iterator[ModelNoise]:
    """Prepare ``model`` for noisy passes (see :class:`ModelNoise`); on exit the user's model is as
    it was: hooks removed, training flags restored."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an integer; got {type(seed).__name__} {seed!r}.")
    if not -MAX_SEED <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer of at most 2^63 - 1 in size; got {seed!r}.")
    model = runnable(model, dtype=dtype, device=device)
    found = find_sites(model, sites)
    site_names = tuple(name for name, _ in found)
    noises = site_noises(noise, site_names)
    check_representable(noises, dtype)
    with evaluating(model):
        calls, output = noise_free_calls(model, found, inputs, site_names)
        names, entry_noises, references, output_entry = entries(calls, output, site_names, noises)
        generator = torch.Generator(device=device).manual_seed(seed)
        with noisy(model, noise=noises, sites=[*_exact(site_names)], in_eval=True, generator=generator):
            yield ModelNoise(
                model=model,
                names=tuple(names),
                noises=tuple(entry_noises),
                references=references,
                output_entry=output_entry,
                _calls=[(index, call) for index, call, _ in calls],
                _modules=[module for _, module in found],
                names_of_sites=site_names,
            )


def noise_free_calls(
    model: nn.Module,
    found: Sequence[tuple[str, nn.Module]],
    inputs: Tensor,
    site_names: Sequence[str],
    site_inputs: list[Tensor] | None = None,
) -> tuple[list[tuple[int, int, Tensor]], Tensor]:
    """The noise-free pass (``model`` in eval mode): ``(site, call, output)`` for every site call,
    in the order the pass reaches them, and the model's output; with ``site_inputs``, every call's
    first positional input is appended there too. Checked: batch-first floating-point tensors."""
    calls: list[tuple[int, int, Tensor]] = []
    counts = [0] * len(found)
    handles = []
    for index, (_, module) in enumerate(found):

        def hook(module: nn.Module, args: Any, output: Any, index: int = index) -> None:
            counts[index] += 1
            calls.append((index, counts[index], output))
            if site_inputs is not None:
                site_inputs.append(args[0] if args else None)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            output = _check_output(model(inputs))
    finally:
        for handle in handles:
            handle.remove()
    if not calls:
        raise ValueError(
            f"sites {', '.join(site_names)} are never called in the model's forward pass; "
            "nothing to measure."
        )
    for index, _, value in calls:
        if not isinstance(value, Tensor) or not value.is_floating_point() or value.ndim == 0:
            raise TypeError(
                f"noise site {site_names[index]!r} ({type(found[index][1]).__name__}) must output "
                "a floating-point tensor with a batch dimension; got "
                f"{getattr(value, 'dtype', type(value).__name__)}."
            )
        if value.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"noise site {site_names[index]!r} outputs a batch of {value.shape[0]} for "
                f"{inputs.shape[0]} inputs; a site's output must be batch first."
            )
    return calls, output


def entries(
    calls: list[tuple[int, int, Tensor]],
    output: Tensor,
    site_names: Sequence[str],
    noises: Sequence[Noise],
) -> tuple[list[str], list[Noise], list[Tensor], bool]:
    """The measured entries of a noise-free pass (:func:`noise_free_calls`): their names (``name#k``
    for the k-th call of a site called several times, ``"output"`` for the model's output when it is
    not a site's), noises, noise-free values, and whether the output is an entry of its own."""
    counts = [sum(1 for index, _, _ in calls if index == site) for site in range(len(site_names))]
    names = [
        site_names[index] if counts[index] == 1 else f"{site_names[index]}#{call}"
        for index, call, _ in calls
    ]
    entry_noises = [noises[index] for index, _, _ in calls]
    references = [value.detach() for _, _, value in calls]
    output_entry = not any(value is output for _, _, value in calls)
    if output_entry:
        if output.shape[0] != calls[0][2].shape[0]:
            raise ValueError(
                f"the model outputs a batch of {output.shape[0]} for {calls[0][2].shape[0]} "
                "inputs; its output must be batch first."
            )
        names.append("output")
        entry_noises.append(Noise())
        references.append(output.detach())
    return names, entry_noises, references, output_entry


def runnable(model: nn.Module, *, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """``model`` itself when its parameters and buffers are on ``device`` in ``dtype``, else a deep
    copy moved there (the user's model is never changed)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    tensors = [*model.parameters(), *model.buffers()]
    floating = [tensor for tensor in tensors if tensor.is_floating_point()]
    if any(t.device != device for t in tensors) or any(t.dtype != dtype for t in floating):
        return copy.deepcopy(model).to(device=device, dtype=dtype)
    return model


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; every submodule's training flag restored after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.train(training)


def model_outputs(
    model: nn.Module, inputs: Tensor, *, dtype: torch.dtype, device: torch.device, batch_size: int
) -> Tensor:
    """The noise-free outputs of ``model`` (eval mode) for a batch of inputs, in pieces of
    ``batch_size``."""
    model = runnable(model, dtype=dtype, device=device)
    parts = []
    with torch.no_grad(), evaluating(model):
        for start in range(0, inputs.shape[0], batch_size):
            output = _check_output(model(inputs[start : start + batch_size].to(device, dtype)))
            parts.append(output)
    return torch.cat(parts)


def _exact(names: Sequence[str]) -> list[str]:
    """Glob patterns that match exactly these names (brackets, ``*`` and ``?`` escaped)."""
    escape = {"[": "[[]", "*": "[*]", "?": "[?]"}
    return ["".join(escape.get(char, char) for char in name) for name in names]


def simulate_model(
    model: nn.Module,
    noise: Noise | Sequence[Noise] | Mapping[str, Noise],
    inputs: Any,
    *,
    sites: SiteSelector = None,
    repeats: int,
    seed: int,
    dtype: torch.dtype | str,
    device: str | torch.device,
    covariance: bool,
    chunk: int | None,
    groups: int,
    progress: Callable[[int, int], None] | None,
) -> NoiseStatistics:
    """Monte Carlo of ``model`` with noise at its sites (the arguments of
    :func:`noiseprop.simulate`, which calls this for an ``nn.Module``)."""
    dtype, device = as_dtype(dtype), as_device(device)
    inputs = as_model_inputs(inputs, dtype=dtype, device=device)
    batch = int(inputs.shape[0])
    with (
        torch.no_grad(),
        model_setup(model, noise, inputs, sites=sites, seed=seed, dtype=dtype, device=device) as run,
    ):
        widths = [int(reference[0].numel()) for reference in run.references]
        chunk = chunk_repeats(batch * max(widths), dtype) if chunk is None else chunk
        groups = min(groups, repeats // 2)
        stats = [Accumulator(batch, width, covariance, device) for width in widths]
        flat_references = [ref.reshape(batch, -1) for ref in run.references]
        work = Workspace(min(chunk, repeats) * batch * max(widths), dtype, device)
        whole = 0

        def record(entry: int, output: Tensor) -> None:
            count = output.shape[0] // batch
            signal = output.reshape(count, batch, -1)
            stats[entry].add(signal, flat_references[entry], work, whole)

        done = 0
        for count, whole_groups, closes in chunks(repeats, groups, chunk):
            whole = whole_groups
            run.run(_repeat(inputs, count), record)
            if closes:
                for accumulator in stats:
                    accumulator.end_group()
            done += count
            if progress is not None:
                progress(done, repeats)
        layers = tuple(
            _with_shape(accumulator.result(reference.reshape(batch, -1)), shape)
            for accumulator, reference, shape in zip(stats, run.references, run.shapes)
        )
        return NoiseStatistics(
            layers=layers, method="montecarlo", noise=run.noises, repeats=repeats, names=run.names
        )


def sample_model(
    model: nn.Module,
    noise: Noise | Sequence[Noise] | Mapping[str, Noise],
    inputs: Any,
    *,
    sites: SiteSelector = None,
    repeats: int,
    seed: int,
    dtype: torch.dtype | str,
    device: str | torch.device,
) -> Tensor:
    """Noisy outputs of ``model``: a ``(repeats, batch, *output_shape)`` tensor (one forward pass
    of ``repeats x batch`` presentations, repeat-major)."""
    dtype, device = as_dtype(dtype), as_device(device)
    inputs = as_model_inputs(inputs, dtype=dtype, device=device)
    with (
        torch.no_grad(),
        model_setup(model, noise, inputs, sites=sites, seed=seed, dtype=dtype, device=device) as run,
    ):
        output = _check_output(run.model(_repeat(inputs, repeats)))
    return output.reshape(repeats, inputs.shape[0], *output.shape[1:])


def outputs_from_cut(
    model: nn.Module,
    noise: Noise | Sequence[Noise] | Mapping[str, Noise],
    inputs: Tensor,
    values: Tensor,
    *,
    calls: Sequence[tuple[int, int]],
    position: int,
    sites: SiteSelector,
    generator: torch.Generator,
) -> Tensor:
    """The outputs ``(b, P, *output_shape)`` of ``model`` (ready to run: eval mode, its dtype and
    device) when the input of the site call ``calls[position]`` is replaced by ``values``
    ``(b, P, *shape)``: ``P`` presentations of each of the ``b`` inputs, each with its own noise,
    drawn from ``generator``, at that call and at every later one (``calls``: ``(site, call)`` in
    the noise-free pass's order, as :class:`~noiseprop.model_analytic.GaussianCut` holds them). The
    calls before it run noise-free on the ``b`` inputs; their results are not used.

    Raises:
        ValueError: where the rest of the model uses a value computed before the cut (a skip
            connection around it): it then no longer matches the ``b x P`` presentations.
    """
    found = find_sites(model, sites)
    noises = site_noises(noise, tuple(name for name, _ in found))
    order = {call: index for index, call in enumerate(calls)}
    cut = calls[position]
    if values.shape[0] == 1:  # two copies: a value from before the cut must not broadcast
        doubled = outputs_from_cut(
            model, noise, inputs.expand(2, *inputs.shape[1:]), values.expand(2, *values.shape[1:]),
            calls=calls, position=position, sites=sites, generator=generator,
        )  # fmt: skip
        return doubled[:1]
    batch, count = values.shape[:2]
    counts = [0] * len(found)

    def later(site: int, call: int) -> bool:
        index = order.get((site, call))
        if index is None:
            raise RuntimeError(
                f"site {found[site][0]!r} was called {call} times, more than in the noise-free "
                "pass; a model whose forward pass changes with its input values cannot be cut."
            )
        return index >= position

    def before(module: nn.Module, args: tuple[Any, ...], site: int) -> Any:
        call = counts[site] + 1
        if not later(site, call):
            return None
        first = values.reshape(batch * count, *values.shape[2:]) if (site, call) == cut else args[0]
        if noises[site].injection == "before":
            first = add_noise(first, noises[site], generator)
        return (first, *args[1:])

    def after(module: nn.Module, args: Any, output: Tensor, site: int) -> Any:
        counts[site] += 1
        if not later(site, counts[site]) or noises[site].injection == "before":
            return None
        return add_noise(output, noises[site], generator)

    handles = []
    for site, (_, module) in enumerate(found):
        handles.append(module.register_forward_pre_hook(partial(before, site=site)))
        handles.append(module.register_forward_hook(partial(after, site=site)))
    try:
        output = _check_output(model(inputs))
    except RuntimeError as error:
        raise ValueError(
            f"the model after site call {found[cut[0]][0]!r} (call {cut[1]}) could not run on "
            f"{count} presentations of each input: it seems to use a value computed before that "
            "call (a skip connection around it), so its input alone does not determine the "
            f"output. Use predictor='covariance' or a simulation. ({error})"
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    if output.shape[0] != batch * count:
        raise ValueError(
            f"the model after site call {found[cut[0]][0]!r} returned a batch of "
            f"{output.shape[0]} for {batch} inputs x {count} presentations; it must keep the "
            "batch as it comes (use predictor='covariance' or a simulation)."
        )
    return output.reshape(batch, count, *output.shape[1:])


def _repeat(inputs: Tensor, count: int) -> Tensor:
    """``count`` copies of the batch, repeat-major: ``(count * batch, ...)``."""
    if count == 1:
        return inputs
    return inputs.unsqueeze(0).expand(count, *inputs.shape).reshape(-1, *inputs.shape[1:])


def _with_shape(stats: Any, shape: tuple[int, ...]) -> Any:
    from dataclasses import replace

    return replace(stats, shape=shape)
