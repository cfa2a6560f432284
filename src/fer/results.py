"""Collect run directories into a markdown results table, with the seed's numbers beside ours,
and the mean ± std of every recipe run with several seeds.

``python -m fer.results RUN_OR_SWEEP_DIR... [-o experiments/RESULTS.md]`` finds every
``metrics.json`` under the given paths (a run directory, a multirun directory, a folder of runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from fer.models import resolve
from fer.run.resume import override_key
from fer.run.rundir import read_starts
from fer.scoring.stats import intervals_from_confusion

# The seed project's table (Keras, scored on the 7,178-image Kaggle test/ folder, also its val set).
SEED_TABLE: dict[str, tuple[str, float, float | None]] = {
    "seed/vgg1_baseline": ("VGG1 baseline", 45.92, None),
    "seed/vgg2_baseline": ("VGG2 baseline", 47.20, None),
    "seed/vgg3_baseline": ("VGG3 baseline", 50.07, 1.633),
    "seed/vgg3_aug_dropout": ("VGG3 + augmentation + dropout 0.2", 52.15, 1.243),
    "seed/vgg3_aug_dropout_bn": ("VGG3 + increasing dropout + augmentation + BN", 56.49, 1.443),
    "seed/vgg16_transfer": ("VGG16 ImageNet transfer", 58.03, 2.33),
}
# Which seed row each of our recipes is compared with.
COMPARE_WITH = {
    "improved/vgg1": "seed/vgg1_baseline",
    "improved/vgg2": "seed/vgg2_baseline",
    "improved/vgg3": "seed/vgg3_aug_dropout_bn",
    "improved/vgg16": "seed/vgg16_transfer",
    "seed/vgg3_aug_dropout_bn_momentum": "seed/vgg3_aug_dropout_bn",
}
TEST_SET = {"official": "PrivateTest", "kaggle": "Kaggle test/"}
SEED_EPOCHS = 50
# Experiments with the seed's training settings (its table's rows and its optimiser comparison).
SEED_PREFIX = "seed/"
# Config entries that say where or how a run ran, not what it trained: runs that differ only in
# these (and in the seed) are repeats of one recipe. ``data.root`` is where that machine keeps its
# copy of the dataset.
RUN_SPECIFIC = ("seed", "resume", "run_name", "ckpt_path", "data.root", "paths.", "callbacks.progress_bar.")


@dataclass
class Run:
    path: Path
    metrics: dict[str, Any]
    experiment: str
    overrides: list[str]
    planned_epochs: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    starts: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, metrics_file: Path) -> Run:
        run_dir = metrics_file.parent
        metrics = json.loads(metrics_file.read_text())
        experiment, overrides, config = "-", [], {}
        config_file = run_dir / "config.yaml"
        if config_file.is_file():
            config = yaml.safe_load(config_file.read_text()) or {}
        planned = (config.get("trainer") or {}).get("max_epochs")
        hydra_file = run_dir / ".hydra" / "hydra.yaml"
        if hydra_file.is_file():
            hydra_cfg = yaml.safe_load(hydra_file.read_text())["hydra"]
            choices = hydra_cfg["runtime"]["choices"]
            experiment = choices.get("experiment") or f"model={choices.get('model')}"
            overrides = [o for o in hydra_cfg["overrides"]["task"] if not o.startswith("experiment=")]
        return cls(run_dir, metrics, experiment, overrides, planned, config, read_starts(run_dir))

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @cached_property
    def net(self) -> dict[str, Any]:
        """The config's ``model`` under the name its net is registered as now (runs made before
        VGG1/2/3 had a name each say ``seed_vgg``, and ``model.blocks`` which:
        :func:`fer.models.resolve`); empty for a run without a config."""
        model = self.config.get("model") or {}
        return resolve(model) if "name" in model else {}

    @property
    def model(self) -> str:
        """What the table names the net: :attr:`net`'s name, else what ``metrics.json`` says."""
        return self.net.get("name", self.metrics["model"])

    @cached_property
    def recipe(self) -> dict[str, Any]:
        """The resolved config as flat ``a.b.c: value`` entries, less :data:`RUN_SPECIFIC` ones,
        with the run's own directory replaced by ``<run>`` wherever a value names it, and the
        model by its current name (so that repeats made before and after a rename pool)."""
        output_dir = (self.config.get("paths") or {}).get("output_dir")
        entries = {}
        for key, value in _flatten({**self.config, "model": self.net} if self.net else self.config).items():
            if _run_specific(key):
                continue
            if output_dir and isinstance(value, str):
                value = value.replace(output_dir, "<run>")
            entries[key] = value
        return entries

    def test_set_text(self) -> str:
        """The test split's name and how many faces were scored (from the confusion matrix)."""
        faces = sum(map(sum, self.metrics["test"]["confusion"]))
        return f"{TEST_SET.get(self.metrics['protocol'], '?')} ({faces:,})"

    def epochs_text(self) -> str:
        """Epochs run, and of how many when the run stopped short of its schedule (a time limit, or
        a seed row run for fewer than the seed's 50)."""
        epochs = self.metrics["epochs"]
        if self.experiment.startswith(SEED_PREFIX):
            return f"{epochs} of the seed's {SEED_EPOCHS}"
        if self.planned_epochs and epochs < self.planned_epochs:
            return f"{epochs} of {self.planned_epochs}"
        return str(epochs)

    def wall_text(self) -> str:
        """``metrics.json`` times only the start that finished: a resumed run says so."""
        minutes = f"{self.metrics['wall_seconds'] / 60:.1f} min"
        if len(self.starts) > 1:
            return f"{minutes} (the last of {len(self.starts)} starts)"
        return minutes

    def started_on(self, key: str) -> str:
        """The commit or hardware of every start, in order, each once (``then`` between them)."""
        values = [s[key] for s in self.starts if s.get(key)] or [self.metrics[key]]
        return " then ".join(dict.fromkeys(values))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _run_specific(key: str) -> bool:
    return any(key == name or (name.endswith(".") and key.startswith(name)) for name in RUN_SPECIFIC)


