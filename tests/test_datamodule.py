"""FER2013DataModule: split sizes, batch layout (uint8 [B, C, H, W]) and the views each loader gives."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import PER_CLASS

from fer.classes import CLASSES
from fer.data import FER2013DataModule

K = len(CLASSES)


def ready(root: Path, **kwargs) -> FER2013DataModule:
    datamodule = FER2013DataModule(str(root), batch_size=kwargs.pop("batch_size", 8), **kwargs)
    datamodule.setup("fit")
    return datamodule


def test_official_sizes_and_class_counts(fer_zip: Path) -> None:
    dm = ready(fer_zip)
    assert {name: len(ds) for name, ds in dm.datasets.items()} == {
        "train": PER_CLASS["Training"] * K,
        "val": PER_CLASS["PublicTest"] * K,
        "test": PER_CLASS["PrivateTest"] * K,
    }
    assert dm.class_counts("train") == [PER_CLASS["Training"]] * K
    assert dm.class_counts("test") == [PER_CLASS["PrivateTest"]] * K


def test_kaggle_sizes(fer_zip: Path) -> None:
    dm = ready(fer_zip, split="kaggle", val_fraction=0.5)
    half = PER_CLASS["Training"] // 2 * K
    assert [len(dm.datasets[name]) for name in ("train", "val", "test")] == [
        half,
        half,
        (PER_CLASS["PublicTest"] + PER_CLASS["PrivateTest"]) * K,
    ]
    assert dm.class_counts("val") == [PER_CLASS["Training"] // 2] * K


@pytest.mark.parametrize("channels", [1, 3])
def test_batches_are_uint8_bchw(fer_zip: Path, channels: int) -> None:
    """Scaling happens in the model, so loaders move raw bytes; 3 channels are copies of the gray one."""
    dm = ready(fer_zip, channels=channels, eval_batch_size=5)
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and tuple(x.shape) == (8, channels, 48, 48)
    assert y.dtype == torch.long and y.shape == (8,)
    assert all(torch.equal(x[:, c], x[:, 0]) for c in range(channels))
    x, _ = next(iter(dm.val_dataloader()))
    assert tuple(x.shape) == (5, channels, 48, 48)


@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_image_and_crop_size_are_respected(fer_zip: Path, augment_on: str) -> None:
    """Training batches are random crops (in the loader, or on the device after transfer);
    evaluation batches stay whole (the model crops, or ten-crops)."""
    dm = ready(fer_zip, image_size=64, crop_size=56, augment=True, augment_on=augment_on)
    images = next(iter(dm.train_dataloader()))[0]
    if augment_on == "device":
        assert tuple(images.shape[1:]) == (1, 64, 64)
        images = dm.batch_augment(images)
    assert tuple(images.shape[1:]) == (1, 56, 56)
    for loader in (dm.val_dataloader(), dm.test_dataloader(), dm.eval_dataloader("train")):
        assert tuple(next(iter(loader))[0].shape[1:]) == (1, 64, 64)
    assert dm.input_spec.as_dict() == {"image_size": 64, "crop_size": 56, "channels": 1}


def test_input_spec_defaults_crop_to_image_size(fer_zip: Path) -> None:
    dm = FER2013DataModule(str(fer_zip), channels=3)
    assert dm.input_spec.as_dict() == {"image_size": 48, "crop_size": 48, "channels": 3}


def test_without_augment_training_images_are_the_raw_faces(fer_zip: Path) -> None:
    dm = ready(fer_zip, augment=False)
    first, again = dm.datasets["train"][0][0], dm.datasets["train"][0][0]
    assert torch.equal(first, again)
    np.testing.assert_array_equal(first[0].numpy(), dm.data.images[dm.indices["train"][0]])


def test_with_augment_training_varies_but_evaluation_does_not(fer_zip: Path) -> None:
    dm = ready(fer_zip, augment=True, augment_on="loader", aug={"hflip": 0.5, "translate": 0.2})
    views = {dm.datasets["train"][0][0].numpy().tobytes() for _ in range(8)}
    assert len(views) > 1
    assert torch.equal(dm.datasets["val"][0][0], dm.datasets["val"][0][0])


def test_eval_dataloader_is_ordered_and_unaugmented(fer_zip: Path) -> None:
    """Scoring the train split must see the stored images in order, never augmented or shuffled."""
    dm = ready(fer_zip, augment=True, augment_on="loader", aug={"hflip": 1.0, "translate": 0.0}, eval_batch_size=100)
    first = dm.indices["train"][0]
    np.testing.assert_array_equal(dm.datasets["train"][0][0][0].numpy(), dm.data.images[first][:, ::-1])  # train augments
    x, y = next(iter(dm.eval_dataloader("train")))
    index = dm.indices["train"]
    np.testing.assert_array_equal(x[:, 0].numpy(), dm.data.images[index])
    np.testing.assert_array_equal(y.numpy(), dm.data.labels[index])
    with pytest.raises(ValueError, match="split='holdout' must be one of train, val, test"):
        dm.eval_dataloader("holdout")


def test_train_loader_shuffles_and_drops_the_last_partial_batch(fer_zip: Path) -> None:
    dm = ready(fer_zip, batch_size=8)
    loader = dm.train_dataloader()
    assert loader.drop_last and len(loader) == PER_CLASS["Training"] * K // 8
    torch.manual_seed(0)
    orders = [torch.cat([y for _, y in dm.train_dataloader()]) for _ in range(2)]
    assert not torch.equal(orders[0], orders[1])
    assert not dm.val_dataloader().drop_last


def test_dedup_drops_train_images_copied_into_test(fer_folder_copy: Path) -> None:
    source = sorted((fer_folder_copy / "train" / "angry").iterdir())[0]
    shutil.copy(source, fer_folder_copy / "test" / "angry" / "PrivateTest_leak.jpg")
    assert len(ready(fer_folder_copy).datasets["train"]) == PER_CLASS["Training"] * K
    dm = ready(fer_folder_copy, dedup=True)
    assert len(dm.datasets["train"]) == PER_CLASS["Training"] * K - 1
    assert len(dm.datasets["test"]) == PER_CLASS["PrivateTest"] * K + 1


def test_setup_uses_the_cache_dir(tmp_path: Path, fer_zip: Path) -> None:
    ready(fer_zip, cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("fer2013-*.npz"))) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 2}, "data.channels=2 must be 1"),
        ({"crop_size": 56}, "data.crop_size=56 must be between 8 and data.image_size=48"),
        ({"batch_size": 0}, "data.batch_size=0 must be >= 1"),
    ],
)
def test_bad_arguments_are_refused(fer_zip: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FER2013DataModule(str(fer_zip), **kwargs)


@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_augmented_batches_repeat_under_the_same_seed(fer_zip: Path, augment_on: str) -> None:
    """Both augmentation paths draw from torch's seeded stream, so a run repeats (and resumes) exactly."""

    def first_batch(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)
        dm = FER2013DataModule(root=str(fer_zip), augment=True, augment_on=augment_on, aug={"rotate": 10}, batch_size=8)
        dm.setup()
        images, _ = next(iter(dm.train_dataloader()))
        return dm.batch_augment(images) if dm.batch_augment is not None else images

    first = first_batch(7)
    assert torch.equal(first, first_batch(7))
    assert not torch.equal(first, first_batch(8))


