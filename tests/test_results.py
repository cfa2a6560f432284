"""fer.results: repeats of one recipe over seeds are found in the run directories and summarised
as mean ± sample std, and nothing else is pooled with them."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from fer.results import find_runs, render, seed_groups

RECIPE = {
    "data": {"batch_size": 64, "root": "./data"},
    "module": {"optimizer": {"lr": 0.02}, "label_smoothing": 0.1},
    "trainer": {"max_epochs": 25},
    "callbacks": {"progress_bar": {"refresh_rate": 200}},
}
VGG3 = {"name": "vgg3", "blocks": 3, "filters": [32, 64, 128], "dropout": "increasing"}


def write_run(
    root: Path,
    name: str,
    seed: int,
    test_acc: float,
    *,
    experiment: str = "improved/vgg3",
    overrides: tuple[str, ...] = (),
    module: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> Path:
    """A run directory as fer.train leaves it: metrics.json, the resolved config, Hydra's record."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    config = json.loads(json.dumps(RECIPE))
    config["module"].update(module or {})
    config["model"] = model or VGG3
    config["seed"] = seed
    config["paths"] = {"output_dir": str(run)}
    config["callbacks"]["model_checkpoint"] = {"dirpath": f"{run}/checkpoints"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    task = [f"experiment={experiment}", f"seed={seed}", "callbacks.progress_bar.refresh_rate=200", *overrides]
    hydra = {"hydra": {"runtime": {"choices": {"experiment": experiment}}, "overrides": {"task": task}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    confusion = [[1 if i == j else 0 for j in range(7)] for i in range(7)]
    scores = {"loss": 1.0, "f1_macro": 0.5, "confusion": confusion}
    metrics = {
        "task": "train", "model": config["model"]["name"], "protocol": "official", "epochs": 25,
        "val": {**scores, "acc": test_acc - 0.01}, "test": {**scores, "acc": test_acc},
        "wall_seconds": 60.0, "hardware": "CPU", "commit": "abc1234",
    }
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run



def _cells(line: str) -> list[str]:
    """A markdown table row's cells, stripped."""
    return [cell.strip() for cell in line.split("|")[1:-1]]

def test_seeds_of_one_recipe_are_pooled_and_nothing_else(tmp_path: Path) -> None:
    for name, seed, acc in (("a", 42, 0.60), ("b", 1, 0.62), ("c", 2, 0.64)):
        write_run(tmp_path, name, seed, acc)
    write_run(tmp_path, "rerun_of_a", 42, 0.61)  # the same seed again: not a repeat over seeds
    write_run(tmp_path, "lr", 3, 0.50, overrides=("module.optimizer.lr=0.05",), module={"optimizer": {"lr": 0.05}})
    write_run(tmp_path, "other_experiment", 5, 0.40, experiment="speedrun_cpu")

    groups = seed_groups(find_runs([tmp_path]))
    assert [[run.path.name for run in group] for group in groups] == [["a", "b", "c"]]

    report = render(find_runs([tmp_path]))
    rows = [line for line in report.split("## Repeats")[1].splitlines() if line.startswith("| improved/vgg3")]
    assert len(rows) == 1
    cells = _cells(rows[0])
    assert cells[4] == "42, 1, 2"
    assert cells[5] == f"{100 * statistics.mean([0.60, 0.62, 0.64]):.2f}% ± 2.00" == "62.00% ± 2.00"
    assert cells[6] == "61.00% ± 2.00"


def test_a_setting_added_later_splits_repeats_only_when_a_run_changed_it(tmp_path: Path) -> None:
    """An old run has no ``mixup_alpha`` entry: a new run at the default still repeats it, a new
    run that set it by an override does not."""
    write_run(tmp_path, "old", 42, 0.60)
    write_run(tmp_path, "new_mixup", 2, 0.58, overrides=("module.mixup_alpha=0.2",), module={"mixup_alpha": 0.2})
    assert seed_groups(find_runs([tmp_path])) == []

    write_run(tmp_path, "new_default", 1, 0.62, module={"mixup_alpha": 0.0})
    groups = seed_groups(find_runs([tmp_path]))
    assert [[run.path.name for run in group] for group in groups] == [["new_default", "old"]]


def test_no_repeats_no_section(tmp_path: Path) -> None:
    write_run(tmp_path, "only", 42, 0.60)
    assert seed_groups(find_runs([tmp_path])) == []
    assert "## Repeats" not in render(find_runs([tmp_path]))


def test_runs_that_read_the_dataset_from_different_places_are_repeats(tmp_path: Path) -> None:
    write_run(tmp_path, "here", 42, 0.60)
    elsewhere = write_run(tmp_path, "elsewhere", 1, 0.62)
    config = yaml.safe_load((elsewhere / "config.yaml").read_text())
    config["data"]["root"] = "/mnt/datasets/fer2013.zip"
    (elsewhere / "config.yaml").write_text(yaml.safe_dump(config))
    groups = seed_groups(find_runs([tmp_path]))
    assert [[run.path.name for run in group] for group in groups] == [["elsewhere", "here"]]


def _row(report: str, run: Path) -> list[str]:
    return _cells(next(line for line in report.splitlines() if line.endswith(f"`{run}` |")))


def test_a_resumed_run_names_every_start_and_times_only_the_last(tmp_path: Path) -> None:
    """metrics.json is written by the start that finished: its wall time is that start's alone,
    so the table must not pass it off as the run's, and must name the commits of all starts."""
    once = write_run(tmp_path, "once", 42, 0.60)
    resumed = write_run(tmp_path, "resumed", 1, 0.62, overrides=("resume=true",))
    starts = [
        {"started": "2026-12-01T10:00:00+00:00", "resumed_from": None, "commit": "1111111", "hardware": "CPU, 1 threads"},
        {"started": "2026-12-01T12:00:00+00:00", "resumed_from": "last.ckpt", "commit": "abc1234", "hardware": "CPU, 2 threads"},
    ]
    (resumed / "run.json").write_text(json.dumps({"starts": starts}))
    (once / "run.json").write_text(json.dumps({"starts": starts[1:]}))

    report = render(find_runs([tmp_path]))
    assert _row(report, once)[-4:-1] == ["1.0 min", "CPU, 2 threads", "abc1234"]
    assert _row(report, resumed)[-4:-1] == ["1.0 min (the last of 2 starts)", "CPU, 1 threads then CPU, 2 threads", "1111111 then abc1234"]
    assert [[run.path.name for run in group] for group in seed_groups(find_runs([tmp_path]))] == [["once", "resumed"]]


def test_every_row_prints_95_percent_intervals_from_its_confusion_matrix(tmp_path: Path) -> None:
    """Old runs have no per-image predictions, but their confusion matrix fixes accuracy and
    macro-F1 of every bootstrap resample: their intervals are printed like the new runs'."""
    run = write_run(tmp_path, "old", 42, 0.60)
    metrics = json.loads((run / "metrics.json").read_text())
    confusion = [[0] * 7 for _ in range(7)]
    confusion[3][3], confusion[3][4], confusion[4][4] = 50, 40, 10  # 60 of 100 right
    metrics["test"].update(confusion=confusion, ece=0.081, ece_calibrated=0.012)
    (run / "metrics.json").write_text(json.dumps(metrics))
    cells = _row(render(find_runs([tmp_path])), run)
    header = _cells(next(line for line in render(find_runs([tmp_path])).splitlines() if line.startswith("| experiment | overrides | model")))
    accuracy = cells[header.index("test acc (95% CI)")]
    low, high = (float(v) for v in accuracy.removeprefix("60.00% (").removesuffix(")").split("-"))
    assert (low, high) == pytest.approx((50.2, 69.1), abs=1.0)  # Wilson's 95% for 60 of 100: 50.2-69.1
    assert cells[header.index("test macro-F1 (95% CI)")].startswith("50.00% (")
    assert cells[header.index("test ECE (raw -> T)")] == "8.1% -> 1.2%"
    assert render(find_runs([tmp_path])) == render(find_runs([tmp_path]))  # seeded


def test_runs_that_named_vgg1_2_3_seed_vgg_are_shown_and_pooled_as_the_net_their_config_says(tmp_path: Path) -> None:
    """Before each net had its own name, VGG1/2/3 all wrote ``seed_vgg`` (config and metrics):
    ``model.blocks`` says which, so an old vgg3 run repeats a new one and a 2-block one does not."""
    new = write_run(tmp_path, "new", 1, 0.62)
    old = write_run(tmp_path, "old", 42, 0.60, model={**VGG3, "name": "seed_vgg"})
    old_vgg2 = write_run(tmp_path, "old_vgg2", 2, 0.55, model={**VGG3, "name": "seed_vgg", "blocks": 2})
    assert json.loads((old / "metrics.json").read_text())["model"] == "seed_vgg"

    runs = find_runs([tmp_path])
    assert [[run.path.name for run in group] for group in seed_groups(runs)] == [["new", "old"]]
    report = render(runs)
    header = _cells(next(line for line in report.splitlines() if line.startswith("| experiment | overrides | model")))
    assert [_row(report, run)[header.index("model")] for run in (new, old, old_vgg2)] == ["vgg3", "vgg3", "vgg2"]
