"""experiments/gpu/run_sota.sh, the prepared command for the GPU rows, end to end on the CPU.

GPU time is scarce and comes without warning, so the script must not break unnoticed when the
code it drives changes: these runs use the synthetic zip, ``trainer=cpu`` and a tiny network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu" / "run_sota.sh"
CPU_OVERRIDES = [
    "trainer=cpu",
    "trainer.precision=32-true",
    "module.compile=false",
    "model.hidden=32",
    "model.channels=[8,16,32,64]",
    "data.batch_size=4",  # ten steps an epoch: a one-cycle warm-up of two
    "data.eval_batch_size=16",
]


def run_script(out: Path, fer_zip: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "FER2013_ROOT": str(fer_zip),
        "FER_CACHE_DIR": str(out.parent / "cache"),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT), str(out), *overrides], env=environment, cwd=ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_the_script_probes_sizes_the_runs_and_ensembles_them(tmp_path: Path, fer_zip: Path) -> None:
    out = tmp_path / "gpu"
    result = run_script(out, fer_zip, *CPU_OVERRIDES, SEEDS="1 2", PROBE_EPOCHS="2", RUN_BUDGET_S="0")
    assert result.returncode == 0, result.stdout + result.stderr
    plan = json.loads((out / "plan.json").read_text())
    assert plan["epoch_s"] > 0 and plan["overhead_s"] > 0 and plan["cap"] == 150
    assert plan["epochs"] == 1  # a budget shorter than the overhead still trains one epoch
    for seed in (1, 2):
        probe = json.loads((out / "probe" / f"seed{seed}" / "metrics.json").read_text())
        assert probe["epochs"] == 2 and "test" not in probe
        run = json.loads((out / "runs" / f"seed{seed}" / "metrics.json").read_text())
        assert run["epochs"] == 1 and 0 <= run["test"]["acc"] <= 1
    for split in ("val", "test"):
        ensemble = json.loads((out / f"ensemble_{split}" / "metrics.json").read_text())
        assert len(ensemble["members"]) == 2 and ensemble["tta"] == "tencrop"
    assert "ensemble of 2: PrivateTest" in result.stdout and "(95% CI " in result.stdout
    for seed in (1, 2):
        run = json.loads((out / "runs" / f"seed{seed}" / "metrics.json").read_text())
        assert "ci95" in run["test"] and "temperature" in run["calibration"]
        assert (out / "runs" / f"seed{seed}" / "predictions.npz").is_file()  # fer.compare and run_dirs ensembles need no GPU


@pytest.mark.slow
def test_the_script_stops_at_the_warm_up_when_a_run_cannot_start(tmp_path: Path, fer_zip: Path) -> None:
    result = run_script(tmp_path / "gpu", fer_zip, *CPU_OVERRIDES, "data.num_workers=2")
    assert result.returncode != 0
    assert "data.on_device=true" in result.stdout  # the warm-up's error, shown
    assert not (tmp_path / "gpu" / "probe").exists()
