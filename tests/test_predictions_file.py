"""predictions.npz, the file: what is written reads back unchanged, the optional keys default, and
each kind of bad file is refused with a message that names the file and what is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fer.classes import CLASSES
from fer.run.predictions_file import (
    PREDICTIONS_FILE,
    PredictionsFileError,
    SavedSplit,
    check_finite,
    check_split,
    predictions_path,
    read_predictions,
    write_predictions,
)

K = len(CLASSES)
IDS = np.array(["a.jpg", "b.jpg", "c.jpg"])
LABELS = np.array([0, 3, 6], dtype=np.int64)
LOGITS = np.arange(3 * K, dtype=np.float32).reshape(3, K)


def good_arrays() -> dict[str, np.ndarray]:
    """The keys save_predictions writes for one split, as np.savez takes them."""
    return {
        "classes": np.asarray(CLASSES), "temperature": np.float64(1.5),
        "test_ids": IDS, "test_labels": LABELS, "test_logits": LOGITS, "test_tta": np.asarray("flip"),
    }


def saved_file(tmp_path: Path, **changes: np.ndarray | None) -> Path:
    """A predictions.npz of good_arrays() with ``changes`` (a value of None leaves that key out)."""
    arrays = {**good_arrays(), **changes}
    path = tmp_path / PREDICTIONS_FILE
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def refused(path: Path, problem: str) -> None:
    with pytest.raises(PredictionsFileError, match=re.escape(f"{path} ") + problem) as caught:
        read_predictions(path)
    assert re.match(problem, caught.value.problem)


def test_what_is_written_reads_back_unchanged(tmp_path: Path) -> None:
    splits = {"val": SavedSplit(IDS, LABELS, LOGITS, "none"), "test": SavedSplit(IDS[::-1], LABELS[::-1], LOGITS[::-1], "flip")}
    path = write_predictions(tmp_path / "run" / PREDICTIONS_FILE, splits, 1.5)
    assert predictions_path(tmp_path / "run") == path and predictions_path(path) == path
    with np.load(path) as saved:
        assert saved["test_logits"].dtype == np.float32 and saved["classes"].tolist() == list(CLASSES)
    read, temperature = read_predictions(path)
    assert list(read) == ["test", "val"] and temperature == 1.5
    for name, split in splits.items():
        assert read[name].ids.tolist() == split.ids.tolist() and read[name].tta == split.tta
        assert read[name].labels.dtype == np.int64 and read[name].logits.dtype == np.float64
        np.testing.assert_array_equal(read[name].labels, split.labels)
        np.testing.assert_array_equal(read[name].logits, split.logits)


def test_a_file_made_by_hand_may_leave_out_tta_classes_and_temperature(tmp_path: Path) -> None:
    splits, temperature = read_predictions(saved_file(tmp_path, classes=None, temperature=None, test_tta=None))
    assert temperature == 1.0 and splits["test"].tta is None and splits["test"].ids.tolist() == IDS.tolist()


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    text = tmp_path / "text.npz"
    text.write_text("not an npz")
    refused(text, f"is not a readable {PREDICTIONS_FILE} ")
    single = tmp_path / "single.npy"
    np.save(single, LOGITS)
    refused(single, r"holds a single array \(a \.npy file\)")


@pytest.mark.parametrize("missing", ["test_ids", "test_labels"])
def test_a_split_missing_a_key_is_refused(tmp_path: Path, missing: str) -> None:
    refused(saved_file(tmp_path, **{missing: None}), f"holds test_logits but no {missing}: a split needs its ids, labels and logits")


@pytest.mark.parametrize(
    "changes",
    [{"test_ids": IDS[:2]}, {"test_labels": LABELS[:, None]}, {"test_logits": LOGITS[:, :5]}, {"test_logits": LOGITS[:2]}, {"test_ids": IDS[:, None]}],
)
def test_wrong_shapes_are_refused(tmp_path: Path, changes: dict[str, np.ndarray]) -> None:
    refused(saved_file(tmp_path, **changes), rf"holds an unusable test split: Predictions need one id, label and {K} logits per image, got ids of shape")


@pytest.mark.parametrize("label", [-1, K])
def test_labels_that_are_not_class_indices_are_refused(tmp_path: Path, label: int) -> None:
    labels = LABELS.copy()
    labels[1] = label
    problem = rf"holds an unusable test split: Predictions need labels that are class indices 0\.\.{K - 1} .*got \[{label}\]"
    refused(saved_file(tmp_path, test_labels=labels), problem)


def test_labels_or_logits_that_are_not_numbers_are_refused(tmp_path: Path) -> None:
    refused(saved_file(tmp_path, test_labels=np.array(["x", "y", "z"])), "holds test labels or logits that are not numbers")


def test_other_classes_are_refused(tmp_path: Path) -> None:
    other = np.asarray([*CLASSES[1:], CLASSES[0]])
    refused(saved_file(tmp_path, classes=other), re.escape(f"uses the classes {other.tolist()}, not fer's {list(CLASSES)}."))


@pytest.mark.parametrize("temperature", [np.float64(0.0), np.float64(-1.0), np.float64(np.nan), np.float64(np.inf), np.array([1.0, 2.0]), np.asarray("1")])
def test_a_bad_temperature_is_refused(tmp_path: Path, temperature: np.ndarray) -> None:
    refused(saved_file(tmp_path, temperature=temperature), r"holds the temperature .*, which must be one number > 0")


def test_non_finite_logits_are_kept_by_reading_and_refused_where_they_are_learned_from(tmp_path: Path) -> None:
    """A run that diverged saves NaN logits: its file still reads (and scores); a teacher's cannot."""
    logits = LOGITS.copy()
    logits[0, 2], logits[2, 0] = np.nan, np.inf
    path = saved_file(tmp_path, test_logits=logits)
    splits, _ = read_predictions(path)
    problem = "holds logits that are not finite (NaN or inf) for 2 of its 3 test images (e.g. ['a.jpg', 'c.jpg'])"
    with pytest.raises(PredictionsFileError, match=re.escape(problem)):
        check_finite(path, "test", splits["test"])
    check_finite(path, "test", read_predictions(saved_file(tmp_path))[0]["test"])


def test_check_split_refuses_in_memory_outputs_with_the_same_messages() -> None:
    check_split(IDS, LABELS, LOGITS)
    with pytest.raises(ValueError, match=r"one id, label and 7 logits per image, got ids of shape \(2,\), labels of shape \(3,\)"):
        check_split(IDS[:2], LABELS, LOGITS)
    with pytest.raises(ValueError, match=r"class indices 0\.\.6 .*got \[7, 9\]"):
        check_split(IDS, np.array([9, 7, 9]), LOGITS)
