"""fer.audit: exact and near duplicates within and across splits, label conflicts, blank images and
sharpness, and the report files of ``python -m fer.audit``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import PER_CLASS, run_cli, synthetic_face

from fer.audit import audit, main, to_markdown
from fer.classes import CLASSES
from fer.data.quality import REAL_MEDIAN_SHARPNESS
from fer.data.sources import FERData


def _dataset() -> FERData:
    """Six faces: one copied from Training into PublicTest under another label, one brightened by a
    grey level (a near duplicate), one blank, one unique."""
    a, b, c = synthetic_face(0, 1), synthetic_face(1, 2), synthetic_face(2, 3)
    images = np.stack([a, a, b, b + 1, np.zeros_like(a), c])
    usage = np.array(["Training", "PublicTest", "Training", "Training", "PrivateTest", "PrivateTest"])
    labels = np.array([3, 4, 0, 0, 6, 5])
    names = np.array([f"img{i}.jpg" for i in range(6)])
    return FERData(images, labels, usage, names)


def test_audit_finds_leaks_near_duplicates_and_blank_images() -> None:
    report = audit(_dataset())
    exact = report["exact_duplicates"]
    assert (exact["groups"], exact["images"], exact["extra_copies"]) == (1, 2, 1)
    assert exact["groups_across_splits"] == 1 and exact["groups_with_conflicting_labels"] == 1
    assert exact["examples_across_splits"] == [["img0.jpg (Training, happy)", "img1.jpg (PublicTest, sad)"]]
    near = report["near_duplicates_not_exact"]
    assert (near["groups"], near["groups_across_splits"]) == (1, 0)  # img2 ~ img3; the exact pair is not repeated
    assert report["train_images_removed_by_dedup"] == 1
    blank = report["blank_or_constant"]
    assert (blank["count"], blank["per_split"], blank["names"]) == (1, {"PrivateTest": 1}, ["img4.jpg"])
    assert report["sharpness"]["real_fer2013_median"] == REAL_MEDIAN_SHARPNESS
    assert report["sharpness"]["percentile_1"] < report["sharpness"]["median"]  # the blank image is flat


def test_audit_counts_private_test_images_that_public_test_also_holds() -> None:
    """Selection on PublicTest sees a PrivateTest image when both hold its pixels; data.dedup does not
    touch either, so the audit says how many there are."""
    a, b, c = synthetic_face(0, 1), synthetic_face(1, 2), synthetic_face(2, 3)
    images = np.stack([a, a, a, b, b, c, c])
    usage = np.array(["PrivateTest", "PublicTest", "PrivateTest", "PrivateTest", "Training", "PublicTest", "Training"])
    report = audit(FERData(images, np.zeros(7, dtype=np.int64), usage, np.array([f"img{i}" for i in range(7)])))
    assert report["private_test_images_copied_in_public_test"] == 2  # both copies of a; b is only in Training
    assert "2 PrivateTest images have an exact copy in PublicTest" in to_markdown(report, "x")


def test_markdown_report_has_every_section() -> None:
    text = to_markdown(audit(_dataset()), "some/fer2013.zip")
    assert text.startswith("# Data audit of some/fer2013.zip")
    for heading in ("## Exact duplicates", "## Near duplicates", "## Blank or near-constant images", "## Sharpness"):
        assert heading in text
    assert "`data.dedup=true` removes 1 Training images" in text


def test_entry_point_writes_json_and_markdown(fer_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = [f"data.root={fer_zip}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.log_dir={tmp_path / 'logs'}"]
    assert run_cli(main, args, monkeypatch) == 0
    (report_file,) = (tmp_path / "logs").rglob("audit.json")
    report = json.loads(report_file.read_text())
    assert report["images"] == len(CLASSES) * sum(PER_CLASS.values())
    assert report["exact_duplicates"]["groups"] == 0 and "commit" in report
    assert (report_file.parent / "audit.md").read_text().startswith(f"# Data audit of {fer_zip}")
