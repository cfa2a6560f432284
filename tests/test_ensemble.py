"""Ensemble evaluation averages members' probabilities on the same images."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_config
from omegaconf import DictConfig, open_dict

import fer.ensemble
from fer.ensemble import ensemble
from fer.evaluate import evaluate
from fer.factory import build_datamodule
from fer.scoring.predictions import SplitPredictions, load_predictions, save_predictions
from fer.training.module import FERClassifier


def ensemble_cfg(tmp_path: Path, fer_zip: Path, *overrides: str) -> DictConfig:
    cfg = compose_config([f"data.root={fer_zip}", f"paths.cache_dir={tmp_path / 'cache'}", *overrides], "ensemble")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    return cfg


def test_ensemble_of_identical_members_equals_the_member(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", "tta=none")
    metrics = ensemble(cfg)
    saved = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert [m["acc"] for m in saved["members"]] == [metrics["members"][0]["acc"]] * 2
    assert saved["test"]["acc"] == pytest.approx(metrics["members"][0]["acc"])
    assert sum(map(sum, saved["test"]["confusion"])) == 14  # the synthetic PrivateTest


def test_one_checkpoint_alone_is_scored_as_itself(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    """One member is allowed (a single teacher for data.teacher); it is the member's own calibrated output."""
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint}]", "tta=none")
    metrics = ensemble(cfg)
    assert len(metrics["members"]) == 1 and metrics["test"]["acc"] == pytest.approx(metrics["members"][0]["acc"])


