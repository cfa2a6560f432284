"""experiments/keras/seed_rows.py, the Keras cross-check of the seed rows: its rows mirror our
configs, and its export hands Keras the very split and VGG16 features our runs use. (Its Keras
step needs TensorFlow, which is not a project dependency, so it is not run here.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_config
from torch import nn

from fer.data import FER2013DataModule
from fer.models import build_model
from fer.models.vgg16 import vgg16_features

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "keras" / "seed_rows.py"


def load_script():
    spec = importlib.util.spec_from_file_location("seed_rows", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("row", ["vgg1_baseline", "vgg2_baseline", "vgg3_baseline", "vgg3_aug_dropout", "vgg3_aug_dropout_bn"])
def test_each_keras_row_is_the_seed_config(row: str) -> None:
    """Blocks, BN, augmentation and every dropout rate, against conf/experiment/seed/<row>.yaml."""
    script = load_script()
    blocks, batch_norm, dropout, augment = script.ROWS[row]
    cfg = compose_config([f"experiment=seed/{row}"])
    assert (blocks, batch_norm, dropout, augment) == (cfg.model.blocks, cfg.model.batch_norm, cfg.model.dropout, cfg.data.augment)
    assert list(script.FILTERS[:blocks]) == list(cfg.model.filters[:blocks])
    net = build_model(cfg.model.name, batch_norm=batch_norm, dropout=dropout, dropout_rate=cfg.model.dropout_rate)
    in_blocks = [m.p for m in net.features if isinstance(m, nn.Dropout)]
    in_head = [m.p for m in net.classifier if isinstance(m, nn.Dropout)]
    assert [r for r in script.dropout_rates(dropout, blocks) if r] == in_blocks + in_head
    assert cfg.data.batch_size == 16 and cfg.module.optimizer.lr == 0.001 and cfg.module.optimizer.momentum == 0.0


@pytest.mark.slow
def test_export_is_the_kaggle_split_and_the_vgg16_prefix(fer_zip: Path, tmp_path: Path) -> None:
    """Images and labels as FER2013DataModule(split=kaggle) gives them; features that the two
    trainable convolutions turn into what the whole VGG16 computes; kernels laid out for Keras."""
    weights = tmp_path / "vgg16.pth"
    torch.manual_seed(0)
    torch.save(vgg16_features().state_dict(), weights)
    out = tmp_path / "split.npz"
    env = {**os.environ, "FER2013_ROOT": str(fer_zip), "FER_VGG16_WEIGHTS": str(weights), "FER_CACHE_DIR": str(tmp_path / "cache")}
    subprocess.run([sys.executable, str(SCRIPT), "export", str(out), "--vgg16"], check=True, env=env, capture_output=True)
    data = dict(np.load(out))

    module = FER2013DataModule(root=str(fer_zip), cache_dir=str(tmp_path / "cache"), split="kaggle", min_sharpness=0)
    module.setup()
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(data[f"{split}_images"], module.datasets[split].images.numpy())
        np.testing.assert_array_equal(data[f"{split}_labels"], module.datasets[split].labels.numpy())

    net = build_model("vgg16", weights_path=str(weights), trainable_convs=2).eval()
    net.load_pretrained()
    images = torch.from_numpy(data["val_images"]).unsqueeze(1).expand(-1, 3, -1, -1).float() / 255
    features = torch.from_numpy(data["val_features"])
    assert features.shape == (len(images), 3, 3, 512)
    with torch.no_grad():
        whole = net.features((images - net.mean) / net.std)
        top = net.features[net.split :](features.permute(0, 3, 1, 2))
    torch.testing.assert_close(top, whole, rtol=1e-4, atol=1e-5)
    trainable = [m for m in net.features[net.split :] if isinstance(m, nn.Conv2d)]
    assert len(trainable) == 2
    for i, conv in enumerate(trainable):
        kernel = data[f"conv{i}_kernel"]
        assert kernel.shape == (3, 3, 512, 512)
        np.testing.assert_array_equal(kernel[1, 2, 7, 5], conv.weight[5, 7, 1, 2].item())
        np.testing.assert_array_equal(data[f"conv{i}_bias"], conv.bias.detach().numpy())
