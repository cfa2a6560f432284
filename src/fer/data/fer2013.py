"""The FER-2013 LightningDataModule: one decoded uint8 array in memory, no per-epoch file I/O."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from fer.classes import CLASSES
from fer.data.base import FaceDataModule
from fer.data.batch_augment import BatchAugment
from fer.data.dataset import FaceDataset, face_loader
from fer.data.quality import check_sharpness
from fer.data.sources import FERData, load_fer2013
from fer.data.splits import drop_leaks, make_splits
from fer.data.teacher import check_teacher_options, teacher_targets
from fer.data.transforms import AugmentConfig, eval_transform, train_transform
from fer.vision.images import IMAGE_SIZE

log = logging.getLogger(__name__)

AUGMENT_ON = ("loader", "device")


class FER2013DataModule(FaceDataModule):
    """FER-2013 from a Kaggle folder, its zip or the ICML csv (see :mod:`fer.data.sources`).

    ``split`` picks the protocol (``official`` or ``kaggle``, see :func:`fer.data.splits.make_splits`);
    ``augment`` switches the augmentation described by ``aug``, run per image by albumentations in
    the loader (``augment_on=loader``) or on whole batches on the accelerator (``augment_on=device``,
    :mod:`fer.data.batch_augment`); ``image_size`` resizes, ``crop_size`` (default: ``image_size``)
    crops randomly for training. Evaluation loaders yield the whole resized image: the model takes
    the centre crop itself, or ten crops with ``tta=tencrop``. ``on_device`` keeps the images on the
    accelerator the trainer runs on, so a GPU run needs no loader workers and no copies per batch.
    ``min_sharpness`` stops a blurred copy of the dataset before any training (:mod:`fer.data.quality`).
    ``teacher`` (a ``predictions.npz`` of the train split, or a run directory holding one) turns the
    training targets into soft ones for knowledge distillation, ``teacher_weight`` of the teacher's
    calibrated probabilities softened by ``teacher_temperature`` and the rest one-hot label (:mod:`fer.data.teacher`);
    validation and test keep their integer labels.
    """

    def __init__(
        self,
        root: str,
        cache_dir: str | None = None,
        split: str = "official",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        dedup: bool = False,
        augment: bool = False,
        aug: dict | None = None,
        augment_on: str = "device",
        image_size: int = IMAGE_SIZE,
        crop_size: int | None = None,
        channels: int = 1,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        on_device: bool = False,
        min_sharpness: float = 25.0,
        teacher: str | None = None,
        teacher_weight: float = 0.5,
        teacher_temperature: float = 1.0,
    ) -> None:
        super().__init__(image_size, crop_size, channels, batch_size, eval_batch_size, num_workers, pin_memory)
        self.root = os.fspath(root)
        self.cache_dir = cache_dir
        self.split = split
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.dedup = dedup
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"data.augment_on={augment_on!r} must be one of {', '.join(AUGMENT_ON)}.")
        if on_device and (num_workers or image_size != IMAGE_SIZE or (augment and augment_on == "loader")):
            raise ValueError(
                "data.on_device=true indexes the images where the model runs, in the training process: "
                f"it needs data.num_workers=0 (got {num_workers}), data.image_size={IMAGE_SIZE} (got "
                f"{image_size}) and, with data.augment, data.augment_on=device (got {augment_on})."
            )
        self.augment = AugmentConfig(**(aug or {})) if augment else None
        self.augment_on = augment_on
        # pinning is for host-to-device copies, which on_device does away with
        self.pin_memory = self.pin_memory and not on_device
        self.persistent_workers = persistent_workers and num_workers > 0
        self.on_device = on_device
        self.min_sharpness = min_sharpness
        check_teacher_options(teacher_weight, teacher_temperature)
        self.teacher = teacher
        self.teacher_weight = teacher_weight
        self.teacher_temperature = teacher_temperature
        self.data: FERData | None = None
        self.indices: dict[str, np.ndarray] = {}
        self.datasets: dict[str, FaceDataset] = {}
        self.batch_augment: BatchAugment | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.data = load_fer2013(self.root, self.cache_dir)
        check_sharpness(self.data.images, self.min_sharpness, self.root)
        self.indices = make_splits(self.data, self.split, self.val_fraction, self.split_seed)
        if self.dedup:
            self.indices = drop_leaks(self.data, self.indices)
        for name, index in self.indices.items():
            if len(index) == 0:
                raise ValueError(f"The {name} split of {self.root} (data.split={self.split}) is empty.")
        if self.augment_on == "device" and (self.augment is not None or self.crop_size < self.image_size):
            train_tf = train_transform(None, self.image_size, self.image_size)
            self.batch_augment = BatchAugment(self.augment, self.crop_size)
        else:
            train_tf = train_transform(self.augment, self.image_size, self.crop_size)
        eval_tf = eval_transform(self.image_size, self.image_size)
        for name, index in self.indices.items():
            transform = train_tf if name == "train" else eval_tf
            targets = self._teacher_targets(index) if name == "train" and self.teacher is not None else None
            self.datasets[name] = FaceDataset(self.data.images[index], self.data.labels[index], transform, self.channels, targets)
        log.info(
            "FER-2013 from %s, split=%s: %s", self.root, self.split,
            ", ".join(f"{name} {len(ds)}" for name, ds in self.datasets.items()),
        )

    def _teacher_targets(self, index: np.ndarray) -> np.ndarray:
        """The train images' soft targets from ``teacher``, logged with how often its top class is the label."""
        labels = self.data.labels[index]
        targets = teacher_targets(self.teacher, self.data.names[index], labels, self.teacher_weight, self.teacher_temperature)
        log.info(
            "Distilling from %s: weight %.2f, temperature %.2f; the soft targets' top class is the label for %.1f%% of %d train images.",
            self.teacher, self.teacher_weight, self.teacher_temperature, 100 * (targets.argmax(axis=1) == labels).mean(), len(labels),
        )
        return targets

    def on_after_batch_transfer(self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int) -> tuple:
        """With ``augment_on=device``, augment training batches where they now live."""
        if self.batch_augment is not None and self.trainer is not None and self.trainer.training:
            images, labels = batch
            return self.batch_augment(images), labels
        return batch

    def split_data(self, split: str) -> FERData:
        """The images of one split (``train``, ``val`` or ``test``) in loader order, names included."""
        self._check_split(split)
        return self.data.subset(self.indices[split])

    def class_counts(self, split: str) -> list[int]:
        """Images per class in ``split``, counted from the labels alone (not a copy of the split's images)."""
        self._check_split(split)
        return np.bincount(self.data.labels[self.indices[split]], minlength=len(CLASSES)).tolist()

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def _eval_sampler(self, dataset: Dataset) -> UnrepeatedDistributedSampler | None:
        """Under DDP, shard val/test without padding: Lightning's DistributedSampler would repeat
        samples to even out the shards and so count some images twice. torchmetrics then reduces
        the per-process states, so the scores are exactly those of one process."""
        if self.trainer is None or self.trainer.world_size == 1:
            return None
        return UnrepeatedDistributedSampler(
            dataset, num_replicas=self.trainer.world_size, rank=self.trainer.global_rank, shuffle=False
        )

    def _check_split(self, split: str) -> None:
        if split not in self.indices:
            raise ValueError(f"split={split!r} must be one of {', '.join(self.indices)}.")

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        if self.on_device and self.trainer is not None:
            self.datasets[split].to(self.trainer.strategy.root_device)
        return face_loader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=None if shuffle else self._eval_sampler(self.datasets[split]),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=shuffle and len(self.datasets[split]) > batch_size,
        )
