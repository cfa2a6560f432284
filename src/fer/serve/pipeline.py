"""One image -> its faces, and a batch of faces -> probabilities: the two halves of
:func:`fer.inference.predict_image`, split so that the first runs per request in a thread pool and
the second once per batch of requests (:mod:`fer.serve.batcher`).

Large photos are searched for faces on a copy at most ``detect_max_side`` pixels long (the boxes are
given in the original's pixels), so a 40-megapixel upload costs about what a 1-megapixel one does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from fer.inference import is_face_crop, prepare_faces
from fer.input_spec import InputSpec
from fer.training.module import FERClassifier
from fer.vision.faces import Box, FaceDetector
from fer.vision.images import IMAGE_SIZE, to_gray


@dataclass
class FoundFaces:
    """The faces of one image, ready for the model: boxes, how they were found, the model's inputs."""

    boxes: list[Box]
    source: str  # "crop": the whole image is the face; "detected": found by the cascade
    aligned: list[bool]
    inputs: torch.Tensor  # uint8 [N, 1, S, S], :func:`fer.inference.prepare_faces`


def find_faces(
    image: np.ndarray, detector: FaceDetector, input_spec: InputSpec, detect: bool = True, crop_max_side: int = 96, detect_max_side: int = 1280
) -> FoundFaces:
    """The faces of ``image`` (uint8 gray or RGB); the whole image as one face when ``detect`` is
    false or it is a face crop already (:func:`fer.inference.is_face_crop`), as fer.predict does."""
    gray = to_gray(image)
    height, width = gray.shape
    if not detect or is_face_crop(image, crop_max_side):
        return FoundFaces([Box(0, 0, width, height)], "crop", [False], prepare_faces([gray], input_spec))
    scale = min(1.0, detect_max_side / max(height, width))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    faces = detector.faces(small, IMAGE_SIZE)
    boxes = [Box(*(round(v / scale) for v in face.box.as_list())) for face in faces]
    return FoundFaces(boxes, "detected", [face.aligned for face in faces], prepare_faces([face.crop for face in faces], input_spec))


def classify_batch(model: FERClassifier, inputs: torch.Tensor, tta: str) -> np.ndarray:
    """Calibrated probabilities [N, 7] of prepared inputs with the test-time augmentation ``tta``
    (per request, so unlike :func:`fer.inference.classify` it does not use the model's own mode)."""
    with torch.inference_mode():
        logits = model.predict_logits(inputs.to(model.device), tta)
        return model.probabilities(logits).cpu().numpy()
