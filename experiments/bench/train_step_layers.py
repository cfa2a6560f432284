"""Where a speedrun_cpu training step spends its time: each convolution's forward and backward
time (both gradients together) and its GFLOP/s, on the CPU this runs on.

    python experiments/bench/train_step_layers.py [--steps 5] [--out experiments/bench/train_step_layers.json]

The network, batch and precision are speedrun_cpu's (VGGNet 48-384 channels, FC-1024, 40x40
crops, batch 128, bf16 autocast, channels-last); the optimiser's update is left out, since it
touches no convolution. Times come from torch's profiler, grouped by
input shape: ``aten::convolution`` is the forward, ``aten::convolution_backward`` both gradients
(the first convolution computes only its weights' gradient, its input needs none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from fer.models.vgg import VGGNet
from fer.run.hardware import describe

CHANNELS, HIDDEN, CROP, BATCH = (48, 96, 192, 384), 1024, 40, 128


def conv_flops(conv: nn.Conv2d, side: int) -> float:
    """Multiply-adds x 2 of one forward pass of ``conv`` on a batch of ``side`` x ``side`` inputs."""
    return 2.0 * BATCH * conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] * side * side


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = VGGNet(channels=CHANNELS, hidden=HIDDEN, input_size=CROP).to(memory_format=torch.channels_last)
    x = torch.randn(BATCH, 1, CROP, CROP).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (BATCH,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        model.zero_grad(set_to_none=True)
        loss.backward()

    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    times: dict[tuple[str, str], float] = {}
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key in ("aten::convolution", "aten::convolution_backward") and event.input_shapes:
            weight = event.input_shapes[1] if event.key == "aten::convolution" else event.input_shapes[2]
            key = (event.key, str(weight))
            times[key] = times.get(key, 0.0) + event.cpu_time_total / 1e3 / args.steps
    rows, side = [], CROP
    for layer in model.features:
        if isinstance(layer, nn.MaxPool2d):
            side //= 2
        if not isinstance(layer, nn.Conv2d):
            continue
        weight = str(list(layer.weight.shape))
        forward = times.get(("aten::convolution", weight), 0.0)
        backward = times.get(("aten::convolution_backward", weight), 0.0)
        flops = conv_flops(layer, side)
        backward_flops = flops * (1 if layer.in_channels == 1 else 2)
        rows.append(
            {
                "conv": f"{layer.in_channels}->{layer.out_channels} at {side}x{side}",
                "gflop_forward": round(flops / 1e9, 2),
                "forward_ms": round(forward, 1),
                "backward_ms": round(backward, 1),
                "forward_gflop_s": round(flops / forward / 1e6) if forward else None,
                "backward_gflop_s": round(backward_flops / backward / 1e6) if backward else None,
            }
        )
    print(json.dumps(rows, indent=1))
    result = {"hardware": describe(), "torch": torch.__version__, "batch": BATCH, "steps": args.steps, "layers": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
