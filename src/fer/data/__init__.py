"""FER-2013 data: sources (readers + cache), splits, transforms and the DataModule."""

from fer.data.datamodule import FaceDataset, FER2013DataModule
from fer.data.sources import DatasetError, FERData, load_fer2013

__all__ = ["DatasetError", "FER2013DataModule", "FERData", "FaceDataset", "load_fer2013"]
