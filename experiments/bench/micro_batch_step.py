"""Does a speedrun_cpu step of 128 images run faster as micro-batches with accumulated gradients?

    python experiments/bench/micro_batch_step.py [--rounds 4] [--steps 8] [--out FILE.json]

Why: on a 2-core AMD EPYC with AVX512-BF16 the 48->48 convolution at 40x40 runs at half the
speed of the others at batch 128 (``train_step_layers.py``), and a smaller batch might keep its
activations in cache. The step here is speedrun_cpu's (VGGNet 48-384, FC-1024, 40x40, bf16
autocast, channels-last, label smoothing 0.1, SGD nesterov with weight decay) on one in-memory
batch of 128, split into chunks whose gradients add up to the batch's; only BatchNorm sees the
chunk instead of the batch. The 48->48 convolution at 40x40 is also timed alone (forward and
backward) at each chunk size, for the cache effect that motivates this. Chunk sizes alternate within each round, so drift in the machine's
speed falls on all of them alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from train_step_layers import BATCH, CHANNELS, CROP, HIDDEN  # the same network and batch, defined once

from fer.models.vgg import VGGNet
from fer.run.hardware import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[128, 64, 32])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = VGGNet(channels=CHANNELS, hidden=HIDDEN, input_size=CROP).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(BATCH, 1, CROP, CROP).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (BATCH,))

    def step(chunk: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        for xs, ys in zip(x.split(chunk), y.split(chunk)):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = F.cross_entropy(model(xs), ys, label_smoothing=0.1) * (xs.shape[0] / BATCH)
            loss.backward()
        optimizer.step()

    conv = model.features[3]
    activations = torch.randn(BATCH, CHANNELS[0], CROP, CROP).contiguous(memory_format=torch.channels_last)

    def conv_step(chunk: int) -> None:
        for part in activations.split(chunk):
            part = part.detach().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = conv(part)
            out.float().sum().backward()

    per_chunk: dict[int, list[float]] = {chunk: [] for chunk in args.chunks}
    conv_ms: dict[int, list[float]] = {chunk: [] for chunk in args.chunks}
    for chunk in args.chunks:
        for _ in range(3):
            step(chunk)
            conv_step(chunk)
    for _ in range(args.rounds):
        for chunk in args.chunks:
            start = time.perf_counter()
            for _ in range(args.steps):
                step(chunk)
            per_chunk[chunk].append(BATCH * args.steps / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(args.steps):
                conv_step(chunk)
            conv_ms[chunk].append(1000 * (time.perf_counter() - start) / args.steps)
    result = {
        "hardware": describe(),
        "torch": torch.__version__,
        "batch": BATCH,
        "steps_per_round": args.steps,
        "img_s": {str(c): {"median": round(statistics.median(v), 1), "all": [round(i, 1) for i in v]} for c, v in per_chunk.items()},
        "conv_48_40x40_ms_per_batch": {str(c): round(statistics.median(v), 1) for c, v in conv_ms.items()},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