@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_a_fetched_batch_holds_the_same_faces_as_single_items(fer_zip: Path, augment_on: str) -> None:
    """Loaders fetch whole batches at once; the faces and labels are those of item-by-item access
    (in the loader, each face through its own transform: a certain flip here)."""
    dm = ready(fer_zip, channels=3, augment=True, augment_on=augment_on, aug={"hflip": 1.0, "translate": 0.0})
    dataset = dm.datasets["train"]
    images, labels = dataset.__getitems__([5, 0, 17])
    assert images.shape == (3, 3, 48, 48) and images.is_contiguous()
    for row, index in enumerate([5, 0, 17]):
        image, label = dataset[index]
        assert torch.equal(images[row], image) and labels[row] == label
        stored = dm.data.images[dm.indices["train"][index]]
        np.testing.assert_array_equal(image[2].numpy(), stored[:, ::-1] if augment_on == "loader" else stored)


def test_on_device_indexes_the_images_where_the_trainer_runs(fer_zip: Path) -> None:
    """``data.on_device`` moves each split once to the trainer's device and fetches batches there.
    The meta device stands in for a GPU: a batch that comes out on it never passed through the CPU."""
    dm = ready(fer_zip, on_device=True, augment=True, crop_size=40)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")), world_size=1)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        assert loader.num_workers == 0 and not loader.pin_memory
        images, labels = next(iter(loader))
        assert images.device.type == "meta" and labels.device.type == "meta"
        assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == (1, 48, 48)
    assert dm.datasets["test"].images.device.type == "cpu"


@pytest.mark.parametrize(
    "kwargs",
    [{"num_workers": 2}, {"image_size": 64}, {"augment": True, "augment_on": "loader"}],
    ids=["workers", "resize", "loader-augment"],
)
def test_on_device_refuses_per_image_work_in_the_loader(fer_zip: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="data.on_device=true .* needs data.num_workers=0"):
        FER2013DataModule(str(fer_zip), on_device=True, **kwargs)
