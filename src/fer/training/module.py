"""FERClassifier: the LightningModule that owns loss, optimisation and metrics for any network.

Its neighbours own the rest: :mod:`fer.training.optim` builds the optimizer and schedule, :mod:`fer.training.tta`
the test-time views, :mod:`fer.inference` turns images into predictions, and the entry points
read each split's numbers from what ``trainer.validate``/``trainer.test`` return.

Hyperparameters are kept plain (dicts, lists, numbers, strings) so that
``FERClassifier.load_from_checkpoint(path)`` works with torch's ``weights_only`` loading and with
no Hydra and no config files.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
)

from fer.classes import CLASSES, NUM_CLASSES
from fer.input_spec import InputSpec
from fer.models import build_model, resolve
from fer.models.frozen_cache import FrozenFeatureCache
from fer.run.checkpoints import read_checkpoint
from fer.run.hardware import autocast_for, resolve_precision
from fer.training.mixing import mix_batch
from fer.training.optim import build_optimizer, build_scheduler
from fer.training.tta import centre_crop, check_mode, views

CALIBRATION_KEY = "calibration"
# what ``use_precision`` takes: the precisions that autocast can give a trained float32 network
INFERENCE_PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")


def eval_metrics() -> MetricCollection:
    """Accuracy, macro accuracy, macro-F1, per-class accuracy and the confusion matrix."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(NUM_CLASSES, average="micro"),
            "acc_macro": MulticlassAccuracy(NUM_CLASSES, average="macro"),
            "f1_macro": MulticlassF1Score(NUM_CLASSES, average="macro"),
            "acc_per_class": MulticlassAccuracy(NUM_CLASSES, average="none"),
            "confusion": MulticlassConfusionMatrix(NUM_CLASSES),
        }
    )


def summarise(computed: dict[str, Tensor]) -> dict[str, Any]:
    """Plain numbers from :func:`eval_metrics` results: scalars, ``acc_<class>`` and ``confusion``."""
    results: dict[str, Any] = {name: computed[name].item() for name in ("acc", "acc_macro", "f1_macro")}
    results.update({f"acc_{cls}": value for cls, value in zip(CLASSES, computed["acc_per_class"].tolist())})
    results["confusion"] = computed["confusion"].int().tolist()
    return results


