"""Package a trained model into fer itself: ``python -m fer.release run_dir=RUN_DIR``.

``RUN_DIR`` is a training run's directory (``metrics.json``, ``run.json``, ``config.yaml``; for
example a copy under ``experiments/runs/``); its best checkpoint is the one ``metrics.json`` names,
or ``ckpt_path=``. The command

1. writes a slim copy of the checkpoint (weights in ``weights=fp16`` or ``fp32``, hyper-parameters,
   temperature; no optimizer state) to ``output_dir`` (default: the package's ``fer/weights/``),
   with ``tta=`` as its test-time augmentation (null: the run's), the one fer.predict applies;
2. scores the original checkpoint and the slim copy on PrivateTest (and the copy on PublicTest)
   of the real FER-2013 (``FER2013_ROOT``), with the run's own protocol, in float32
   (``trainer.precision``), and refuses the copy when half precision moves PrivateTest accuracy by
   more than ``max_change`` (0.2 points): use ``weights=fp32`` then;
3. scores the copy in bf16 autocast too (what fer.predict, fer.serve and fer.bench use on CPUs with
   native bf16 and on GPUs, ``precision=auto``), and with every test-time augmentation, since each
   costs a different multiple of the classification (:mod:`fer.training.tta`);
4. times a single face on this CPU and writes the model card, ``card.json`` and ``card.md``
   (:func:`render_card`), with the copy's SHA-256, which :mod:`fer.packaged` checks on every load.

So a better run replaces the packaged model in one command; commit ``src/fer/weights/`` after it.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fer import packaged
from fer.classes import CLASSES
from fer.cli import entry_point
from fer.evaluate import score
from fer.inference import classify, prepare_faces
from fer.run.atomic import atomic_write
from fer.run.checkpoints import AtomicCheckpointIO, CheckpointError, read_checkpoint
from fer.run.hardware import resolve_precision
from fer.run.rundir import read_metrics, read_starts, run_metadata, write_json
from fer.training.module import CALIBRATION_KEY, FERClassifier
from fer.training.tta import TTA_MODES, VIEWS_PER_FACE, check_mode

log = logging.getLogger(__name__)

WEIGHT_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
# the precision the card's numbers are also given in: precision=auto's choice on bf16 CPUs and GPUs
AUTOCAST_PRECISION = "bf16-mixed"
# what a slim checkpoint keeps: enough for FERClassifier.load_from_checkpoint, nothing for resuming
KEPT_KEYS = ("hyper_parameters", "pytorch-lightning_version", "epoch", "global_step", CALIBRATION_KEY)
LIMITS = [
    "Trained on FER-2013 only: 48x48 grayscale faces scraped from the web, mostly frontal, with noisy labels "
    "(human accuracy on it is about 65%); expect lower accuracy on other cameras, ages, lighting and posed versus "
    "spontaneous expressions.",
    "'disgust' has 436 training images (1.5%) and 55 PrivateTest images: its accuracy and interval are the least certain.",
    "The face detector (MTCNN by default, found 90% of 2,000 FER-2013 training faces; OpenCV's frontal Haar cascade with "
    "detector.method=haar, 74%) misses profile, strongly tilted and small faces (under 48 pixels by default) and finds the "
    "occasional false face; fer.predict writes a no_face row when it finds none.",
    "An expression is not an emotion: the model labels facial appearance, and must not be used to make decisions about people.",
]


def slim_checkpoint(checkpoint: dict[str, Any], weights: str, tta: str | None = None) -> dict[str, Any]:
    """What inference needs of a training checkpoint, floating-point weights cast to ``weights``,
    and ``tta`` as its test-time augmentation (None: the checkpoint's)."""
    if weights not in WEIGHT_DTYPES:
        raise ValueError(f"weights={weights!r} must be one of {', '.join(WEIGHT_DTYPES)}.")
    dtype = WEIGHT_DTYPES[weights]
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()}
    slim = {key: checkpoint[key] for key in KEPT_KEYS if key in checkpoint}
    if tta is not None:
        slim["hyper_parameters"] = {**slim["hyper_parameters"], "tta": check_mode(tta, null_keeps=True)}
    slim["state_dict"] = state
    return slim


