"""Export a checkpoint for serving without this package:
``python -m fer.export ckpt_path=PATH format=onnx|torchscript``.

The exported graph takes **uint8** grayscale faces ``[B, 1, S, S]`` (``S`` = the checkpoint's
``image_size``, 48 for FER-2013 as is), prepared like :func:`fer.inference.face_input` (face ->
48x48 -> resized to ``image_size``). The batch size ``B`` is dynamic. Inside it runs
:meth:`FERClassifier.predict_logits`: the centre crop (or ten crops), uint8 -> float / 255, gray ->
the net's channels (nets normalise themselves), the network and the checkpoint's test-time
augmentation; it returns ``logits`` and ``probabilities`` (calibrated: ``softmax(logits / T)``
with the checkpoint's temperature, :mod:`fer.scoring.calibration`), both ``[B, 7]`` in
:data:`fer.classes.CLASSES` order. uint8 in means callers never guess a scaling, and it moves 4x
fewer bytes than float.

The file carries its own description (classes, input spec, tta, temperature): ONNX ``metadata_props``, or the
TorchScript extra file ``fer.json``. Each export is checked by running the file
(onnxruntime or ``torch.jit.load``) against PyTorch on a batch of another size.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

# Lightning's guard for tracing a LightningModule (its to_torchscript uses it): without it, the
# tracer's attribute scan reads the ``trainer`` property, which raises outside a Trainer
from pytorch_lightning.core.module import _jit_is_scripting
from torch import Tensor, nn

from fer.classes import CLASSES
from fer.cli import entry_point
from fer.run.rundir import save_config
from fer.training.module import FERClassifier

log = logging.getLogger(__name__)

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
METADATA_FILE = "fer.json"
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")


class ExportWrapper(nn.Module):
    """uint8 faces [B, 1, S, S] -> (logits, probabilities) through ``model.predict_logits``: the
    model's own crop, preparation, network and test-time augmentation, so the export cannot drift
    from PyTorch."""

    def __init__(self, model: FERClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.model.predict_logits(images).float()
        return logits, self.model.probabilities(logits)


def metadata(model: FERClassifier, checkpoint: str | None = None) -> dict[str, Any]:
    size = model.input_spec.image_size
    return {
        "classes": list(CLASSES),
        "input": f"uint8 [batch, 1, {size}, {size}] grayscale faces (fer.inference.face_input)",
        "outputs": list(OUTPUT_NAMES),
        "input_spec": model.input_spec.as_dict(),
        "tta": model.tta,
        "temperature": model.temperature,
        "model": model.hparams.net["name"],
        "checkpoint": checkpoint,
    }


def example_input(model: FERClassifier, batch: int, seed: int = 0) -> Tensor:
    size = model.input_spec.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=generator)


def export_onnx(model: FERClassifier, path: Path, info: dict[str, Any], opset: int = 17) -> Path:
    """ONNX with a dynamic batch axis, through torch's TorchScript-based exporter (``dynamo=False``:
    the dynamo exporter needs onnxscript and gains nothing for these plain CNNs)."""
    import onnx  # optional dependency (pip install 'fer[export]'): only this format needs it

    wrapper = ExportWrapper(model).eval()
    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with torch.no_grad(), _jit_is_scripting():
        torch.onnx.export(
            wrapper, (example_input(model, 2),), str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
        )
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {key: json.dumps(value) for key, value in info.items()})
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))
    return path


def export_torchscript(model: FERClassifier, path: Path, info: dict[str, Any]) -> Path:
    """A traced TorchScript module (the nets have no data-dependent control flow)."""
    wrapper = ExportWrapper(model).eval()
    with torch.no_grad(), _jit_is_scripting():
        traced = torch.jit.trace(wrapper, (example_input(model, 2),))
    torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: json.dumps(info)})
    return path


def run_exported(path: Path, fmt: str, images: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) of an exported file on uint8 images, with its own runtime."""
    if fmt == "onnx":
        import onnxruntime  # optional dependency (pip install 'fer[export]')

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits, probabilities = session.run(list(OUTPUT_NAMES), {INPUT_NAME: images.numpy()})
        return logits, probabilities
    module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        logits, probabilities = module(images)
    return logits.numpy(), probabilities.numpy()


def max_difference(model: FERClassifier, path: Path, fmt: str, batch: int = 3) -> float:
    """Largest absolute difference of the exported logits from ``model.predict_logits`` (fp32)."""
    images = example_input(model, batch, seed=1)
    with torch.inference_mode():
        expected = model.predict_logits(images).float().numpy()
    logits, _ = run_exported(path, fmt, images)
    return float(np.abs(logits - expected).max())


def export(model: FERClassifier, path: str | Path, fmt: str, opset: int = 17, checkpoint: str | None = None) -> Path:
    """Export ``model`` (on CPU, fp32, eval mode) to ``path`` in format ``onnx`` or ``torchscript``."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt!r} must be one of {', '.join(FORMATS)}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").float().eval()
    info = metadata(model, checkpoint)
    if fmt == "onnx":
        return export_onnx(model, path, info, opset)
    return export_torchscript(model, path, info)


def main_export(cfg: DictConfig) -> Path:
    """Load, export, then check the file against PyTorch within ``cfg.tolerance``."""
    save_config(cfg, cfg.paths.output_dir)
    model = FERClassifier.load_from_checkpoint(cfg.ckpt_path, map_location="cpu").eval()
    model.use_tta(cfg.tta)
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r} must be one of {', '.join(FORMATS)}.")
    path = Path(cfg.output) if cfg.output else Path(cfg.paths.output_dir) / FORMATS[cfg.format]
    export(model, path, cfg.format, cfg.opset, str(Path(cfg.ckpt_path).resolve()))
    difference = max_difference(model, path, cfg.format)
    if difference > cfg.tolerance:
        raise RuntimeError(
            f"The exported {cfg.format} model differs from PyTorch by {difference:.2e} > tolerance={cfg.tolerance}: "
            "do not use it; report the model and torch/onnx versions."
        )
    log.info("Exported %s to %s (max |logit difference| vs PyTorch %.2e)", cfg.format, path, difference)
    return path


main = entry_point("export", "export", main_export)


if __name__ == "__main__":
    main()
