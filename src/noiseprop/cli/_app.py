"""The ``noiseprop`` Typer application and its root options."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="noiseprop",
    help="Noise propagation in deep analog neural networks: predict it, simulate it, compare the two.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        from noiseprop import __version__

        typer.echo(f"noiseprop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Noise propagation in deep analog neural networks (see docs/THEORY.md of the project).

    predict: analytic prediction; simulate: Monte Carlo; compare: both, layer by layer.
    """
