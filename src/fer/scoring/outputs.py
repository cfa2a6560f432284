"""After fit, or for a checkpoint: per-image outputs, the temperature fitted on validation, and
the numbers with intervals that ``metrics.json`` keeps (shared by ``fer.train`` and ``fer.evaluate``)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytorch_lightning as pl

from fer.classes import CLASSES
from fer.scoring.calibration import calibration_report, fit_temperature
from fer.scoring.predictions import SplitPredictions, score_report
from fer.scoring.stats import confusion_matrix
from fer.training.module import FERClassifier

log = logging.getLogger(__name__)


def split_outputs(module: FERClassifier, datamodule: Any, stage: str, split: str, tta: str) -> SplitPredictions:
    """The logits ``module`` collected in its last ``stage`` run, with the ids of ``split``'s images.

    ``trainer.limit_<stage>_batches`` scores the first batches of the split only (evaluation loaders
    keep the split's order): those images are named, and a warning says the split's metrics are theirs."""
    logits, labels = module.outputs.pop(stage)
    data = datamodule.split_data(split)
    scored = len(labels)
    if scored > len(data.labels) or not np.array_equal(labels.numpy(), data.labels[:scored]):
        raise RuntimeError(f"The {split} outputs came back in another order than the {split} split's images: cannot name them.")
    if scored < len(data.labels):
        log.warning(
            "Scored %d of the %d %s images (trainer.limit_%s_batches): the %s metrics and predictions are of those images only.",
            scored, len(data.labels), split, stage, split,
        )
    return SplitPredictions(data.names[:scored], labels.numpy(), logits.numpy(), tta)


def split_results(logged: list[dict[str, float]], stage: str, predictions: SplitPredictions, temperature: float) -> dict[str, Any]:
    """One split's entry of ``metrics.json``: the numbers ``trainer.validate``/``trainer.test``
    returned (``<stage>/loss``, ``/acc``, ...), the confusion matrix counted from the per-image
    predictions, then intervals and calibration (:func:`fer.scoring.predictions.score_report`)."""
    (values,) = logged  # one evaluation loader
    names = ["loss", "acc", "acc_macro", "f1_macro", *(f"acc_{c}" for c in CLASSES)]
    results: dict[str, Any] = {name: values[f"{stage}/{name}"] for name in names}
    results["confusion"] = confusion_matrix(predictions.labels, predictions.predicted).tolist()
    return {**results, **score_report(predictions, temperature)}


def calibrate(
    trainer: pl.Trainer, module: FERClassifier, datamodule: Any, checkpoint: str | None, val: SplitPredictions
) -> tuple[dict[str, Any], SplitPredictions]:
    """Fit the temperature on the validation split, scored the way test and prediction score
    (``module.tta``: when validation during fit used another mode, validate once more with it),
    and set it on ``module``. Returns the calibration entry of ``metrics.json`` and the outputs it
    was fitted on."""
    if module.val_tta != module.tta:
        during_fit, module.val_tta = module.val_tta, module.tta
        try:
            trainer.validate(module, datamodule=datamodule, ckpt_path=checkpoint, verbose=False)
        finally:
            module.val_tta = during_fit
        val = split_outputs(module, datamodule, "val", "val", module.tta)
    fitted = fit_temperature(val.logits, val.labels)
    entry: dict[str, Any] = {"fitted_on": "val", "tta": val.tta, "images": len(val.labels), "acc": val.accuracy}
    if fitted is None:
        log.warning(
            "No temperature fits the val split (its NLL has no minimum for T in 1/100..100; the model ranks every "
            "val label first, or none usefully): probabilities stay uncalibrated (T = 1)."
        )
        entry["not_fitted"] = "the val NLL has no minimum for T in 1/100..100"
    module.temperature = fitted or 1.0
    entry.update(calibration_report(val.logits, val.labels, module.temperature))
    entry["temperature"] = module.temperature
    log.info("Temperature %.3f on val (tta=%s): NLL %.4f -> %.4f", module.temperature, val.tta, entry["nll"], entry.get("nll_calibrated", entry["nll"]))
    return entry, val
