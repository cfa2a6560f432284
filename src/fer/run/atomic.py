"""Whole-file writes that a crash cannot leave half done.

:func:`atomic_write` writes into a hidden temporary file beside the target, fsyncs it and renames
it over the target (``os.replace``: atomic on POSIX within one filesystem, which the same folder
guarantees), then fsyncs the folder so that the rename itself survives a power cut.
A reader, or a run resumed after a crash, sees the old file or the new one, never part of one;
an exception inside the ``with`` block removes the temporary file and leaves the old file as it
was. Only a process killed mid-write leaves its ``.<name>.<random>.partial`` behind (hidden, and
ending in ``.partial`` so that no ``*.ckpt``, ``*.json`` or ``*.npz`` pattern finds it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``with atomic_write(path) as handle: handle.write(...)`` replaces ``path`` (its folder is
    created) when the block ends without an exception, and leaves it untouched otherwise. ``mode``
    is ``"w"`` (text; ``open_kwargs`` such as ``newline`` or ``encoding`` go to :func:`open`) or
    ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}.")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        with open(partial, mode.replace("w", "x"), **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX; a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
