# Two commands do all the set-up on a fresh machine:
#   make book   builds the book into _build/html (executing every chapter)
#   make test   runs the whole test suite (the book build included)
# Each creates the virtual environment at .venv/ on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test release gradescope bench gpu-check gpu-rehearsal device-tools bench-grading seed-sweep system-packages clean

book: $(STAMP)
	$(BIN)/python scripts/book.py

# Two pytest-xdist workers, a test file each at a time (a file's module fixtures are built once): the
# suite waits on graders, browsers and compilers, and a second worker fills those waits.
TEST_WORKERS ?= 2
test: $(STAMP) system-packages
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Regenerate the student notebooks in exercises/ from solutions/ with nbgrader.
release: $(STAMP)
	$(BIN)/python -m autograder release

# Gradescope's autograder, one bundle per assignment: _build/gradescope/<id>.zip to upload (setup.sh,
# run_autograder, and the course's grader, sandbox and trusted notebooks inside).
gradescope: $(STAMP)
	$(BIN)/python -m autograder.gradescope build $(GRADESCOPE_ARGS)

# Chapter 6's benchmark: needs a CUDA GPU, and is not part of `make test`. It checks and times every rung of
# chapter 6, PyTorch's backward (eager and torch.compile) and Liger-Kernel's (when installed), and writes
# chapters/data/bench-<gpu>-<date>.json, which chapter 6 plots. BENCH_ARGS=--dry-run runs the same code on
# the CPU; BENCH_ARGS="--sweep --out gpu-results" times the persistent kernel at every launch its launcher
# weighs, into sweep-<gpu>-<date>.json (the round of tuning after `make gpu-check`). It runs with .venv's
# Python when there is one, else with $(PYTHON): the GPU machines have their own torch and triton and no
# package index.
BENCH_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

bench:
	$(BENCH_PYTHON) -m normgrad.benchmark $(BENCH_ARGS)

# The whole GPU half in at most 6 minutes on a bare GPU machine: the exercises' CUDA cases through the
# grader's sandbox, their tests, the benchmark; everything into $OUT (or gpu-results/). Without a GPU it
# says so and fails; GPU_CHECK_ARGS=--dry-run runs every step on the CPU, and GPU_CHECK_ARGS="--sweep-s 150"
# adds the tuning round (the benchmark's --sweep) after it, in the same call. `make device-tools` first fills
# .whl/ with what the GPU machine lacks (wheels, bubblewrap's .deb), to carry there.
gpu-check:
	$(BENCH_PYTHON) scripts/gpu_check.py $(GPU_CHECK_ARGS)

device-tools:
	sh scripts/device_tools.sh

# The GPU check's dry run and its tests on this CPU, in a venv of the GPU machine's Python, torch, triton and
# NumPy (.gpu-rehearsal/, about 5 GB), with .whl/'s wheels as the machine gets them: what fails here fails there.
gpu-rehearsal:
	sh scripts/gpu_rehearsal.sh

# Grading throughput: this grader beside stock `nbgrader autograde` on 40 submissions, a class of each
# assignment, and what stock nbgrader lets a submission do (several minutes). The instructors' page draws
# the two files it writes.
bench-grading: $(STAMP) system-packages
	$(BIN)/python scripts/bench_grading.py --json chapters/data/grading.json $(BENCH_ARGS)
	$(BIN)/python scripts/stock_nbgrader_gaps.py --json chapters/data/stock-nbgrader.json

# The course's own solutions judged at many grading seeds, CUDA cases too where there is a GPU: a tolerance
# or floor too tight for a correct notebook fails here, once in thousands of seeds, not in a class's grades.
# Run it after changing one. SWEEP_ARGS="01-forward --seeds 0:4000 --jobs 2" (default: every assignment, seeds 0-199,
# one process).
seed-sweep: $(STAMP)
	$(BIN)/python scripts/seed_sweep.py $(SWEEP_ARGS)

system-packages:
	@sh scripts/system-packages.sh

$(STAMP): requirements.txt pyproject.toml
	@# a venv left without pip (Debian's python3 lacks ensurepip until python3-venv is installed) is made again
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV) || { rm -rf $(VENV); \
	  echo "make: '$(PYTHON) -m venv' failed; on Debian or Ubuntu: apt-get install python3-venv" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

clean:
	rm -rf _build
