"""The one canonical class order of the project, and the names other datasets use for it.

The order is the ICML 2013 ``fer2013.csv`` label order (0=angry ... 6=neutral): published
confusion matrices and per-class numbers use it, and the CSV maps onto it with no remapping.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASSES)

SYNONYMS: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
}


def canonical_class(name: str) -> str | None:
    """Map a class-folder name such as 'Happiness' to its canonical name, or None if unknown."""
    return SYNONYMS.get(name.strip().lower())


def class_index(name: str) -> int:
    """Index of a class name (synonyms accepted); raises a ValueError that lists the known names."""
    canonical = canonical_class(name)
    if canonical is None:
        raise ValueError(
            f"{name!r} is not an expression class. Known classes: {', '.join(CLASSES)} "
            f"(synonyms accepted: {', '.join(sorted(k for k in SYNONYMS if k not in CLASSES))})."
        )
    return CLASSES.index(canonical)
