"""fer.vision.images, the one reader of pixels: a file gives the same 48x48 face to training data, to
folder evaluation and to prediction; one resize rule; one suffix list; and the InputSpec and TTA
views that sit on top of it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import synthetic_face
from PIL import Image

from fer.data.folder import read_folder
from fer.data.sources import load_fer2013
from fer.inference import prepare_faces
from fer.input_spec import InputSpec
from fer.training.tta import TTA_MODES, VIEWS_PER_FACE, check_mode, views
from fer.vision.images import IMAGE_SIZE, ImageReadError, is_image_file, load_image, resize, to_face, to_gray


def photo(height: int = 90, width: int = 120) -> np.ndarray:
    """An RGB image with detail at every scale (not a face; the readers do not care)."""
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (height // 6, width // 6, 3)), np.ones((6, 6, 1)))
    return np.clip(smooth + rng.integers(-30, 31, (height, width, 3)), 0, 255).astype(np.uint8)


def test_one_file_is_one_face_for_training_folder_evaluation_and_prediction(fer_folder_copy: Path, tmp_path: Path) -> None:
    """An RGB 120x90 PNG inside the Kaggle layout (training data), inside a labelled folder
    (fer.evaluate data=folder) and passed to prediction becomes the very same 48x48 array."""
    image = photo()
    Image.fromarray(image).save(fer_folder_copy / "train" / "happy" / "Training_photo.png")
    labelled = tmp_path / "labelled" / "happy"
    labelled.mkdir(parents=True)
    Image.fromarray(image).save(labelled / "photo.png")
    expected = to_face(labelled / "photo.png")

    data = load_fer2013(fer_folder_copy)
    training = data.images[list(data.names).index("train/happy/Training_photo.png")]
    folder = read_folder(tmp_path / "labelled").known.images[0]
    predicted = prepare_faces([to_gray(labelled / "photo.png")], InputSpec())[0, 0].numpy()

    assert expected.shape == (IMAGE_SIZE, IMAGE_SIZE) and expected.dtype == np.uint8
    np.testing.assert_array_equal(training, expected)
    np.testing.assert_array_equal(folder, expected)
    np.testing.assert_array_equal(predicted, expected)


def test_bytes_paths_pil_images_and_arrays_decode_alike(tmp_path: Path) -> None:
    image = photo()
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    for source in (path, str(path), path.read_bytes(), Image.open(path), image):
        np.testing.assert_array_equal(load_image(source), image)
    with pytest.raises(ImageReadError, match="the encoded image: not an image Pillow can decode"):
        load_image(b"<html>not an image</html>")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """A phone photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    stored = photo(60, 102)
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG", exif=exif)
    upright = load_image(buffer.getvalue())
    assert upright.shape == (102, 60, 3)
    np.testing.assert_array_equal(upright, np.rot90(stored, k=-1))


def test_resize_averages_areas_to_shrink_and_interpolates_to_enlarge() -> None:
    blocks = np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16, np.ones((24, 24), dtype=np.uint8))  # 96x96
    np.testing.assert_array_equal(resize(blocks, 48), np.kron(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16, np.ones((12, 12), dtype=np.uint8)))
    stripes = np.tile(np.array([0, 255], dtype=np.uint8), (2, 1))  # 2x2: a bilinear enlargement has grays between
    enlarged = resize(stripes, 8)
    assert enlarged.shape == (8, 8) and 0 < np.median(enlarged[0]) < 255
    face = synthetic_face(3, 0)
    assert resize(face, IMAGE_SIZE) is face


def test_one_suffix_list() -> None:
    assert is_image_file("a/b/KA.AN1.39.TIFF") and is_image_file("x.webp") and is_image_file(Path("face.JPG"))
    assert not is_image_file(".DS_Store") and not is_image_file("._face.jpg") and not is_image_file("notes.txt")


def test_input_spec_checks_itself_and_round_trips() -> None:
    spec = InputSpec.from_data_config({"image_size": 56, "crop_size": None, "channels": 3})
    assert spec == InputSpec(56, 56, 3) and InputSpec.from_dict(spec.as_dict()) == spec
    assert InputSpec.from_dict(None) == InputSpec(48, 48, 1)  # a checkpoint written before input_spec existed
    with pytest.raises(ValueError, match="data.crop_size=50 must be between 8 and data.image_size=48"):
        InputSpec(48, 50)
    with pytest.raises(ValueError, match="data.channels=2 must be 1"):
        InputSpec(channels=2)


def test_tta_views() -> None:
    x = torch.arange(2 * 48 * 48, dtype=torch.float32).view(2, 1, 48, 48)
    assert [v.shape[-1] for v in views(x, "none", 40)] == [48]
    flip = views(x, "flip", 40)
    assert len(flip) == 2 and torch.equal(flip[1], x.flip(-1))
    ten = views(x, "tencrop", 40)
    assert len(ten) == 10 and all(v.shape[-2:] == (40, 40) for v in ten)
    assert torch.equal(ten[0], x[..., :40, :40]) and torch.equal(ten[4], x[..., 4:44, 4:44])
    assert len(views(x[..., :40, :40], "tencrop", 40)) == 2  # no larger than the crop: flip
    assert {mode: len(views(x, mode, 40)) for mode in TTA_MODES} == VIEWS_PER_FACE
    with pytest.raises(ValueError, match=r"module.val_tta='ten_crop' must be one of none, flip, tencrop"):
        check_mode("ten_crop", "module.val_tta")
