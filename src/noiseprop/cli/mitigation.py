"""``noiseprop mitigate``: ghost neurons and pooling, with the network before and after under noise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from noiseprop.cli._app import app
from noiseprop.cli._options import (
    SNR_DEFINITION,
    ImagesOption,
    InjectionOption,
    JsonOption,
    LayersOption,
    NoiseOption,
    ProgressOption,
    SeedOption,
    check_output_file,
    checked_repeats,
    fail,
    reported_as,
)
from noiseprop.cli._output import describe_noise, number, print_json, print_notes
from noiseprop.cli._progress import progress_rows
from noiseprop.cli._setup import parse_layers, parse_noise, read_mnist

if TYPE_CHECKING:
    from noiseprop.mitigation import Assessment
    from noiseprop.network import Network

DEFAULT_NETWORK = "default"

NetworkArgument = Annotated[
    str,
    typer.Argument(
        help="Classifier file written by noiseprop train or Network.save, or 'default' for the "
        "784-100-100-10 sigmoid network shipped with noiseprop.",
        show_default=False,
    ),
]
OutputOption = Annotated[
    Path,
    typer.Option(help="Where to write the mitigated network (safetensors)."),
]
PoolOption = Annotated[
    int,
    typer.Option(
        "--pool",
        help="Pooling factor P: every neuron of the mitigated hidden layers becomes P copies whose "
        "outgoing weights are divided by P (uncorrelated noise reaching the next layer falls by P). "
        "1 = no pooling.",
    ),
]
GhostOption = Annotated[
    bool,
    typer.Option(
        "--ghost/--no-ghost",
        help="Add one ghost neuron (no input) to each mitigated hidden layer: it cancels the layer's "
        "additive correlated noise in the next layer (not multiplicative correlated noise).",
    ),
]
GhostBiasOption = Annotated[
    float | None,
    typer.Option(
        help="Bias of the ghost neurons (their noise-free output is f(bias)).",
        show_default="small output: 1e-4 for sigmoid, 0 for tanh, relu, linear",
    ),
]
MitigateLayersOption = Annotated[
    str,
    typer.Option(
        "--mitigate-layers",
        help="Hidden layers to transform: 'hidden' (all of them) or 1-based numbers and ranges such "
        "as '1-2'. The output layer is never transformed.",
    ),
]
RepeatsOption = Annotated[
    int,
    typer.Option(
        help="Noise draws per image of the simulations (per-layer SNR and accuracy).",
        callback=checked_repeats,
    ),
]


MITIGATE_HELP = (
    "Mitigate noise with ghost neurons and/or pooling; save the network; compare before and after."
    "\n\n"
    "Ghost neurons are added first, then every neuron (ghosts included) is pooled, so that pooling "
    "also divides the ghosts' own noise by P (docs/THEORY.md section 7). The tables show the per-layer "
    "SNR (covariance method and Monte Carlo) and the accuracy (predicted beyond first order, as "
    "noiseprop accuracy does, and Monte Carlo) of the network before and after, under the same "
    "noise."
    "\n\n"
    "The third mitigation, noise-aware training, is 'noiseprop train --train-noise AU=...'."
)


@app.command(help=MITIGATE_HELP)
def mitigate(
    network: NetworkArgument,
    output: OutputOption,
    pool_factor: PoolOption = 1,
    ghost: GhostOption = False,
    ghost_bias: GhostBiasOption = None,
    mitigate_layers: MitigateLayersOption = "hidden",
    noise: NoiseOption = "AU=1e-2,AC=1e-2",
    injection: InjectionOption = None,
    layers: LayersOption = "all",
    images: ImagesOption = "mnist:1000",
    repeats: RepeatsOption = 100,
    seed: SeedOption = 0,
    progress: ProgressOption = True,
    as_json: JsonOption = False,
) -> None:
    """Transform (add_ghosts, then pool), save, and assess before and after (MITIGATE_HELP)."""
    parsed = parse_noise(noise, injection)
    if pool_factor < 1:
        fail("--pool", f"expected an integer >= 1 (1 = no pooling); got {pool_factor}.")
    if pool_factor == 1 and not ghost:
        fail("--pool/--ghost", "nothing to do: give --pool P with P >= 2, --ghost, or both.")
    if ghost_bias is not None and not ghost:
        fail("--ghost-bias", "applies to ghost neurons only; give --ghost too.")
    if ghost_bias is not None and not math.isfinite(ghost_bias):
        fail("--ghost-bias", f"expected a finite number; got {ghost_bias}.")
    check_output_file("--output", output)
    if not images.strip().lower().startswith(("mnist:", "mnist-train:")):
        fail("--images", f"expected 'mnist:N' (the first N test images); got {images!r}.")

    original = _load(network)
    with reported_as("--layers"):
        chosen = parse_layers(layers, original.depth)
    spec = parsed if chosen is None else parsed.on_layers(chosen)
    with reported_as("--mitigate-layers"):
        hidden = parse_layers(mitigate_layers, original.depth)
        mitigated = _mitigated(original, pool_factor, ghost, ghost_bias, hidden)
    with reported_as("--images"):
        pixels, labels = read_mnist(images)
    if pixels.shape[1] != original.input_size:
        fail(
            "--images",
            f"MNIST images have {pixels.shape[1]} pixels but the network takes "
            f"{original.input_size} inputs; expected an MNIST classifier.",
        )
    with reported_as("--output"):
        mitigated.save(output)

    from noiseprop.mitigation import assess
    from noiseprop.noise import per_layer

    with reported_as("NETWORK"), progress_rows(progress and not as_json, "") as update:

        def assessed(network: Network, which: str) -> Assessment:
            def stage(name: str, done: int, total: int) -> None:
                update(f"{which}: {name}", done, total)

            return assess(network, spec, pixels, labels, repeats=repeats, seed=seed, progress=stage)

        before, after = assessed(original, "before"), assessed(mitigated, "after")
    steps = mitigated.metadata["mitigation"][len(original.metadata.get("mitigation", [])) :]
    payload = _payload(original, mitigated, before, after)
    payload.update(
        output=str(output),
        mitigation=steps,
        noise=[str(item) for item in per_layer(spec, original.depth)],
        images=len(labels),
        repeats=repeats,
        seed=seed,
    )
    if as_json:
        print_json(payload)
    else:
        _print_tables(payload, per_layer(spec, original.depth))


# ------------------------------------------------------------------------------------ helpers
def _load(text: str) -> Network:
    if text.strip().lower() == DEFAULT_NETWORK:
        from noiseprop.training import default_network

        return default_network()
    from noiseprop.network import Network

    with reported_as("NETWORK"):
        return Network.load(Path(text))


def _mitigated(
    network: Network, factor: int, ghost: bool, bias: float | None, hidden: tuple[int, ...] | None
) -> Network:
    from noiseprop.mitigation import add_ghosts, pool

    if ghost:
        network = add_ghosts(network, layers=hidden, bias="auto" if bias is None else bias)
    if factor > 1:
        network = pool(network, factor, layers=hidden)
    return network


def _payload(
    original: Network, mitigated: Network, before: Assessment, after: Assessment
) -> dict[str, Any]:
    rows = []
    for first, second in zip(
        before.summary().to_dict(orient="records"), after.summary().to_dict(orient="records")
    ):
        layer = first.pop("layer")
        second.pop("layer")
        rows.append({"layer": layer, "before": first, "after": second})
    gain = {}  # by method, named as --method names them elsewhere (accuracy, accuracy-curve)
    for method, field in (("predicted", "predicted"), ("montecarlo", "simulated")):
        ratio = getattr(after, field)[-1].layer_snr / getattr(before, field)[-1].layer_snr
        gain[method] = {"ratio": ratio, "db": 10 * math.log10(ratio) if ratio > 0 else -math.inf}

    def _accuracy(assessment: Assessment) -> dict[str, Any]:
        return {
            "predicted": _fraction(assessment.predicted_accuracy),
            "montecarlo": _fraction(assessment.simulated_accuracy),
            "noise_free": assessment.simulated_accuracy.noise_free,
        }

    return {
        "network": repr(original),
        "mitigated": repr(mitigated),
        "snr_definition": SNR_DEFINITION,
        "layers": rows,
        "output_snr_gain": gain,
        "accuracy": {"before": _accuracy(before), "after": _accuracy(after)},
    }


def _fraction(result: Any) -> dict[str, float]:
    return {"accuracy": result.accuracy, "stderr": result.stderr}


def _db(value: float) -> str:
    return number(value, ".2f")


def _print_tables(payload: dict[str, Any], noises: tuple[Any, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Per-layer SNR (dB) before and after mitigation")
    for column in ("layer", "network", "neurons", "predicted", "simulated", "gain pred.", "gain sim."):
        table.add_column(column, justify="right")
    for row in payload["layers"]:
        first, second = row["before"], row["after"]
        table.add_row(
            str(row["layer"]), "before", str(first["neurons"]),
            _db(first["predicted_snr_db"]), _db(first["simulated_snr_db"]), "", "",
        )  # fmt: skip
        table.add_row(
            "", "after", str(second["neurons"]),
            _db(second["predicted_snr_db"]), _db(second["simulated_snr_db"]),
            _db(second["predicted_snr_db"] - first["predicted_snr_db"]),
            _db(second["simulated_snr_db"] - first["simulated_snr_db"]),
            end_section=True,
        )  # fmt: skip
    console.print(table)

    scores = payload["accuracy"]
    table = Table(title=f"Accuracy on {payload['images']} MNIST test images")
    for column in ("method", "before", "after", "change", "noise-free"):
        table.add_column(column, justify="right")
    for method in ("predicted", "montecarlo"):
        first, second = scores["before"][method], scores["after"][method]
        table.add_row(
            method,
            f"{first['accuracy']:.2%} ± {first['stderr']:.2%}",
            f"{second['accuracy']:.2%} ± {second['stderr']:.2%}",
            f"{second['accuracy'] - first['accuracy']:+.2%}",
            f"{scores['before']['noise_free']:.2%}",
        )
    console.print(table)
    gain = payload["output_snr_gain"]
    print_notes(
        console,
        [
            f"network: {payload['network']} -> {payload['mitigated']}, saved to {payload['output']}",
            f"mitigation: {_describe_steps(payload['mitigation'])}",
            f"noise (variances): {describe_noise(noises)}",
            f"output SNR gain: {gain['predicted']['ratio']:.3g}x predicted, "
            f"{gain['montecarlo']['ratio']:.3g}x simulated (montecarlo)",
            f"{payload['repeats']} noise draws per image (seed {payload['seed']}); ± one standard "
            "error given the images",
            SNR_DEFINITION,
        ],
    )


def _describe_steps(steps: list[dict[str, Any]]) -> str:
    """``'ghosts on layers 1, 2 (outputs 0.0001, 0.0001), then pool x4 on layers 1, 2'``."""
    parts = []
    for step in steps:
        where = ", ".join(str(layer) for layer in step["layers"])
        if step["transform"] == "ghosts":
            outputs = ", ".join(f"{value:.3g}" for value in step["output"])
            parts.append(f"ghosts on layers {where} (noise-free outputs {outputs})")
        else:
            parts.append(f"pool x{step['factor']} on layers {where}")
    return ", then ".join(parts)
