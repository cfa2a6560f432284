"""The FastAPI app: ``create_app(model, settings)``, the JSON API and the web page in ``static/``.

- ``POST /predict``: one image (a multipart file part, or the raw body with an ``image/*`` type);
  options ``tta`` (none | flip | tencrop; default the server's) and ``detect`` (false: the whole
  image is one face crop), as query parameters or form fields. The answer holds, per face, the
  fields of fer.predict's JSON rows (``face``, ``box``, ``source``, ``aligned``, ``emotion``,
  ``confidence``, ``probabilities``) and the upright image's ``width`` and ``height``.
- ``GET /health``, ``GET /model`` (:func:`fer.serve.card.model_info`), ``GET /docs`` (OpenAPI).

Every request is bounded: its bytes (413), its pixels (400, from the header), its time (504, the
upload's reading included, so a slow client holds only its own request) and the number in flight
(503), and the bytes of all uploads held at once (503). Errors are JSON ``{"error": ...}`` and never stop the server. Decoding and face detection
run in a thread pool, one face detector per thread (an OpenCV cascade is not shared between
threads), the model in the batcher's thread: the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect

from fer.inference import FoundFaces, find_faces, predictions_of, prepare_faces
from fer.serve.batcher import Batcher
from fer.serve.card import model_info
from fer.serve.pipeline import classify_batch
from fer.serve.settings import Settings
from fer.serve.uploads import BadUpload, ByteBudget, ServerBusy, UploadTooLarge, decode_image, form_image, read_body
from fer.training.module import FERClassifier
from fer.training.tta import TTA_MODES, check_mode
from fer.vision.faces import FaceDetector

STATIC_DIR = Path(__file__).resolve().parent / "static"
FALSE_WORDS = ("0", "false", "no", "off")
# the page loads only its own files; camera frames and uploads are drawn from blob: URLs
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
}
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}, "tta": {"type": "string"}, "detect": {"type": "boolean"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class Service:
    """What the routes share: the model, the limits, the batcher and the thread pool with its detectors."""

    def __init__(self, model: FERClassifier, settings: Settings) -> None:
        self.model = model.eval()
        self.settings = settings
        self.tta = check_mode(settings.tta or model.tta, "tta")
        self.pending = 0  # requests in /predict
        self.preparing = 0  # of which being decoded and searched for faces: the batcher waits for them
        self.batcher = Batcher(
            lambda inputs, tta: classify_batch(model, inputs, tta), settings.batch_size, settings.max_batch_wait_ms / 1000, lambda: self.preparing > 0
        )
        self.uploads = ByteBudget(settings.max_inflight_bytes)
        self.pool: ThreadPoolExecutor | None = None
        self.helper: ThreadPoolExecutor | None = None  # the second core's half of a lone request's face search
        self.split_searches = 0  # face searches split with the helper (for /health and the tests)
        self._local = threading.local()

    async def start(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=self.settings.preprocess_threads, thread_name_prefix="fer-decode")
        self.helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fer-detect-half")
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        for pool in (self.pool, self.helper):
            if pool is not None:
                pool.shutdown(wait=True)

    def prepare(self, data: bytes, detect: bool) -> tuple[np.ndarray, FoundFaces, torch.Tensor]:
        """Decode and find the faces (in a pool thread): the upright image, its faces and the model's inputs for them.

        A request alone in the server has a core to spare: its face search (most of its time) is split
        with the helper thread, the same boxes sooner; under load each search keeps to its own thread."""
        image = decode_image(data, self.settings.max_pixels)
        if not hasattr(self._local, "detector"):
            self._local.detector = FaceDetector(**self.settings.detector)
        alone = self.settings.split_alone and self.pending == 1
        found = find_faces(image, self._local.detector, self.settings.crop_max_side, detect, self.settings.detect_max_side, self.helper if alone else None)
        self.split_searches += alone and found.source == "detected"
        return image, found, prepare_faces(found.crops, self.model.input_spec)

    async def predict(self, request: Request, tta: str | None, detect: bool) -> dict[str, Any]:
        """Read, decode, find the faces, classify them with whatever else is queued; the JSON answer."""
        started = time.perf_counter()
        body = await read_body(request.headers, request.stream(), self.settings.max_upload_bytes, self.uploads)
        try:
            result = await self.answer(request.headers, body, tta, detect)
        finally:
            self.uploads.give(len(body))
        return {**result, "elapsed_ms": round(1000 * (time.perf_counter() - started), 1)}

    async def answer(self, headers: Headers, body: bytes, tta: str | None, detect: bool) -> dict[str, Any]:
        """The answer for a body read in full: its options, decoding and faces in the pool, the batched model."""
        if headers.get("content-type", "").lower().startswith("multipart/form-data"):
            body, fields = await form_image(headers, body, self.settings.max_upload_bytes)
            tta = fields.get("tta", tta)
            detect = detect if "detect" not in fields else fields["detect"].lower() not in FALSE_WORDS
        mode = self.tta if tta in (None, "") else tta
        if mode not in TTA_MODES:
            raise BadUpload(f"tta={mode!r} must be one of {', '.join(TTA_MODES)} (or left out: {self.tta}).")
        self.preparing += 1
        try:
            image, found, inputs = await asyncio.get_running_loop().run_in_executor(self.pool, self.prepare, body, detect)
        finally:
            self.preparing -= 1
        probabilities = await self.batcher.submit(inputs, mode)
        faces = [{"face": index, **face.as_dict()} for index, face in enumerate(predictions_of(found, probabilities))]
        height, width = image.shape[:2]
        return {"faces": faces, "width": width, "height": height, "tta": mode, "detect": detect}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(model: FERClassifier, settings: Settings, ckpt_path: str | None = None) -> FastAPI:
    """The app for ``model`` under ``settings``; ``ckpt_path`` (None: the packaged model) names it in ``GET /model``."""
    service = Service(model, settings)
    card = model_info(model, ckpt_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        yield
        await service.stop()

    app = FastAPI(title="fer: facial expression recognition", version="1", lifespan=lifespan)
    app.state.service = service
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Up and answering; requests in flight, the bytes of their uploads, the faces per recent model call."""
        sizes = list(service.batcher.batch_sizes)
        return {
            "status": "ok",
            "pending": service.pending,
            "upload_bytes": service.uploads.used,
            "model_calls": len(sizes),
            "recent_batch_faces": sizes[-20:],
            "split_searches": service.split_searches,
        }

    @app.get("/model")
    async def model_card() -> dict[str, Any]:
        """The served model: checkpoint, net, class order of the probabilities, input, TTA, temperature."""
        return {**card, "serving_tta": service.tta}

    @app.post("/predict", openapi_extra=PREDICT_BODY, response_model=None)
    async def predict(request: Request, tta: str | None = None, detect: bool = True) -> dict[str, Any] | JSONResponse:
        """The faces of one image with their boxes, emotions and the seven probabilities."""
        if service.pending >= settings.max_pending:
            return error(503, f"The server has {service.pending} requests in flight, its limit: try again shortly.")
        service.pending += 1
        try:
            async with asyncio.timeout(settings.request_timeout_s):
                return await service.predict(request, tta, detect)
        except TimeoutError:
            return error(504, f"The request took longer than {settings.request_timeout_s} s (upload, decoding and the model together).")
        except UploadTooLarge as problem:
            return error(413, str(problem))
        except ServerBusy as problem:
            return error(503, str(problem))
        except BadUpload as problem:
            return error(400, str(problem))
        except ClientDisconnect:
            return error(400, "The client went away before the upload was complete.")
        finally:
            service.pending -= 1

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, problem: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in problem.errors())
        return error(400, f"Invalid request: {where}.")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, problem: Exception) -> JSONResponse:
        return error(500, f"Internal error ({type(problem).__name__}); the server is still up.")

    return app
