"""The frozen-feature cache: same outputs and gradients as the plain network, the frozen layers run
once per image, and it steps aside wherever a cached value would be wrong or wasted."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import open_dict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fer.models.frozen_cache import FrozenFeatureCache, check_frozen
from fer.models.vgg16 import VGG16Transfer
from fer.train import train
from fer.training.module import FERClassifier


def pair(trainable_convs: int = 2) -> tuple[VGG16Transfer, VGG16Transfer]:
    """The same random weights with and without the cache."""
    torch.manual_seed(0)
    cached = VGG16Transfer(pretrained="none", trainable_convs=trainable_convs, head=[16], input_size=32, cache_frozen=True)
    plain = VGG16Transfer(pretrained="none", trainable_convs=trainable_convs, head=[16], input_size=32)
    plain.load_state_dict(cached.state_dict())
    return cached, plain


def count_first_conv(net: VGG16Transfer) -> list[int]:
    """Batch sizes the first (frozen) convolution has seen."""
    seen: list[int] = []
    net.features[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    return seen


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_outputs_and_gradients_match_the_plain_network() -> None:
    """Filled under inference mode (as validation fills it), then used for a training step:
    logits and every gradient agree with the uncached network's, and frozen weights get none."""
    cached, plain = pair()
    x = images(6)
    with torch.inference_mode():
        torch.testing.assert_close(cached.eval()(x), plain.eval()(x))
    assert len(cached.cache) == 6
    cached.train(), plain.train()
    torch.manual_seed(1)
    out = cached(x)
    torch.manual_seed(1)
    expected = plain(x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, p), q in zip(cached.named_parameters(), plain.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, msg=name)
        else:
            assert p.grad is None and q.grad is None, name


def test_frozen_layers_run_once_per_image() -> None:
    cached, _ = pair()
    seen = count_first_conv(cached)
    x = images(5)
    cached.train()
    cached(x)
    cached(x)
    assert seen == [5]
    cached(torch.cat([x[:3], images(2, seed=1)]))
    assert seen == [5, 2]
    assert len(cached.cache) == 7


def test_steps_aside_where_gradients_must_reach_the_frozen_layers() -> None:
    """Grad-CAM evaluates with gradients on and hooks convolutions: it must see the real layers."""
    cached, _ = pair(trainable_convs=0)
    seen = count_first_conv(cached)
    x = images(3)
    cached.eval()
    with torch.no_grad():
        cached(x)
    cached(x)
    cached(x.clone().requires_grad_())
    assert seen == [3, 3, 3]


