"""Face detection and ``python -m fer.predict``: photos, face crops, drawings with no face, broken files."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import compose_config, synthetic_face, write_packaged
from omegaconf import DictConfig, open_dict
from PIL import Image

from fer import CLASSES, FERClassifier, load_model, packaged
from fer.inference import predict as predict_faces
from fer.inference import predict_image
from fer.predict import CSV_FIELDS, predict
from fer.vision.faces import Box, FaceDetector, crop_square

PASTED = Box(200, 90, 256, 300)  # where the portrait goes in the 640x480 photo


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> FERClassifier:
    return load_model(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def photo(sample_portrait: Path) -> np.ndarray:
    """A 640x480 RGB photo with one real face: matplotlib's sample portrait on a gray background."""
    portrait = np.asarray(Image.open(sample_portrait).convert("RGB").resize((PASTED.w, PASTED.h)))
    image = np.full((480, 640, 3), 120, dtype=np.uint8)
    image[PASTED.y : PASTED.y + PASTED.h, PASTED.x : PASTED.x + PASTED.w] = portrait
    return image


def drawing() -> np.ndarray:
    """A 640x480 cartoon face (ellipse, eyes, brows, nose, smile): too schematic for either detector."""
    image = np.full((480, 640, 3), (140, 170, 200), dtype=np.uint8)
    cv2.ellipse(image, (320, 240), (110, 140), 0, 0, 360, (220, 160, 120), -1)
    for x in (280, 360):
        cv2.circle(image, (x, 200), 14, (255, 255, 255), -1)
        cv2.circle(image, (x, 200), 7, (30, 30, 30), -1)
        cv2.line(image, (x - 22, 175), (x + 22, 172), (40, 40, 40), 5)
    cv2.ellipse(image, (320, 300), (50, 22), 0, 0, 180, (160, 40, 40), 6)
    return image


def inside(box: Box, outer: Box) -> bool:
    return outer.x <= box.x and outer.y <= box.y and box.x + box.w <= outer.x + outer.w and box.y + box.h <= outer.y + outer.h


@pytest.mark.parametrize("method", ["mtcnn", "haar"])
def test_detector_finds_the_face_in_a_photo(photo: np.ndarray, method: str) -> None:
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    faces = FaceDetector(method=method).faces(gray)
    assert len(faces) == 1
    assert inside(faces[0].box, PASTED) and faces[0].box.w >= 60
    assert faces[0].crop.shape == (48, 48) and faces[0].crop.dtype == np.uint8 and not faces[0].aligned


@pytest.mark.parametrize("method", ["mtcnn", "haar"])
def test_drawing_without_a_detectable_face_gives_no_prediction(model: FERClassifier, method: str) -> None:
    assert predict_image(model, drawing(), FaceDetector(method=method)) == []


def test_face_crop_is_classified_whole_without_detection(model: FERClassifier) -> None:
    face = synthetic_face(4, 0)  # a 48x48 FER-2013 face: the cascade would find nothing in it
    (result,) = predict_image(model, face, FaceDetector())
    assert result.source == "crop" and result.box == Box(0, 0, 48, 48)
    np.testing.assert_allclose(result.probabilities, predict_faces(model, face).probabilities[0], atol=1e-6)
    assert result.label == CLASSES[int(result.probabilities.argmax())]


def test_crop_square_levels_a_tilted_eye_line() -> None:
    image = np.zeros((200, 200), dtype=np.uint8)
    left, right = (70, 90), (130, 110)
    for x, y in (left, right):
        cv2.circle(image, (x, y), 4, 255, -1)
    angle = math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))
    levelled = crop_square(image, (100.0, 100.0), 200, 200, angle)
    rows, cols = np.nonzero(levelled > 128)
    left_rows, right_rows = rows[cols < 100], rows[cols >= 100]
    assert abs(left_rows.mean() - right_rows.mean()) < 1.0
    assert abs(rows.mean() - 100) < 1.5 and abs(cols.mean() - 100) < 1.5, "rotated about the centre"


def test_alignment_option_reports_whether_it_rotated(photo: np.ndarray) -> None:
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    (plain,) = FaceDetector().faces(gray)
    (aligned,) = FaceDetector(align=True).faces(gray)
    assert aligned.box == plain.box and aligned.crop.shape == (48, 48)
    if not aligned.aligned:  # the eye cascade did not find both eyes: the same square crop
        np.testing.assert_array_equal(aligned.crop, plain.crop)


class FoundEyes:
    """Stands in for the eye cascade, which finds no pair of eyes in any test photo we have: the
    geometry after detection is what is under test."""

    def __init__(self, *eyes: tuple[int, int, int, int]) -> None:
        self.eyes = np.array(eyes).reshape(-1, 4)

    def detectMultiScale(self, image: np.ndarray, **kwargs: object) -> np.ndarray:
        return self.eyes


