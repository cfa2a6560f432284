"""A batch of faces -> probabilities, once per batch of requests (:mod:`fer.serve.batcher`); the faces
of each request are found in a thread pool by :func:`fer.inference.find_faces` (large photos searched
on a copy at most ``detect_max_side`` pixels long, so a 40-megapixel upload costs about what a
1-megapixel one does)."""

from __future__ import annotations

import numpy as np
import torch

from fer.training.module import FERClassifier


def classify_batch(model: FERClassifier, inputs: torch.Tensor, tta: str) -> np.ndarray:
    """Calibrated probabilities [N, 7] of prepared inputs with the test-time augmentation ``tta``
    (per request, so unlike :func:`fer.inference.classify` it does not use the model's own mode), in the
    model's inference precision."""
    with torch.inference_mode(), model.inference_autocast():
        logits = model.predict_logits(inputs.to(model.device), tta)
        return model.probabilities(logits).cpu().numpy()
