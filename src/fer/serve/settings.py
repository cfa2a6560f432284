"""The server's limits and knobs in one typed object, built from ``conf/serve.yaml``'s sections,
so that the app and the tests share one set of defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

MB = 1024 * 1024
# conf/serve.yaml's detector: faster than fer.predict's (it says why)
DETECTOR = {"method": "haar", "min_face": 64, "scale_factor": 1.2, "min_neighbors": 5, "margin": 0.1, "align": False}


@dataclass(frozen=True)
class Settings:
    """What a request may cost and how requests are batched (``conf/serve.yaml`` says why each)."""

    max_upload_bytes: int = 10 * MB
    max_inflight_bytes: int = 256 * MB
    max_pixels: int = 40_000_000
    request_timeout_s: float = 10.0
    max_pending: int = 256
    detect_max_side: int = 1280
    batch_size: int = 32
    max_batch_wait_ms: float = 5.0
    preprocess_threads: int = 2
    split_alone: bool = True
    tta: str | None = "none"
    crop_max_side: int = 96
    detector: dict[str, Any] = field(default_factory=lambda: dict(DETECTOR))

    def __post_init__(self) -> None:
        limits = ("max_upload_bytes", "max_inflight_bytes", "max_pixels", "request_timeout_s", "max_pending", "detect_max_side")
        for name in (*limits, "batch_size", "preprocess_threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"serve setting {name}={getattr(self, name)} must be > 0.")
        if self.max_batch_wait_ms < 0:
            raise ValueError(f"batch.max_batch_wait_ms={self.max_batch_wait_ms} must be >= 0 (0: batch only what is already queued).")

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Settings:
        """``limits.*``, ``batch.*``, ``preprocess_threads``, ``split_alone``, ``tta``, ``crop_max_side`` and ``detector`` of ``conf/serve.yaml``."""
        return cls(
            **cfg.limits,
            **cfg.batch,
            preprocess_threads=cfg.preprocess_threads,
            split_alone=cfg.split_alone,
            tta=cfg.tta,
            crop_max_side=cfg.crop_max_side,
            detector=OmegaConf.to_container(cfg.detector, resolve=True),
        )
