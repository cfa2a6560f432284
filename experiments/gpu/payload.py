#!/usr/bin/env python3
"""FER-2013 for the GPU host, in parts that fit its jobs, and the plan of those jobs.

A job on the host carries the checkout and at most a few ignored paths, 64 MiB in all (we keep
to 60 MiB); the host has no copy of the data and no network, and FER-2013's zip is 68 MiB. So
the zip travels in parts, one a job, each left in data/gpu/ on the host (ignored files a job
leaves there stay for the next job while the machine is warm), and the last job joins them and
checks every part and the whole against the sha256s pinned in git before anything trains.
The last job also carries .whl/, the wheels of what fer needs and the host lacks (pinned in
experiments/gpu/wheels.txt, fetched here by fetch_wheels.sh), and installs those not there yet.
Standard library only: it runs on the host before anything is installed.

  split ARCHIVE   here: cut ARCHIVE into data/gpu/part-1, part-2, ... and pin their sizes and
                  sha256s in experiments/gpu/fer2013.parts.json (tracked), then print the plan
  plan            here: the jobs in order, what each carries and the bytes it sends; exit 1 if
                  one is over 60 MiB or a part or wheel to carry is not here
  check           on the host: the parts there are intact; says which are still to come
  assemble        on the host: join the parts into data/fer2013.zip, refusing (exit 1, no
                  archive left) if a part is missing, truncated or not the pinned one
  wheels          on the host: the carried wheels still to install (a pinned version not
                  importable), one a line; exit 1 naming any of those not in .whl/

experiments/README.md ("The GPU rows") gives the jobs as a session types them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "experiments" / "gpu" / "fer2013.parts.json"
PARTS_DIR = ROOT / "data" / "gpu"
ARCHIVE = ROOT / "data" / "fer2013.zip"
WHEELS = ROOT / "experiments" / "gpu" / "wheels.txt"
WHEELS_DIR = ROOT / ".whl"
MIB = 2**20
BUDGET = 60 * MIB  # the host refuses a job over 64 MiB; the rest is margin
HEADROOM = 8 * MIB  # left free in every job by split's sizing: the tree grows, the last job may carry wheels
CHUNK = MIB


class PayloadError(Exception):
    """The parts cannot make the pinned archive (or a job cannot be planned): said plainly."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of what every job sends: the tracked files and the untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout
    paths = {root / os.fsdecode(name) for name in listed.split(b"\0") if name}
    return sum(path.lstat().st_size for path in paths if os.path.lexists(path))


def path_bytes(path: Path) -> int:
    """Bytes of a carried file or folder."""
    if path.is_dir():
        return sum(file.lstat().st_size for file in path.rglob("*") if not file.is_dir())
    return path.lstat().st_size


def split(archive: Path, parts_dir: Path = PARTS_DIR, manifest: Path = MANIFEST, part_bytes: int | None = None) -> dict:
    """Cut ``archive`` into equal parts (the last shorter), ``part_bytes`` each or, by default, the
    fewest that leave every job HEADROOM under BUDGET; write them and the manifest; return it."""
    size = archive.stat().st_size
    if part_bytes is None:
        tree = tree_bytes()
        room = BUDGET - HEADROOM - tree
        if room <= 0:
            raise PayloadError(f"The checkout alone sends {tree:,} bytes: no room for data under {BUDGET:,} a job.")
        part_bytes = math.ceil(size / math.ceil(size / room))
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts, whole = [], hashlib.sha256()
    with open(archive, "rb") as source:
        for index in range(1, math.ceil(size / part_bytes) + 1):
            name, digest, left = f"part-{index}", hashlib.sha256(), part_bytes
            with open(parts_dir / name, "wb") as part:
                while left and (block := source.read(min(CHUNK, left))):
                    part.write(block)
                    digest.update(block)
                    whole.update(block)
                    left -= len(block)
            parts.append({"name": name, "size": (parts_dir / name).stat().st_size, "sha256": digest.hexdigest()})
    for stale in set(parts_dir.glob("part-*")) - {parts_dir / part["name"] for part in parts}:
        stale.unlink()  # from an earlier split into more parts
    pinned = {"archive": archive.name, "size": size, "sha256": whole.hexdigest(), "parts": parts}
    manifest.write_text(json.dumps(pinned, indent=2) + "\n")
    return pinned


def load(manifest: Path = MANIFEST) -> dict:
    return json.loads(manifest.read_text())


