"""The rows file of one video: one flat row per face per frame, written and flushed as it goes, and read back by ``resume=true``.

CSV (``.csv``, a header line) or JSON lines (``.jsonl``), with the same fields either way. Each frame's rows
go out in one write followed by a flush, so a killed run loses at most the frame it was writing. Reopened
with ``resume=True``, the file keeps its whole lines, drops a half-written last line and the rows of the last
frame it holds (that frame may be incomplete: it is analysed again), and says where to continue and where
each track was last seen, so that the resumed run goes on with the same track ids and smoothed probabilities
(:func:`fer.video.analysis.resumed_tracks`), a track whose face was missing at the kill included.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer.classes import CLASSES
from fer.vision.faces import Box

log = logging.getLogger(__name__)

FIELDS = ("video", "frame", "time", "track", "status", "x", "y", "w", "h", "emotion", "confidence", *(f"p_{c}" for c in CLASSES), "error")
SUFFIXES = {"csv": ".csv", "json": ".jsonl"}


def face_row(video: str, frame: int, time: float, track: int, box: Box, probabilities: np.ndarray) -> dict[str, Any]:
    best = int(np.argmax(probabilities))
    row: dict[str, Any] = {"video": video, "frame": frame, "time": round(time, 6), "track": track, "status": "ok"}
    row.update(zip("xywh", box.as_list()))
    row.update(emotion=CLASSES[best], confidence=float(probabilities[best]), error=None)
    row.update({f"p_{c}": float(p) for c, p in zip(CLASSES, probabilities)})
    return {key: row.get(key) for key in FIELDS}


def status_row(video: str, status: str, frame: int | None = None, time: float | None = None, error: str | None = None) -> dict[str, Any]:
    """A ``no_face`` row for a frame without a face, or an ``error`` row (a frame, or the whole video when ``frame`` is None)."""
    row = dict.fromkeys(FIELDS)
    row.update(video=video, frame=frame, time=None if time is None else round(time, 6), status=status)
    row["error"] = None if error is None else " ".join(error.split())  # one line, whatever the message
    return row


@dataclass
class Kept:
    """What a resumed rows file already holds."""

    next_frame: int = 0
    rows: int = 0
    faces: int = 0
    no_face: int = 0
    errors: int = 0
    track_ids: set[int] = field(default_factory=set)
    last_seen: dict[int, tuple[int, Box]] = field(default_factory=dict)  # each track's last row: its frame and box
    probabilities: dict[int, np.ndarray] = field(default_factory=dict)  # and its (smoothed) probabilities there
    undecoded: set[int] = field(default_factory=set)  # frames with an error row (no detection ran on them)


class RowsFile:
    """Append rows to ``path`` (``fmt`` csv or json); ``resume=True`` continues an existing file (see the module docstring)."""

    def __init__(self, path: str | Path, fmt: str, resume: bool = False) -> None:
        if fmt not in SUFFIXES:
            raise ValueError(f"format={fmt!r} must be one of {', '.join(SUFFIXES)}.")
        self.path = Path(path)
        self.fmt = fmt
        self.kept = Kept()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.is_file() and self._recover():
            self.handle = open(self.path, "a", newline="", encoding="utf-8")
        else:
            self.handle = open(self.path, "w", newline="", encoding="utf-8")
            if fmt == "csv":
                self.handle.write(",".join(FIELDS) + "\r\n")
                self.handle.flush()

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append one frame's rows (or a whole-video row) and flush them to the file."""
        if self.fmt == "csv":
            buffer = io.StringIO()
            csv.DictWriter(buffer, fieldnames=FIELDS).writerows(rows)
            text = buffer.getvalue()
        else:
            text = "".join(json.dumps(row) + "\n" for row in rows)
        self.handle.write(text)
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> RowsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _recover(self) -> bool:
        """Cut the file back to its last complete frame and note what it holds; False when it holds nothing to keep."""
        data = self.path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        if not whole:
            return False
        lines: list[tuple[int, dict[str, Any]]] = []  # (byte offset where the line starts, row)
        offset = 0
        for number, raw in enumerate(whole.splitlines(keepends=True)):
            text = raw.decode("utf-8")
            if self.fmt == "csv" and number == 0:
                if text.strip() != ",".join(FIELDS):
                    raise ValueError(f"{self.path} is not a rows file this version writes (other columns): remove it or use another output folder.")
            else:
                lines.append((offset, parse_row(text, self.fmt)))
            offset += len(raw)
        framed = [row["frame"] for _, row in lines if row["frame"] is not None]
        if not framed:
            return False
        last = max(framed)
        keep_to = next(start for start, row in lines if row["frame"] == last)
        self._truncate(keep_to, len(data))
        kept = [row for start, row in lines if start < keep_to]
        self.kept.next_frame = last
        self.kept.rows = len(kept)
        self.kept.faces = sum(row["status"] == "ok" for row in kept)
        self.kept.no_face = sum(row["status"] == "no_face" for row in kept)
        self.kept.errors = sum(row["status"] == "error" for row in kept)
        self.kept.track_ids = {row["track"] for row in kept if row["track"] is not None}
        for row in kept:  # in frame order: the last row of a track wins
            if row["status"] == "ok":
                self.kept.last_seen[row["track"]] = (row["frame"], Box(row["x"], row["y"], row["w"], row["h"]))
                self.kept.probabilities[row["track"]] = np.array([row[f"p_{c}"] for c in CLASSES], dtype=np.float64)
            elif row["status"] == "error" and row["frame"] is not None:
                self.kept.undecoded.add(row["frame"])
        return True

    def _truncate(self, size: int, length: int) -> None:
        if size < length:
            with open(self.path, "r+b") as handle:
                handle.truncate(size)


def parse_row(text: str, fmt: str) -> dict[str, Any]:
    """One line of a rows file -> the row as written (ints, floats, None for empty CSV cells)."""
    if fmt == "json":
        return json.loads(text)
    values = next(csv.reader([text]))
    row: dict[str, Any] = dict(zip(FIELDS, (v if v != "" else None for v in values)))
    for key in ("frame", "track", "x", "y", "w", "h"):
        row[key] = None if row[key] is None else int(row[key])
    for key in ("time", "confidence", *(f"p_{c}" for c in CLASSES)):
        row[key] = None if row[key] is None else float(row[key])
    return row


def iter_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """The whole rows of a rows file (``.csv`` or ``.jsonl``) one at a time, typed as written; a half-written last line is left out."""
    path = Path(path)
    fmt = "json" if path.suffix == SUFFIXES["json"] else "csv"
    with open(path, newline="", encoding="utf-8") as handle:
        if fmt == "csv":
            handle.readline()
        for line in handle:
            if line.endswith("\n"):
                yield parse_row(line, fmt)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Every whole row of a rows file, as a list (for tests and small videos; :func:`iter_rows` streams)."""
    return list(iter_rows(path))
