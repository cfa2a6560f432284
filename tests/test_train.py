"""End-to-end: a short fit writes checkpoints and a metrics file; the checkpoint reloads without Hydra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fer.classes import CLASSES
from fer.train import train


def test_train_writes_metrics_and_checkpoints(make_cfg) -> None:
    cfg = make_cfg("model=vgg1")
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["test"]["acc"] == metrics["test"]["acc"]
    assert 0.0 <= saved["test"]["acc"] <= 1.0
    assert len(saved["test"]["confusion"]) == len(CLASSES)
    assert sum(map(sum, saved["test"]["confusion"])) == 2 * len(CLASSES)  # PrivateTest of the synthetic copy
    assert {f"acc_{c}" for c in CLASSES} <= set(saved["test"])
    assert saved["protocol"] == "official" and saved["epochs"] == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert Path(saved["best_checkpoint"]).is_file()
    assert (run / "config.yaml").read_text().count("${") == 0  # resolved copy


def test_checkpoint_reloads_in_fresh_process_without_hydra(tiny_checkpoint: Path) -> None:
    code = (
        "import sys, torch\n"
        "from fer import FERClassifier\n"
        f"m = FERClassifier.load_from_checkpoint({str(tiny_checkpoint)!r}, map_location='cpu').eval()\n"
        "x = torch.zeros(2, 1, 48, 48, dtype=torch.uint8)\n"
        "print(tuple(m(x).shape))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("(2, 7)")
