"""The real FER-2013 archive and ImageNet VGG16 weights (skipped unless FER2013_ROOT and
FER_VGG16_WEIGHTS name them): the published split sizes and class counts, image quality, and a few
real transfer-learning steps."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import REAL_ROOT, REAL_WEIGHTS, needs_real_data, needs_real_weights

from fer.classes import CLASSES
from fer.data.quality import REAL_MEDIAN_SHARPNESS, check_sharpness, sharpness
from fer.data.sources import FERData, load_fer2013
from fer.data.splits import make_splits
from fer.factory import build_datamodule, build_module, build_trainer

pytestmark = [pytest.mark.real_data, needs_real_data]

TRAIN_PER_CLASS = {
    "angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830, "surprise": 3171,
}


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


def test_images_are_not_the_blurred_copy(real: FERData, make_cfg) -> None:
    """A widely mirrored copy has the same names but blurred faces, on which nothing learns: the
    real archive's sharpness stands well clear of the floor that stops such a copy, and is the figure
    that :mod:`fer.data.quality` quotes."""
    floor = make_cfg().data.min_sharpness
    assert float(np.median(sharpness(real.images))) == pytest.approx(REAL_MEDIAN_SHARPNESS, abs=0.05)
    assert check_sharpness(real.images, floor, REAL_ROOT) > 1.5 * floor


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
    module = build_module(cfg, datamodule.class_counts("train"))
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
