"""``fer.export``: ONNX and TorchScript files that reproduce the PyTorch model, with a dynamic batch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from helpers import compose_config, synthetic_face
from omegaconf import open_dict

from fer import CLASSES, FERClassifier, load_model
from fer.export import FORMATS, METADATA_FILE, example_input, export, main_export, run_exported
from fer.inference import prepare_faces


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> FERClassifier:
    return load_model(str(tiny_checkpoint))


def assert_export_matches(model: FERClassifier, path: Path, fmt: str) -> None:
    faces = prepare_faces([synthetic_face(label, 300) for label in range(len(CLASSES))], model.input_spec)
    for images in (faces[:1], faces, example_input(model, 5, seed=3)):  # batch sizes 1, 7, 5
        with torch.inference_mode():
            expected = model.predict_logits(images).float()
        logits, probabilities = run_exported(path, fmt, images)
        assert logits.shape == (len(images), len(CLASSES))
        np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4, rtol=0)
        calibrated = (expected / model.temperature).softmax(dim=1)
        np.testing.assert_allclose(probabilities, calibrated.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_array_equal(probabilities.argmax(axis=1), expected.argmax(dim=1).numpy())


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_the_export_applies_the_temperature(model: FERClassifier, tmp_path: Path, fmt: str) -> None:
    """A calibrated model exports calibrated probabilities: other values than the plain softmax,
    the same labels, and the temperature in the file's description."""
    model.temperature = 2.5
    try:
        path = export(model, tmp_path / FORMATS[fmt], fmt)
        assert_export_matches(model, path, fmt)
        logits, probabilities = run_exported(path, fmt, example_input(model, 4, seed=2))
    finally:
        model.temperature = 1.0
    assert np.abs(probabilities - torch.from_numpy(logits).softmax(dim=1).numpy()).max() > 1e-3
    assert description(path, fmt)["temperature"] == 2.5


def description(path: Path, fmt: str) -> dict:
    """The metadata an exported file carries (ONNX properties, or TorchScript's extra file)."""
    if fmt == "onnx":
        return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra[METADATA_FILE])


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("tta", ["none", "flip"])
def test_exported_model_matches_pytorch(model: FERClassifier, tmp_path: Path, fmt: str, tta: str) -> None:
    model.tta = tta
    try:
        assert_export_matches(model, export(model, tmp_path / FORMATS[fmt], fmt), fmt)
    finally:
        model.tta = "none"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_keeps_the_models_own_crops(tmp_path: Path, fmt: str) -> None:
    """A model fed 56x56 that scores ten 48x48 crops: the crops happen inside the exported graph."""
    net = {"name": "vgg1", "blocks": 1, "filters": [8], "dense": 16}
    model = FERClassifier(
        net=net, optimizer={"_target_": "torch.optim.SGD", "lr": 0.1}, tta="tencrop",
        input_spec={"image_size": 56, "crop_size": 48, "channels": 1},
    ).eval()
    path = export(model, tmp_path / FORMATS[fmt], fmt)
    assert example_input(model, 1).shape == (1, 1, 56, 56)
    assert_export_matches(model, path, fmt)


def test_files_describe_their_input(model: FERClassifier, tmp_path: Path) -> None:
    onnx_path = export(model, tmp_path / "m.onnx", "onnx")
    graph = onnx.load(str(onnx_path))
    props = {p.key: json.loads(p.value) for p in graph.metadata_props}
    assert props["classes"] == list(CLASSES) and props["input_spec"] == model.input_spec.as_dict()
    (image_input,) = graph.graph.input
    assert image_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert image_input.type.tensor_type.shape.dim[0].dim_param == "batch"

    script_path = export(model, tmp_path / "m.pt", "torchscript")
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(script_path), _extra_files=extra)
    assert json.loads(extra[METADATA_FILE])["classes"] == list(CLASSES)


def test_export_entry_point_checks_the_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    cfg = compose_config([f"ckpt_path={tiny_checkpoint}", "format=onnx", "tta=flip"], config_name="export")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    path = main_export(cfg)
    assert path == tmp_path / "run" / "model.onnx" and path.stat().st_size > 0
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert props["tta"] == "flip" and props["checkpoint"] == str(tiny_checkpoint.resolve())


def test_export_that_disagrees_with_pytorch_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The check after writing is live: with a tolerance no file can meet, the command refuses."""
    cfg = compose_config([f"ckpt_path={tiny_checkpoint}", "format=torchscript", "tolerance=-1"], config_name="export")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match=r"exported torchscript model differs from PyTorch by .* > tolerance=-1"):
        main_export(cfg)


def test_unknown_format_is_refused(model: FERClassifier, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format='tflite' must be one of onnx, torchscript"):
        export(model, tmp_path / "m.tflite", "tflite")
