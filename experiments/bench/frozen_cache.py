"""Training-step time of the seed's VGG16 row with and without ``model.cache_frozen``.

    python experiments/bench/frozen_cache.py [--batches 100] [--out experiments/bench/frozen_cache.json] [override ...]

On the same real FER-2013 batches (FER2013_ROOT, FER_VGG16_WEIGHTS) it times three passes of full
training steps (forward, loss, backward, Adam): without the cache; with it, filling (each image
new, as in a run's first epoch); with it, every image cached (every later epoch). ``fer.bench``
cannot show this: its pipeline epochs draw different batches, which never recur.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module

from fer.bench import train_step
from fer.factory import build_datamodule, build_module
from fer.run.hardware import resolve_precision
from fer.run.rundir import run_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/frozen_cache.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with initialize_config_module(config_module="fer.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=seed/vgg16_transfer", *args.overrides])
    pl.seed_everything(cfg.seed)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    loader = iter(datamodule.train_dataloader())
    batches = [next(loader) for _ in range(args.batches)]
    module = build_module(cfg, datamodule).train()
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-3, eps=1e-7)

    def ms_per_step() -> float:
        started = time.perf_counter()
        for images, labels in batches:
            train_step(module, optimizer, images, labels, precision)
        return 1000 * (time.perf_counter() - started) / len(batches)

    uncached = ms_per_step()
    module.on_fit_start()
    filling = ms_per_step()
    cached = ms_per_step()
    result = {
        "batch_size": datamodule.batch_size,
        "batches": len(batches),
        "precision": precision,
        "uncached_ms_per_step": round(uncached, 1),
        "filling_ms_per_step": round(filling, 1),
        "cached_ms_per_step": round(cached, 1),
        "speedup_cached": round(uncached / cached, 2),
        "cache_entries": len(module.net.cache),
        **run_metadata(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
