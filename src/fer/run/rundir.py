"""What a run leaves in its directory: the resolved config, ``run.json`` (metadata, written at the
start) and ``metrics.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fer.run import hardware
from fer.run.atomic import atomic_write

PACKAGES = ("torch", "torchvision", "pytorch-lightning", "hydra-core", "omegaconf", "torchmetrics", "albumentations")
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"


def git_commit() -> str:
    """The commit of the source tree this code runs from (``+dirty`` if it has changes)."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=source, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def run_metadata() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "commit": git_commit(),
        "hardware": hardware.describe(),
        "python": sys.version.split()[0],
        "packages": versions,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def record_start(output_dir: str | os.PathLike, resumed_from: str | None, metadata: dict[str, Any]) -> None:
    """Append this start (time, commit, packages, hardware, checkpoint resumed from) to ``run.json``
    at the start of the run, so that a run that crashes still says what it ran on."""
    starts = read_starts(output_dir)
    starts.append({"started": datetime.now().astimezone().isoformat(timespec="seconds"), "resumed_from": resumed_from, **metadata})
    write_json(Path(output_dir) / RUN_FILE, {"starts": starts})


def read_starts(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The starts ``run.json`` records (the first names the command and commit; none before a run starts)."""
    path = Path(run_dir) / RUN_FILE
    return json.loads(path.read_text())["starts"] if path.is_file() else []


def save_config(cfg: DictConfig, output_dir: str | os.PathLike) -> None:
    """Write the resolved config (Hydra's own ``.hydra/config.yaml`` keeps interpolations)."""
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write JSON atomically, so a reader never sees half a file."""
    with atomic_write(path) as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_metrics(run_dir: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(run_dir) / METRICS_FILE).read_text())
