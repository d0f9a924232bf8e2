"""Printing results: rich tables with their notes, and JSON."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import pandas as pd

    from noiseprop.noise import Noise
    from noiseprop.results import NoiseStatistics

from noiseprop.cli._options import SNR_DEFINITION
from noiseprop.cli._setup import Setup


# --------------------------------------------------------------------------------- output
def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unboxed, NaN and infinities as ``None``."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [jsonable(row) for row in frame.to_dict(orient="records")]


def print_json(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(jsonable(payload), indent=2, allow_nan=False))


def number(value: float, spec: str = ".6g") -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def describe_noise(noises: tuple[Noise, ...]) -> str:
    """``'AU=0.001 on every layer'`` or ``'layer 1: none; layers 2-3: AU=0.001'``."""
    if all(noise == noises[0] for noise in noises):
        return f"{noises[0]} on every layer"
    runs: list[list[Any]] = []  # [first, last, noise]
    for number, noise in enumerate(noises, start=1):
        if runs and runs[-1][2] == noise:
            runs[-1][1] = number
        else:
            runs.append([number, number, noise])
    return "; ".join(
        f"layer {first}: {noise}" if first == last else f"layers {first}-{last}: {noise}"
        for first, last, noise in runs
    )


def table_notes(
    setup: Setup, noises: tuple[Noise, ...], names: tuple[str, ...] | None = None
) -> list[str]:
    """The lines printed under a table: network, input, noise and the definitions (for a model,
    ``names`` are the measured entries of the result, its sites and perhaps ``output``)."""
    if setup.is_model:
        from noiseprop.cli._model import describe_site_noise

        shape = "x".join(str(size) for size in setup.inputs.shape)
        return [
            f"model: {setup.description}; input: {setup.input_text} (shape {shape})",
            f"noise (variances): {describe_site_noise(names or (), noises)}",
            "neurons: elements of a site's output per input; variance: average over them and the inputs",
            SNR_DEFINITION,
        ]
    return [
        f"network: {setup.network!r}; input: {setup.input_text}",
        f"noise (variances): {describe_noise(noises)}",
        "variance: average over the layer's neurons and inputs",
        SNR_DEFINITION,
    ]


def print_notes(console: Any, lines: list[str]) -> None:
    for line in lines:
        console.print(line, style="dim", highlight=False, markup=False)


def statistics_table(stats: NoiseStatistics, setup: Setup, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    summary = stats.summary()
    table = Table(title=title)
    columns = ("layer", "site", "neurons", "mean", "variance")
    for name in columns if setup.is_model else (n for n in columns if n != "site"):
        table.add_column(name, justify="right")
    if stats.is_simulation:
        table.add_column("stderr", justify="right")
    table.add_column("SNR", justify="right")
    table.add_column("SNR (dB)", justify="right")
    for row in summary.itertuples(index=False):
        cells = [str(row.layer), *([row.site] if setup.is_model else [])]
        cells += [str(row.neurons), number(row.mean), number(row.variance)]
        if stats.is_simulation:
            cells.append(number(row.variance_stderr, ".2g"))
        cells += [number(row.snr, ".4g"), number(row.snr_db, ".2f")]
        table.add_row(*cells)
    console = Console()
    console.print(table)
    notes = table_notes(setup, stats.noise, stats.site_names)
    if stats.is_simulation:
        notes.insert(3, "stderr: standard error of the simulated variance (batch means)")
    print_notes(console, notes)


def statistics_payload(stats: NoiseStatistics, setup: Setup, per_input: bool) -> dict[str, Any]:
    described: dict[str, Any] = {"network": repr(setup.network)}
    if setup.is_model:
        described = {"model": setup.description, "sites": list(stats.site_names)}
    payload = {
        **described,
        "noise": [str(noise) for noise in stats.noise],
        "method": stats.method,
        "repeats": stats.repeats,
        "layers": records(stats.summary()),
    }
    if per_input:
        payload["per_input"] = records(stats.per_input())
    return payload


PER_INPUT_ROWS = 20
"""Inputs shown in a per-input table (all of them are in the JSON output)."""


def per_input_table(stats: NoiseStatistics) -> None:
    """Variance averaged over each layer's neurons: one row per input, one column per layer."""
    from rich.console import Console
    from rich.table import Table

    frame = stats.per_input()
    wide = frame.pivot(index="input", columns="layer", values="variance")
    table = Table(title="Noise variance per input (average over each layer's neurons)")
    table.add_column("input", justify="right")
    for layer in wide.columns:
        site = stats.site_names[layer - 1]
        table.add_column(f"layer {layer}" if site == str(layer) else site, justify="right")
    for index, row in wide.head(PER_INPUT_ROWS).iterrows():
        table.add_row(str(index), *(number(value, ".4g") for value in row))
    console = Console()
    console.print(table)
    if len(wide) > PER_INPUT_ROWS:
        print_notes(console, [f"first {PER_INPUT_ROWS} of {len(wide)} inputs; --json lists all"])
