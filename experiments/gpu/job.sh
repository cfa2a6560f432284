#!/usr/bin/env bash
# The last job of the GPU plan (experiments/README.md, "The GPU rows"): join the parts of
# FER-2013 that this and the earlier jobs left in data/gpu/, check every part and the whole
# against the sha256s pinned in experiments/gpu/fer2013.parts.json, install offline what fer
# needs and the host lacks (the wheels this job carries in .whl/, pinned in
# experiments/gpu/wheels.txt, and fer itself from this checkout), and only then run run_sota.sh
# on the joined archive. Nothing trains unless every checksum matches and every install is done.
# A rerun on a warm machine installs nothing already there, and needs no .whl/ if nothing is missing.
#
# Usage: experiments/gpu/job.sh OUT_DIR [hydra overrides for every run ...]   (as run_sota.sh)
# Environment: PARTS_DIR (data/gpu), MANIFEST (experiments/gpu/fer2013.parts.json),
#   ARCHIVE (data/fer2013.zip: where the parts are joined), WHEELS_LIST (experiments/gpu/wheels.txt),
#   WHEELS_DIR (.whl), SITE (/tmp/site: where the wheels go, put first on PYTHONPATH),
#   PYTHON (python3), and run_sota.sh's.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
ARCHIVE=${ARCHIVE:-$ROOT/data/fer2013.zip}
SITE=${SITE:-/tmp/site}
PAYLOAD=("$PY" "$ROOT/experiments/gpu/payload.py" --parts-dir "${PARTS_DIR:-$ROOT/data/gpu}"
    --manifest "${MANIFEST:-$ROOT/experiments/gpu/fer2013.parts.json}"
    --wheels "${WHEELS_LIST:-$ROOT/experiments/gpu/wheels.txt}" --wheels-dir "${WHEELS_DIR:-$ROOT/.whl}")

"${PAYLOAD[@]}" assemble --out "$ARCHIVE" ||
    { echo "job.sh: the data is not the pinned FER-2013, so nothing trains." >&2; exit 1; }

export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
to_install=$("${PAYLOAD[@]}" wheels) ||
    { echo "job.sh: a wheel fer needs is neither installed nor carried, so nothing trains." >&2; exit 1; }
if [ -n "$to_install" ]; then
    mapfile -t wheels <<<"$to_install"
    echo "job.sh: installing ${#wheels[@]} carried wheels into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" ||
        { echo "job.sh: pip could not install the carried wheels into $SITE, so nothing trains." >&2; exit 1; }
fi

fer_is_this_checkout() {  # the fer that $PY imports is this checkout, installed editable (conf/ as fer.conf)
    "$PY" -c 'import importlib.metadata as m, json, pathlib, sys
url = json.loads(m.distribution("fer").read_text("direct_url.json") or "{}")
sys.exit(url != {"url": pathlib.Path(sys.argv[1]).as_uri(), "dir_info": {"editable": True}})' "$ROOT" 2>/dev/null
}
if ! fer_is_this_checkout; then
    echo "job.sh: installing fer from $ROOT (editable)"
    # the host's setuptools builds it: --check-build-dependencies says so plainly if it is older than pyproject asks
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --check-build-dependencies -e "$ROOT" &&
        fer_is_this_checkout ||
        { echo "job.sh: $PY could not install fer from $ROOT, so nothing trains." >&2; exit 1; }
fi

export FER2013_ROOT=$ARCHIVE
exec "$ROOT/experiments/gpu/run_sota.sh" "$@"
