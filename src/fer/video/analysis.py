"""The analysis of one video: frames -> faces (detected every k-th frame, tracked in between) -> probabilities -> rows.

The face detector runs on every ``detect_every``-th frame (by absolute frame index, so that a resumed run
detects on the same frames as an uninterrupted one); on the frames in between each track keeps its last
box. Every tracked face of every frame is cut and classified, and the faces of up to ``batch_frames``
frames go through the model in one batch (the rows of a frame wait at most that many frames).

Three threads share the work (:mod:`fer.video.pipeline`): decoding, face detection (the costliest step:
about 50 ms a 640x480 frame on one core here, which the cascade barely spreads over more), and this one,
which tracks, cuts the faces, classifies them and writes the rows. OpenCV and torch release the GIL, so
detection runs on one core while classification runs on the other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from tqdm import tqdm

from fer.inference import classify, prepare_faces
from fer.video.annotate import AnnotatedVideo
from fer.video.pipeline import Background
from fer.video.reader import Frame, FrameReader, VideoReadError
from fer.video.rows import Kept, RowsFile, face_row, status_row
from fer.video.smoothing import Smoother
from fer.video.tracker import IoUTracker, Track
from fer.vision.faces import Box, FaceDetector
from fer.vision.images import IMAGE_SIZE

if TYPE_CHECKING:
    from fer.training.module import FERClassifier

log = logging.getLogger(__name__)

DEFAULT_FPS = 30.0  # frames per second assumed where a container does not give its own


@dataclass(frozen=True)
class VideoOptions:
    """How a video is analysed (``video.*`` in conf/predict.yaml, where each is explained)."""

    detect_every: int = 5
    smoothing: float = 0.0
    max_missed_s: float = 1.0
    iou: float = 0.3
    batch_frames: int = 8
    queue_frames: int = 16
    progress: bool = True

    def __post_init__(self) -> None:
        if self.detect_every < 1 or self.batch_frames < 1 or self.queue_frames < 1:
            raise ValueError(
                f"video.detect_every={self.detect_every}, video.batch_frames={self.batch_frames} and video.queue_frames={self.queue_frames} must be >= 1."
            )
        if self.max_missed_s < 0:
            raise ValueError(f"video.max_missed_s={self.max_missed_s} must be >= 0 (seconds a track may go unseen).")

    def max_missed(self, fps: float) -> int:
        """The detections in a row a track may miss before it is dropped: ``max_missed_s`` of video at ``fps``
        (30 when the container does not say), whatever ``detect_every`` is. Counted in detections, a track
        detected on every frame would die after a few frames' miss, which the cascade often has (for 18
        frames in a row on the 4-face benchmark video), and come back under a new id."""
        return int(self.max_missed_s * (fps if fps > 0 else DEFAULT_FPS) / self.detect_every)


@dataclass
class VideoSummary:
    """What the analysis of one video did: ``frames_read`` against ``frames_expected`` (the container's count, 0 when
    unknown) says whether it ``stopped_early``; ``frames_per_second`` is this run's speed over the frames it analysed."""

    video: str
    fps: float = 0.0
    frames_read: int = 0
    frames_expected: int = 0
    rows: int = 0
    faces: int = 0
    no_face: int = 0
    errors: int = 0
    tracks: int = 0
    stopped_early: bool = False
    resumed_at: int | None = None
    frames_analysed: int = 0
    seconds: float = 0.0
    frames_per_second: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def analyze_video(
    model: FERClassifier,
    path: str | Path,
    detector: FaceDetector,
    options: VideoOptions,
    writer: RowsFile,
    annotated: str | Path | None = None,
) -> VideoSummary:
    """Analyse ``path`` into ``writer`` (continuing from what it kept, see :class:`fer.video.rows.RowsFile`) and,
    with ``annotated``, draw an annotated copy there. A video that cannot be read gets one ``error`` row."""
    path = Path(path)
    kept = writer.kept
    summary = VideoSummary(str(path), rows=kept.rows, faces=kept.faces, no_face=kept.no_face, errors=kept.errors)
    summary.resumed_at = kept.next_frame if kept.rows else None
    track_ids = set(kept.track_ids)
    started = time.perf_counter()
    try:
        reader = FrameReader(path, start=kept.next_frame, queue_frames=options.queue_frames)
    except VideoReadError as error:
        return _failed(summary, writer, str(error))
    with reader, Background(_detected(reader, detector, options.detect_every), options.batch_frames, name=f"detect {path.name}") as stage:
        summary.fps, summary.frames_expected = reader.fps, reader.frame_count
        tracker = IoUTracker(options.iou, options.max_missed(reader.fps))
        tracker.restore(resumed_tracks(kept, options.detect_every, tracker.max_missed), max(track_ids, default=0) + 1)
        smoother = Smoother(options.smoothing)
        smoother.state.update({track.id: kept.probabilities[track.id] for track in tracker.tracks})
        drawing = AnnotatedVideo(annotated, reader.fps, reader.width, reader.height) if annotated is not None else None
        bar = tqdm(total=reader.frame_count or None, initial=kept.next_frame, unit="frame", desc=path.name, disable=not options.progress, leave=False)
        failure = None
        try:
            for chunk in _chunks(stage, options.batch_frames):
                faces: list[tuple[Frame, list[tuple[int, Box, np.ndarray]]]] = []
                for frame, boxes in chunk:
                    if frame.gray is None:
                        faces.append((frame, []))
                        continue
                    tracks = tracker.visible if boxes is None else tracker.update(boxes)
                    faces.append((frame, [(t.id, t.box, detector.cut(frame.gray, t.box, IMAGE_SIZE).crop) for t in tracks]))
                crops = [crop for _, found in faces for _, _, crop in found]
                probabilities = iter(classify(model, prepare_faces(crops, model.input_spec)))
                for frame, found in faces:
                    rows = _frame_rows(str(path), frame, found, probabilities, smoother)
                    writer.write(rows)
                    _count(summary, rows, track_ids)
                    if drawing is not None and frame.image is not None:
                        drawing.write(frame.image, rows)
                smoother.keep_only({t.id for t in tracker.tracks})
                summary.frames_analysed += len(chunk)
                bar.update(len(chunk))
        except cv2.error as error:  # a frame OpenCV cannot work on (odd size or depth): the video stops, the batch goes on
            failure = f"OpenCV failed on a frame: no rows from frame {kept.next_frame + summary.frames_analysed} on ({' '.join(str(error).split())})"
        finally:
            bar.close()
            if drawing is not None:
                drawing.close()
        summary.frames_read = reader.frames_read if failure is None else kept.next_frame + summary.frames_analysed
    if summary.frames_read == 0 and summary.rows == 0:
        return _failed(summary, writer, f"Video {path} holds no frames that decode (the container claims {reader.frame_count}).")
    summary.stopped_early = failure is not None or (bool(reader.frame_count) and summary.frames_read < reader.frame_count)
    if summary.stopped_early:
        message = failure or f"stopped early: {summary.frames_read} frames read of the {reader.frame_count} the container claims (damaged or truncated)"
        log.warning("%s: %s", path, message)
        writer.write([status_row(str(path), "error", summary.frames_read, None, message)])
        summary.rows += 1
        summary.errors += 1
        summary.error = message
    summary.tracks = len(track_ids)
    summary.seconds = time.perf_counter() - started
    summary.frames_per_second = summary.frames_analysed / summary.seconds if summary.seconds > 0 else 0.0
    return summary


