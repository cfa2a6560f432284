"""Predict expressions in images and videos: ``python -m fer.predict [ckpt_path=PATH] inputs=[photo.jpg,clip.mp4,folder/]``
(without ``ckpt_path``, the model packaged with fer: :mod:`fer.packaged`).

Each input is a file or a folder (searched recursively); a folder may mix photos and videos.

Photos: a face crop (a small square grayscale image, :func:`fer.inference.is_face_crop`) is
classified whole; any other image goes through the face detector (MTCNN, or OpenCV's Haar cascade
with ``detector.method=haar``) and each face is cropped with a margin (and aligned on the eyes with
``detector.align=true``), resized to 48x48 and classified.
One row per face goes to ``predictions.json`` or ``.csv`` in the run directory: file, face number,
box, how it was found, emotion and all seven probabilities. An image with no face gets a
``no_face`` row; a file that cannot be read gets an ``error`` row naming it and the reason, and the
batch goes on.

Videos (:data:`fer.video.reader.VIDEO_SUFFIXES`): faces are detected every ``video.detect_every``-th
frame and followed by a tracker in between, so each face keeps one track id; one row per face per
frame (frame, time, track, box, emotion, probabilities; ``no_face`` and ``error`` rows as for photos)
goes to ``videos/<name>.csv`` or ``.jsonl``, written as it goes, with ``videos/<name>.summary.json``
when the video is done. ``resume=true`` with the same output folder continues a killed run
(:mod:`fer.video.batch`); ``video.annotate`` and ``video.timeline`` add an annotated copy and a
figure of each track's probabilities over time.
"""
from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from omegaconf import DictConfig

from fer import load_model, packaged
from fer.classes import CLASSES
from fer.cli import entry_point
from fer.inference import FacePrediction, predict_images
from fer.run.rundir import run_metadata, save_config, write_json
from fer.training.module import FERClassifier
from fer.video.analysis import VideoOptions
from fer.video.batch import analyze_videos
from fer.video.reader import VIDEO_SUFFIXES, is_video_file
from fer.video.rows import SUFFIXES as ROW_SUFFIXES
from fer.vision.draw import draw_face
from fer.vision.faces import Box, FaceDetector
from fer.vision.images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

FORMATS = ("json", "csv")
ROW_KEYS = ("file", "face", "status", "box", "source", "aligned", "emotion", "confidence", "probabilities", "error")
CSV_FIELDS = ("file", "face", "status", "x", "y", "w", "h", "source", "aligned", "emotion", "confidence", *(f"p_{c}" for c in CLASSES), "error")
ANNOTATE_MIN_SIDE = 240
INPUT_SUFFIXES = IMAGE_SUFFIXES + VIDEO_SUFFIXES
VIDEO_DIR = "videos"


def find_images(inputs: list[str]) -> Iterator[tuple[Path, Path | None, str | None]]:
    """``(file, name for its outputs, error)`` for every image and video of every input, in order.

    A missing input or a folder with no images or videos yields one error entry; other files inside
    folders are skipped and counted in the log.
    """
    for raw in inputs:
        path = Path(raw).expanduser()
        if path.is_file():
            yield path, Path(path.name), None
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            images = [p for p in files if p.suffix.lower() in INPUT_SUFFIXES]
            if len(images) < len(files):
                others = [str(p.relative_to(path)) for p in files if p.suffix.lower() not in INPUT_SUFFIXES]
                log.warning("Skipped %d files that are neither images nor videos in %s (suffixes %s), e.g. %s", len(others), path, INPUT_SUFFIXES, others[:3])
            if not images:
                yield path, None, f"folder holds no images or videos (looked for {', '.join(INPUT_SUFFIXES)})"
            for image in images:
                yield image, Path(path.name) / image.relative_to(path), None
        else:
            yield path, None, "no such file or folder"


def face_row(file: Path, index: int, face: FacePrediction) -> dict[str, Any]:
    return {"file": str(file), "face": index, "status": "ok", **face.as_dict(), "error": None}


def empty_row(file: Path, status: str, error: str | None = None) -> dict[str, Any]:
    row = dict.fromkeys(ROW_KEYS)
    row.update(file=str(file), status=status, error=error)
    return row


def predict_files(
    model: FERClassifier,
    entries: list[tuple[Path, Path | None, str | None]],
    detector: FaceDetector,
    crop_max_side: int,
    annotate_dir: Path | None = None,
    workers: int = 2,
) -> list[dict[str, Any]]:
    """Rows for every face of every image of ``entries`` (from :func:`find_images`; see the module docstring).
    Photos are decoded and searched for faces in ``workers`` threads (:func:`fer.inference.predict_images`)."""
    rows: list[dict[str, Any]] = []
    written: set[Path] = set()
    readable = [(file, name) for file, name, problem in entries if problem is None]
    results = predict_images(model, (file for file, _ in readable), detector, crop_max_side, workers)
    for file, name, problem in entries:
        if problem is not None:
            log.error("%s: %s", file, problem)
            rows.append(empty_row(file, "error", problem))
            continue
        result = next(results)
        if result.error is not None:
            log.error("%s", result.error)
            rows.append(empty_row(file, "error", result.error))
            continue
        if result.faces:
            rows += [face_row(file, i, face) for i, face in enumerate(result.faces)]
        else:
            log.info("%s: no face found", file)
            rows.append(empty_row(file, "no_face"))
        if annotate_dir is not None:
            target = _unique((annotate_dir / name).with_suffix(".png"), written)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(target), annotate(result.image, result.faces)):
                raise OSError(f"Could not write the annotated copy {target}: check that the folder is writable.")
    return rows


