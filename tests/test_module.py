"""FERClassifier: loss, optimiser and schedule building, test-time augmentation, raw-image prediction,
and checkpoints that reload without fetching pretrained weights again."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from fer.classes import CLASSES
from fer.factory import balanced_class_weights
from fer.models.vgg16 import VGG16Transfer
from fer.training.mixing import mix_batch
from fer.training.module import FERClassifier, eval_metrics, summarise

SGD = {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.9}
TINY = {"name": "vgg1", "blocks": 1, "filters": [4], "dense": 8}


def classifier(net: dict[str, Any] | None = None, **kwargs: Any) -> FERClassifier:
    kwargs.setdefault("optimizer", SGD)
    return FERClassifier(net=net or TINY, **kwargs)


def attach(module: FERClassifier, steps: int = 40, epochs: int = 7) -> FERClassifier:
    """Stand in for the Trainer attributes configure_optimizers reads."""
    module.trainer = SimpleNamespace(estimated_stepping_batches=steps, max_epochs=epochs)
    return module


def faces(n: int = 16, channels: int = 1, size: int = 48) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
    return TensorDataset(images, torch.arange(n) % 7)


def tiny_trainer(tmp_path: Path, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, **kwargs,
    )


def test_loss_applies_label_smoothing_and_class_weights() -> None:
    weights = [1.0, 5.0, 1.0, 0.5, 1.0, 2.0, 1.0]
    module = classifier(label_smoothing=0.1, class_weights=weights)
    logits, targets = torch.randn(6, 7), torch.tensor([0, 1, 1, 3, 5, 6])
    expected = F.cross_entropy(logits, targets, weight=torch.tensor(weights), label_smoothing=0.1)
    torch.testing.assert_close(module.loss(logits, targets), expected)
    assert module.loss(logits, targets) != pytest.approx(F.cross_entropy(logits, targets).item())
    assert "class_weights" not in module.state_dict()


def test_balanced_class_weights_are_inverse_frequency_with_mean_one() -> None:
    """``module.class_weights=balanced`` (sklearn's): every class carries the same total weight, so
    disgust (1.5% of FER-2013 train) weighs the most; the average weight per image is 1."""
    counts = [3995, 436, 4097, 7215, 4830, 3171, 4965]
    weights = balanced_class_weights(counts)
    assert [w * c for w, c in zip(weights, counts)] == pytest.approx([sum(counts) / 7] * 7)
    assert sum(w * c for w, c in zip(weights, counts)) == pytest.approx(sum(counts))
    assert max(weights) == weights[1] and balanced_class_weights([5, 5]) == [1.0, 1.0]


def test_bad_class_weights_and_tta_are_refused() -> None:
    with pytest.raises(ValueError, match="module.class_weights needs 7 values .*got 3"):
        classifier(class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="module.tta='ten_crop' must be one of none, flip"):
        classifier(tta="ten_crop")


@pytest.mark.parametrize(
    ("target", "options"),
    [
        ("torch.optim.SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
        ("torch.optim.Adam", {"lr": 1e-3, "weight_decay": 1e-4}),
        ("torch.optim.AdamW", {"lr": 3e-4, "weight_decay": 0.05}),
    ],
)
def test_optimizer_from_config_skips_frozen_parameters(target: str, options: dict[str, Any]) -> None:
    module = classifier(optimizer={"_target_": target, **options})
    module.net.features[0].requires_grad_(False)
    optimizer = module.configure_optimizers()["optimizer"]
    assert type(optimizer).__name__ == target.rsplit(".", 1)[1]
    group = optimizer.param_groups[0]
    assert {k: group[k] for k in options} == options
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert len(group["params"]) == len(trainable) == len(list(module.parameters())) - 2


def test_a_non_optimizer_target_is_refused() -> None:
    module = classifier(optimizer={"_target_": "torch.nn.Linear", "in_features": 1})
    with pytest.raises(ValueError, match="is not a torch.optim optimizer"):
        module.configure_optimizers()


def test_no_scheduler() -> None:
    assert set(attach(classifier(scheduler=None)).configure_optimizers()) == {"optimizer"}


@pytest.mark.parametrize(
    ("scheduler", "interval", "check"),
    [
        (
            {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.05, "pct_start": 0.25},
            "step",
            lambda s: s.total_steps == 40,
        ),
        (
            {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.05, "total_steps": 12},
            "step",
            lambda s: s.total_steps == 12,
        ),
        ({"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR"}, "epoch", lambda s: s.T_max == 7),
        (
            {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 3, "gamma": 0.5},
            "epoch",
            lambda s: s.step_size == 3 and s.gamma == 0.5,
        ),
        ({"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "patience": 2}, "epoch", lambda s: s.mode == "max"),
    ],
)
def test_schedulers_are_filled_in_from_the_trainer(scheduler: dict[str, Any], interval: str, check) -> None:
    """OneCycleLR steps per batch over the run's steps, CosineAnnealingLR spans max_epochs, and
    ReduceLROnPlateau maximises val/acc."""
    config = attach(classifier(scheduler=scheduler)).configure_optimizers()
    lr_scheduler = config["lr_scheduler"]
    assert type(lr_scheduler["scheduler"]).__name__ == scheduler["_target_"].rsplit(".", 1)[1]
    assert lr_scheduler["interval"] == interval and lr_scheduler["monitor"] == "val/acc"
    assert lr_scheduler["scheduler"].optimizer is config["optimizer"]
    assert check(lr_scheduler["scheduler"])


def test_a_one_cycle_warm_up_of_exactly_one_step_is_refused() -> None:
    """torch's OneCycleLR divides by zero when the warm-up is one step (5 x 0.2); shorter ones
    (a fast_dev_run of one step) and longer ones work."""
    scheduler = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.05, "pct_start": 0.2, "total_steps": 5}
    with pytest.raises(ValueError, match="pct_start x total_steps = 1 of its 5 optimizer steps"):
        attach(classifier(scheduler=scheduler)).configure_optimizers()
    for total_steps in (1, 6):
        config = attach(classifier(scheduler={**scheduler, "total_steps": total_steps})).configure_optimizers()
        for _ in range(total_steps):
            config["optimizer"].step()
            config["lr_scheduler"]["scheduler"].step()


def test_one_cycle_spans_the_real_fit(tmp_path: Path) -> None:
    """With a real Trainer, total_steps is the number of optimiser steps the fit takes."""
    module = classifier(scheduler={"_target_": "torch.optim.lr_scheduler.OneCycleLR", "max_lr": 0.05})
    trainer = tiny_trainer(tmp_path, max_epochs=2, limit_val_batches=0)
    trainer.fit(module, DataLoader(faces(16), batch_size=4))
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.total_steps == 8 == trainer.global_step
    assert scheduler.last_epoch == 8


def test_flip_tta_averages_the_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    module = classifier(tta="flip").eval()
    x = faces(4)[:][0]
    with torch.no_grad():
        expected = (module(x) + module(x.flip(-1))) / 2
        torch.testing.assert_close(module.predict_logits(x), expected)
        torch.testing.assert_close(module.predict_logits(x.flip(-1)), expected)
        assert not torch.allclose(module(x), expected)
        module.tta = "none"
        torch.testing.assert_close(module.predict_logits(x), module(x))


def test_an_entry_points_tta_option_overrides_the_checkpoints_or_keeps_it() -> None:
    """fer.evaluate, fer.predict and fer.export pass their tta= option here: null keeps the trained one."""
    module = classifier(tta="flip")
    module.use_tta(None)
    assert module.tta == "flip"
    module.use_tta("tencrop")
    assert module.tta == "tencrop"
    with pytest.raises(ValueError, match=r"tta='ten_crop' must be null \(the checkpoint's\) or one of none, flip, tencrop"):
        module.use_tta("ten_crop")
    assert module.tta == "tencrop"


def test_an_entry_points_precision_option_picks_autocast_or_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """fer.predict, fer.serve and fer.bench pass precision= here; classify and fer.serve run under the context."""
    module = classifier()
    assert module.inference_precision == "32-true" and not isinstance(module.inference_autocast(), torch.autocast)
    monkeypatch.setattr("fer.run.hardware.cpu_has_bf16", lambda: True)
    module.use_precision("auto")
    assert module.inference_precision == "bf16-mixed"
    with module.inference_autocast():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr("fer.run.hardware.cpu_has_bf16", lambda: False)
    module.use_precision("auto")
    assert module.inference_precision == "32-true"
    module.use_precision("bf16-mixed")
    module.use_precision(None)
    assert module.inference_precision == "bf16-mixed"
    with pytest.raises(ValueError, match=r"precision='bf16-true' must be one of auto, 32-true, bf16-mixed, 16-mixed"):
        module.use_precision("bf16-true")


def test_tencrop_tta_averages_four_corners_the_centre_and_their_mirrors() -> None:
    """48x48 images into a net trained on 40x40 crops: the ten views are written out here by hand."""
    torch.manual_seed(0)
    module = classifier(tta="tencrop", input_spec={"image_size": 48, "crop_size": 40, "channels": 1}).eval()
    x = faces(4)[:][0]
    crops = [x[..., top : top + 40, left : left + 40] for top, left in ((0, 0), (0, 8), (8, 0), (8, 8), (4, 4))]
    with torch.no_grad():
        views = [module(c) for c in crops] + [module(c.flip(-1)) for c in crops]
        torch.testing.assert_close(module.predict_logits(x), torch.stack(views).mean(dim=0))
        torch.testing.assert_close(module.predict_logits(x, "none"), module(crops[-1]))  # the centre crop alone
        assert not torch.allclose(views[0], views[3])  # the corners really differ
        small = crops[0]  # no larger than the crop: no corners to take, so ten-crop is flip
        torch.testing.assert_close(module.predict_logits(small), module.predict_logits(small, "flip"))
        assert not torch.allclose(module.predict_logits(small), module(small))


def test_summarised_metrics_on_a_hand_made_batch() -> None:
    """Rows of the confusion matrix are true classes, columns predictions; per-class accuracy is
    recall, in CLASSES order; macro accuracy averages the classes, not the images."""
    truth = torch.tensor([0, 0, 0, 0, 1, 2, 3, 3, 4, 5, 6, 6])
    predicted = torch.tensor([0, 0, 0, 3, 1, 6, 3, 3, 4, 5, 6, 2])
    results = summarise(eval_metrics()(F.one_hot(predicted, 7).float(), truth))
    recall = {"angry": 3 / 4, "disgust": 1.0, "fear": 0.0, "happy": 1.0, "sad": 1.0, "surprise": 1.0, "neutral": 1 / 2}
    assert results["acc"] == pytest.approx(9 / 12)
    assert results["acc_macro"] == pytest.approx(sum(recall.values()) / 7)
    assert {name: results[f"acc_{name}"] for name in CLASSES} == pytest.approx(recall)
    expected = [[0] * 7 for _ in range(7)]
    for t, p in zip(truth.tolist(), predicted.tolist()):
        expected[t][p] += 1
    assert results["confusion"] == expected and expected[0][3] == 1  # angry taken for happy, row 0
    precision = {0: 1.0, 1: 1.0, 2: 0.0, 3: 2 / 3, 4: 1.0, 5: 1.0, 6: 1 / 2}
    f1 = [2 * precision[c] * r / (precision[c] + r) if precision[c] + r else 0.0 for c, r in enumerate(recall.values())]
    assert results["f1_macro"] == pytest.approx(sum(f1) / 7)


def test_validation_uses_val_tta_and_test_uses_tta() -> None:
    torch.manual_seed(0)
    module = classifier(tta="none", val_tta="flip").eval()
    x, y = faces(6)[:]
    with torch.no_grad():
        module.validation_step((x, y), 0)
        module.test_step((x, y), 0)
        flipped = module.loss((module(x) + module(x.flip(-1))) / 2, y)
        plain = module.loss(module(x), y)
    assert module.val_loss.compute() == pytest.approx(flipped.item())
    assert module.test_loss.compute() == pytest.approx(plain.item())
    assert flipped.item() != pytest.approx(plain.item())


def test_class_weighted_eval_loss_is_that_of_the_whole_set_whatever_the_batches() -> None:
    """Cross-entropy with class weights divides by the summed weights of the batch, so the epoch
    loss must weight each batch by that sum, not by its size, to equal the loss over all images."""
    torch.manual_seed(0)
    weights = [0.5, 3.0, 1.0, 0.3, 1.0, 1.2, 0.8]
    module = classifier(class_weights=weights).eval()
    x, y = faces(14)[:]
    with torch.no_grad():
        for start, stop in ((0, 3), (3, 14)):
            module.validation_step((x[start:stop], y[start:stop]), 0)
        whole = F.cross_entropy(module(x), y, weight=torch.tensor(weights))
    assert module.val_loss.compute() == pytest.approx(whole.item(), rel=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_uint8_images_are_scaled_to_unit_range(channels_last: bool) -> None:
    """Checkpoints predict on raw uint8 faces: the module scales them exactly as float [0, 1] input."""
    module = classifier(channels_last=channels_last).eval()
    x = faces(4)[:][0]
    with torch.no_grad():
        logits = module(x)
        torch.testing.assert_close(logits, module(x.float() / 255))
    assert logits.shape == (4, 7) and logits.dtype == torch.float32
    assert module.prepare(x).max() <= 1.0


def test_channels_last_reaches_inputs_and_weights() -> None:
    module = classifier(net={**TINY, "in_channels": 3}, channels_last=True)
    x = faces(2, channels=3)[:][0]
    assert module.prepare(x).is_contiguous(memory_format=torch.channels_last)
    assert not module.prepare(x).is_contiguous()
    assert module.net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert module(x).shape == (2, 7)


def test_channels_are_adapted_to_the_network() -> None:
    """Gray batches feed RGB networks (copied) and RGB batches feed gray ones (averaged)."""
    gray_net = classifier()
    rgb = torch.rand(2, 3, 48, 48)
    torch.testing.assert_close(gray_net.prepare(rgb), rgb.mean(dim=1, keepdim=True))
    rgb_net = classifier(net={"name": "vgg16", "pretrained": "none", "head": [8]})
    gray = torch.rand(2, 1, 48, 48)
    assert torch.equal(rgb_net.prepare(gray), gray.expand(-1, 3, -1, -1))
    assert rgb_net(faces(2)[:][0]).shape == (2, 7)


@pytest.mark.parametrize("alphas", [{"mixup_alpha": 0.4}, {"cutmix_alpha": 1.0}])
def test_mixed_training_step_trains_on_the_mixed_batch_and_soft_targets(alphas: dict[str, float]) -> None:
    module = classifier(label_smoothing=0.1, channels_last=True, **alphas)
    x, y = faces(8)[:]
    torch.manual_seed(3)
    loss = module.training_step((x, y), 0)
    torch.manual_seed(3)
    inputs, targets = mix_batch(module.prepare(x), y, 7, **alphas)
    assert not torch.equal(inputs, module.prepare(x)) and (targets.max(dim=1).values < 1).any()
    expected = F.cross_entropy(module.net(inputs), targets, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)


def test_mixing_fits_and_a_negative_alpha_is_refused(tmp_path: Path) -> None:
    module = attach(classifier(mixup_alpha=0.2, cutmix_alpha=1.0))
    trainer = tiny_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, DataLoader(faces(16), batch_size=8))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert 0.0 <= trainer.callback_metrics["train/acc"].item() <= 1.0
    with pytest.raises(ValueError, match="module.cutmix_alpha=-1.0 must be >= 0"):
        classifier(cutmix_alpha=-1.0)


def test_non_finite_loss_stops_training() -> None:
    module = classifier()
    with torch.no_grad():
        module.net.classifier[-1].bias.fill_(float("nan"))
    x, y = faces(4)[:]
    with pytest.raises(FloatingPointError, match="Non-finite training loss"):
        module.training_step((x, y), 0)


def test_vgg16_checkpoint_reloads_without_pretrained_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint holds the trained weights: reloading must not read (or need) the ImageNet file."""
    torch.manual_seed(0)
    weights = tmp_path / "vgg16.pth"
    torch.save(torchvision.models.vgg16(weights=None).features.state_dict(), weights)
    net = {"name": "vgg16", "pretrained": "imagenet", "weights_path": str(weights), "trainable_convs": 2, "head": [8]}
    module = classifier(net=net, input_spec={"image_size": 48, "crop_size": 48, "channels": 1})
    file_weight = torch.load(weights, weights_only=True)["28.weight"]
    assert torch.equal(module.net.features[28].weight, file_weight)

    trainer = tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(module, DataLoader(faces(4), batch_size=4))
    checkpoint = tmp_path / "vgg16.ckpt"
    trainer.save_checkpoint(checkpoint)
    trained = module.net.features[28].weight.detach().clone()
    assert not torch.equal(trained, file_weight)

    def no_reload(self: VGG16Transfer) -> None:
        raise AssertionError("load_pretrained called while reloading a checkpoint")

    monkeypatch.setattr(VGG16Transfer, "load_pretrained", no_reload)
    weights.unlink()
    reloaded = FERClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    assert torch.equal(reloaded.net.features[28].weight, trained)
    assert reloaded.input_spec.as_dict() == {"image_size": 48, "crop_size": 48, "channels": 1}
    assert "pretrained_init" not in reloaded.hparams


def test_compile_sends_the_trainer_runs_through_torch_compile_and_keeps_checkpoints_plain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``compile=True``: the network is compiled in place once, before fit, and training,
    validation and test run compiled graphs; the checkpoint keeps the plain network's keys and
    reloads uncompiled, with the trained weights."""
    compiled: list[torch.nn.Module] = []
    graph_calls: list[bool] = []

    def counting_backend(graph: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Any:
        def run(*args: Any) -> Any:
            graph_calls.append(torch.is_grad_enabled())
            return graph.forward(*args)

        return run

    plain_compile = torch.nn.Module.compile

    def compile_counting(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        # the graph capture is what is under test; inductor's C++ build would take a minute here
        compiled.append(self)
        plain_compile(self, *args, backend=counting_backend, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", compile_counting)
    torch._dynamo.reset()
    module = classifier(compile=True)
    trainer = tiny_trainer(tmp_path, max_epochs=1)
    trainer.fit(module, DataLoader(faces(16), batch_size=8), DataLoader(faces(8), batch_size=8))
    assert compiled == [module.net]
    assert graph_calls.count(True) == 2, "the two training steps"
    assert graph_calls.count(False) == 2, "the sanity check and the validation epoch"
    trainer.test(module, DataLoader(faces(8), batch_size=8), verbose=False)
    assert compiled == [module.net], "compiled again for test"
    assert graph_calls.count(False) == 3 and "test/acc" in trainer.callback_metrics

    checkpoint = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(checkpoint)
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert set(state) == {f"net.{key}" for key in module.net.state_dict()}
    reloaded = FERClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    assert not reloaded.hparams.compile and not reloaded.net_compiled and compiled == [module.net]
    x = faces(4)[:][0]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), module.eval()(x))
