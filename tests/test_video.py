"""Videos in ``fer.predict`` (fer.video): real faces (scikit-image's astronaut) filmed moving and scaling, four at once,
and every way a video file goes wrong; resume after a kill, the annotated copy, the timeline, flat memory."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import compose_config
from omegaconf import DictConfig, open_dict
from PIL import Image

from fer import CLASSES, FERClassifier, load_model
from fer.bench_apply import rss_mb
from fer.predict import predict
from fer.video import reader as reader_module
from fer.video.analysis import VideoOptions, VideoSummary, analyze_video
from fer.video.pipeline import Background
from fer.video.reader import FrameReader, VideoReadError
from fer.video.rows import FIELDS, SUFFIXES, RowsFile, read_rows
from fer.video.tracker import IoUTracker, iou
from fer.vision.faces import Box, FaceDetector

skimage_data = pytest.importorskip("skimage.data")

FPS = 30.0
SIZE = (640, 480)
HEAD = (130, 20, 190, 220)  # x, y, w, h of the astronaut's head and shoulders in skimage.data.astronaut()
FACE = (42, 42, 106, 106)  # where the cascade finds her face inside that patch
QUIET = VideoOptions(progress=False)


def head() -> np.ndarray:
    x, y, w, h = HEAD
    return cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)[y : y + h, x : x + w]


def film(path: Path, frames: int, faces: int = 1, fourcc: str = "mp4v", hidden: range = range(0)) -> list[list[Box]]:
    """Write a 640x480 video of the astronaut's head on gray: one head moving right and down while it grows
    (x 60 -> 400, scale 0.9 -> 1.2), or four still heads tiled; the frames in ``hidden`` are gray only.
    Returns where each face is, per frame."""
    patch = head()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, SIZE)
    placed = []
    for index in range(frames):
        image = np.full((SIZE[1], SIZE[0], 3), 110, dtype=np.uint8)
        t = index / max(frames - 1, 1)
        spots = [(60 + 340 * t, 80 + 80 * t, 0.9 + 0.3 * t)] if faces == 1 else [(20 + 320 * (k % 2), 10 + 240 * (k // 2), 0.95) for k in range(faces)]
        boxes = []
        for x, y, scale in [] if index in hidden else spots:
            scaled = cv2.resize(patch, None, fx=scale, fy=scale)
            x, y = int(x), int(y)
            image[y : y + scaled.shape[0], x : x + scaled.shape[1]] = scaled[: SIZE[1] - y, : SIZE[0] - x]
            boxes.append(Box(*(round(v) for v in (x + FACE[0] * scale, y + FACE[1] * scale, FACE[2] * scale, FACE[3] * scale))))
        writer.write(image)
        placed.append(boxes)
    writer.release()
    return placed


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> FERClassifier:
    return load_model(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def one_face(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[Box]]]:
    path = tmp_path_factory.mktemp("video") / "one.mp4"
    return path, film(path, 75)


@pytest.fixture(scope="module")
def four_faces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[Box]]]:
    path = tmp_path_factory.mktemp("video") / "four.mp4"
    return path, film(path, 45, faces=4)


def analyze(model: FERClassifier, video: Path, out: Path, options: VideoOptions = QUIET, fmt: str = "csv", resume: bool = False,
            annotated: Path | None = None) -> tuple[VideoSummary, list[dict]]:
    with RowsFile(out, fmt, resume=resume) as writer:
        summary = analyze_video(model, video, FaceDetector(), options, writer, annotated)
    return summary, read_rows(out)


def test_one_face_is_followed_where_it_was_placed_with_one_track(model: FERClassifier, one_face: tuple, tmp_path: Path) -> None:
    video, placed = one_face
    summary, rows = analyze(model, video, tmp_path / "rows.csv")
    assert (summary.frames_read, summary.frames_expected, summary.rows, summary.faces, summary.tracks) == (75, 75, 75, 75, 1)
    assert not summary.stopped_early and summary.error is None and summary.frames_per_second > 0
    assert [row["frame"] for row in rows] == list(range(75))
    for row in rows:
        assert row["status"] == "ok" and row["track"] == 1 and row["emotion"] in CLASSES
        assert row["time"] == pytest.approx(row["frame"] / FPS, abs=1e-6)
        assert sum(row[f"p_{c}"] for c in CLASSES) == pytest.approx(1.0, abs=1e-5)
        assert row["confidence"] == max(row[f"p_{c}"] for c in CLASSES)
        box = Box(row["x"], row["y"], row["w"], row["h"])
        # boxes are held for the 4 frames between detections, while the face moves about 5 px a frame
        assert iou(box, placed[row["frame"]][0]) > (0.6 if row["frame"] % 5 == 0 else 0.4), row


def test_four_faces_get_four_stable_tracks(model: FERClassifier, four_faces: tuple, tmp_path: Path) -> None:
    video, placed = four_faces
    summary, rows = analyze(model, video, tmp_path / "rows.jsonl", fmt="json")
    assert (summary.rows, summary.faces, summary.tracks) == (45 * 4, 45 * 4, 4)
    assert list(json.loads((tmp_path / "rows.jsonl").read_text().splitlines()[0])) == list(FIELDS)
    where: dict[int, set[int]] = {}
    for frame in range(45):
        found = [row for row in rows if row["frame"] == frame]
        assert sorted(row["track"] for row in found) == [1, 2, 3, 4]
        for row in found:
            box = Box(row["x"], row["y"], row["w"], row["h"])
            where.setdefault(row["track"], set()).add(max(range(4), key=lambda k: iou(box, placed[frame][k])))
            assert max(iou(box, face) for face in placed[frame]) > 0.6
    assert sorted(min(spots) for spots in where.values()) == [0, 1, 2, 3] and all(len(spots) == 1 for spots in where.values())


@pytest.mark.parametrize(("max_missed_s", "tracks"), [(1.0, [1]), (0.1, [1, 2])])
def test_a_face_missed_for_a_while_keeps_its_id_for_max_missed_s(
    model: FERClassifier, tmp_path: Path, max_missed_s: float, tracks: list[int]
) -> None:
    video = tmp_path / "gap.mp4"
    # a third of a second without the face (which moves about 3 px a frame), detected on every frame
    film(video, 120, hidden=range(50, 60))
    options = VideoOptions(progress=False, detect_every=1, max_missed_s=max_missed_s)
    summary, rows = analyze(model, video, tmp_path / "rows.csv", options)
    assert [row["status"] for row in rows[50:60]] == ["no_face"] * 10
    assert sorted({row["track"] for row in rows if row["status"] == "ok"}) == tracks
    assert summary.tracks == len(tracks) and summary.faces == 110


def test_max_missed_s_is_counted_in_detections_at_the_video_frame_rate() -> None:
    assert VideoOptions(detect_every=5, max_missed_s=1.0).max_missed(30.0) == 6
    assert VideoOptions(detect_every=1, max_missed_s=1.0).max_missed(25.0) == 25
    assert VideoOptions(detect_every=1, max_missed_s=0.5).max_missed(0.0) == 15  # no frame rate in the container: 30
    with pytest.raises(ValueError, match="max_missed_s"):
        VideoOptions(max_missed_s=-1.0)


def test_tracker_starts_and_drops_tracks() -> None:
    tracker = IoUTracker(min_iou=0.3, max_missed=1)
    a, b = Box(0, 0, 100, 100), Box(300, 0, 100, 100)
    assert [t.id for t in tracker.update([a, b])] == [1, 2]
    assert [t.id for t in tracker.update([Box(10, 5, 100, 100)])] == [1]  # b missed once: kept, not visible
    assert [t.id for t in tracker.update([Box(12, 5, 100, 100), b])] == [1, 2]
    tracker.update([])
    tracker.update([])  # missed twice > max_missed: both dropped
    assert [t.id for t in tracker.update([a])] == [3]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_resume_after_a_kill_gives_the_rows_of_a_clean_run(model: FERClassifier, four_faces: tuple, tmp_path: Path, fmt: str) -> None:
    video, _ = four_faces
    options = VideoOptions(progress=False, smoothing=0.6, detect_every=3)
    _, clean = analyze(model, video, tmp_path / f"clean{SUFFIXES[fmt]}", options, fmt)
    killed = tmp_path / f"killed{SUFFIXES[fmt]}"
    analyze(model, video, killed, options, fmt)
    data = killed.read_bytes()
    killed.write_bytes(data[: len(data) * 11 // 20 + 37])  # a kill in the middle of a line
    summary, resumed = analyze(model, video, killed, options, fmt, resume=True)
    assert summary.resumed_at is not None and 0 < summary.resumed_at < 45 and summary.frames_analysed == 45 - summary.resumed_at
    assert summary.rows == len(clean) == 45 * 4 and summary.tracks == 4
    assert len(resumed) == len(clean)
    probabilities = [f"p_{c}" for c in CLASSES] + ["confidence"]
    for got, want in zip(resumed, clean):
        assert {k: got[k] for k in FIELDS if k not in probabilities} == {k: want[k] for k in FIELDS if k not in probabilities}
        np.testing.assert_allclose([got[k] for k in probabilities], [want[k] for k in probabilities], atol=1e-5)


@pytest.mark.parametrize("every", [1, 3])
def test_a_run_killed_while_a_face_is_missing_resumes_with_its_track(model: FERClassifier, tmp_path: Path, every: int) -> None:
    video = tmp_path / "gap.mp4"
    film(video, 120, hidden=range(50, 60))
    options = VideoOptions(progress=False, detect_every=every, smoothing=0.5)
    _, clean = analyze(model, video, tmp_path / "clean.csv", options)
    killed = tmp_path / "killed.csv"
    lines = (tmp_path / "clean.csv").read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines[1:], 1) if line.startswith(f"{video},56,"))
    killed.write_text("".join(lines[:cut]) + lines[cut][:20])  # killed while writing frame 56, the face gone since 50
    summary, resumed = analyze(model, video, killed, options, resume=True)
    assert summary.resumed_at == 55 and summary.tracks == 1
    assert [(row["frame"], row["status"], row["track"]) for row in resumed] == [(row["frame"], row["status"], row["track"]) for row in clean]
    assert {row["track"] for row in resumed[60:]} == {1}  # the face that came back kept its id
    faces = [i for i, row in enumerate(clean) if row["status"] == "ok"]
    np.testing.assert_allclose([resumed[i]["p_happy"] for i in faces], [clean[i]["p_happy"] for i in faces], atol=1e-5)  # smoothing went on


def test_smoothing_changes_probabilities_not_rows(model: FERClassifier, one_face: tuple, tmp_path: Path) -> None:
    video, _ = one_face
    _, plain = analyze(model, video, tmp_path / "plain.csv")
    _, smooth = analyze(model, video, tmp_path / "smooth.csv", VideoOptions(progress=False, smoothing=0.8))
    assert len(plain) == len(smooth) == 75
    assert smooth[0]["p_happy"] == pytest.approx(plain[0]["p_happy"])  # the average starts at the first frame
    raw, averaged = (np.array([[row[f"p_{c}"] for c in CLASSES] for row in rows]) for rows in (plain, smooth))
    np.testing.assert_allclose(averaged[1:], 0.8 * averaged[:-1] + 0.2 * raw[1:], rtol=1e-6)
    assert not np.array_equal(raw, averaged) and np.abs(np.diff(averaged, axis=0)).sum() < np.abs(np.diff(raw, axis=0)).sum()
    assert all(sum(row[f"p_{c}"] for c in CLASSES) == pytest.approx(1.0, abs=1e-5) for row in smooth)
    with pytest.raises(ValueError, match="video.smoothing"):
        analyze(model, video, tmp_path / "bad.csv", VideoOptions(progress=False, smoothing=1.0))


def test_annotated_copy_has_every_frame(model: FERClassifier, one_face: tuple, tmp_path: Path) -> None:
    video, _ = one_face
    target = tmp_path / "one.annotated.mp4"
    _, rows = analyze(model, video, tmp_path / "rows.csv", annotated=target)
    capture = cv2.VideoCapture(str(target))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 75
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape == (480, 640, 3)
    x, y, w = rows[0]["x"], rows[0]["y"], rows[0]["w"]
    assert first[y, x + w // 2, 1] > 180 and first[y, x + w // 2, 0] < 100, "the box is drawn in green"


def test_bad_videos_each_get_a_row_that_says_so(model: FERClassifier, tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video at all")
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), FPS, SIZE).release()
    for path, message in ((fake, "Cannot open video"), (tmp_path / "missing.mp4", "no such file"), (empty, "Cannot open video|holds no frames")):
        summary, rows = analyze(model, path, tmp_path / f"{path.stem}.csv")
        assert len(rows) == 1 and rows[0]["status"] == "error" and rows[0]["frame"] is None, path
        assert summary.error is not None and re.search(message, rows[0]["error"]), rows[0]["error"]


def test_a_frame_opencv_fails_on_stops_the_video_with_a_row(model: FERClassifier, one_face: tuple, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    detect = FaceDetector.detect

    def failing(self: FaceDetector, gray: np.ndarray) -> list[Box]:
        if failing.calls == 3:
            raise cv2.error("odd frame")
        failing.calls += 1
        return detect(self, gray)

    failing.calls = 0
    monkeypatch.setattr(FaceDetector, "detect", failing)
    summary, rows = analyze(model, one_face[0], tmp_path / "rows.csv", VideoOptions(progress=False, batch_frames=5))
    assert summary.stopped_early and summary.frames_read == 15 and [row["frame"] for row in rows] == [*range(15), 15]
    assert rows[-1]["status"] == "error" and "no rows from frame 15 on" in rows[-1]["error"]


def test_a_truncated_video_keeps_the_frames_before_the_damage(model: FERClassifier, tmp_path: Path) -> None:
    video = tmp_path / "cut.avi"
    film(video, 40, fourcc="MJPG")
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])  # the index at the end is gone with the second half
    summary, rows = analyze(model, video, tmp_path / "cut.csv")
    assert summary.stopped_early and summary.frames_expected == 40 and 5 < summary.frames_read < 40
    frames = [row for row in rows if row["status"] == "ok"]
    assert [row["frame"] for row in frames] == list(range(summary.frames_read))
    assert rows[-1]["status"] == "error" and f"{summary.frames_read} frames read of the 40" in rows[-1]["error"]


def test_an_unreadable_frame_gets_an_error_row_and_the_video_goes_on(model: FERClassifier, one_face: tuple, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    video, _ = one_face

    class Damaged:
        """A capture whose frames 10 and 11 fail to decode."""

        def __init__(self, path: Path) -> None:
            self.capture, self.index = cv2.VideoCapture(str(path)), 0

        def read(self) -> tuple[bool, np.ndarray | None]:
            ok, image = self.capture.read()
            self.index += 1
            return (False, None) if self.index in (11, 12) else (ok, image)

        def __getattr__(self, name: str):
            return getattr(self.capture, name)

    monkeypatch.setattr(reader_module, "open_capture", Damaged)
    summary, rows = analyze(model, video, tmp_path / "rows.csv")
    assert len(rows) == 75 and not summary.stopped_early and summary.errors == 2
    assert [row["frame"] for row in rows if row["status"] == "error"] == [10, 11]
    assert "frame 10 could not be decoded" in rows[10]["error"] and rows[12]["status"] == "ok"


def test_reader_gives_times_and_refuses_a_missing_file(one_face: tuple, tmp_path: Path) -> None:
    video, _ = one_face
    with FrameReader(video, start=70, queue_frames=2) as frames:
        got = [(frame.index, frame.time, frame.gray.shape) for frame in frames]
    assert got == [(i, pytest.approx(i / FPS), (480, 640)) for i in range(70, 75)] and frames.frames_read == 75
    with FrameReader(video, queue_frames=2) as frames:  # stopping early does not hang on the full queue
        next(iter(frames))
    with pytest.raises(VideoReadError, match="no such file"):
        FrameReader(tmp_path / "nothing.mp4")


def test_a_stage_error_reaches_the_consumer_and_close_stops_a_waiting_stage() -> None:
    def failing():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"), Background(failing(), ahead=1) as stage:
        list(stage)
    endless = Background(iter(int, 1), ahead=2)  # never ends: its thread waits for room in the queue
    assert next(iter(endless)) == 0
    endless.close()
    assert not endless._thread.is_alive()


def predict_cfg(tmp_path: Path, checkpoint: Path, inputs: list[str], *overrides: str) -> DictConfig:
    cfg = compose_config([f"ckpt_path={checkpoint}", "video.progress=false", *overrides], config_name="predict")
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
    cfg.inputs = inputs
    return cfg


def test_predict_takes_a_folder_mixing_photos_and_videos(tmp_path: Path, tiny_checkpoint: Path, one_face: tuple,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "inputs"
    (folder / "clips").mkdir(parents=True)
    os.link(one_face[0], folder / "clips" / "one.mp4")
    (folder / "clips" / "fake.mov").write_text("not a video")
    Image.fromarray(cv2.cvtColor(head(), cv2.COLOR_BGR2RGB)).save(folder / "photo.png")
    cfg = predict_cfg(tmp_path, tiny_checkpoint, [str(folder)], "video.annotate=true", "video.timeline=true", "resume=true")
    with caplog.at_level(logging.INFO):
        rows = predict(cfg)
    assert "no rows file" in caplog.text  # resume=true with nothing to resume starts fresh, and says so
    assert [Path(row["file"]).name for row in rows] == ["photo.png"] and rows[0]["status"] == "ok"
    saved = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert saved["summary"]["images"] == 1 and [Path(v["file"]).name for v in saved["videos"]] == ["fake.mov", "one.mp4"]
    videos = tmp_path / "run" / "videos" / "inputs" / "clips"
    summary = json.loads((videos / "one.summary.json").read_text())
    assert (summary["frames_read"], summary["frames_expected"], summary["rows"], summary["tracks"], summary["stopped_early"]) == (75, 75, 75, 1, False)
    assert len(read_rows(videos / "one.jsonl")) == 75
    assert Image.open(videos / "one.timeline.png").size[0] > 500
    assert cv2.VideoCapture(str(videos / "one.annotated.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 75
    assert "Cannot open video" in json.loads((videos / "fake.summary.json").read_text())["error"]

    caplog.clear()
    with caplog.at_level(logging.INFO):
        predict(cfg)  # everything done: both videos are skipped
    assert caplog.text.count("already analysed") == 2

    whole = read_rows(videos / "one.jsonl")
    (videos / "one.summary.json").unlink()  # killed while it wrote the rows of frame 40
    text = (videos / "one.jsonl").read_text()
    (videos / "one.jsonl").write_text(text[: text.index('"frame": 40') + 30])
    cfg.video.annotate = False
    caplog.clear()
    with caplog.at_level(logging.INFO):
        predict(cfg)
    assert "resuming at frame 39 after 39 rows kept" in caplog.text and "already analysed" in caplog.text
    assert [row["frame"] for row in read_rows(videos / "one.jsonl")] == [row["frame"] for row in whole]


@pytest.mark.slow
def test_predict_entry_point_writes_video_csv(tmp_path: Path, tiny_checkpoint: Path, four_faces: tuple) -> None:
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "fer.predict", f"ckpt_path={tiny_checkpoint}", f"inputs=[{four_faces[0]}]", "format=csv", f"hydra.run.dir={run}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = read_rows(run / "videos" / "four.csv")
    assert len(rows) == 45 * 4 and {row["track"] for row in rows} == {1, 2, 3, 4}
    assert json.loads((run / "videos" / "four.summary.json").read_text())["faces"] == 180


@pytest.mark.slow
def test_a_run_killed_mid_video_resumes_where_it_stopped(tmp_path: Path, tiny_checkpoint: Path) -> None:
    video, run = tmp_path / "long.mp4", tmp_path / "run"
    film(video, 300)
    command = [sys.executable, "-m", "fer.predict", f"ckpt_path={tiny_checkpoint}", f"inputs=[{video}]", "format=csv", f"hydra.run.dir={run}",
               "video.progress=false", "video.smoothing=0.5"]
    rows_file = run / "videos" / "long.csv"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and (not rows_file.is_file() or rows_file.stat().st_size < 20_000):
        time.sleep(0.02)
    process.kill()
    process.wait()
    written = read_rows(rows_file)
    assert 0 < len(written) < 300, "the run was killed mid-video, with rows already on disk"
    result = subprocess.run([*command, "resume=true"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming at frame" in (run / "predict.log").read_text()
    rows = read_rows(rows_file)
    assert [row["frame"] for row in rows] == list(range(300)) and {row["track"] for row in rows} == {1}
    assert rows[: len(written) - 1] == written[:-1]  # what was written stays (the last frame kept is analysed again)


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_video(model: FERClassifier, tmp_path: Path) -> None:
    video = tmp_path / "long.mp4"
    film(video, 400)
    resident: dict[int, float] = {}

    class Measuring(RowsFile):
        def write(self, rows: list[dict]) -> None:
            super().write(rows)
            resident[rows[0]["frame"]] = rss_mb()

    with Measuring(tmp_path / "long.csv", "csv") as writer:
        summary = analyze_video(model, video, FaceDetector(), QUIET, writer)
    assert summary.frames_read == 400 and summary.faces == 400
    assert resident[399] - resident[100] < 30, f"RSS grew by {resident[399] - resident[100]:.1f} MB"
