"""``python -m fer.serve [ckpt_path=PATH] [port=8000] [limits.max_upload_bytes=...]``: the web demo
and JSON API (:mod:`fer.serve.app`) on uvicorn, on 127.0.0.1 unless ``host`` says otherwise.

uvicorn's own limits back the app's: ``limit_concurrency`` answers 503 beyond that many open
connections and requests, ``timeout_keep_alive`` closes idle connections, ``h11_max_incomplete_event_size``
bounds the headers. torch and OpenCV get one thread each by default (``torch_threads``,
``opencv_threads``): the server runs requests side by side, so their own pools only contend."""

from __future__ import annotations

import logging

import cv2
import torch
import uvicorn
from omegaconf import DictConfig

import fer
from fer.cli import entry_point
from fer.run.rundir import save_config
from fer.serve.app import create_app
from fer.serve.settings import Settings

log = logging.getLogger("fer.serve")  # not __main__, the name python -m gives this module


def serve(cfg: DictConfig) -> None:
    """Load the model (``ckpt_path``, or the packaged one when null), then serve until interrupted."""
    settings = Settings.from_config(cfg)
    save_config(cfg, cfg.paths.output_dir)
    torch.set_num_threads(cfg.torch_threads)
    cv2.setNumThreads(cfg.opencv_threads)
    model = fer.load_model(cfg.ckpt_path, map_location=cfg.device)
    model.use_precision(cfg.precision)
    app = create_app(model, settings, cfg.ckpt_path)
    log.info("Serving %s on http://%s:%d (docs at /docs)", cfg.ckpt_path or "the packaged model", cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, **cfg.uvicorn)


main = entry_point("serve", "serve", serve)


if __name__ == "__main__":
    main()
