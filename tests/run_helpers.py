"""Helpers for the tests that drive the command-line entry points (in this process or another)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fast_overrides
from hydra.core.global_hydra import GlobalHydra
from pytorch_lightning import Callback, LightningModule, Trainer

SLOW_ENV = "FER_TEST_SLOW_SECONDS"


def cli_overrides(fer_zip: Path, tmp_path: Path, *extra: str) -> list[str]:
    """Overrides for a seconds-long CPU run on the synthetic zip, logging under ``tmp_path/logs``."""
    return [
        *fast_overrides(fer_zip, tmp_path / "cache"),
        f"paths.log_dir={tmp_path / 'logs'}",
        "model=vgg1",
        "callbacks.progress_bar.refresh_rate=0",
        *extra,
    ]


def run_cli(main: Callable[[], None], args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """Run a Hydra entry point in this process as ``python -m fer.x ARGS`` would; its exit code."""
    monkeypatch.setattr(sys, "argv", ["fer", *args])
    try:
        main()
    except SystemExit as exit:
        return int(exit.code or 0)
    finally:
        GlobalHydra.instance().clear()
    return 0


class SlowAfterFirstEpoch(Callback):
    """Sleeps after each training batch from the second epoch on when ``FER_TEST_SLOW_SECONDS`` is
    set, so that a test can kill the run mid-epoch; changes no number."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: object) -> None:
        if trainer.current_epoch >= 1 and os.environ.get(SLOW_ENV):
            time.sleep(float(os.environ[SLOW_ENV]))


@pytest.fixture
def skip_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave out the end-of-run figures (seconds of matplotlib per run) in tests about other things."""
    monkeypatch.setattr("fer.train.plot_run", lambda *args, **kwargs: None)