def test_autocast_and_dtype_key_separate_entries() -> None:
    cached, _ = pair()
    seen = count_first_conv(cached)
    x = images(2)
    with torch.no_grad():
        cached(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cached(x)
        cached(x.double().float())
    assert seen == [2, 2]
    same_bytes = torch.arange(8, dtype=torch.int16).view(1, 8)
    assert FrozenFeatureCache.keys(same_bytes.view(torch.float16)) != FrozenFeatureCache.keys(same_bytes.view(torch.bfloat16))


def test_weights_changes_empty_the_cache() -> None:
    """New weights (a checkpoint, the ImageNet file) or a new freezing make every entry stale."""
    cached, plain = pair()
    with torch.no_grad():
        cached(images(4))
    cached.load_state_dict(plain.state_dict())
    assert len(cached.cache) == 0
    with torch.no_grad():
        cached(images(4))
    cached.freeze(1)
    assert len(cached.cache) == 0 and cached.split == 28


def test_copies_and_pickles_start_empty() -> None:
    """An EMA copy of the network must not double the cache's memory."""
    cached, _ = pair()
    with torch.no_grad():
        cached(images(4))
    assert len(copy.deepcopy(cached).cache) == 0
    assert len(pickle.loads(pickle.dumps(cached)).cache) == 0
    assert len(cached.cache) == 4


def test_a_full_cache_warns_once_and_keeps_computing(caplog: pytest.LogCaptureFixture) -> None:
    cache = FrozenFeatureCache(limit_bytes=3 * 4 * 10)
    prefix = nn.Flatten()
    x = torch.rand(5, 10)
    with caplog.at_level(logging.WARNING), torch.no_grad():
        torch.testing.assert_close(cache(prefix, x, training=True), x)
        torch.testing.assert_close(cache(prefix, x, training=True), x)
    assert len(cache) == 3
    assert [r.message.startswith("Frozen-feature cache full (3 entries") for r in caplog.records] == [True]


def test_refuses_what_it_cannot_cache_exactly() -> None:
    with pytest.raises(ValueError, match="model.cache_frozen=true needs frozen convolutions"):
        VGG16Transfer(pretrained="none", trainable_convs=-1, cache_frozen=True)
    with pytest.raises(ValueError, match="Cannot cache features through BatchNorm2d"):
        check_frozen(nn.Sequential(nn.Conv2d(1, 2, 3).requires_grad_(False), nn.BatchNorm2d(2)))
    with pytest.raises(ValueError, match=r"trainable parameters \(0.weight, 0.bias\): freeze them first"):
        check_frozen(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_on_for_fit_only() -> None:
    """Images recur across fit's epochs; the test after fit, evaluation and inference see each
    image once, so the module keeps the cache off there and frees its memory after fit."""
    net = {"name": "vgg16", "pretrained": "none", "trainable_convs": 2, "head": [8], "cache_frozen": True}
    module = FERClassifier(net=net, input_spec={"image_size": 32, "crop_size": 32, "channels": 1}, optimizer={"_target_": "torch.optim.SGD", "lr": 0.01})
    data = TensorDataset(torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8), torch.arange(6) % 7)
    sizes: list[int] = []

    class Record(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            sizes.append(len(pl_module.net.cache))

    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Record()])
    assert not module.net.cache.enabled
    loader = DataLoader(data, batch_size=3)
    trainer.fit(module, loader, loader)
    assert sizes == [6, 6]
    assert not module.net.cache.enabled and len(module.net.cache) == 0
    trainer.test(module, loader, verbose=False)
    assert len(module.net.cache) == 0


@pytest.mark.slow
def test_training_with_the_cache_gives_the_same_run(make_cfg, tmp_path: Path) -> None:
    """The seed's VGG16 row with and without the cache: after two epochs (the second trained from
    the cache) the weights agree, and so does the test set's score."""
    weights, tests = {}, {}
    for cache in ("true", "false"):
        cfg = make_cfg("experiment=seed/vgg16_transfer", "model.pretrained=none", "model.head=[8]", "trainer.max_epochs=2",
                       f"model.cache_frozen={cache}", "data.batch_size=8")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / f"cache_{cache}")
        tests[cache] = train(cfg)["test"]
        weights[cache] = torch.load(tmp_path / f"cache_{cache}" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert weights["true"].keys() == weights["false"].keys()
    for name, value in weights["true"].items():
        torch.testing.assert_close(value, weights["false"][name], rtol=1e-4, atol=1e-5, msg=name)
    assert tests["true"]["loss"] == pytest.approx(tests["false"]["loss"], rel=1e-4)


@pytest.mark.slow
def test_the_timing_script_times_three_passes(fer_zip: Path, tmp_path: Path) -> None:
    """experiments/bench/frozen_cache.py, whose numbers experiments/benchmarks.md quotes."""
    out = tmp_path / "frozen_cache.json"
    script = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "frozen_cache.py"
    overrides = ["model.pretrained=none", "model.head=[8]", "data.batch_size=4", "trainer.precision=32-true", f"paths.cache_dir={tmp_path / 'cache'}"]
    env = {**os.environ, "FER2013_ROOT": str(fer_zip)}
    subprocess.run([sys.executable, str(script), "--batches", "2", "--out", str(out), *overrides], check=True, env=env, capture_output=True)
    result = json.loads(out.read_text())
    assert result["batches"] == 2 and result["batch_size"] == 4
    assert 0 < result["cache_entries"] <= 8
    assert all(result[f"{name}_ms_per_step"] > 0 for name in ("uncached", "filling", "cached"))
