"""The real FER-2013 archive and ImageNet VGG16 weights (skipped unless FER2013_ROOT and
FER_VGG16_WEIGHTS name them): the published split sizes and class counts, image quality, and a few
real transfer-learning steps."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import REAL_ROOT, REAL_WEIGHTS, needs_real_data, needs_real_weights

from fer.classes import CLASSES
from fer.data.sources import FERData, load_fer2013
from fer.data.splits import make_splits
from fer.factory import build_datamodule, build_module, build_trainer

pytestmark = [pytest.mark.real_data, needs_real_data]

TRAIN_PER_CLASS = {
    "angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830, "surprise": 3171,
}
# Mean |difference| of horizontally adjacent pixels: 21.4 on the real archive; a copy blurred with a
# 3x3 Gaussian gives 14.1 and with a 5x5 one 12.0 (measured on this archive).
SHARP_AT_LEAST = 17.0


@pytest.fixture(scope="module")
def real() -> FERData:
    return load_fer2013(REAL_ROOT, os.environ.get("FER_CACHE_DIR"))


def test_the_archive_holds_every_image(real: FERData) -> None:
    assert len(real) == 35_887
    assert real.images.shape == (35_887, 48, 48) and real.images.dtype == np.uint8
    assert Counter(real.usage.tolist()) == {"Training": 28_709, "PublicTest": 3_589, "PrivateTest": 3_589}


def test_official_and_kaggle_split_sizes(real: FERData) -> None:
    official = make_splits(real, "official", 0.1, 0)
    assert [len(official[name]) for name in ("train", "val", "test")] == [28_709, 3_589, 3_589]
    kaggle = make_splits(real, "kaggle", 0.1, 0)
    assert len(kaggle["test"]) == 7_178
    assert len(kaggle["train"]) + len(kaggle["val"]) == 28_709


def test_train_class_counts(real: FERData) -> None:
    train = real.labels[real.usage == "Training"]
    assert dict(zip(CLASSES, np.bincount(train, minlength=len(CLASSES)).tolist())) == TRAIN_PER_CLASS


def test_images_are_not_the_blurred_copy(real: FERData) -> None:
    """A widely mirrored copy has the same names but blurred faces, on which nothing learns."""
    sharpness = np.abs(np.diff(real.images.astype(np.int16), axis=2)).mean()
    assert sharpness > SHARP_AT_LEAST


@needs_real_weights
def test_vgg16_transfer_steps_train_only_the_unfrozen_weights(make_cfg) -> None:
    """Five steps from the real ImageNet weights move the last two convolutions and the head, and
    leave the frozen convolutions exactly as loaded."""
    cfg = make_cfg(
        "model=vgg16",
        f"model.weights_path={REAL_WEIGHTS}",
        f"data.root={REAL_ROOT}",
        f"paths.cache_dir={os.environ.get('FER_CACHE_DIR') or 'null'}",
        "data.batch_size=16",
        "trainer.max_steps=5",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=1",
    )
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule)
    imagenet = torch.load(REAL_WEIGHTS, map_location="cpu", weights_only=True)
    assert torch.equal(module.net.features[0].weight, imagenet["features.0.weight"])
    before = {name: p.detach().clone() for name, p in module.named_parameters()}

    trainer = build_trainer(cfg, logger=False, callbacks=[], enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 5

    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    assert {name.split(".")[2] for name in trainable if name.startswith("net.features.")} == {"26", "28"}
    for name, p in module.named_parameters():
        assert torch.equal(p, before[name]) != (name in trainable), name
