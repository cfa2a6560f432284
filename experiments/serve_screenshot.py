"""Screenshot of the fer.serve web page with photos classified, taken by headless Chromium.

Start the server first (``python -m fer.serve``, the packaged model), then:
``python experiments/serve_screenshot.py [--url http://127.0.0.1:8000] [--out experiments/serve_screenshot.png] [PHOTO ...]``
(default photos: matplotlib's Grace Hopper portrait and scikit-image's astronaut). Needs Debian's
``chromium`` and ``chromium-driver`` and the ``selenium`` package; tests/test_serve_browser.py uses
the same functions against a server it starts itself.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import matplotlib
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "chromium"
CHROMEDRIVER = "chromedriver"
# every result card as the page shows it: state, status line, canvas size, and per face the label,
# each bar's width as set and as rendered (fill / track), in percent
READ_RESULTS = """
return [...document.querySelectorAll('.result')].map((card) => ({
  state: card.dataset.state || null,
  status: card.querySelector('.status').textContent,
  canvas: [card.querySelector('canvas').width, card.querySelector('canvas').height],
  faces: [...card.querySelectorAll('.face')].map((face) => ({
    emotion: face.querySelector('.emotion').textContent,
    bars: Object.fromEntries([...face.querySelectorAll('.bar')].map((bar) => [bar.dataset.class, parseFloat(bar.querySelector('.fill').style.width)])),
    rendered: Object.fromEntries([...face.querySelectorAll('.bar')].map((bar) => [
      bar.dataset.class, 100 * bar.querySelector('.fill').getBoundingClientRect().width / bar.querySelector('.track').getBoundingClientRect().width])),
  })),
}));
"""


def missing_browser() -> str | None:
    """Why headless Chromium cannot be driven here, or None when it can."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian: apt-get install -y chromium chromium-driver)"
    return None


def chromium(width: int = 1280, height: int = 1100) -> webdriver.Chrome:
    """Headless Chromium through Debian's chromedriver (named, so that Selenium downloads nothing)."""
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(shutil.which(CHROMEDRIVER)))


def classify_in_page(driver: webdriver.Chrome, url: str, photos: list[Path], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Open the page, choose ``photos`` in its file picker, wait until every card is drawn; the cards, newest first."""
    driver.get(url)
    driver.find_element(By.ID, "files").send_keys("\n".join(str(p.resolve()) for p in photos))
    WebDriverWait(driver, timeout).until(lambda d: (cards := d.execute_script(READ_RESULTS)) and len(cards) == len(photos) and all(c["state"] for c in cards))
    return driver.execute_script(READ_RESULTS)


def save_page(driver: webdriver.Chrome, path: Path) -> None:
    """A PNG of the whole page, not only the window: the window is stretched to the page's height first."""
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, driver.execute_script("return document.documentElement.scrollHeight") + 140)
    driver.save_screenshot(str(path))


def default_photos(folder: Path) -> list[Path]:
    """Grace Hopper (one face) and the astronaut at 640x480, written to ``folder`` for the file picker."""
    from skimage import data

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    astronaut = folder / "astronaut.jpg"
    Image.fromarray(data.astronaut()).resize((640, 640), Image.Resampling.LANCZOS).crop((0, 0, 640, 480)).save(astronaut, quality=90)
    return [hopper, astronaut]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "serve_screenshot.png")
    parser.add_argument("photos", type=Path, nargs="*")
    args = parser.parse_args()
    if problem := missing_browser():
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory() as folder:
        photos = args.photos or default_photos(Path(folder))
        driver = chromium()
        try:
            cards = classify_in_page(driver, args.url, photos)
            save_page(driver, args.out)
        finally:
            driver.quit()
    from lean_pngs import lean  # beside this script; imported here so that the tests can load the module alone

    lean(args.out)  # a palette PNG, a third of the bytes, as every tracked PNG (tests/test_gpu_payload.py)
    for card in cards:
        print(card["status"], [face["emotion"] for face in card["faces"]])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
