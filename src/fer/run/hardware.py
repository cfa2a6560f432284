"""What the machine can do, so that configs can say ``auto`` and get the fast, safe choice."""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

import torch

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


@functools.cache
def _cpuinfo() -> str:
    """The text of /proc/cpuinfo, read once ("" where there is none, e.g. macOS)."""
    path = Path("/proc/cpuinfo")
    return path.read_text(errors="ignore") if path.exists() else ""


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 autocast is
    emulated and slower than fp32."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def uses_gpu(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def check_accelerator(accelerator: str) -> None:
    """Fail early, and say what to do, when a GPU is asked for and torch sees none (Lightning's own
    message, "No supported gpu backend found!", names neither the cause nor the fix)."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
        raise RuntimeError(
            f"trainer.accelerator={accelerator} (trainer=gpu or trainer=ddp) needs a CUDA GPU, but torch "
            f"{torch.__version__} ({build} build) sees none. Run with trainer=cpu (or trainer.accelerator=auto), "
            "or on a GPU machine with a CUDA build of torch; check nvidia-smi and CUDA_VISIBLE_DEVICES."
        )


def resolve_precision(precision: str | int, accelerator: str) -> str:
    """``auto`` -> ``bf16-mixed`` on GPUs and CPUs with native bf16, ``16-mixed`` on older GPUs,
    else ``32-true``; any explicit Lightning precision passes through."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={precision!r} must be one of {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if uses_gpu(accelerator):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def describe() -> str:
    """One line naming the hardware a number was measured on; for a CPU also whether it has native
    bf16, since one CPU model name covers machines with and without it (``precision=auto`` differs)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    cpu = platform.processor() or platform.machine()
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    bf16 = ", native bf16" if cpu_has_bf16() else ""
    return f"CPU {cpu}{bf16}, {torch.get_num_threads()} threads"


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context Lightning uses for a ``*-mixed`` precision (none for fp32), for code
    that runs the model outside the Trainer."""
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()
