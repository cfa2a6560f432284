"""The real server: a ``python -m fer.serve`` subprocess on a free port with the tiny checkpoint.

- In a browser: headless Chromium chooses a real face photo in the page's file picker, and what the
  page drew is read back from its DOM: the label and the bar widths must be the API's answer. Skips
  when Chromium, its driver or selenium is missing. The screenshot is kept in the test's tmp folder
  (``experiments/serve_screenshot.py`` takes the README's one against a running server).
- Over a raw socket: a client that stalls halfway through its upload gets 504 after the request
  timeout, and others are answered meanwhile."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "serve_screenshot.py"
STARTUP_S = 120.0
REQUEST_TIMEOUT_S = 4.0


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """experiments/serve_screenshot.py, or a skip saying what is missing for it (before any server starts)."""
    if importlib.util.find_spec("selenium") is None:
        pytest.skip("selenium is not installed (pip install selenium)")
    spec = importlib.util.spec_from_file_location("serve_screenshot", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if problem := module.missing_browser():
        pytest.skip(problem)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real server (its own process, as a user starts it), stopped after the module's tests."""
    port = free_port()
    tmp_path = tmp_path_factory.mktemp("serve")
    overrides = [f"ckpt_path={tiny_checkpoint}", f"port={port}", f"paths.log_dir={tmp_path / 'logs'}", f"limits.request_timeout_s={REQUEST_TIMEOUT_S}"]
    command = [sys.executable, "-m", "fer.serve", *overrides]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"fer.serve exited with {process.returncode}:\n{process.stdout.read()}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"fer.serve did not answer within {STARTUP_S} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.mark.slow
def test_page_draws_the_apis_answer(script: ModuleType, server: str, sample_portrait: Path, tmp_path: Path) -> None:
    expected = httpx.post(f"{server}/predict", files={"file": ("p.jpg", sample_portrait.read_bytes(), "image/jpeg")}, timeout=30).json()
    driver = script.chromium()
    try:
        [card] = script.classify_in_page(driver, server, [sample_portrait])
        script.save_page(driver, tmp_path / "serve.png")
    finally:
        driver.quit()
    assert card["state"] == "done", card["status"]
    assert card["canvas"] == [expected["width"], expected["height"]]
    [face] = card["faces"]
    [answer] = expected["faces"]
    assert face["emotion"] == answer["emotion"]
    for name, probability in answer["probabilities"].items():
        assert face["bars"][name] == pytest.approx(100 * probability, abs=0.06)
        assert face["rendered"][name] == pytest.approx(100 * probability, abs=1.0)
    assert (tmp_path / "serve.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_stalled_upload_times_out_without_holding_up_others(server: str, sample_portrait: Path) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as stalled:
        head = f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
        stalled.sendall(head.encode() + b"\xff\xd8\xff")  # the first bytes of a JPEG, then nothing
        started = time.monotonic()
        assert httpx.get(f"{server}/health", timeout=REQUEST_TIMEOUT_S / 2).status_code == 200
        other = httpx.post(f"{server}/predict", files={"file": ("p.jpg", sample_portrait.read_bytes(), "image/jpeg")}, timeout=REQUEST_TIMEOUT_S / 2)
        assert other.status_code == 200 and len(other.json()["faces"]) == 1
        assert time.monotonic() - started < REQUEST_TIMEOUT_S
        stalled.settimeout(REQUEST_TIMEOUT_S * 3)
        answer = b""
        while b"}" not in answer and (chunk := stalled.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 504"), answer
    assert time.monotonic() - started >= REQUEST_TIMEOUT_S - 0.5
    assert b'"error":"The request took longer than' in answer
