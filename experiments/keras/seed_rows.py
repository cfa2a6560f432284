"""The seed's VGG rows in Keras, on the very images and split our runs use: is a gap ours or the row's?

The seed project trained in Keras. Where our PyTorch runs miss one of its rows (the BN row stalls
at the majority class for 15 epochs), this trains the same row with Keras' own layers, optimiser
and ``ImageDataGenerator``, so the difference between the two frameworks can be seen directly.
Keras and our stack live in separate environments, hence three steps:

    # 1. project venv: the kaggle split exactly as data.split=kaggle makes it (FER2013_ROOT)
    python experiments/keras/seed_rows.py export /tmp/fer_kaggle.npz
    # 2. a Keras venv: python -m venv kvenv && kvenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0 scipy pillow
    kvenv/bin/python experiments/keras/seed_rows.py train /tmp/fer_kaggle.npz --row vgg3_aug_dropout_bn \
        --epochs 10 --out experiments/keras/runs/NAME
    # 3. project venv: its curves beside a PyTorch run's
    python experiments/keras/seed_rows.py plot experiments/keras/runs/NAME experiments/runs/seed_full/vgg3_aug_dropout_bn

The VGG-n rows mirror ``fer.models.vgg.SeedVGG`` layer for layer (conv-ReLU-BN pairs, he_uniform,
zero biases, max-pool, dropout after each block and after the dense 128). Training is the seed's:
SGD lr 0.001 (``--momentum`` 0 unless given), batch 16, inputs scaled by 1/255, and for the
augmented rows ImageDataGenerator's 10% shifts (sub-pixel, edge pixels repeated) and flips.

The VGG16 row (``export --vgg16``, then ``train --row vgg16_transfer``) trains in Keras what our
``experiment=seed/vgg16_transfer`` trains: the export computes, with our code and the ImageNet
weights of FER_VGG16_WEIGHTS, each image's output of the eleven frozen convolutions, and Keras
trains block5_conv2/3 (from the same weights) and the head with Adam's defaults, batch 16.
``--head-init`` picks Keras' initialisers for the head or our PyTorch head's.

Either way the checkpoint is the epoch with the best held-out accuracy (``best_epoch`` counts from
0, as our checkpoint names do), scored once on the test folder; ``summary.json`` and
``history.csv`` go to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS = {
    # row: (blocks, batch norm, dropout mode, augmentation), as conf/experiment/seed/*.yaml
    "vgg1_baseline": (1, False, "none", False),
    "vgg2_baseline": (2, False, "none", False),
    "vgg3_baseline": (3, False, "none", False),
    "vgg3_aug_dropout": (3, False, "fixed", True),
    "vgg3_aug_dropout_bn": (3, True, "increasing", True),
}
FILTERS = (32, 64, 128)
SPLITS = ("train", "val", "test")
SCRIPT_DIR = Path(__file__).resolve().parent


def export(out: Path, vgg16: bool) -> None:
    """Write the kaggle split's uint8 images and labels, with the commit they came from; with
    ``vgg16``, also every image's output of the VGG16 row's frozen convolutions (ImageNet weights
    from FER_VGG16_WEIGHTS, fp32) and the weights of the two it trains."""
    from fer.data.sources import load_fer2013
    from fer.data.splits import make_splits
    from fer.run.rundir import git_commit

    data = load_fer2013(_environ("FER2013_ROOT", "the FER-2013 zip, folder or csv"), os.environ.get("FER_CACHE_DIR", ".cache/fer"))
    index = make_splits(data, "kaggle", val_fraction=0.1, seed=0)
    arrays = {f"{split}_{kind}": getattr(data, kind)[i] for split, i in index.items() for kind in ("images", "labels")}
    if vgg16:
        arrays.update(vgg16_prefix(arrays, _environ("FER_VGG16_WEIGHTS", "a torchvision VGG16 state_dict")))
    np.savez(out, commit=np.array(git_commit()), **arrays)
    print(", ".join(f"{split} {len(i)}" for split, i in index.items()), "->", out)


def vgg16_prefix(arrays: dict[str, np.ndarray], weights: str) -> dict[str, np.ndarray]:
    """The frozen prefix's output per image, NHWC as Keras wants it, and the trainable convs' weights."""
    import torch

    from fer.models import build_model

    net = build_model("vgg16", weights_path=weights, trainable_convs=2).eval()
    net.load_pretrained()
    prefix = net.features[: net.split]
    out = {}
    with torch.inference_mode():
        for split in ("train", "val", "test"):
            images = torch.from_numpy(arrays[f"{split}_images"]).unsqueeze(1).expand(-1, 3, -1, -1)
            batches = [prefix((b.float() / 255 - net.mean) / net.std) for b in images.split(512)]
            out[f"{split}_features"] = torch.cat(batches).permute(0, 2, 3, 1).numpy()
    convs = [m for m in net.features[net.split :] if isinstance(m, torch.nn.Conv2d)]
    for i, conv in enumerate(convs):
        out[f"conv{i}_kernel"] = conv.weight.detach().permute(2, 3, 1, 0).numpy()  # [kh, kw, in, out]
        out[f"conv{i}_bias"] = conv.bias.detach().numpy()
    return out


def dropout_rates(mode: str, blocks: int) -> list[float]:
    """After each block, then after the dense layer (SeedVGG._rate)."""
    if mode == "none":
        return [0.0] * (blocks + 1)
    return [0.2] * (blocks + 1) if mode == "fixed" else [round(0.2 + 0.1 * i, 2) for i in range(blocks + 1)]


def build_vgg16_top(keras, data: dict[str, np.ndarray], head_init: str):
    """The VGG16 row above its frozen convolutions: block5_conv2/3 (ImageNet weights), pool, and
    the head Flatten-256-Dropout0.2-128-Dropout0.2-7, initialised as Keras does (``keras``:
    glorot_uniform, zero biases) or as our PyTorch head is (``torch``: nn.Linear's default,
    U(+-1/sqrt(fan_in)) for weights and biases)."""
    layers = keras.layers

    def dense(width: int, fan_in: int, **kwargs):
        if head_init == "keras":
            return layers.Dense(width, **kwargs)
        bound = 1 / np.sqrt(fan_in)
        return layers.Dense(
            width, kernel_initializer=keras.initializers.VarianceScaling(1 / 3, "fan_in", "uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound), **kwargs,
        )

    convs = [layers.Conv2D(512, 3, padding="same", activation="relu") for _ in range(2)]
    model = keras.Sequential([
        keras.Input(data["train_features"].shape[1:]), *convs, layers.MaxPooling2D(2), layers.Flatten(),
        dense(256, 512, activation="relu"), layers.Dropout(0.2),
        dense(128, 256, activation="relu"), layers.Dropout(0.2), dense(7, 128, activation="softmax"),
    ])
    for i, conv in enumerate(convs):
        conv.set_weights([data[f"conv{i}_kernel"], data[f"conv{i}_bias"]])
    return model


def build(keras, row: str):
    blocks, batch_norm, dropout, _ = ROWS[row]
    layers = keras.layers
    rates = dropout_rates(dropout, blocks)
    model = keras.Sequential([keras.Input((48, 48, 1))])
    for i in range(blocks):
        for _ in range(2):
            model.add(layers.Conv2D(FILTERS[i], 3, padding="same", activation="relu", kernel_initializer="he_uniform"))
            if batch_norm:
                model.add(layers.BatchNormalization())
        model.add(layers.MaxPooling2D(2))
        if rates[i]:
            model.add(layers.Dropout(rates[i]))
    model.add(layers.Flatten())
    model.add(layers.Dense(128, activation="relu", kernel_initializer="he_uniform"))
    if rates[blocks]:
        model.add(layers.Dropout(rates[blocks]))
    model.add(layers.Dense(7, activation="softmax"))
    return model


def train(args: argparse.Namespace) -> None:
    """Fit one row, keep the weights of the best held-out epoch, score them on the test folder."""
    import tensorflow as tf
    import tf_keras as keras
    from tf_keras.preprocessing.image import ImageDataGenerator

    commit = _commit()  # at the start: the code this run trains with, not the tree at its end
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    with np.load(args.data) as split:
        data = {key: split[key] for key in split.files}
    y = {s: keras.utils.to_categorical(data[f"{s}_labels"], 7) for s in SPLITS}
    if args.row == "vgg16_transfer":
        if "train_features" not in data:
            sys.exit(f"{args.data} holds no VGG16 features: write it with `export {args.data} --vgg16` first.")
        x = {s: data[f"{s}_features"] for s in SPLITS}
        model = build_vgg16_top(keras, data, args.head_init)
        optimizer = keras.optimizers.Adam()  # Keras' defaults: lr 0.001, eps 1e-7
        train_input = {"x": x["train"], "y": y["train"], "batch_size": 16, "shuffle": True}
    else:
        images = {s: data[f"{s}_images"][..., None].astype("float32") for s in SPLITS}
        x = {s: images[s] / 255 for s in ("val", "test")}
        shifts_and_flips = {"width_shift_range": 0.1, "height_shift_range": 0.1, "horizontal_flip": True}
        generator = ImageDataGenerator(rescale=1 / 255, **(shifts_and_flips if ROWS[args.row][3] else {}))
        model = build(keras, args.row)
        optimizer = keras.optimizers.SGD(learning_rate=0.001, momentum=args.momentum)
        train_input = {"x": generator.flow(images["train"], y["train"], batch_size=16, shuffle=True, seed=args.seed)}
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    args.out.mkdir(parents=True, exist_ok=True)

    class BestWeights(keras.callbacks.Callback):
        """Keeps the weights of the epoch with the best held-out accuracy (the seed's checkpoint rule)."""

        accuracy, epoch, weights = -1.0, -1, None

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs["val_accuracy"] > self.accuracy:
                self.accuracy, self.epoch, self.weights = float(logs["val_accuracy"]), epoch, self.model.get_weights()

    best = BestWeights()
    start = time.time()
    model.fit(
        **train_input, epochs=args.epochs, validation_data=(x["val"], y["val"]), verbose=2,
        callbacks=[keras.callbacks.CSVLogger(str(args.out / "history.csv")), best],
    )
    fit_s = time.time() - start
    model.set_weights(best.weights)
    test_loss, test_acc = model.evaluate(x["test"], y["test"], batch_size=256, verbose=0)
    summary = {
        "row": args.row, "momentum": args.momentum, "head_init": args.head_init, "seed": args.seed,
        "epochs": args.epochs, "best_epoch": best.epoch, "val_acc": best.accuracy,
        "test_acc": test_acc, "test_loss": test_loss, "test_images": len(x["test"]), "fit_s": round(fit_s, 1),
        "data_commit": str(data["commit"]), "commit": commit, "hardware": f"{_cpu()}, {args.threads} threads",
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__, "tf_keras": keras.__version__},
        "command": " ".join(["python", *sys.argv]),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


def plot(keras_run: Path, torch_runs: list[Path], out: Path | None) -> None:
    """Held-out accuracy and train loss per epoch: the Keras run against PyTorch runs of the row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = list(csv.DictReader((keras_run / "history.csv").open()))
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [int(r["epoch"]) + 1 for r in history]
    label = f"Keras ({keras_run.name})"
    acc_ax.plot(epochs, [float(r["val_accuracy"]) for r in history], "o-", label=label)
    loss_ax.plot(epochs, [float(r["loss"]) for r in history], "o-", label=label)
    for run in torch_runs:
        rows = list(csv.DictReader((run / "csv" / "metrics.csv").open()))
        loss = [(int(r["epoch"]) + 1, float(r["train/loss"])) for r in rows if r.get("train/loss")]
        last = loss[-1][0]  # after it: the best checkpoint's re-validation, not an epoch
        val = [
            (int(r["epoch"]) + 1, float(r["val/acc"]))
            for r in rows if r.get("val/acc") and r.get("step") and int(r["epoch"]) + 1 <= last
        ]
        name = f"PyTorch ({run.parent.name}/{run.name})"
        acc_ax.plot(*zip(*val[: len(epochs)]), "s--", label=name)
        loss_ax.plot(*zip(*loss[: len(epochs)]), "s--", label=name)
    acc_ax.set(xlabel="epoch", ylabel="held-out accuracy", title="held-out 10% of Training")
    loss_ax.set(xlabel="epoch", ylabel="train loss", title="training loss (train-mode batches)")
    acc_ax.legend(fontsize=7)
    fig.tight_layout()
    target = out or keras_run / "curves.png"
    fig.savefig(target, dpi=110)
    print(target)


def _environ(name: str, what: str) -> str:
    if not os.environ.get(name):
        sys.exit(f"Set {name} to {what}.")
    return os.environ[name]


def _commit() -> str:
    """As fer.run.rundir.git_commit, which the Keras venv cannot import (it has no torch)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, cwd=SCRIPT_DIR).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return "CPU " + line.split(":", 1)[1].strip()
    return platform.processor() or "CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    dump = sub.add_parser("export")
    dump.add_argument("out", type=Path)
    dump.add_argument("--vgg16", action="store_true", help="add the VGG16 row's frozen features")
    fit = sub.add_parser("train")
    fit.add_argument("data", type=Path)
    fit.add_argument("--row", choices=[*sorted(ROWS), "vgg16_transfer"], required=True)
    fit.add_argument("--epochs", type=int, default=50)
    fit.add_argument("--momentum", type=float, default=0.0)
    fit.add_argument("--head-init", choices=("keras", "torch"), default="keras", help="vgg16_transfer's head")
    fit.add_argument("--seed", type=int, default=42)
    fit.add_argument("--threads", type=int, default=1)
    fit.add_argument("--out", type=Path, required=True)
    show = sub.add_parser("plot")
    show.add_argument("keras_run", type=Path)
    show.add_argument("torch_runs", type=Path, nargs="*")
    show.add_argument("-o", "--out", type=Path)
    args = parser.parse_args()
    if args.step == "export":
        export(args.out, args.vgg16)
    elif args.step == "train":
        train(args)
    else:
        plot(args.keras_run, args.torch_runs, args.out)


if __name__ == "__main__":
    main()
