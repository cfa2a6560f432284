"""Readers of every FER-2013 layout, the decoded-array cache, and the messages bad input gets from
them (the data rows of docs/errors.md; tests/test_errors.py keeps the cross-cutting ones: exit
codes, Hydra, configs, checkpoints)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import PER_CLASS, synthetic_face, write_csv
from PIL import Image

from fer.classes import CLASSES
from fer.data import sources
from fer.data.sources import DatasetError, FERData, load_fer2013, locate

N_IMAGES = sum(PER_CLASS.values()) * len(CLASSES)


def first_image(root: Path, folder: str, cls: str) -> Path:
    return sorted((root / folder / cls).iterdir())[0]


def assert_same(a: FERData, b: FERData) -> None:
    for field in ("images", "labels", "usage", "names"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.fixture(scope="module")
def from_folder(fer_folder: Path) -> FERData:
    return load_fer2013(fer_folder)


def test_folder_holds_the_synthetic_faces_with_their_labels_and_usage(from_folder: FERData) -> None:
    """Each decoded JPEG is its class's synthetic face (up to JPEG loss) and its usage comes from the name."""
    data = from_folder
    assert data.images.shape == (N_IMAGES, 48, 48) and data.images.dtype == np.uint8
    assert Counter(data.usage.tolist()) == {usage: n * len(CLASSES) for usage, n in PER_CLASS.items()}
    assert np.bincount(data.labels).tolist() == [sum(PER_CLASS.values())] * len(CLASSES)
    for image, label, usage, name in zip(data.images, data.labels, data.usage, data.names):
        assert name.split("/")[1] == CLASSES[label]
        assert usage == Path(name).name.split("_")[0]  # PublicTest and PrivateTest never swapped
        index = int(Path(name).stem[-4:])
        assert np.abs(image.astype(int) - synthetic_face(label, index)).mean() < 4


def test_zip_reads_exactly_what_the_folder_holds(fer_zip: Path, from_folder: FERData) -> None:
    assert_same(load_fer2013(fer_zip), from_folder)


def test_csv_holds_the_exact_pixels_and_the_same_labels_and_usage(fer_csv: Path, from_folder: FERData) -> None:
    data = load_fer2013(fer_csv)
    expected = [
        synthetic_face(label, i + 100 * position)
        for position, (usage, count) in enumerate(PER_CLASS.items())
        for label in range(len(CLASSES))
        for i in range(count)
    ]
    np.testing.assert_array_equal(data.images, np.stack(expected))
    assert Counter(data.usage.tolist()) == Counter(from_folder.usage.tolist())
    assert Counter(zip(data.labels.tolist(), data.usage.tolist())) == Counter(
        zip(from_folder.labels.tolist(), from_folder.usage.tolist())
    )


def test_locate_finds_a_source_inside_a_folder(tmp_path: Path, fer_zip: Path, fer_folder: Path) -> None:
    """data.root may name the folder a user downloaded into, not the archive itself."""
    shutil.copy(fer_zip, tmp_path / "fer2013.zip")
    assert locate(tmp_path) == (tmp_path / "fer2013.zip").resolve()
    assert locate(fer_folder) == fer_folder.resolve()
    assert locate(fer_zip) == fer_zip.resolve()
    assert_same(load_fer2013(tmp_path), load_fer2013(fer_zip))


