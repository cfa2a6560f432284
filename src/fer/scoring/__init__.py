"""Scoring: per-image predictions (``predictions.npz``), intervals and paired tests, calibration,
and the per-split numbers ``metrics.json`` keeps."""
