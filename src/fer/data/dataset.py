"""Faces as a torch Dataset whose loaders fetch whole batches (one tensor index per batch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class FaceDataset(Dataset):
    """uint8 faces -> (uint8 tensor [C, H, W], label). Scaling to float happens in the model.

    ``targets`` (float [N, classes], e.g. a teacher's soft targets, :mod:`fer.data.teacher`)
    replace the integer labels in what the dataset yields, in the same ``(images, y)`` structure.
    Loaders fetch whole batches (``__getitems__``, with :func:`face_loader`): without a per-image
    transform a batch is one tensor index, on the CPU or, after :meth:`to`, on the GPU.
    """

    def __init__(
        self, images: np.ndarray, labels: np.ndarray, transform: Any = None, channels: int = 1, targets: np.ndarray | None = None
    ) -> None:
        self.images = torch.as_tensor(images, dtype=torch.uint8)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)
        if self.targets is not None and (self.targets.ndim != 2 or len(self.targets) != len(self.labels)):
            raise ValueError(f"targets need one row per image ({len(self.labels)}), got shape {tuple(self.targets.shape)}.")
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: uint8 [B, C, H, W] and labels [B] (or the ``targets`` rows [B, classes])."""
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.images.is_cuda:  # a pinned, asynchronous copy: a plain one would wait for the GPU
            index = index.pin_memory()
        index = index.to(self.images.device, non_blocking=True)
        if self.transform is None:
            images = self.images[index]
        else:
            images = torch.stack([self._transformed(i) for i in indices])
        images = images.unsqueeze(1)
        if self.channels != 1:
            images = images.expand(-1, self.channels, -1, -1).contiguous()
        return images, (self.labels if self.targets is None else self.targets)[index]

    def _transformed(self, index: int) -> torch.Tensor:
        # albumentations draws from its own generators, which global seeds do not reach: seed
        # them from torch's stream so augmented runs repeat, and resume, exactly
        self.transform.set_random_seed(int(torch.randint(2**31 - 1, ())))
        image = self.transform(image=self.images[index].numpy())["image"]
        return torch.from_numpy(np.ascontiguousarray(image))

    def to(self, device: torch.device) -> FaceDataset:
        """Keep the images on ``device`` (for ``data.on_device``); needs no per-image transform."""
        if self.transform is not None:
            raise ValueError("A dataset with a per-image transform must stay on the CPU.")
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        if self.targets is not None:
            self.targets = self.targets.to(device)
        return self


def face_loader(dataset: FaceDataset, **kwargs: Any) -> DataLoader:
    """A DataLoader that fetches whole batches from a :class:`FaceDataset` (no per-image collate)."""
    return DataLoader(dataset, collate_fn=_as_batch, **kwargs)


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``__getitems__`` has stacked the batch already."""
    return batch
