#!/bin/sh
# Rehearse `make gpu-check` on a CPU with the GPU machine's own versions, before spending device time.
#
#   sh scripts/gpu_rehearsal.sh        (or `make gpu-rehearsal`; about 5 GB of downloads the first time)
#
# The GPU machine has Python 3.12 with its own torch, triton and NumPy (the versions below, as its image
# was last read) and no package index; `make gpu-check` brings the rest from .whl/. This builds a venv of
# those versions in .gpu-rehearsal/ (git-ignored), fills .whl/ if it is empty, and runs there
# `gpu_check.py --dry-run --run-tests --sweep-s 20`: every step on the CPU, the carried wheels installed as on
# the machine, step 2's tests run rather than only collected, and the tuning round's first shapes. What fails
# here would fail there.
# A newer image: change the versions below, remove .gpu-rehearsal/ and rerun.
set -eu
cd "$(dirname "$0")/.."
# A Python 3.12: $PYTHON312, else python3.12 on PATH, else pyenv's.
if [ -z "${PYTHON312:-}" ]; then
    for candidate in python3.12 "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/3.12*/bin/python3.12; do
        if "$candidate" -c "" 2>/dev/null; then PYTHON312=$candidate; break; fi
    done
fi
[ -n "${PYTHON312:-}" ] || { echo "no Python 3.12 here: set PYTHON312 to one" >&2; exit 2; }
GPU_IMAGE="torch==2.11.0 triton==3.6.0 numpy==2.5.2"
# What the image also has and these steps use (KINDS.md's list of the machine's packages).
ALSO_THERE="attrs matplotlib packaging pytest pytest-xdist psutil pyyaml"
VENV=.gpu-rehearsal

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON312" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet $GPU_IMAGE $ALSO_THERE
fi
ls .whl/*.whl >/dev/null 2>&1 || PIP="$VENV/bin/python -m pip" sh scripts/device_tools.sh
"$VENV/bin/python" -c "import sys, torch, triton, numpy; print('rehearsing with Python', sys.version.split()[0], \
'torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"

env -u OUT "$VENV/bin/python" scripts/gpu_check.py --dry-run --run-tests --sweep-s 20  # into a temporary folder
