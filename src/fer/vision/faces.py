"""Face detection, alignment and cropping: MTCNN (:mod:`fer.vision.mtcnn`) or the Haar cascade
that ships inside opencv-python.

Nothing is downloaded: MTCNN's weights are package data of fer, the cascade files come from
``cv2.data.haarcascades`` (OpenCV 4.x wheels; OpenCV 5 moved the cascades out of the main package,
hence the ``<5`` pin in pyproject).

Both give the same kind of box: MTCNN's (taller than wide, brows to chin) is turned into the square
the cascade would draw around the same face (:func:`mtcnn_box`), so ``margin`` frames a face the same
way whichever found it, and the tracker and the crops do not depend on the method.

Speed: the cascade runs on a copy scaled so that the smallest face wanted (``min_face`` pixels)
becomes the cascade's 24-pixel window; a 640x480 photo with ``min_face=48`` is searched at 320x240,
about 4x faster than at full size, and faces smaller than 48 pixels hold too little detail for a
48x48 expression model anyway.

Alignment (optional, ``align=True``, a few ms per face): the eye cascade looks for two eyes in the
upper part of each face; when it finds them the image is rotated about the face centre so that the
eyes are level. When it does not (it often misses one eye, behind glasses or in shadow) the face is
cropped square without rotation, and :class:`Face` says which happened.

Two cores for one image (``detect(gray, pool)``), for the cascade: its search scales are split in two runs
of about equal cost, the larger faces searched in ``pool`` while the calling thread searches the
smaller, and their raw hits grouped as ``detectMultiScale`` groups them, so the boxes are the same
as one call's. OpenCV's own thread pool would do this too, but it is one per process: set to two
threads it makes concurrent searches contend (fer.serve's tail latency doubled), so it stays at one
and only a search that has the machine to itself is split.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from fer.vision.images import resize
from fer.vision.mtcnn import MTCNN

METHODS = ("mtcnn", "haar")

FACE_CASCADE = "haarcascade_frontalface_default.xml"
# the eye cascade trained with glasses too (plain haarcascade_eye.xml misses eyes behind glasses)
EYE_CASCADE = "haarcascade_eye_tree_eyeglasses.xml"
EYE_ROI_WIDTH = 120
# the frontal-face cascade only fires on near-upright faces: a steeper "eye line" is two wrong hits
MAX_EYE_ANGLE = 25.0
CASCADE_WINDOW = 24  # the frontal-face cascade's training window, in pixels
GROUP_EPS = 0.2  # how alike the cascade's raw hits must be to group (detectMultiScale's own value)
# a search scale's fixed cost (rescaling, integral images) in units of the first scale's window work:
# the value of 0-0.6 that made split searches of 640x480 frames fastest on an AMD EPYC (0.56-0.59x
# one search's time at min_face 48 / scale 1.1 and 64 / 1.2; 0.6 gave 0.70-0.74x, 0 0.75-0.78x)
SCALE_OVERHEAD = 0.3
# MTCNN's box (x1, y1, x2, y2) -> the cascade's square for the same face: side MTCNN_SIDE * sqrt(w * h),
# centre moved by MTCNN_SHIFT times that side; the medians over the FER-2013 training faces that
# both found exactly once (experiments/detectors/calibrate.py, detectors.json)
MTCNN_SIDE = 1.069
MTCNN_SHIFT = (0.012, -0.006)


@dataclass(frozen=True)
class Box:
    """A face box in pixel coordinates of the original image."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


@dataclass
class Face:
    """One face cut out of an image: its box, the square grayscale crop and whether it was aligned."""

    box: Box
    crop: np.ndarray
    aligned: bool


def split_window(shape: tuple[int, ...], scale_factor: float) -> int | None:
    """The window side that splits the cascade's search scales over an image of ``shape`` into two
    runs of about equal cost (windows below it, and from it up), or None when there is one scale.
    The scales are detectMultiScale's: windows of ``CASCADE_WINDOW * scale_factor**i`` pixels that
    fit the image; each costs ``SCALE_OVERHEAD`` plus its share of windows, ``scale_factor**(-2i)``."""
    windows, costs, factor = [], [], 1.0
    while round(CASCADE_WINDOW * factor) <= min(shape[:2]):
        windows.append(round(CASCADE_WINDOW * factor))
        costs.append(SCALE_OVERHEAD + factor**-2)
        factor *= scale_factor
    half, spent = sum(costs) / 2, 0.0
    for window, cost in zip(windows[1:], costs):
        spent += cost
        if spent >= half:
            return window
    return None


