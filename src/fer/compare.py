"""Is B better than A, or is the gap inside the noise? ``python -m fer.compare A B [--split test]``.

A and B are run directories (training, evaluation or ensemble runs, with their
``predictions.npz``), ``predictions.npz`` files, or checkpoints (scored here with
``fer.evaluate``'s code on ``--split`` of ``--data-root``). Both must be scored on the same images;
the comparison is paired, image by image:

- accuracy of each, and B - A with a paired-bootstrap 95% interval and the exact McNemar test;
- macro-F1 of each, and B - A with a paired-bootstrap interval;
- per class, the accuracy (recall) difference with its paired-bootstrap interval;
- one plain sentence, e.g. "B beats A by 1.2 points, 95% CI 0.4 to 2.0, McNemar p = 0.003".

``-o FILE.json`` keeps everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_module
from omegaconf import open_dict

from fer.classes import CLASSES
from fer.evaluate import evaluate
from fer.scoring.predictions import PREDICTIONS_FILE, SplitPredictions, load_predictions
from fer.scoring.stats import LEVEL, RESAMPLES, SEED, PairedDifference, bootstrap_intervals, macro_f1, paired_difference, paired_f1_difference

SPLIT_NAMES = {"val": "PublicTest (val)", "test": "PrivateTest (test)", "train": "Training (train)"}


def load_side(source: str | os.PathLike, split: str, data_root: str | None = None) -> SplitPredictions:
    """The ``split`` predictions of a run directory, a ``predictions.npz`` or a checkpoint."""
    path = Path(source)
    if path.suffix == ".ckpt":
        return _score_checkpoint(path, split, data_root)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: pass a run directory, its {PREDICTIONS_FILE} or a .ckpt checkpoint.")
    splits, _ = load_predictions(path)
    if split not in splits:
        raise ValueError(f"{path} holds predictions for {', '.join(sorted(splits)) or 'no split'}, not split={split!r}: pass --split with one of those.")
    return splits[split]


def _score_checkpoint(path: Path, split: str, data_root: str | None) -> SplitPredictions:
    """Evaluate a checkpoint as ``python -m fer.evaluate`` would, in a throwaway run directory."""
    overrides = [f"ckpt_path={path}", f"split={split}"] + ([f"data.root={data_root}"] if data_root else [])
    with initialize_config_module(config_module="fer.conf", version_base="1.3"):
        cfg = compose(config_name="eval", overrides=overrides)
    with tempfile.TemporaryDirectory(prefix="fer_compare_") as folder:
        with open_dict(cfg):
            cfg.paths.output_dir = folder
        evaluate(cfg)
        splits, _ = load_predictions(folder)
    return splits[split]


def compare(
    a: SplitPredictions, b: SplitPredictions, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> dict[str, Any]:
    """The paired comparison of B against A (see the module docstring), as plain numbers."""
    b = b.aligned_to(a.ids)
    if not np.array_equal(a.labels, b.labels):
        differ = int((a.labels != b.labels).sum())
        raise ValueError(f"The two runs label {differ} of the same images differently: they were not scored on the same data.")
    correct_a, correct_b = a.predicted == a.labels, b.predicted == b.labels
    accuracy = paired_difference(correct_a, correct_b, resamples, seed, level)
    f1 = paired_f1_difference(a.labels, a.predicted, b.predicted, resamples, seed, level)
    per_class = {}
    for index, name in enumerate(CLASSES):
        mask = a.labels == index
        if mask.any():
            difference = paired_difference(correct_a[mask], correct_b[mask], resamples, seed, level)
            per_class[name] = {"images": int(mask.sum()), "acc_a": difference.acc_a, "acc_b": difference.acc_b,
                               "difference": difference.difference, "ci95": list(difference.interval)}
    return {
        "images": accuracy.images,
        "a": {"acc": accuracy.acc_a, "acc_ci95": bootstrap_intervals(a.labels, a.predicted, resamples, seed, level)["acc"],
              "f1_macro": macro_f1(a.labels, a.predicted), "tta": a.tta},
        "b": {"acc": accuracy.acc_b, "acc_ci95": bootstrap_intervals(b.labels, b.predicted, resamples, seed, level)["acc"],
              "f1_macro": macro_f1(b.labels, b.predicted), "tta": b.tta},
        "acc_difference": accuracy.difference,
        "acc_difference_ci95": list(accuracy.interval),
        "mcnemar": {"only_a_right": accuracy.only_a_right, "only_b_right": accuracy.only_b_right, "p_value": accuracy.p_value},
        "f1_macro_difference": f1["difference"],
        "f1_macro_difference_ci95": f1["ci95"],
        "per_class": per_class,
        "bootstrap": {"resamples": resamples, "seed": seed, "level": level},
        "sentence": sentence(accuracy),
    }


def sentence(result: PairedDifference, a: str = "A", b: str = "B") -> str:
    """"B beats A by 1.2 points, 95% CI 0.4 to 2.0, McNemar p = 0.003", and when the interval
    holds zero, that the difference is within the noise."""
    points = 100 * result.difference
    lo, hi = (100 * v for v in result.interval)
    p = _p_text(result.p_value)
    if result.only_a_right == result.only_b_right:
        head = f"{b} and {a} score the same ({100 * result.acc_a:.2f}%): 95% CI of B - A {lo:.1f} to {hi:.1f} points, McNemar {p}"
    elif points > 0:
        head = f"{b} beats {a} by {points:.1f} points, 95% CI {lo:.1f} to {hi:.1f}, McNemar {p}"
    else:
        head = f"{a} beats {b} by {-points:.1f} points, 95% CI {-hi:.1f} to {-lo:.1f}, McNemar {p}"
    if lo <= 0 <= hi:
        head += " (the interval holds 0: no difference this test set can show)"
    return head + "."


def _interval_text(pair: list[float]) -> str:
    return f"{100 * pair[0]:.1f} to {100 * pair[1]:.1f}"


def _p_text(p: float) -> str:
    return f"p = {p:.2g}" if p >= 1e-4 else "p < 0.0001"


def render(result: dict[str, Any], name_a: str, name_b: str, split: str) -> str:
    """The comparison as a few lines of text for the terminal."""
    ci = _interval_text
    lines = [f"{SPLIT_NAMES.get(split, split)}, {result['images']:,} images, the same in both."]
    for side, name in (("a", name_a), ("b", name_b)):
        scores = result[side]
        lines.append(
            f"{side.upper()} = {name}: accuracy {100 * scores['acc']:.2f}% (95% CI {ci(scores['acc_ci95'])}), "
            f"macro-F1 {100 * scores['f1_macro']:.2f}%, tta={scores['tta']}"
        )
    lines += [
        f"Images only A gets right: {result['mcnemar']['only_a_right']}; only B: {result['mcnemar']['only_b_right']}.",
        f"Macro-F1 B - A: {100 * result['f1_macro_difference']:+.2f} points (95% CI {ci(result['f1_macro_difference_ci95'])}).",
        "Per class, accuracy B - A in points (95% CI):",
    ]
    for name, row in result["per_class"].items():
        lines.append(f"  {name:<9} {100 * row['difference']:+6.2f}  ({ci(row['ci95'])}; {row['images']} images)")
    lines.append(result["sentence"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="run directory, predictions.npz or .ckpt (the reference)")
    parser.add_argument("b", help="run directory, predictions.npz or .ckpt (the challenger)")
    parser.add_argument("--split", default="test", help="val (PublicTest), test (PrivateTest) or train; default test")
    parser.add_argument("--data-root", help="the dataset, to score checkpoints (default: FER2013_ROOT or ./data)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"bootstrap seed (default {SEED})")
    parser.add_argument("-o", "--output", type=Path, help="also write the comparison as JSON here")
    args = parser.parse_args(argv)
    if args.resamples < 100:
        parser.error(f"--resamples={args.resamples}: use at least 100 (2000 gives intervals stable to about 0.1 point)")
    try:
        a, b = (load_side(side, args.split, args.data_root) for side in (args.a, args.b))
        result = compare(a, b, args.resamples, args.seed)
    except (OSError, ValueError) as error:
        print(f"fer.compare: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(render(result, args.a, args.b, args.split))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"a_source": args.a, "b_source": args.b, "split": args.split, **result}, indent=2) + "\n")
        print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
