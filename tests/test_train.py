"""End-to-end: a short fit writes checkpoints and a metrics file; the checkpoint reloads without Hydra."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from fer.classes import CLASSES
from fer.evaluate import evaluate
from fer.factory import build_datamodule
from fer.results import Run
from fer.results import main as results_main
from fer.train import train
from fer.training.module import FERClassifier


def test_train_writes_metrics_and_checkpoints(make_cfg) -> None:
    cfg = make_cfg("model=vgg1")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["acc"] == metrics["test"]["acc"]
    assert 0.0 <= saved["test"]["acc"] <= 1.0
    assert len(saved["test"]["confusion"]) == len(CLASSES)
    assert sum(map(sum, saved["test"]["confusion"])) == 2 * len(CLASSES)  # PrivateTest of the synthetic copy
    assert {f"acc_{c}" for c in CLASSES} <= set(saved["test"])
    assert saved["protocol"] == "official" and saved["epochs"] == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert Path(saved["best_checkpoint"]).is_file()
    assert (run / "config.yaml").read_text().count("${") == 0  # resolved copy


@pytest.mark.slow
def test_validating_every_second_epoch_still_selects_and_tests_a_checkpoint(make_cfg) -> None:
    """experiment=speedrun_cpu validates every second epoch: the checkpoint is chosen among the
    validated epochs, and the run is tested from it."""
    cfg = make_cfg("model=vgg1", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=2")
    metrics = train(cfg)
    assert metrics["epochs"] == 2
    assert Path(metrics["best_checkpoint"]).name == "epoch001.ckpt"
    assert 0.0 <= metrics["test"]["acc"] <= 1.0
    with open(Path(cfg.paths.output_dir) / "csv" / "metrics.csv", newline="") as handle:
        times = [float(row["time/epoch_s"]) for row in csv.DictReader(handle) if row["time/epoch_s"]]
    assert len(times) == 2 and all(0 < t < metrics["fit_seconds"] for t in times)  # EpochTimer


@pytest.mark.slow
def test_checkpoint_reloads_in_fresh_process_without_hydra(tiny_checkpoint: Path) -> None:
    code = (
        "import sys, torch\n"
        "from fer import FERClassifier\n"
        f"m = FERClassifier.load_from_checkpoint({str(tiny_checkpoint)!r}, map_location='cpu').eval()\n"
        "x = torch.zeros(2, 1, 48, 48, dtype=torch.uint8)\n"
        "print(tuple(m(x).shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(2, 7)")


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=vgg1"],
        ["model=vgg2"],
        ["model=vgg3"],
        ["model=vgg16", "model.pretrained=none", "model.weights_path=null"],
        ["model=vggnet", "data.crop_size=40", "model.hidden=64"],
        ["model=vggnet", "data.crop_size=40", "model.hidden=64", "data.augment=true", "data.on_device=true"],
    ],
    ids=["vgg1", "vgg2", "vgg3", "vgg16", "vggnet", "vggnet-on-device"],
)
def test_fast_dev_run_of_every_model(make_cfg, overrides: list[str]) -> None:
    """One batch of fit, validate and test for every model config, through the real entry point."""
    cfg = make_cfg(*overrides, "trainer.fast_dev_run=true")
    metrics = train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["model"] == cfg.model.name
    for split in ("val", "test"):
        assert 0.0 <= saved[split]["acc"] <= 1.0 and saved[split]["acc"] == metrics[split]["acc"]
        assert sum(map(sum, saved[split]["confusion"])) == 2 * len(CLASSES)


def test_kaggle_protocol_run(make_cfg) -> None:
    """The seed's protocol: val is a slice of train and test is the whole test folder."""
    cfg = make_cfg("model=vgg1", "data.split=kaggle", "data.val_fraction=0.5")
    train(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["protocol"] == "kaggle"
    assert sum(map(sum, saved["val"]["confusion"])) == 3 * len(CLASSES)
    assert sum(map(sum, saved["test"]["confusion"])) == 4 * len(CLASSES)


@pytest.mark.slow
def test_multirun_writes_one_directory_per_job(tmp_path: Path, fer_zip: Path) -> None:
    """`python -m fer.train -m` runs each job to the end in its own numbered folder, and
    `python -m fer.results SWEEP` tabulates the jobs from their metrics files."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "fer.train", "-m", "model=vgg1,vgg2",
        f"hydra.sweep.dir={sweep}", f"data.root={fer_zip}", f"paths.cache_dir={tmp_path / 'cache'}",
        "data.batch_size=8", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.max_epochs=1",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for job, blocks in ((0, 1), (1, 2)):
        run = sweep / str(job)
        assert json.loads((run / "metrics.json").read_text())["test"]["acc"] >= 0.0
        assert OmegaConf.load(run / "config.yaml").model.blocks == blocks

    report = tmp_path / "RESULTS.md"
    results_main([str(sweep), "-o", str(report)])
    lines = [line for line in report.read_text().splitlines() if line.startswith("| model=")]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in lines]
    assert sorted(row[0] for row in rows) == ["model=vgg1", "model=vgg2"]
    for row in rows:
        saved = json.loads((Path(row[-1].strip("`")) / "metrics.json").read_text())
        assert row[3:6] == ["official", f"PrivateTest ({2 * len(CLASSES)})", "1"]
        low, high = (100 * v for v in saved["test"]["ci95"]["acc"])  # the table's interval is the run's own
        assert row[7] == f"{100 * saved['test']['acc']:.2f}% ({low:.2f}-{high:.2f})" and row[14] == saved["commit"]
        calibrated = f" -> {100 * saved['test']['ece_calibrated']:.1f}%" if "ece_calibrated" in saved["test"] else ""
        assert row[10] == f"{100 * saved['test']['ece']:.1f}%{calibrated}"


@pytest.mark.parametrize(
    ("experiment", "epochs", "planned", "text"),
    [
        ("improved/vgg3", 25, 25, "25"),
        ("sota_vgg", 17, 150, "17 of 150"),
        ("seed/vgg1_baseline", 2, 2, "2 of the seed's 50"),
        ("seed/vgg3_adam", 2, 2, "2 of the seed's 50"),
    ],
)
def test_results_say_when_a_run_stopped_short(experiment: str, epochs: int, planned: int, text: str) -> None:
    run = Run(Path("run"), {"epochs": epochs}, experiment, [], planned)
    assert run.epochs_text() == text


@pytest.mark.parametrize(("split", "size"), [("test", 14), ("val", 14), ("train", 42)])
def test_evaluate_scores_the_checkpoint_on_the_split(make_cfg, tiny_checkpoint: Path, split: str, size: int) -> None:
    cfg = make_cfg(f"ckpt_path={tiny_checkpoint}", f"split={split}", config_name="eval")
    metrics = evaluate(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert saved["task"] == "evaluate" and saved["split"] == split
    assert saved[split]["acc"] == metrics[split]["acc"]
    assert sum(map(sum, saved[split]["confusion"])) == size

    model = FERClassifier.load_from_checkpoint(tiny_checkpoint, map_location="cpu").eval()
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    with torch.no_grad():
        hits = [(model(x).argmax(1) == y).float() for x, y in datamodule.eval_dataloader(split)]
    assert saved[split]["acc"] == pytest.approx(torch.cat(hits).mean().item())


def test_evaluate_uses_the_checkpoints_tta_unless_told(make_cfg, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """A run trained with module.tta=flip scored again by fer.evaluate gets its own test number back."""
    saved = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    saved["hyper_parameters"]["tta"] = "flip"
    flip_checkpoint = tmp_path / "flip.ckpt"
    torch.save(saved, flip_checkpoint)
    model = FERClassifier.load_from_checkpoint(flip_checkpoint, map_location="cpu").eval()
    cfg = make_cfg(f"ckpt_path={flip_checkpoint}", config_name="eval")
    datamodule = build_datamodule(cfg)
    datamodule.setup("test")
    with torch.no_grad():
        flipped = [(model.predict_logits(x).argmax(1) == y).float() for x, y in datamodule.eval_dataloader("test")]
        plain = [(model(x).argmax(1) == y).float() for x, y in datamodule.eval_dataloader("test")]
    by_default = evaluate(cfg)
    assert by_default["tta"] == "flip"
    assert by_default["test"]["acc"] == pytest.approx(torch.cat(flipped).mean().item())
    cfg = make_cfg(f"ckpt_path={flip_checkpoint}", "tta=none", config_name="eval")
    told = evaluate(cfg)
    assert told["tta"] == "none"
    assert told["test"]["acc"] == pytest.approx(torch.cat(plain).mean().item())
    assert by_default["test"]["loss"] != pytest.approx(told["test"]["loss"], abs=1e-6)  # the two really differ


@pytest.mark.slow
def test_ema_checkpoints_hold_the_averaged_weights_and_resume(make_cfg) -> None:
    """callbacks=ema: the checkpoint's state_dict (what load_from_checkpoint, validation and the
    test use) is the moving average, the raw weights are kept beside it, and resume=true continues
    the average instead of restarting it."""
    cfg = make_cfg("model=vgg1", "callbacks=ema", "scheduler=none")
    first = train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    steps = saved["global_step"]
    assert saved["averaging_state"]["n_averaged"].item() == steps > 1
    key = "net.classifier.1.weight"
    assert not torch.equal(saved["state_dict"][key], saved["current_model_state"][key])
    reloaded = FERClassifier.load_from_checkpoint(last, map_location="cpu")
    assert torch.equal(reloaded.state_dict()[key], saved["state_dict"][key])
    # the run's own val and test scores are the averaged weights', as fer.evaluate scores them
    for split in ("val", "test"):
        scored = evaluate(make_cfg(f"ckpt_path={first['best_checkpoint']}", f"split={split}", config_name="eval"))
        assert first[split]["loss"] == pytest.approx(scored[split]["loss"], abs=1e-6), split

    cfg.trainer.max_epochs, cfg.resume = 2, True
    train(cfg)
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 2 * steps
    assert resumed["averaging_state"]["n_averaged"].item() == 2 * steps
