"""Readers for FER-2013 in the forms users have it, decoded once into one in-memory array.

Supported sources (``data.root`` may name any of them, or a folder that holds one):

- the Kaggle folder layout: ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``;
- the same layout inside a ``.zip`` (read in place, nothing extracted);
- the ICML 2013 ``fer2013.csv`` (``emotion,pixels,Usage``).

Every reader returns a :class:`FERData`; :func:`load_fer2013` adds an on-disk cache keyed on the
source's path, size and modification time, so later runs start in well under a second.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer.classes import CLASSES, class_index
from fer.run.atomic import atomic_write
from fer.vision.images import IMAGE_SIZE, ImageReadError, is_image_file, load_image, to_face

log = logging.getLogger(__name__)

USAGES = ("Training", "PublicTest", "PrivateTest")
UNKNOWN_TEST_HALF = "Test"
FOLDERS = ("train", "test")
_LAYOUT = (
    "FER-2013's Kaggle layout is train/<class>/Training_*.jpg and test/<class>/{PublicTest,PrivateTest}_*.jpg "
    "(test/ gives the val and test splits)"
)
# files a data.root folder may hold the dataset as (fer2013/fer2013.csv: the ICML tarball, extracted)
CANDIDATES = ("fer2013.zip", "fer2013.csv", "fer2013/fer2013.csv", "archive.zip")
CACHE_VERSION = 3  # 3: images not 48x48 gray are converted by fer.vision.images (OpenCV), no longer PIL
HOW_TO_GET = (
    "Download FER-2013 from https://www.kaggle.com/datasets/msambare/fer2013 (the zip, or its "
    "extracted train/ and test/ folders) or the ICML fer2013.csv, then set data.root=PATH or the "
    "FER2013_ROOT environment variable."
)


class DatasetError(RuntimeError):
    """The dataset is missing or malformed; the message says what was found and how to fix it."""


@dataclass
class FERData:
    """All images of one source: ``images`` uint8 [N, 48, 48], labels in :data:`CLASSES` order,
    the ICML usage of each image (``Training``/``PublicTest``/``PrivateTest``, or ``Test`` when a
    test file's name does not say which half) and its file name (or CSV row) for reports."""

    images: np.ndarray
    labels: np.ndarray
    usage: np.ndarray
    names: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> FERData:
        return FERData(self.images[index], self.labels[index], self.usage[index], self.names[index])


@dataclass
class _Entry:
    folder: str
    class_name: str
    file_name: str
    read: Callable[[], bytes]


def locate(root: str | os.PathLike) -> Path:
    """Resolve ``root`` to a dataset folder, zip or csv; a folder may also hold one of them."""
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise DatasetError(f"FER-2013 not found at {path}. {HOW_TO_GET}")
    if path.is_file():
        return path
    if (path / "train").is_dir():
        return path
    for candidate in CANDIDATES:
        if (path / candidate).is_file():
            return path / candidate
    nested = _nested_copies(path)
    if nested:
        folders = dict.fromkeys(folder for folder, _ in nested)
        raise DatasetError(
            f"{path} holds no FER-2013 itself; one folder down it has {', '.join(str(found) for _, found in nested)}. "
            f"Pass {' or '.join(f'data.root={folder}' for folder in folders)} (or set FER2013_ROOT to it)."
        )
    raise DatasetError(
        f"{path} holds no FER-2013: expected train/<class>/*.jpg and test/<class>/*.jpg, "
        f"fer2013.zip or fer2013.csv there. {HOW_TO_GET}"
    )


def _nested_copies(path: Path) -> list[tuple[Path, Path]]:
    """(folder, what is in it) for each folder directly under ``path`` that :func:`locate` would
    accept: a root one level too high is named, not silently taken (which of several copies?)."""
    found = []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            if (folder / "train").is_dir():
                found.append((folder, folder / "train"))
            found += [(folder, folder / c) for c in CANDIDATES if (folder / c).is_file()]
        except PermissionError:  # someone else's folder under a shared root holds nothing of ours
            continue
    return found


def read_source(path: Path) -> FERData:
    """Read a located source (folder, zip or csv) without the cache."""
    if path.is_dir():
        return _decode(_folder_entries(path), str(path))
    if path.suffix.lower() == ".csv":
        return read_csv(path)
    if not zipfile.is_zipfile(path):
        raise DatasetError(f"{path} is neither a zip archive nor a fer2013.csv. {HOW_TO_GET}")
    with zipfile.ZipFile(path) as archive:
        return _decode(_zip_entries(archive, path), str(path))


def load_fer2013(root: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> FERData:
    """Load FER-2013 from ``root``, through the decoded-array cache in ``cache_dir`` if given."""
    path = locate(root)
    if cache_dir is None:
        return read_source(path)
    cache_file = Path(cache_dir).expanduser() / f"{path.stem}-{_source_key(path)}.npz"
    if cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as cached:
                return FERData(**{key: cached[key] for key in ("images", "labels", "usage", "names")})
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            log.warning("Ignoring unreadable cache %s (%s); decoding the source again.", cache_file, error)
    data = read_source(path)
    with atomic_write(cache_file, "wb") as handle:
        np.savez(handle, images=data.images, labels=data.labels, usage=data.usage, names=data.names)
    return data


def _source_key(path: Path) -> str:
    """A cheap fingerprint of the source: path, size and mtime of the file (or of every file)."""
    digest = hashlib.sha1(f"v{CACHE_VERSION}|{path}".encode())
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        stat = file.stat()
        digest.update(f"|{file}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _folder_entries(root: Path) -> list[_Entry]:
    entries = []
    for folder in FOLDERS:
        if not (root / folder).is_dir():
            raise DatasetError(f"{root} has no {folder}/ folder: {_LAYOUT}. {HOW_TO_GET}")
        for class_dir in sorted(p for p in (root / folder).iterdir() if not p.name.startswith(".")):
            if not class_dir.is_dir():
                raise DatasetError(f"{class_dir} is a file; {root / folder} must hold one folder per class.")
            files = sorted(class_dir.iterdir())
            if not files:
                raise DatasetError(f"Class folders with no images in {root}: {folder}/{class_dir.name}.")
            for file in files:
                if file.is_dir():
                    if file.name.startswith("."):  # .ipynb_checkpoints and the like hold no data
                        continue
                    raise DatasetError(f"{file} is a folder inside a class folder: {_LAYOUT}. Move its images up.")
                entries.append(_Entry(folder, class_dir.name, file.name, file.read_bytes))
    return entries


def _zip_entries(archive: zipfile.ZipFile, path: Path) -> list[_Entry]:
    entries = []
    for info in archive.infolist():
        parts = info.filename.rstrip("/").split("/")
        if info.is_dir() or any(part.startswith(".") or part == "__MACOSX" for part in parts):
            continue  # macOS and editor metadata (.DS_Store, __MACOSX/, ._* forks), not images
        if len(parts) >= 3 and parts[-3] in FOLDERS:
            entries.append(_Entry(parts[-3], parts[-2], parts[-1], lambda info=info: archive.read(info)))
        elif any(part in FOLDERS for part in parts[:-1]):
            raise DatasetError(f"{path} holds {info.filename}, outside the layout: {_LAYOUT}.")
    for folder in FOLDERS:
        if not any(entry.folder == folder for entry in entries):
            raise DatasetError(f"{path} holds no {folder}/<class>/*.jpg entries: {_LAYOUT}. {HOW_TO_GET}")
    return entries


def _decode(entries: Iterable[_Entry], source: str) -> FERData:
    """Decode image entries; unknown classes, empty classes and unreadable files are errors."""
    images, labels, usage, names = [], [], [], []
    converted, ignored = [], []
    counts: dict[tuple[str, str], int] = {}
    # one order whatever the layout (a zip keeps the order it was written in), so that a seeded
    # split picks the same images from a folder and from any zip of it
    for entry in sorted(entries, key=lambda e: (e.folder != "train", e.class_name, e.file_name)):
        counts.setdefault((entry.folder, entry.class_name), 0)
        if not is_image_file(entry.file_name):
            ignored.append(f"{entry.folder}/{entry.class_name}/{entry.file_name}")
            continue
        try:
            label = class_index(entry.class_name)
        except ValueError as error:
            raise DatasetError(f"Unknown class folder {entry.folder}/{entry.class_name} in {source}: {error}") from error
        name = f"{entry.folder}/{entry.class_name}/{entry.file_name}"
        image, was_converted = _decode_image(entry.read(), name, source)
        if was_converted:
            converted.append(name)
        counts[(entry.folder, entry.class_name)] += 1
        images.append(image)
        labels.append(label)
        usage.append(_usage_from_name(entry.folder, entry.file_name))
        names.append(name)
    empty = [f"{folder}/{cls}" for (folder, cls), n in counts.items() if n == 0]
    if empty:
        raise DatasetError(f"Class folders with no images in {source}: {', '.join(empty)}.")
    if ignored:
        log.warning("Ignored %d non-image files in %s, e.g. %s", len(ignored), source, ignored[:3])
    if converted:
        log.warning(
            "Converted %d images that were not 48x48 grayscale (to grayscale, resized), e.g. %s",
            len(converted), converted[:3],
        )
    return FERData(
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64),
        usage=np.asarray(usage),
        names=np.asarray(names),
    )


def _decode_image(blob: bytes, name: str, source: str) -> tuple[np.ndarray, bool]:
    """A 48x48 grayscale face (:func:`fer.vision.images.to_face`) and whether it had to be converted."""
    try:
        image = load_image(blob)
    except ImageReadError as error:
        raise DatasetError(
            f"Corrupt or unreadable image {name} in {source}: {error.__cause__ or error}. Replace or delete the file."
        ) from error
    return to_face(image), image.shape != (IMAGE_SIZE, IMAGE_SIZE)


def _usage_from_name(folder: str, file_name: str) -> str:
    prefix = file_name.split("_", 1)[0]
    if prefix in USAGES:
        return prefix
    return "Training" if folder == "train" else UNKNOWN_TEST_HALF


def read_csv(path: Path) -> FERData:
    """Read the ICML ``fer2013.csv``; its label order is the canonical one."""
    expected = ["emotion", "pixels", "Usage"]
    images, labels, usage, names = [], [], [], []
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != expected:
            raise DatasetError(f"{path}: expected the columns {','.join(expected)}, found {header}.")
        for row_number, row in enumerate(reader, start=2):
            try:
                emotion, pixels, split = int(row[0]), row[1].split(), row[2].strip()
            except (IndexError, ValueError) as error:
                raise DatasetError(f"{path} line {row_number}: malformed row ({error}).") from error
            if len(pixels) != IMAGE_SIZE * IMAGE_SIZE:
                raise DatasetError(
                    f"{path} line {row_number}: {len(pixels)} pixel values, expected {IMAGE_SIZE * IMAGE_SIZE}."
                )
            if not 0 <= emotion < len(CLASSES):
                raise DatasetError(f"{path} line {row_number}: emotion {emotion} is not in 0..{len(CLASSES) - 1}.")
            if split not in USAGES:
                raise DatasetError(f"{path} line {row_number}: Usage {split!r} is not one of {USAGES}.")
            try:
                values = np.asarray(pixels, dtype=np.int64)
            except ValueError as error:
                raise DatasetError(f"{path} line {row_number}: pixel values must be integers 0..255 ({error}).") from error
            if values.min() < 0 or values.max() > 255:
                raise DatasetError(
                    f"{path} line {row_number}: pixel values must be integers 0..255, found {values.min()}..{values.max()}."
                )
            images.append(values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE))
            labels.append(emotion)
            usage.append(split)
            names.append(f"row{row_number}")
    if not labels:
        raise DatasetError(f"{path} has a header but no rows.")
    return FERData(np.stack(images), np.asarray(labels, dtype=np.int64), np.asarray(usage), np.asarray(names))
