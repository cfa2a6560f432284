"""Load test for a running ``python -m fer.serve``: N concurrent clients post a real face photo
for T seconds; prints requests/s, latency percentiles and failures, then the same as one JSON line.

The photo is 640x480 with one face: scikit-image's astronaut (Eileen Collins), scaled to 640 wide
and cut to 480 high from the top, so the face stays in. Each client sends one request at a time
(closed loop), so the number of clients is the concurrency the server sees.

Usage: python experiments/serve_load.py [--url http://127.0.0.1:8000] [--clients 1 16 64] [--seconds 10] [--image FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

WARM_UP_REQUESTS = 3


def astronaut_photo() -> bytes:
    """A 640x480 JPEG with one real face."""
    from skimage import data

    image = Image.fromarray(data.astronaut()).resize((640, 640), Image.Resampling.LANCZOS).crop((0, 0, 640, 480))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


async def client_loop(
    client: httpx.AsyncClient, url: str, photo: bytes, deadline: float, latencies: list[float], served: list[float], failures: dict[str, int]
) -> None:
    """Post the photo again and again until ``deadline``; per success the latency seen here and the
    server's own ``elapsed_ms`` (without this client's work, which shares the cores), per kind of failure a count."""
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            response = await client.post(url, files={"file": ("photo.jpg", photo, "image/jpeg")})
            answer = response.json() if response.status_code == 200 else {}
            ok = response.status_code == 200 and len(answer["faces"]) == 1
            kind = None if ok else f"http {response.status_code}" if response.status_code != 200 else "no face"
        except httpx.HTTPError as error:
            kind = type(error).__name__
        if kind is None:
            latencies.append(time.perf_counter() - started)
            served.append(answer["elapsed_ms"])
        else:
            failures[kind] = failures.get(kind, 0) + 1


async def measure(url: str, photo: bytes, clients: int, seconds: float) -> dict[str, object]:
    """One level of concurrency: ``clients`` loops for ``seconds``."""
    latencies: list[float] = []
    served: list[float] = []
    failures: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:
        for _ in range(WARM_UP_REQUESTS):
            await client.post(f"{url}/predict", files={"file": ("photo.jpg", photo, "image/jpeg")})
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client_loop(client, f"{url}/predict", photo, deadline, latencies, served, failures) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p90_ms": round(float(np.percentile(ms, 90)), 1) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
        "server_p50_ms": round(float(np.percentile(served, 50)), 1) if served else None,
        "failures": sum(failures.values()),
        "failure_kinds": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--image", type=Path, help="a photo with exactly one face (default: the astronaut at 640x480)")
    args = parser.parse_args()
    photo = args.image.read_bytes() if args.image else astronaut_photo()
    model = httpx.get(f"{args.url}/model", timeout=10.0).json()
    for clients in args.clients:
        result = asyncio.run(measure(args.url.rstrip("/"), photo, clients, args.seconds))
        print(
            f"{clients:3d} clients: {result['requests_per_s']:6.1f} req/s, p50 {result['p50_ms']} ms (server {result['server_p50_ms']}), "
            f"p99 {result['p99_ms']} ms, "
            f"{result['failures']} failures {result['failure_kinds'] or ''}"
        )
        print(json.dumps({"model": model.get("model"), "checkpoint": model.get("checkpoint"), **result}))


if __name__ == "__main__":
    main()
