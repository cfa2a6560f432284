"""A labelled image folder for cross-dataset evaluation (JAFFE, CK+, exports of RAF-DB or
AffectNet, your own photos): ``python -m fer.evaluate ckpt_path=PATH data=folder data.root=DIR``.

Labels come from one of:

- class subfolders, ``root/<class>/**/<image>``, named with the usual emotion names or their
  synonyms (anger/angry, happiness/happy, sadness/sad, surprised/surprise, ...:
  :data:`fer.classes.SYNONYMS`);
- file names, with ``label_pattern``: a regular expression with a named group ``label``, searched
  in each file's name (not its folders); ``label_map`` turns codes into class names. JAFFE
  (``KA.AN1.39.tiff``): ``label_pattern='^[A-Z]{2}\\.(?P<label>[A-Z]{2})'`` and
  ``label_map={AN: angry, DI: disgust, FE: fear, HA: happy, NE: neutral, SA: sad, SU: surprise}``;
  a CK+ export named ``S005_001_00000011_surprise.png``: ``label_pattern='_(?P<label>[a-z]+)\\.\\w+$'``.

Every image, any size or colour, becomes a 48x48 grayscale face: the whole image, or with
``detect_faces=true`` the largest face the Haar cascade finds (the whole image when it finds
none; the count is reported). Classes the model does not know (contempt, say) are not scored:
the evaluation reports how many there were and what the model predicted for them.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from fer.classes import CLASSES, canonical_class
from fer.data.base import FaceDataModule
from fer.data.sources import DatasetError, FERData
from fer.vision.faces import FaceDetector
from fer.vision.images import IMAGE_SIZE, IMAGE_SUFFIXES, ImageReadError, is_image_file, resize, to_gray

log = logging.getLogger(__name__)

SPLIT = "test"


@dataclass
class FolderData:
    """A labelled folder, decoded: the images of the seven known classes as :class:`FERData`
    (usage ``folder``), the images of other classes by name, and how labels were read."""

    known: FERData
    unknown: dict[str, np.ndarray]
    unknown_names: dict[str, list[str]]
    label_counts: dict[str, int]
    no_face: int


def read_folder(
    root: str | os.PathLike,
    label_pattern: str | None = None,
    label_map: dict[str, str] | None = None,
    detector: FaceDetector | None = None,
) -> FolderData:
    """Decode every image under ``root`` with its label (see the module docstring)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data.root={root} is not a folder: point it at a folder of class subfolders (or of images named by label_pattern).")
    pattern = _compile(label_pattern)
    mapping = {str(k).lower(): str(v) for k, v in (label_map or {}).items()}
    labelled = _labelled_files(root, pattern)
    if not labelled:
        raise DatasetError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) found under {root}"
            + (" in class subfolders." if pattern is None else f" whose names match data.label_pattern={label_pattern!r}.")
        )
    images: dict[str, list[np.ndarray]] = {}
    names: dict[str, list[str]] = {}
    raw_counts: Counter[str] = Counter()
    no_face = 0
    for file, raw in labelled:
        name = mapping.get(raw.lower(), raw)
        label = canonical_class(name) or name.strip().lower()
        raw_counts[raw] += 1
        face, found = _read_face(file, detector)
        no_face += not found
        images.setdefault(label, []).append(face)
        names.setdefault(label, []).append(str(file.relative_to(root)))
    known = [c for c in CLASSES if c in images]
    if not known:
        raise DatasetError(
            f"None of the labels under {root} is one of the seven classes ({', '.join(CLASSES)}, or a synonym): "
            f"found {', '.join(sorted(raw_counts))}. Rename the folders or set data.label_map."
        )
    unknown = sorted(set(images) - set(CLASSES))
    if unknown:
        log.warning(
            "Classes the model does not know are not scored (their predictions are reported): %s",
            ", ".join(f"{c} ({len(images[c])})" for c in unknown),
        )
    if detector is not None and no_face:
        log.warning("No face found in %d of %d images of %s: used those images whole.", no_face, len(labelled), root)
    data = FERData(
        images=np.stack([face for c in known for face in images[c]]),
        labels=np.asarray([CLASSES.index(c) for c in known for _ in images[c]], dtype=np.int64),
        usage=np.asarray(["folder"] * sum(len(images[c]) for c in known)),
        names=np.asarray([n for c in known for n in names[c]]),
    )
    return FolderData(
        known=data,
        unknown={c: np.stack(images[c]) for c in unknown},
        unknown_names={c: names[c] for c in unknown},
        label_counts=dict(sorted(raw_counts.items())),
        no_face=no_face,
    )


