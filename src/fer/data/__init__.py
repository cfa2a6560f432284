"""Data: sources (readers + cache), splits, transforms, and the DataModules built on
:class:`~fer.data.base.FaceDataModule` (FER-2013, and labelled folders in :mod:`fer.data.folder`)."""

from fer.data.base import FaceDataModule
from fer.data.dataset import FaceDataset
from fer.data.fer2013 import FER2013DataModule
from fer.data.sources import DatasetError, FERData, load_fer2013

__all__ = ["DatasetError", "FER2013DataModule", "FERData", "FaceDataModule", "FaceDataset", "load_fer2013"]
