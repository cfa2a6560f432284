"""fer.serve in process (FastAPI's TestClient): the routes, the per-face rows, every kind of hostile
upload, EXIF orientation, the request timeout, cross-request batching, and the entry point's
model-loading contract. The browser drives the real server in test_serve_browser.py."""

from __future__ import annotations

import asyncio
import io
import resource
import struct
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from helpers import compose_config, synthetic_face, write_packaged
from PIL import Image
from starlette.datastructures import Headers

import fer
import fer.serve.__main__ as serve_main
from fer import packaged
from fer.classes import CLASSES
from fer.predict import ROW_KEYS
from fer.run.hardware import resolve_precision
from fer.serve.app import create_app
from fer.serve.batcher import Batcher
from fer.serve.pipeline import classify_batch
from fer.serve.settings import Settings
from fer.serve.uploads import ByteBudget, ServerBusy, UploadTooLarge, read_body
from fer.training.module import FERClassifier

FACE_KEYS = set(ROW_KEYS) - {"file", "status", "error"}


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> FERClassifier:
    return fer.load_model(str(tiny_checkpoint))


@pytest.fixture(scope="module")
def client(model: FERClassifier, tiny_checkpoint: Path) -> Iterator[TestClient]:
    with TestClient(create_app(model, Settings(max_upload_bytes=2_000_000, max_pixels=20_000_000), str(tiny_checkpoint))) as client:
        yield client


@pytest.fixture(scope="module")
def portrait_jpeg(sample_portrait: Path) -> bytes:
    return sample_portrait.read_bytes()


