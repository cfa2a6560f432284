"""The one skeleton of the ``python -m fer.<task>`` Hydra commands: expected errors read as one line.

A missing or malformed dataset, a bad value or a bad checkpoint is the user's to fix, not a bug,
so a 15-line traceback above the message only hides it. Such an error prints
``fer.<task>: <ErrorType>: <message>`` on stderr and the command exits with code 2; with
``HYDRA_FULL_ERROR=1`` it is raised again, traceback and all. Anything else is a bug and keeps its
traceback (Hydra reports it and exits 1, as it does its own configuration errors). In a multirun
every job runs through :func:`fer.run.sweep.run_job`, which records a failure and lets the sweep go on.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

from fer.data.sources import DatasetError
from fer.run.checkpoints import CheckpointError
from fer.run.sweep import in_multirun, run_job
from fer.vision.images import ImageReadError

EXIT_EXPECTED = 2
EXPECTED = (DatasetError, CheckpointError, ImageReadError)
PACKAGE_DIR = Path(__file__).resolve().parent
T = TypeVar("T")


def expected_error(error: BaseException) -> BaseException | None:
    """The project's own error behind ``error``, or None for a bug.

    Hydra's ``instantiate`` wraps what a constructor raises ("Error in call to target ..."), so the
    wrapper is opened to the error inside it."""
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, EXPECTED) or (isinstance(error, ValueError) and raised_by_project(error)):
        return error
    return None


def raised_by_project(error: BaseException) -> bool:
    """Whether a ``raise`` statement in fer's own code raised ``error``: a validation message
    written for the user, not a ValueError from deep inside a library or a failed conversion."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    origin = frames[-1]
    return Path(origin.filename).resolve().is_relative_to(PACKAGE_DIR) and (origin.line or "").startswith("raise")


def entry_point(name: str, config_name: str, task: Callable[[DictConfig], T]) -> Callable[[], T | None]:
    """``main`` of ``python -m fer.<name>``: compose ``conf/<config_name>.yaml`` with the command
    line's overrides and return ``task(cfg)`` (a sweeper such as Optuna reads what it returns)."""

    def run(cfg: DictConfig) -> T | None:
        if in_multirun():
            return run_job(lambda: task(cfg), cfg.paths.output_dir)
        try:
            return task(cfg)
        except Exception as error:
            cause = expected_error(error)
            if cause is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"fer.{name}: {type(cause).__name__}: {cause}", file=sys.stderr)
            raise SystemExit(EXIT_EXPECTED) from None

    # Hydra names the job, and so its log file (<job>.log), after the task function's module
    run.__module__ = f"fer.{name}"
    return hydra.main(version_base="1.3", config_path="pkg://fer.conf", config_name=config_name)(run)
