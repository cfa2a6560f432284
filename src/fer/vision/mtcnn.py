"""MTCNN face detection on grayscale images: three small CNNs in a cascade (Zhang et al. 2016,
"Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks").

- P-Net, fully convolutional, slides a 12-pixel window over an image pyramid and proposes boxes;
- R-Net rescores each proposal from a 24x24 crop and refines its box;
- O-Net does the same from a 48x48 crop.

Between stages, overlapping boxes are merged by non-maximum suppression and each box is made square.

Why fer has it beside the Haar cascade: it finds more faces (90% of 2,000 FER-2013 training faces
against the cascade's 74%, ``experiments/detectors/``) and fewer false ones, and on a 640x480 photo
at ``min_face=48`` its search takes about half the cascade's time on one core.

The weights (``mtcnn.pt``, 2 MB, SHA-256 checked on load) are the authors' model as converted by
facenet-pytorch 2.6.0 (MIT licence, notice in ``MTCNN_LICENSE``); only the weight files were taken
from its wheel (``experiments/detectors/import_mtcnn_weights.py``). The networks were trained on
RGB. fer's faces are gray, and a gray image fed as RGB has three equal channels, so each first
convolution is summed over its input channels: the same outputs, a third of that layer's work.
"""

from __future__ import annotations

import hashlib
import math
from concurrent.futures import Executor
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torchvision.ops import nms

from fer.vision.images import resize

WEIGHTS = Path(__file__).with_name("mtcnn.pt")
WEIGHTS_SHA256 = "67bbb01021b97a47af0602f1d2e69d1f95b74fef91be9befab4f85c869804d4f"
PNET_WINDOW = 12  # P-Net's input window, pixels
PNET_STRIDE = 2  # P-Net's output step over its input, pixels
PYRAMID_FACTOR = 0.709  # the paper's step between pyramid levels (each level has half the pixels)
# the lowest face probability each stage keeps (the values MTCNN is used with)
THRESHOLDS = (0.6, 0.7, 0.7)
# overlap (intersection over union) above which NMS keeps only the better box: within one pyramid
# level, then over all levels and after R-Net; after O-Net, intersection over the smaller box,
# which also drops a box nested inside a better one
NMS_LEVEL, NMS_MERGED, NMS_FINAL = 0.5, 0.7, 0.7


def _conv(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel), nn.PReLU(c_out)]


