"""Figures for a run: confusion matrices, per-class precision/recall, learning curves, example
faces and Grad-CAM.

Figures are drawn with matplotlib's object-oriented API on Agg canvases (no pyplot, no global
backend switch), so they work headless, in threads and in notebooks (``display(fig)``). Each
``*_figure`` function returns a :class:`~matplotlib.figure.Figure`; :func:`save` writes a PNG;
:func:`plot_run` writes the run-level plots into ``<run_dir>/plots/``.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from torch import nn

from fer.classes import CLASSES
from fer.data.sources import FERData
from fer.inference import prepare_faces
from fer.run.rundir import read_metrics
from fer.scoring.calibration import reliability
from fer.scoring.predictions import PREDICTIONS_FILE, load_predictions
from fer.training.tta import centre_crop

if TYPE_CHECKING:
    from fer.training.module import FERClassifier

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
# where conf/logger/csv.yaml makes Lightning's CSVLogger write, relative to the run directory
METRICS_CSV = Path("csv") / "metrics.csv"
CURVES = ("train/loss", "val/loss", "train/acc", "val/acc")


class PlotError(ValueError):
    """The run holds nothing a figure can show (e.g. no trained epoch): :func:`plot_run` and
    :func:`plot_reliability` warn and leave that figure out, and the run stands."""


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``figure`` as a PNG (creating folders) and return the path.

    The figure is stored with an adaptive palette of 256 colours, which is what a plot has (flat
    fills, antialiased text, a colour map; grey faces exactly), and zlib's best compression:
    about a third of matplotlib's RGBA bytes, so the run plots kept in git leave the checkout
    small enough to travel to a GPU host with the data (experiments/lean_pngs.py does the same
    to PNGs already written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rendered = io.BytesIO()
    figure.savefig(rendered, format="png", dpi=dpi)
    with Image.open(rendered) as image:
        image.convert("RGB").quantize(256).save(path, format="PNG", optimize=True)
    return path


def precision_recall(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class precision (column-wise) and recall (row-wise) of a [true, predicted] count
    matrix; a class never predicted (or never present) gets 0."""
    confusion = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(confusion)
    return hits / np.maximum(confusion.sum(axis=0), 1), hits / np.maximum(confusion.sum(axis=1), 1)


def confusion_figure(confusion: np.ndarray, classes: Sequence[str] = CLASSES, title: str = "") -> Figure:
    """Counts and row-normalised (recall per true class) confusion matrices side by side."""
    confusion = np.asarray(confusion, dtype=np.int64)
    normalised = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    figure = new_figure(13, 5.5)
    for axes, values, name, fmt in (
        (figure.add_subplot(1, 2, 1), confusion, "counts", "d"),
        (figure.add_subplot(1, 2, 2), normalised, "row-normalised", ".2f"),
    ):
        image = axes.imshow(values, cmap="Blues", vmin=0)
        figure.colorbar(image, ax=axes, shrink=0.8)
        high = values.max() / 2 if values.max() > 0 else 1
        for (row, col), value in np.ndenumerate(values):
            axes.text(col, row, format(value, fmt), ha="center", va="center", fontsize=8,
                      color="white" if value > high else "black")
        axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        axes.set_yticks(range(len(classes)), classes)
        axes.set_xlabel("predicted")
        axes.set_ylabel("true")
        axes.set_title(f"{title} confusion ({name})".strip())
    return figure


def per_class_figure(confusion: np.ndarray, classes: Sequence[str] = CLASSES, title: str = "") -> Figure:
    """Precision and recall bars per class, with each class's support in the labels."""
    precision, recall = precision_recall(confusion)
    support = np.asarray(confusion).sum(axis=1)
    figure = new_figure(9, 4.5)
    axes = figure.add_subplot()
    x = np.arange(len(classes))
    axes.bar(x - 0.2, precision, width=0.4, label="precision")
    axes.bar(x + 0.2, recall, width=0.4, label="recall")
    axes.set_xticks(x, [f"{c}\n(n={n})" for c, n in zip(classes, support)])
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("score")
    axes.legend(loc="upper right")
    axes.grid(axis="y", alpha=0.3)
    axes.set_title(f"{title} precision and recall per class".strip())
    return figure


