"""Per-image predictions: what train and evaluate save, their intervals and calibration, the
temperature written into the best checkpoint, DDP gathering, and the file's own checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback

from fer.data import FER2013DataModule
from fer.evaluate import evaluate
from fer.run.checkpoints import read_checkpoint
from fer.scoring.predictions import PREDICTIONS_FILE, SplitPredictions, load_predictions, save_predictions
from fer.scoring.stats import bootstrap_intervals
from fer.train import train
from fer.training.module import FERClassifier


@pytest.mark.slow
def test_train_saves_predictions_intervals_and_a_temperature_in_the_best_checkpoint(make_cfg) -> None:
    # two optimizer steps: a model that is still unsure, so a temperature can be fitted
    cfg = make_cfg("model=vgg1", "+trainer.limit_train_batches=2", "module.tta=flip", "module.val_tta=none")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    splits, temperature = load_predictions(run)
    assert set(splits) == {"val", "calibration", "test"}  # calibration: val scored as test is (flip)
    assert (splits["val"].tta, splits["calibration"].tta, splits["test"].tta) == ("none", "flip", "flip")
    assert np.array_equal(splits["val"].ids, splits["calibration"].ids)
    calibration = metrics["calibration"]
    assert "not_fitted" not in calibration and temperature == calibration["temperature"] != 1.0
    assert calibration["nll_calibrated"] < calibration["nll"]
    for split in ("val", "test"):
        outputs, scores = splits[split], metrics[split]
        assert all(f"/{'PublicTest' if split == 'val' else 'PrivateTest'}_" in name for name in outputs.ids)
        assert float((outputs.predicted == outputs.labels).mean()) == pytest.approx(scores["acc"])
        assert scores["ci95"]["acc"] == bootstrap_intervals(outputs.labels, outputs.predicted)["acc"]
        assert scores["ci95"]["acc"][0] <= scores["acc"] <= scores["ci95"]["acc"][1]
        assert {"ece", "ece_calibrated", "nll", "nll_calibrated", "images"} <= set(scores)
        # the scores and the saved logits are of the same pass: its loss is their NLL (no label smoothing here)
        assert scores["loss"] == pytest.approx(scores["nll"], abs=1e-5)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["ci95"] == metrics["test"]["ci95"] and saved["predictions"] == PREDICTIONS_FILE
    best = read_checkpoint(metrics["best_checkpoint"])
    assert best["calibration"]["temperature"] == temperature
    assert FERClassifier.load_from_checkpoint(metrics["best_checkpoint"]).temperature == temperature
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["calibration"]["temperature"] == 1.0
    assert (run / "plots" / "reliability_test.png").is_file()


def test_a_run_that_scores_part_of_val_and_test_names_those_images(make_cfg, caplog: pytest.LogCaptureFixture) -> None:
    """trainer.limit_val_batches / limit_test_batches (a smoke run): the first batches are scored and
    saved under their own ids, and the log says the metrics are of those images only."""
    cfg = make_cfg("model=vgg1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "data.eval_batch_size=5")
    metrics = train(cfg)
    splits, _ = load_predictions(cfg.paths.output_dir)
    datamodule = FER2013DataModule(cfg.data.root, split=cfg.data.split)
    datamodule.setup("fit")
    for split in ("val", "test"):
        assert metrics[split]["images"] == len(splits[split].ids) == 5
        assert list(splits[split].ids) == list(datamodule.split_data(split).names[:5])
    assert "Scored 5 of the" in caplog.text and "trainer.limit_test_batches" in caplog.text


def test_evaluate_saves_the_splits_predictions_and_uses_the_checkpoints_temperature(make_cfg, tiny_checkpoint: Path) -> None:
    cfg = make_cfg(f"ckpt_path={tiny_checkpoint}", "split=val", config_name="eval")
    metrics = evaluate(cfg)
    splits, temperature = load_predictions(cfg.paths.output_dir)
    (outputs,) = splits.values()
    assert list(splits) == ["val"] and temperature == metrics["temperature"]
    assert len(outputs.ids) == sum(map(sum, metrics["val"]["confusion"])) == 14
    assert float((outputs.predicted == outputs.labels).mean()) == pytest.approx(metrics["val"]["acc"])
    assert (Path(cfg.paths.output_dir) / "plots" / "reliability_val.png").is_file()


class KeepOutputs(Callback):
    """Saves what rank 0's module gathered (under ddp_spawn the module itself stays in the worker)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_validation_end(self, trainer: pl.Trainer, pl_module: FERClassifier) -> None:
        if trainer.is_global_zero:
            torch.save(pl_module.outputs["val"], self.path)


@pytest.mark.slow
def test_ddp_gathers_every_image_once_in_dataset_order(fer_zip: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    datamodule = FER2013DataModule(str(fer_zip), split="kaggle", eval_batch_size=2)  # 7 val images: uneven shards
    options = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    model = FERClassifier.load_from_checkpoint(tiny_checkpoint, map_location="cpu")
    pl.Trainer(devices=1, callbacks=[KeepOutputs(tmp_path / "one.pt")], **options).validate(model, datamodule=datamodule, verbose=False)
    pl.Trainer(devices=2, strategy="ddp_spawn", callbacks=[KeepOutputs(tmp_path / "two.pt")], **options).validate(
        model, datamodule=datamodule, verbose=False
    )
    (one_logits, one_labels), (two_logits, two_labels) = (torch.load(tmp_path / f"{n}.pt") for n in ("one", "two"))
    assert len(one_labels) == 7 and torch.equal(one_labels, two_labels)
    torch.testing.assert_close(one_logits, two_logits, atol=1e-5, rtol=0)


def test_predictions_file_round_trip_and_checks(tmp_path: Path) -> None:
    outputs = SplitPredictions(["a.jpg", "b.jpg"], [0, 3], np.arange(14).reshape(2, 7), "flip")
    save_predictions(tmp_path, {"test": outputs}, temperature=1.5)
    splits, temperature = load_predictions(tmp_path / PREDICTIONS_FILE)
    assert temperature == 1.5 and splits["test"].ids.tolist() == ["a.jpg", "b.jpg"] and splits["test"].tta == "flip"
    np.testing.assert_array_equal(splits["test"].logits, outputs.logits)
    with pytest.raises(ValueError, match="one id, label and 7 logits per image"):
        SplitPredictions(["a.jpg"], [0, 1], np.zeros((2, 7)), "none")
    with pytest.raises(FileNotFoundError, match="python -m fer.evaluate"):
        load_predictions(tmp_path / "elsewhere")
    with np.load(tmp_path / PREDICTIONS_FILE) as saved:
        np.savez(tmp_path / "no_tta.npz", **{key: saved[key] for key in saved.files if key != "test_tta"})
    with pytest.raises(ValueError, match=r"no_tta.npz does not say which test-time augmentation made its test logits.*python -m fer.evaluate"):
        load_predictions(tmp_path / "no_tta.npz")
    with pytest.raises(ValueError, match="not on the same images"):
        outputs.aligned_to(["a.jpg", "c.jpg"])
    assert outputs.aligned_to(["b.jpg", "a.jpg"]).labels.tolist() == [3, 0]
