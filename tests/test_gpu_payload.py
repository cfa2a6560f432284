"""experiments/gpu/payload.py and job.sh: FER-2013 reaches the GPU host in parts that fit its jobs
and is joined there into the pinned archive, or nothing trains.

The host takes 64 MiB a job (we keep to 60), the checkout included, and has no copy of the data,
nor of what fer needs beyond PyTorch and Lightning: the last job carries those as wheels and
installs them offline. With FER2013_ROOT naming the real zip (as in CI) the parts are cut from the
real 68 MiB and checked against the pinned plan; without it, from the tests' synthetic zip cut
small. The job's installs run on a wheel made here, so that no test needs the pinned ones.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import tomllib
import yaml
from helpers import REAL_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from PIL import Image

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


@pytest.fixture
def wheel(tmp_path: Path) -> tuple[Path, Path]:
    """A wheels list pinning one small pure-Python wheel, and the folder it lies in."""
    folder = tmp_path / "whl"
    folder.mkdir()
    path = fake_wheel(folder, "fer_test_wheel", "1.0")
    listing = tmp_path / "wheels.txt"
    listing.write_text(f"# requirement wheel bytes sha256\nfer-test-wheel==1.0 {path.name} {path.stat().st_size} {digest(path)}\n")
    return listing, folder


def fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A wheel pip installs: one module and the dist-info (METADATA, WHEEL, RECORD) it checks."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "ANSWER = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(
        f"{file},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},{len(text.encode())}\n"
        for file, text in files.items()
    )
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in {**files, f"{dist}/RECORD": record + f"{dist}/RECORD,,\n"}.items():
            archive.writestr(file, text)
    return path


@pytest.mark.parametrize("fetched", [True, False], ids=["wheels as in .whl", "wheels as wheels.txt records"])
def test_every_job_of_the_pinned_plan_fits_the_host(tmp_path: Path, fetched: bool) -> None:
    """The wheels ride with the last part; without .whl here (CI) wheels.txt's bytes count."""
    pinned = payload.load()
    assert pinned["sha256"] == FER2013_SHA256 and sum(part["size"] for part in pinned["parts"]) == pinned["size"]
    wheels_dir = payload.WHEELS_DIR if fetched else tmp_path / "absent"
    plan = payload.jobs(pinned, wheels_dir=wheels_dir)
    assert [job["carry"][0] for job in plan] == [f"data/gpu/{part['name']}" for part in pinned["parts"]]
    assert [len(job["carry"]) for job in plan] == [1] * (len(plan) - 1) + [2] and plan[-1]["carry"][1] == payload.carried(wheels_dir)
    wheels, tree = payload.load_wheels(), payload.tree_bytes()
    assert [job["bytes"] for job in plan[:-1]] == [tree + part["size"] for part in pinned["parts"][:-1]]
    assert plan[-1]["bytes"] == tree + pinned["parts"][-1]["size"] + payload.wheels_bytes(wheels, wheels_dir)
    if not fetched:
        assert payload.wheels_bytes(wheels, wheels_dir) == sum(wheel["bytes"] for wheel in wheels) > 0
    assert all(job["bytes"] <= payload.BUDGET for job in plan), plan
    assert plan[-1]["command"].startswith("experiments/gpu/job.sh") and all("check" in job["command"] for job in plan[:-1])


# what the GPU host's python3 has (experiments/gpu/wheels.txt) that the pinned wheels need
HOST_HAS = {"numpy", "scipy", "pyyaml", "packaging", "opencv-python-headless", "typing-extensions"}


def test_the_pinned_wheels_are_for_the_host_and_within_pyproject() -> None:
    wheels = payload.load_wheels()
    names = [canonicalize_name(wheel["name"]) for wheel in wheels]
    assert len(set(names)) == len(names), "one version of each: two stop the whole install"
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ranges = {canonicalize_name(requirement.name): requirement.specifier for requirement in map(Requirement, dependencies)}
    assert {"hydra-core", "omegaconf", "albumentations"} <= set(names)
    for wheel, name in zip(wheels, names):
        file_name, file_version, _, tags = parse_wheel_filename(wheel["file"])
        assert (file_name, str(file_version)) == (name, wheel["version"]), wheel
        assert any(tag.interpreter in {"py3", "cp312"} and (tag.platform == "any" or re.fullmatch(r"manylinux\w*_x86_64", tag.platform))
                   for tag in tags), f"{wheel['file']}: not for CPython 3.12 on x86-64 Linux"
        assert wheel["version"] in ranges.get(name, wheel["version"]), f"{wheel['name']}=={wheel['version']} is outside pyproject's {ranges.get(name)}"
        assert re.fullmatch(r"(sdist:)?[0-9a-f]{64}", wheel["sha256"]) and wheel["bytes"] > 0


@pytest.mark.skipif(not payload.WHEELS_DIR.is_dir(), reason="run experiments/gpu/fetch_wheels.sh to check the fetched wheels")
def test_the_fetched_wheels_are_the_pinned_ones_and_need_nothing_else() -> None:
    """Each fetched wheel has its pinned sha256, and what it requires on CPython 3.12 is pinned too or on the host."""
    wheels = payload.load_wheels()
    pinned_names = {canonicalize_name(wheel["name"]) for wheel in wheels}
    for wheel in wheels:
        path = payload.WHEELS_DIR / wheel["file"]
        assert path.is_file(), f"{path}: run experiments/gpu/fetch_wheels.sh"
        if not wheel["sha256"].startswith("sdist:"):
            assert digest(path) == wheel["sha256"], path
        with zipfile.ZipFile(path) as archive:
            metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
            lines = archive.read(metadata).decode().splitlines()
        for line in lines:
            if line.startswith("Requires-Dist:"):
                requirement = Requirement(line.split(":", 1)[1])
                if requirement.marker is None or requirement.marker.evaluate({"python_version": "3.12", "extra": ""}):
                    name = canonicalize_name(requirement.name)
                    assert name in pinned_names | HOST_HAS, f"{wheel['file']} needs {requirement}, neither pinned nor on the host"