class PNet(nn.Module):
    """Proposal network: per 12x12 window (stride 2), the face probability and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 10, 3)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(10, 16, 3)
        self.conv3, self.prelu3 = _conv(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(_channels_last(self.prelu1(self.conv1(x))))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement network: a 24x24 crop's face probability and box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 28, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(28, 48, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv(48, 64, 2)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(_channels_last(self.prelu1(self.conv1(x))))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(_flatten(x)))
        return self.dense5_1(x).softmax(1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network: a 48x48 crop's face probability and box offsets (its landmark head is unused)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 32, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = _conv(32, 64, 3)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = _conv(64, 64, 3)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = _conv(64, 128, 2)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(_channels_last(self.prelu1(self.conv1(x))))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten(self.prelu4(self.conv4(x)))))
        return self.dense6_1(x).softmax(1)[:, 1], self.dense6_2(x)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """The first convolution's output in channels-last for the layers after it. The memory format
    is chosen per layer because this torch's CPU kernels differ by up to 10x between the two at
    these sizes (one thread, a 160x120 P-Net level): a convolution from one gray channel takes
    0.2 ms in NCHW and 2.0 ms in channels-last, max-pooling 1.9 ms in NCHW and 0.7 ms in
    channels-last, and the later convolutions are faster in channels-last too."""
    return x.contiguous(memory_format=torch.channels_last)


def _flatten(x: torch.Tensor) -> torch.Tensor:
    """Flatten as the converted weights expect: width, then height, then channels (Caffe's
    column-major layout, which the first dense layer's weights were converted with)."""
    return x.permute(0, 3, 2, 1).reshape(len(x), -1)


def load_weights() -> dict[str, dict[str, torch.Tensor]]:
    """The three networks' state dicts, after checking the file's SHA-256."""
    if not WEIGHTS.is_file():
        raise RuntimeError(f"MTCNN's weights {WEIGHTS} are missing: reinstall fer (they are package data).")
    blob = WEIGHTS.read_bytes()
    if hashlib.sha256(blob).hexdigest() != WEIGHTS_SHA256:
        raise RuntimeError(
            f"MTCNN's weights {WEIGHTS} are damaged (SHA-256 differs from {WEIGHTS_SHA256}): reinstall fer, "
            "or rebuild them with experiments/detectors/import_mtcnn_weights.py."
        )
    return torch.load(WEIGHTS, weights_only=True)


def _gray_net(net: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """``net`` with ``state``, its first convolution taking one gray channel instead of three equal ones."""
    net.load_state_dict(state)
    first = net.conv1
    gray = nn.Conv2d(1, first.out_channels, first.kernel_size)
    with torch.no_grad():
        gray.weight.copy_(first.weight.sum(1, keepdim=True))
        gray.bias.copy_(first.bias)
    net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
    net.conv1 = gray.eval().requires_grad_(False)  # NCHW, as its input (:func:`_channels_last`)
    return net


class MTCNN:
    """Faces in grayscale images: ``find`` returns boxes (x1, y1, x2, y2) and face probabilities.

    Args:
        min_face: smallest face side to find, in pixels (the pyramid's largest level maps it to P-Net's 12-pixel window).
    """

    def __init__(self, min_face: int = 48) -> None:
        if min_face < PNET_WINDOW:
            raise ValueError(f"min_face={min_face} must be at least P-Net's window ({PNET_WINDOW} pixels).")
        self.min_face = min_face
        weights = load_weights()
        self.pnet = _gray_net(PNet(), weights["pnet"])
        self.rnet = _gray_net(RNet(), weights["rnet"])
        self.onet = _gray_net(ONet(), weights["onet"])

    def scales(self, height: int, width: int) -> list[float]:
        """The pyramid: level ``k`` scales the image by ``(12 / min_face) * 0.709**k`` while its shorter side holds a window."""
        scales, scale = [], PNET_WINDOW / self.min_face
        while min(height, width) * scale >= PNET_WINDOW:
            scales.append(scale)
            scale *= PYRAMID_FACTOR
        return scales

    @torch.no_grad()
    def find(self, gray: np.ndarray, pool: Executor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(boxes [N, 4] as float x1, y1, x2, y2 in pixels of ``gray``, probabilities [N]), best first.

        With ``pool`` (a thread that is otherwise idle) P-Net's largest level, about half its work,
        runs there while this thread runs the others: the same boxes, sooner."""
        boxes, scores = self._propose(gray, pool)
        for net, size, threshold, overlap in ((self.rnet, 24, THRESHOLDS[1], NMS_MERGED), (self.onet, 48, THRESHOLDS[2], None)):
            if not len(boxes):
                break
            boxes = _square(boxes)
            probability, offsets = (t.numpy() for t in net(_crops(gray, boxes, size)))
            keep = probability >= threshold
            boxes, scores = _regress(boxes[keep], offsets[keep]), probability[keep]
            keep = _nms(boxes, scores, overlap) if overlap is not None else _nms_min(boxes, scores, NMS_FINAL)
            boxes, scores = boxes[keep], scores[keep]
        order = np.argsort(-scores, kind="stable")
        return boxes[order].astype(np.float64), scores[order].astype(np.float64)

    def _propose(self, gray: np.ndarray, pool: Executor | None) -> tuple[np.ndarray, np.ndarray]:
        """P-Net's boxes over the pyramid, regressed and merged. Each level after the first is shrunk
        from the first (area averaging), which costs a tenth of shrinking the full image again."""
        height, width = gray.shape
        scales = self.scales(height, width)
        if not scales:
            return np.zeros((0, 4)), np.zeros(0)
        first = _shrink(gray, scales[0])
        largest = pool.submit(self._level, first, scales[0]) if pool is not None else None
        found = [] if largest is not None else [self._level(first, scales[0])]
        found += [self._level(_shrink(first, scale, (width, height)), scale) for scale in scales[1:]]
        if largest is not None:
            found.append(largest.result())
        boxes, scores = np.concatenate([b for b, _ in found]), np.concatenate([s for _, s in found])
        keep = _nms(boxes, scores, NMS_MERGED)
        return boxes[keep], scores[keep]

    @torch.no_grad()
    def _level(self, level: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """P-Net's regressed boxes (in pixels of the original image) and scores on one pyramid level."""
        probability, offsets = (t[0].numpy() for t in self.pnet(_tensor(level[None])))
        rows, cols = np.nonzero(probability >= THRESHOLDS[0])
        # each output cell is a 12-pixel window at (stride * col, stride * row) of the level
        x1, y1 = cols * PNET_STRIDE, rows * PNET_STRIDE
        windows = np.stack([x1, y1, x1 + PNET_WINDOW, y1 + PNET_WINDOW], 1).astype(np.float64) / scale
        scores = probability[rows, cols]
        keep = _nms(windows, scores, NMS_LEVEL)
        return _regress(windows[keep], offsets[:, rows[keep], cols[keep]].T), scores[keep]


def _shrink(image: np.ndarray, scale: float, full: tuple[int, int] | None = None) -> np.ndarray:
    """The pyramid level of ``scale``: the original's (width, height) ``full`` (default: ``image``'s)
    times ``scale``, rounded up as in the paper's code, by area averaging from ``image``."""
    width, height = full or (image.shape[1], image.shape[0])
    return cv2.resize(image, (math.ceil(width * scale), math.ceil(height * scale)), interpolation=cv2.INTER_AREA)


def _tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W] -> float [N, 1, H, W], scaled as the networks were trained ((x - 127.5) / 128)."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().sub_(127.5).mul_(1.0 / 128.0)[:, None]


def _crops(gray: np.ndarray, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Each box cut out of ``gray`` (black outside it) and resized to ``size`` x ``size`` by fer's one resampling rule."""
    height, width = gray.shape
    crops = np.empty((len(boxes), size, size), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.rint(boxes).astype(int)):
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        patch = np.zeros((y2 - y1, x2 - x1), np.uint8)
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if cx2 > cx1 and cy2 > cy1:
            patch[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1] = gray[cy1:cy2, cx1:cx2]
        crops[i] = resize(patch, size)
    return _tensor(crops)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square of its longer side about its centre."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    half = (boxes[:, 2:] - boxes[:, :2]).max(1, keepdims=True) / 2.0
    return np.concatenate([centre - half, centre + half], 1)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each box's edges by the network's offsets, which are fractions of the box's width and height."""
    sides = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
    return boxes + offsets.astype(np.float64) * sides


def _nms(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> np.ndarray:
    """Indices of the boxes NMS keeps at intersection over union ``overlap``, best first."""
    return nms(torch.from_numpy(boxes.astype(np.float32)), torch.from_numpy(scores.astype(np.float32)), overlap).numpy()


def _nms_min(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> np.ndarray:
    """NMS with intersection over the smaller box's area: a box mostly inside a better one goes too."""
    area = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if kept:
            k = np.array(kept)
            inter = np.prod(np.clip(np.minimum(boxes[k, 2:], boxes[i, 2:]) - np.maximum(boxes[k, :2], boxes[i, :2]), 0, None), 1)
            if (inter / np.minimum(area[k], area[i])).max() > overlap:
                continue
        kept.append(int(i))
    return np.array(kept, dtype=np.int64)
