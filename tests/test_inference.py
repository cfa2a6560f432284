"""fer.inference: any image -> the evaluation view -> labels and probabilities."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import synthetic_face
from PIL import Image

from fer import CLASSES, FERClassifier, load_model
from fer.data.transforms import eval_transform
from fer.inference import find_faces, is_face_crop, predict, predict_image, predict_images
from fer.vision.faces import FaceDetector, split_window
from fer.vision.images import ImageReadError, to_gray

VGG3 = {"name": "vgg3", "blocks": 3, "filters": [32, 64, 128], "batch_norm": True, "dropout": "increasing"}


def vgg3(**spec: int) -> FERClassifier:
    """An untrained vgg3 as conf/model/vgg3.yaml and conf/module/default.yaml build it (channels-last)."""
    input_spec = {"image_size": 48, "crop_size": 48, "channels": 1, **spec}
    model = FERClassifier(net=VGG3, optimizer={"_target_": "torch.optim.SGD", "lr": 0.01}, input_spec=input_spec, channels_last=True)
    return model.eval()


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> FERClassifier:
    return load_model(str(tiny_checkpoint))


def test_every_input_kind_becomes_the_same_gray_image(tmp_path: Path) -> None:
    gray = synthetic_face(3, 0)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    path = tmp_path / "face.png"
    Image.fromarray(rgb).save(path)
    inputs = {
        "HxW uint8": gray,
        "HxWx1": gray[..., None],
        "HxWx3": rgb,
        "HxWx4 (alpha dropped)": np.dstack([rgb, np.full_like(gray, 7)]),
        "float in [0, 1]": gray / 255.0,
        "int64 0..255": gray.astype(np.int64),
        "uint16 16-bit": gray.astype(np.uint16) * 257,
        "PIL L": Image.fromarray(gray),
        "PIL RGBA": Image.fromarray(rgb).convert("RGBA"),
        "path": path,
        "str path": str(path),
    }
    for name, image in inputs.items():
        result = to_gray(image)
        assert result.dtype == np.uint8 and result.shape == (48, 48), name
        np.testing.assert_array_equal(result, gray, err_msg=name)


def test_colour_uses_pil_luma() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.int16)
    assert np.abs(to_gray(rgb).astype(np.int16) - expected).max() <= 1


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((48, 48)) + 3.0, r"in \[0, 1\]"),
        (np.zeros((48, 48), dtype=bool), "masks"),
        (np.zeros((48, 48), dtype=np.int32) - 1, "0..255"),
        (np.zeros(48, dtype=np.uint8), "shape"),
        ([1, 2, 3], "Cannot use a list"),
    ],
)
def test_bad_inputs_say_what_is_wrong(image: object, message: str) -> None:
    with pytest.raises(ImageReadError, match=message):
        to_gray(image)


def test_unreadable_and_missing_files_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match=r"broken\.jpg.*not an image"):
        to_gray(broken)
    with pytest.raises(ImageReadError, match=r"missing\.png: no such file"):
        to_gray(tmp_path / "missing.png")


def test_face_crop_rule() -> None:
    gray = np.zeros((48, 48), dtype=np.uint8)
    assert is_face_crop(gray)
    assert is_face_crop(np.zeros((96, 96), dtype=np.uint8))
    assert not is_face_crop(np.zeros((97, 97), dtype=np.uint8)), "larger than crop_max_side"
    assert not is_face_crop(np.zeros((48, 64), dtype=np.uint8)), "not square"
    gray_rgb = np.dstack([gray + 100, gray + 102, gray + 99])
    assert is_face_crop(gray_rgb), "an RGB copy of a gray image (JPEG noise) is gray"
    colour = gray_rgb.copy()
    colour[..., 0] = 200
    assert not is_face_crop(colour)


def test_predict_returns_names_and_probabilities(model: FERClassifier, tmp_path: Path) -> None:
    faces = np.stack([synthetic_face(label, 200) for label in range(len(CLASSES))])
    labels, probabilities = predict(model, faces, batch_size=3)
    assert len(labels) == len(CLASSES) and set(labels) <= set(CLASSES)
    assert probabilities.shape == (len(CLASSES), len(CLASSES)) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert labels == [CLASSES[i] for i in probabilities.argmax(axis=1)]
    with torch.inference_mode():
        expected = model.predict_logits(torch.from_numpy(faces).unsqueeze(1)).softmax(dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)

    path = tmp_path / "face.jpg"
    Image.fromarray(faces[0]).save(path, quality=100)
    single = predict(model, faces[0])
    mixed = predict(model, [faces[0], Image.fromarray(faces[0]), path])
    assert len(single.labels) == 1 and mixed.probabilities.shape == (3, len(CLASSES))
    np.testing.assert_allclose(mixed.probabilities[:2], np.repeat(single.probabilities, 2, axis=0), atol=1e-6)


def test_predict_in_bf16_autocast_gives_float32_probabilities_close_to_float32s(model: FERClassifier) -> None:
    faces = np.stack([synthetic_face(label, 200) for label in range(len(CLASSES))])
    reference = predict(model, faces).probabilities
    model.use_precision("bf16-mixed")
    try:
        autocast = predict(model, faces).probabilities
    finally:
        model.use_precision("32-true")
    assert autocast.dtype == np.float32 and not np.array_equal(autocast, reference)
    np.testing.assert_allclose(autocast, reference, atol=0.03)
    np.testing.assert_allclose(predict(model, faces).probabilities, reference, atol=1e-6)


def test_any_size_and_colour_is_resized_to_48(model: FERClassifier) -> None:
    face = synthetic_face(5, 0)
    big_rgb = np.repeat(np.repeat(face, 5, axis=0), 5, axis=1)[..., None].repeat(3, axis=2)  # 240x240x3
    np.testing.assert_allclose(predict(model, big_rgb).probabilities, predict(model, face).probabilities, atol=0.05)


def test_predict_uses_the_checkpoints_input_spec() -> None:
    """Resized to image_size, centre-cropped to crop_size (inside the model) as evaluation does."""
    model = vgg3(image_size=56, crop_size=48)
    face = synthetic_face(2, 0)
    view = eval_transform(56, 48)(image=face)["image"]
    with torch.inference_mode():
        expected = model(torch.from_numpy(view)[None, None]).softmax(dim=1).numpy()
    np.testing.assert_allclose(predict(model, face).probabilities, expected, atol=1e-6)


def test_predict_uses_eval_mode_and_restores_training_mode(model: FERClassifier) -> None:
    face = synthetic_face(1, 0)
    reference = predict(model, face).probabilities
    model.train()
    try:
        np.testing.assert_allclose(predict(model, face).probabilities, reference, atol=1e-6)
        assert model.training
    finally:
        model.eval()




def portrait_photos(sample_portrait: Path, folder: Path, count: int) -> list[Path]:
    """640x480 photos with the real portrait pasted at a different place in each."""
    portrait = np.asarray(Image.open(sample_portrait).convert("RGB").resize((200, 234)))
    paths = []
    for i in range(count):
        image = np.full((480, 640, 3), 120, dtype=np.uint8)
        x, y = 40 + 70 * (i % 6), 20 + 50 * (i % 4)
        image[y : y + 234, x : x + 200] = portrait
        paths.append(folder / f"photo{i}.jpg")
        Image.fromarray(image).save(paths[-1], quality=92)
    return paths


def test_predict_images_gives_what_predict_image_gives_in_order_with_errors_in_place(
    model: FERClassifier, sample_portrait: Path, tmp_path: Path
) -> None:
    photos = portrait_photos(sample_portrait, tmp_path, 7)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    crop = synthetic_face(2, 0)
    inputs = [*photos[:3], tmp_path / "broken.jpg", crop, *photos[3:]]
    detector = FaceDetector()
    results = list(predict_images(model, inputs, detector, workers=2, batch_faces=3))
    assert len(results) == len(inputs)
    assert results[3].image is None and results[3].faces == [] and "broken.jpg" in results[3].error
    assert [face.source for face in results[4].faces] == ["crop"]
    for image, result in zip(inputs, results):
        if result.error is None:
            expected = predict_image(model, image, detector)
            assert [f.box for f in result.faces] == [f.box for f in expected] and len(expected) == 1
            np.testing.assert_allclose(np.stack([f.probabilities for f in result.faces]), np.stack([f.probabilities for f in expected]), atol=1e-5)


def test_predict_images_runs_its_detection_threads_single_threaded_and_restores_the_libraries(
    model: FERClassifier, sample_portrait: Path, tmp_path: Path
) -> None:
    previous = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(3)
    cv2.setNumThreads(3)
    try:
        results = predict_images(model, portrait_photos(sample_portrait, tmp_path, 2), FaceDetector(), workers=2)
        next(results)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
        list(results)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (3, 3)
    finally:
        torch.set_num_threads(previous[0])
        cv2.setNumThreads(previous[1])


def test_find_faces_on_a_smaller_copy_gives_boxes_in_the_originals_pixels(sample_portrait: Path, tmp_path: Path) -> None:
    (photo,) = portrait_photos(sample_portrait, tmp_path, 1)
    small = np.asarray(Image.open(photo).convert("RGB"))
    large = cv2.resize(small, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    detector = FaceDetector()
    (expected,) = find_faces(small, detector).boxes
    found = find_faces(large, detector, detect_max_side=640)
    assert found.source == "detected" and len(found.boxes) == 1
    assert all(abs(a - 2 * b) <= 4 for a, b in zip(found.boxes[0].as_list(), expected.as_list()))
    assert found.crops[0].shape == (48, 48)
    whole = find_faces(large, detector, detect=False)
    assert whole.source == "crop" and whole.boxes[0].as_list() == [0, 0, 1280, 960]


@pytest.mark.parametrize(("min_face", "scale_factor", "min_neighbors"), [(48, 1.1, 5), (64, 1.2, 5), (48, 1.1, 0), (24, 1.3, 3)])
def test_a_search_split_over_two_threads_finds_the_same_boxes(sample_portrait: Path, min_face: int, scale_factor: float, min_neighbors: int) -> None:
    portrait = to_gray(np.asarray(Image.open(sample_portrait).convert("RGB")))
    tiled = np.full((480, 640), 120, dtype=np.uint8)
    for x, y in [(20, 10), (340, 20), (40, 250), (360, 240)]:
        tiled[y : y + 220, x : x + 190] = cv2.resize(portrait, (190, 220), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640), dtype=np.uint8)
    detector = FaceDetector(min_face, scale_factor, min_neighbors, method="haar")
    found = []
    with ThreadPoolExecutor(1) as pool:
        for gray in (portrait, tiled, noise, tiled[:, ::-1].copy()):
            boxes = detector.detect(gray)
            assert detector.detect(gray, pool) == boxes
            found.append(len(boxes))
    assert detector._far_cascade is not None  # the pool searched its half
    assert found[0] >= 1 and found[1] >= 1  # there are faces to find
    if min_neighbors > 0:
        assert found[2] == 0  # and none in noise


def test_split_window_halves_the_search_scales() -> None:
    # a 320x240 search at scale 1.1 has 24 scales, windows 24 to 236 pixels: the cut is among them
    cut = split_window((240, 320), 1.1)
    windows = [round(24 * 1.1**i) for i in range(24)]
    assert cut in windows[1:] and windows.index(cut) < 12  # the small scales cost more: fewer of them
    assert split_window((24, 24), 1.1) is None and split_window((25, 40), 1.1) is None  # one scale
    assert split_window((27, 40), 1.1) == 26  # two scales (windows 24 and 26), one each
