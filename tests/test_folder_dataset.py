"""Cross-dataset evaluation on a labelled image folder (``data=folder``): synonyms, any image size
and colour, classes the model does not know, and labels taken from file names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_face
from PIL import Image

from fer.classes import CLASSES
from fer.data.folder import FolderDataModule, read_folder
from fer.data.sources import DatasetError
from fer.evaluate import evaluate
from fer.vision.faces import FaceDetector
from fer.vision.images import to_gray

# folder name -> the synthetic class drawn in it (None: a class the model does not know)
FOLDERS = {"anger": 0, "Happiness": 3, "sadness": 4, "surprised": 5, "neutral": 6, "contempt": None}
PER_FOLDER = 3


def colour_photo(face: np.ndarray, side: int) -> np.ndarray:
    """A face as a larger RGB image, as other datasets ship them."""
    big = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BILINEAR))
    return np.repeat(big[..., None], 3, axis=2)


@pytest.fixture
def labelled_folder(tmp_path: Path) -> Path:
    root = tmp_path / "other_dataset"
    for name, label in FOLDERS.items():
        for i in range(PER_FOLDER):
            folder = root / name / ("nested" if i == 0 else "")
            folder.mkdir(parents=True, exist_ok=True)
            face = synthetic_face(1 if label is None else label, 500 + i)
            image = colour_photo(face, 96 + 40 * i) if i else face  # 48x48 gray, 136 and 176 px RGB
            Image.fromarray(image).save(folder / f"{name}_{i}.png")
    (root / "README.txt").write_text("not an image, ignored with a warning")
    return root


def test_reads_synonyms_any_size_and_keeps_unknown_classes_apart(labelled_folder: Path) -> None:
    folder = read_folder(labelled_folder)
    assert folder.known.images.shape == (5 * PER_FOLDER, 48, 48) and folder.known.images.dtype == np.uint8
    assert sorted({CLASSES[i] for i in folder.known.labels}) == sorted(["angry", "happy", "sad", "surprise", "neutral"])
    assert list(folder.unknown) == ["contempt"] and folder.unknown["contempt"].shape == (PER_FOLDER, 48, 48)
    assert folder.label_counts["Happiness"] == PER_FOLDER
    happy = folder.known.images[folder.known.labels == CLASSES.index("happy")]
    band = 4 + 6 * 3  # synthetic_face draws class 3's bright band on rows 22-26
    assert set(np.argsort(happy[1].mean(axis=1))[-4:]) <= set(range(band - 1, band + 6)), "resized back to 48x48"


def test_evaluate_scores_known_classes_and_reports_unknown_ones(make_cfg, tiny_checkpoint: Path, labelled_folder: Path) -> None:
    cfg = make_cfg("data=folder", f"data.root={labelled_folder}", f"ckpt_path={tiny_checkpoint}", config_name="eval")
    metrics = evaluate(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["protocol"] == "folder" and saved["split"] == "test"
    assert sum(map(sum, saved["test"]["confusion"])) == 5 * PER_FOLDER
    assert saved["dataset"]["scored"] == {c: (PER_FOLDER if c in {"angry", "happy", "sad", "surprise", "neutral"} else 0) for c in CLASSES}
    contempt = saved["unknown_classes"]["contempt"]
    assert contempt["count"] == PER_FOLDER and sum(contempt["predicted"].values()) == PER_FOLDER
    assert list(contempt["predicted"]) == list(CLASSES)
    assert sum(contempt["mean_probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert metrics["unknown_classes"] == saved["unknown_classes"]


def test_fer2013_evaluation_is_unchanged(make_cfg, tiny_checkpoint: Path) -> None:
    saved = evaluate(make_cfg(f"ckpt_path={tiny_checkpoint}", config_name="eval"))
    assert saved["protocol"] == "official" and "unknown_classes" not in saved
    assert sum(map(sum, saved["test"]["confusion"])) == 2 * len(CLASSES)


def test_detect_faces_takes_the_face_and_counts_images_without_one(tmp_path: Path, sample_portrait: Path) -> None:
    """detect_faces=true: a photo gives its detected face, an image with no face is used whole and counted."""
    (tmp_path / "happy").mkdir()
    shutil.copy(sample_portrait, tmp_path / "happy" / "a_photo.jpg")
    Image.fromarray(synthetic_face(3, 0)).save(tmp_path / "happy" / "b_not_a_face.png")
    detector = FaceDetector()
    folder = read_folder(tmp_path, detector=detector)
    assert folder.no_face == 1 and list(folder.known.names) == ["happy/a_photo.jpg", "happy/b_not_a_face.png"]
    faces = detector.faces(to_gray(tmp_path / "happy" / "a_photo.jpg"))
    assert faces, "the cascade finds the portrait's face"
    largest = max(faces, key=lambda f: f.box.w * f.box.h)
    np.testing.assert_array_equal(folder.known.images[0], largest.crop)
    np.testing.assert_array_equal(folder.known.images[1], synthetic_face(3, 0))
    whole = read_folder(tmp_path)
    assert whole.no_face == 0 and not np.array_equal(whole.known.images[0], largest.crop)


def test_labels_from_file_names_jaffe_style(tmp_path: Path) -> None:
    codes = {"AN": 0, "HA": 3, "SU": 5, "NE": 6}
    for i, (code, label) in enumerate(codes.items()):
        Image.fromarray(colour_photo(synthetic_face(label, i), 256)).save(tmp_path / f"KA.{code}{i + 1}.{30 + i}.tiff")
    Image.fromarray(synthetic_face(0, 9)).save(tmp_path / "YM.CO1.50.tiff")  # a code the map leaves unknown
    datamodule = FolderDataModule(
        str(tmp_path), label_pattern=r"^[A-Z]{2}\.(?P<label>[A-Z]{2})",
        label_map={"AN": "angry", "HA": "happiness", "SU": "surprised", "NE": "neutral"},
    )
    datamodule.setup("test")
    assert [CLASSES[i] for i in datamodule.data.labels] == ["angry", "happy", "surprise", "neutral"]
    assert list(datamodule.folder.unknown) == ["co"]
    images, labels = next(iter(datamodule.eval_dataloader("test")))
    assert images.shape == (4, 1, 48, 48) and images.dtype.is_floating_point is False


def test_mistakes_in_the_folder_say_how_to_fix_them(tmp_path: Path, labelled_folder: Path) -> None:
    with pytest.raises(ValueError, match=r"named group \(\?P<label>"):
        FolderDataModule(str(labelled_folder), label_pattern=r"^(\w+)_")
    with pytest.raises(DatasetError, match="do not match data.label_pattern"):
        read_folder(labelled_folder, label_pattern=r"^(?P<label>anger)_")
    Image.fromarray(synthetic_face(0, 0)).save(labelled_folder / "loose.png")
    with pytest.raises(DatasetError, match=r"directly in .*root/<class>/"):
        read_folder(labelled_folder)
    only_unknown = tmp_path / "only_unknown" / "contempt"
    only_unknown.mkdir(parents=True)
    Image.fromarray(synthetic_face(0, 0)).save(only_unknown / "a.png")
    with pytest.raises(DatasetError, match="None of the labels"):
        read_folder(only_unknown.parent)
    (only_unknown.parent / "happy").mkdir()
    (only_unknown.parent / "happy" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match=r"broken\.jpg"):
        read_folder(only_unknown.parent)
    datamodule = FolderDataModule(str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="is not a folder"):
        datamodule.setup("test")
    with pytest.raises(ValueError, match="use split=test"):
        FolderDataModule(str(labelled_folder)).eval_dataloader("val")
