"""How many channels each BatchNorm of the seed's VGG3 sees as almost never active, at initialisation.

    python experiments/bench/bn_variance.py [--images 256] [--seed 0] [--out experiments/bench/bn_variance.json]

With BN after ReLU, a channel whose ReLU is almost always off has a tiny batch variance, and BN
divides by sqrt(variance + eps): PyTorch's eps 1e-5 scales such a channel up far more than
Keras' 1e-3. This counts, per BN layer, the channels whose variance over the first ``--images``
Training images of FER-2013 (FER2013_ROOT) falls below 1e-3 and below 1e-4.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch import nn

from fer.data.sources import load_fer2013
from fer.models import build_model
from fer.run.rundir import run_metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("experiments/bench/bn_variance.json"))
    args = parser.parse_args()
    data = load_fer2013(os.environ["FER2013_ROOT"], os.environ.get("FER_CACHE_DIR", ".cache/fer"))
    training = torch.from_numpy(data.images[data.usage == "Training"][: args.images])
    torch.manual_seed(args.seed)
    net = build_model("vgg3", batch_norm=True, dropout="increasing").train()
    variances = []
    for norm in (m for m in net.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.register_forward_hook(lambda module, inputs, output: variances.append(inputs[0].var(dim=(0, 2, 3))))
    with torch.no_grad():
        net(training.unsqueeze(1).float().div(255))
    layers = [
        {"layer": i, "channels": len(v), "below_1e-3": round((v < 1e-3).float().mean().item(), 3),
         "below_1e-4": round((v < 1e-4).float().mean().item(), 3), "median": round(v.median().item(), 4)}
        for i, v in enumerate(variances)
    ]
    result = {"images": len(training), "seed": args.seed, "layers": layers, **run_metadata()}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for layer in layers:
        print(layer)


if __name__ == "__main__":
    main()
