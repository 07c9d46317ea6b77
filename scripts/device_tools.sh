#!/bin/sh
# Fill .whl/ (git-ignored) with what `make gpu-check` needs on a GPU machine that has its own Python 3.12,
# torch and triton but no package index: the wheels of the packages it lacks and Debian's bubblewrap.
# Run it here, where PyPI and Debian's archive can be reached; then carry .whl/ to the GPU machine.
#
#   sh scripts/device_tools.sh          (needs pip, and apt-get for the .deb)
#
# pip: $PIP, else .venv's, else python3's; any will do, since the wheels are chosen for the machine's
# Python and platform, not this one's. A fresh clone has no .venv yet.
set -eu
cd "$(dirname "$0")/.."
if [ -z "${PIP:-}" ]; then
    if [ -x .venv/bin/python ]; then PIP=".venv/bin/python -m pip"; else PIP="python3 -m pip"; fi
fi
DEST=.whl
mkdir -p "$DEST"

# The autograder reads notebooks with nbformat; these are nbformat and what it needs that the GPU
# machine's image lacks, at the versions requirements.txt pins. Liger-Kernel is the benchmark's third-party
# LayerNorm backward. pytest is already there.
PINNED="nbformat fastjsonschema jsonschema jsonschema-specifications referencing rpds-py jupyter_core platformdirs traitlets"
LIGER="liger-kernel==0.8.5"

specs="$LIGER"
for name in $PINNED; do
    line=$(grep -i -E "^${name}==" requirements.txt || true)
    [ -n "$line" ] || { echo "requirements.txt pins no $name" >&2; exit 1; }
    specs="$specs $line"
done
# shellcheck disable=SC2086
$PIP download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" $specs

# bubblewrap, unpacked there into a folder of its own (never over /): the grader's sandbox runs with it.
if command -v apt-get >/dev/null 2>&1; then
    (cd "$DEST" && apt-get download bubblewrap)
else
    echo "no apt-get here: .whl/ has no bubblewrap, and the GPU check will grade in the fallback sandbox" >&2
fi
ls -l "$DEST"
