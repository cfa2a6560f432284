"""Per-track temporal smoothing of the seven probabilities: an exponential moving average.

A face's expression changes over many frames while the classifier's answer on single frames
flickers; ``smoothed = weight * previous + (1 - weight) * current`` steadies it. ``weight=0`` (the
default) leaves the probabilities as the model gave them. The first frame of a track starts the
average as it is.
"""

from __future__ import annotations

import numpy as np


class Smoother:
    """The running average of each track's probabilities, kept until the track is dropped."""

    def __init__(self, weight: float = 0.0) -> None:
        if not 0.0 <= weight < 1.0:
            raise ValueError(f"video.smoothing={weight} must be in [0, 1): the weight of the past frames (0: off).")
        self.weight = weight
        self.state: dict[int, np.ndarray] = {}

    def __call__(self, track: int, probabilities: np.ndarray) -> np.ndarray:
        current = np.asarray(probabilities, dtype=np.float64)
        previous = self.state.get(track)
        smoothed = current if previous is None or self.weight == 0.0 else self.weight * previous + (1.0 - self.weight) * current
        self.state[track] = smoothed
        return smoothed

    def keep_only(self, tracks: set[int]) -> None:
        """Forget the tracks that ended."""
        self.state = {t: p for t, p in self.state.items() if t in tracks}