def load_cascade(name: str) -> cv2.CascadeClassifier:
    """A cascade from opencv's package data; a missing file says which OpenCV provides it."""
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise RuntimeError(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 moved them out of the main package). "
            "Install the version this project pins: pip install 'opencv-python-headless>=4.9.0.80,<5'."
        )
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(
            f"Cannot load the Haar cascade {path} from OpenCV {cv2.__version__}. "
            "Reinstall it: pip install --force-reinstall 'opencv-python-headless>=4.9.0.80,<5'."
        )
    return cascade


@functools.lru_cache(maxsize=4)
def shared_mtcnn(min_face: int) -> MTCNN:
    """One MTCNN per ``min_face`` for the whole process: its networks hold no state between calls,
    so every detector and thread can share them, and the weights are read once."""
    return MTCNN(min_face)


def mtcnn_box(x1: float, y1: float, x2: float, y2: float) -> Box:
    """An MTCNN box as the square the Haar cascade draws around the same face (see MTCNN_SIDE)."""
    side = MTCNN_SIDE * math.sqrt(max(x2 - x1, 0.0) * max(y2 - y1, 0.0))
    cx = (x1 + x2) / 2.0 + MTCNN_SHIFT[0] * side
    cy = (y1 + y2) / 2.0 + MTCNN_SHIFT[1] * side
    return Box(int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), int(round(side)), int(round(side)))


