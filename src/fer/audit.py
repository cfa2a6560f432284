"""Data audit: ``python -m fer.audit [data.root=...]``.

Finds exact duplicates (identical pixels) and near duplicates (identical 64-bit difference hash of
the 9x8-downscaled face) within and across Training / PublicTest / PrivateTest, label conflicts
among them, PrivateTest images that PublicTest (the selection split) also holds, blank or
near-constant images, and measures sharpness (is this a blurred copy?). Writes
``audit.json`` and ``audit.md`` in the run directory. ``data.dedup=true`` removes the exact
cross-split leaks from train.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from fer.classes import CLASSES
from fer.cli import entry_point
from fer.data.quality import REAL_MEDIAN_SHARPNESS, sharpness
from fer.data.sources import FERData, load_fer2013
from fer.data.splits import image_hashes
from fer.run.rundir import run_metadata, write_json

log = logging.getLogger(__name__)


def difference_hashes(images: np.ndarray) -> np.ndarray:
    """dHash: the sign of horizontal gradients of a 9x8 area-downscaled image, as 64-bit ints.
    Robust to re-encoding, small brightness changes and mild blur."""
    small = F.adaptive_avg_pool2d(torch.from_numpy(images).float().unsqueeze(1), (8, 9)).squeeze(1)
    bits = (small[:, :, 1:] > small[:, :, :-1]).reshape(len(images), 64).numpy()
    return np.packbits(bits, axis=1).view(">u8").ravel()


def _groups(keys: np.ndarray) -> list[np.ndarray]:
    """Index groups of two or more images sharing a key."""
    members: dict[Any, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        members[key].append(index)
    return [np.asarray(group) for group in members.values() if len(group) > 1]


def _describe(data: FERData, groups: list[np.ndarray]) -> dict[str, Any]:
    cross = [g for g in groups if len(set(data.usage[g])) > 1]
    conflicts = [g for g in groups if len(set(data.labels[g])) > 1]
    pairs: Counter[str] = Counter()
    for group in cross:
        pairs.update(str(usage) for usage in set(data.usage[group]))
    return {
        "groups": len(groups),
        "images": int(sum(len(g) for g in groups)),
        "extra_copies": int(sum(len(g) - 1 for g in groups)),
        "groups_across_splits": len(cross),
        "cross_split_groups_touching": dict(pairs),
        "groups_with_conflicting_labels": len(conflicts),
        "examples_across_splits": [
            [f"{data.names[i]} ({data.usage[i]}, {CLASSES[data.labels[i]]})" for i in g] for g in cross[:5]
        ],
    }


def audit(data: FERData, blank_std: float = 3.0) -> dict[str, Any]:
    """The audit report of a loaded dataset."""
    hashes = image_hashes(data.images)
    exact = _groups(hashes)
    exact_members = {int(i) for g in exact for i in g}
    near = [g for g in _groups(difference_hashes(data.images)) if not set(g.tolist()) <= exact_members]
    stds = data.images.reshape(len(data), -1).std(axis=1)
    blank = np.flatnonzero(stds < blank_std)
    sharp = sharpness(data.images)
    train_leaks = sum(
        int((data.usage[g] == "Training").sum()) for g in exact if len(set(data.usage[g]) - {"Training"}) > 0
    )
    public = set(hashes[data.usage == "PublicTest"])
    return {
        "images": len(data),
        "per_split": {str(u): int((data.usage == u).sum()) for u in sorted(set(data.usage))},
        "exact_duplicates": _describe(data, exact),
        "near_duplicates_not_exact": _describe(data, near),
        "train_images_removed_by_dedup": train_leaks,
        "private_test_images_copied_in_public_test": int(sum(h in public for h in hashes[data.usage == "PrivateTest"])),
        "blank_or_constant": {
            "threshold_pixel_std": blank_std,
            "count": len(blank),
            "per_split": dict(Counter(data.usage[blank].tolist())),
            "names": data.names[blank].tolist(),
        },
        "sharpness": {
            "median": round(float(np.median(sharp)), 1),
            "percentile_1": round(float(np.percentile(sharp, 1)), 1),
            "real_fer2013_median": REAL_MEDIAN_SHARPNESS,
        },
    }


def to_markdown(report: dict[str, Any], source: str) -> str:
    lines = [f"# Data audit of {source}", "", f"{report['images']} images: {report['per_split']}", ""]
    for key, title in (("exact_duplicates", "Exact duplicates (identical pixels)"), ("near_duplicates_not_exact", "Near duplicates (same dHash, not exact)")):
        part = report[key]
        lines += [
            f"## {title}",
            "",
            f"- {part['groups']} groups, {part['images']} images ({part['extra_copies']} extra copies)",
            f"- {part['groups_across_splits']} groups span splits ({part['cross_split_groups_touching']})",
            f"- {part['groups_with_conflicting_labels']} groups carry conflicting labels",
            "",
        ]
        lines += [f"  - {' = '.join(example)}" for example in part["examples_across_splits"]]
        lines.append("")
    blank = report["blank_or_constant"]
    lines += [
        f"`data.dedup=true` removes {report['train_images_removed_by_dedup']} Training images that also appear in PublicTest/PrivateTest.",
        "",
        f"{report['private_test_images_copied_in_public_test']} PrivateTest images have an exact copy in PublicTest, on which the "
        "official protocol selects checkpoints: `data.dedup` changes Training only, so selection sees these test images.",
        "",
        "## Blank or near-constant images",
        "",
        f"{blank['count']} images with pixel std < {blank['threshold_pixel_std']}: {blank['per_split']}",
        "",
    ]
    lines += [f"- {name}" for name in blank["names"][:20]]
    sharp = report["sharpness"]
    lines += [
        "",
        "## Sharpness",
        "",
        f"Median sharpness (mean absolute Laplacian, `fer.data.quality`) {sharp['median']}, 1% of images below "
        f"{sharp['percentile_1']}; the real FER-2013: {sharp['real_fer2013_median']}. A copy far below that is blurred.",
    ]
    return "\n".join(lines) + "\n"


def audit_dataset(cfg: DictConfig) -> dict[str, Any]:
    """Audit ``cfg.data.root`` and write ``audit.json`` and ``audit.md`` in the run directory."""
    data = load_fer2013(cfg.data.root, cfg.data.cache_dir)
    report = audit(data, cfg.blank_std)
    output_dir = Path(cfg.paths.output_dir)
    write_json(output_dir / "audit.json", {**report, **run_metadata()})
    (output_dir / "audit.md").write_text(to_markdown(report, str(cfg.data.root)))
    log.info(
        "%d exact duplicate groups (%d across splits), %d near-duplicate groups, %d blank images; wrote %s",
        report["exact_duplicates"]["groups"], report["exact_duplicates"]["groups_across_splits"],
        report["near_duplicates_not_exact"]["groups"], report["blank_or_constant"]["count"], output_dir / "audit.md",
    )
    return report


main = entry_point("audit", "audit", audit_dataset)


if __name__ == "__main__":
    main()