def face_latency_ms(model: FERClassifier, tta: str, precision: str, repeats: int = 50) -> float:
    """Median milliseconds to classify one 48x48 face (prepare + model + softmax) on this machine."""
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    previous = model.tta, model.inference_precision
    model.use_tta(tta)
    model.use_precision(precision)
    try:
        for _ in range(5):
            classify(model, prepare_faces([face], model.input_spec))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            classify(model, prepare_faces([face], model.input_spec))
            times.append((time.perf_counter() - start) * 1000)
    finally:
        model.use_tta(previous[0])
        model.use_precision(previous[1])
    return round(statistics.median(times), 2)


def score_variants(cfg: DictConfig, model: FERClassifier, packaged_acc: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``model``'s results in bf16 autocast on PrivateTest and PublicTest, and its accuracy on both
    with each test-time augmentation in float32; ``packaged_acc``: its own mode's, already scored."""
    autocast_cfg = OmegaConf.merge(cfg, {"trainer": {"precision": AUTOCAST_PRECISION}})
    autocast = {split: score(autocast_cfg, model, split)[0] for split in ("test", "val")}
    packaged_tta, by_tta = model.tta, {}
    try:
        for mode in TTA_MODES:
            model.use_tta(mode)
            by_tta[mode] = packaged_acc if mode == packaged_tta else {split: score(cfg, model, split)[0]["acc"] for split in ("test", "val")}
    finally:
        model.use_tta(packaged_tta)
    return autocast, by_tta


def release(cfg: DictConfig) -> dict[str, Any]:
    """Write the packaged weights and their card from a training run (see the module docstring)."""
    run_dir = Path(cfg.run_dir).expanduser()
    if not (run_dir / "metrics.json").is_file():
        raise CheckpointError(f"{run_dir} holds no metrics.json: pass run_dir= of a finished training run (python -m fer.train's run directory).")
    run = read_metrics(run_dir)
    if run.get("task") != "train" or "test" not in run:
        raise CheckpointError(f"{run_dir}/metrics.json is not a finished training run with a test score (task={run.get('task')!r}).")
    ckpt_path = Path(cfg.ckpt_path or run["best_checkpoint"]).expanduser()
    checkpoint = read_checkpoint(ckpt_path)
    trained = checkpoint.get("hyper_parameters", {}).get("net", {}).get("name")
    if trained != run["model"]:
        raise CheckpointError(f"{ckpt_path} holds a {trained} model but {run_dir} trained {run['model']}: pass the run's own checkpoint as ckpt_path=.")
    run_config = OmegaConf.load(run_dir / "config.yaml")
    if run_config.data.get("split") != cfg.data.split:
        raise ValueError(f"The run used data.split={run_config.data.get('split')}; release it with the same: data.split={run_config.data.get('split')}.")

    # before anything is written: releasing into the package changes the checkout it reports the commit of
    metadata = run_metadata()
    output_dir = packaged.directory(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # the candidate is scored beside the packaged model it may replace, which stays intact if it is refused
    candidate = output_dir / f"{packaged.WEIGHTS_FILE}.candidate"
    AtomicCheckpointIO().save_checkpoint(slim_checkpoint(checkpoint, cfg.weights, cfg.tta), candidate)
    try:
        original = FERClassifier.load_from_checkpoint(ckpt_path, map_location="cpu").eval()
        model = FERClassifier.load_from_checkpoint(candidate, map_location="cpu").eval()
        original.use_tta(model.tta)
        original_test = score(cfg, original, "test")[0]
        test = score(cfg, model, "test")[0]
        val = score(cfg, model, "val")[0]
        change = 100 * (test["acc"] - original_test["acc"])
        if abs(change) > cfg.max_change:
            raise ValueError(
                f"weights={cfg.weights} moves PrivateTest accuracy by {change:+.2f} points ({original_test['acc']:.4f} -> {test['acc']:.4f}), "
                f"more than max_change={cfg.max_change}: release with weights=fp32."
            )
        autocast, by_tta = score_variants(cfg, model, {"test": test["acc"], "val": val["acc"]})
    except BaseException:
        candidate.unlink()
        raise
    weights_file = output_dir / packaged.WEIGHTS_FILE
    candidate.replace(weights_file)
    card = build_card(cfg, run_dir, run, ckpt_path, model, weights_file, test, val, original_test["acc"], autocast, by_tta, metadata)
    write_json(output_dir / packaged.CARD_JSON, card)
    with atomic_write(output_dir / packaged.CARD_MD) as handle:
        handle.write(render_card(card))
    log.info("Packaged %s (%d bytes, PrivateTest %.4f) into %s", ckpt_path, card["weights"]["bytes"], test["acc"], output_dir)
    return card


def build_card(
    cfg: DictConfig,
    run_dir: Path,
    run: dict[str, Any],
    ckpt_path: Path,
    model: FERClassifier,
    weights_file: Path,
    test: dict[str, Any],
    val: dict[str, Any],
    checkpoint_acc: float,
    autocast: dict[str, Any],
    by_tta: dict[str, Any],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """The model card as data: what was trained how, on what, and how well it does."""
    starts = read_starts(run_dir)
    first = starts[0] if starts else {}
    precisions = list(dict.fromkeys(("32-true", resolve_precision("auto", "cpu"))))
    return {
        "name": f"fer-{run['model']}-{run_dir.parent.name}-{run_dir.name}",
        "classes": list(CLASSES),
        "model": {"net": dict(model.hparams.net), "input_spec": model.input_spec.as_dict(), "tta": model.tta, "temperature": model.temperature},
        "weights": {
            "file": packaged.WEIGHTS_FILE,
            "dtype": cfg.weights,
            "bytes": weights_file.stat().st_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "sha256": packaged.sha256(weights_file),
        },
        "training": {
            "run_dir": display_path(run_dir),
            "checkpoint": ckpt_path.name,
            "command": python_command(first.get("command", run.get("command"))),
            "commit": first.get("commit", run.get("commit")),
            "hardware": first.get("hardware", run.get("hardware")),
            "wall_minutes": round(run["wall_seconds"] / 60, 1) if run.get("wall_seconds") else None,
            "epochs": run.get("epochs"),
            "resumed": len(starts) > 1,
        },
        "data": {
            "dataset": "FER-2013 (Kaggle, Goodfellow et al. 2013)",
            "protocol": cfg.data.split,
            "train": "Training (28,709 faces)",
            "selection": "PublicTest (3,589 faces): checkpoint and temperature",
            "test": "PrivateTest (3,589 faces), never tuned on",
        },
        "metrics": {
            "test": split_card(test),
            "val": split_card(val),
            "precision": cfg.trainer.precision,
            "checkpoint_test_acc": checkpoint_acc,
            "weights_change_points": round(100 * (test["acc"] - checkpoint_acc), 2),
            AUTOCAST_PRECISION: {"test": split_card(autocast["test"]), "val": split_card(autocast["val"])},
            "acc_by_tta": by_tta,
        },
        "latency_ms": {
            "one_face": {precision: {mode: face_latency_ms(model, mode, precision) for mode in TTA_MODES} for precision in precisions},
            "threads": torch.get_num_threads(),
            "hardware": metadata["hardware"],
        },
        "limits": LIMITS,
        "released": {"date": datetime.now(timezone.utc).date().isoformat(), **{k: v for k, v in metadata.items() if k in ("commit", "command")}},
    }


def split_card(results: dict[str, Any]) -> dict[str, Any]:
    return {
        "acc": results["acc"],
        "acc_ci95": results["ci95"]["acc"],
        "f1_macro": results["f1_macro"],
        "f1_macro_ci95": results["ci95"]["f1_macro"],
        "per_class_acc": {c: results[f"acc_{c}"] for c in CLASSES},
        "images": results["images"],
        "ece": results["ece"],
        # a temperature of 1 (none fitted) leaves nothing to calibrate
        "ece_calibrated": results.get("ece_calibrated", results["ece"]),
        "nll_calibrated": results.get("nll_calibrated", results["nll"]),
    }


def render_card(card: dict[str, Any]) -> str:
    """``card.md``: the card for people, every number taken from ``card.json``."""
    test, val, training, weights, model = (card["metrics"]["test"], card["metrics"]["val"], card["training"], card["weights"], card["model"])
    latency, data, autocast = card["latency_ms"], card["data"], card["metrics"][AUTOCAST_PRECISION]
    precisions = list(latency["one_face"])

    def percent(value: float) -> str:
        return f"{100 * value:.2f}%"

    def interval(bounds: list[float]) -> str:
        return f"{100 * bounds[0]:.2f}-{100 * bounds[1]:.2f}"

    lines = [
        f"# Model card: {card['name']}",
        "",
        "The model `fer.load_model()` returns when no checkpoint is given (and `fer.predict`, `fer.serve` and the notebook",
        "without `ckpt_path`). Rebuild it from a better run with `python -m fer.release run_dir=RUN_DIR`.",
        "",
        "## What it is",
        f"- Network: `{model['net']['name']}` ({weights['parameters']:,} parameters), input {model['input_spec']},",
        f"  test-time augmentation `{model['tta']}`, temperature {model['temperature']:.3f}.",
        f"- Weights: `{weights['file']}`, {weights['dtype']}, {weights['bytes'] / 1e6:.2f} MB, SHA-256 `{weights['sha256']}`.",
        f"- Classes: {', '.join(card['classes'])}.",
        "",
        "## How it was trained",
        f"- Command: `{training['command']}` at commit `{training['commit']}`.",
        f"- {training['epochs']} epochs, {training['wall_minutes']} min on {training['hardware']}.",
        f"- Run directory: `{training['run_dir']}` (checkpoint `{training['checkpoint']}`).",
        f"- Data: {data['dataset']}, {data['protocol']} protocol. Train: {data['train']}.",
        f"  Selection: {data['selection']}. Test: {data['test']}.",
        "",
        f"## How well it does (these packaged weights, scored at release with precision `{card['metrics']['precision']}`)",
        f"- PrivateTest accuracy **{percent(test['acc'])}** (95% bootstrap interval {interval(test['acc_ci95'])}),",
        f"  macro-F1 {percent(test['f1_macro'])} ({interval(test['f1_macro_ci95'])}), {test['images']} faces.",
        f"- The training checkpoint scored {percent(card['metrics']['checkpoint_test_acc'])}:",
        f"  {weights['dtype']} weights change it by {card['metrics']['weights_change_points']:+.2f} points.",
        f"- PublicTest (used for selection, so optimistic): {percent(val['acc'])}.",
        f"- Calibration on PrivateTest: ECE {100 * test['ece']:.1f}% before the temperature, {100 * test['ece_calibrated']:.1f}% after.",
        f"- In {AUTOCAST_PRECISION} autocast (what `precision=auto` of fer.predict, fer.serve and fer.bench picks on CPUs with",
        f"  native bf16 and on GPUs): PrivateTest **{percent(autocast['test']['acc'])}** ({interval(autocast['test']['acc_ci95'])}),",
        f"  macro-F1 {percent(autocast['test']['f1_macro'])}, PublicTest {percent(autocast['val']['acc'])}.",
        "",
        "| class | PrivateTest accuracy |",
        "| --- | --- |",
        *(f"| {c} | {percent(a)} |" for c, a in test["per_class_acc"].items()),
        "",
        "## Test-time augmentation and speed",
        f"Packaged with `{model['tta']}`; `tta=` of fer.predict, fer.serve and fer.evaluate picks another. Accuracy in float32;",
        f"milliseconds to prepare and classify one face on {latency['hardware']}:",
        "",
        "| tta | views a face | PrivateTest | PublicTest | " + " | ".join(f"one face, {p} (ms)" for p in precisions) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in precisions) + " |",
        *(
            f"| `{mode}` | {VIEWS_PER_FACE[mode]} | {percent(acc['test'])} | {percent(acc['val'])} | "
            + " | ".join(str(latency["one_face"][p][mode]) for p in precisions)
            + " |"
            for mode, acc in card["metrics"]["acc_by_tta"].items()
        ),
        "",
        "## Known limits",
        *(f"- {line}" for line in card["limits"]),
        "",
        f"Released {card['released']['date']} at commit `{card['released']['commit']}`.",
    ]
    return "\n".join(lines) + "\n"


def python_command(command: str | None) -> str | None:
    """``train.py experiment=X`` (as run.json records it) -> ``python -m fer.train experiment=X``."""
    if not command:
        return command
    script, _, rest = command.partition(" ")
    return f"python -m fer.{script.removesuffix('.py')} {rest}".strip()


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it (``experiments/runs/...``), else absolute."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path(os.getcwd()).resolve()))
    except ValueError:
        return str(resolved)


main = entry_point("release", "release", release)


if __name__ == "__main__":
    main()