@pytest.mark.parametrize(
    ("eyes", "expected"),
    [
        (((20, 20, 10, 10), (60, 30, 10, 10)), math.degrees(math.atan2(10, 40))),  # right eye lower: positive
        (((60, 30, 10, 10), (20, 20, 10, 10)), math.degrees(math.atan2(10, 40))),  # found in either order
        (((20, 30, 10, 10), (60, 20, 10, 10)), -math.degrees(math.atan2(10, 40))),
        (((20, 20, 12, 12), (60, 30, 12, 12), (40, 5, 6, 6)), math.degrees(math.atan2(10, 40))),  # the two largest
        (((20, 20, 10, 10), (30, 20, 10, 10)), None),  # too close to be two eyes
        (((20, 10, 10, 10), (60, 40, 10, 10)), None),  # steeper than 25 degrees
        (((20, 20, 10, 10),), None),  # one eye
    ],
)
def test_eye_angle_from_the_two_eyes_found(eyes: tuple, expected: float | None) -> None:
    detector = FaceDetector(align=True)
    detector.eye_cascade = FoundEyes(*eyes)
    gray = np.zeros((200, 200), dtype=np.uint8)
    angle = detector.eye_angle(gray, Box(0, 0, 100, 100))  # the upper face is 100 px wide: not rescaled
    assert angle == (None if expected is None else pytest.approx(expected))


def test_an_aligned_face_is_cut_rotated_by_the_eye_angle(photo: np.ndarray) -> None:
    gray = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    detector = FaceDetector(align=True)
    (box,) = detector.detect(gray)
    scale = min(1.0, 120 / box.w)
    detector.eye_cascade = FoundEyes((int(0.2 * box.w * scale), 20, 10, 10), (int(0.6 * box.w * scale), 30, 10, 10))
    face = detector.cut(gray, box)
    angle = detector.eye_angle(gray, box)
    assert face.aligned and angle > 5
    side = box.w * (1.0 + 2.0 * detector.margin)
    centre = (box.x + box.w / 2.0, box.y + box.h / 2.0)
    np.testing.assert_array_equal(face.crop, crop_square(gray, centre, side, 48, angle))
    assert not np.array_equal(face.crop, FaceDetector().cut(gray, box).crop)