def load_wheels(listing: Path = WHEELS) -> list[dict]:
    """The pinned wheels, one per line of ``listing``: requirement (name==version), wheel file,
    bytes and sha256 (``sdist:`` and the sdist's where the wheel is built here)."""
    wheels = []
    for line in listing.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement, file, size, sha = line.split()
            name, version = requirement.split("==")
            wheels.append({"name": name, "version": version, "file": file, "bytes": int(size), "sha256": sha})
    return wheels


def wheels_bytes(wheels: list[dict], wheels_dir: Path = WHEELS_DIR) -> int:
    """Bytes the carried ``wheels_dir`` sends: what is in it, and for each pinned wheel not there
    yet the bytes wheels.txt records (so the plan is checked before, or without, fetching them)."""
    here = path_bytes(wheels_dir) if wheels_dir.is_dir() else 0
    return here + sum(wheel["bytes"] for wheel in wheels if not (wheels_dir / wheel["file"]).is_file())


def to_install(wheels: list[dict], wheels_dir: Path = WHEELS_DIR) -> list[Path]:
    """The wheels whose pinned version this Python does not import yet (so a rerun on a warm
    machine installs nothing); PayloadError naming those of them not in ``wheels_dir``."""
    needed = []
    for wheel in wheels:
        try:
            if importlib.metadata.version(wheel["name"]) == wheel["version"]:
                continue
        except importlib.metadata.PackageNotFoundError:
            pass
        needed.append(wheels_dir / wheel["file"])
    missing = [path.name for path in needed if not path.is_file()]
    if missing:
        raise PayloadError(
            f"Missing in {wheels_dir}: {', '.join(missing)}. Fetch them here (experiments/gpu/fetch_wheels.sh) "
            f"and carry {carried(wheels_dir)} in this job."
        )
    return needed


def carried(path: Path) -> str:
    """How ``carry`` names a path: relative to the repository root."""
    return os.path.relpath(path, ROOT)


def jobs(pinned: dict, parts_dir: Path = PARTS_DIR, also: tuple[Path, ...] = (),
         wheels: list[dict] | None = None, wheels_dir: Path = WHEELS_DIR) -> list[dict]:
    """The GPU plan: one job per part, in order; each but the last checks what has arrived, the
    last also carries ``wheels_dir`` (the pinned ``wheels``, by default wheels.txt's) and ``also``,
    and installs, assembles and trains (experiments/gpu/job.sh)."""
    wheels = load_wheels() if wheels is None else wheels
    tree, plan = tree_bytes(), []
    for index, part in enumerate(pinned["parts"], 1):
        last = index == len(pinned["parts"])
        carry = [parts_dir / part["name"], *((wheels_dir, *also) if last else ())]
        plan.append({
            "job": index,
            "carry": [carried(path) for path in carry],
            "bytes": tree + part["size"] + (wheels_bytes(wheels, wheels_dir) + sum(map(path_bytes, also)) if last else 0),
            "command": "experiments/gpu/job.sh OUT_DIR [overrides ...]" if last else "python3 experiments/gpu/payload.py check",
        })
    return plan


def check(pinned: dict, parts_dir: Path = PARTS_DIR) -> list[str]:
    """The names of the parts here, each checked against the manifest; PayloadError if one is wrong
    or none is here."""
    here = []
    for part in pinned["parts"]:
        path = parts_dir / part["name"]
        if not path.exists():
            continue
        if path.stat().st_size != part["size"] or sha256(path) != part["sha256"]:
            raise PayloadError(f"{path} is not the pinned {part['name']} ({part['size']:,} bytes, sha256 {part['sha256']}): carry it again.")
        here.append(part["name"])
    if not here:
        raise PayloadError(f"No part of {pinned['archive']} in {parts_dir}.")
    return here