class FolderDataModule(FaceDataModule):
    """A labelled folder as one evaluation set (split ``test``), prepared like FER-2013's test split.

    ``image_size``, ``crop_size`` and ``channels`` come from the checkpoint in ``fer.evaluate``.
    """

    def __init__(
        self,
        root: str,
        label_pattern: str | None = None,
        label_map: dict[str, str] | None = None,
        detect_faces: bool = False,
        image_size: int = IMAGE_SIZE,
        crop_size: int | None = None,
        channels: int = 1,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__(image_size, crop_size, channels, batch_size, eval_batch_size, num_workers, pin_memory)
        _compile(label_pattern)
        self.root = os.fspath(root)
        self.label_pattern = label_pattern
        self.label_map = label_map
        self.detect_faces = detect_faces
        self.folder: FolderData | None = None

    @property
    def data(self) -> FERData:
        """The scored images (the seven known classes), e.g. for :func:`fer.plots.examples_figure`."""
        if self.folder is None:
            raise RuntimeError("Call setup() before using the data.")
        return self.folder.known

    def split_data(self, split: str) -> FERData:
        """The images of ``split`` (the whole folder; ``split`` must be ``test``)."""
        self._check_split(split)
        return self.data

    def setup(self, stage: str | None = None) -> None:
        if self.folder is None:
            detector = FaceDetector() if self.detect_faces else None
            self.folder = read_folder(self.root, self.label_pattern, self.label_map, detector)
            log.info("Folder %s: %d scored images, %s", self.root, len(self.folder.known), self.class_counts(SPLIT))

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader(SPLIT)

    def describe(self) -> dict[str, Any]:
        """Where the labels came from and how many images each class has, for ``metrics.json``."""
        folder = self.folder
        return {
            "root": str(Path(self.root).resolve()),
            "labels_from": "file names" if self.label_pattern else "class folders",
            "label_pattern": self.label_pattern,
            "label_counts": folder.label_counts,
            "scored": dict(zip(CLASSES, self.class_counts(SPLIT))),
            "detect_faces": self.detect_faces,
            "no_face": folder.no_face,
        }

    @staticmethod
    def _check_split(split: str) -> None:
        if split != SPLIT:
            raise ValueError(f"split={split!r}: a labelled folder is one evaluation set; use split={SPLIT}.")


def _compile(label_pattern: str | None) -> re.Pattern[str] | None:
    if label_pattern is None:
        return None
    try:
        pattern = re.compile(label_pattern)
    except re.error as error:
        raise ValueError(f"data.label_pattern={label_pattern!r} is not a valid regular expression: {error}.") from error
    if "label" not in pattern.groupindex:
        raise ValueError(f"data.label_pattern={label_pattern!r} needs a named group (?P<label>...) that captures the class.")
    return pattern


def _labelled_files(root: Path, pattern: re.Pattern[str] | None) -> list[tuple[Path, str]]:
    """``(image, raw label)`` pairs; files that are not images are counted in the log, and in
    file-name mode an image whose name does not match the pattern is an error."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if is_image_file(p)]
    others = [str(p.relative_to(root)) for p in files if not is_image_file(p)]
    if others:
        log.warning("Ignored %d files that are not images under %s, e.g. %s", len(others), root, others[:3])
    if pattern is not None:
        matches = [(p, pattern.search(p.name)) for p in images]
        unmatched = [p.name for p, m in matches if m is None]
        if unmatched:
            raise DatasetError(
                f"{len(unmatched)} image names under {root} do not match data.label_pattern={pattern.pattern!r}, "
                f"e.g. {unmatched[:3]}. Fix the pattern, or move those files out."
            )
        return [(p, m.group("label")) for p, m in matches]
    top_level = [p.name for p in images if p.parent == root]
    if top_level:
        raise DatasetError(
            f"{len(top_level)} images lie directly in {root} (e.g. {top_level[:3]}): with class subfolders every "
            "image must be in root/<class>/; for labels in file names set data.label_pattern."
        )
    return [(p, p.relative_to(root).parts[0]) for p in images]


def _read_face(file: Path, detector: FaceDetector | None) -> tuple[np.ndarray, bool]:
    """A 48x48 grayscale face from a file, and whether a face was found (always, without a detector)."""
    try:
        gray = to_gray(file)
    except ImageReadError as error:
        raise DatasetError(f"{error} Replace or delete the file.") from error
    if detector is None:
        return resize(gray, IMAGE_SIZE), True
    faces = detector.faces(gray, IMAGE_SIZE)
    if not faces:
        return resize(gray, IMAGE_SIZE), False
    return max(faces, key=lambda f: f.box.w * f.box.h).crop, True
