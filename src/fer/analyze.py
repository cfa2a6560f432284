"""(Re)make every plot of a run: ``python -m fer.analyze run_dir=logs/train/runs/<run>``.

Into ``<run_dir>/plots/``: the run-level plots that training also writes (learning curves,
confusion matrices, per-class precision/recall; :func:`fer.plots.plot_run`), plus, from the
checkpoint and the dataset (``data`` group, as in ``fer.evaluate``), a grid of example faces per
expression and Grad-CAM on a few faces of ``split``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fer import load_model
from fer.cli import entry_point
from fer.data import FER2013DataModule
from fer.data.folder import FolderDataModule
from fer.data.sources import FERData
from fer.factory import build_datamodule
from fer.plots import PLOTS_DIR, examples_figure, gradcam_figure, pick_per_class, plot_run, save
from fer.run.rundir import METRICS_FILE, read_metrics

log = logging.getLogger(__name__)


def run_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint as ``metrics.json`` names it, else ``checkpoints/last.ckpt``."""
    best = read_metrics(run_dir).get("best_checkpoint") if (run_dir / METRICS_FILE).is_file() else None
    for candidate in (best, run_dir / "checkpoints" / "last.ckpt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(f"No checkpoint found for {run_dir} (metrics.json best_checkpoint, checkpoints/last.ckpt): pass ckpt_path=PATH.")


def split_data(datamodule: FER2013DataModule | FolderDataModule, split: str) -> FERData:
    """The images of one split of a set-up FER-2013 or folder DataModule."""
    if isinstance(datamodule, FolderDataModule):
        return datamodule.split_data(split)
    if split not in datamodule.indices:
        raise ValueError(f"split={split!r} must be one of {', '.join(datamodule.indices)}.")
    return datamodule.data.subset(datamodule.indices[split])


def analyze(cfg: DictConfig) -> list[Path]:
    """Write all plots of a run directory and return their paths."""
    run_dir = Path(cfg.run_dir)
    if not (run_dir / METRICS_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} has no {METRICS_FILE}: run_dir must be a finished fer.train or fer.evaluate run directory.")
    written = plot_run(run_dir)
    checkpoint = Path(cfg.ckpt_path) if cfg.ckpt_path else run_checkpoint(run_dir)
    model = load_model(str(checkpoint))
    datamodule = build_datamodule(cfg, model.input_spec)
    datamodule.setup("test")
    data = split_data(datamodule, cfg.split)
    out = run_dir / PLOTS_DIR
    title = f"{cfg.split} ({len(data)} faces)"
    written.append(save(examples_figure(data, cfg.examples_per_class, cfg.seed, title=title), out / f"examples_{cfg.split}.png"))
    chosen = pick_per_class(data.labels, cfg.gradcam_faces, cfg.seed)
    figure = gradcam_figure(model, list(data.images[chosen]), data.labels[chosen].tolist())
    written.append(save(figure, out / f"gradcam_{cfg.split}.png"))
    log.info("Wrote %d plots to %s (checkpoint %s)", len(written), out, checkpoint)
    return written


main = entry_point("analyze", "analyze", analyze)


if __name__ == "__main__":
    main()