def resumed_tracks(kept: Kept, every: int, max_missed: int) -> list[Track]:
    """The tracks as an uninterrupted run holds them after the frames a rows file kept, from each track's
    last row: one last seen on the last kept frame is on screen; one last seen earlier was missed by
    every detection since (the frames ``every`` apart that decoded) and lives while those are at most
    ``max_missed``, so that a face coming back after the resume keeps its id."""
    tracks = []
    for track_id, (frame, box) in sorted(kept.last_seen.items()):
        # detection frames after ``frame`` and before the resume, counted, not walked: a long video
        # keeps every track it ever had, each last seen up to hours of frames back
        detections = (kept.next_frame - 1) // every - frame // every
        missed = detections - sum(1 for f in kept.undecoded if frame < f < kept.next_frame and f % every == 0)
        if missed <= max_missed:
            tracks.append(Track(track_id, box, missed))
    return tracks


def _frame_rows(
    video: str, frame: Frame, found: list[tuple[int, Box, np.ndarray]], probabilities: Iterator[np.ndarray], smoother: Smoother
) -> list[dict[str, Any]]:
    if frame.gray is None:
        return [status_row(video, "error", frame.index, frame.time, f"frame {frame.index} could not be decoded")]
    if not found:
        return [status_row(video, "no_face", frame.index, frame.time)]
    return [face_row(video, frame.index, frame.time, track, box, smoother(track, next(probabilities))) for track, box, _ in found]


def _count(summary: VideoSummary, rows: list[dict[str, Any]], track_ids: set[int]) -> None:
    summary.rows += len(rows)
    for row in rows:
        if row["status"] == "ok":
            summary.faces += 1
            track_ids.add(row["track"])
        elif row["status"] == "no_face":
            summary.no_face += 1
        else:
            summary.errors += 1


def _failed(summary: VideoSummary, writer: RowsFile, message: str) -> VideoSummary:
    log.error("%s", message)
    writer.write([status_row(summary.video, "error", error=message)])
    summary.rows += 1
    summary.errors += 1
    summary.error = message
    return summary


def _detected(frames: FrameReader, detector: FaceDetector, every: int) -> Iterator[tuple[Frame, list[Box] | None]]:
    """Each frame with the face boxes of a detection frame (every ``every``-th by index), else None: keep the tracks."""
    for frame in frames:
        yield frame, (detector.detect(frame.gray) if frame.gray is not None and frame.index % every == 0 else None)


def _chunks(items: Background, size: int) -> Iterator[list[tuple[Frame, list[Box] | None]]]:
    chunk: list[tuple[Frame, list[Box] | None]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
