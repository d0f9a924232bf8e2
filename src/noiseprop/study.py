"""The study: the experiments that make the research's case, run as sweeps, with computed findings.

:func:`run_study` runs thirteen sweeps (:mod:`noiseprop.sweeps`, so they run on Dask, resume after
an interruption and record failures), draws fourteen figures, one per finding (:mod:`noiseprop.figures`;
``accumulation`` is drawn from the ``slopes`` sweep, ``cnn`` from the ``cnn`` and ``mlp`` sweeps, and
``design``, the noise budget of the shipped network, is computed by the report itself), and writes
the report (:mod:`noiseprop.report`):

1. ``layers``: variance per layer for each kind of noise in three symmetric networks (linear slope 1,
   linear slope 0.8, standard sigmoid), simulation against the closed form of docs/THEORY.md section 2;
2. ``accumulation``: unbounded growth at slope 1, bounded below it, with the predicted limit;
3. ``slopes``: the slope criterion, deep/first-layer ratio against the slope at the operating point;
4. ``width``: uncorrelated noise falls with width, correlated noise does not;
5. ``trained``: per-layer noise of a trained MNIST network, covariance method and mean-field rule
   against simulation;
6. ``accuracy``: accuracy against noise intensity for each kind, predicted (beyond first order and
   first order) and simulated;
7. ``mitigation``: ghost neurons and pooling (docs/THEORY.md section 7) on the trained network under
   additive noise: accuracy and output SNR, predicted and simulated.
8. ``beyond``: beyond first order, the error of the first-order and moments methods against
   simulation on the trained network as the noise grows, with each method's 2 % break point.
9. ``cnn``: the shipped CNN against the shipped MLP, each kind of noise alone at their hidden
   neurons, accuracy against intensity (simulated), and whether the research line's directions
   hold: additive noise degrades the CNN more, correlated multiplicative noise both alike,
   uncorrelated multiplicative noise the CNN less.
10. ``convolution``: the mean-field rule through the shipped CNN's conv2 and fc layers, layer-wide
    and per output channel, against simulation.
11. ``pooling``: the shipped CNN with max and with mean pooling: additive noise right before the
    first pooling against right after it, and uncorrelated multiplicative noise at both ReLUs.
12. ``injection``: the trained network with each kind of noise on one hidden layer, before or after
    the activation, pooled or not (simulated), and whether the research line's directions hold:
    before hurts less than after, after it multiplicative less than additive, the first hidden
    layer more than the second, pooling helps in both cases.
13. ``aware``: noise-aware training per kind: networks trained alike with and without each kind of
    noise, tested under it; whether training with noise raises accuracy for every kind but
    correlated multiplicative, where it barely matters.

Every finding is a sentence computed from the tables, never typed in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from noiseprop._validation import check_nonnegative, check_positive, check_positive_int
from noiseprop.noise import KINDS

__all__ = ["Study", "StudyConfig", "run_study"]

SIGMAS = 4.0
"""Standard errors beyond which the report lists a disagreement between theory and simulation."""


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """Sizes of the study. :meth:`quick` (the default, minutes on 2 cores) and :meth:`full` (the
    research-scale version, for a cluster or a long run).

    Attributes:
        width: neurons per layer of the symmetric networks.
        depth: layers of the symmetric networks.
        repeats: Monte Carlo repeats of the symmetric networks.
        intensity: noise variance of each kind in the symmetric and trained networks.
        slopes: slopes at the operating point for the slope criterion (linear and sigmoid families).
        accumulation_slopes: the linear slopes drawn in the accumulation figure (among ``slopes``).
        widths: widths of the width experiment.
        width_depth: depth of the width experiment.
        network: trained network file, or ``"default"`` for the shipped one.
        trained_images: MNIST test images for the per-layer noise of the trained network.
        trained_repeats: Monte Carlo repeats per image there.
        accuracy_images: MNIST test images for the accuracy curves.
        accuracy_repeats: noise draws per image for the simulated accuracy.
        accuracy_intensities: noise variances of the accuracy curves.
        mitigation_noise: additive noise ``(AU, AC)`` on the hidden layers of the trained network in
            the mitigation experiment.
        mitigation_factor: pooling factor of the mitigation experiment.
        mitigation_images: MNIST test images there.
        mitigation_repeats: noise draws per image there.
        beyond_intensities: noise variances at which first order and the moments method are put
            beside simulation on the trained network (each kind alone in every layer).
        beyond_images: MNIST test images there, and in the ``convolution`` sweep.
        beyond_repeats: Monte Carlo repeats per image there, and in the ``convolution`` sweep.
        cnn_intensities: noise variances at which the shipped CNN and the shipped MLP are compared
            (each kind alone at the CNN's ReLU sites, at the MLP's hidden layers).
        pooling_intensities: noise variances of the ``pooling`` sweep (additive noise right before
            or right after the CNN's first pooling).
        cnn_images: MNIST test images there.
        cnn_repeats: noise draws per image there.
        injection_intensity: noise variance of the ``injection`` sweep (each kind alone on one
            hidden layer of the trained network, before or after the activation, pooled or not).
        injection_pool: the pooling factor compared there with no pooling.
        injection_images: MNIST test images there.
        injection_repeats: noise draws per image there.
        aware_intensity: noise variance of noise-aware training and of its test (``aware``).
        aware_epochs: training epochs of each network there.
        aware_train_size: training images there.
        aware_images: MNIST test images there.
        aware_repeats: noise draws per image there.
    """

    width: int = 20
    depth: int = 20
    repeats: int = 10_000
    intensity: float = 1e-3
    slopes: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1)
    accumulation_slopes: tuple[float, ...] = (0.6, 0.8, 0.9, 1.0)
    widths: tuple[int, ...] = (5, 10, 20, 50, 100)
    width_depth: int = 10
    network: str = "default"
    trained_images: int = 100
    trained_repeats: int = 2000
    accuracy_images: int = 500
    accuracy_repeats: int = 50
    accuracy_intensities: tuple[float, ...] = (0.003, 0.007, 0.015, 0.03, 0.07, 0.15, 0.3, 0.7, 1.5, 3.0)
    mitigation_noise: tuple[float, float] = (0.0225, 0.0225)
    mitigation_factor: int = 4
    mitigation_images: int = 500
    mitigation_repeats: int = 100
    beyond_intensities: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    beyond_images: int = 20
    beyond_repeats: int = 2000
    cnn_intensities: tuple[float, ...] = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
    pooling_intensities: tuple[float, ...] = (0.1, 0.3, 1.0)
    cnn_images: int = 300
    cnn_repeats: int = 40
    injection_intensity: float = 0.3
    injection_pool: int = 4
    injection_images: int = 300
    injection_repeats: int = 40
    aware_intensity: float = 0.3
    aware_epochs: int = 3
    aware_train_size: int = 20_000
    aware_images: int = 500
    aware_repeats: int = 50

    def __post_init__(self) -> None:
        for name in ("width", "depth", "repeats", "width_depth", "trained_images", "trained_repeats",
                     "accuracy_images", "accuracy_repeats", "mitigation_images",
                     "mitigation_repeats", "beyond_images", "beyond_repeats", "cnn_images",
                     "cnn_repeats", "injection_pool", "injection_images", "injection_repeats",
                     "aware_train_size", "aware_images", "aware_repeats"):  # fmt: skip
            check_positive_int(f"StudyConfig.{name}", getattr(self, name), minimum=2)
        check_positive_int("StudyConfig.aware_epochs", self.aware_epochs)
        for name in ("intensity", "injection_intensity", "aware_intensity"):
            check_positive(f"StudyConfig.{name}", getattr(self, name), "variance")
        check_positive_int("StudyConfig.mitigation_factor", self.mitigation_factor)
        if len(tuple(self.mitigation_noise)) != 2:
            raise ValueError(
                f"StudyConfig.mitigation_noise must be a pair (AU, AC) of variances; got "
                f"{self.mitigation_noise!r}."
            )
        for value in self.mitigation_noise:
            check_nonnegative("StudyConfig.mitigation_noise", value)
        object.__setattr__(self, "mitigation_noise", tuple(self.mitigation_noise))
        for name in ("slopes", "accumulation_slopes", "widths", "accuracy_intensities",
                     "beyond_intensities", "cnn_intensities", "pooling_intensities"):  # fmt: skip
            values = tuple(getattr(self, name))
            if not values:
                raise ValueError(f"StudyConfig.{name} must list at least one value; got none.")
            for value in values:
                check_nonnegative(f"StudyConfig.{name}", value)
            object.__setattr__(self, name, values)
        missing = set(self.accumulation_slopes) - set(self.slopes)
        if missing:
            raise ValueError(
                f"StudyConfig.accumulation_slopes must be among slopes {self.slopes}; got "
                f"{sorted(missing)}."
            )

    @classmethod
    def quick(cls) -> StudyConfig:
        """The embedded default: a few minutes on a 2-core machine."""
        return cls()

    @classmethod
    def full(cls) -> StudyConfig:
        """Research scale: wide and deep networks, many repeats, fine grids, all 10,000 test images."""
        return cls(
            width=100, depth=50, repeats=20_000,
            slopes=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2),
            widths=(5, 10, 20, 50, 100, 200, 500), width_depth=20,
            trained_images=1000, trained_repeats=20_000, accuracy_images=10_000, accuracy_repeats=200,
            accuracy_intensities=tuple(float(f"{10 ** (k / 6 - 3):.3g}") for k in range(22)),
            mitigation_images=10_000, mitigation_repeats=200,
            cnn_intensities=tuple(float(f"{10 ** (k / 6 - 3):.3g}") for k in range(22)),
            pooling_intensities=(0.1, 0.2, 0.3, 0.5, 1.0, 2.0), cnn_images=10_000,
            cnn_repeats=200, injection_images=10_000, injection_repeats=200, aware_epochs=15,
            aware_train_size=60_000, aware_images=10_000, aware_repeats=200,
        )  # fmt: skip


def _linear(slope: float) -> str:
    """A linear activation of slope ``slope`` whose fixed point is 0.5."""
    return f"linear:slope={slope:g},offset={0.5 * (1 - slope):g}"


def _sigmoid(slope: float) -> str:
    """A sigmoid centred on its fixed point 0.5, with slope ``slope`` there (gain 4 slope)."""
    return f"sigmoid:gain={4 * slope:g},centre=0.5"


LAYER_ACTIVATIONS = ("linear", "linear:slope=0.8,offset=0.1", "sigmoid")


def sweeps(config: StudyConfig) -> dict[str, tuple[str, dict[str, list[Any]]]]:
    """The study's sweeps: name -> (experiment, grid)."""
    symmetric = {"width": [config.width], "depth": [config.depth], "intensity": [config.intensity],
                 "repeats": [config.repeats]}  # fmt: skip
    return {
        "layers": ("symmetric", {
            "activation": list(LAYER_ACTIVATIONS), "kind": list(KINDS), **symmetric,
            "methods": ["symmetric,covariance"],
        }),
        "slopes": ("symmetric", {
            "activation": [_linear(s) for s in config.slopes] + [_sigmoid(s) for s in config.slopes]
            + ["sigmoid"],
            "kind": ["AC"], **symmetric, "methods": ["symmetric"],
        }),
        "width": ("symmetric", {
            "activation": ["sigmoid"], "kind": ["AU", "AC"], "width": list(config.widths),
            "depth": [config.width_depth], "intensity": [config.intensity], "readout": [True],
            "repeats": [config.repeats], "methods": ["symmetric"],
        }),
        "trained": ("trained", {
            "network": [config.network], "kind": list(KINDS), "intensity": [config.intensity],
            "images": [config.trained_images], "repeats": [config.trained_repeats],
        }),
        "accuracy": ("accuracy", {
            "network": [config.network], "kind": list(KINDS),
            "intensity": list(config.accuracy_intensities), "images": [config.accuracy_images],
            "repeats": [config.accuracy_repeats],
        }),
        "beyond": ("trained", {
            "network": [config.network], "kind": list(KINDS),
            "intensity": list(config.beyond_intensities), "images": [config.beyond_images],
            "repeats": [config.beyond_repeats], "methods": ["covariance,moments"],
        }),
        "cnn": ("accuracy", {
            "model": ["cnn", "cnn-mean"], "kind": list(KINDS),
            "intensity": list(config.cnn_intensities), "images": [config.cnn_images],
            "repeats": [config.cnn_repeats],
        }),
        "pooling": ("accuracy", {
            "model": ["cnn", "cnn-mean"], "sites": ["relu1", "pool1"], "kind": ["AU", "AC"],
            "intensity": list(config.pooling_intensities),
            "images": [config.cnn_images], "repeats": [config.cnn_repeats],
        }),
        "mlp": ("accuracy", {
            "network": [config.network], "kind": list(KINDS),
            "intensity": list(config.cnn_intensities), "images": [config.cnn_images],
            "repeats": [config.cnn_repeats], "methods": ["montecarlo"], "layers": ["hidden"],
        }),
        "convolution": ("convolution", {
            "kind": ["AU", "AC"], "layer": ["conv2", "fc"], "intensity": [config.intensity],
            "images": [config.beyond_images], "repeats": [config.beyond_repeats],
        }),
        "injection": ("injection", {
            "network": [config.network], "kind": list(KINDS),
            "intensity": [config.injection_intensity], "injection": ["after", "before"],
            "layer": ["1", "2"], "pool": [1, config.injection_pool],
            "images": [config.injection_images], "repeats": [config.injection_repeats],
        }),
        "aware": ("aware", {
            "trained_with": ["none", *KINDS], "intensity": [config.aware_intensity],
            "epochs": [config.aware_epochs], "train_size": [config.aware_train_size],
            "images": [config.aware_images], "repeats": [config.aware_repeats],
        }),
        "mitigation": ("mitigation", {
            "network": [config.network], "transform": ["none", "ghosts", "pool", "ghosts+pool"],
            "factor": [config.mitigation_factor], "AU": [config.mitigation_noise[0]],
            "AC": [config.mitigation_noise[1]], "images": [config.mitigation_images],
            "repeats": [config.mitigation_repeats],
        }),
    }  # fmt: skip


@dataclass(frozen=True, eq=False)
class Study:
    """What the study produced.

    Attributes:
        config: the sizes used.
        tables: sweep name -> tidy table.
        findings: figure name -> one-line finding computed from the tables.
        disagreements: rows where theory and simulation differ by more than :data:`SIGMAS`
            standard errors.
        failures: failed sweep points (parameters and error), normally empty.
        output: the output folder.
        figures: figure name -> PNG path.
        report: path of the HTML report.
    """

    config: StudyConfig
    tables: dict[str, pd.DataFrame]
    findings: dict[str, str]
    disagreements: pd.DataFrame
    failures: pd.DataFrame
    output: Path
    figures: dict[str, Path] = field(default_factory=dict)
    report: Path | None = None


def run_study(
    config: StudyConfig | None = None,
    *,
    output: str | Path = "study",
    seed: int = 0,
    resume: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Study:
    """Run the study's sweeps, compute its findings, draw its figures and write the report.

    Args:
        config: sizes (default :meth:`StudyConfig.quick`).
        output: folder for ``report.html``, ``figures/*.png``, ``tables/*.csv|parquet`` and the
            sweeps' own folders (``sweeps/<name>``, which ``resume`` continues).
        seed: the seed of every sweep (each point's seed derives from it and its parameters).
        resume: continue an interrupted study in ``output``.
        workers, scheduler: where to run (see :func:`noiseprop.sweeps.sweep`).
        progress: called as ``progress(sweep_name, finished_points, total_points)``.
    """
    from noiseprop.report import write_report
    from noiseprop.sweeps import sweep

    started = time.perf_counter()
    config = StudyConfig.quick() if config is None else config
    root = Path(output)
    if root.exists() and any(root.iterdir()) and not resume:
        raise FileExistsError(
            f"output {str(root)!r} is not empty; pass resume=True (--resume) to continue the study in "
            "it, or choose a new folder."
        )
    tables: dict[str, pd.DataFrame] = {}
    failures = []
    for name, (experiment, grid) in sweeps(config).items():
        folder = root / "sweeps" / name
        report = None if progress is None else partial(progress, name)
        result = sweep(
            experiment, grid, output=folder, seed=seed, resume=resume and folder.exists(),
            workers=workers, scheduler=scheduler, progress=report,
        )  # fmt: skip
        tables[name] = result.table
        if not result.failures.empty:
            failures.append(result.failures.assign(sweep=name))
    tables_folder = root / "tables"
    tables_folder.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(tables_folder / f"{name}.parquet", index=False)
        table.to_csv(tables_folder / f"{name}.csv", index=False)
    study = Study(
        config=config,
        tables=tables,
        findings=findings(tables, config),
        disagreements=disagreements(tables),
        failures=pd.concat(failures, ignore_index=True) if failures else pd.DataFrame(),
        output=root,
    )
    return write_report(study, seed=seed, wall_seconds=time.perf_counter() - started)


# ------------------------------------------------------------------------------------- findings
def _ratio_text(ratio: float, stderr: float) -> str:
    return f"{ratio:.3f} ± {stderr:.3f}"


def findings(tables: dict[str, pd.DataFrame], config: StudyConfig) -> dict[str, str]:
    """One sentence per figure, computed from the tables."""
    from noiseprop.figures import activation_title, deep_ratio, slope_at_operating_point

    result: dict[str, str] = {}
    if not tables.get("layers", pd.DataFrame()).empty:
        layers = tables["layers"]
        parts = []
        for activation in LAYER_ACTIVATIONS:
            rows = layers[(layers["activation"] == activation) & (layers["kind"] == "AC")]
            if rows.empty:
                continue
            ratios = deep_ratio(rows).set_index("method")
            simulated, theory = ratios.loc["montecarlo"], ratios.loc["symmetric"]
            parts.append(
                f"{activation_title(activation, slope=simulated['slope'])}: deep/first AC = "
                f"{_ratio_text(simulated['ratio'], simulated['stderr'])}, theory {theory['ratio']:.3f}"
            )
        result["layers"] = "; ".join(parts)
    if not tables.get("slopes", pd.DataFrame()).empty:
        slopes = tables["slopes"]
        linear = slopes[slopes["activation"].isin([_linear(s) for s in config.accumulation_slopes])]
        lines = []
        for activation, group in linear.groupby("activation", sort=False):
            slope = slope_at_operating_point(activation, float(group["input_value"].iloc[0]))
            simulated = group[group["method"] == "montecarlo"].sort_values("layer")
            deep = simulated.iloc[-1]
            if slope < 1:
                limit = slope**2 * config.intensity / (1 - slope**2) + config.intensity
                lines.append(
                    f"slope {slope:g}: bounded, deep layer {deep['variance']:.3g} ± "
                    f"{deep['variance_stderr']:.1g} vs limit {limit:.3g}"
                )
            else:
                ratio = deep_ratio(group).set_index("method")
                lines.append(
                    f"slope {slope:g}: unbounded, layer {int(deep['layer'])}/layer 1 = "
                    f"{_ratio_text(ratio.loc['montecarlo', 'ratio'], ratio.loc['montecarlo', 'stderr'])}"
                    f" (theory {ratio.loc['symmetric', 'ratio']:.3g}, linear growth)"
                )
        result["accumulation"] = "; ".join(lines)
        ratios = deep_ratio(slopes)
        simulated = ratios[ratios["method"] == "montecarlo"]
        standard = simulated[simulated["activation"] == "sigmoid"].iloc[0]
        at_one = simulated[(simulated["slope"] - 1).abs() < 1e-9].set_index("activation")
        theory_one = ratios[(ratios["method"] == "symmetric") & ((ratios["slope"] - 1).abs() < 1e-9)]
        text = (
            f"standard sigmoid, slope {standard['slope']:.4f}: deep/first = "
            f"{_ratio_text(standard['ratio'], standard['stderr'])}, limit 1/(1 - slope²) = "
            f"{1 / (1 - standard['slope'] ** 2):.3f}"
        )
        if not at_one.empty:
            linear_one = at_one.loc[_linear(1.0)] if _linear(1.0) in at_one.index else None
            sigmoid_one = at_one.loc[_sigmoid(1.0)] if _sigmoid(1.0) in at_one.index else None
            theory_value = float(theory_one["ratio"].iloc[0]) if not theory_one.empty else math.nan
            if linear_one is not None and sigmoid_one is not None:
                text += (
                    f"; breakdown at slope 1: linear {linear_one['ratio']:.1f}, sigmoid gain 4 "
                    f"{sigmoid_one['ratio']:.1f} vs first-order {theory_value:.1f} (saturation bends it)"
                )
        result["slopes"] = text
    if not tables.get("width", pd.DataFrame()).empty:
        width = tables["width"]
        readout = width[width["layer"] == width["layer"].max()]
        parts = []
        for kind in ("AU", "AC"):
            rows = readout[readout["kind"] == kind]
            simulated = rows[rows["method"] == "montecarlo"].set_index("width").sort_index()
            theory = rows[rows["method"] == "symmetric"].set_index("width").sort_index()
            if len(simulated) < 2:
                continue
            narrow, wide = simulated.index[0], simulated.index[-1]
            parts.append(
                f"{kind}: N={narrow}→{wide} changes the average's variance ×"
                f"{simulated.loc[wide, 'variance'] / simulated.loc[narrow, 'variance']:.3f} "
                f"(theory ×{theory.loc[wide, 'variance'] / theory.loc[narrow, 'variance']:.3f})"
            )
        result["width"] = "; ".join(parts)
    if not tables.get("trained", pd.DataFrame()).empty:
        compared = _paired(tables["trained"])
        worst = {
            method: group.loc[group["relative_error"].abs().idxmax()]
            for method, group in compared.groupby("method")
        }
        parts = [
            f"{method}: largest |error| {100 * abs(row['relative_error']):.2f} % ({row['kind']}, "
            f"layer {int(row['layer'])}, z = {row['z']:+.1f})"
            for method, row in worst.items()
        ]
        result["trained"] = "; ".join(parts)
    if not tables.get("accuracy", pd.DataFrame()).empty:
        accuracy = tables["accuracy"]
        wide = accuracy.pivot_table(index=["kind", "intensity"], columns="method", values="accuracy")
        parts = [f"noise-free {accuracy['noise_free'].iloc[0]:.2%}"]
        for method, name in (("predicted", "predicted"), ("first-order", "first order")):
            if method not in wide:
                continue
            gaps = (wide[method] - wide["montecarlo"]).abs()
            (kind, level), gap = gaps.idxmax(), gaps.max()
            worst = wide.loc[(kind, level)]
            parts.append(
                f"{name}: largest gap {100 * gap:.2f} points ({kind} = {level:g}: "
                f"{worst[method]:.2%} against simulated {worst['montecarlo']:.2%})"
            )
        result["accuracy"] = "; ".join(parts)
    if not tables.get("mitigation", pd.DataFrame()).empty:
        result["mitigation"] = _mitigation_finding(tables["mitigation"], config)
    if not tables.get("beyond", pd.DataFrame()).empty:
        result["beyond"] = _beyond_finding(tables["beyond"])
    if not tables.get("cnn", pd.DataFrame()).empty and not tables.get("mlp", pd.DataFrame()).empty:
        result["cnn"] = _cnn_finding(cnn_losses(tables["cnn"], tables["mlp"]))
    if not tables.get("convolution", pd.DataFrame()).empty:
        result["convolution"] = _convolution_finding(tables["convolution"])
    if not tables.get("pooling", pd.DataFrame()).empty and not tables.get("cnn", pd.DataFrame()).empty:
        result["pooling"] = _pooling_finding(pooling_losses(tables["pooling"], tables["cnn"]))
    if not tables.get("injection", pd.DataFrame()).empty:
        result["injection"] = _injection_finding(injection_losses(tables["injection"]))
    if not tables.get("aware", pd.DataFrame()).empty:
        result["aware"] = _aware_finding(aware_gains(tables["aware"]))
    return result


MEAN_FIELD_TOLERANCE = 0.1
"""How close (relative) a rule must come to simulation to count as governing the noise."""


def _convolution_finding(table: pd.DataFrame) -> str:
    """Per kind and layer, the mean-field and per-channel predictions over simulation (± the
    simulation's relative standard error); a rule holds within :data:`MEAN_FIELD_TOLERANCE`."""
    parts = []
    claims = {"AC": "the mean of the next connection matrix", "AU": "the mean of its square"}
    for kind in ("AC", "AU"):
        rows = table[table["kind"] == kind].sort_values("layer")
        if rows.empty:
            continue
        texts = []
        for _, row in rows.iterrows():
            relative = row["stderr"] / row["simulated"]
            field = row["meanfield"] / row["simulated"]
            channel = row["per_channel"] / row["simulated"]
            texts.append(
                f"{row['layer']}: layer-wide {field:.3f}, per channel {channel:.3f} (± {relative:.3f})"
            )
        field_holds = (rows["meanfield"] / rows["simulated"] - 1).abs().max() <= MEAN_FIELD_TOLERANCE
        channel_holds = (rows["per_channel"] / rows["simulated"] - 1).abs().max() <= MEAN_FIELD_TOLERANCE
        verdict = (
            "holds" if field_holds else "holds per output channel only" if channel_holds
            else "does not hold"
        )  # fmt: skip
        name = "correlated" if kind == "AC" else "uncorrelated"
        parts.append(
            f"{name} ({kind}) noise governed by {claims[kind]}: {verdict} (prediction / simulation, "
            + "; ".join(texts)
            + ")"
        )
    return "; ".join(parts)


def _mean_loss(rows: pd.DataFrame) -> tuple[float, float]:
    """``(mean of noise_free - accuracy, its standard error sqrt(sum stderr^2) / n)`` over the
    simulated rows."""
    simulated = rows[rows["method"] == "montecarlo"]
    return _averaged(simulated.assign(loss=simulated["noise_free"] - simulated["accuracy"]))


def _estimate(row: pd.Series) -> tuple[float, float]:
    """``(loss, standard error)`` of a row of :func:`pooling_losses`."""
    return float(row["loss"]), float(row["stderr"])


def _difference(first: tuple[float, float], second: tuple[float, float]) -> tuple[float, float]:
    """``first - second`` for two ``(value, standard error)`` of independent estimates, with the
    combined standard error."""
    return first[0] - second[0], math.hypot(first[1], second[1])


def pooling_losses(pooling: pd.DataFrame, cnn: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy losses over the intensities (:func:`_mean_loss`): the shipped CNN of each
    pooling (``cnn``: max, ``cnn-mean``: mean) with one additive kind at ``relu1`` (pooled right
    after) or at ``pool1`` (after the pooling), and with ``MU`` at both ReLU sites."""
    rows = []
    for model in ("cnn", "cnn-mean"):
        for kind in ("AU", "AC"):
            for site in ("relu1", "pool1"):
                chosen = pooling[(pooling["model"] == model) & (pooling["kind"] == kind)
                                 & (pooling["sites"] == site)]  # fmt: skip
                loss, stderr = _mean_loss(chosen)
                rows.append({"model": model, "kind": kind, "sites": site, "loss": loss,
                             "stderr": stderr})  # fmt: skip
        loss, stderr = _mean_loss(cnn[(cnn["model"] == model) & (cnn["kind"] == "MU")])
        rows.append({"model": model, "kind": "MU", "sites": "relu1,relu2", "loss": loss,
                     "stderr": stderr})  # fmt: skip
    return pd.DataFrame(rows)


def _pooling_finding(losses: pd.DataFrame) -> str:
    """(d) pooling right after a noisy layer helps against additive noise: the loss with the noise
    before the pooling (at relu1) below the loss with it after (at pool1) by more than 3 standard
    errors; (e) max pooling less resilient than mean pooling to MU: the max CNN's loss above the
    mean CNN's by more than 3 standard errors."""
    table = losses.set_index(["model", "kind", "sites"])
    names = {"cnn": "max", "cnn-mean": "mean"}
    parts = []
    for model in ("cnn", "cnn-mean"):
        for kind in ("AU", "AC"):
            before, after = table.loc[(model, kind, "relu1")], table.loc[(model, kind, "pool1")]
            difference, stderr = _difference(_estimate(after), _estimate(before))
            verdict = "helps" if difference > 3 * stderr else "does not help"
            parts.append(
                f"{names[model]} pooling, {kind}: loss {100 * before['loss']:.2f} with the noise "
                f"before it vs {100 * after['loss']:.2f} after ({_points(difference, stderr)}): "
                f"{verdict}"
            )
    worse, better = table.loc[("cnn", "MU", "relu1,relu2")], table.loc[("cnn-mean", "MU", "relu1,relu2")]
    difference, stderr = _difference(_estimate(worse), _estimate(better))
    parts.append(
        f"MU: loss with max pooling {100 * worse['loss']:.2f} vs mean {100 * better['loss']:.2f} "
        f"({_points(difference, stderr)}): 'max pooling is less resilient than mean pooling to "
        f"uncorrelated multiplicative noise' {_verdict(difference, stderr)}"
    )
    return "; ".join(parts)


def cnn_losses(cnn: pd.DataFrame, mlp: pd.DataFrame) -> pd.DataFrame:
    """Per kind, each network's accuracy loss ``noise_free - accuracy`` averaged over the intensity
    grid (simulated), with its standard error ``sqrt(sum stderr^2) / n``, and their difference
    (CNN - MLP) with the combined standard error."""
    if "model" in cnn.columns:
        cnn = cnn[cnn["model"] == "cnn"]
    rows = []
    for kind in KINDS:
        values = {}
        for name, table in (("cnn", cnn), ("mlp", mlp)):
            values[name] = _mean_loss(table[table["kind"] == kind])
        difference, combined = _difference(values["cnn"], values["mlp"])
        rows.append({"kind": kind, "cnn_loss": values["cnn"][0], "cnn_stderr": values["cnn"][1],
                     "mlp_loss": values["mlp"][0], "mlp_stderr": values["mlp"][1],
                     "difference": difference, "stderr": combined})  # fmt: skip
    return pd.DataFrame(rows).set_index("kind")


CNN_DIRECTIONS = {
    "AU": ("additive noise degrades the convolutional network more", 1),
    "AC": ("additive noise degrades the convolutional network more", 1),
    "MU": ("uncorrelated multiplicative noise is less harmful to the convolutional network", -1),
    "MC": ("correlated multiplicative noise affects both alike", 0),
}
"""The published directions the comparison tests, per kind: the expected sign of the difference of
losses (CNN - MLP), 0 for "alike"."""


def _cnn_finding(losses: pd.DataFrame) -> str:
    """Whether each published direction holds: a difference beyond 3 standard errors in the
    expected direction holds it; for "alike", a difference within 3 standard errors or below one
    point of accuracy."""
    parts = []
    for kind, (claim, sign) in CNN_DIRECTIONS.items():
        row = losses.loc[kind]
        difference, stderr = row["difference"], row["stderr"]
        if sign == 0:
            holds = abs(difference) <= 3 * stderr or abs(difference) < 0.01
        else:
            holds = sign * difference > 3 * stderr
        parts.append(
            f"{kind}: mean loss CNN {100 * row['cnn_loss']:.2f} vs MLP {100 * row['mlp_loss']:.2f} "
            f"points, difference {100 * difference:+.2f} ± {100 * stderr:.2f}: "
            f"'{claim}' {'holds' if holds else 'does not hold'}"
        )
    return "; ".join(parts)


def injection_losses(table: pd.DataFrame) -> pd.DataFrame:
    """The ``injection`` sweep as accuracy losses: per (kind, injection, layer, pool), ``loss =
    noise_free - accuracy`` and its standard error."""
    losses = table.assign(loss=table["noise_free"] - table["accuracy"])
    return losses[["kind", "injection", "layer", "pool", "loss", "stderr"]].reset_index(drop=True)


def _averaged(losses: pd.DataFrame, **where: Any) -> tuple[float, float]:
    """``(mean loss, its standard error)`` over the rows of :func:`injection_losses` matching
    ``where`` (e.g. over both hidden layers)."""
    rows = losses
    for column, value in where.items():
        rows = rows[rows[column] == value]
    return float(rows["loss"].mean()), float((rows["stderr"] ** 2).sum()) ** 0.5 / max(len(rows), 1)


def _verdict(difference: float, stderr: float) -> str:
    return "holds" if difference > 3 * stderr else "does not hold"


def _points(difference: float, stderr: float) -> str:
    return f"{100 * difference:+.2f} ± {100 * stderr:.2f} points"


def _gap(larger: tuple[float, float], smaller: tuple[float, float]) -> str:
    """``larger - smaller`` of two ``(loss, standard error)``, in points, and whether it is beyond
    3 standard errors (the direction "larger hurts more" holds)."""
    difference, stderr = _difference(larger, smaller)
    return f"{_points(difference, stderr)} ({_verdict(difference, stderr)})"


def _injection_finding(losses: pd.DataFrame) -> str:
    """The four directions of the research line on noise before and after the activation, each
    tested per kind on the mean loss over the two hidden layers (or per layer), a difference beyond
    3 standard errors in the stated direction holding it: (1) noise before the activation hurts
    less than after it; (2) after it, multiplicative noise hurts less than additive; (3) noise in
    the first hidden layer hurts more than in the second; (4) pooling helps, before and after
    alike (uncorrelated kinds; correlated noise is one draw shared by every copy, which pooling
    cannot average: its change is reported, expected to be nil)."""
    pooled = int(losses["pool"].max())
    plain, pooled_rows = losses[losses["pool"] == 1], losses[losses["pool"] == pooled]
    after = {kind: _averaged(plain, kind=kind, injection="after") for kind in KINDS}
    before = {kind: _averaged(plain, kind=kind, injection="before") for kind in KINDS}
    parts = [
        "before hurts less than after (loss after - before): "
        + ", ".join(f"{kind} {_gap(after[kind], before[kind])}" for kind in KINDS),
        "after it, multiplicative hurts less than additive (loss difference): "
        + ", ".join(f"{add} - {mult} {_gap(after[add], after[mult])}"
                    for add, mult in (("AU", "MU"), ("AC", "MC"))),
    ]  # fmt: skip
    first, second = (
        {kind: _averaged(plain, kind=kind, injection="after", layer=layer) for kind in KINDS}
        for layer in ("1", "2")
    )
    parts.append("the first hidden layer hurts more than the second (loss 1 - 2, after): "
                 + ", ".join(f"{kind} {_gap(first[kind], second[kind])}" for kind in KINDS))  # fmt: skip
    pooling = []
    for injection in ("after", "before"):
        for kind in ("AU", "MU"):
            without = _averaged(plain, kind=kind, injection=injection)
            with_pooling = _averaged(pooled_rows, kind=kind, injection=injection)
            pooling.append(f"{kind} {injection} {_gap(without, with_pooling)}")
    shared = []
    for kind in ("AC", "MC"):
        difference, stderr = _difference(_averaged(plain, kind=kind), _averaged(pooled_rows, kind=kind))
        effect = "none, as expected" if abs(difference) <= 3 * stderr else "an effect"
        shared.append(f"{kind} {_points(difference, stderr)} ({effect})")
    parts.append(
        f"pooling x{pooled} helps before and after (loss without - with): " + ", ".join(pooling)
        + "; on correlated noise, one draw shared by every copy: " + ", ".join(shared)
    )  # fmt: skip
    return "; ".join(parts)


def aware_gains(table: pd.DataFrame) -> pd.DataFrame:
    """Per kind, the accuracy under that kind of noise of the network trained with it and of the
    control trained without noise, and the gain (aware - control) with its standard error
    (given the trained networks: the evaluation's error only)."""
    rows = []
    control = table[table["trained_with"] == "none"].set_index("kind")
    for kind in KINDS:
        aware = table[(table["trained_with"] == kind) & (table["kind"] == kind)]
        if aware.empty or kind not in control.index:
            continue
        trained, plain = aware.iloc[0], control.loc[kind]
        gain, stderr = _difference(
            (trained["accuracy"], trained["stderr"]), (plain["accuracy"], plain["stderr"])
        )
        rows.append({
            "kind": kind, "aware": trained["accuracy"], "aware_stderr": trained["stderr"],
            "control": plain["accuracy"], "control_stderr": plain["stderr"],
            "gain": gain, "stderr": stderr,
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("kind")


AWARE_BARELY = 0.01
"""A gain of accuracy below which noise-aware training "barely matters" (one point)."""


def _aware_finding(gains: pd.DataFrame) -> str:
    """'Training with noise raises accuracy under that noise for every kind except correlated
    multiplicative, where it barely matters': a gain beyond 3 standard errors for AU, AC and MU,
    and for MC a gain below :data:`AWARE_BARELY` (or within 3 standard errors)."""
    parts = []
    for kind, row in gains.iterrows():
        gain, stderr = float(row["gain"]), float(row["stderr"])
        if kind == "MC":
            holds = gain < AWARE_BARELY or abs(gain) <= 3 * stderr
            claim = "barely matters"
        else:
            holds = gain > 3 * stderr
            claim = "raises accuracy"
        parts.append(
            f"{kind}: {100 * row['control']:.2f}% -> {100 * row['aware']:.2f}% "
            f"({_points(gain, stderr)}): '{claim}' {'holds' if holds else 'does not hold'}"
        )
    return "; ".join(parts)


BREAK = 0.02
"""Relative error of a predicted variance beyond which a method has broken down (the figure's
break points), when it is also more than :data:`SIGMAS` standard errors."""


def beyond_errors(table: pd.DataFrame) -> pd.DataFrame:
    """Per (method, kind, intensity): the largest ``|relative error|`` over the layers of the
    predicted variance against simulation, and whether it is a breakdown (beyond :data:`BREAK`
    and :data:`SIGMAS` standard errors)."""
    paired = _paired(table)
    paired["broken"] = (paired["relative_error"].abs() > BREAK) & (paired["z"].abs() > SIGMAS)
    worst = paired.assign(error=paired["relative_error"].abs())
    return (
        worst.groupby(["method", "kind", "intensity"])
        .agg(error=("error", "max"), broken=("broken", "any"))
        .reset_index()
    )


def break_points(errors: pd.DataFrame) -> dict[tuple[str, str], float | None]:
    """(method, kind) -> the largest intensity up to which the method holds at every intensity
    of the grid (``None``: broken at the smallest); ``inf`` when it never breaks."""
    points: dict[tuple[str, str], float | None] = {}
    for (method, kind), rows in errors.groupby(["method", "kind"]):
        rows = rows.sort_values("intensity")
        broken = rows[rows["broken"]]
        if broken.empty:
            points[(method, kind)] = math.inf
        else:
            before = rows[rows["intensity"] < broken["intensity"].iloc[0]]
            points[(method, kind)] = float(before["intensity"].iloc[-1]) if len(before) else None
    return points


def _beyond_finding(table: pd.DataFrame) -> str:
    errors = beyond_errors(table)
    points = break_points(errors)
    top = float(errors["intensity"].max())
    names = {"covariance": "first order", "moments": "moments"}
    parts = []
    for method in ("covariance", "moments"):
        if method not in set(errors["method"]):
            continue
        holds = []
        for kind in KINDS:
            point = points.get((method, kind))
            text = "never" if point is None else f"≥ {top:g}" if math.isinf(point) else f"{point:g}"
            holds.append(f"{kind} {text}")
        largest = errors[(errors["method"] == method) & (errors["intensity"] == top)]["error"].max()
        parts.append(
            f"{names[method]} within {100 * BREAK:g} % up to {', '.join(holds)} (largest error at "
            f"{top:g}: {100 * largest:.1f} %)"
        )
    return "; ".join(parts)


def _mitigation_finding(table: pd.DataFrame, config: StudyConfig) -> str:
    simulated = table[table["method"] == "montecarlo"].set_index("transform")
    before, after = simulated.loc["none"], simulated.loc["ghosts+pool"]
    gain_db = after["output_snr_db"] - before["output_snr_db"]
    return (
        f"AU = {config.mitigation_noise[0]:g}, AC = {config.mitigation_noise[1]:g} on the hidden "
        f"layers: ghosts + pooling x{config.mitigation_factor} lift the simulated accuracy from "
        f"{before['accuracy']:.2%} ± {before['stderr']:.2%} to {after['accuracy']:.2%} ± "
        f"{after['stderr']:.2%} (noise-free {before['noise_free']:.2%}); output SNR {gain_db:+.1f} dB "
        f"(x{10 ** (gain_db / 10):.2f}); ghosts alone {simulated.loc['ghosts', 'accuracy']:.2%}, "
        f"pooling alone {simulated.loc['pool', 'accuracy']:.2%}"
    )


def _paired(table: pd.DataFrame) -> pd.DataFrame:
    """Each prediction row beside the simulation of the same point and layer, with ``z`` and the
    relative error."""
    keys = ["point", "layer"]
    simulated = table[table["method"] == "montecarlo"][keys + ["variance", "variance_stderr"]]
    predicted = table[table["method"] != "montecarlo"]
    paired = predicted.drop(columns="variance_stderr").merge(
        simulated, on=keys, suffixes=("", "_simulated")
    )
    paired = paired.rename(columns={"variance": "predicted", "variance_simulated": "simulated",
                                    "variance_stderr": "stderr"})  # fmt: skip
    paired["relative_error"] = (paired["predicted"] - paired["simulated"]) / paired["simulated"]
    paired["z"] = (paired["predicted"] - paired["simulated"]) / paired["stderr"]
    return paired


def disagreements(tables: dict[str, pd.DataFrame], sigmas: float = SIGMAS) -> pd.DataFrame:
    """Every (figure, point, layer, method) where theory and simulation differ by more than
    ``sigmas`` standard errors, with its parameters, sorted by ``|z|``."""
    parameters = ["activation", "kind", "intensity", "width", "depth"]
    frames = []
    for name in ("layers", "slopes", "width", "trained", "beyond"):
        table = tables.get(name)
        if table is None or table.empty:
            continue
        paired = _paired(table)
        if name == "beyond":  # first order's breakdown there is the figure's point, not a surprise
            paired = paired[paired["method"] == "moments"]
        paired = paired[paired["z"].abs() > sigmas]
        columns = [c for c in parameters if c in paired.columns]
        keep = ["figure", *columns, "layer", "method", "predicted", "simulated", "stderr", "z",
                "relative_error"]  # fmt: skip
        frames.append(paired.assign(figure=name)[keep])
    accuracy = tables.get("accuracy")
    if accuracy is not None and not accuracy.empty:
        wide = accuracy.pivot_table(
            index=["kind", "intensity"], columns="method", values=["accuracy", "stderr"]
        )
        z = (wide["accuracy"]["predicted"] - wide["accuracy"]["montecarlo"]) / (
            wide["stderr"]["predicted"] ** 2 + wide["stderr"]["montecarlo"] ** 2
        ) ** 0.5
        rows = wide[z.abs() > sigmas]
        frames.append(pd.DataFrame({
            "figure": "accuracy", "kind": rows.index.get_level_values("kind"),
            "intensity": rows.index.get_level_values("intensity"), "method": "predicted",
            "predicted": rows["accuracy"]["predicted"].to_numpy(),
            "simulated": rows["accuracy"]["montecarlo"].to_numpy(),
            "stderr": rows["stderr"]["montecarlo"].to_numpy(), "z": z[z.abs() > sigmas].to_numpy(),
            "relative_error": ((rows["accuracy"]["predicted"] - rows["accuracy"]["montecarlo"])
                               / rows["accuracy"]["montecarlo"]).to_numpy(),
        }))  # fmt: skip
    if not frames:
        return pd.DataFrame()
    result = pd.concat([frame for frame in frames if not frame.empty] or frames, ignore_index=True)
    return result.reindex(result["z"].abs().sort_values(ascending=False).index).reset_index(drop=True)
