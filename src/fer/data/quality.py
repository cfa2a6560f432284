"""Is this copy of FER-2013 fit to train on? A check that runs before hours go into training.

One public copy of FER-2013 has the right file names and counts but blurred faces, on which
nothing learns. Sharpness here is an image's mean absolute 4-neighbour Laplacian in grey levels:
over the real FER-2013's 35,887 images its median is 47.1 (1% of images fall below 25.5); a 3x3
Gaussian blur brings the median of the checked sample to 18.2, a 5x5 one to 12.3.
"""

from __future__ import annotations

import numpy as np

from fer.data.sources import DatasetError

REAL_MEDIAN_SHARPNESS = 47.1
SAMPLE_SIZE = 2048


def sharpness(images: np.ndarray) -> np.ndarray:
    """Mean absolute Laplacian of each image of a uint8 [N, H, W] array (the border left out)."""
    x = images.astype(np.float32)
    centre = x[:, 1:-1, 1:-1]
    laplacian = 4 * centre - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    return np.abs(laplacian).mean(axis=(1, 2))


def check_sharpness(images: np.ndarray, min_median: float, source: str) -> float:
    """The median sharpness of an evenly spaced sample of ``images``; a :class:`DatasetError` if it
    is below ``min_median`` (0 switches the check off)."""
    sample = images[:: max(1, len(images) // SAMPLE_SIZE)]
    median = float(np.median(sharpness(sample)))
    if median < min_median:
        raise DatasetError(
            f"The faces in {source} look blurred: their median sharpness (mean absolute Laplacian) is "
            f"{median:.1f}, against {REAL_MEDIAN_SHARPNESS} for the real FER-2013 and the "
            f"data.min_sharpness={min_median} floor. A blurred public copy of FER-2013 circulates with the "
            "right names and counts, and nothing learns on it: get the dataset from its source (Kaggle or "
            "the ICML fer2013.csv). If these images are meant to be this smooth, set data.min_sharpness=0."
        )
    return median
