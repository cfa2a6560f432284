"""An untrained checkpoint of a recipe's network, for timing what applies a model (fer.serve,
fer.predict) where no trained checkpoint of that recipe exists: the same architecture and input,
so the same speed, but meaningless labels. Never use it for a number about accuracy.

Usage: python experiments/bench/untrained_checkpoint.py OUT.ckpt [hydra overrides, default experiment=speedrun_cpu]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module

from fer.factory import build_module


def main(out: Path, overrides: list[str]) -> None:
    with initialize_config_module(config_module="fer.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides or ["experiment=speedrun_cpu"])
    module = build_module(cfg)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": pl.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    print(f"Wrote an untrained {cfg.model.name} ({sum(p.numel() for p in module.parameters()):,} parameters) to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
