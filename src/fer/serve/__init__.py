"""A web demo and a JSON API for a trained model: ``python -m fer.serve [ckpt_path=PATH]``.

FastAPI on uvicorn: an asyncio server, so thousands of open connections (slow uploads included)
cost a coroutine each rather than a thread, and the slow parts (decoding, face detection, the model)
run in thread pools off the event loop, where OpenCV and torch release the GIL; FastAPI adds the
request parsing and OpenAPI docs (``/docs``) for little code, and it is a plain pip dependency with no
build step. One idea per module:

- :mod:`fer.serve.settings`: the limits and knobs, from ``conf/serve.yaml``
- :mod:`fer.serve.uploads`: reading a request body within a byte limit, and decoding it safely
- :mod:`fer.serve.pipeline`: an image -> its faces (boxes and crops), the model's batched call
- :mod:`fer.serve.batcher`: requests that arrive together are classified in one model call
- :mod:`fer.serve.card`: what ``GET /model`` says about the model
- :mod:`fer.serve.app`: the FastAPI app (routes, errors, timeouts) and the static web page
"""