def read_learning_curves(path: str | os.PathLike) -> dict[str, dict[int, float]]:
    """Per-epoch ``train/loss``, ``val/loss``, ``train/acc``, ``val/acc`` from a CSVLogger
    ``metrics.csv``. Only epochs that trained are kept: the validation that ``fer.train`` runs
    on the best checkpoint after fitting is logged under one epoch more and is not a curve point."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    curves: dict[str, dict[int, float]] = {name: {} for name in CURVES}
    for row in rows:
        if not row.get("epoch"):
            continue
        epoch = int(float(row["epoch"]))
        for name in CURVES:
            if row.get(name):
                curves[name][epoch] = float(row[name])
    trained = set(curves["train/loss"]) | set(curves["train/acc"])
    return {name: {e: v for e, v in sorted(values.items()) if e in trained} for name, values in curves.items()}


def learning_curves_figure(curves: dict[str, dict[int, float]], title: str = "") -> Figure:
    """Loss and accuracy per epoch, train and val."""
    if not any(curves.values()):
        raise PlotError("the run trained no epoch (trainer.max_epochs=0?) or logged no train/ or val/ epoch metrics")
    figure = new_figure(11, 4.2)
    for index, metric in enumerate(("loss", "acc")):
        axes = figure.add_subplot(1, 2, index + 1)
        for stage in ("train", "val"):
            values = curves.get(f"{stage}/{metric}", {})
            if values:
                axes.plot([e + 1 for e in values], list(values.values()), marker="o", label=stage)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("accuracy" if metric == "acc" else "cross-entropy loss")
        axes.grid(alpha=0.3)
        axes.legend()
        axes.set_title(f"{title} {'accuracy' if metric == 'acc' else 'loss'}".strip())
    return figure


def pick_per_class(labels: np.ndarray, count: int, seed: int = 0) -> list[int]:
    """Up to ``count`` indices, taking classes in turn (a seeded shuffle within each class)."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in range(len(CLASSES))]
    picked: list[int] = []
    while len(picked) < count and any(pools):
        for pool in pools:
            if pool and len(picked) < count:
                picked.append(int(pool.pop(0)))
    return picked


def examples_figure(data: FERData, per_class: int = 6, seed: int = 0, title: str = "") -> Figure:
    """A grid of ``per_class`` faces (seeded random) for each expression, one row per class."""
    rng = np.random.default_rng(seed)
    figure = new_figure(1.3 * per_class + 1.2, 1.35 * len(CLASSES))
    grid = figure.add_gridspec(len(CLASSES), per_class)
    for label, name in enumerate(CLASSES):
        members = np.flatnonzero(data.labels == label)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False) if len(members) else []
        for col in range(per_class):
            axes = figure.add_subplot(grid[label, col])
            axes.set_xticks([])
            axes.set_yticks([])
            if col < len(chosen):
                axes.imshow(data.images[chosen[col]], cmap="gray", vmin=0, vmax=255)
            if col == 0:
                axes.set_ylabel(f"{name}\n({len(members)})", rotation=0, ha="right", va="center")
    if title:
        figure.suptitle(title)
    return figure


def gradcam_layer(net: nn.Module) -> nn.Module:
    """The max-pool that closes the last convolutional block: its input is that block's output."""
    modules = list(net.modules())
    convs = [i for i, m in enumerate(modules) if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"Grad-CAM needs a convolutional network; {type(net).__name__} has no Conv2d.")
    for module in modules[convs[-1] + 1 :]:
        if isinstance(module, nn.MaxPool2d):
            return module
    raise ValueError(f"Grad-CAM here hooks the max-pool after the last convolution, and {type(net).__name__} has none.")


