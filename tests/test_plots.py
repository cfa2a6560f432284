"""fer.plots and fer.analyze: the numbers behind each figure, and the PNGs a run directory gets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import compose_config, synthetic_face
from omegaconf import open_dict
from PIL import Image
from torch import nn

from fer import CLASSES, FERClassifier, load_model
from fer.analyze import analyze
from fer.inference import predict
from fer.models import build_model
from fer.plots import (
    confusion_figure,
    gradcam,
    gradcam_layer,
    per_class_figure,
    pick_per_class,
    precision_recall,
    read_learning_curves,
    save,
)

# what Lightning's CSVLogger writes for two epochs and fer.train's validate/test on the best
# checkpoint afterwards (logged under epoch 2, which did not train)
METRICS_CSV = """epoch,lr-SGD,step,test/acc,train/acc,train/loss,val/acc,val/loss
,0.01,0,,,,,
0,,4,,,,0.25,1.9
0,,4,,0.3,2.1,,
1,,9,,,,0.5,1.4
1,,9,,0.6,1.2,,
2,,10,,,,0.5,1.4
2,,10,0.45,,,,
"""


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> FERClassifier:
    return load_model(str(tiny_checkpoint))


def test_precision_and_recall_from_confusion() -> None:
    confusion = np.zeros((7, 7), dtype=int)
    confusion[0, 0], confusion[0, 3], confusion[3, 3], confusion[5, 0] = 3, 1, 4, 2
    precision, recall = precision_recall(confusion)
    np.testing.assert_allclose(precision[[0, 3]], [3 / 5, 4 / 5])
    np.testing.assert_allclose(recall[[0, 3, 5]], [3 / 4, 1.0, 0.0])
    assert precision[1] == 0 and recall[1] == 0, "an absent class scores 0, not NaN"


def test_learning_curves_keep_only_trained_epochs(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    curves = read_learning_curves(path)
    assert curves == {
        "train/loss": {0: 2.1, 1: 1.2},
        "val/loss": {0: 1.9, 1: 1.4},
        "train/acc": {0: 0.3, 1: 0.6},
        "val/acc": {0: 0.25, 1: 0.5},
    }


def test_figures_are_written_as_png(tmp_path: Path) -> None:
    confusion = np.arange(49).reshape(7, 7)
    for name, figure in (("confusion", confusion_figure(confusion)), ("per_class", per_class_figure(confusion))):
        path = save(figure, tmp_path / "plots" / f"{name}.png")
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 300


def test_figures_are_saved_with_a_palette_in_far_fewer_bytes(tmp_path: Path) -> None:
    confusion = np.arange(49).reshape(7, 7) * 20
    lean = save(confusion_figure(confusion), tmp_path / "lean.png")
    # what save() wrote before, from a fresh figure: a second draw moves the constrained layout
    confusion_figure(confusion).savefig(plain := tmp_path / "plain.png", dpi=120)
    with Image.open(lean) as image, Image.open(plain) as reference:
        assert image.mode == "P" and image.size == reference.size
        difference = np.abs(np.asarray(image.convert("RGB"), np.int16) - np.asarray(reference.convert("RGB"), np.int16))
    assert difference.mean() < 0.5 and difference.max() < 48, "the same figure, colours off by a few levels at most"
    assert lean.stat().st_size < 0.5 * plain.stat().st_size


def test_training_writes_the_run_plots(tiny_checkpoint: Path) -> None:
    run = tiny_checkpoint.parent / "run"
    assert {p.name for p in (run / "plots").glob("*.png")} >= {
        "learning_curves.png", "confusion_val.png", "per_class_val.png", "confusion_test.png", "per_class_test.png"
    }


def test_pick_per_class_takes_classes_in_turn() -> None:
    labels = np.repeat(np.arange(7), 3)
    picked = pick_per_class(labels, 9, seed=1)
    assert len(set(picked)) == 9
    assert sorted(labels[picked][:7]) == list(range(7)) and set(labels[picked][7:]) == {0, 1}


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("vgg3", {}), ("vggnet", {"input_size": 40}), ("vgg16", {"pretrained": "none"})],
)
def test_gradcam_hooks_the_last_conv_block_of_every_network(name: str, kwargs: dict) -> None:
    net = build_model(name, num_classes=len(CLASSES), **kwargs)
    layer = gradcam_layer(net)
    modules = list(net.modules())
    last_conv = max(i for i, m in enumerate(modules) if isinstance(m, nn.Conv2d))
    assert isinstance(layer, nn.MaxPool2d) and modules.index(layer) > last_conv


def test_gradcam_maps_and_probabilities(model: FERClassifier) -> None:
    faces = [synthetic_face(label, 0) for label in range(len(CLASSES))]
    cams, probabilities = gradcam(model, faces)
    assert cams.shape == (len(faces), 48, 48) and np.isfinite(cams).all()
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert all(cam.max() == pytest.approx(1.0) or cam.max() == 0 for cam in cams)
    np.testing.assert_allclose(probabilities, predict(model, faces).probabilities, atol=1e-5)
    assert not gradcam_layer(model.net)._forward_pre_hooks, "the hook is removed"
    assert not model.training


@pytest.mark.slow
def test_analyze_makes_every_plot_of_a_run(tiny_checkpoint: Path, fer_zip: Path, tmp_path: Path) -> None:
    run = tiny_checkpoint.parent / "run"
    cfg = compose_config(
        [f"run_dir={run}", f"ckpt_path={tiny_checkpoint}", f"data.root={fer_zip}", f"paths.cache_dir={tmp_path}", "gradcam_faces=5"],
        config_name="analyze",
    )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "analyze")
    written = {p.name: p for p in analyze(cfg)}
    assert {"examples_test.png", "gradcam_test.png", "learning_curves.png", "confusion_test.png"} <= set(written)
    assert all(p.parent == run / "plots" for p in written.values())
    with Image.open(written["gradcam_test.png"]) as image:
        assert image.width > image.height, "five faces side by side"