def write_inputs(root: Path, photo: np.ndarray) -> Path:
    folder = root / "inputs"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(photo).save(folder / "photo.jpg", quality=95)
    Image.fromarray(synthetic_face(3, 0)).save(folder / "sub" / "face48.png")
    Image.fromarray(drawing()).save(folder / "sub" / "drawing.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def predict_cfg(tmp_path: Path, checkpoint: Path, inputs: list[str], *overrides: str) -> DictConfig:
    cfg = compose_config([f"ckpt_path={checkpoint}", *overrides], config_name="predict")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    cfg.inputs = inputs
    return cfg


def test_predict_writes_one_json_row_per_face_and_per_problem(tmp_path: Path, tiny_checkpoint: Path, photo: np.ndarray) -> None:
    folder = write_inputs(tmp_path, photo)
    missing = tmp_path / "missing.jpg"
    cfg = predict_cfg(tmp_path, tiny_checkpoint, [str(folder), str(missing)], "annotate=true")
    predict(cfg)
    saved = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert saved["classes"] == list(CLASSES)
    assert saved["summary"] == {"images": 5, "faces": 2, "no_face": 1, "errors": 2}
    rows = {Path(row["file"]).name: row for row in saved["rows"]}
    assert set(rows) == {"photo.jpg", "face48.png", "drawing.png", "broken.jpg", "missing.jpg"}

    face = rows["photo.jpg"]
    assert face["status"] == "ok" and face["source"] == "detected" and face["face"] == 0
    assert inside(Box(*face["box"]), PASTED)
    assert face["emotion"] in CLASSES and list(face["probabilities"]) == list(CLASSES)
    assert math.isclose(sum(face["probabilities"].values()), 1.0, abs_tol=1e-5)
    assert face["confidence"] == max(face["probabilities"].values())

    crop = rows["face48.png"]
    assert crop["source"] == "crop" and crop["box"] == [0, 0, 48, 48]
    assert rows["drawing.png"]["status"] == "no_face" and rows["drawing.png"]["emotion"] is None
    assert rows["broken.jpg"]["status"] == "error" and "broken.jpg" in rows["broken.jpg"]["error"]
    assert rows["missing.jpg"]["status"] == "error" and "no such file" in rows["missing.jpg"]["error"]

    annotated = tmp_path / "run" / "annotated" / "inputs"
    assert sorted(p.relative_to(annotated).as_posix() for p in annotated.rglob("*.png")) == [
        "photo.png", "sub/drawing.png", "sub/face48.png"
    ]
    drawn = np.asarray(Image.open(annotated / "photo.png").convert("RGB"))
    assert drawn.shape == photo.shape
    x, y, w, h = face["box"]
    assert (drawn[y, x + w // 2] == (0, 255, 0)).all(), "the box is drawn in green"


@pytest.mark.slow
def test_predict_entry_point_writes_csv(tmp_path: Path, tiny_checkpoint: Path, photo: np.ndarray) -> None:
    photo_path, face_path = tmp_path / "photo.png", tmp_path / "face.png"
    Image.fromarray(photo).save(photo_path)
    Image.fromarray(synthetic_face(0, 0)).save(face_path)
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "fer.predict", f"ckpt_path={tiny_checkpoint}", f"inputs=[{photo_path},{face_path}]",
         "format=csv", f"hydra.run.dir={run}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with open(run / "predictions.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_FIELDS
    assert [Path(r["file"]).name for r in rows] == ["photo.png", "face.png"]
    assert [r["source"] for r in rows] == ["detected", "crop"]
    for row in rows:
        assert row["status"] == "ok" and row["emotion"] in CLASSES
        assert math.isclose(sum(float(row[f"p_{c}"]) for c in CLASSES), 1.0, abs_tol=1e-5)
    assert (rows[1]["x"], rows[1]["w"]) == ("0", "48")


def test_predict_tta_override_repeated_inputs_and_an_empty_folder(tmp_path: Path, tiny_checkpoint: Path) -> None:
    face_path, empty = tmp_path / "face.png", tmp_path / "empty"
    Image.fromarray(synthetic_face(5, 0)).save(face_path)
    empty.mkdir()
    overrides = ("annotate=true", "tta=flip", "precision=bf16-mixed")
    cfg = predict_cfg(tmp_path, tiny_checkpoint, [str(face_path), str(face_path), str(empty)], *overrides)
    rows = predict(cfg)
    saved = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert saved["tta"] == "flip" and saved["summary"] == {"images": 2, "faces": 2, "no_face": 0, "errors": 1}
    assert saved["precision"] == "bf16-mixed"
    assert rows[2]["status"] == "error" and rows[2]["error"].startswith("folder holds no images")
    model = FERClassifier.load_from_checkpoint(tiny_checkpoint).eval()
    model.tta = "flip"
    model.use_precision("bf16-mixed")
    _, expected = predict_faces(model, [synthetic_face(5, 0)])
    np.testing.assert_allclose(list(rows[0]["probabilities"].values()), expected[0], rtol=1e-4, atol=1e-12)
    model.use_precision("32-true")  # the precision shows in the small probabilities
    assert not np.allclose(predict_faces(model, [synthetic_face(5, 0)])[1][0], expected[0], rtol=0.01, atol=0)
    model.use_precision("bf16-mixed")
    model.tta = "none"  # the model is sure of the class: the flip shows in the small probabilities
    assert not np.allclose(predict_faces(model, [synthetic_face(5, 0)])[1][0], expected[0], rtol=0.05, atol=0)
    annotated = sorted(p.name for p in (tmp_path / "run" / "annotated").glob("*.png"))
    assert annotated == ["face-2.png", "face.png"]  # the second copy does not overwrite the first


def test_predict_refuses_bad_settings(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match=r"inputs=\[PATH"):
        predict(predict_cfg(tmp_path, tiny_checkpoint, []))
    with pytest.raises(ValueError, match="format='xml'"):
        predict(predict_cfg(tmp_path, tiny_checkpoint, ["x.jpg"], "format=xml"))


def test_predict_without_a_checkpoint_uses_the_packaged_model_or_says_how_to_get_one(
    tmp_path: Path, tiny_checkpoint: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    monkeypatch.setattr(packaged, "WEIGHTS_DIR", tmp_path / "nothing")
    cfg = predict_cfg(tmp_path, tiny_checkpoint, [str(tmp_path / "photo.jpg")], "ckpt_path=null")
    with pytest.raises(packaged.NoPackagedModel, match="python -m fer.release"):
        predict(cfg)
    monkeypatch.setattr(packaged, "WEIGHTS_DIR", write_packaged(tmp_path / "weights", tiny_checkpoint))
    (row,) = predict(cfg)
    assert json.loads((tmp_path / "run" / "predictions.json").read_text())["checkpoint"] == "packaged: test-card"
    expected = predict(predict_cfg(tmp_path, tiny_checkpoint, [str(tmp_path / "photo.jpg")]))[0]
    assert row["probabilities"] == expected["probabilities"]
