"""The course's own solutions judged at many grading seeds: the rare honest failures a tolerance lets through.

    python scripts/seed_sweep.py [ASSIGNMENT ...] [--seeds START:STOP] [--function NAME ...] [--jobs N]

Every grade draws fresh hidden inputs, so a tolerance or a floor a little too tight fails a correct
notebook once in a few thousand seeds: too rarely for the tests' fixed seeds to show, often enough for a
class of hundreds to meet (01's mean did, until it was held to its row's scale). This judges each
solution function of solutions/ (the course's own code: trusted, so no sandbox) at every seed of the
range on every device at hand, CUDA too where there is a GPU, exactly as a grade judges it, and prints,
for each assignment, the seeds and seconds it took and every case that failed at least once: how often,
at which seed first, and why. It exits 1 if any did: run it after changing a tolerance, a floor or an
input maker (`make seed-sweep`). Without a GPU, 06's kernels run in Triton's interpreter, about 35 s a seed;
`--jobs N` shares the seeds out among N processes.
It needs only the repository, torch and NumPy (and triton for 06): on a GPU machine with its own Python,
`python3 scripts/seed_sweep.py 04-code-mapping 05-thnn 06-triton --seeds 0:20` sweeps the CUDA cases.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import linecache
import multiprocessing
import os
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():  # before triton is first imported: 06's kernels run interpreted on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")

from normgrad.cases import ASSIGNMENTS, judge, load  # noqa: E402

MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def solution_namespace(assignment: str) -> dict:
    """The source notebook's solution cells run in order in one namespace, as the grader runs a notebook's
    cells (05's shard_grad_in is judged with the shard_sums beside it)."""
    namespace: dict = {"__name__": "__cell__"}
    notebook, = (ROOT / "solutions" / assignment).glob("*.ipynb")
    for cell in json.loads(notebook.read_text())["cells"]:  # JSON, not nbformat: a GPU machine may lack it
        meta = cell["metadata"].get("nbgrader", {})
        if cell["cell_type"] == "code" and meta.get("solution"):
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            source = "\n".join(line for line in text.splitlines() if line.strip() not in MARKERS)
            name = f"<cell {meta.get('grade_id')}>"
            linecache.cache[name] = (len(source), None, source.splitlines(True), name)  # Triton's @jit reads it
            exec(compile(source, name, "exec"), namespace)
    return namespace


def sweep(assignment: str, seeds: range, namespace: dict, functions=None) -> dict[str, list]:
    """case id -> [(seed, its problems), ...] for every case of `functions` (default: all) that `namespace`
    fails at some seed of `seeds`."""
    failed = collections.defaultdict(list)
    names = sorted({c.function for c in load(assignment).cases if functions is None or c.function in functions})
    for seed in seeds:
        for function in names:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what a correct notebook's cells warn of is not a failure
                verdicts = judge(assignment, function, namespace[function], seed, isolated=False)
            for case, problems in verdicts.items():
                if problems:
                    failed[case].append((seed, problems))
    return dict(failed)


def spawned_pool(jobs: int) -> ProcessPoolExecutor:
    """`jobs` processes for `sweep_seeds`, each with one torch thread; spawned, not forked: torch's threads and
    CUDA do not survive a fork. One pool serves every assignment, so each process imports torch once."""
    return ProcessPoolExecutor(jobs, multiprocessing.get_context("spawn"), initializer=torch.set_num_threads,
                               initargs=(1,))


def sweep_seeds(assignment: str, seeds: range, functions=None, pool: ProcessPoolExecutor | None = None,
                namespace_of=solution_namespace) -> dict[str, list]:
    """`sweep`, each seed in a process of `pool` (None: all in this one) with its own `namespace_of(assignment)`
    (a millisecond to build): the same failures, in seed order, as the pool hands results back in order."""
    if pool is None:
        return sweep(assignment, seeds, namespace_of(assignment), functions)
    failed = collections.defaultdict(list)
    for part in pool.map(_sweep_part, [(assignment, range(seed, seed + 1), functions, namespace_of) for seed in seeds]):
        for case, where in part.items():
            failed[case] += where
    return dict(failed)


def _sweep_part(work):
    assignment, seeds, functions, namespace_of = work
    return sweep(assignment, seeds, namespace_of(assignment), functions)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/seed_sweep.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", metavar="ASSIGNMENT", help=f"default: all ({', '.join(ASSIGNMENTS)})")
    parser.add_argument("--seeds", default="0:200", help="START:STOP, the grading seeds to judge at (default 0:200)")
    parser.add_argument("--function", action="append", help="only this function's cases (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N", help="processes to share the seeds (default 1)")
    args = parser.parse_args(argv)
    unknown = set(args.assignments) - set(ASSIGNMENTS)
    if unknown:
        parser.error(f"no assignment {', '.join(sorted(unknown))}; there are {', '.join(ASSIGNMENTS)}")
    try:
        start, stop = (int(part) for part in args.seeds.split(":"))
    except ValueError:
        parser.error(f"--seeds takes START:STOP, two integers, not {args.seeds!r}")
    if args.jobs < 1:
        parser.error(f"--jobs takes a number of processes, at least 1, not {args.jobs}")
    seeds, assignments = range(start, stop), args.assignments or ASSIGNMENTS
    known = {c.function for a in assignments for c in load(a).cases}
    if set(args.function or ()) - known:
        parser.error(f"no function {', '.join(sorted(set(args.function) - known))} in {', '.join(assignments)}")
    any_failed = False
    with spawned_pool(args.jobs) if args.jobs > 1 else contextlib.nullcontext() as pool:
        for assignment in assignments:
            began = time.monotonic()
            failed = sweep_seeds(assignment, seeds, args.function, pool)
            print(f"{assignment}: {len(seeds)} seeds ({start} to {stop - 1}) in {time.monotonic() - began:.0f} s, "
                  f"{len(failed) or 'no'} case{'s' * (len(failed) != 1)} failed", flush=True)
            for case, where in sorted(failed.items()):
                seed, problems = where[0]
                first = problems[0].replace("\n", "\n      ")
                print(f"  {case}: {len(where)} of {len(seeds)} seeds, first {seed}:\n      {first}", flush=True)
            any_failed |= bool(failed)
    return 1 if any_failed else 0


if __name__ == "__main__":
    sys.exit(main())
