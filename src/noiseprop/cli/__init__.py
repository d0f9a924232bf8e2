"""The ``noiseprop`` command line: a thin adapter over the library (STYLE.md habit 13).

One module per group of commands: ``propagation`` (predict, simulate, compare), ``training`` (train,
accuracy, accuracy-curve), ``design``, ``mitigation`` (mitigate), ``sweeping`` (sweep) and
``studying`` (study). Each command parses its options, builds a configuration, calls one library
function and prints a rich table, or JSON with ``--json``.

Heavy imports (torch, numpy, pandas, rich and the noiseprop modules that import torch) happen inside
the command bodies, so ``noiseprop --help`` is instant.

A bad option value prints one line ``Error: --OPTION: what was expected; got ...`` on stderr and exits
with code 2, the exit code of click's own usage errors.
"""

from __future__ import annotations

# Importing a command module registers its commands; the order here is their order in --help.
# isort: off
from noiseprop.cli import propagation  # noqa: F401
from noiseprop.cli import training  # noqa: F401
from noiseprop.cli import design  # noqa: F401
from noiseprop.cli import mitigation  # noqa: F401
from noiseprop.cli import sweeping  # noqa: F401
from noiseprop.cli import studying  # noqa: F401

# isort: on
from noiseprop.cli._app import app

__all__ = ["app", "main"]


PIPED_WIDTH = 200
"""Columns of the tables when the output is not a terminal (a pipe or a file): wide enough that no
number is cut to ``0.002...`` (rich's default there is 80)."""


def main() -> None:
    """Entry point of the ``noiseprop`` command."""
    import os
    import sys

    if not sys.stdout.isatty() and "COLUMNS" not in os.environ:
        os.environ["COLUMNS"] = str(PIPED_WIDTH)
    app(prog_name="noiseprop")
