"""experiments/notebooks/evaluate_checkpoint.ipynb runs top to bottom on a checkpoint, and says what
to set when FER_CKPT is missing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

from fer import packaged

NOTEBOOK = Path(__file__).resolve().parents[1] / "experiments" / "notebooks" / "evaluate_checkpoint.ipynb"


def run_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str | None]) -> nbformat.NotebookNode:
    """Execute the notebook in a python3 kernel of this interpreter, with ``env`` set for the kernel."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("FER_CACHE_DIR", raising=False)
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> tuple[str, int]:
    """All printed text, and how many images the notebook displayed."""
    text, images = "", 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text += output.get("text", "")
            images += "image/png" in output.get("data", {})
    return text, images


@pytest.mark.slow
def test_notebook_evaluates_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, fer_zip: Path) -> None:
    notebook = run_notebook(tmp_path, monkeypatch, {"FER_CKPT": str(tiny_checkpoint), "FER2013_ROOT": str(fer_zip), "FER_SPLIT": None})
    text, images = outputs(notebook)
    assert "vgg1 from" in text
    assert "14 test faces (official protocol)" in text  # PrivateTest of the synthetic copy
    assert "test accuracy" in text and "true -> predicted" in text
    assert images >= 3  # confusion, per-class, random examples
    assert images == 4 or "No mistakes on this split." in text  # and the most confident mistakes


@pytest.mark.skipif(packaged.available(), reason="this fer holds a packaged model, which the notebook uses without FER_CKPT")
def test_notebook_says_to_set_fer_ckpt_when_there_is_no_packaged_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fer_zip: Path) -> None:
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="holds no packaged model: set FER_CKPT"):
        run_notebook(tmp_path, monkeypatch, {"FER_CKPT": None, "FER2013_ROOT": str(fer_zip)})
