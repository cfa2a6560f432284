"""Face boxes and their labels drawn on BGR images: the annotated photos of fer.predict and the annotated videos."""

from __future__ import annotations

import cv2
import numpy as np

from fer.vision.faces import Box

GREEN = (0, 255, 0)  # BGR


def draw_face(bgr: np.ndarray, box: Box, text: str, scale: float, thickness: int, colour: tuple[int, int, int] = GREEN) -> None:
    """Draw ``box`` and ``text`` in place: the text above the box, or inside its top when there is no room above."""
    x, y, w, h = box.as_list()
    cv2.rectangle(bgr, (x, y), (x + w - 1, y + h - 1), colour, thickness)
    (_, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    origin = (x + 2, y - 4 if y - 4 > text_h else y + text_h + 4)
    cv2.putText(bgr, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
