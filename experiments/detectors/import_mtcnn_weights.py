"""Build src/fer/vision/mtcnn.pt, the MTCNN weights fer's face detector uses, from the wheel of
facenet-pytorch 2.6.0 (MIT licence; its P-, R- and O-Net weights are a conversion of the original
MTCNN model of Zhang et al. 2016). Only the three weight files are taken from the wheel, no code:

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/wheels
    python experiments/detectors/import_mtcnn_weights.py /tmp/wheels/facenet_pytorch-2.6.0-py3-none-any.whl

prints the SHA-256 that fer.vision.mtcnn checks on load.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import torch

NETS = ("pnet", "rnet", "onet")
OUT = Path(__file__).resolve().parents[2] / "src" / "fer" / "vision" / "mtcnn.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", type=Path, help="facenet_pytorch-2.6.0-py3-none-any.whl")
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as wheel:
        weights = {
            net: {k: v.contiguous() for k, v in torch.load(io.BytesIO(wheel.read(f"facenet_pytorch/data/{net}.pt")), weights_only=True).items()}
            for net in NETS
        }
    torch.save(weights, OUT)
    print(OUT, OUT.stat().st_size, "bytes, sha256", hashlib.sha256(OUT.read_bytes()).hexdigest())


if __name__ == "__main__":
    main()
