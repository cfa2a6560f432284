#!/usr/bin/env bash
# The last job of the GPU plan (experiments/README.md, "The GPU rows"): join the parts of
# FER-2013 that this and the earlier jobs left in data/gpu/, check every part and the whole
# against the sha256s pinned in experiments/gpu/fer2013.parts.json, and only then run
# run_sota.sh on the joined archive. Nothing trains unless every checksum matches.
#
# Usage: experiments/gpu/job.sh OUT_DIR [hydra overrides for every run ...]   (as run_sota.sh)
# Environment: PARTS_DIR (data/gpu), MANIFEST (experiments/gpu/fer2013.parts.json),
#   ARCHIVE (data/fer2013.zip: where the parts are joined), PYTHON (python3), and run_sota.sh's.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ARCHIVE=${ARCHIVE:-$ROOT/data/fer2013.zip}
"${PYTHON:-python3}" "$ROOT/experiments/gpu/payload.py" --parts-dir "${PARTS_DIR:-$ROOT/data/gpu}" \
    --manifest "${MANIFEST:-$ROOT/experiments/gpu/fer2013.parts.json}" assemble --out "$ARCHIVE" ||
    { echo "job.sh: the data is not the pinned FER-2013, so nothing trains." >&2; exit 1; }
export FER2013_ROOT=$ARCHIVE
exec "$ROOT/experiments/gpu/run_sota.sh" "$@"
