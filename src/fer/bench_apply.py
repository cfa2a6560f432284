"""How fast the applied model is: ``python -m fer.bench apply.enabled=true`` (:mod:`fer.bench`).

Rows for the photos and videos people analyse, with fer.predict's defaults (the model's own
test-time augmentation, ``precision=auto``; ``bench.apply.tta=`` and ``bench.apply.precision=`` time
others), on inputs made here from the real portrait that ships with matplotlib (nothing is
downloaded): photos/s for a folder of 640x480 JPEGs with one face each
(:func:`fer.inference.predict_images`), and frames/s for 640x480 30 fps videos with one and with
four faces, detecting every frame and every k-th frame (:mod:`fer.video`), with the
resident memory a long video adds after a short one (``memory_seconds``, 600 for a 10-minute video).
Start-up (loading the model, writing the inputs) is not timed.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import matplotlib
import numpy as np
from omegaconf import DictConfig
from PIL import Image

from fer import load_model, packaged
from fer.factory import build_module
from fer.inference import predict_images
from fer.training.module import FERClassifier
from fer.video.analysis import VideoOptions, analyze_video
from fer.video.rows import RowsFile
from fer.vision.faces import FaceDetector

WIDTH, HEIGHT, FPS = 640, 480, 30


def portrait() -> np.ndarray:
    """The head and shoulders of matplotlib's sample photo of Grace Hopper (RGB), a real frontal face:
    the square around the face the detector finds, twice its side."""
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not path.is_file():
        raise FileNotFoundError(f"matplotlib's sample portrait {path} is missing: reinstall matplotlib, which ships it.")
    image = np.asarray(Image.open(path).convert("RGB"))
    (box,) = FaceDetector(method="haar").detect(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))  # the same photos whichever method is timed
    side = 2 * box.w
    x = min(max(0, box.x + box.w // 2 - side // 2), image.shape[1] - side)
    y = min(max(0, box.y + box.h // 2 - side // 2), image.shape[0] - side)
    return image[y : y + side, x : x + side]


def scene(face: np.ndarray, faces: int, t: float) -> np.ndarray:
    """A 640x480 RGB frame with ``faces`` copies of ``face`` drifting slowly (``t`` in seconds)."""
    frame = np.full((HEIGHT, WIDTH, 3), 110, dtype=np.uint8)
    columns = 1 if faces == 1 else 2
    rows = -(-faces // columns)
    side = min(WIDTH // columns, HEIGHT // rows) * 3 // 4
    small = cv2.resize(face, (side, int(side * face.shape[0] / face.shape[1])), interpolation=cv2.INTER_AREA)[:side]
    for i in range(faces):
        cell_x, cell_y = (i % columns) * WIDTH // columns, (i // columns) * HEIGHT // rows
        room_x, room_y = WIDTH // columns - side, HEIGHT // rows - small.shape[0]
        x = cell_x + int(room_x * (0.5 + 0.4 * np.sin(t * 0.7 + i)))
        y = cell_y + int(room_y * (0.5 + 0.4 * np.cos(t * 0.5 + i)))
        frame[y : y + small.shape[0], x : x + side] = small
    return frame


def write_photos(folder: Path, count: int) -> list[Path]:
    face = portrait()
    paths = []
    for i in range(count):
        paths.append(folder / f"photo{i:04d}.jpg")
        Image.fromarray(scene(face, 1, i * 0.37)).save(paths[-1], quality=90)
    return paths


def write_video(path: Path, faces: int, seconds: float) -> Path:
    face = portrait()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for i in range(int(seconds * FPS)):
        writer.write(cv2.cvtColor(scene(face, faces, i / FPS), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def rss_mb() -> float:
    """This process's resident memory now (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def time_video(model: FERClassifier, video: Path, detector: FaceDetector, every: int, rows: Path) -> dict[str, Any]:
    """One video analysed as fer.predict does, rows written to ``rows``: its frames/s and tracks."""
    writer = RowsFile(rows, "csv")
    try:
        summary = analyze_video(model, video, detector, VideoOptions(detect_every=every, progress=False), writer)
    finally:
        writer.close()
    return {"frames": summary.frames_analysed, "tracks": summary.tracks, "frames_per_s": round(summary.frames_per_second, 1)}


def bench_model(cfg: DictConfig) -> tuple[FERClassifier, str]:
    """The model to time and what it is: ``apply.ckpt_path``, else the packaged model, else an
    untrained network of the configured model (the same speed as a trained one)."""
    if cfg.bench.apply.ckpt_path:
        return load_model(cfg.bench.apply.ckpt_path), str(cfg.bench.apply.ckpt_path)
    if packaged.available():
        return load_model(), f"packaged {packaged.card()['name']}"
    return build_module(cfg).eval(), f"untrained {cfg.model.name} (no packaged model here)"


def bench_apply(cfg: DictConfig) -> dict[str, Any]:
    """Photos/s and video frames/s of the applied model (see the module docstring)."""
    options = cfg.bench.apply
    model, described = bench_model(cfg)
    model.use_tta(options.tta)
    model.use_precision(options.precision)
    detector = FaceDetector(**options.detector)
    rows: dict[str, Any] = {
        "model": described,
        "tta": model.tta,
        "precision": model.inference_precision,
        "workers": options.workers,
        "detector": dict(options.detector),
    }
    with tempfile.TemporaryDirectory(prefix="fer-bench-") as scratch:
        folder = Path(scratch)
        photos = write_photos(folder, options.photos)
        list(predict_images(model, photos[:8], detector, workers=options.workers))  # warm-up
        start = time.perf_counter()
        found = sum(len(result.faces) for result in predict_images(model, photos, detector, workers=options.workers))
        rows["photos"] = {"count": len(photos), "faces": found, "photos_per_s": round(len(photos) / (time.perf_counter() - start), 1)}
        rows["videos"] = []
        for faces in options.video_faces:
            video = write_video(folder / f"faces{faces}.mp4", faces, options.video_seconds)
            for every in options.detect_every:
                timed = time_video(model, video, detector, every, folder / "rows.csv")
                rows["videos"].append({"faces": faces, "detect_every": every, **timed})
        if options.memory_seconds:
            short = write_video(folder / "short.mp4", 1, 10)
            long = write_video(folder / "long.mp4", 1, options.memory_seconds)
            time_video(model, short, detector, options.detect_every[-1], folder / "rows.csv")
            before = rss_mb()
            timed = time_video(model, long, detector, options.detect_every[-1], folder / "rows.csv")
            growth = round(rss_mb() - before, 1)
            rows["memory"] = {"seconds": options.memory_seconds, "detect_every": options.detect_every[-1], **timed, "rss_growth_mb": growth}
    return rows