def test_ensemble_needs_checkpoints_or_run_dirs(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    both = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", f"run_dirs=[{tmp_path}]")
    with pytest.raises(ValueError, match="either ckpt_paths"):
        ensemble(both)


def shifted_checkpoint(checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of ``checkpoint`` whose last layer is rolled: it predicts class c+1 where the original predicts c."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weight = next(k for k in reversed(saved["state_dict"]) if k.endswith(".weight"))
    for key in (weight, weight.replace(".weight", ".bias")):
        saved["state_dict"][key] = saved["state_dict"][key].roll(1, dims=0)
    shifted = tmp_path / "shifted.ckpt"
    torch.save(saved, shifted)
    return shifted


def test_ensemble_averages_the_members_probabilities(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    """Members that disagree on every image: the ensemble predicts the argmax of their mean softmax,
    so two confident members outvote the third whichever comes last or first."""
    shifted = shifted_checkpoint(tiny_checkpoint, tmp_path)
    datamodule = build_datamodule(ensemble_cfg(tmp_path, fer_zip))
    datamodule.setup("test")
    batches = list(datamodule.eval_dataloader("test"))
    labels = torch.cat([y for _, y in batches])
    probabilities = {}
    with torch.no_grad():
        for path in (tiny_checkpoint, shifted):
            model = FERClassifier.load_from_checkpoint(path, map_location="cpu").eval()
            probabilities[path] = torch.cat([model(x).softmax(dim=1) for x, _ in batches])

    def confusion(p: torch.Tensor) -> list[list[int]]:
        matrix = torch.zeros(7, 7, dtype=torch.int64)
        for t, predicted in zip(labels.tolist(), p.argmax(dim=1).tolist()):
            matrix[t, predicted] += 1
        return matrix.tolist()

    assert (probabilities[tiny_checkpoint].argmax(1) != probabilities[shifted].argmax(1)).all()
    for members in ([tiny_checkpoint, tiny_checkpoint, shifted], [shifted, shifted, tiny_checkpoint]):
        cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{','.join(map(str, members))}]", "tta=none")
        expected = confusion(sum(probabilities[m] for m in members) / 3)
        assert ensemble(cfg)["test"]["confusion"] == expected == confusion(probabilities[members[0]])


def test_saved_predictions_make_the_same_ensemble_as_running_the_checkpoints(
    tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path
) -> None:
    shifted = shifted_checkpoint(tiny_checkpoint, tmp_path)
    run_dirs = []
    for index, checkpoint in enumerate((tiny_checkpoint, tiny_checkpoint, shifted)):
        cfg = compose_config([f"data.root={fer_zip}", f"paths.cache_dir={tmp_path / 'cache'}", f"ckpt_path={checkpoint}", "tta=none"], "eval")
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / f"eval{index}")
        evaluate(cfg)
        run_dirs.append(cfg.paths.output_dir)
    members = ",".join(map(str, (tiny_checkpoint, tiny_checkpoint, shifted)))
    run = ensemble(ensemble_cfg(tmp_path / "run", fer_zip, f"ckpt_paths=[{members}]", "tta=none"))
    saved = ensemble(ensemble_cfg(tmp_path / "saved", fer_zip, f"run_dirs=[{','.join(run_dirs)}]"))
    assert saved["scored_from"] == "saved predictions" and run["scored_from"] == "checkpoints"
    assert (tmp_path / "saved" / "run" / "plots" / "reliability_test.png").is_file()
    assert saved["test"]["confusion"] == run["test"]["confusion"]
    assert saved["test"]["ci95"] == run["test"]["ci95"] and saved["test"]["ece"] == pytest.approx(run["test"]["ece"], abs=1e-6)
    (from_runs,) = load_predictions(tmp_path / "saved" / "run")[0].values()
    (from_checkpoints,) = load_predictions(tmp_path / "run" / "run")[0].values()
    np.testing.assert_allclose(from_runs.probabilities(), from_checkpoints.probabilities(), atol=1e-6)
    assert from_runs.ids.tolist() == from_checkpoints.ids.tolist() and all("/PrivateTest_" in i for i in from_runs.ids)


def change_second_member(monkeypatch: pytest.MonkeyPatch, change: Callable[[SplitPredictions], SplitPredictions]) -> None:
    """Make the second member's outputs pass through ``change`` (the first's stay as they are)."""
    real = fer.ensemble.member_outputs
    calls = []

    def member_outputs(*args: object) -> SplitPredictions:
        calls.append(args)
        outputs = real(*args)
        return change(outputs) if len(calls) == 2 else outputs

    monkeypatch.setattr(fer.ensemble, "member_outputs", member_outputs)


def test_ensemble_aligns_members_that_list_the_images_in_another_order(
    tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Probabilities are averaged image by image, matched by image id, not by position."""
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", "tta=none")
    in_order = ensemble(cfg)
    change_second_member(monkeypatch, lambda o: SplitPredictions(o.ids[::-1], o.labels[::-1], o.logits[::-1], o.tta))
    assert ensemble(cfg)["test"]["confusion"] == in_order["test"]["confusion"]
    # without alignment, the reversed member would have voted on the wrong images
    assert in_order["test"]["acc"] == pytest.approx(in_order["members"][0]["acc"])


def test_ensemble_refuses_members_scored_on_different_images(
    tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    change_second_member(monkeypatch, lambda o: SplitPredictions(np.char.add(o.ids, "_other"), o.labels, o.logits, o.tta))
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", "tta=none")
    with pytest.raises(ValueError, match="scored on different images than .*check data.root and split"):
        ensemble(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def saved_run(run_dir: Path, p_true: dict[str, list[float]]) -> str:
    """A run directory whose predictions.npz gives, per split, image i's true class (i % 7) the
    probability ``p_true[split][i]``, the next class almost all the rest and the other five 1e-4."""
    splits = {}
    for split, values in p_true.items():
        labels, rows = np.arange(len(values)) % 7, np.arange(len(values))
        probabilities = np.full((len(values), 7), 1e-4)
        probabilities[rows, labels] = values
        probabilities[rows, (labels + 1) % 7] = 1 - np.asarray(values) - 5e-4
        ids = [f"{split}/{i:03d}.jpg" for i in range(len(values))]
        splits[split] = SplitPredictions(ids, labels, np.log(probabilities), "tencrop")
    save_predictions(run_dir, splits)
    return str(run_dir)


def test_selection_on_publictest_leaves_out_members_that_only_hurt(tmp_path: Path, fer_zip: Path) -> None:
    """A member right on every image, one wrong on every image, one right on half: averaged all
    together the two wrong votes outvote the right one on half the images; selection keeps the
    right member alone (another vote for it would not lower the log loss) and scores it on test."""
    right, wrong, half = [0.9] * 14, [0.05] * 14, [0.9, 0.05] * 7
    runs = [saved_run(tmp_path / name, {"calibration": p, "test": p}) for name, p in (("right", right), ("wrong", wrong), ("half", half))]
    everyone = ensemble(ensemble_cfg(tmp_path / "all", fer_zip, f"run_dirs=[{','.join(runs)}]"))
    selected = ensemble(ensemble_cfg(tmp_path / "selected", fer_zip, f"run_dirs=[{','.join(runs)}]", "select_on=calibration"))
    assert everyone["test"]["acc"] == pytest.approx(0.5) and everyone["selection"] is None
    assert selected["test"]["acc"] == pytest.approx(1.0)
    assert [m["weight"] for m in selected["members"]] == [1, 0, 0]
    assert [r["added"] for r in selected["selection"]["rounds"]] == [str(Path(runs[0]).resolve())]


def test_selection_counts_a_member_again_when_another_vote_for_it_lowers_the_log_loss(tmp_path: Path, fer_zip: Path) -> None:
    """Member A gives the true class 0.9 on 13 images and 0.1 on 7, member B 0.2 and 0.6: the log loss
    of w A + (1 - w) B is lowest near w = 2/3, so the votes go A, B, A and stop there (a fourth, for
    either, raises it); the reported ensemble is (2 A + B) / 3 on test."""
    a, b = [0.9] * 13 + [0.1] * 7, [0.2] * 13 + [0.6] * 7
    runs = [saved_run(tmp_path / name, {"calibration": p, "test": p[::-1]}) for name, p in (("a", a), ("b", b))]
    metrics = ensemble(ensemble_cfg(tmp_path, fer_zip, f"run_dirs=[{','.join(runs)}]", "select_on=calibration"))
    rounds = metrics["selection"]["rounds"]
    assert [Path(r["added"]).name for r in rounds] == ["a", "b", "a"]
    assert [m["weight"] for m in metrics["members"]] == [2, 1]
    losses = [r["log_loss"] for r in rounds]
    assert losses == sorted(losses, reverse=True) and len(set(losses)) == 3
    expected = (2 * np.asarray(a[::-1]) + np.asarray(b[::-1])) / 3
    (combined,) = load_predictions(tmp_path / "run")[0].values()
    np.testing.assert_allclose(combined.probabilities()[np.arange(20), np.arange(20) % 7], expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["select_on=test", "split=val"], "tuning on them"),
        (["select_on=val", "split=val"], "tuning on them"),
        (["select_on=calibration", "split=val"], "tuning on them"),
        (["select_on=calibration", "select_rounds=0"], "at least 1"),
        (["select_on=val"], "not split='val'"),
    ],
)
def test_selection_refuses_to_tune_on_the_reported_split_or_privatetest(
    tmp_path: Path, fer_zip: Path, overrides: list[str], message: str
) -> None:
    p = [0.9] * 14
    runs = [saved_run(tmp_path / name, {"calibration": p, "test": p}) for name in ("a", "b")]
    cfg = ensemble_cfg(tmp_path, fer_zip, f"run_dirs=[{','.join(runs)}]", *overrides)
    with pytest.raises(ValueError, match=message):
        ensemble(cfg)
    assert not (Path(cfg.paths.output_dir) / "metrics.json").exists()


def test_selection_needs_saved_predictions(tmp_path: Path, fer_zip: Path, tiny_checkpoint: Path) -> None:
    cfg = ensemble_cfg(tmp_path, fer_zip, f"ckpt_paths=[{tiny_checkpoint},{tiny_checkpoint}]", "select_on=calibration")
    with pytest.raises(ValueError, match="pass run_dirs"):
        ensemble(cfg)
