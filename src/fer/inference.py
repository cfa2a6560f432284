"""Use a trained model on any image: arrays, PIL images, encoded bytes or files, of any size and colour.

Every input goes the way the test faces go: 48x48 grayscale face (:func:`fer.vision.images.to_face`) ->
resized to the checkpoint's ``input_spec.image_size`` (:func:`fer.data.transforms.eval_transform`)
-> the model, which crops, scales, adapts channels and applies its test-time augmentation itself
(:meth:`FERClassifier.predict_logits`, views from :mod:`fer.training.tta`).

- :func:`predict` takes each image as one face: the whole image is resized to 48x48. Use it on
  face crops.
- :func:`predict_image` finds the faces in a photo first (:class:`fer.vision.faces.FaceDetector`), except
  for images that already are face crops (:func:`is_face_crop`), which are classified as they are.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np
import torch

from fer.classes import CLASSES
from fer.data.transforms import eval_transform
from fer.input_spec import InputSpec
from fer.vision.faces import Box, FaceDetector, detection_threads
from fer.vision.images import IMAGE_SIZE, ImageInput, ImageReadError, load_image, resize, to_gray

if TYPE_CHECKING:
    from fer.training.module import FERClassifier

# An image this small, square and grayscale is taken to be a face crop already (FER-2013 style):
# the cascade cannot find faces much smaller than the image in it, and photos are rarely this small.
CROP_MAX_SIDE = 96
GRAY_TOLERANCE = 8


class Prediction(NamedTuple):
    """Predicted class names and the seven probabilities per image, in :data:`fer.classes.CLASSES` order."""

    labels: list[str]
    probabilities: np.ndarray


@dataclass
class FacePrediction:
    """One face of one image: where it is, how it was found, and what the model says."""

    box: Box
    source: str  # "crop": the whole image was a face crop; "detected": found by the cascade
    aligned: bool
    label: str
    probabilities: np.ndarray

    def as_dict(self) -> dict[str, Any]:
        """The face's fields of fer.predict's JSON rows and fer.serve's answers."""
        return {
            "box": self.box.as_list(),
            "source": self.source,
            "aligned": self.aligned,
            "emotion": self.label,
            "confidence": float(self.probabilities.max()),
            "probabilities": {c: float(p) for c, p in zip(CLASSES, self.probabilities)},
        }


def is_face_crop(image: np.ndarray, max_side: int = CROP_MAX_SIDE) -> bool:
    """True for a square grayscale image of at most ``max_side`` pixels (e.g. a 48x48 FER-2013
    face): such an image is classified as it is, without face detection. Three channels count as
    grayscale when they differ by at most a few levels (a gray JPEG saved as RGB)."""
    height, width = image.shape[:2]
    if height != width or height > max_side:
        return False
    if image.ndim == 2:
        return True
    channels = image.astype(np.int16)
    return int(np.abs(channels - channels[..., :1]).max()) <= GRAY_TOLERANCE


def face_input(gray: np.ndarray, input_spec: InputSpec) -> np.ndarray:
    """A grayscale face of any size -> the uint8 image the model evaluates: 48x48, then resized
    to the checkpoint's ``image_size``, as the evaluation loaders do (the model takes its centre
    crop, or ten crops with ``tta=tencrop``, itself)."""
    transform = _eval_transform(input_spec.image_size)
    face = resize(gray, IMAGE_SIZE)
    return face if transform is None else transform(image=face)["image"]