def assemble(pinned: dict, parts_dir: Path = PARTS_DIR, out: Path = ARCHIVE) -> Path:
    """Join the parts into ``out``, checking each part and the whole against the manifest; leave
    no ``out`` unless it is the pinned archive. An ``out`` that already is stays as it is."""
    if out.is_file() and out.stat().st_size == pinned["size"] and sha256(out) == pinned["sha256"]:
        return out
    out.unlink(missing_ok=True)  # a stale or broken archive must not be found by a later run
    missing = [part["name"] for part in pinned["parts"] if not (parts_dir / part["name"]).is_file()]
    if missing:
        raise PayloadError(
            f"Missing in {parts_dir}: {', '.join(missing)}. A part a job carried stays on the host only while the "
            "machine is warm; start again from job 1 (experiments/README.md, 'The GPU rows')."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial, whole = out.with_name(out.name + ".partial"), hashlib.sha256()
    try:
        with open(partial, "wb") as joined:
            for part in pinned["parts"]:
                digest, size = hashlib.sha256(), 0
                with open(parts_dir / part["name"], "rb") as source:
                    while block := source.read(CHUNK):
                        joined.write(block)
                        digest.update(block)
                        whole.update(block)
                        size += len(block)
                if size != part["size"] or digest.hexdigest() != part["sha256"]:
                    raise PayloadError(
                        f"{parts_dir / part['name']} has {size:,} bytes, sha256 {digest.hexdigest()}; the pinned "
                        f"{part['name']} has {part['size']:,}, sha256 {part['sha256']}: carry it again."
                    )
        if whole.hexdigest() != pinned["sha256"]:
            raise PayloadError(f"The joined parts have sha256 {whole.hexdigest()}, not the pinned {pinned['sha256']}.")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def print_plan(pinned: dict, parts_dir: Path, also: tuple[Path, ...], wheels: list[dict], wheels_dir: Path) -> bool:
    """Print the jobs; False if one is over BUDGET or a part or wheel to carry is not here as pinned."""
    absent = [wheel["file"] for wheel in wheels if not (wheels_dir / wheel["file"]).is_file()]
    fits = True
    for job, part in zip(jobs(pinned, parts_dir, also, wheels, wheels_dir), pinned["parts"]):
        over = job["bytes"] > BUDGET
        print(f"job {job['job']} of {len(pinned['parts'])}: carry={json.dumps(job['carry'])}, "
              f"{job['bytes']:,} bytes ({job['bytes'] / MIB:.1f} MiB of {BUDGET // MIB}){'  OVER' if over else ''}")
        print(f"    {job['command']}")
        path = parts_dir / part["name"]
        here = path.is_file() and path.stat().st_size == part["size"]
        if not here:
            print(f"    {path} is not here as pinned: run `payload.py split ARCHIVE` first")
        fits = fits and here and not over
    if absent:
        print(f"    {len(absent)} of the {len(wheels)} pinned wheels are not in {wheels_dir} (counted at the bytes "
              f"wheels.txt records): run experiments/gpu/fetch_wheels.sh first")
    return fits and not absent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="the pinned parts (default: %(default)s)")
    parser.add_argument("--parts-dir", type=Path, default=PARTS_DIR, help="where the parts are (default: %(default)s)")
    parser.add_argument("--wheels", type=Path, default=WHEELS, help="the pinned wheels (default: %(default)s)")
    parser.add_argument("--wheels-dir", type=Path, default=WHEELS_DIR, help="where the wheels are (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    split_parser = commands.add_parser("split", help="cut an archive into parts and pin them")
    split_parser.add_argument("archive", type=Path)
    split_parser.add_argument("--part-bytes", type=int, help="bytes a part (default: the fewest parts that fit)")
    plan_parser = commands.add_parser("plan", help="the jobs, what each carries and sends")
    plan_parser.add_argument("--also", type=Path, action="append", default=[], help="another path the last job carries")
    commands.add_parser("check", help="the parts here are intact")
    commands.add_parser("wheels", help="the carried wheels still to install")
    assemble_parser = commands.add_parser("assemble", help="join the parts into the checked archive")
    assemble_parser.add_argument("--out", type=Path, default=ARCHIVE, help="(default: %(default)s)")
    args = parser.parse_args()
    try:
        wheels = load_wheels(args.wheels)
        if args.command == "wheels":
            for path in to_install(wheels, args.wheels_dir):
                print(path)
            return 0
        if args.command == "split":
            pinned = split(args.archive, args.parts_dir, args.manifest, args.part_bytes)
            parts = f"{len(pinned['parts'])} parts in {args.parts_dir}, pinned in {args.manifest}"
            print(f"{args.archive} ({pinned['size']:,} bytes, sha256 {pinned['sha256']}) -> {parts}")
            return 0 if print_plan(pinned, args.parts_dir, (), wheels, args.wheels_dir) else 1
        pinned = load(args.manifest)
        if args.command == "plan":
            return 0 if print_plan(pinned, args.parts_dir, tuple(args.also), wheels, args.wheels_dir) else 1
        if args.command == "check":
            here = check(pinned, args.parts_dir)
            to_come = [part["name"] for part in pinned["parts"] if part["name"] not in here]
            print(f"intact: {', '.join(here)}; still to come: {', '.join(to_come) or 'none'}")
            return 0
        out = assemble(pinned, args.parts_dir, args.out)
        print(f"{out}: {pinned['size']:,} bytes, sha256 {pinned['sha256']} as pinned")
        return 0
    except PayloadError as error:
        print(f"payload.py {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
