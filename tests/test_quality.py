"""fer.data.quality: the sharpness measure, and the check that stops a blurred copy of FER-2013."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import synthetic_face
from PIL import Image, ImageFilter

from fer.data import DatasetError
from fer.data.quality import check_sharpness, sharpness


def _blurred(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius))) for image in images])


def test_sharpness_is_the_mean_absolute_laplacian() -> None:
    flat = np.full((1, 48, 48), 128, np.uint8)
    checkerboard = (np.indices((48, 48)).sum(axis=0) % 2 * 255).astype(np.uint8)[None]
    assert sharpness(flat).tolist() == [0.0]
    assert sharpness(checkerboard).tolist() == [4 * 255.0]  # every inner pixel differs by 255 from its 4 neighbours
    assert sharpness(np.concatenate([flat, checkerboard])).tolist() == [0.0, 4 * 255.0]


def test_a_blurred_copy_is_stopped_and_the_floor_can_be_switched_off() -> None:
    faces = np.stack([synthetic_face(label, index) for label in range(7) for index in range(10)])
    blurred = _blurred(faces, radius=2)
    assert check_sharpness(faces, 25.0, "faces") > 25.0
    with pytest.raises(DatasetError, match=r"faces in blurred/ look blurred: their median sharpness .* is \d+\.\d, .*data\.min_sharpness=0"):
        check_sharpness(blurred, 25.0, "blurred/")
    assert check_sharpness(blurred, 0.0, "blurred/") < 25.0