def prepare_faces(faces: Sequence[np.ndarray], input_spec: InputSpec) -> torch.Tensor:
    """Grayscale faces -> uint8 tensor [N, 1, S, S] (S = ``image_size``), the model's input."""
    size = input_spec.image_size
    if not faces:
        return torch.empty((0, 1, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack([face_input(face, input_spec) for face in faces])).unsqueeze(1)


def classify(model: FERClassifier, inputs: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Calibrated probabilities [N, 7] for prepared inputs (:meth:`FERClassifier.probabilities`),
    in eval mode with the model's test-time augmentation and inference precision (:meth:`FERClassifier.use_precision`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), model.inference_autocast():
            chunks = [
                model.probabilities(model.predict_logits(inputs[i : i + batch_size].to(model.device))).cpu()
                for i in range(0, len(inputs), batch_size)
            ]
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy() if chunks else np.zeros((0, len(CLASSES)), dtype=np.float32)


def predict(model: FERClassifier, images: Any, batch_size: int = 256) -> Prediction:
    """Expressions of face images, each image taken whole as one face (no detection).

    ``images``: one image (array, PIL image or path) or a list of them; a 3-D array is one image
    when its last axis has 1, 3 or 4 channels and otherwise a batch of grayscale images [N, H, W];
    a 4-D array is a batch [N, H, W, C].
    """
    faces = [to_gray(image) for image in as_batch(images)]
    probabilities = classify(model, prepare_faces(faces, model.input_spec), batch_size)
    return Prediction([CLASSES[i] for i in probabilities.argmax(axis=1)], probabilities)


@dataclass
class FoundFaces:
    """The faces of one image, cut out but not yet classified."""

    boxes: list[Box]
    crops: list[np.ndarray]
    aligned: list[bool]
    source: str


@dataclass
class ImageResult:
    """One image of :func:`predict_images`: the decoded pixels (for annotation), its faces, or why it could not be read."""

    image: np.ndarray | None
    faces: list[FacePrediction]
    error: str | None = None


def find_faces(
    array: np.ndarray,
    detector: FaceDetector,
    crop_max_side: int = CROP_MAX_SIDE,
    detect: bool = True,
    detect_max_side: int | None = None,
    pool: Executor | None = None,
) -> FoundFaces:
    """The faces to classify in a decoded image: the whole image when it is a face crop (or ``detect``
    is false), else the detector's. With ``detect_max_side`` a larger image is searched (and its faces
    cut) on a copy at most that long, the boxes given in the original's pixels, so that a huge photo
    costs what a small one does; with ``pool`` (an idle thread) the search is split with it
    (:meth:`FaceDetector.detect`)."""
    gray = to_gray(array)
    height, width = gray.shape
    if not detect or is_face_crop(array, crop_max_side):
        return FoundFaces([Box(0, 0, width, height)], [gray], [False], "crop")
    scale = 1.0 if detect_max_side is None else min(1.0, detect_max_side / max(height, width))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    faces = detector.faces(small, IMAGE_SIZE, pool)
    boxes = [f.box if scale == 1.0 else Box(*(round(v / scale) for v in f.box.as_list())) for f in faces]
    return FoundFaces(boxes, [f.crop for f in faces], [f.aligned for f in faces], "detected")


def classify_found(model: FERClassifier, found: Sequence[FoundFaces], batch_size: int = 256) -> list[list[FacePrediction]]:
    """Classify the faces of several images in one batch; the predictions of each image, in order."""
    crops = [crop for image in found for crop in image.crops]
    probabilities = classify(model, prepare_faces(crops, model.input_spec), batch_size)
    results, start = [], 0
    for image in found:
        results.append(predictions_of(image, probabilities[start : start + len(image.crops)]))
        start += len(image.crops)
    return results


def predictions_of(found: FoundFaces, probabilities: np.ndarray) -> list[FacePrediction]:
    """The faces of one image with their probabilities [N, 7] (however they were computed)."""
    return [FacePrediction(box, found.source, aligned, CLASSES[int(p.argmax())], p) for box, aligned, p in zip(found.boxes, found.aligned, probabilities)]


def predict_image(
    model: FERClassifier, image: ImageInput, detector: FaceDetector, crop_max_side: int = CROP_MAX_SIDE
) -> list[FacePrediction]:
    """Every face of one image (an empty list when none is found); a face crop is used as it is."""
    return classify_found(model, [find_faces(load_image(image), detector, crop_max_side)])[0]


def predict_images(
    model: FERClassifier,
    images: Iterable[ImageInput],
    detector: FaceDetector,
    crop_max_side: int = CROP_MAX_SIDE,
    workers: int = 2,
    batch_faces: int = 32,
) -> Iterator[ImageResult]:
    """:func:`predict_image` for many images, one :class:`ImageResult` each, in order, faster.

    Decoding and face detection (PIL and OpenCV release the GIL) run in ``workers`` threads, a few
    images ahead, while the model classifies the faces of several images in one batch of up to
    ``batch_faces``; an image that cannot be read gives a result with ``error`` and the rest go on.
    """
    detectors = threading.local()

    def find(image: ImageInput) -> tuple[np.ndarray | None, FoundFaces | None, str | None]:
        if not hasattr(detectors, "detector"):
            detectors.detector = detector.copy()
        try:
            array = load_image(image)
        except ImageReadError as error:
            return None, None, str(error)
        return array, find_faces(array, detectors.detector, crop_max_side), None

    ahead = max(1, workers) * 4
    pending: list[tuple[np.ndarray | None, FoundFaces | None, str | None]] = []

    def flush() -> Iterator[ImageResult]:
        found = [faces for _, faces, _ in pending if faces is not None]
        predicted = iter(classify_found(model, found))
        for array, faces, error in pending:
            yield ImageResult(array, next(predicted) if faces is not None else [], error)
        pending.clear()

    single = detection_threads(1) if workers > 1 else contextlib.nullcontext()
    with single, ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fer-faces") as pool:
        queue: deque[Future] = deque()
        source = iter(images)
        for image in itertools.islice(source, ahead):
            queue.append(pool.submit(find, image))
        while queue:
            pending.append(queue.popleft().result())
            for image in itertools.islice(source, 1):
                queue.append(pool.submit(find, image))
            if not queue or sum(len(faces.crops) for _, faces, _ in pending if faces is not None) >= batch_faces:
                yield from flush()


def as_batch(images: Any) -> list[ImageInput]:
    """One image or many -> a list of images (the rule is in :func:`predict`)."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, np.ndarray):
        if images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4)):
            return [images]
        if images.ndim in (3, 4):
            return list(images)
        raise ImageReadError(f"Cannot read an array of shape {images.shape} as images: expected [H, W], [H, W, C], [N, H, W] or [N, H, W, C].")
    return [images]


@lru_cache(maxsize=8)
def _eval_transform(image_size: int) -> Any:
    return eval_transform(image_size, image_size)
