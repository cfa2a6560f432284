"""Runs survive faults: a SIGKILL-ed run resumes to the same numbers, checkpoint writes are atomic,
a diverged run keeps its last good checkpoint, and the same seed gives the same metrics."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import SLOW_ENV, cli_overrides, run_cli

from fer.run import resume
from fer.run.checkpoints import AtomicCheckpointIO
from fer.train import main, train
from fer.training.module import FERClassifier

pytestmark = pytest.mark.usefixtures("skip_plots")

TESTS = Path(__file__).resolve().parent
# an lr this low keeps the loss away from 0 after 3 epochs, so that any change in the random
# stream (shuffling, dropout) shows in the compared losses
DETERMINISTIC = ["trainer.deterministic=true", "module.optimizer.lr=0.0005"]


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _wait_for_last_checkpoint(runs: Path, process: subprocess.Popen, log: Path, timeout: float = 180) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(runs.glob("*/checkpoints/last.ckpt"))
        if found:
            return found[0]
        if process.poll() is not None:
            pytest.fail(f"training exited ({process.returncode}) before its first checkpoint:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("no checkpoint within the timeout")


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_uninterrupted_metrics(fer_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli_overrides(
        fer_zip, tmp_path, "trainer.max_epochs=3", *DETERMINISTIC, "+callbacks.slow._target_=helpers.SlowAfterFirstEpoch"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]), SLOW_ENV: "0.4"}
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "fer.train", *args], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    runs = tmp_path / "logs" / "train" / "runs"
    last = _wait_for_last_checkpoint(runs, process, log)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    run_dir = last.parents[1]
    assert not (run_dir / "metrics.json").exists(), "the run finished before it was killed"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] < 2  # killed mid-training (in epoch 1 unless very slow)
    assert (run_dir / "run.json").is_file()  # written at the start, so the crashed run has it

    assert run_cli(main, [*args, "resume=true"], monkeypatch) == 0
    assert [d.name for d in runs.iterdir()] == [run_dir.name]  # the same command found the same directory
    resumed = _metrics(run_dir)
    starts = json.loads((run_dir / "run.json").read_text())["starts"]
    assert [s["resumed_from"] for s in starts] == [None, str(last)]
    log_text = (run_dir / "train.log").read_text()
    assert f"from its last checkpoint {last}" in log_text and "Restored the Python, numpy and torch RNG states" in log_text

    baseline_args = [a for a in args if not a.startswith("paths.log_dir=")] + [f"paths.log_dir={tmp_path / 'baseline'}"]
    assert run_cli(main, baseline_args, monkeypatch) == 0
    (baseline_dir,) = (tmp_path / "baseline" / "train" / "runs").iterdir()
    baseline = _metrics(baseline_dir)

    assert resumed["epochs"] == baseline["epochs"] == 3
    for split in ("val", "test"):
        for key in ("acc", "loss"):
            assert resumed[split][key] == pytest.approx(baseline[split][key], abs=1e-6), (split, key)
        assert resumed[split]["confusion"] == baseline[split]["confusion"]
    assert resumed["val"]["loss"] > 0.05  # not saturated: the comparison above can tell streams apart

    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    val_epochs = [int(r["epoch"]) for r in rows if r["val/acc"] and not r["test/acc"]]
    assert val_epochs[:3] == [0, 1, 2]  # each epoch once: appended, and the killed epoch's rows dropped


def test_explicit_ckpt_path_continues_that_training(make_cfg, tmp_path: Path) -> None:
    first = make_cfg("model=vgg1", "trainer.max_epochs=1", "scheduler=none")
    train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    second = make_cfg("model=vgg1", "trainer.max_epochs=2", "scheduler=none", f"ckpt_path={last}")
    second.paths.output_dir = str(tmp_path / "continued")
    assert train(second)["epochs"] == 2  # one more epoch, counted on from the checkpoint's
    starts = json.loads((tmp_path / "continued" / "run.json").read_text())["starts"]
    assert starts[0]["resumed_from"] == str(last)
    saved = torch.load(tmp_path / "continued" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 1 and saved["global_step"] == 2 * torch.load(last, weights_only=True)["global_step"]


def test_one_cycle_schedule_cannot_be_extended_on_resume(make_cfg, tiny_checkpoint: Path) -> None:
    longer = make_cfg("model=vgg1", "trainer.max_epochs=2", "scheduler=onecycle", f"ckpt_path={tiny_checkpoint}")  # it trained 1
    with pytest.raises(ValueError, match=r"OneCycleLR schedule ends after 5 steps, but this run trains 10 .*cannot be extended"):
        train(longer)


def test_run_directory_is_found_again_from_the_overrides(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    key = resume.run_key(["model=vgg1", "seed=1"])
    assert key == resume.run_key(["seed=1", "resume=true", "model=vgg1"])
    assert key != resume.run_key(["model=vgg2", "seed=1"])
    assert resume.run_dir(str(runs), "2026-01-01_00-00-00", ["model=vgg1", "seed=1"], resume=True).endswith(f"2026-01-01_00-00-00_{key}")
    for stamp, with_checkpoint in (("2026-01-01_00-00-00", True), ("2026-01-02_00-00-00", True), ("2026-01-03_00-00-00", False)):
        (runs / f"{stamp}_{key}" / "checkpoints").mkdir(parents=True)
        if with_checkpoint:
            (runs / f"{stamp}_{key}" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert resume.run_dir(str(runs), "2026-02-01_00-00-00", ["seed=1", "model=vgg1"], resume=True) == str(runs / f"2026-01-02_00-00-00_{key}")
    assert resume.run_dir(str(runs), "2026-02-01_00-00-00", ["seed=1", "model=vgg1"]) == str(runs / f"2026-02-01_00-00-00_{key}")
    assert resume.run_key(["model=vgg1"], run_name="long-run") == "long-run"
    with pytest.raises(ValueError, match="run_name='a/b' must be letters"):
        resume.run_key([], run_name="a/b")


def test_checkpoint_write_is_atomic_when_it_fails_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, target)

    def crash_midway(obj: object, handle, *args: object, **kwargs: object) -> None:
        handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr("fer.run.checkpoints.torch.save", crash_midway)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, target)
    kept = torch.load(target, weights_only=True)
    assert kept["epoch"] == 0 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no partial file left behind


def _assert_last_is_good_epoch0(run_dir: Path) -> None:
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    loss = FERClassifier.loss

    def nan_from_epoch_1(self: FERClassifier, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        value = loss(self, logits, targets)
        return value * float("nan") if self.training and self.current_epoch >= 1 else value

    monkeypatch.setattr(FERClassifier, "loss", nan_from_epoch_1)
    cfg = make_cfg("model=vgg1", "trainer.max_epochs=3")
    with pytest.raises(FloatingPointError, match=r"Non-finite training loss \(nan\) at epoch 1.*lower the learning rate"):
        train(cfg)
    _assert_last_is_good_epoch0(Path(cfg.paths.output_dir))


def test_nonfinite_weights_are_never_checkpointed(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    def poison_at_epoch_1(self: FERClassifier) -> None:
        if not self.trainer.sanity_checking and self.current_epoch >= 1:
            with torch.no_grad():
                next(self.net.parameters()).fill_(float("inf"))

    monkeypatch.setattr(FERClassifier, "on_validation_epoch_start", poison_at_epoch_1, raising=False)
    cfg = make_cfg("model=vgg1", "trainer.max_epochs=3")
    with pytest.raises(FloatingPointError, match=r"Non-finite weights \(net\.features\.0\.weight\) at epoch 1.*no checkpoint was written"):
        train(cfg)
    _assert_last_is_good_epoch0(Path(cfg.paths.output_dir))


def test_same_seed_same_metrics_and_the_run_is_recorded(make_cfg, tmp_path: Path) -> None:
    results = []
    for name in ("first", "second"):
        cfg = make_cfg("model=vgg1", *DETERMINISTIC)
        cfg.paths.output_dir = str(tmp_path / name)
        results.append(train(cfg))
    first, second = results
    for split in ("val", "test"):
        assert first[split] == second[split]  # every number, confusion matrix included
    run = json.loads((tmp_path / "first" / "run.json").read_text())["starts"][0]
    assert run["commit"] and run["hardware"] and run["packages"]["torch"] and run["resumed_from"] is None
    assert {"commit", "hardware", "packages"} <= set(first)  # metrics.json carries them too
    assert "${" not in (tmp_path / "first" / "config.yaml").read_text()
