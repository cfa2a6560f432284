"""From a laptop to a cluster: DDP gives the single-process scores exactly, a sweep survives a failing
job and summarises, an Optuna search runs, and the SLURM and DDP configs compose."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
from helpers import cli_overrides, run_cli
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from fer.data import FER2013DataModule
from fer.train import main
from fer.training.module import FERClassifier

pytestmark = pytest.mark.usefixtures("skip_plots")


def _kaggle_split(fer_zip: Path) -> FER2013DataModule:
    """The synthetic copy with the kaggle protocol: its val split has 7 images, an odd count."""
    datamodule = FER2013DataModule(str(fer_zip), split="kaggle", eval_batch_size=2)
    datamodule.setup()
    assert len(datamodule.datasets["val"]) % 2 == 1
    return datamodule


def test_eval_shards_cover_every_image_once(fer_zip: Path) -> None:
    datamodule = _kaggle_split(fer_zip)
    shards = []
    for rank in range(2):
        datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        shards.append(list(datamodule.val_dataloader().sampler))
    assert sorted(shards[0] + shards[1]) == list(range(len(datamodule.datasets["val"])))  # no padding repeats


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_scores_exactly_as_one(fer_zip: Path, tiny_checkpoint: Path) -> None:
    model = FERClassifier.load_from_checkpoint(tiny_checkpoint, map_location="cpu")
    datamodule = _kaggle_split(fer_zip)
    options = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    single = pl.Trainer(devices=1, **options).validate(model, datamodule=datamodule, verbose=False)[0]
    ddp = pl.Trainer(devices=2, strategy="ddp_spawn", **options).validate(model, datamodule=datamodule, verbose=False)[0]
    assert set(ddp) == set(single)
    for name, value in single.items():
        # the loss is a float sum in another order (1e-7); counts-based scores are identical
        assert ddp[name] == pytest.approx(value, abs=1e-6), name
    assert single["val/loss"] > 1e-4  # a padded (repeated) image would shift the mean loss


@pytest.mark.slow
def test_multirun_reports_a_failed_job_finishes_the_others_and_resumes(fer_zip: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *cli_overrides(fer_zip, tmp_path, "model.dropout=none,bogus,fixed", f"hydra.sweep.dir={sweep}")]
    assert run_cli(main, args, monkeypatch) == 0
    summary = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [(j["job"], j["status"]) for j in summary] == [("0", "succeeded"), ("1", "failed"), ("2", "succeeded")]
    assert "model.dropout='bogus' must be one of none, fixed, increasing" in summary[1]["error"]
    assert all(0.0 <= summary[i]["val"]["acc"] <= 1.0 and "loss" in summary[i]["test"] for i in (0, 2))
    failure = json.loads((sweep / "1" / "failure.json").read_text())
    assert failure["error"] == "ValueError" and "Traceback" in failure["traceback"]
    assert "| 1 | model.dropout=bogus | failed |" in (sweep / "summary.md").read_text()

    # the same sweep with resume=true (and its directory) continues each job from its last.ckpt
    assert run_cli(main, [*args, "resume=true"], monkeypatch) == 0
    for job in ("0", "2"):
        assert f"Resuming the run in {sweep / job} from its last checkpoint" in (sweep / job / "train.log").read_text()
    resumed = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [j.get("val") for j in resumed] == [j.get("val") for j in summary]

    # the same bad value in a single run fails the command: one line (fer.cli), exit code 2
    capsys.readouterr()
    assert run_cli(main, cli_overrides(fer_zip, tmp_path, "model.dropout=bogus"), monkeypatch) == 2
    assert "fer.train: ValueError: model.dropout='bogus' must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_optuna_search_runs_two_trials(fer_zip: Path, tmp_path: Path, monkeypatch) -> None:
    sweep = tmp_path / "optuna"
    args = cli_overrides(fer_zip, tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}")
    assert run_cli(main, args, monkeypatch) == 0
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results["best_params"]) == {
        "module.optimizer.lr", "module.optimizer.weight_decay", "module.label_smoothing", "model.dropout_rate"
    }
    jobs = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"]
    assert results["best_value"] == max(j["val"]["acc"] for j in jobs)


def test_cluster_configs_compose() -> None:
    overrides = ["trainer=ddp", "hydra/launcher=slurm", "trainer.devices=4", "hydra.launcher.gpus_per_node=4"]
    with initialize_config_module(config_module="fer.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.tasks_per_node == 4  # one task per GPU
    trainer = cfg.trainer
    assert (trainer.accelerator, trainer.strategy, trainer.devices, trainer.num_nodes, trainer.sync_batchnorm) == ("gpu", "ddp", 4, 1, False)
