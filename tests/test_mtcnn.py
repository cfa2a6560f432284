"""MTCNN (fer.vision.mtcnn) and its place in FaceDetector: the weights, the gray networks, real faces
found and nothing in noise, the split search, and boxes framed as the Haar cascade frames them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from fer.vision import mtcnn
from fer.vision.faces import MTCNN_SIDE, Box, FaceDetector, mtcnn_box
from fer.vision.mtcnn import MTCNN, ONet, PNet, RNet


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN(min_face=48)


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, Box]:
    """scikit-image's astronaut (a real, smiling face) on a 640x480 gray photo, and where her face is."""
    photo = np.full((480, 640), 110, dtype=np.uint8)
    photo[40:440, 120:520] = cv2.resize(cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2GRAY), (400, 400), interpolation=cv2.INTER_AREA)
    # her face in the 512x512 original spans about x 170-260, y 50-170 (brows to chin): 400/512 of it here
    return photo, Box(120 + 170 * 400 // 512, 40 + 50 * 400 // 512, 90 * 400 // 512, 120 * 400 // 512)


def test_the_weights_are_checked_and_a_damaged_copy_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = mtcnn.load_weights()
    assert sorted(weights) == ["onet", "pnet", "rnet"]
    damaged = tmp_path / "mtcnn.pt"
    blob = bytearray(mtcnn.WEIGHTS.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    monkeypatch.setattr(mtcnn, "WEIGHTS", damaged)
    with pytest.raises(RuntimeError, match="damaged.*reinstall fer"):
        mtcnn.load_weights()
    monkeypatch.setattr(mtcnn, "WEIGHTS", tmp_path / "missing.pt")
    with pytest.raises(RuntimeError, match="missing.*package data"):
        mtcnn.load_weights()


@pytest.mark.parametrize(("net", "name", "size"), [(PNet, "pnet", 31), (RNet, "rnet", 24), (ONet, "onet", 48)])
def test_each_gray_network_computes_what_the_rgb_one_computes_on_three_equal_channels(
    detector: MTCNN, net: type[torch.nn.Module], name: str, size: int
) -> None:
    rgb = net()
    rgb.load_state_dict(mtcnn.load_weights()[name])
    gray = torch.rand(3, 1, size, size) * 2 - 1
    with torch.no_grad():
        expected = rgb.eval()(gray.expand(-1, 3, -1, -1).contiguous())
        got = getattr(detector, name)(gray.contiguous(memory_format=torch.channels_last))
    assert detector.pnet.conv1.in_channels == 1
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


def test_the_pyramid_maps_min_face_to_the_12_pixel_window_and_stops_at_the_image(detector: MTCNN) -> None:
    scales = detector.scales(480, 640)
    assert scales[0] == pytest.approx(12 / 48)
    assert all(b / a == pytest.approx(mtcnn.PYRAMID_FACTOR) for a, b in zip(scales, scales[1:]))
    assert 480 * scales[-1] >= 12 > 480 * scales[-1] * mtcnn.PYRAMID_FACTOR
    assert detector.scales(40, 40) == []  # smaller than the smallest face: nothing to search
    with pytest.raises(ValueError, match="at least P-Net's window"):
        MTCNN(min_face=8)


def test_finds_the_real_face_and_nothing_in_noise_or_a_blank(detector: MTCNN, astronaut: tuple[np.ndarray, Box]) -> None:
    photo, face = astronaut
    boxes, scores = detector.find(photo)
    assert len(boxes) == 1 and scores[0] > 0.9
    x1, y1, x2, y2 = boxes[0]
    centre = ((x1 + x2) / 2, (y1 + y2) / 2)
    assert abs(centre[0] - (face.x + face.w / 2)) < face.w * 0.25 and abs(centre[1] - (face.y + face.h / 2)) < face.h * 0.25
    assert 0.7 * face.w < x2 - x1 < 1.4 * face.w and 0.7 * face.h < y2 - y1 < 1.4 * face.h
    noise = np.random.default_rng(0).integers(0, 256, (480, 640), dtype=np.uint8)
    for empty in (noise, np.full((480, 640), 128, np.uint8)):
        boxes, scores = detector.find(empty)
        assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_smaller_faces_than_min_face_are_not_searched(astronaut: tuple[np.ndarray, Box]) -> None:
    photo, face = astronaut
    assert len(MTCNN(min_face=48).find(photo)[0]) == 1
    assert len(MTCNN(min_face=4 * face.h).find(photo)[0]) == 0


def test_four_faces_are_four_boxes_and_a_split_search_finds_the_same(sample_portrait: Path, detector: MTCNN) -> None:
    portrait = np.asarray(Image.open(sample_portrait).convert("L"))
    tiled = np.full((480, 640), 120, dtype=np.uint8)
    for x, y in [(20, 10), (340, 20), (40, 250), (360, 240)]:
        tiled[y : y + 220, x : x + 190] = cv2.resize(portrait, (190, 220), interpolation=cv2.INTER_AREA)
    boxes, _ = detector.find(tiled)
    assert len(boxes) == 4
    with ThreadPoolExecutor(1) as pool:
        for gray in (portrait, tiled, tiled[:, ::-1].copy()):
            alone, split = detector.find(gray), detector.find(gray, pool)
            np.testing.assert_array_equal(split[0], alone[0])
            np.testing.assert_array_equal(split[1], alone[1])


def test_mtcnn_boxes_become_the_cascades_square() -> None:
    box = mtcnn_box(100.0, 50.0, 180.0, 150.0)  # 80 wide, 100 tall, centre (140, 100)
    side = MTCNN_SIDE * np.sqrt(80 * 100)
    assert box.w == box.h == round(side)
    assert abs(box.x + box.w / 2 - 140) < 0.05 * side and abs(box.y + box.h / 2 - 100) < 0.05 * side


def test_both_methods_find_the_astronaut_in_about_the_same_square(astronaut: tuple[np.ndarray, Box]) -> None:
    photo, _ = astronaut
    (by_mtcnn,) = FaceDetector(method="mtcnn").detect(photo)
    (by_haar,) = FaceDetector(method="haar").detect(photo)
    assert by_mtcnn.w == by_mtcnn.h
    assert abs(by_mtcnn.w - by_haar.w) < 0.15 * by_haar.w
    assert abs(by_mtcnn.x - by_haar.x) < 0.1 * by_haar.w and abs(by_mtcnn.y - by_haar.y) < 0.1 * by_haar.w


def test_an_unknown_method_says_which_there_are() -> None:
    with pytest.raises(ValueError, match="method='dlib' is not one of mtcnn, haar"):
        FaceDetector(method="dlib")
    with pytest.raises(ValueError, match="cascade window"):
        FaceDetector(min_face=16, method="haar")
    assert FaceDetector(min_face=16, method="mtcnn").detect(np.zeros((64, 64), np.uint8)) == []


def test_copies_share_one_mtcnn_and_keep_the_method() -> None:
    first = FaceDetector(method="mtcnn")
    assert first.copy().mtcnn is first.mtcnn and first.copy().method == "mtcnn"
    assert FaceDetector(method="haar").copy().method == "haar"
