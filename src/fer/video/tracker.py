"""Stable ids for faces across frames: each detection continues the track whose box it overlaps most.

Greedy matching on intersection over union (highest first, each track and detection used once) is
enough for the few faces of a video frame. A detection that matches no track starts a new one (ids
count up from 1 and are never reused); a track missed by ``max_missed`` detections in a row is
dropped, and while missed it is not reported (its face is not where the box was).
"""

from __future__ import annotations

from dataclasses import dataclass

from fer.vision.faces import Box


@dataclass
class Track:
    """One face followed over frames: its id, its latest box and how many detections in a row missed it."""

    id: int
    box: Box
    missed: int = 0


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not touch)."""
    width = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    height = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (a.w * a.h + b.w * b.h - inter)


class IoUTracker:
    """Tracks from the boxes of successive detections; :attr:`visible` holds the tracks seen at the last one."""

    def __init__(self, min_iou: float = 0.3, max_missed: int = 2) -> None:
        if not 0.0 < min_iou <= 1.0 or max_missed < 0:
            raise ValueError(f"video.iou={min_iou} must be in (0, 1] and video.max_missed={max_missed} >= 0.")
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self.next_id = 1

    def restore(self, tracks: list[Track], next_id: int) -> None:
        """Continue from saved tracks (a resumed video): their ids and boxes, and the next id to hand out."""
        self.tracks = list(tracks)
        self.next_id = max([next_id, *(t.id + 1 for t in tracks)])

    @property
    def visible(self) -> list[Track]:
        """The tracks whose face the last detection found, by id."""
        return sorted((t for t in self.tracks if t.missed == 0), key=lambda t: t.id)

    def update(self, boxes: list[Box]) -> list[Track]:
        """Match one detection's boxes to the tracks, start and drop tracks; returns :attr:`visible`."""
        pairs = sorted(
            ((iou(track.box, box), t, b) for t, track in enumerate(self.tracks) for b, box in enumerate(boxes)),
            key=lambda pair: -pair[0],
        )
        matched_tracks: set[int] = set()
        matched_boxes: set[int] = set()
        for overlap, t, b in pairs:
            if overlap < self.min_iou:
                break
            if t in matched_tracks or b in matched_boxes:
                continue
            matched_tracks.add(t)
            matched_boxes.add(b)
            self.tracks[t].box = boxes[b]
            self.tracks[t].missed = 0
        for t, track in enumerate(self.tracks):
            if t not in matched_tracks:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for b, box in enumerate(boxes):
            if b not in matched_boxes:
                self.tracks.append(Track(self.next_id, box))
                self.next_id += 1
        return self.visible
