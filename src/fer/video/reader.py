"""Frames of a video file, decoded in a background thread into a small bounded queue (:mod:`fer.video.pipeline`).

OpenCV's decoders release the GIL, so decoding (and the grayscale conversion done beside it) runs beside
the analysis; the queue holds at most ``queue_frames`` frames, so memory stays flat however long the
video is. A frame the decoder fails on is yielded with ``image=None`` when
later frames still decode; when none does, the video ends there, and :attr:`FrameReader.frames_read`
against :attr:`FrameReader.frame_count` (what the container claims) says whether it ended early.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fer.video.pipeline import Background

# suffixes read as videos (lower case): what OpenCV's wheel decodes through its bundled FFmpeg
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# failed reads in a row after which the video is taken to end (a damaged frame is usually one or two)
MAX_BAD_FRAMES = 5


class VideoReadError(ValueError):
    """A video file that cannot be opened or decoded at all; says which and why."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its index from 0, its time in seconds, BGR pixels and gray (None: undecodable)."""

    index: int
    time: float
    image: np.ndarray | None
    gray: np.ndarray | None


def is_video_file(path: str | Path) -> bool:
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(VIDEO_SUFFIXES)


def open_capture(path: Path) -> cv2.VideoCapture:
    """The OpenCV capture of ``path`` (one place, so that tests can stand in a damaged stream)."""
    return cv2.VideoCapture(str(path))


class FrameReader:
    """Iterate over the frames of ``path`` from frame ``start`` (frames before it are skipped exactly, by grabbing).

    Opening checks the file: a missing file, or one that no decoder reads (not a video, damaged, empty), raises
    :class:`VideoReadError`. Use as a context manager, or call :meth:`close`, to stop the decoding thread.
    """

    def __init__(self, path: str | Path, start: int = 0, queue_frames: int = 16) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoReadError(f"Cannot read video {self.path}: no such file.")
        if start < 0 or queue_frames < 1:
            raise ValueError(f"start={start} must be >= 0 and queue_frames={queue_frames} >= 1.")
        self.capture = open_capture(self.path)
        if not self.capture.isOpened():
            self.capture.release()
            raise VideoReadError(f"Cannot open video {self.path}: not a video OpenCV's decoders read (not a video file, damaged or empty).")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 0.0
        count = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if math.isfinite(count) and count > 0 else 0  # 0: the container does not say
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.start = start
        self.frames_read = 0  # index of the last frame decoded + 1, once iteration ends
        self._stage = Background(self._decode(), queue_frames, name=f"decode {self.path.name}")

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._stage)

    def close(self) -> None:
        self._stage.close()
        self.capture.release()

    def _time(self, index: int) -> float:
        return index / self.fps if self.fps else self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

    def _decode(self) -> Iterator[Frame]:
        index = 0
        while index < self.start and self.capture.grab():
            index += 1
        self.frames_read = index
        failed: list[int] = []
        while True:
            ok, image = self.capture.read()
            if not ok or image is None:
                failed.append(index)
                index += 1
                if len(failed) >= MAX_BAD_FRAMES or (self.frame_count and index >= self.frame_count):
                    return
                continue
            for bad in failed:
                yield Frame(bad, self._time(bad), None, None)
            failed.clear()
            gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
            yield Frame(index, self._time(index), image, gray)
            index += 1
            self.frames_read = index
