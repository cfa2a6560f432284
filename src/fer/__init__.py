"""fer: facial expression recognition on FER-2013 with PyTorch Lightning and Hydra."""

from fer.classes import CLASSES, NUM_CLASSES
from fer.run.resume import register_resolver
from fer.training.module import FERClassifier

register_resolver()


def load_model(ckpt_path: str, map_location: str = "cpu") -> FERClassifier:
    """Reload a trained checkpoint for inference (no Hydra, no config files needed)."""
    model = FERClassifier.load_from_checkpoint(ckpt_path, map_location=map_location)
    return model.eval()


__all__ = ["CLASSES", "NUM_CLASSES", "FERClassifier", "load_model"]