def encode(image: Image.Image | np.ndarray, fmt: str = "JPEG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def post_file(client: TestClient, data: bytes, params: dict[str, str] | None = None, **fields: str) -> Any:
    return client.post("/predict", params=params, files={"file": ("photo.jpg", data, "image/jpeg")}, data=fields)


def bomb_png(side: int = 30000) -> bytes:
    """A real decompression bomb: a 1-bit ``side`` x ``side`` PNG of zeros, about 100 KB that would decode to ``side**2`` bytes."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    row = bytes(1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# ---- the routes ----


def test_health_and_model_card(client: TestClient, tiny_checkpoint: Path, model: FERClassifier) -> None:
    assert client.get("/health").json()["status"] == "ok"
    card = client.get("/model").json()
    assert card["checkpoint"] == str(tiny_checkpoint.resolve())
    assert card["model"] == "vgg1"
    assert card["classes"] == list(CLASSES)
    assert card["input_spec"] == {"image_size": 48, "crop_size": 48, "channels": 1}
    assert card["tta"] == model.tta and card["temperature"] == pytest.approx(model.temperature)
    assert card["precision"] == model.inference_precision == "32-true"


def test_model_card_of_the_packaged_model(model: FERClassifier, tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged, "WEIGHTS_DIR", write_packaged(tmp_path / "weights", tiny_checkpoint))
    with TestClient(create_app(fer.load_model(), Settings())) as packaged_client:
        card = packaged_client.get("/model").json()
    assert card["checkpoint"] == "packaged" and card["card"] == packaged.card() and card["model"] == "vgg1"


def test_page_static_files_and_openapi(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200
    assert client.get("/static/../app.py").status_code == 404 and client.get("/static/%2e%2e/app.py").status_code == 404


def test_predict_a_real_face_gives_fer_predict_rows(client: TestClient, portrait_jpeg: bytes) -> None:
    response = post_file(client, portrait_jpeg)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["width"], result["height"]) == (512, 600)
    [face] = result["faces"]
    assert set(face) == FACE_KEYS
    x, y, w, h = face["box"]
    assert face["source"] == "detected" and 100 < x < 250 and 50 < y < 200 and 150 < w < 350
    assert list(face["probabilities"]) == list(CLASSES)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["emotion"] == max(face["probabilities"], key=face["probabilities"].get)
    assert face["confidence"] == pytest.approx(max(face["probabilities"].values()))


def test_detect_false_and_raw_body_classify_the_whole_image(client: TestClient, portrait_jpeg: bytes) -> None:
    as_form = post_file(client, portrait_jpeg, detect="false").json()
    as_query = client.post("/predict", params={"detect": "false"}, content=portrait_jpeg, headers={"content-type": "image/jpeg"}).json()
    for result in (as_form, as_query):
        [face] = result["faces"]
        assert face["box"] == [0, 0, 512, 600] and face["source"] == "crop"
    assert as_form["faces"][0]["probabilities"] == pytest.approx(as_query["faces"][0]["probabilities"])


def test_several_faces_and_tta(client: TestClient, sample_portrait: Path) -> None:
    portrait = np.asarray(Image.open(sample_portrait).convert("RGB"))
    pair = np.concatenate([portrait, np.full((600, 80, 3), 120, np.uint8), portrait], axis=1)
    result = post_file(client, encode(pair), tta="flip").json()
    assert result["tta"] == "flip"
    boxes = [face["box"] for face in result["faces"]]
    assert len(boxes) == 2 and boxes[0][0] < 512 < 592 < boxes[1][0]
    assert [face["face"] for face in result["faces"]] == [0, 1]
    assert post_file(client, encode(pair), tta="sideways").status_code == 400
    invalid = post_file(client, encode(pair), params={"detect": "maybe"})
    assert invalid.status_code == 400 and "detect" in invalid.json()["error"]


# ---- hostile input ----


def test_over_the_limit_by_content_length_or_while_reading(client: TestClient) -> None:
    big = bytes(2_000_001)
    declared = client.post("/predict", content=big, headers={"content-type": "image/jpeg"})
    assert declared.status_code == 413 and "2000001 bytes" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked, counted while read
        for _ in range(40):
            yield bytes(100_000)

    streamed = client.post("/predict", content=chunks(), headers={"content-type": "image/jpeg"})
    assert streamed.status_code == 413 and "over 2000000 bytes" in streamed.json()["error"]


def test_a_client_that_understates_content_length_is_cut_off() -> None:
    async def body() -> Any:
        for _ in range(10):
            yield bytes(1000)

    budget = ByteBudget(10**6)
    with pytest.raises(UploadTooLarge):
        asyncio.run(read_body(Headers({"content-length": "100"}), body(), 5000, budget))
    assert budget.used == 0  # what it had read is given back


def test_uploads_held_at_once_are_bounded() -> None:
    async def body(size: int) -> Any:
        yield bytes(size)

    async def run(budget: ByteBudget) -> None:
        first = await read_body(Headers({}), body(600), 1000, budget)
        with pytest.raises(ServerBusy):
            await read_body(Headers({}), body(600), 1000, budget)
        budget.give(len(first))
        await read_body(Headers({}), body(600), 1000, budget)

    budget = ByteBudget(1000)
    asyncio.run(run(budget))
    assert budget.used == 600


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "Not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ""),
    ],
    ids=["empty", "text", "broken-png"],
)
def test_garbage_is_400_with_a_reason(client: TestClient, data: bytes, message: str) -> None:
    response = post_file(client, data)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_truncated_images_are_400(client: TestClient, portrait_jpeg: bytes, sample_portrait: Path) -> None:
    png = encode(Image.open(sample_portrait), "PNG")
    for data in (portrait_jpeg[: len(portrait_jpeg) // 2], png[: len(png) // 2]):
        response = post_file(client, data)
        assert response.status_code == 400 and "truncated" in response.json()["error"]


def test_malformed_forms_are_400(client: TestClient) -> None:
    no_file = client.post("/predict", data={"detect": "true"}, files={"other": ("", b"", "")})
    assert no_file.status_code == 400
    bad_form = client.post("/predict", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"})
    assert bad_form.status_code == 400


@pytest.mark.parametrize("side", [30000, 8000], ids=["beyond-pillow's-own-cap", "beyond-the-server's"])
def test_decompression_bomb_is_refused_from_its_header(client: TestClient, side: int) -> None:
    bomb = bomb_png(side)
    assert len(bomb) < 1_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    response = post_file(client, bomb)
    assert time.perf_counter() - started < 2.0
    assert response.status_code == 400 and f"{side * side} pixels" in response.json()["error"]
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: the image was never allocated


def test_uploads_stay_in_memory(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 1.5 MB file part would roll Starlette's spooled file over to disk: it must not."""

    def to_disk(self: Any) -> None:
        raise AssertionError("an upload was written to a temporary file")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", to_disk)
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    data = encode(noise, "PNG")
    assert 1_048_576 < len(data) < 2_000_000
    response = post_file(client, data)
    assert response.status_code == 200, response.text
    assert response.json()["width"] == 700


def test_exif_orientation_is_applied_before_detection(client: TestClient, sample_portrait: Path) -> None:
    upright = Image.open(sample_portrait).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # lying on its side, as a phone stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    with_exif = post_file(client, encode(stored, exif=exif.tobytes())).json()
    without = post_file(client, encode(stored)).json()
    reference = post_file(client, encode(upright)).json()
    assert (with_exif["width"], with_exif["height"]) == (512, 600) and (without["width"], without["height"]) == (600, 512)
    assert len(with_exif["faces"]) == 1
    assert np.allclose(with_exif["faces"][0]["box"], reference["faces"][0]["box"], atol=4)
    assert [face["box"] for face in without["faces"]] != [face["box"] for face in with_exif["faces"]]


def test_a_slow_request_times_out_and_the_server_stays_up(
    model: FERClassifier, tiny_checkpoint: Path, portrait_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow(model: FERClassifier, inputs: torch.Tensor, tta: str) -> np.ndarray:
        time.sleep(1.0)
        return classify_batch(model, inputs, tta)

    monkeypatch.setattr("fer.serve.app.classify_batch", slow)
    with TestClient(create_app(model, Settings(request_timeout_s=0.3), str(tiny_checkpoint))) as client:
        started = time.perf_counter()
        response = post_file(client, portrait_jpeg)
        assert response.status_code == 504 and "0.3 s" in response.json()["error"]
        assert time.perf_counter() - started < 1.0
        assert client.get("/health").json()["status"] == "ok"


def test_beyond_max_pending_is_503_at_once(model: FERClassifier, tiny_checkpoint: Path, portrait_jpeg: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(model: FERClassifier, inputs: torch.Tensor, tta: str) -> np.ndarray:
        time.sleep(0.8)
        return classify_batch(model, inputs, tta)

    monkeypatch.setattr("fer.serve.app.classify_batch", slow)
    with TestClient(create_app(model, Settings(max_pending=1), str(tiny_checkpoint))) as client:
        first: list[int] = []
        thread = threading.Thread(target=lambda: first.append(post_file(client, portrait_jpeg).status_code))
        thread.start()
        deadline = time.monotonic() + 5
        while client.get("/health").json()["pending"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = post_file(client, portrait_jpeg)
        thread.join()
    assert second.status_code == 503 and "in flight" in second.json()["error"]
    assert first == [200]


# ---- batching ----


def test_model_calls_run_in_the_models_inference_precision(model: FERClassifier) -> None:
    inputs = torch.from_numpy(np.stack([synthetic_face(label, 200) for label in range(len(CLASSES))])).unsqueeze(1)
    reference = classify_batch(model, inputs, "flip")
    model.use_precision("bf16-mixed")
    try:
        autocast = classify_batch(model, inputs, "flip")
    finally:
        model.use_precision("32-true")
    assert autocast.dtype == np.float32 and not np.array_equal(autocast, reference)
    np.testing.assert_allclose(autocast, reference, atol=0.03)


def test_batcher_combines_concurrent_submits(model: FERClassifier) -> None:
    faces = torch.randint(0, 256, (6, 2, 1, 48, 48), dtype=torch.uint8)

    async def run() -> tuple[list[np.ndarray], list[int]]:
        batcher = Batcher(lambda inputs, tta: classify_batch(model, inputs, tta), batch_size=32, max_wait_s=0.05)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit(job, "none") for job in faces))
        finally:
            await batcher.stop()
        return results, list(batcher.batch_sizes)

    results, sizes = asyncio.run(run())
    assert sizes == [12]  # six requests of two faces each: one model call
    for job, probabilities in zip(faces, results):
        np.testing.assert_allclose(probabilities, classify_batch(model, job, "none"), atol=1e-5)


def test_a_lone_request_does_not_wait_for_a_batch(model: FERClassifier) -> None:
    async def run() -> float:
        batcher = Batcher(lambda inputs, tta: classify_batch(model, inputs, tta), max_wait_s=2.0, more_coming=lambda: False)
        await batcher.start()
        try:
            started = time.perf_counter()
            await batcher.submit(torch.zeros((1, 1, 48, 48), dtype=torch.uint8), "none")
            return time.perf_counter() - started
        finally:
            await batcher.stop()

    assert asyncio.run(run()) < 1.0


def test_batcher_splits_by_batch_size_and_tta(model: FERClassifier) -> None:
    async def run() -> list[int]:
        batcher = Batcher(lambda inputs, tta: classify_batch(model, inputs, tta), batch_size=4, max_wait_s=0.05)
        await batcher.start()
        try:
            jobs = [batcher.submit(torch.zeros((1, 1, 48, 48), dtype=torch.uint8), "flip" if i % 2 else "none") for i in range(8)]
            await asyncio.gather(*jobs)
        finally:
            await batcher.stop()
        return list(batcher.batch_sizes)

    sizes = asyncio.run(run())
    assert sum(sizes) == 8 and max(sizes) <= 4 and max(sizes) > 1


def test_concurrent_requests_share_model_calls(model: FERClassifier, tiny_checkpoint: Path, portrait_jpeg: bytes) -> None:
    with TestClient(create_app(model, Settings(max_batch_wait_ms=100), str(tiny_checkpoint))) as client:
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(post_file(client, portrait_jpeg).status_code)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 6
        health = client.get("/health").json()
    assert health["model_calls"] < 6 and max(health["recent_batch_faces"]) > 1


def test_a_lone_requests_face_search_is_split_with_the_same_answer(model: FERClassifier, tiny_checkpoint: Path, sample_portrait: Path) -> None:
    portrait = np.asarray(Image.open(sample_portrait).convert("RGB"))
    pair = encode(np.concatenate([portrait, np.full((600, 80, 3), 120, np.uint8), portrait], axis=1))
    answers, splits = [], []
    for split_alone in (True, False):
        with TestClient(create_app(model, Settings(split_alone=split_alone), str(tiny_checkpoint))) as client:
            answers.append(post_file(client, pair).json()["faces"])
            post_file(client, pair, params={"detect": "false"})  # no search: nothing to split
            splits.append(client.get("/health").json()["split_searches"])
    assert splits == [1, 0]
    assert len(answers[0]) == 2 and answers[0] == answers[1]


# ---- the entry point ----


def test_entry_point_loads_the_packaged_model_or_a_checkpoint(
    tmp_path: Path, model: FERClassifier, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(packaged, "WEIGHTS_DIR", write_packaged(tmp_path / "weights", tiny_checkpoint))
    loads: list[tuple[Any, ...]] = []
    served: list[dict[str, Any]] = []
    monkeypatch.setattr(fer, "load_model", lambda *args, **kwargs: loads.append(args) or model)
    monkeypatch.setattr(serve_main.uvicorn, "run", lambda app, **kwargs: served.append(kwargs))
    threads: list[int] = []
    monkeypatch.setattr(serve_main.torch, "set_num_threads", threads.append)
    monkeypatch.setattr(serve_main.cv2, "setNumThreads", threads.append)
    precisions = []
    for overrides in ([], ["ckpt_path=some.ckpt", "port=9001", "precision=32-true"]):
        serve_main.serve(compose_config([f"paths.output_dir={tmp_path}", *overrides], config_name="serve"))
        precisions.append(model.inference_precision)
    assert loads == [(None,), ("some.ckpt",)]
    assert precisions == [resolve_precision("auto", "cpu"), "32-true"]
    assert served[0]["host"] == "127.0.0.1" and served[0]["port"] == 8000 and served[1]["port"] == 9001
    assert served[0]["limit_concurrency"] > 0 and served[0]["timeout_keep_alive"] > 0
    assert threads == [1, 1, 1, 1]


def test_settings_come_from_the_config() -> None:
    assert Settings.from_config(compose_config([], config_name="serve")) == Settings()  # the code's defaults are the config's
    settings = Settings.from_config(compose_config(["limits.max_upload_bytes=123", "batch.batch_size=7"], config_name="serve"))
    assert settings.max_upload_bytes == 123 and settings.batch_size == 7
    with pytest.raises(ValueError, match="max_pixels"):
        Settings(max_pixels=0)