class FaceDetector:
    """Find faces in grayscale images and cut them out as square crops with a margin.

    Args:
        min_face: smallest face side to find, in pixels of the original image.
        scale_factor: (haar) step between the cascade's search scales (smaller: slower, finds more).
        min_neighbors: (haar) overlapping hits a detection needs (larger: fewer false faces).
        margin: extra border around the face's box, as a fraction of its side on each side. The
            cascade's box is about FER-2013's whole crop, so 0.1 frames faces about 1.2x looser than
            FER-2013 does (experiments/benchmarks.md); not retuned until a trained model can measure it.
        align: rotate each face so that its eyes are level when the eye cascade finds both eyes.
        method: ``mtcnn`` (three small CNNs: finds more faces, and searches a 640x480 photo in about
            half the time) or ``haar`` (OpenCV's frontal-face cascade); see experiments/detectors/.
    """

    def __init__(
        self,
        min_face: int = 48,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        margin: float = 0.1,
        align: bool = False,
        method: str = "mtcnn",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"detector method={method!r} is not one of {', '.join(METHODS)}.")
        if method == "haar" and min_face < CASCADE_WINDOW:
            raise ValueError(f"min_face={min_face} must be at least the cascade window ({CASCADE_WINDOW} pixels).")
        if scale_factor <= 1.0 or min_neighbors < 0 or not 0.0 <= margin <= 1.0:
            raise ValueError(
                f"scale_factor={scale_factor} must be > 1, min_neighbors={min_neighbors} >= 0 and margin={margin} in [0, 1]."
            )
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.margin = margin
        self.align = align
        self.method = method
        self.mtcnn = shared_mtcnn(min_face) if method == "mtcnn" else None
        self.face_cascade = load_cascade(FACE_CASCADE) if method == "haar" else None
        self.eye_cascade = load_cascade(EYE_CASCADE) if align else None
        self._far_cascade: cv2.CascadeClassifier | None = None  # the pool's half of a split search

    def copy(self) -> FaceDetector:
        """A detector with the same settings for another thread: its own cascades (OpenCV does not
        promise that one cascade may run in two threads at once), the same MTCNN (stateless)."""
        return FaceDetector(self.min_face, self.scale_factor, self.min_neighbors, self.margin, self.align, self.method)

    def detect(self, gray: np.ndarray, pool: Executor | None = None) -> list[Box]:
        """Face boxes in a uint8 HxW image, in reading order (top to bottom, then left to right).

        With ``pool`` (a thread that is otherwise idle) the search is split across it and this thread:
        the same boxes in less time (see the module's docstring and :meth:`MTCNN.find`)."""
        if self.mtcnn is not None:
            boxes = [mtcnn_box(*box) for box in self.mtcnn.find(gray, pool)[0]]
        else:
            boxes = self._cascade(gray, pool)
        # the whole box breaks ties, so the order never depends on the order of the detector's hits
        # (with OpenCV's threads, or a split search, that order varies)
        return sorted(boxes, key=lambda b: (b.y // max(b.h, 1), b.x, b.y, b.w, b.h))

    def _cascade(self, gray: np.ndarray, pool: Executor | None) -> list[Box]:
        """The Haar cascade's boxes; split with ``pool`` as the module's docstring says."""
        scale = min(1.0, CASCADE_WINDOW / self.min_face)
        small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        cut = split_window(small.shape, self.scale_factor) if pool is not None else None
        if cut is None:
            found = self.face_cascade.detectMultiScale(
                small, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(CASCADE_WINDOW, CASCADE_WINDOW)
            )
        else:
            if self._far_cascade is None:
                self._far_cascade = load_cascade(FACE_CASCADE)
            far = pool.submit(self._hits, self._far_cascade, small, (cut, cut), (0, 0))
            hits = self._hits(self.face_cascade, small, (CASCADE_WINDOW, CASCADE_WINDOW), (cut - 1, cut - 1)) + far.result()
            found = cv2.groupRectangles(hits, self.min_neighbors, GROUP_EPS)[0] if self.min_neighbors > 0 else hits
        return [Box(*(int(round(v / scale)) for v in box)) for box in found]

    def _hits(
        self, cascade: cv2.CascadeClassifier, small: np.ndarray, min_size: tuple[int, int], max_size: tuple[int, int]
    ) -> list[list[int]]:
        """The cascade's raw, ungrouped hits with windows from ``min_size`` to ``max_size`` (``(0, 0)``: no upper bound)."""
        found = cascade.detectMultiScale(small, scaleFactor=self.scale_factor, minNeighbors=0, minSize=min_size, maxSize=max_size)
        return [[int(v) for v in box] for box in found]

    def faces(self, gray: np.ndarray, size: int = 48, pool: Executor | None = None) -> list[Face]:
        """Every detected face as a ``size`` x ``size`` crop (aligned if asked and possible); ``pool``: see :meth:`detect`."""
        return [self.cut(gray, box, size) for box in self.detect(gray, pool)]

    def cut(self, gray: np.ndarray, box: Box, size: int = 48) -> Face:
        """The square crop of ``box`` with the margin, resized to ``size``; rotated if aligned."""
        angle = self.eye_angle(gray, box) if self.align else None
        side = box.w * (1.0 + 2.0 * self.margin)
        centre = (box.x + box.w / 2.0, box.y + box.h / 2.0)
        crop = crop_square(gray, centre, side, size, angle or 0.0)
        return Face(box=box, crop=crop, aligned=angle is not None)

    def eye_angle(self, gray: np.ndarray, box: Box) -> float | None:
        """Angle in degrees of the line from the left to the right eye (positive: the right eye is
        lower), or None unless two eyes are found well apart at a plausible angle. The eye cascade
        runs on the upper face shrunk to ``EYE_ROI_WIDTH`` pixels, which keeps it to a few ms."""
        upper = gray[box.y : box.y + box.h * 6 // 10, box.x : box.x + box.w]
        if upper.shape[1] > EYE_ROI_WIDTH:
            scale = EYE_ROI_WIDTH / upper.shape[1]
            upper = cv2.resize(upper, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        width = upper.shape[1]
        smallest = max(width // 10, 5)
        eyes = self.eye_cascade.detectMultiScale(upper, scaleFactor=1.1, minNeighbors=3, minSize=(smallest, smallest))
        if len(eyes) < 2:
            return None
        largest = sorted(eyes, key=lambda e: e[2] * e[3], reverse=True)[:2]
        (lx, ly), (rx, ry) = sorted((x + w / 2.0, y + h / 2.0) for x, y, w, h in largest)
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
        if rx - lx < width / 5 or abs(angle) > MAX_EYE_ANGLE:
            return None
        return angle


@contextlib.contextmanager
def detection_threads(count: int) -> Iterator[None]:
    """Run OpenCV and torch (MTCNN's networks) with ``count`` threads of their own inside the block.
    When the caller runs detectors in several threads, the libraries' own pools on top of them
    oversubscribe the cores. Measured with 2 detection threads: OpenCV's 2 threads each halved the
    photos/s of the Haar cascade against 1 each; torch's 2 threads each gave 37.4 photos/s with MTCNN
    against 42.0 with 1 each (fer.predict's photos, an Intel Xeon with AMX)."""
    previous = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(count)
    torch.set_num_threads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous[0])
        torch.set_num_threads(previous[1])


def crop_square(gray: np.ndarray, centre: tuple[float, float], side: float, size: int, angle: float = 0.0) -> np.ndarray:
    """A ``size`` x ``size`` view of the square of ``side`` pixels around ``centre``, rotated by
    ``angle`` degrees (OpenCV's sense: the angle of a tilted eye line levels it); parts outside the
    image repeat its border, so faces at the edge keep their proportions. Cut at full resolution,
    then resized by :func:`fer.vision.images.resize` (area averaging), so large faces do not alias."""
    side_px = max(1, round(side))
    matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
    matrix[0, 2] += side_px / 2.0 - centre[0]
    matrix[1, 2] += side_px / 2.0 - centre[1]
    patch = cv2.warpAffine(gray, matrix, (side_px, side_px), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return resize(patch, size)
