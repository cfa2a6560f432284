"""Knowledge distillation (data.teacher): a teacher's saved train-split outputs become soft training
targets, exactly (1 - w) * one_hot(label) + w * softmax(logits / T), matched by image id; bad
teacher files are refused with the fix; soft targets mix and train like one-hot ones."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import compose_config
from omegaconf import open_dict

from fer.classes import CLASSES
from fer.data import DatasetError, FER2013DataModule
from fer.data.teacher import teacher_targets
from fer.training.mixing import mix_batch
from fer.training.module import FERClassifier

K = len(CLASSES)
TINY = {"name": "vgg1", "blocks": 1, "filters": [4], "dense": 8}
SGD = {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.9}


def train_split(root: Path, split: str = "official") -> tuple[np.ndarray, np.ndarray]:
    """(ids, labels) of the train split, in loader order."""
    dm = FER2013DataModule(str(root), split=split)
    dm.setup("fit")
    data = dm.split_data("train")
    return data.names.astype(str), data.labels


def write_teacher(
    path: Path, ids: np.ndarray, labels: np.ndarray, logits: np.ndarray, split: str = "train", temperature: float = 1.0
) -> Path:
    """A predictions.npz as fer.scoring.predictions writes it, by hand."""
    np.savez(
        path, classes=np.asarray(CLASSES), temperature=np.float64(temperature),
        **{f"{split}_ids": ids, f"{split}_labels": labels, f"{split}_logits": logits.astype(np.float32), f"{split}_tta": np.asarray("none")},
    )
    return path


def expected_targets(labels: np.ndarray, logits: np.ndarray, weight: float, temperature: float) -> np.ndarray:
    probabilities = torch.softmax(torch.from_numpy(logits.astype(np.float64)) / temperature, dim=1).numpy()
    return (1 - weight) * np.eye(K)[labels] + weight * probabilities


@pytest.fixture(scope="module")
def teacher_file(fer_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A teacher file for the synthetic train split, its images in reverse order (matching is by id)."""
    ids, labels = train_split(fer_zip)
    logits = np.random.default_rng(0).normal(scale=2.0, size=(len(ids), K)).astype(np.float32)
    path = write_teacher(tmp_path_factory.mktemp("teacher") / "predictions.npz", ids[::-1], labels[::-1], logits[::-1])
    return path, ids, labels, logits


def distilling(root: Path, teacher: Path | str, **kwargs) -> FER2013DataModule:
    dm = FER2013DataModule(str(root), batch_size=8, teacher=str(teacher), **kwargs)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("weight, temperature", [(0.5, 1.0), (0.7, 3.0), (1.0, 0.5)])
def test_train_batches_carry_the_blended_targets(fer_zip: Path, teacher_file, weight: float, temperature: float) -> None:
    path, ids, labels, logits = teacher_file
    dm = distilling(fer_zip, path.parent, teacher_weight=weight, teacher_temperature=temperature)
    expected = torch.from_numpy(expected_targets(labels, logits, weight, temperature)).float()
    train = dm.datasets["train"]
    seen = 0
    for x, y in dm.train_dataloader():
        assert y.dtype == torch.float32 and y.shape == (8, K)
        torch.testing.assert_close(y.sum(dim=1), torch.ones(8))
        for image, target in zip(x[:, 0], y):  # the synthetic faces are distinct: find each one's row
            (row,) = (train.images == image).flatten(1).all(dim=1).nonzero().flatten().tolist()
            torch.testing.assert_close(target, expected[row])
            seen += 1
    assert seen == len(ids) // 8 * 8  # drop_last
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        assert next(iter(loader))[1].dtype == torch.long


def test_the_files_own_calibration_temperature_divides_the_logits_too(fer_zip: Path, teacher_file, tmp_path: Path) -> None:
    """A single run's predictions.npz keeps raw logits and its fitted temperature (an ensemble's file: 1)."""
    _, ids, labels, logits = teacher_file
    path = write_teacher(tmp_path / "predictions.npz", ids, labels, logits, temperature=2.0)
    targets = distilling(fer_zip, path, teacher_temperature=1.5).datasets["train"].targets
    torch.testing.assert_close(targets, torch.from_numpy(expected_targets(labels, logits, 0.5, 3.0)).float())


def test_weight_zero_gives_the_one_hot_labels(fer_zip: Path, teacher_file) -> None:
    path, ids, labels, _ = teacher_file
    train = distilling(fer_zip, path, teacher_weight=0.0).datasets["train"]
    _, y = train.__getitems__(list(range(len(ids))))
    assert torch.equal(y, F.one_hot(torch.from_numpy(labels), K).float())


def test_a_kaggle_split_takes_its_images_from_an_official_teacher(fer_zip: Path, teacher_file) -> None:
    """The file may hold more images than the split (dedup, a val carved out of train)."""
    path, ids, labels, logits = teacher_file
    dm = distilling(fer_zip, path, split="kaggle", val_fraction=0.5)
    names = dm.split_data("train").names.astype(str)
    rows = [list(ids).index(name) for name in names]
    torch.testing.assert_close(dm.datasets["train"].targets, torch.from_numpy(expected_targets(labels[rows], logits[rows], 0.5, 1.0)).float())


