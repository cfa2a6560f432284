"""Multirun robustness: a failing job is recorded and the sweep goes on; the sweep ends with a summary.

Hydra's BasicSweeper re-raises the first failed job once its batch has run, which aborts the sweep
before ``on_multirun_end`` (and the Optuna sweeper stops the study). So :func:`run_job` catches a
job's exception, logs its traceback, writes ``failure.json`` in the job directory and returns
None (:mod:`fer.cli` runs every multirun job through it); a single run is not wrapped and fails
the command (:mod:`fer.cli`: one line and exit code 2 for the project's own errors, the traceback
for anything else). The Hydra callback
:class:`SweepSummary` (configured in ``conf/hydra/default.yaml``) then writes ``summary.json`` and
``summary.md`` in the sweep directory: every job, succeeded with its metrics or failed with why.
It reads the job directories, so it works the same for jobs run elsewhere (SLURM).
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from fer.run.rundir import METRICS_FILE, write_json

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
SPLITS = ("val", "test")
REPORTED = ("acc", "acc_macro", "f1_macro", "loss")
T = TypeVar("T")


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def run_job(job: Callable[[], T], output_dir: str | Path) -> T | None:
    """Run one sweep job; on an exception log it, record it in ``failure.json`` and return None."""
    try:
        return job()
    except Exception as error:
        log.exception("This job failed; the sweep goes on. %s: %s", type(error).__name__, error)
        write_json(
            Path(output_dir) / FAILURE_FILE,
            {"error": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()},
        )
        return None


def job_summary(job_dir: Path) -> dict[str, Any]:
    """One job's outcome from the files it left: ``metrics.json`` or ``failure.json``, whichever
    is newer (a resumed sweep may have turned a failure into a success, or the other way)."""
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    summary: dict[str, Any] = {"job": job_dir.name, "dir": str(job_dir), "overrides": overrides}
    outcomes = [f for f in (job_dir / METRICS_FILE, job_dir / FAILURE_FILE) if f.is_file()]
    latest = max(outcomes, key=lambda f: f.stat().st_mtime_ns).name if outcomes else None
    if latest == METRICS_FILE:
        metrics = json.loads((job_dir / METRICS_FILE).read_text())
        summary["status"] = "succeeded"
        for split in SPLITS:
            if isinstance(metrics.get(split), dict):
                summary[split] = {k: metrics[split][k] for k in REPORTED if k in metrics[split]}
        summary["best_checkpoint"] = metrics.get("best_checkpoint")
    elif latest == FAILURE_FILE:
        failure = json.loads((job_dir / FAILURE_FILE).read_text())
        summary["status"] = "failed"
        summary["error"] = f"{failure['error']}: {failure['message']}"
    else:
        summary["status"] = "no result"
        summary["error"] = "neither metrics.json nor failure.json: killed, crashed hard or still running; see its log"
    return summary


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    """Summaries of the sweep's job directories (those Hydra wrote a ``.hydra`` folder in)."""
    jobs = [d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()] if sweep_dir.is_dir() else []
    jobs.sort(key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    return [job_summary(d) for d in jobs]


def markdown(jobs: list[dict[str, Any]]) -> str:
    """A table of the jobs, showing only the overrides that differ between them."""
    common = set.intersection(*(set(j["overrides"]) for j in jobs)) if jobs else set()
    header = (
        f"Overrides of every job: {' '.join(o for o in jobs[0]['overrides'] if o in common) if jobs else ''}\n\n"
        "| job | overrides | status | val acc | val loss | test acc | test loss | error |\n|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for job in jobs:
        cells = [job["job"], " ".join(o for o in job["overrides"] if o not in common), job["status"]]
        for split in SPLITS:
            values = job.get(split, {})
            cells += [_number(values.get("acc")), _number(values.get("loss"))]
        cells.append(job.get("error", "").replace("|", "/").replace("\n", " "))
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return header + "\n".join(rows) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


class SweepSummary(Callback):
    """Writes the sweep summary when all jobs have returned."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = summarize(sweep_dir)
        write_json(sweep_dir / SUMMARY_JSON, {"sweep_dir": str(sweep_dir), "jobs": jobs})
        (sweep_dir / SUMMARY_MD).write_text(markdown(jobs))
        failed = [j for j in jobs if j["status"] != "succeeded"]
        log.info("Sweep summary: %d of %d jobs succeeded; see %s", len(jobs) - len(failed), len(jobs), sweep_dir / SUMMARY_MD)
        for job in failed:
            log.warning("Job %s (%s) %s: %s", job["job"], " ".join(job["overrides"]), job["status"], job["error"])
