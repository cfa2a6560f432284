"""experiments/gpu/payload.py and job.sh: FER-2013 reaches the GPU host in parts that fit its jobs
and is joined there into the pinned archive, or nothing trains.

The host takes 64 MiB a job (we keep to 60), the checkout included, and has no copy of the data.
With FER2013_ROOT naming the real zip (as in CI) the parts are cut from the real 68 MiB and
checked against the pinned plan; without it, from the tests' synthetic zip cut small.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REAL_ROOT

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "experiments" / "gpu"
FER2013_SHA256 = "5fcae82d74351871e97d2b2a012d7836617f838649cf6c6a9bc6dae098479962"  # the Kaggle zip
REAL_ZIP = Path(REAL_ROOT) if REAL_ROOT and REAL_ROOT.endswith(".zip") and Path(REAL_ROOT).is_file() else None

spec = importlib.util.spec_from_file_location("payload", GPU / "payload.py")
payload = importlib.util.module_from_spec(spec)
spec.loader.exec_module(payload)

pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists(), reason="the payload is what git lists: needs a git checkout")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cut(tmp_path: Path, fer_zip: Path) -> tuple[dict, Path]:
    """The synthetic zip in three parts under tmp_path/parts, pinned in tmp_path/parts.json."""
    pinned = payload.split(fer_zip, tmp_path / "parts", tmp_path / "parts.json", fer_zip.stat().st_size // 3 + 1)
    assert [part["name"] for part in pinned["parts"]] == ["part-1", "part-2", "part-3"]
    return pinned, tmp_path / "parts"


def test_every_job_of_the_pinned_plan_fits_the_host() -> None:
    pinned = payload.load()
    assert pinned["sha256"] == FER2013_SHA256 and sum(part["size"] for part in pinned["parts"]) == pinned["size"]
    plan = payload.jobs(pinned)
    assert [job["carry"] for job in plan] == [[f"data/gpu/{part['name']}"] for part in pinned["parts"]]
    assert all(job["bytes"] <= payload.BUDGET for job in plan), plan
    assert plan[-1]["command"].startswith("experiments/gpu/job.sh") and all("check" in job["command"] for job in plan[:-1])


def test_the_tracked_plots_are_palette_pngs() -> None:
    """A plot written the old way triples its bytes: experiments/lean_pngs.py re-encodes it."""
    listed = subprocess.run(["git", "ls-files", "*.png"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert listed
    for name in listed:
        with Image.open(ROOT / name) as image:
            assert image.mode == "P", f"{name}: run python experiments/lean_pngs.py"


def test_the_parts_fit_their_jobs_and_join_into_the_archive(tmp_path: Path, fer_zip: Path) -> None:
    source = REAL_ZIP or fer_zip
    part_bytes = None if REAL_ZIP else fer_zip.stat().st_size // 3 + 1  # the real one: split's own sizing
    pinned = payload.split(source, tmp_path / "parts", tmp_path / "parts.json", part_bytes)
    assert len(pinned["parts"]) >= 2 and pinned["sha256"] == digest(source)
    tree = payload.tree_bytes()
    for part in pinned["parts"]:  # what each job sends: the checkout and its part
        assert tree + (tmp_path / "parts" / part["name"]).stat().st_size <= payload.BUDGET
    out = payload.assemble(payload.load(tmp_path / "parts.json"), tmp_path / "parts", tmp_path / "host" / "fer2013.zip")
    assert digest(out) == digest(source) and out.stat().st_size == source.stat().st_size
    assert [path.name for path in out.parent.iterdir()] == ["fer2013.zip"]


@pytest.mark.skipif(REAL_ZIP is None, reason="set FER2013_ROOT to the real fer2013.zip to run")
def test_the_pinned_parts_are_cut_from_the_real_archive(tmp_path: Path) -> None:
    pinned = payload.load()
    assert payload.split(REAL_ZIP, tmp_path, tmp_path / "parts.json", pinned["parts"][0]["size"]) == pinned


def missing(path: Path) -> None:
    path.unlink()


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-1])


def corrupted(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [missing, truncated, corrupted])
def test_a_broken_part_is_refused_and_leaves_no_archive(cut: tuple[dict, Path], tmp_path: Path, damage: Callable[[Path], None]) -> None:
    pinned, parts = cut
    damage(parts / "part-2")
    out = tmp_path / "host" / "fer2013.zip"
    out.parent.mkdir()
    out.write_bytes(b"an archive from an earlier try")
    with pytest.raises(payload.PayloadError, match="part-2"):
        payload.assemble(pinned, parts, out)
    assert not list(out.parent.iterdir()), "neither the stale archive nor a partial one is left"


def test_parts_that_are_not_the_pinned_archive_are_refused(cut: tuple[dict, Path], tmp_path: Path) -> None:
    pinned, parts = cut
    with pytest.raises(payload.PayloadError, match="not the pinned"):
        payload.assemble({**pinned, "sha256": "0" * 64}, parts, tmp_path / "fer2013.zip")
    assert not (tmp_path / "fer2013.zip").exists()


def test_an_assembled_archive_is_kept_for_a_rerun(cut: tuple[dict, Path], tmp_path: Path) -> None:
    pinned, parts = cut
    out = payload.assemble(pinned, parts, tmp_path / "fer2013.zip")
    for part in parts.iterdir():
        part.unlink()
    assert payload.assemble(pinned, parts, out) == out and digest(out) == pinned["sha256"]


def test_check_names_the_parts_that_have_arrived(cut: tuple[dict, Path]) -> None:
    pinned, parts = cut
    (parts / "part-3").unlink()
    assert payload.check(pinned, parts) == ["part-1", "part-2"]
    corrupted(parts / "part-1")
    with pytest.raises(payload.PayloadError, match="part-1"):
        payload.check(pinned, parts)
    for part in parts.iterdir():
        part.unlink()
    with pytest.raises(payload.PayloadError, match="No part"):
        payload.check(pinned, parts)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GPU / "payload.py"), *args], capture_output=True, text=True, timeout=60)


def test_the_plan_says_what_each_job_carries_and_refuses_one_over_the_budget(cut: tuple[dict, Path], tmp_path: Path) -> None:
    _, parts = cut
    where = ["--manifest", str(tmp_path / "parts.json"), "--parts-dir", str(parts)]
    result = cli(*where, "plan")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("job ") == 3 and "payload.py check" in result.stdout and "job.sh" in result.stdout
    with open(tmp_path / "wheels", "wb") as wheels:
        wheels.truncate(payload.BUDGET)  # sparse: a 60 MiB file in no time
    result = cli(*where, "plan", "--also", str(tmp_path / "wheels"))
    assert result.returncode == 1 and result.stdout.count("OVER") == 1, result.stdout


def test_the_cli_refuses_a_missing_part_with_a_clear_message(cut: tuple[dict, Path], tmp_path: Path) -> None:
    _, parts = cut
    (parts / "part-1").unlink()
    result = cli("--manifest", str(tmp_path / "parts.json"), "--parts-dir", str(parts), "assemble", "--out", str(tmp_path / "a.zip"))
    assert result.returncode == 1 and "Missing in" in result.stderr and "part-1" in result.stderr
    assert not (tmp_path / "a.zip").exists()


def job(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PARTS_DIR": str(tmp_path / "parts"),
        "MANIFEST": str(tmp_path / "parts.json"),
        "ARCHIVE": str(tmp_path / "host" / "fer2013.zip"),
        "FER_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        ["bash", str(GPU / "job.sh"), str(tmp_path / "gpu"), *overrides], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_job_trains_nothing_on_a_broken_part(cut: tuple[dict, Path], tmp_path: Path) -> None:
    corrupted(cut[1] / "part-3")
    result = job(tmp_path)
    assert result.returncode != 0 and "part-3" in result.stderr and "nothing trains" in result.stderr
    assert "warm-up" not in result.stdout and not (tmp_path / "gpu").exists()
    assert not (tmp_path / "host" / "fer2013.zip").exists()


def test_the_job_hands_the_checked_archive_to_run_sota(cut: tuple[dict, Path], tmp_path: Path) -> None:
    # a setting that stops run_sota.sh's warm-up at once, after it resolved its config
    result = job(tmp_path, "trainer=cpu", "data.num_workers=2")
    assert result.returncode != 0 and "data.on_device=true" in result.stdout, result.stdout + result.stderr
    archive = tmp_path / "host" / "fer2013.zip"
    assert digest(archive) == cut[0]["sha256"]
    config = yaml.safe_load((tmp_path / "gpu" / "warmup" / "config.yaml").read_text())
    assert config["data"]["root"] == str(archive)