def test_cache_second_load_skips_decoding(tmp_path: Path, fer_zip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = load_fer2013(fer_zip, cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz" and files[0].name.startswith("fer2013-")

    def no_decoding(path: Path) -> FERData:
        raise AssertionError(f"decoded {path} despite the cache")

    monkeypatch.setattr(sources, "read_source", no_decoding)
    second = load_fer2013(fer_zip, cache)
    assert_same(first, second)


def test_cache_key_follows_the_source_file(tmp_path: Path, fer_zip: Path) -> None:
    """A changed archive must be decoded again, never served stale from the cache."""
    source = tmp_path / "fer2013.zip"
    shutil.copy(fer_zip, source)
    key = sources._source_key(source)
    assert sources._source_key(source) == key
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert sources._source_key(source) != key

    cache = tmp_path / "cache"
    assert len(load_fer2013(source, cache)) == N_IMAGES
    with zipfile.ZipFile(fer_zip) as original, zipfile.ZipFile(source, "w") as smaller:
        for info in original.infolist()[1:]:
            smaller.writestr(info, original.read(info))
    assert len(load_fer2013(source, cache)) == N_IMAGES - 1
    assert len(list(cache.glob("*.npz"))) == 2


def test_unreadable_cache_is_ignored_with_a_warning(
    tmp_path: Path, fer_zip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    expected = load_fer2013(fer_zip, cache)
    next(cache.glob("*.npz")).write_bytes(b"not an npz")
    with caplog.at_level(logging.WARNING, logger="fer.data.sources"):
        assert_same(load_fer2013(fer_zip, cache), expected)
    assert "Ignoring unreadable cache" in caplog.text


# ---- bad input: each error says what was found and how to fix it ----


def test_missing_path_names_it_and_the_kaggle_page(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as error:
        load_fer2013(missing)
    assert f"FER-2013 not found at {missing}. Download FER-2013 from https://www.kaggle.com/datasets/msambare/fer2013" in str(error.value)
    assert str(error.value).endswith("then set data.root=PATH or the FER2013_ROOT environment variable.")


def test_a_root_one_level_above_the_dataset_names_where_it_is(fer_folder: Path, fer_zip: Path, tmp_path: Path) -> None:
    """An extracted copy (or a zip) in a folder under data.root is named, with the data.root to pass,
    not taken silently and not refused without saying where it is."""
    shutil.copytree(fer_folder, tmp_path / "downloads" / "fer2013")
    expected = (
        rf"downloads holds no FER-2013 itself; one folder down it has {re.escape(str(tmp_path / 'downloads' / 'fer2013' / 'train'))}\. "
        rf"Pass data\.root={re.escape(str(tmp_path / 'downloads' / 'fer2013'))} \(or set FER2013_ROOT to it\)"
    )
    with pytest.raises(DatasetError, match=expected):
        load_fer2013(tmp_path / "downloads")
    (tmp_path / "zips" / "kaggle").mkdir(parents=True)
    shutil.copy(fer_zip, tmp_path / "zips" / "kaggle" / "fer2013.zip")
    with pytest.raises(DatasetError, match=r"one folder down it has .*/zips/kaggle/fer2013\.zip\. Pass data\.root=.*/zips/kaggle "):
        load_fer2013(tmp_path / "zips")


@pytest.mark.parametrize(
    ("name", "content"), [("fer2013.tar", b"\x00" * 100), ("fer2013.zip", b"<html>Kaggle login page</html>")], ids=["tar", "saved_login_page"]
)
def test_a_file_that_is_neither_zip_nor_csv(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=rf"{re.escape(name)} is neither a zip archive nor a fer2013\.csv"):
        load_fer2013(path)


def test_a_folder_without_train(tmp_path: Path, fer_folder: Path) -> None:
    shutil.copytree(fer_folder / "test", tmp_path / "test")
    with pytest.raises(DatasetError, match=r"holds no FER-2013: expected train/<class>/\*\.jpg"):
        load_fer2013(tmp_path)


@pytest.mark.parametrize("entry", ["test/angry/PublicTest_1.jpg", "readme.txt"])
def test_a_zip_without_train(tmp_path: Path, entry: str) -> None:
    path = tmp_path / "fer2013.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(entry, b"")
    with pytest.raises(DatasetError, match=r"fer2013\.zip holds no train/<class>/\*\.jpg entries"):
        load_fer2013(path)


def test_a_copy_without_test(fer_folder_copy: Path, fer_zip: Path, tmp_path: Path) -> None:
    """Without test/ the val and test splits would be empty: say which folder is missing, not that a split is empty."""
    shutil.rmtree(fer_folder_copy / "test")
    with pytest.raises(DatasetError, match=r"/fer_folder has no test/ folder: FER-2013's Kaggle layout is train/<class>/Training_\*\.jpg and test/"):
        load_fer2013(fer_folder_copy)
    path = tmp_path / "train_only.zip"
    with zipfile.ZipFile(fer_zip) as source, zipfile.ZipFile(path, "w") as archive:
        for info in source.infolist():
            if "test/" not in info.filename:
                archive.writestr(info, source.read(info))
    with pytest.raises(DatasetError, match=r"train_only\.zip holds no test/<class>/\*\.jpg entries"):
        load_fer2013(path)


def test_images_deeper_than_the_layout(fer_folder_copy: Path, fer_zip: Path, tmp_path: Path) -> None:
    """A nested folder inside a class folder is refused, not skipped: its images would be lost."""
    path = tmp_path / "nested.zip"
    shutil.copyfile(fer_zip, path)
    with zipfile.ZipFile(path, "a") as archive:
        name = next(n for n in archive.namelist() if "train/happy/" in n and n.endswith(".jpg"))
        archive.writestr(name.replace("train/happy/", "train/happy/more/"), archive.read(name))
    with pytest.raises(DatasetError, match=r"nested\.zip holds .*train/happy/more/.*\.jpg, outside the layout"):
        load_fer2013(path)
    nested = fer_folder_copy / "train" / "happy" / "more"
    nested.mkdir()
    shutil.copy(next((fer_folder_copy / "train" / "happy").glob("*.jpg")), nested)
    with pytest.raises(DatasetError, match=r"train/happy/more is a folder inside a class folder"):
        load_fer2013(fer_folder_copy)


def test_an_unknown_class_folder(fer_folder_copy: Path) -> None:
    (fer_folder_copy / "train" / "angry").rename(fer_folder_copy / "train" / "contempt")
    unknown = (
        r"Unknown class folder train/contempt in .*: 'contempt' is not an expression class\. "
        r"Known classes: angry, disgust, .*\(synonyms accepted: .*happiness"
    )
    with pytest.raises(DatasetError, match=unknown) as error:
        load_fer2013(fer_folder_copy)
    assert all(name in str(error.value) for name in CLASSES)


def test_synonym_class_folders_are_accepted(fer_folder_copy: Path, from_folder: FERData) -> None:
    (fer_folder_copy / "train" / "happy").rename(fer_folder_copy / "train" / "Happiness")
    data = load_fer2013(fer_folder_copy)
    np.testing.assert_array_equal(np.sort(data.labels), np.sort(from_folder.labels))


@pytest.mark.parametrize("folder", ["train", "test"])
@pytest.mark.parametrize("content", ["empty", "only a text file"])
def test_a_class_folder_with_no_images(fer_folder_copy: Path, content: str, folder: str) -> None:
    """A class silently missing from a split would skew every metric: refuse it."""
    shutil.rmtree(fer_folder_copy / folder / "disgust")
    (fer_folder_copy / folder / "disgust").mkdir()
    if content != "empty":
        (fer_folder_copy / folder / "disgust" / "README.txt").write_text("moved elsewhere")
    with pytest.raises(DatasetError, match=rf"Class folders with no images in .*: {folder}/disgust\."):
        load_fer2013(fer_folder_copy)


def test_non_image_files_are_ignored_with_a_warning(
    fer_folder_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (fer_folder_copy / "train" / "sad" / "notes.txt").write_text("x")
    (fer_folder_copy / "train" / "sad" / ".DS_Store").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="fer.data.sources"):
        assert len(load_fer2013(fer_folder_copy)) == N_IMAGES
    assert "Ignored 2 non-image files" in caplog.text


def test_os_metadata_in_a_copy_is_not_an_error(fer_folder_copy: Path, fer_zip: Path, tmp_path: Path) -> None:
    """A zip made on macOS (__MACOSX/, ._ forks, .DS_Store) or a folder opened in Jupyter loads as the plain copy."""
    path = tmp_path / "macos.zip"
    shutil.copyfile(fer_zip, path)
    with zipfile.ZipFile(path, "a") as archive:
        for name in ("__MACOSX/train/._happy", "__MACOSX/train/happy/._x.jpg", "train/.DS_Store", "train/happy/.DS_Store"):
            archive.writestr(name, b"metadata")
    assert len(load_fer2013(path)) == N_IMAGES
    (fer_folder_copy / "train" / "happy" / ".ipynb_checkpoints").mkdir()
    shutil.copy(next((fer_folder_copy / "train" / "happy").glob("*.jpg")), fer_folder_copy / "train" / "happy" / ".ipynb_checkpoints")
    assert len(load_fer2013(fer_folder_copy)) == N_IMAGES


@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_a_corrupt_or_truncated_jpeg_names_the_file(fer_folder_copy: Path, keep: float) -> None:
    broken = first_image(fer_folder_copy, "train", "fear")
    blob = broken.read_bytes()
    broken.write_bytes(blob[: int(len(blob) * keep)])
    with pytest.raises(DatasetError, match=rf"Corrupt or unreadable image train/fear/{broken.name} in .*Replace or delete the file\."):
        load_fer2013(fer_folder_copy)


def test_rgb_and_wrong_size_images_are_converted_and_counted(
    fer_folder_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An RGB image, a larger one and a smaller, non-square .png load as 48x48 grayscale, and the
    warning counts them and names them."""
    rgb = first_image(fer_folder_copy, "train", "happy")
    gray = np.asarray(Image.open(rgb))
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(rgb, format="PNG")
    big = first_image(fer_folder_copy, "test", "sad")
    Image.fromarray(np.full((96, 96), 77, dtype=np.uint8)).save(big, format="PNG")
    Image.fromarray(np.full((30, 40), 50, dtype=np.uint8)).save(fer_folder_copy / "train" / "sad" / "Training_small.png")
    with caplog.at_level(logging.WARNING, logger="fer.data.sources"):
        data = load_fer2013(fer_folder_copy)
    assert data.images.shape == (N_IMAGES + 1, 48, 48)
    names = data.names.tolist()
    np.testing.assert_array_equal(data.images[names.index(f"train/happy/{rgb.name}")], gray)
    assert (data.images[names.index(f"test/sad/{big.name}")] == 77).all()
    assert (data.images[names.index("train/sad/Training_small.png")] == 50).all()
    assert "Converted 3 images that were not 48x48 grayscale" in caplog.text
    assert all(name in caplog.text for name in (f"train/happy/{rgb.name}", "train/sad/Training_small.png", f"test/sad/{big.name}"))


def face_row(label: int = 0, size: int = 48 * 48, usage: str = "Training", first_pixel: str = "7") -> list[object]:
    return [label, " ".join([first_pixel] + ["7"] * (size - 1)), usage]


def test_csv_with_wrong_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "fer2013.csv", ["label", "image", "split"], [face_row()])
    with pytest.raises(DatasetError, match=r"fer2013\.csv: expected the columns emotion,pixels,Usage, found \['label', 'image', 'split'\]"):
        load_fer2013(path)


def test_csv_row_of_wrong_length_names_the_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"], [face_row(), face_row(size=2303)])
    with pytest.raises(DatasetError, match=r"fer2013\.csv line 3: 2303 pixel values, expected 2304"):
        load_fer2013(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (face_row(label=7), "line 2: emotion 7 is not in 0..6"),
        (face_row(usage="Validation"), "line 2: Usage 'Validation' is not one of"),
        (["x", "1 2", "Training"], "line 2: malformed row"),
        (face_row(first_pixel="300"), r"line 2: pixel values must be integers 0\.\.255, found 7\.\.300"),
        (face_row(first_pixel="1.5"), r"line 2: pixel values must be integers 0\.\.255 \(invalid literal"),
        (face_row(first_pixel="-1"), r"line 2: pixel values must be integers 0\.\.255, found -1\.\.7\."),
    ],
)
def test_csv_bad_values_name_the_line(tmp_path: Path, row: list[object], message: str) -> None:
    path = write_csv(tmp_path / "fer2013.csv", ["emotion", "pixels", "Usage"], [row])
    with pytest.raises(DatasetError, match=message):
        load_fer2013(path)
