#!/usr/bin/env bash
# Optional benchmark dependency: IBM aihwkit 1.2.0 in a venv of its own (default /tmp/aihwkit-venv).
#
# The 1.2.0 release is source-only and `pip install aihwkit` fails on a plain machine. It builds with
# OpenBLAS headers, torch installed first and no build isolation (the build imports torch). torchvision,
# one of its dependencies, is pinned to the release made for torch 2.13 so that pip keeps the CPU torch.
# Nothing here touches the project's own .venv.
#
#   bash benchmarks/setup_aihwkit.sh            # then: make bench (finds /tmp/aihwkit-venv by itself)
#   AIHWKIT_VENV=/somewhere bash benchmarks/setup_aihwkit.sh
#   AIHWKIT_PYTHON=/somewhere/bin/python make bench
set -euo pipefail

VENV="${AIHWKIT_VENV:-/tmp/aihwkit-venv}"
PYTHON="${PYTHON:-python3}"
JOBS="${AIHWKIT_JOBS:-2}"   # compile jobs; the build takes most of the time

if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq libopenblas-dev
fi

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
CONSTRAINTS="$VENV/constraints.txt"
printf 'torch==2.13.0\ntorchvision==0.28.0\n' > "$CONSTRAINTS"

$PIP install --quiet --upgrade pip
$PIP install --quiet torch==2.13.0                                  # the CPU build, as in the project
$PIP install --quiet -c "$CONSTRAINTS" torchvision==0.28.0 numpy scipy safetensors  # + noiseprop's needs
$PIP install --quiet -c "$CONSTRAINTS" "scikit-build>=0.11.1" "pybind11>=2.6" "cmake>=3.18" ninja mypy \
    setuptools wheel
# The C++ build: scikit-build drives CMake; OpenBLAS is the BLAS it finds; the build ends by running
# stubgen (from mypy, so the venv's bin/ goes on PATH), without which the last step fails after
# all the compiling.
PATH="$VENV/bin:$PATH" CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" MAKEFLAGS="-j$JOBS" \
    $PIP install -c "$CONSTRAINTS" --no-build-isolation aihwkit==1.2.0
"$VENV/bin/python" - <<'PY'
import aihwkit, torch
from aihwkit.simulator.rpu_base import cuda  # noqa: F401  (imports the compiled extension)
print(f"aihwkit {aihwkit.__version__} with torch {torch.__version__}: ready")
PY
