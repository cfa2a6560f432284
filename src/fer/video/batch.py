"""The videos of a ``fer.predict`` run: per video a rows file, a JSON summary and the optional annotated copy and timeline.

Under the output folder, ``videos/<name>.csv`` (or ``.jsonl``) holds the rows, ``videos/<name>.summary.json`` is
written when the video is done (read to the end, or stopped by damage), ``<name>.annotated.mp4`` and
``<name>.timeline.png`` beside them. With ``resume=true`` a video whose summary exists is skipped, and one with
rows but no summary (the run was killed) continues after its last complete frame; the annotated copy cannot be
continued, so with ``annotate`` such a video is analysed again from its first frame.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer.run.rundir import write_json
from fer.video.analysis import VideoOptions, VideoSummary, analyze_video
from fer.video.rows import SUFFIXES, RowsFile
from fer.video.timeline import plot_timeline
from fer.vision.faces import FaceDetector

if TYPE_CHECKING:
    from fer.training.module import FERClassifier

log = logging.getLogger(__name__)

SUMMARY_SUFFIX = ".summary.json"


def analyze_videos(
    model: FERClassifier,
    videos: list[tuple[Path, Path]],
    detector: FaceDetector,
    options: VideoOptions,
    fmt: str,
    resume: bool = False,
    annotate: bool = False,
    timeline: bool = False,
) -> list[dict[str, Any]]:
    """Analyse each ``(video file, path of its outputs without suffix)``; returns the summaries (those of skipped videos as saved)."""
    summaries = []
    for file, base in videos:
        rows_path = base.with_name(base.name + SUFFIXES[fmt])
        summary_path = base.with_name(base.name + SUMMARY_SUFFIX)
        if resume and summary_path.is_file():
            log.info("%s: already analysed (%s), skipped", file, summary_path)
            summaries.append(json.loads(summary_path.read_text()))
            continue
        summary_path.unlink(missing_ok=True)
        continuing = resume and rows_path.is_file() and not annotate
        if resume and not rows_path.is_file():
            log.info("%s: resume=true but no rows file %s yet: starting from the first frame", file, rows_path)
        elif resume and annotate:
            log.info("%s: the annotated copy cannot be continued: analysing again from the first frame", file)
        with RowsFile(rows_path, fmt, resume=continuing) as writer:
            if continuing and writer.kept.rows:
                log.info("%s: resuming at frame %d after %d rows kept in %s", file, writer.kept.next_frame, writer.kept.rows, rows_path)
            elif continuing:
                log.info("%s: %s holds no whole frame: starting from the first frame", file, rows_path)
            annotated = base.with_name(base.name + ".annotated.mp4") if annotate else None
            summary = analyze_video(model, file, detector, options, writer, annotated)
        if timeline:
            plot_timeline(rows_path, base.with_name(base.name + ".timeline.png"), file.name)
        record = {**summary.as_dict(), "rows_file": str(rows_path)}
        write_json(summary_path, record)
        log.info("%s: %s", file, describe(summary))
        summaries.append(record)
    return summaries


def describe(summary: VideoSummary) -> str:
    expected = f" of {summary.frames_expected}" if summary.frames_expected else ""
    return (
        f"{summary.frames_read}{expected} frames, {summary.faces} faces in {summary.tracks} tracks, {summary.rows} rows, "
        f"{summary.frames_per_second:.1f} frames/s" + (f"; {summary.error}" if summary.error else "")
    )