def gradcam(
    model: FERClassifier, faces: Sequence[np.ndarray], targets: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps [N, S, S] in [0, 1] over the centre crop the model scores (``crop_size``),
    for the predicted class (or ``targets``), and the probabilities [N, 7]. Uses the plain forward
    pass (no test-time augmentation). Not inside ``torch.inference_mode``: it needs gradients."""
    inputs = centre_crop(prepare_faces(faces, model.input_spec), model.input_spec.crop_size).to(model.device)
    captured: dict[str, torch.Tensor] = {}

    def keep_activation(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        activation = args[0]
        if not activation.requires_grad:  # frozen layers before it: ask autograd for this tensor
            activation.requires_grad_(True)
        captured["activation"] = activation

    handle = gradcam_layer(model.net).register_forward_pre_hook(keep_activation)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(inputs).float()
            chosen = logits.argmax(dim=1) if targets is None else torch.as_tensor(targets, device=logits.device)
            score = logits.gather(1, chosen[:, None]).sum()
            (gradient,) = torch.autograd.grad(score, captured["activation"])
    finally:
        handle.remove()
        model.train(was_training)
    activation = captured["activation"].detach().float()
    weights = gradient.float().mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-8)
    return cam.cpu().numpy(), logits.detach().softmax(dim=1).cpu().numpy()


def gradcam_figure(
    model: FERClassifier, faces: Sequence[np.ndarray], labels: Sequence[int] | None = None, title: str = ""
) -> Figure:
    """Each face (top) and its Grad-CAM for the predicted class over it (bottom), titled
    ``predicted probability`` and, given ``labels``, the true class."""
    cams, probabilities = gradcam(model, faces)
    views = centre_crop(prepare_faces(faces, model.input_spec), model.input_spec.crop_size)[:, 0].numpy()
    figure = new_figure(1.6 * len(faces) + 0.4, 3.6)
    for index, (view, cam, probs) in enumerate(zip(views, cams, probabilities)):
        predicted = int(probs.argmax())
        top = figure.add_subplot(2, len(faces), index + 1)
        top.imshow(view, cmap="gray", vmin=0, vmax=255)
        caption = f"{CLASSES[predicted]} {probs[predicted]:.2f}"
        if labels is not None:
            caption += f"\ntrue: {CLASSES[labels[index]]}"
        top.set_title(caption, fontsize=8)
        bottom = figure.add_subplot(2, len(faces), len(faces) + index + 1)
        bottom.imshow(view, cmap="gray", vmin=0, vmax=255)
        bottom.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        for axes in (top, bottom):
            axes.set_xticks([])
            axes.set_yticks([])
    figure.suptitle(title or "Grad-CAM, last convolutional block")
    return figure


def plot_run(run_dir: str | os.PathLike) -> list[Path]:
    """Learning curves (from the CSV logger) and, for each split in ``metrics.json``, the
    confusion matrices and per-class precision/recall, as PNGs in ``<run_dir>/plots/``."""
    run_dir = Path(run_dir)
    out = run_dir / PLOTS_DIR
    metrics = read_metrics(run_dir)
    written = []
    if (run_dir / METRICS_CSV).is_file():
        curves = read_learning_curves(run_dir / METRICS_CSV)
        written += _draw(lambda: learning_curves_figure(curves), out / "learning_curves.png")
    elif metrics.get("task") == "train":
        log.warning("No %s (the CSV logger was off; use logger=csv or logger=many): no learning curves.", run_dir / METRICS_CSV)
    for split in ("train", "val", "test"):
        if isinstance(metrics.get(split), dict) and "confusion" in metrics[split]:
            confusion = np.asarray(metrics[split]["confusion"])
            written.append(save(confusion_figure(confusion, title=split), out / f"confusion_{split}.png"))
            written.append(save(per_class_figure(confusion, title=split), out / f"per_class_{split}.png"))
    written += plot_reliability(run_dir)
    log.info("Plots in %s: %s", out, ", ".join(p.name for p in written))
    return written


def reliability_figure(probabilities: dict[str, np.ndarray], labels: np.ndarray, title: str = "") -> Figure:
    """Accuracy against confidence per bin, one line per set of probabilities (e.g. before and
    after temperature scaling), each labelled with its ECE; bar heights are the bins' image counts."""
    if len(labels) == 0:
        raise PlotError("the split has no images")
    figure = new_figure(8.4, 3.6)
    curve, counts = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    curve.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="perfectly calibrated")
    for (name, values), marker in zip(probabilities.items(), "os^"):
        bins = reliability(values, labels)
        filled = bins.counts > 0
        curve.plot(bins.confidence[filled], bins.accuracy[filled], marker=marker, label=f"{name} (ECE {100 * bins.ece:.1f}%)")
        counts.stairs(bins.counts, bins.edges, label=name)
    curve.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy", title=title or "reliability")
    curve.legend(loc="upper left", fontsize=8)
    counts.set(xlim=(0, 1), xlabel="confidence", ylabel="images", title="images per bin")
    return figure


def plot_reliability(run_dir: str | os.PathLike) -> list[Path]:
    """``plots/reliability_<split>.png`` for each split in the run's ``predictions.npz``: the raw
    probabilities and, where the run has a temperature, the calibrated ones."""
    run_dir = Path(run_dir)
    if not (run_dir / PREDICTIONS_FILE).is_file():
        return []
    splits, temperature = load_predictions(run_dir)
    written = []
    for split, outputs in splits.items():
        sets = {"raw": outputs.probabilities()}
        if temperature != 1.0:
            sets[f"T = {temperature:.2f}"] = outputs.probabilities(temperature)
        title = f"{split} ({len(outputs.labels):,} images, tta={outputs.tta})"
        written += _draw(lambda: reliability_figure(sets, outputs.labels, title), run_dir / PLOTS_DIR / f"reliability_{split}.png")
    return written


def _draw(figure: Callable[[], Figure], path: Path) -> list[Path]:
    """``[path]`` of the saved figure, or ``[]`` with a warning naming it when there is nothing to
    draw: a run's metrics matter more than one of its pictures."""
    try:
        drawn = figure()
    except PlotError as error:
        log.warning("No %s: %s.", path.relative_to(path.parent.parent), error)
        return []
    return [save(drawn, path)]
