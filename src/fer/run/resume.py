"""Find a run again from the command that started it, so that ``resume=true`` continues it.

A run directory is named ``<timestamp>_<key>``, where the key is ``run_name`` when given, else a
short hash of the command-line overrides without ``resume`` and ``run_name`` (sorted, so their order
does not matter). ``python -m fer.train <same overrides> resume=true`` therefore computes the same
key and, through the ``fer_run_dir`` resolver used by ``hydra.run.dir``, reopens the newest
directory with that key that holds a ``last.ckpt``; with nothing to resume it starts a fresh one.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from pathlib import Path

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

RESOLVER = "fer_run_dir"
IGNORED_KEYS = ("resume", "run_name")
LAST_CHECKPOINT = "last*.ckpt"
RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def override_key(override: str) -> str:
    """``+trainer.max_epochs=3`` -> ``trainer.max_epochs``."""
    return override.split("=", 1)[0].lstrip("+~")


def run_key(overrides: Iterable[str], run_name: str | None = None) -> str:
    """``run_name`` if given, else a 10-character hash of the overrides that define the run."""
    if run_name:
        if not RUN_NAME_PATTERN.fullmatch(run_name):
            raise ValueError(f"run_name={run_name!r} must be letters, digits, '.', '_' or '-' (it names a folder).")
        return run_name
    kept = sorted(str(o) for o in overrides if override_key(str(o)) not in IGNORED_KEYS)
    return hashlib.sha1("\n".join(kept).encode()).hexdigest()[:10]


def find_last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest ``last*.ckpt`` under ``run_dir`` (written every epoch, see conf/callbacks), if any."""
    candidates = [p for p in Path(run_dir).rglob(LAST_CHECKPOINT) if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None


def resumable_run(runs_dir: str | Path, key: str, stamp_length: int) -> Path | None:
    """The newest ``<timestamp>_<key>`` directory under ``runs_dir`` that holds a last checkpoint."""
    runs = Path(runs_dir)
    if not runs.is_dir():
        return None
    matches = [
        d for d in runs.glob(f"*_{key}")
        if d.is_dir() and len(d.name) == stamp_length + 1 + len(key) and find_last_checkpoint(d) is not None
    ]
    return max(matches, key=lambda d: d.name) if matches else None


def run_dir(runs_dir: str, stamp: str, overrides: Iterable[str], resume: bool = False, run_name: str | None = None) -> str:
    """The run directory for ``hydra.run.dir``: the run to resume, else ``runs_dir/<stamp>_<key>``."""
    key = run_key(overrides, run_name)
    if resume:
        previous = resumable_run(runs_dir, key, len(stamp))
        if previous is not None:
            return str(previous)
    return str(Path(runs_dir) / f"{stamp}_{key}")


def register_resolver() -> None:
    """Make ``${fer_run_dir:...}`` available to configs (done when :mod:`fer` is imported)."""
    OmegaConf.register_new_resolver(RESOLVER, run_dir, replace=True, use_cache=True)


def checkpoint_to_resume(output_dir: str | Path, resume: bool, ckpt_path: str | None) -> str | None:
    """What ``trainer.fit(ckpt_path=...)`` gets: with ``resume``, this run's last checkpoint (else the
    explicit ``ckpt_path``, else nothing: a fresh start, said in the log); without, ``ckpt_path``."""
    if not resume:
        return ckpt_path
    last = find_last_checkpoint(output_dir)
    if last is not None:
        log.info("Resuming the run in %s from its last checkpoint %s", output_dir, last)
        return str(last)
    if ckpt_path:
        log.info("resume=true: %s holds no last checkpoint yet; starting from ckpt_path=%s", output_dir, ckpt_path)
        return ckpt_path
    log.warning("resume=true but no earlier run of this command has a checkpoint; starting fresh in %s", output_dir)
    return None