def test_only_the_wheels_not_installed_are_to_install_and_a_missing_one_is_named(tmp_path: Path, wheel: tuple[Path, Path]) -> None:
    listing, folder = wheel
    wheels = payload.load_wheels(listing)
    here = {"name": "pytest", "version": pytest.__version__, "file": "pytest-any.whl", "bytes": 1, "sha256": "0" * 64}
    assert payload.to_install([here, *wheels], folder) == [folder / wheels[0]["file"]]
    with pytest.raises(payload.PayloadError, match=wheels[0]["file"]):
        payload.to_install(wheels, tmp_path / "absent")
    assert payload.wheels_bytes(wheels, tmp_path / "absent") == wheels[0]["bytes"] == payload.wheels_bytes(wheels, folder)


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


def test_the_plan_says_what_each_job_carries_and_refuses_one_over_the_budget(
    cut: tuple[dict, Path], tmp_path: Path, wheel: tuple[Path, Path]
) -> None:
    _, parts = cut
    listing, folder = wheel
    where = ["--manifest", str(tmp_path / "parts.json"), "--parts-dir", str(parts), "--wheels", str(listing)]
    result = cli(*where, "--wheels-dir", str(folder), "plan")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("job ") == 3 and "payload.py check" in result.stdout and "job.sh" in result.stdout
    assert result.stdout.count(payload.carried(folder)) == 1, "the wheels ride with the last job only"
    with open(tmp_path / "big", "wb") as big:
        big.truncate(payload.BUDGET)  # sparse: a 60 MiB file in no time
    result = cli(*where, "--wheels-dir", str(folder), "plan", "--also", str(tmp_path / "big"))
    assert result.returncode == 1 and result.stdout.count("OVER") == 1, result.stdout
    result = cli(*where, "--wheels-dir", str(tmp_path / "absent"), "plan")
    assert result.returncode == 1 and "fetch_wheels.sh" in result.stdout, result.stdout


def test_the_cli_refuses_a_missing_part_with_a_clear_message(cut: tuple[dict, Path], tmp_path: Path) -> None:
    _, parts = cut
    (parts / "part-1").unlink()
    result = cli("--manifest", str(tmp_path / "parts.json"), "--parts-dir", str(parts), "assemble", "--out", str(tmp_path / "a.zip"))
    assert result.returncode == 1 and "Missing in" in result.stderr and "part-1" in result.stderr
    assert not (tmp_path / "a.zip").exists()


def job(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """job.sh on the cut parts, with the wheels of the ``wheel`` fixture (none where it is not used)."""
    listing = tmp_path / "wheels.txt"
    if not listing.exists():
        listing.write_text("# no wheels\n")
    env = {
        **os.environ,
        "PARTS_DIR": str(tmp_path / "parts"),
        "MANIFEST": str(tmp_path / "parts.json"),
        "ARCHIVE": str(tmp_path / "host" / "fer2013.zip"),
        "WHEELS_LIST": str(listing),
        "WHEELS_DIR": str(tmp_path / "whl"),
        "SITE": str(tmp_path / "site"),
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


def test_the_job_trains_nothing_without_a_wheel_it_needs(cut: tuple[dict, Path], tmp_path: Path, wheel: tuple[Path, Path]) -> None:
    for path in wheel[1].iterdir():
        path.unlink()
    result = job(tmp_path)
    assert result.returncode != 0 and "fer_test_wheel-1.0-py3-none-any.whl" in result.stderr and "nothing trains" in result.stderr
    assert "warm-up" not in result.stdout and not (tmp_path / "gpu").exists() and not (tmp_path / "site").exists()


@pytest.mark.slow
def test_the_job_installs_the_wheels_and_hands_the_checked_archive_to_run_sota(
    cut: tuple[dict, Path], tmp_path: Path, wheel: tuple[Path, Path]
) -> None:
    # a setting that stops run_sota.sh's warm-up at once, after it resolved its config
    result = job(tmp_path, "trainer=cpu", "data.num_workers=2")
    assert result.returncode != 0 and "data.on_device=true" in result.stdout, result.stdout + result.stderr
    assert "installing 1 carried wheels" in result.stdout and (tmp_path / "site" / "fer_test_wheel.py").is_file()
    archive = tmp_path / "host" / "fer2013.zip"
    assert digest(archive) == cut[0]["sha256"]
    config = yaml.safe_load((tmp_path / "gpu" / "warmup" / "config.yaml").read_text())
    assert config["data"]["root"] == str(archive)
    for path in wheel[1].iterdir():  # a rerun on a warm machine: installed already, so not carried again
        path.unlink()
    result = job(tmp_path, "trainer=cpu", "data.num_workers=2")
    assert "data.on_device=true" in result.stdout and "installing" not in result.stdout, result.stdout + result.stderr
