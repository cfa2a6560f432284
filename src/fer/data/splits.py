"""Train/val/test splits of FER-2013, and removal of train images that leak into val/test."""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from fer.data.sources import UNKNOWN_TEST_HALF, DatasetError, FERData

log = logging.getLogger(__name__)

SPLITS = ("official", "kaggle")


def make_splits(data: FERData, split: str, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Indices of train/val/test.

    - ``official``: Training / PublicTest / PrivateTest (the ICML protocol; report PrivateTest).
    - ``kaggle``: a stratified, seeded ``val_fraction`` of Training / the rest / the whole test
      folder (PublicTest + PrivateTest, 7,178 images): the seed project's protocol.
    """
    training = np.flatnonzero(data.usage == "Training")
    if split == "official":
        if (data.usage == UNKNOWN_TEST_HALF).any():
            raise DatasetError(
                "data.split=official needs to know PublicTest from PrivateTest, but some test file names "
                "lack the PublicTest_/PrivateTest_ prefix. Use data.split=kaggle for such a copy."
            )
        return {
            "train": training,
            "val": np.flatnonzero(data.usage == "PublicTest"),
            "test": np.flatnonzero(data.usage == "PrivateTest"),
        }
    if split == "kaggle":
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction} must be in (0, 1) for data.split=kaggle.")
        val = stratified_sample(data.labels[training], val_fraction, seed)
        mask = np.zeros(len(training), dtype=bool)
        mask[val] = True
        return {"train": training[~mask], "val": training[mask], "test": np.flatnonzero(data.usage != "Training")}
    raise ValueError(f"data.split={split!r} is not one of {', '.join(SPLITS)}.")


def stratified_sample(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Positions of a seeded sample holding ``fraction`` of each class (at least one per class)."""
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(1, round(len(members) * fraction))
        picked.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(picked))


def image_hashes(images: np.ndarray) -> np.ndarray:
    """One digest per image, equal exactly when the pixels are equal."""
    return np.asarray([hashlib.blake2b(image.tobytes(), digest_size=12).hexdigest() for image in images])


def drop_leaks(data: FERData, splits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Remove from train every image whose pixels also appear in val or test."""
    hashes = image_hashes(data.images)
    held_out = set(hashes[np.concatenate([splits["val"], splits["test"]])])
    keep = np.asarray([hashes[i] not in held_out for i in splits["train"]], dtype=bool)
    log.info("data.dedup: removed %d train images that also appear in val/test.", int((~keep).sum()))
    return {**splits, "train": splits["train"][keep]}