class FERClassifier(pl.LightningModule):
    """Classify 7 expressions with any registered network.

    Args:
        net: ``{"name": <registered model>, **constructor kwargs}``; a legacy name (checkpoints of
            older code: :data:`fer.models.registry.LEGACY_NAMES`) is replaced by the current one.
        optimizer: ``{"_target_": "torch.optim.SGD", **kwargs}`` (any ``torch.optim`` optimizer).
        scheduler: ``{"_target_": "torch.optim.lr_scheduler.X", **kwargs}`` or None. ``total_steps``
            (OneCycleLR) and ``T_max`` (CosineAnnealingLR) are filled in from the trainer;
            ReduceLROnPlateau follows ``val/acc``.
        label_smoothing: cross-entropy label smoothing.
        class_weights: per-class loss weights in :data:`fer.classes.CLASSES` order, or None.
        input_spec: :class:`fer.input_spec.InputSpec` as a dict (``image_size``, ``crop_size``,
            ``channels``), saved so that evaluation and prediction prepare images exactly as
            training did; ``self.input_spec`` is the typed object.
        channels_last: run the network in channels-last memory format (faster convs on CPU and GPU).
        tta: test-time augmentation for test and predict, logits averaged over the views
            (:mod:`fer.training.tta`): ``none``, ``flip`` or ``tencrop``.
        val_tta: the same for validation during fit (default: ``tta``); a cheaper mode keeps
            per-epoch validation fast while the final test uses ten crops.
        pretrained_init: load pretrained weights into the network (not saved: a reloaded checkpoint
            already holds the trained weights).
        mixup_alpha: MixUp's Beta(alpha, alpha) for training batches; 0 is off (:mod:`fer.training.mixing`).
        cutmix_alpha: the same for CutMix; with both on, each batch takes one of the two.
        compile: ``torch.compile`` the network for the Trainer's runs (fit, validate, test), in
            place, so checkpoints keep the plain network's keys; they reload uncompiled. Pays on GPUs;
            on a 2-core CPU it made the training step slower (``conf/experiment/speedrun_cpu.yaml``).
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        input_spec: dict[str, int] | None = None,
        channels_last: bool = False,
        tta: str = "none",
        val_tta: str | None = None,
        pretrained_init: bool = True,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        compile: bool = False,
    ) -> None:
        super().__init__()
        for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if alpha < 0:
                raise ValueError(f"module.{name}={alpha} must be >= 0 (0 switches it off; 0.2-1.0 are usual).")
        check_mode(tta, "module.tta")
        check_mode(val_tta or tta, "module.val_tta")
        if class_weights is not None and len(class_weights) != NUM_CLASSES:
            raise ValueError(f"module.class_weights needs {NUM_CLASSES} values ({', '.join(CLASSES)}), got {len(class_weights)}.")
        net = resolve(net)  # an old checkpoint's legacy name is saved and reported as its net's name now
        self.save_hyperparameters(ignore=["pretrained_init"])  # reads the arguments' current values
        self.input_spec = InputSpec.from_dict(input_spec)
        self.net = build_model(**net, input_size=self.input_spec.crop_size, num_classes=NUM_CLASSES)
        if pretrained_init and hasattr(self.net, "load_pretrained"):
            self.net.load_pretrained()
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self._use_feature_cache(False)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.tta = tta
        self.val_tta = val_tta or tta
        self.train_loss = MeanMetric()
        self.train_acc = MulticlassAccuracy(NUM_CLASSES, average="micro")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_metrics = eval_metrics()
        self.test_metrics = eval_metrics()
        self.val_acc_best = MaxMetric()
        # per-image (logits, labels) of the last validate/test run outside fit, in loader order
        self.outputs: dict[str, tuple[Tensor, Tensor]] = {}
        self._collected: list[tuple[Tensor, Tensor]] = []
        self.temperature = 1.0
        self.inference_precision = "32-true"
        self.net_compiled = False

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, **kwargs: Any) -> FERClassifier:
        """Rebuild from a checkpoint alone; the pretrained weights are not fetched again, and the
        network is not compiled (a first call would wait for the compiler): ``compile=True`` to have it.
        A file that cannot be a checkpoint raises :class:`~fer.run.checkpoints.CheckpointError` naming the fix."""
        kwargs.setdefault("pretrained_init", False)
        kwargs.setdefault("compile", False)
        try:
            return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)
        except Exception:
            if isinstance(checkpoint_path, (str, os.PathLike)) and "://" not in str(checkpoint_path):
                read_checkpoint(checkpoint_path)  # a missing, truncated or foreign local file: say so, and how to fix it
            raise

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CALIBRATION_KEY] = {"temperature": self.temperature}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints written before calibration existed hold none: their temperature is 1."""
        self.temperature = float(checkpoint.get(CALIBRATION_KEY, {}).get("temperature", 1.0))

    def probabilities(self, logits: Tensor) -> Tensor:
        """Calibrated class probabilities: ``softmax(logits / temperature)`` (:mod:`fer.scoring.calibration`;
        the temperature is fitted on the validation split after training and kept in the checkpoint)."""
        return (logits.float() / self.temperature).softmax(dim=-1)

    def use_tta(self, tta: str | None) -> None:
        """Score with ``tta`` from now on (an entry point's ``tta=`` option); None keeps the checkpoint's."""
        if tta is not None:
            self.tta = check_mode(tta, null_keeps=True)

    def use_precision(self, precision: str | None) -> None:
        """Classify in ``precision`` outside the Trainer from now on (:func:`fer.inference.classify`,
        fer.serve); None keeps the current one (float32 after loading). ``auto``: bf16 autocast on GPUs
        and on CPUs with native bf16, where it scored the packaged model's ten crops twice as fast and moved
        its accuracy by less than 0.1 points (its card gives both), float32 elsewhere (:func:`fer.run.hardware.resolve_precision`)."""
        if precision is None:
            return
        if str(precision) not in INFERENCE_PRECISIONS:
            raise ValueError(f"precision={precision!r} must be one of {', '.join(INFERENCE_PRECISIONS)}.")
        self.inference_precision = resolve_precision(precision, self.device.type)

    def inference_autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of :attr:`inference_precision` on the model's device (none for float32)."""
        return autocast_for(self.inference_precision, self.device)

    def configure_model(self) -> None:
        """The Trainer calls this before each run; compiling once is enough."""
        if self.hparams.compile and not self.net_compiled:
            self.net.compile()
            self.net_compiled = True

    def prepare(self, x: Tensor) -> Tensor:
        """uint8 (or float in [0, 1]) images [B, C, H, W] -> the float input the network expects,
        centre-cropped to ``crop_size`` if larger."""
        x = centre_crop(x, self.input_spec.crop_size)
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        want = self.net.in_channels
        if x.shape[1] != want:
            x = x.expand(-1, want, -1, -1) if x.shape[1] == 1 else x.mean(dim=1, keepdim=True)
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.prepare(x))

    def predict_logits(self, x: Tensor, tta: str | None = None) -> Tensor:
        """Logits averaged over the views of ``tta`` (default: the configured test-time
        augmentation, :func:`fer.training.tta.views`), all views in one forward pass."""
        batch = views(x, tta or self.tta, self.input_spec.crop_size)
        logits = self(torch.cat(batch)) if len(batch) > 1 else self(x)
        return logits.view(len(batch), x.shape[0], -1).mean(dim=0)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy against class indices [B] or class probabilities [B, classes] (mixed
        batches, a teacher's soft targets: ``data.teacher``). Label smoothing blends either with the
        uniform distribution alike; with probabilities, class weights scale each image's terms,
        averaged over the batch (indices divide by the batch's summed weights instead)."""
        return F.cross_entropy(
            logits.float(), targets, weight=self.class_weights, label_smoothing=self.hparams.label_smoothing
        )

    def on_fit_start(self) -> None:
        self._use_feature_cache(True)
        self.temperature = 1.0  # a temperature belongs to the weights it was fitted to

    def on_validation_epoch_start(self) -> None:
        self._collected = []

    def on_test_epoch_start(self) -> None:
        self._collected = []

    def on_fit_end(self) -> None:
        self._use_feature_cache(False)

    def _use_feature_cache(self, on: bool) -> None:
        """A network's frozen-feature cache (``model.cache_frozen``) pays only where images recur,
        across the epochs of ``fit``: on there, off and emptied otherwise, so the test after fit,
        evaluation and inference neither fill it nor hold its memory."""
        cache = getattr(self.net, "cache", None)
        if isinstance(cache, FrozenFeatureCache):
            cache.enabled = on
            if not on:
                cache.clear()

    def on_train_start(self) -> None:
        self.val_loss.reset()
        self.val_metrics.reset()
        self.val_acc_best.reset()

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """``y``: class indices [B], or class probabilities [B, classes] from ``data.teacher``."""
        x, y = batch
        inputs, targets = self.prepare(x), y
        if self.hparams.mixup_alpha or self.hparams.cutmix_alpha:
            inputs, targets = mix_batch(inputs, y, NUM_CLASSES, self.hparams.mixup_alpha, self.hparams.cutmix_alpha)
        logits = self.net(inputs)
        loss = self.loss(logits, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"Non-finite training loss ({loss.item()}) at epoch {self.current_epoch}, step {self.global_step}: "
                "lower the learning rate or check the data. The last checkpoint is kept."
            )
        self.train_loss(loss.detach())
        # against the top class of each soft target (mixed, or the teacher's)
        self.train_acc(logits.detach(), targets.argmax(dim=1) if targets.ndim == 2 else y)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_metrics, self.val_tta)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_metrics, self.tta)

    def _eval_step(self, batch: tuple[Tensor, Tensor], loss_metric: MeanMetric, metrics: MetricCollection, tta: str) -> None:
        x, y = batch
        logits = self.predict_logits(x, tta)
        # weighted by the batch's share of the loss denominator, so that the epoch loss is the mean
        # over images whatever the batch size or the DDP sharding (an unweighted mean of batch means is not)
        weight = y.numel() if self.class_weights is None else self.class_weights[y].sum()
        loss_metric.update(self.loss(logits, y), weight=weight)
        metrics.update(logits.float(), y)
        if not self._fitting:  # validation during fit needs no per-image outputs
            self._collected.append((logits.detach().float(), y))

    def on_validation_epoch_end(self) -> None:
        results = self._log_eval("val", self.val_loss, self.val_metrics)
        self.val_acc_best(results["acc"])
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss, self.test_metrics)

    def _log_eval(self, stage: str, loss_metric: MeanMetric, metrics: MetricCollection) -> dict[str, Any]:
        """Log the scalars (per-class accuracy too), which ``trainer.validate/test`` return; the
        confusion matrix comes from the per-image outputs (:func:`fer.scoring.outputs.split_results`).

        Under DDP, ``compute()`` already reduces the metric states over all processes, so every rank
        logs the same global values (Lightning's "use sync_dist=True" warning does not apply).
        """
        results = {"loss": loss_metric.compute().item(), **summarise(metrics.compute())}
        self.log(f"{stage}/acc", results["acc"], prog_bar=True)
        self.log_dict({f"{stage}/{k}": v for k, v in results.items() if k not in ("acc", "confusion")})
        if self._collected:
            self.outputs[stage] = self._gather_outputs()
        metrics.reset()
        loss_metric.reset()
        return results

    @property
    def _fitting(self) -> bool:
        return self._trainer is not None and self._trainer.state.fn == TrainerFn.FITTING

    def _gather_outputs(self) -> tuple[Tensor, Tensor]:
        """This run's per-image (logits, labels) on the CPU, in dataset order. Under DDP every rank
        scored the strided shard ``rank::world_size`` (``UnrepeatedDistributedSampler``): gather
        the shards and interleave them back."""
        logits = torch.cat([chunk for chunk, _ in self._collected]).cpu()
        labels = torch.cat([chunk for _, chunk in self._collected]).cpu()
        self._collected = []
        world = self._trainer.world_size if self._trainer is not None else 1
        if world == 1:
            return logits, labels
        shards: list[Any] = [None] * world
        torch.distributed.all_gather_object(shards, (logits, labels))
        total = sum(len(shard_labels) for _, shard_labels in shards)
        all_logits, all_labels = torch.empty(total, logits.shape[1]), torch.empty(total, dtype=labels.dtype)
        for rank, (shard_logits, shard_labels) in enumerate(shards):
            all_logits[rank::world], all_labels[rank::world] = shard_logits, shard_labels
        return all_logits, all_labels

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.parameters(), self.hparams.optimizer)
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(optimizer, self.hparams.scheduler, self.trainer)}
