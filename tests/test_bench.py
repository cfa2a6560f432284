"""fer.bench end to end on the synthetic zip, and the precision that ``trainer.precision=auto`` picks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import cli_overrides, run_cli

from fer.bench import main
from fer.run import hardware
from fer.run.hardware import autocast_for, resolve_precision


def test_bench_times_the_model_the_pipeline_and_inference(fer_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli_overrides(
        fer_zip, tmp_path, "bench.epochs=2", "bench.train_batches=3", "bench.val_batches=1", "bench.warmup=1",
        "bench.steps=2", "bench.predict_repeats=3",
    )
    assert run_cli(main, args, monkeypatch) == 0
    (report,) = (tmp_path / "logs" / "bench").rglob("bench.json")
    result = json.loads(report.read_text())
    assert (result["model"], result["config_model"], result["batch_size"], result["precision"]) == ("vgg1", "vgg1", 8, "32-true")
    assert result["augment"] is True  # the bench config measures the augmented pipeline
    for key in ("limit_img_s", "pipeline_img_s", "predict_batch_img_s", "predict_ms"):
        assert result[key] > 0, key
    # the rates are rounded to 0.1 img/s and the ratio (of the unrounded rates) to 0.001: on a busy
    # machine the rates are small, so their rounding moves the recomputed ratio by up to this much
    pipeline, limit = result["pipeline_img_s"], result["limit_img_s"]
    rounding = (pipeline / limit) * (0.05 / pipeline + 0.05 / limit) + 5e-4
    assert result["ratio"] == pytest.approx(pipeline / limit, abs=rounding)
    assert "commit" in result and "hardware" in result


@pytest.mark.parametrize(
    ("accelerator", "cuda", "gpu_bf16", "cpu_bf16", "expected"),
    [
        ("cpu", False, False, True, "bf16-mixed"),
        ("cpu", False, False, False, "32-true"),
        ("auto", False, False, False, "32-true"),
        ("gpu", True, True, False, "bf16-mixed"),
        ("auto", True, False, True, "16-mixed"),
        ("cpu", True, True, False, "32-true"),
    ],
)
def test_auto_precision_follows_the_hardware(
    monkeypatch: pytest.MonkeyPatch, accelerator: str, cuda: bool, gpu_bf16: bool, cpu_bf16: bool, expected: str
) -> None:
    """Native bf16 where the chip has it (emulated bf16 is slower than fp32 on CPUs), fp16 on older GPUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: gpu_bf16)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: cpu_bf16)
    assert resolve_precision("auto", accelerator) == expected
    assert resolve_precision("16-mixed", accelerator) == "16-mixed"  # an explicit choice passes through


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_cpu_description_says_whether_bf16_is_native(monkeypatch: pytest.MonkeyPatch, cpu_bf16: bool) -> None:
    """The same CPU model name comes with and without AVX512-BF16, and runs on the two differ in
    precision and speed, so the hardware column must tell them apart."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: cpu_bf16)
    description = hardware.describe()
    assert description.startswith("CPU ") and description.endswith(f", {torch.get_num_threads()} threads")
    assert ("native bf16" in description) is cpu_bf16


def test_bad_precision_and_the_autocast_it_implies() -> None:
    with pytest.raises(ValueError, match="trainer.precision='bf32' must be one of auto, 32-true"):
        resolve_precision("bf32", "cpu")
    cpu = torch.device("cpu")
    with autocast_for("bf16-mixed", cpu):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with autocast_for("32-true", cpu):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.slow
def test_bench_apply_times_photos_and_videos_of_real_faces(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [
        f"paths.log_dir={tmp_path / 'logs'}", "bench.apply.enabled=true", f"bench.apply.ckpt_path={tiny_checkpoint}", "bench.apply.photos=6",
        "bench.apply.video_seconds=1", "bench.apply.video_faces=[1,4]", "bench.apply.detect_every=[3]", "bench.apply.memory_seconds=2",
    ]
    assert run_cli(main, args, monkeypatch) == 0
    (report,) = (tmp_path / "logs" / "bench").rglob("bench.json")
    result = json.loads(report.read_text())
    assert result["model"] == str(tiny_checkpoint) and result["tta"] == "none"
    assert result["photos"]["count"] == 6 and result["photos"]["faces"] == 6 and result["photos"]["photos_per_s"] > 0
    assert [(v["faces"], v["detect_every"], v["frames"], v["tracks"]) for v in result["videos"]] == [(1, 3, 30, 1), (4, 3, 30, 4)]
    assert all(v["frames_per_s"] > 0 for v in result["videos"])
    assert result["memory"]["frames"] == 60 and "rss_growth_mb" in result["memory"]
