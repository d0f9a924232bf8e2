"""Architecture rules: imports go one way, and importing the package does not import torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "noiseprop"

# STYLE.md habit 14: validation -> noise/activations/network -> analytic and simulation -> training
# -> sweep/report -> cli. A module may import only modules of its own rank or lower.
RANKS = {
    "_validation": 0,
    "noise": 1,
    "activations": 1,
    "datasets": 1,
    "network": 2,
    "_inputs": 2,
    "results": 3,
    "analytic": 4,
    "montecarlo": 4,
    "cli": 9,
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("noiseprop."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("noiseprop.")}
    return names


def test_every_module_has_a_rank():
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules <= set(RANKS), f"give these modules a rank: {sorted(modules - set(RANKS))}"


def test_imports_go_one_way():
    for path in PACKAGE.glob("*.py"):
        if path.stem == "__init__":
            continue
        for imported in _imports(path):
            assert RANKS[imported] <= RANKS[path.stem], f"{path.stem} imports higher {imported}"


def test_importing_the_package_and_the_noise_model_does_not_import_torch():
    code = "import sys, noiseprop; noiseprop.Noise.parse('AU=1'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
