"""The ``noiseprop`` command line: a thin adapter over the library (STYLE.md habit 13).

``noiseprop predict`` calls :func:`noiseprop.propagate`, ``noiseprop simulate`` calls
:func:`noiseprop.simulate`, ``noiseprop compare`` calls both and
:meth:`noiseprop.NoiseStatistics.compare`. Each command parses its options, builds the network, the
noise specification and the inputs, calls the library and prints a rich table, or JSON with ``--json``.

Heavy imports (torch, numpy, pandas, rich and the noiseprop modules that import torch) happen inside
the command bodies, so ``noiseprop --help`` is instant.

A bad option value prints one line ``Error: --OPTION: what was expected; got ...`` on stderr and exits
with code 2, the exit code of click's own usage errors.
"""

from __future__ import annotations

from noiseprop.cli import (  # noqa: F401  (importing a command module registers its commands)
    design,
    mitigation,
    propagation,
    studying,
    sweeping,
    training,
)
from noiseprop.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``noiseprop`` command."""
    app(prog_name="noiseprop")
