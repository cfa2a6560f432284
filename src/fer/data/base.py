"""What every DataModule of faces shares: the :class:`~fer.input_spec.InputSpec` its images are
prepared by, the loader settings, and an unaugmented loader and class counts for any split."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from fer.classes import CLASSES
from fer.data.dataset import FaceDataset, face_loader
from fer.data.sources import FERData
from fer.data.transforms import eval_transform
from fer.input_spec import InputSpec
from fer.vision.images import IMAGE_SIZE


class FaceDataModule(pl.LightningDataModule):
    """Base of :class:`~fer.data.FER2013DataModule` and :class:`~fer.data.folder.FolderDataModule`.

    ``image_size``, ``crop_size`` (default: ``image_size``) and ``channels`` form :attr:`input_spec`;
    evaluation entry points pass the checkpoint's (:func:`fer.factory.build_datamodule`).
    Subclasses load their images in ``setup`` and say which images a split holds (:meth:`split_data`).
    """

    def __init__(
        self,
        image_size: int = IMAGE_SIZE,
        crop_size: int | None = None,
        channels: int = 1,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        self.input_spec = InputSpec(image_size, crop_size or image_size, channels)
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"data.batch_size={batch_size} must be >= 1 and data.num_workers={num_workers} >= 0.")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory

    @property
    def image_size(self) -> int:
        return self.input_spec.image_size

    @property
    def crop_size(self) -> int:
        return self.input_spec.crop_size

    @property
    def channels(self) -> int:
        return self.input_spec.channels

    def split_data(self, split: str) -> FERData:
        """The images of ``split`` in loader order, names included."""
        raise NotImplementedError

    def class_counts(self, split: str) -> list[int]:
        """Images per class in ``split``, in :data:`fer.classes.CLASSES` order."""
        return np.bincount(self.split_data(split).labels, minlength=len(CLASSES)).tolist()

    def eval_dataloader(self, split: str) -> DataLoader:
        """An unshuffled, unaugmented loader over ``split``: the whole resized image, from which
        the model takes its centre crop (or ten crops) itself."""
        data = self.split_data(split)
        dataset = FaceDataset(data.images, data.labels, eval_transform(self.image_size, self.image_size), self.channels)
        return face_loader(dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers, pin_memory=self.pin_memory)
