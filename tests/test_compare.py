"""``python -m fer.compare A B``: paired comparison of two runs' saved predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fer.compare import compare, main
from fer.scoring.predictions import SplitPredictions, save_predictions


def run_dir(path: Path, ids: list[str], labels: np.ndarray, predicted: np.ndarray, split: str = "test") -> Path:
    logits = np.full((len(labels), 7), -5.0)
    logits[np.arange(len(labels)), predicted] = 5.0
    save_predictions(path, {split: SplitPredictions(ids, labels, logits, "none")})
    return path


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """40 images of class 'happy' (3) and 20 'sad' (4): A gets 30 right, B 40; B is right on every
    image A gets right, plus 10 more (6 happy, 4 sad)."""
    labels = np.array([3] * 40 + [4] * 20)
    ids = [f"img{i:02d}.jpg" for i in range(60)]
    a = labels.copy()
    a[20:40] = 0  # 20 happy wrong
    a[50:60] = 0  # 10 sad wrong
    b = a.copy()
    b[20:26] = 3
    b[50:54] = 4
    # B lists its images in another order: compare aligns them by id
    order = np.arange(60)[::-1]
    return run_dir(tmp_path / "a", ids, labels, a), run_dir(tmp_path / "b", [ids[i] for i in order], labels[order], b[order])


def test_compare_counts_discordant_images_and_says_it_in_a_sentence(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    main([str(pair[0]), str(pair[1]), "-o", str(tmp_path / "comparison.json")])
    result = json.loads((tmp_path / "comparison.json").read_text())
    assert result["images"] == 60 and result["a"]["acc"] == pytest.approx(0.5) and result["b"]["acc"] == pytest.approx(40 / 60)
    assert result["mcnemar"] == {"only_a_right": 0, "only_b_right": 10, "p_value": pytest.approx(2 / 1024)}
    assert result["acc_difference"] == pytest.approx(10 / 60)
    low, high = result["acc_difference_ci95"]
    assert 0 < low < 10 / 60 < high
    assert result["per_class"]["happy"]["difference"] == pytest.approx(6 / 40)
    assert result["per_class"]["sad"]["difference"] == pytest.approx(4 / 20)
    assert "angry" not in result["per_class"]  # no image of that class
    out = capsys.readouterr().out
    assert f"B beats A by 16.7 points, 95% CI {100 * low:.1f} to {100 * high:.1f}, McNemar p = 0.002." in out
    assert "A = " in out and "happy" in out


def test_a_difference_inside_the_noise_says_so_and_the_reverse_order_says_a_beats_b(pair: tuple[Path, Path]) -> None:
    from fer.compare import load_side

    a, b = (load_side(p, "test") for p in pair)
    reverse = compare(b, a)
    assert reverse["sentence"].startswith("A beats B by 16.7 points")
    wrong_one = SplitPredictions(a.ids, a.labels, a.logits.copy(), "none")
    wrong_one.logits[0] = wrong_one.logits[0][::-1].copy()  # one more mistake: p = 1
    close = compare(a, wrong_one)
    assert close["mcnemar"]["p_value"] == 1.0
    assert "the interval holds 0" in close["sentence"]
    same = compare(a, a)
    assert same["sentence"].startswith("B and A score the same (50.00%)")


def test_compare_refuses_runs_on_other_images_or_without_the_split(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    labels = np.array([3] * 60)
    other = run_dir(tmp_path / "other", [f"x{i}.jpg" for i in range(60)], labels, labels)
    with pytest.raises(SystemExit) as exit:
        main([str(pair[0]), str(other)])
    assert exit.value.code == 2 and "not on the same images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(pair[0]), str(pair[1]), "--split", "val"])
    assert "not split='val'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(pair[0]), str(tmp_path / "missing")])
    assert "does not exist" in capsys.readouterr().err


def test_compare_scores_checkpoints_itself(tiny_checkpoint: Path, fer_zip: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    main([str(tiny_checkpoint), str(tiny_checkpoint), "--data-root", str(fer_zip), "--split", "val"])
    out = capsys.readouterr().out
    assert "14 images, the same in both" in out and "B and A score the same" in out
