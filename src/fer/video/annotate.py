"""The annotated copy of a video: every frame with each face's box, track id, emotion and probability drawn.

Written with ``cv2.VideoWriter`` and the mp4v codec (in every OpenCV wheel) into an ``.mp4``, at the
source's frame rate (30 when the container does not give one). A frame the decoder failed on has no
pixels to draw on and is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer.video.reader import VideoReadError
from fer.vision.draw import draw_face
from fer.vision.faces import Box

DEFAULT_FPS = 30.0


class AnnotatedVideo:
    """``write(image, rows)`` draws the rows' boxes on a BGR frame and appends it to ``path``."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (width, height)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), fps or DEFAULT_FPS, self.size)
        if not self.writer.isOpened():
            raise VideoReadError(f"Cannot write the annotated video {self.path}: check that the folder is writable.")
        self.scale = max(0.4, max(self.size) / 1000)
        self.thickness = max(1, round(self.scale * 2))

    def write(self, image: np.ndarray, rows: list[dict[str, Any]]) -> None:
        frame = image.copy()
        for row in rows:
            if row["status"] != "ok":
                continue
            box = Box(row["x"], row["y"], row["w"], row["h"])
            draw_face(frame, box, f"#{row['track']} {row['emotion']} {row['confidence']:.2f}", self.scale, self.thickness)
        if frame.shape[1::-1] != self.size:
            frame = cv2.resize(frame, self.size)
        self.writer.write(frame)

    def close(self) -> None:
        self.writer.release()
