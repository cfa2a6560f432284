"""Training: the LightningModule (:class:`~fer.training.module.FERClassifier`), its optimizer and
schedule builder, MixUp/CutMix and the test-time augmentation views it evaluates with."""
