"""Re-encode PNGs as ``fer.plots.save`` now writes them: an adaptive palette of 256 colours and
zlib's best compression, about a third of the bytes of matplotlib's RGBA.

The run plots under experiments/ were written before that, and the checkout has to travel to
the GPU host together with the data in 60 MiB a job (experiments/README.md, "The GPU rows").
Idempotent: a PNG already stored with a palette is left as it is, so a second pass changes no
byte and git sees no churn.

Usage: python experiments/lean_pngs.py [FOLDER ...]   (default: the folder of this script)
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image


def lean(path: Path) -> tuple[int, int]:
    """Re-encode one PNG in place unless it has a palette already; (bytes before, bytes after)."""
    before = path.stat().st_size
    with Image.open(path) as image:
        if image.mode == "P":
            return before, before
        encoded = io.BytesIO()
        image.convert("RGB").quantize(256).save(encoded, format="PNG", optimize=True)
    if encoded.tell() >= before:
        return before, before
    path.write_bytes(encoded.getvalue())
    return before, encoded.tell()


def main(folders: list[str]) -> None:
    total_before = total_after = changed = 0
    for folder in folders or [str(Path(__file__).resolve().parent)]:
        for path in sorted(Path(folder).rglob("*.png")):
            before, after = lean(path)
            total_before, total_after, changed = total_before + before, total_after + after, changed + (after != before)
    print(f"{changed} PNGs re-encoded; all PNGs: {total_before:,} -> {total_after:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