def same_recipe(a: Run, b: Run) -> bool:
    """One experiment, and configs equal on every entry both have. An entry only one has (a
    setting added to the code later) is left out of the comparison unless that run set it by an
    override, so repeats made before a new setting existed still pair with those made after."""
    if a.experiment != b.experiment:
        return False
    recipe_a, recipe_b = a.recipe, b.recipe
    shared = recipe_a.keys() & recipe_b.keys()
    if not shared or any(recipe_a[key] != recipe_b[key] for key in shared):
        return False
    for run, recipe in ((a, recipe_a), (b, recipe_b)):
        overridden = {override_key(o) for o in run.overrides}
        if any(key in overridden for key in recipe.keys() - shared):
            return False
    return True


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs of one recipe with different seeds, two or more to a group."""
    groups: list[list[Run]] = []
    for run in sorted((r for r in runs if r.config), key=lambda r: (r.experiment, str(r.path))):
        for group in groups:
            if run.seed not in {r.seed for r in group} and same_recipe(group[0], run):
                group.append(run)
                break
        else:
            groups.append([run])
    return [group for group in groups if len(group) > 1]


def _mean_std(values: list[float]) -> str:
    return f"{100 * statistics.mean(values):.2f}% ± {100 * statistics.stdev(values):.2f}"


def render_repeats(runs: list[Run]) -> list[str]:
    """The markdown section of :func:`seed_groups`: mean ± sample std of test and val accuracy."""
    groups = seed_groups(runs)
    if not groups:
        return []
    lines = [
        "",
        "## Repeats: one recipe, several seeds",
        "",
        "Runs of one experiment whose resolved configs agree on every setting they both have, apart "
        "from the seed and the run's own paths; mean ± sample standard deviation.",
        "",
        "| experiment | overrides all share | epochs | test set | seeds | test acc | val acc | runs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for group in groups:
        first = group[0]
        shared = [o for o in first.overrides if all(o in r.overrides for r in group) and not _run_specific(override_key(o))]
        overrides = " ".join(f"`{o}`" for o in shared) or "–"
        seeds = ", ".join(str(r.seed) for r in group)
        tests = [r.metrics["test"]["acc"] for r in group]
        vals = [r.metrics["val"]["acc"] for r in group]
        paths = ", ".join(f"`{r.path}`" for r in group)
        lines.append(
            f"| {first.experiment} | {overrides} | {first.epochs_text()} | {first.test_set_text()} | {seeds} "
            f"| {_mean_std(tests)} | {_mean_std(vals)} | {paths} |"
        )
    return lines


def find_runs(paths: list[Path]) -> list[Run]:
    files = []
    for path in paths:
        files += [path] if path.name == "metrics.json" else sorted(path.rglob("metrics.json"))
    runs = [Run.load(f) for f in files]
    return [r for r in runs if r.metrics.get("task") == "train" and "test" in r.metrics]


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def with_interval(value: float, interval: list[float]) -> str:
    """``66.73% (65.19-68.26)``: a score and its 95% interval."""
    return f"{100 * value:.2f}% ({100 * interval[0]:.2f}-{100 * interval[1]:.2f})"


def ece_text(scores: dict[str, Any]) -> str:
    if "ece" not in scores:
        return "–"
    calibrated = f" -> {100 * scores['ece_calibrated']:.1f}%" if "ece_calibrated" in scores else ""
    return f"{100 * scores['ece']:.1f}%{calibrated}"


def render(runs: list[Run], notes: str = "") -> str:
    """The markdown report: one row per run, the seed rows not yet run at full length, then
    ``notes`` (hand-written context, e.g. what shared the machine during a run)."""
    lines = [
        "# Results",
        "",
        "Generated by `python -m fer.results` from the run directories listed in the last column; "
        "every number comes from that run's `metrics.json`. Protocols: `official` selects the checkpoint "
        "on PublicTest and reports PrivateTest; `kaggle` (the seed's) selects on a stratified 10% of "
        "Training and reports the whole 7,178-image test/ folder.",
        "",
        "95% CI: percentile bootstrap over the test images (2,000 resamples, seed 0: "
        "`fer.scoring.stats.intervals_from_confusion`). Accuracy and macro-F1 depend only on the counts of "
        "(label, prediction) pairs, which each run's confusion matrix holds, so every row has them, "
        "runs made before per-image predictions were saved included; they equal the `ci95` in the "
        "`metrics.json` of runs that have one. ECE: expected calibration error of the test "
        "probabilities (15 bins), raw -> after the temperature fitted on val (runs with `predictions.npz`; "
        "`python -m fer.compare A B` compares two of those image by image).",
        "",
        "| experiment | overrides | model | protocol | test set | epochs | val acc | test acc (95% CI) | test loss "
        "| test macro-F1 (95% CI) | test ECE (raw -> T) | seed's number (same row) | wall time | hardware | commit | run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in sorted(runs, key=lambda r: r.experiment):
        m = run.metrics
        seed = SEED_TABLE.get(COMPARE_WITH.get(run.experiment, run.experiment))
        seed_text = f"{seed[1]:.2f}% ({seed[0]})" if seed else "–"
        overrides = " ".join(f"`{o}`" for o in run.overrides) or "–"
        intervals = intervals_from_confusion(m["test"]["confusion"])  # the same for runs with and without predictions.npz
        lines.append(
            f"| {run.experiment} | {overrides} | {run.model} | {m['protocol']} | {run.test_set_text()} "
            f"| {run.epochs_text()} | {_pct(m['val']['acc'])} | {with_interval(m['test']['acc'], intervals['acc'])} "
            f"| {m['test']['loss']:.3f} | {with_interval(m['test']['f1_macro'], intervals['f1_macro'])} | {ece_text(m['test'])} | {seed_text} "
            f"| {run.wall_text()} | {run.started_on('hardware')} | {run.started_on('commit')} | `{run.path}` |"
        )
    full = {r.experiment for r in runs if r.metrics["epochs"] >= SEED_EPOCHS}
    seed_runs = sorted({r.experiment for r in runs if r.experiment.startswith(SEED_PREFIX)} - set(SEED_TABLE))
    pending = [name for name in [*SEED_TABLE, *seed_runs] if name not in full]
    if pending:
        lines += ["", "## Pending: seed-setting runs not yet run at full length", ""]
        for name in pending:
            label, accuracy, _ = SEED_TABLE.get(name, (None, None, None))
            about = f" ({label}; seed {accuracy:.2f}%)" if label else ""
            lines.append(f"- `experiment={name}`{about}: {SEED_EPOCHS} epochs at batch 16.")
    lines += render_repeats(runs)
    if notes:
        lines += ["", notes.rstrip()]
    return "\n".join(lines) + "\n"


BENCH_COLUMNS = (
    "config_model", "batch_size", "precision", "channels_last", "augment_on", "num_workers", "limit_img_s",
    "pipeline_img_s", "ratio", "predict_batch_img_s", "predict_ms", "data_setup_s", "hardware", "commit",
)


def render_bench(paths: list[Path]) -> str:
    """A markdown table of the ``fer.bench`` results (``bench.json`` or renamed copies) under the given paths."""
    files = [f for path in paths for f in ([path] if path.is_file() else sorted(path.rglob("*.json")))]
    rows = [row for row in map(json.loads, (f.read_text() for f in files)) if "limit_img_s" in row]
    lines = [
        "| " + " | ".join(BENCH_COLUMNS) + " | command |",
        "| " + " | ".join("---" for _ in range(len(BENCH_COLUMNS) + 1)) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "–")) for c in BENCH_COLUMNS) + f" | `{row.get('command', '')}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories, multirun directories or metrics.json files")
    parser.add_argument("-o", "--output", type=Path, help="write the markdown here (default: print it)")
    parser.add_argument("--bench", action="store_true", help="tabulate bench.json files of fer.bench runs instead")
    parser.add_argument("--notes", type=Path, help="a markdown file appended to the report")
    args = parser.parse_args(argv)
    if args.bench:
        text = render_bench(args.paths)
    else:
        runs = find_runs(args.paths)
        if not runs:
            parser.error(f"no training metrics.json under {', '.join(map(str, args.paths))}")
        text = render(runs, args.notes.read_text() if args.notes else "")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"Wrote {args.output}")
    else:
        print(text)


if __name__ == "__main__":
    main()
