"""The official and kaggle protocols, and removal of train images leaked into val/test."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import PER_CLASS

from fer.classes import CLASSES
from fer.data.sources import DatasetError, FERData, load_fer2013
from fer.data.splits import drop_leaks, make_splits, stratified_sample

K = len(CLASSES)


@pytest.fixture(scope="module")
def data(fer_zip: Path) -> FERData:
    return load_fer2013(fer_zip)


def test_official_split_is_training_publictest_privatetest(data: FERData) -> None:
    splits = make_splits(data, "official", 0.1, 0)
    assert {name: len(index) for name, index in splits.items()} == {
        "train": PER_CLASS["Training"] * K,
        "val": PER_CLASS["PublicTest"] * K,
        "test": PER_CLASS["PrivateTest"] * K,
    }
    for name, usage in (("train", "Training"), ("val", "PublicTest"), ("test", "PrivateTest")):
        assert set(data.usage[splits[name]]) == {usage}


@pytest.mark.parametrize(("fraction", "per_class"), [(0.5, 3), (0.34, 2), (0.1, 1)])
def test_kaggle_val_is_a_stratified_fraction_of_training(data: FERData, fraction: float, per_class: int) -> None:
    """Every class keeps round(n * fraction) images (at least one) in val; test is the whole test folder."""
    splits = make_splits(data, "kaggle", fraction, seed=3)
    assert np.bincount(data.labels[splits["val"]], minlength=K).tolist() == [per_class] * K
    train_and_val = np.concatenate([splits["train"], splits["val"]])
    assert len(np.intersect1d(splits["train"], splits["val"])) == 0
    np.testing.assert_array_equal(np.sort(train_and_val), np.flatnonzero(data.usage == "Training"))
    assert len(splits["test"]) == (PER_CLASS["PublicTest"] + PER_CLASS["PrivateTest"]) * K
    assert set(data.usage[splits["test"]]) == {"PublicTest", "PrivateTest"}


def test_kaggle_split_is_seeded_and_deterministic(data: FERData) -> None:
    first = make_splits(data, "kaggle", 0.5, seed=0)
    np.testing.assert_array_equal(make_splits(data, "kaggle", 0.5, seed=0)["val"], first["val"])
    others = [make_splits(data, "kaggle", 0.5, seed=s)["val"] for s in range(1, 4)]
    assert any(not np.array_equal(other, first["val"]) for other in others)


def test_kaggle_split_picks_the_same_images_from_folder_and_any_zip(tmp_path: Path, fer_folder: Path) -> None:
    """A zip keeps the order it was written in; a seeded split must not depend on it."""
    files = sorted(fer_folder.rglob("*.jpg"))
    np.random.default_rng(0).shuffle(files)
    shuffled = tmp_path / "fer2013.zip"
    with zipfile.ZipFile(shuffled, "w") as archive:
        for file in files:
            archive.write(file, file.relative_to(fer_folder).as_posix())
    folder, zipped = load_fer2013(fer_folder), load_fer2013(shuffled)
    for name in ("train", "val", "test"):
        assert sorted(folder.names[make_splits(folder, "kaggle", 0.5, 7)[name]]) == sorted(
            zipped.names[make_splits(zipped, "kaggle", 0.5, 7)[name]]
        )


def test_stratified_sample_keeps_at_least_one_per_class() -> None:
    labels = np.array([0] * 50 + [1] * 2)
    picked = stratified_sample(labels, 0.1, seed=0)
    assert np.bincount(labels[picked]).tolist() == [5, 1]


def test_official_needs_the_test_prefixes(fer_folder_copy: Path) -> None:
    """A copy whose test names lack PublicTest_/PrivateTest_ cannot give the official split, only kaggle."""
    for file in (fer_folder_copy / "test").rglob("*.jpg"):
        file.rename(file.with_name(file.name.split("_", 1)[1]))
    data = load_fer2013(fer_folder_copy)
    assert set(data.usage[data.usage != "Training"]) == {"Test"}
    with pytest.raises(DatasetError, match="lack the PublicTest_/PrivateTest_ prefix.*data.split=kaggle"):
        make_splits(data, "official", 0.1, 0)
    assert len(make_splits(data, "kaggle", 0.1, 0)["test"]) == (PER_CLASS["PublicTest"] + PER_CLASS["PrivateTest"]) * K


def test_bad_split_name_and_fraction_are_refused(data: FERData) -> None:
    with pytest.raises(ValueError, match="data.split='icml' is not one of official, kaggle"):
        make_splits(data, "icml", 0.1, 0)
    for fraction in (0.0, 1.0):
        with pytest.raises(ValueError, match="must be in \\(0, 1\\)"):
            make_splits(data, "kaggle", fraction, 0)


def test_drop_leaks_removes_a_train_image_copied_into_test(data: FERData) -> None:
    splits = make_splits(data, "official", 0.1, 0)
    leaked_train, val_copy_of = splits["train"][5], splits["train"][9]
    images = data.images.copy()
    images[splits["test"][0]] = images[leaked_train]
    images[splits["val"][3]] = images[val_copy_of]
    leaky = FERData(images, data.labels, data.usage, data.names)
    cleaned = drop_leaks(leaky, splits)
    assert sorted(set(splits["train"]) - set(cleaned["train"])) == sorted([leaked_train, val_copy_of])
    np.testing.assert_array_equal(cleaned["val"], splits["val"])
    np.testing.assert_array_equal(cleaned["test"], splits["test"])


def test_drop_leaks_keeps_everything_when_nothing_leaks(data: FERData) -> None:
    splits = make_splits(data, "official", 0.1, 0)
    np.testing.assert_array_equal(drop_leaks(data, splits)["train"], splits["train"])
