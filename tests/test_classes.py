"""The canonical class order and the names other copies of FER-2013 use for the classes."""

from __future__ import annotations

import pytest

from fer.classes import CLASSES, NUM_CLASSES, SYNONYMS, canonical_class, class_index


def test_order_is_the_icml_csv_label_order() -> None:
    """fer2013.csv labels map onto CLASSES with no remapping, so the order must be exactly the ICML one."""
    assert CLASSES == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert NUM_CLASSES == 7
    assert [class_index(name) for name in CLASSES] == list(range(7))


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("Anger", "angry"),
        ("disgusted", "disgust"),
        ("Fearful", "fear"),
        ("afraid", "fear"),
        ("Happiness", "happy"),
        ("joy", "happy"),
        ("SADNESS", "sad"),
        ("surprised", "surprise"),
        (" neutral ", "neutral"),
    ],
)
def test_synonyms_map_to_canonical_names(folder: str, expected: str) -> None:
    """Class folders of other copies (any case, stray spaces) land on the canonical class."""
    assert canonical_class(folder) == expected
    assert class_index(folder) == CLASSES.index(expected)


def test_every_synonym_targets_a_canonical_class() -> None:
    assert set(SYNONYMS.values()) == set(CLASSES)


def test_unknown_class_returns_none_and_index_error_lists_known_names() -> None:
    """A typo in a folder name must tell the user which names are accepted."""
    assert canonical_class("contempt") is None
    with pytest.raises(ValueError, match="'contempt' is not an expression class") as error:
        class_index("contempt")
    message = str(error.value)
    assert all(name in message for name in CLASSES)
    assert "happiness" in message  # synonyms are listed too