def test_without_a_teacher_the_labels_stay_integers(fer_zip: Path) -> None:
    dm = FER2013DataModule(str(fer_zip), batch_size=8)
    dm.setup("fit")
    assert dm.datasets["train"].targets is None and next(iter(dm.train_dataloader()))[1].dtype == torch.long


# ---- bad input ----


@pytest.mark.parametrize("option, value", [("teacher_weight", -0.1), ("teacher_weight", 1.5), ("teacher_temperature", 0.0), ("teacher_temperature", -1.0)])
def test_bad_options_are_refused(fer_zip: Path, option: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"data.{option}={value} must be"):
        FER2013DataModule(str(fer_zip), teacher="unused", **{option: value})


def test_a_missing_teacher_says_how_to_make_one(fer_zip: Path, tmp_path: Path) -> None:
    for teacher in (tmp_path / "absent.npz", tmp_path):
        with pytest.raises(DatasetError, match=r"no teacher outputs at .*fer\.ensemble 'ckpt_paths=\[\.\.\.\]' split=train hydra\.run\.dir=DIR"):
            distilling(fer_zip, teacher)


def test_a_file_without_the_train_split_is_refused(fer_zip: Path, tmp_path: Path, teacher_file) -> None:
    _, ids, labels, logits = teacher_file
    path = write_teacher(tmp_path / "predictions.npz", ids, labels, logits, split="test")
    with pytest.raises(DatasetError, match=r"no outputs for the train split \(it has: test\).*split=train"):
        distilling(fer_zip, path)
    (tmp_path / "junk.npz").write_text("not an npz")
    with pytest.raises(DatasetError, match="is not a readable predictions.npz"):
        distilling(fer_zip, tmp_path / "junk.npz")


def test_a_teacher_whose_logits_are_not_finite_is_refused(fer_zip: Path, tmp_path: Path, teacher_file) -> None:
    _, ids, labels, logits = teacher_file
    diverged = logits.copy()
    diverged[4, 1] = np.nan
    path = write_teacher(tmp_path / "predictions.npz", ids, labels, diverged)
    expected = rf"data.teacher=.*not finite \(NaN or inf\) for 1 of its {len(ids)} train images \(e.g. \['{ids[4]}'\]\).*split=train"
    with pytest.raises(DatasetError, match=expected):
        distilling(fer_zip, path)


def test_train_images_the_teacher_lacks_are_counted_and_named(fer_zip: Path, tmp_path: Path, teacher_file) -> None:
    _, ids, labels, logits = teacher_file
    path = write_teacher(tmp_path / "predictions.npz", ids[3:], labels[3:], logits[3:])
    with pytest.raises(DatasetError, match=rf"no outputs for 3 of the {len(ids)} train images \(e.g. \['{ids[0]}', '{ids[1]}', '{ids[2]}'\]\)"):
        distilling(fer_zip, path)


def test_a_teacher_made_on_another_protocol_is_refused(fer_zip: Path, tmp_path: Path) -> None:
    """A kaggle-split teacher lacks the official train's images that kaggle kept for val."""
    ids, labels = train_split(fer_zip, "kaggle")
    path = write_teacher(tmp_path / "predictions.npz", ids, labels, np.zeros((len(ids), K)))
    with pytest.raises(DatasetError, match="it was made on other data or another data.split"):
        distilling(fer_zip, path)


def test_a_teacher_that_labels_an_image_differently_is_refused(fer_zip: Path, tmp_path: Path, teacher_file) -> None:
    _, ids, labels, logits = teacher_file
    other = labels.copy()
    other[5] = (other[5] + 1) % K
    path = write_teacher(tmp_path / "predictions.npz", ids, other, logits)
    expected = rf"labels 1 of the {len(ids)} train images differently .*{ids[5]} \({CLASSES[other[5]]}, here {CLASSES[labels[5]]}\).*made on other data"
    with pytest.raises(DatasetError, match=expected):
        distilling(fer_zip, path)


def test_ids_that_cannot_be_matched_are_refused(fer_zip: Path, tmp_path: Path, teacher_file) -> None:
    """Matching is by id: a teacher file, or a dataset, that names an image twice cannot be matched."""
    _, ids, labels, logits = teacher_file
    twice = [np.concatenate([values, values[:1]]) for values in (ids, labels, logits)]
    path = write_teacher(tmp_path / "predictions.npz", *twice)
    with pytest.raises(DatasetError, match=rf"names some images more than once \(e.g. \['{ids[0]}'\]\)"):
        distilling(fer_zip, path)
    good = write_teacher(tmp_path / "good.npz", ids, labels, logits)
    with pytest.raises(DatasetError, match=r"this run's train split names some images more than once"):
        teacher_targets(good, twice[0], twice[1], 0.5, 1.0)


