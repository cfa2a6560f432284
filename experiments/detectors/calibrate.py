"""The two face detectors on FER-2013's own faces: how many each finds, and where MTCNN's box sits
against the cascade's, which gives fer.vision.faces' MTCNN_SIDE and MTCNN_SHIFT.

Each of ``--count`` training faces (a fixed random sample; the training split only, so nothing here
is chosen on a test split) is enlarged 3x (bilinear, 144 pixels) and padded by half its side on each
side with its own border pixels (288x288), so that the whole face is in view with background
around it, and searched by both detectors at fer.predict's settings (min_face 48; the cascade at
scale 1.1 and 5 neighbours). The report gives, for each detector, the share of faces with at least
one and with exactly one box, and where its box sits relative to the FER-2013 crop (centre and
side as fractions of the crop); then, over the faces both found exactly once, the ratio of the
cascade's side to MTCNN's sqrt(w * h) and the shift of the centres as fractions of the cascade's
side (medians, with the interquartile range). Both run on one core (one OpenCV and one torch thread).

    FER2013_ROOT=/path/to/fer2013.zip python experiments/detectors/calibrate.py --count 2000 \\
        --out experiments/detectors/detectors.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fer.data.sources import load_fer2013
from fer.run.hardware import describe
from fer.vision.faces import FaceDetector, detection_threads
from fer.vision.mtcnn import MTCNN

ENLARGE = 3
SEED = 0


def quartiles(values: np.ndarray) -> dict[str, float]:
    return {name: round(float(np.percentile(values, q)), 4) for name, q in (("q25", 25), ("median", 50), ("q75", 75))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = load_fer2013(os.environ["FER2013_ROOT"], os.environ.get("FER_CACHE_DIR"))
    train = np.flatnonzero(data.usage == "Training")
    picked = np.sort(np.random.default_rng(SEED).choice(train, size=args.count, replace=False))
    side = 48 * ENLARGE
    pad = side // 2
    haar = FaceDetector(min_face=48, method="haar")
    mtcnn = MTCNN(min_face=48)
    torch.set_num_threads(1)
    found: dict[str, list[np.ndarray]] = {"haar": [], "mtcnn": []}
    seconds = {"haar": 0.0, "mtcnn": 0.0}
    with detection_threads(1):
        for index in picked:
            face = cv2.resize(data.images[index], (side, side), interpolation=cv2.INTER_LINEAR)
            canvas = cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            start = time.perf_counter()
            boxes = [[b.x, b.y, b.x + b.w, b.y + b.h] for b in haar.detect(canvas)]
            seconds["haar"] += time.perf_counter() - start
            found["haar"].append(np.array(boxes, dtype=np.float64).reshape(-1, 4) - pad)
            start = time.perf_counter()
            found["mtcnn"].append(mtcnn.find(canvas)[0] - pad)
            seconds["mtcnn"] += time.perf_counter() - start
    report: dict = {
        "command": "python experiments/detectors/calibrate.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "machine": describe(),
        "faces": args.count,
        "canvas": f"{side + 2 * pad}x{side + 2 * pad}, face {side}x{side} in the middle",
        "detectors": {},
    }
    for method, boxes in found.items():
        single = np.array([b[0] for b in boxes if len(b) == 1])
        centre = (single[:, :2] + single[:, 2:]) / 2.0 / side
        size = (single[:, 2:] - single[:, :2]) / side
        report["detectors"][method] = {
            "at_least_one": round(float(np.mean([len(b) > 0 for b in boxes])), 4),
            "exactly_one": round(float(np.mean([len(b) == 1 for b in boxes])), 4),
            "ms_per_canvas_one_core": round(1000.0 * seconds[method] / args.count, 2),
            "box_in_crop_units": {
                "centre_x": quartiles(centre[:, 0]), "centre_y": quartiles(centre[:, 1]),
                "width": quartiles(size[:, 0]), "height": quartiles(size[:, 1]),
            },
        }
    both = [(h[0], m[0]) for h, m in zip(found["haar"], found["mtcnn"]) if len(h) == 1 and len(m) == 1]
    h, m = np.array([b[0] for b in both]), np.array([b[1] for b in both])
    haar_side = h[:, 2] - h[:, 0]
    mtcnn_side = np.sqrt((m[:, 2] - m[:, 0]) * (m[:, 3] - m[:, 1]))
    shift = ((h[:, :2] + h[:, 2:]) - (m[:, :2] + m[:, 2:])) / 2.0 / haar_side[:, None]
    report["mtcnn_to_haar"] = {
        "faces": len(both),
        "side_ratio (haar side / sqrt(mtcnn w * h))": quartiles(haar_side / mtcnn_side),
        "shift_x (of haar side)": quartiles(shift[:, 0]),
        "shift_y (of haar side)": quartiles(shift[:, 1]),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
