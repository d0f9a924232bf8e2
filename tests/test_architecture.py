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
    "browser": 1,
    "network": 2,
    "_from_torch": 2,
    "_inputs": 2,
    "model_files": 2,
    "results": 3,
    "sites": 3,
    "_streaming": 3,
    "_recursion": 3,
    "model_montecarlo": 4,
    "model_analytic": 4,
    "analytic": 4,
    "moments": 4,
    "montecarlo": 4,
    "training": 5,
    "cnn": 5,
    "classification": 5,
    "curves": 6,
    "experiments": 6,
    "figures": 6,
    "interactive": 6,
    "criteria": 7,
    "budget": 6,
    "tolerance": 6,
    "mitigation": 5,
    "study": 7,
    "report": 7,
    "sweeps": 6,
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


def _modules() -> dict[Path, str]:
    """Every module file with its top-level name (a subpackage's files count as the subpackage)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        name = relative.parts[0] if len(relative.parts) > 1 else path.stem
        if name != "__init__":
            names[path] = name.removesuffix(".py")
    return names


def test_every_module_has_a_rank():
    modules = set(_modules().values())
    assert modules <= set(RANKS), f"give these modules a rank: {sorted(modules - set(RANKS))}"


def test_imports_go_one_way():
    for path, name in _modules().items():
        for imported in _imports(path):
            assert RANKS[imported] <= RANKS[name], f"{path.name} ({name}) imports higher {imported}"


def test_importing_the_package_and_the_noise_model_does_not_import_torch():
    code = "import sys, noiseprop; noiseprop.Noise.parse('AU=1'); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