# ---- mixing and the training step ----


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.4, 0.0), (0.0, 1.0)])
@pytest.mark.parametrize("seed", range(3))
def test_soft_targets_mix_like_one_hot_ones(mixup_alpha: float, cutmix_alpha: float, seed: int) -> None:
    """Seven images with distinct labels: the one-hot run's targets are the batch's mixing matrix
    (times a permutation), which must then blend the soft targets of the same draw."""
    labels = torch.randperm(K)
    images = torch.rand(K, 1, 12, 12)
    soft = torch.softmax(torch.randn(K, K), dim=1)
    torch.manual_seed(seed)
    mixed_hard, hard = mix_batch(images, labels, K, mixup_alpha, cutmix_alpha)
    torch.manual_seed(seed)
    mixed_soft, mixed = mix_batch(images, soft, K, mixup_alpha, cutmix_alpha)
    mixing = hard @ F.one_hot(labels, K).float().T
    assert torch.equal(mixed_soft, mixed_hard) and (mixing.max(dim=1).values < 1).any()
    torch.testing.assert_close(mixed, mixing @ soft)
    torch.testing.assert_close(mixed.sum(dim=1), torch.ones(K))


def test_unmixed_soft_targets_pass_through_and_bad_shapes_are_refused() -> None:
    soft = torch.softmax(torch.randn(4, K), dim=1)
    images = torch.rand(4, 1, 8, 8)
    assert torch.equal(mix_batch(images, soft, K)[1], soft)
    with pytest.raises(ValueError, match="Soft targets need 7 columns"):
        mix_batch(images, soft[:, :5], K, mixup_alpha=0.4)


def test_training_step_trains_on_soft_targets_and_counts_their_top_class() -> None:
    torch.manual_seed(0)
    module = FERClassifier(net=TINY, optimizer=SGD, label_smoothing=0.1)
    x = torch.randint(0, 256, (6, 1, 48, 48), dtype=torch.uint8)
    y = torch.softmax(3 * torch.randn(6, K), dim=1)
    loss = module.training_step((x, y), 0)
    logits = module.net(module.prepare(x))
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=0.1))
    expected_acc = (logits.argmax(dim=1) == y.argmax(dim=1)).float().mean()
    torch.testing.assert_close(module.train_acc.compute(), expected_acc)


def test_one_hot_probabilities_give_the_index_loss_up_to_the_class_weight_normalisation() -> None:
    """Label smoothing treats both target forms alike; with class weights, probabilities average
    over the batch where indices divide by the batch's summed weights (as for MixUp)."""
    weights = [0.5, 2.0, 1.0, 1.5, 0.8, 1.2, 3.0]
    logits, labels = torch.randn(8, K), torch.randint(K, (8,))
    one_hot = F.one_hot(labels, K).float()
    plain = FERClassifier(net=TINY, optimizer=SGD, label_smoothing=0.1)
    torch.testing.assert_close(plain.loss(logits, one_hot), plain.loss(logits, labels))
    weighted = FERClassifier(net=TINY, optimizer=SGD, label_smoothing=0.1, class_weights=weights)
    share = torch.tensor(weights)[labels].sum() / len(labels)
    torch.testing.assert_close(weighted.loss(logits, one_hot), weighted.loss(logits, labels) * share)


# ---- end to end ----


def train_losses(run: Path) -> list[float]:
    with open(run / "csv" / "metrics.csv", newline="") as handle:
        return [float(row["train/loss"]) for row in csv.DictReader(handle) if row.get("train/loss")]


def test_a_teacher_made_by_fer_ensemble_trains_a_student(make_cfg, tiny_checkpoint: Path, fer_zip: Path, tmp_path: Path, skip_plots) -> None:
    """fer.ensemble split=train on one checkpoint writes a teacher file for the same images; a run
    distilling from it trains on other targets than the same run without it (same seed), and a
    teacher weight of 0 gives back the labels' run."""
    from fer.ensemble import ensemble
    from fer.train import train

    teacher = tmp_path / "teacher"
    cfg = compose_config([f"data.root={fer_zip}", f"paths.cache_dir={tmp_path / 'cache'}", f"ckpt_paths=[{tiny_checkpoint}]", "split=train"], "ensemble")
    with open_dict(cfg):
        cfg.paths.output_dir = str(teacher)
    assert ensemble(cfg)["train"]["images"] == len(train_split(fer_zip)[0])
    losses = {}
    for name, overrides in {
        "labels": [],
        "teacher": [f"data.teacher={teacher}", "data.teacher_weight=0.8", "data.teacher_temperature=2.0"],
        "weight0": [f"data.teacher={teacher}", "data.teacher_weight=0.0"],
    }.items():
        cfg = make_cfg("model=vgg1", *overrides)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / f"run_{name}")
        assert 0.0 <= train(cfg)["test"]["acc"] <= 1.0
        losses[name] = train_losses(tmp_path / f"run_{name}")
    assert len(losses["labels"]) == 1 and all(np.isfinite(losses["teacher"]))
    assert losses["teacher"] != pytest.approx(losses["labels"], rel=1e-3)
    assert losses["weight0"] == pytest.approx(losses["labels"], rel=1e-5)
