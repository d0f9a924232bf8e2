"""Side by side with IBM aihwkit on the 784-100-100-10 shape, 10,000 MNIST test images.

aihwkit's output noise (``forward.out_noise``, a standard deviation) is additive, uncorrelated Gaussian
noise on each layer's weighted sum, drawn fresh on every pass: noiseprop's ``Noise(AU=out_noise**2,
injection="before")`` on every layer, once aihwkit's noise management, bound management, weight
scaling, input/output quantisation, tile splitting (``mapping.max_input_size``) and the other
non-idealities are off (:func:`rpu_config`). Both run float32 on the CPU.

Each case runs ``PASSES`` noisy passes over the 10,000 images and keeps, for every layer, the sums of
the outputs and of their squares over the repeats (the statistics of the floor,
:mod:`benchmarks.floor`), from which the per-layer variance comes. Cases: ``simulate``; the floor;
aihwkit's pure-PyTorch tile (``TorchInferenceRPUConfig``); its C++ tile (``InferenceRPUConfig``); and
the parts of one aihwkit-style pass (which recomputes the noise-free first layer every time): its three
matrix products alone and its random draws alone.

aihwkit lives in a venv of its own (``benchmarks/setup_aihwkit.sh``); this module runs there as a
child process (``--child``) and is skipped with a message when that venv is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PYTHON = Path("/tmp/aihwkit-venv/bin/python")
OUT_NOISE = 0.06  # aihwkit's default output noise (standard deviation)
IMAGES = 10_000
PASSES = (64, 16)
"""Noisy passes per case: the issue's many-inputs workload (64) and a short run (16), where the fixed
costs of a call weigh most."""
GROUPS = 8  # batch means for the standard error of aihwkit's per-layer variance


def _python() -> Path | None:
    candidate = Path(os.environ.get("AIHWKIT_PYTHON", DEFAULT_PYTHON))
    return candidate if candidate.exists() else None


def run(*, quick: bool = False) -> str:
    """Run the comparison in the aihwkit venv; the markdown section, or why it was skipped."""
    python = _python()
    if python is None:
        message = (
            "Skipped: aihwkit is not installed (no AIHWKIT_PYTHON and no /tmp/aihwkit-venv). Run "
            "`bash benchmarks/setup_aihwkit.sh` (about 15 minutes of compiling on 2 cores), then rerun."
        )
        print(f"  {message}", flush=True)
        return message
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    sections = []
    for passes in PASSES:
        command = [str(python), "-m", "benchmarks.aihwkit_side", "--child", "--passes", str(passes)]
        command += ["--quick"] if quick else []
        completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        sys.stderr.write(completed.stderr[-4000:] if completed.returncode else "")
        if completed.returncode:
            message = (
                f"Skipped: the aihwkit run failed in {python} (exit {completed.returncode}): "
                f"{(completed.stderr.strip().splitlines() or ['no message'])[-1]}"
            )
            print(f"  {message}", flush=True)
            return message
        for line in completed.stdout.splitlines()[:-1]:
            print(f"  {line}", flush=True)
        sections.append(markdown(json.loads(completed.stdout.splitlines()[-1])))
    return "\n\n".join(sections)


def markdown(result: dict) -> str:
    times = result["seconds"]
    ratio = result["ratios"]
    per_pass = {name: seconds / result["repeats"] * 1e3 for name, seconds in times.items()}
    lines = [
        f"784-100-100-10 (the shipped network), {result['images']:,} MNIST test images, "
        f"{result['repeats']} noisy passes, out_noise = {result['out_noise']} "
        f"(AU = {result['out_noise'] ** 2:g} before the activation, every layer); "
        f"aihwkit {result['aihwkit']}, torch {result['torch']}, "
        f"{result['threads']} threads. Medians of {result['rounds']} interleaved rounds.",
        "",
        f"| case | per pass ({result['images']:,} images) | simulate is faster by |",
        "|---|---|---|",
    ]
    names = {
        "simulate": "noiseprop `simulate`",
        "floor": "floor (bare loop, first layer once)",
        "torch_tile": "aihwkit TorchInferenceRPUConfig (pure PyTorch)",
        "cpp_tile": "aihwkit InferenceRPUConfig (C++ tile)",
        "bare_pass": "bare loop recomputing the first layer (aihwkit's work)",
        "matmuls": "its 3 matrix products alone",
        "draws": "its random draws alone (torch.randn)",
    }
    for key, label in names.items():
        if key in per_pass:
            faster = (
                f"**{ratio[key]:.2f}x**" if key in ("torch_tile", "cpp_tile") else f"{ratio[key]:.2f}x"
            )
            lines.append(f"| {label} | {per_pass[key]:.1f} ms | {faster} |")
    lines += [
        "",
        "Roofline of an aihwkit-style pass (products + draws): "
        f"{per_pass['matmuls'] + per_pass['draws']:.1f} ms; noiseprop skips the first layer's "
        "product (its input is noise-free).",
        "",
        "Per-layer variance (average over neurons and images), the correctness cross-check:",
        "",
        "| layer | noiseprop simulate | aihwkit torch tile | aihwkit C++ tile | "
        "propagate (covariance) | z torch | z C++ |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["variance"]:
        lines.append(
            f"| {row['layer']} | {row['simulate']:.6g} ± {row['simulate_se']:.2g} | "
            f"{row['torch_tile']:.6g} ± {row['torch_tile_se']:.2g} | "
            f"{row['cpp_tile']:.6g} ± {row['cpp_tile_se']:.2g} | {row['covariance']:.6g} | "
            f"{row['z_torch']:+.2f} | {row['z_cpp']:+.2f} |"
        )
    lines += ["", "z: difference from `simulate` in standard errors of the difference."]
    return "\n".join(lines)


# ------------------------------------------------------------------------- in the aihwkit venv
def rpu_config(kind: str, out_noise: float):
    """An inference RPU config whose only non-ideality is ``out_noise``."""
    from aihwkit.simulator.configs import InferenceRPUConfig, TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import (
        BoundManagementType,
        NoiseManagementType,
        WeightClipType,
        WeightModifierType,
        WeightNoiseType,
        WeightRemapType,
    )

    config = TorchInferenceRPUConfig() if kind == "torch" else InferenceRPUConfig()
    forward = config.forward
    forward.is_perfect = False
    forward.out_noise = out_noise
    forward.out_noise_std = 0.0
    forward.inp_noise = 0.0
    forward.w_noise = 0.0
    forward.w_noise_type = WeightNoiseType.NONE
    forward.inp_res = -1.0  # <= 0: no DAC quantisation
    forward.out_res = -1.0  # <= 0: no ADC quantisation
    forward.inp_bound = 1e6
    forward.out_bound = -1.0  # <= 0: no output clipping
    forward.noise_management = NoiseManagementType.NONE
    forward.bound_management = BoundManagementType.NONE
    config.mapping.digital_bias = True
    config.mapping.weight_scaling_omega = 0.0
    config.mapping.max_input_size = 0  # one tile per layer (784 inputs would be split over two)
    config.mapping.max_output_size = 0
    config.clip.type = WeightClipType.NONE
    config.remap.type = WeightRemapType.NONE
    config.modifier.type = WeightModifierType.NONE
    config.drift_compensation = None
    return config


def _child(quick: bool, passes: int) -> dict:
    import aihwkit
    import torch
    from aihwkit.nn.conversion import convert_to_analog

    from benchmarks._timing import interleave
    from benchmarks.floor import Workload, bare_loop
    from benchmarks.workloads import mnist_inputs
    from noiseprop import Noise, propagate, simulate
    from noiseprop.training import default_network

    images, repeats, rounds = (2_000, min(passes, 16), 2) if quick else (IMAGES, passes, 3)
    groups = min(GROUPS, repeats // 2)
    torch.manual_seed(0)
    network = default_network()
    noise = Noise(AU=OUT_NOISE**2, injection="before")
    x64 = mnist_inputs(images)
    x = x64.float()
    models = {}
    for kind in ("torch", "cpp"):
        model = convert_to_analog(network.to_torch(torch.float32), rpu_config(kind, OUT_NOISE))
        models[f"{kind}_tile"] = model.eval()
    widths = network.widths

    def aihwkit_passes(model) -> list[tuple]:
        sums = [torch.zeros(2, groups, images, w, dtype=torch.float64).unbind(0) for w in widths]
        with torch.no_grad():
            for repeat in range(repeats):
                signal, layer = x, 0
                for module in model.children():
                    signal = module(signal)
                    if module.__class__.__name__ == "ActivationModule":
                        total, total_sq = sums[layer]
                        total[repeat % groups] += signal
                        total_sq[repeat % groups] += signal.square()
                        layer += 1
        return sums

    weights = [(layer.weight.float(), layer.bias.float()) for layer in network.layers]

    def bare_pass() -> None:  # what aihwkit does, in bare PyTorch: the first layer every time
        generator = torch.Generator().manual_seed(0)
        sums = [torch.zeros(2, images, w, dtype=torch.float64) for w in widths]
        for _ in range(repeats):
            signal = x
            for (weight, bias), layer, pair in zip(weights, network.layers, sums):
                signal = torch.addmm(bias, signal, weight.T)
                signal.add_(torch.randn(signal.shape, generator=generator), alpha=OUT_NOISE)
                signal = layer.activation(signal)
                pair[0] += signal
                pair[1] += signal.square()

    def matmuls() -> None:
        for _ in range(repeats):
            signal = x
            for weight, bias in weights:
                signal = torch.addmm(bias, signal, weight.T)

    def draws() -> None:
        generator = torch.Generator().manual_seed(0)
        for _ in range(repeats):
            for width in widths:
                torch.randn(images, width, generator=generator)

    work = Workload("aihwkit", network, x64, noise, repeats, torch.float32, chunk=repeats)
    results: dict = {}

    def run_simulate() -> None:
        results["simulate"] = simulate(network, noise, x64, repeats=repeats, seed=0, groups=groups)

    def run_tile(kind: str):
        return lambda: results.__setitem__(kind, aihwkit_passes(models[kind]))

    timings = interleave(
        {
            "simulate": run_simulate,
            "floor": lambda: bare_loop(work),
            "torch_tile": run_tile("torch_tile"),
            "cpp_tile": run_tile("cpp_tile"),
            "bare_pass": bare_pass,
            "matmuls": matmuls,
            "draws": draws,
        },
        rounds=rounds,
    )
    print(f"simulate {timings.median('simulate') / repeats * 1e3:.1f} ms per pass", flush=True)
    covariance = propagate(network, noise, x64, method="covariance")
    variance = []
    for index in range(len(widths)):
        row = {"layer": index + 1, "covariance": covariance[index].layer_variance}
        stats = results["simulate"][index]
        row["simulate"], row["simulate_se"] = stats.layer_variance, stats.layer_variance_stderr
        for kind in ("torch_tile", "cpp_tile"):
            total, total_sq = results[kind][index]
            per_group = repeats // groups
            group_variance = (total_sq - total.square() / per_group) / (per_group - 1)
            estimates = group_variance.mean(dim=(1, 2))
            row[kind] = float(estimates.mean())
            row[f"{kind}_se"] = float(estimates.std() / groups**0.5)
        for kind, name in (("torch_tile", "z_torch"), ("cpp_tile", "z_cpp")):
            spread = (row["simulate_se"] ** 2 + row[f"{kind}_se"] ** 2) ** 0.5
            row[name] = (row[kind] - row["simulate"]) / spread
        variance.append(row)
    return {
        "aihwkit": aihwkit.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "images": images,
        "repeats": repeats,
        "rounds": rounds,
        "out_noise": OUT_NOISE,
        "seconds": {name: timings.median(name) for name in timings.seconds},
        "ratios": {name: timings.ratio(name, "simulate")[0] for name in timings.seconds},
        "variance": variance,
    }


if __name__ == "__main__":
    if "--child" in sys.argv:
        passes = int(sys.argv[sys.argv.index("--passes") + 1]) if "--passes" in sys.argv else PASSES[0]
        print(json.dumps(_child("--quick" in sys.argv, passes)))
