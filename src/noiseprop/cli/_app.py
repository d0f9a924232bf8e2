"""The ``noiseprop`` Typer application and its root options."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperCommand


class _Command(TyperCommand):
    """A command whose help shows no type after a flag (``--json``, not ``--json <bool>``) and
    shows a described default as ``[default: 100]``, not ``[default: (100)]``."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:  # options (arguments have neither attribute)
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            if isinstance(getattr(param, "show_default", None), str):
                # escaped: the help is rich markup, where [default: ...] would be a tag
                param.help = f"{param.help or ''} \\[default: {param.show_default}]".strip()
                param.show_default = False
        return params


class _App(typer.Typer):
    """The application: every command is a :class:`_Command`."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _App(
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