def annotate(image: np.ndarray, faces: list[FacePrediction]) -> np.ndarray:
    """A BGR copy (for ``cv2.imwrite``) of ``image`` with each face's box and ``emotion probability`` drawn (enlarged
    when small, so that the text stays readable); "no face" when there is none."""
    bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)
    zoom = max(1, int(np.ceil(ANNOTATE_MIN_SIDE / max(bgr.shape[:2]))))
    if zoom > 1:
        bgr = cv2.resize(bgr, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
    scale = max(0.4, max(bgr.shape[:2]) / 800)
    thickness = max(1, round(scale * 2))
    if not faces:
        cv2.putText(bgr, "no face", (5, int(25 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 255), thickness, cv2.LINE_AA)
    for face in faces:
        draw_face(bgr, Box(*(v * zoom for v in face.box.as_list())), f"{face.label} {face.probabilities.max():.2f}", scale, thickness)
    return bgr


def write_rows(rows: list[dict[str, Any]], path: Path, fmt: str, header: dict[str, Any]) -> None:
    """JSON: ``header`` plus ``rows`` as they are; CSV: one flat line per row (``p_<class>`` columns)."""
    if fmt == "json":
        write_json(path, {**header, "rows": rows})
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            flat = {key: row[key] for key in ("file", "face", "status", "source", "aligned", "emotion", "confidence", "error")}
            flat.update(zip("xywh", row["box"] or [None] * 4))
            flat.update({f"p_{c}": (row["probabilities"] or {}).get(c) for c in CLASSES})
            writer.writerow(flat)


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Load the checkpoint, predict every input, write the rows (and annotated copies); returns the photos' rows."""
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r} must be one of {', '.join(FORMATS)}.")
    if not cfg.inputs:
        raise ValueError("No inputs: pass inputs=[PATH,...] with image or video files and/or folders.")
    options = VideoOptions(**{key: value for key, value in cfg.video.items() if key in VideoOptions.__dataclass_fields__})
    save_config(cfg, cfg.paths.output_dir)
    model = load_model(cfg.ckpt_path, map_location=cfg.device)
    model.use_tta(cfg.tta)
    model.use_precision(cfg.precision)
    detector = FaceDetector(**cfg.detector)
    annotate_dir = Path(cfg.annotate_dir) if cfg.annotate else None
    entries = list(find_images(list(cfg.inputs)))
    videos = [(file, name) for file, name, problem in entries if problem is None and is_video_file(file)]
    video_files = {file for file, _ in videos}
    photos = [entry for entry in entries if entry[0] not in video_files]
    rows = predict_files(model, photos, detector, cfg.crop_max_side, annotate_dir, cfg.workers)
    taken: set[Path] = set()
    named = [(file, _unique(Path(VIDEO_DIR) / name.with_suffix(""), taken)) for file, name in videos]
    status = Counter(row["status"] for row in rows)
    header = {
        "checkpoint": str(Path(cfg.ckpt_path).resolve()) if cfg.ckpt_path else f"packaged: {packaged.card()['name']}",
        "classes": list(CLASSES),
        "tta": model.tta,
        "precision": model.inference_precision,
        "summary": {"images": len({row["file"] for row in rows}), "faces": status["ok"], "no_face": status["no_face"], "errors": status["error"]},
        "videos": [{"file": str(file), "rows": f"{name}{ROW_SUFFIXES[cfg.format]}"} for file, name in named],
        **run_metadata(),
    }
    output = Path(cfg.output)
    write_rows(rows, output, cfg.format, header)
    log.info("%s; wrote %s", ", ".join(f"{k} {v}" for k, v in header["summary"].items()), output)
    if named:
        out_dir = Path(cfg.paths.output_dir)
        summaries = analyze_videos(
            model, [(file, out_dir / name) for file, name in named], detector, options, cfg.format,
            resume=cfg.resume, annotate=cfg.video.annotate, timeline=cfg.video.timeline,
        )
        stopped = sum(bool(s["error"]) for s in summaries)
        log.info("videos %d (%d with an error or stopped early); rows in %s", len(summaries), stopped, out_dir / VIDEO_DIR)
    return rows


def _unique(path: Path, taken: set[Path]) -> Path:
    """``path``, or ``name-2.ext``, ``name-3.ext``... if this run already wrote it."""
    candidate, number = path, 1
    while candidate in taken:
        number += 1
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    taken.add(candidate)
    return candidate


main = entry_point("predict", "predict", predict)


if __name__ == "__main__":
    main()
