"""`make gpu-check`: the course's whole GPU half in one run of at most six minutes, measured and written down.

    python scripts/gpu_check.py [--out DIR]      on a machine with an NVIDIA GPU
    python scripts/gpu_check.py --dry-run        the same steps on the CPU (interpreted Triton, tiny shapes)
    python scripts/gpu_check.py --dry-run --run-tests   and step 2's tests run, not only collected (make gpu-rehearsal)

It runs, and writes into one folder (--out, else $OUT when set, else gpu-results/; a dry run, a
fresh temporary folder):

1. every exercise with a GPU path (an assignment of normgrad.cases with cases
   that run on "cuda" when a GPU is present), through `python -m autograder
   check` on its solution notebook: the grader's sandbox with the GPU bound,
   and which sandbox it was (bubblewrap, or the fallback without it);
2. the project's tests of those exercises (tests/test_<NN>_*.py), whose cases
   run on CUDA when a GPU is present, and the sandbox's test that nothing a GPU
   job starts can load PyTorch; steps 1 and 2 run side by side;
3. the benchmark (python -m normgrad.benchmark) in one process, with the time
   that is left, and copies its results file to chapters/data/. While steps 1
   and 2 run, three processes compile its kernels (`--warm-only`): Triton and
   torch.compile keep them in their disk caches, so the benchmark's own time
   goes to checking and timing.

The GPU machine has its own Python, torch and triton and no package index:
what else is needed travels in .whl/ (scripts/device_tools.sh fills it), and
is installed here into a scratch folder, never over the system: the wheels
with pip --target, bubblewrap's .deb unpacked into a folder put on PATH.

Files written (five, none in subfolders: what a remote runner bringing back $OUT can carry):
gpu-check.log (everything printed), gpu-check.json (what each step found: written
after steps 1 and 2, and again at the end), autograder.txt, pytest.txt, and the
benchmark's bench-<gpu>-<date>.json (written after each dtype and N, so that a
benchmark stopped midway keeps what it measured, with a note saying where). With
--sweep-s S, the tuning round follows in the same call, outside the check's six
minutes: the benchmark's --sweep for S seconds, writing a sixth file,
sweep-<gpu>-<date>.json, after each shape as well as at the end (one device
call, so no idle machine is handed back between the two; gpu-check.json is
written before it starts).
Exit status: 0 when every step ran and passed, 1 when one failed, 2 without a GPU
(and without --dry-run; then it writes nothing). Missed speed targets are findings, written down, not failures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # normgrad and autograder, however the script is started (no PYTHONPATH)
from autograder.sandbox import process_tree  # the grader's walk of a process tree, thread by thread
TOOLS = ROOT / ".whl"
LIMIT_S = 360.0  # the whole check, on a bare GPU machine
# Steps 1 and 2, side by side on the GPU machine's 16 cores. On the H200 (gpu-results/run-2) step 2 alone took
# 223 s, one worker holding all of tests/test_06_triton.py: its graded batch (88 s) and the ladder's compiled
# tests (76 s in the 20 slowest alone). The ladder now has a file, so a worker, of its own
# (tests/test_06_ladder.py), and so have 06's added kernels (tests/test_06_added.py), whose mutants, each compiled
# on a GPU, sat beside 04's and 05's. In run-3 step 2 still ran out of its 200 s (261 s alone): the eight hook
# answers of tests/test_06_kernel_work.py, each checked alone (204 s), are now graded as one class, and 06's
# added kernels' margins have a file of their own (tests/test_06_added_margins.py), beside their mutants' judging
# (131 s). The benchmark gets what is left less BENCH_MARGIN_S. In run-3 the set-up before the steps took 12 s,
# the benchmark 82 s (94 s in the first run) and what followed it about 7 s, the check ending 59 s inside its limit: the
# steps now get 230 s, not 200, and the margin 25 s, not 45, so the benchmark gets 93 s when the steps take all of
# theirs, less any wait for the warm-up. In runs 4 and 5 step 2 passed in 190 s and 178 s, its slowest worker the
# one judging 06's added kernels' mutants (a 161 s and a 149 s fixture): the next to split, should it grow.
STEPS_TIMEOUT_S = 230.0
DRY_TIMEOUT_S = 900.0  # a dry run's steps, on whatever CPU there is: it promises no time
BENCH_MARGIN_S = 25.0  # kept back from the benchmark's budget: its last shape, the results file, this script's end
BENCH_MOST_S = 240.0
DRAIN_S = 30.0  # how long a killed step's output may take to end (a daemon outside its tree can hold the pipe)
NO_GPU = ("make gpu-check needs an NVIDIA GPU: torch.cuda.is_available() is False here, so nothing ran. "
          "`python scripts/gpu_check.py --dry-run` runs the same steps on the CPU.")

# Asked in a child process: which assignments run cases on "cuda" with a GPU present. With --dry-run the child
# is told a GPU is there (the cases' device lists are decided at import), and nothing touches CUDA.
DISCOVER = """
import json, sys
import torch
if sys.argv[1] == "assume-gpu":
    torch.cuda.is_available = lambda: True
from normgrad.cases import ASSIGNMENTS, load
from autograder.course import notebooks
found = {}
for assignment in ASSIGNMENTS:
    cuda = [c.id for c in load(assignment).cases if "cuda" in c.devices]
    if cuda:
        found[assignment] = {"notebook": str(notebooks(assignment).source), "cuda_cases": len(cuda)}
print(json.dumps(found))
"""


class Log:
    """Print and keep every line, for gpu-check.log."""

    def __init__(self, path: Path):
        self.file = open(path, "w", buffering=1)
        self.lock = threading.Lock()

    def __call__(self, *parts) -> None:
        text = " ".join(str(p) for p in parts)
        with self.lock:
            print(text, flush=True)
            self.file.write(text + "\n")


# --- what travels in .whl/ ----------------------------------------------------------------------------

def unpack_deb(deb: Path, dest: Path) -> list[str]:
    """Unpack a .deb's files under `dest` (never over /); returns the paths inside it.

    A .deb is an `ar` archive holding data.tar.{xz,gz,bz2,zst}: read here with the standard library,
    so that nothing depends on the machine having dpkg; zstd, which Python's tarfile lacks, goes to dpkg-deb.
    """
    blob = Path(deb).read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError(f"{deb} is not an ar archive")
    offset = 8
    while offset + 60 <= len(blob):
        header = blob[offset:offset + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode().strip())
        body = blob[offset + 60:offset + 60 + size]
        offset += 60 + size + (size % 2)
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
                return sorted(str(p.relative_to(dest)) for p in Path(dest).rglob("*"))
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                members = [m for m in tar.getmembers() if not (m.name.startswith("/") or ".." in Path(m.name).parts)]
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python's own checks too
                tar.extractall(dest, members=members, **safe)
                return sorted(m.name for m in members)
    raise ValueError(f"{deb} has no data.tar member")


def _installable(wheel: Path) -> bool:
    """Whether this interpreter can install `wheel` (the GPU machine's Python 3.12 can install them all)."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    return not parse_wheel_filename(wheel.name)[3].isdisjoint(sys_tags())


def install_tools(folder: Path, scratch: Path, log) -> dict:
    """Install the carried wheels into scratch/site and unpack bubblewrap into scratch/bwrap.

    Returns {"site": the folder for PYTHONPATH or None, "bin": a folder for PATH or None, "wheels", "deb"}.
    """
    found = {"site": None, "bin": None, "wheels": [], "deb": None}
    if not folder.is_dir():
        log(f"no {folder.name}/ here: nothing carried to install (scripts/device_tools.sh fills it)")
        return found
    wheels = [w for w in sorted(folder.glob("*.whl")) if _installable(w)]
    skipped = sorted(set(folder.glob("*.whl")) - set(wheels))
    if skipped:
        log(f"not for this Python or platform, left out: {', '.join(w.name for w in skipped)}")
    if wheels:
        site = scratch / "site"
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                               "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            found["site"], found["wheels"] = str(site), [w.name for w in wheels]
            log(f"installed {len(wheels)} carried wheels into {site}: {', '.join(w.name for w in wheels)}")
        else:
            log(f"pip could not install the carried wheels:\n{done.stderr[-2000:]}")
    debs = sorted(folder.glob("bubblewrap_*.deb"))
    if debs and shutil.which("bwrap") is None:
        dest = scratch / "bwrap"
        try:
            unpack_deb(debs[-1], dest)
            found["bin"], found["deb"] = str(dest / "usr" / "bin"), debs[-1].name
            log(f"unpacked {debs[-1].name} into {dest}")
        except (OSError, ValueError, subprocess.CalledProcessError) as e:
            log(f"could not unpack {debs[-1].name}: {e}")
    elif debs:
        log(f"bwrap is already installed here ({shutil.which('bwrap')}); {debs[-1].name} left packed")
    return found


# --- the steps ----------------------------------------------------------------------------------------

def spawn(cmd, env, **kwargs) -> subprocess.Popen:
    """Start a step. It stays in this script's process group, so a kill of the whole run reaches it too."""
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, text=True, **kwargs)


def stop(proc: subprocess.Popen) -> None:
    """Kill a step with every process it started: pytest's workers, a graded batch, torch.compile's workers.
    Left running, they would go on using the GPU and the CPUs while the next step measures. The tree is
    frozen first (SIGSTOP), so that nothing forks or is orphaned out of it while it is killed."""
    frozen: set[int] = set()
    for _ in range(3):
        tree = set(process_tree(proc.pid))  # {proc.pid} alone where there is no /proc
        for pid in tree - frozen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGSTOP)
        if tree <= frozen:
            break
        frozen |= tree
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def run(cmd, env, timeout: float) -> tuple[int, str, float]:
    """(exit status, stdout and stderr, seconds); 124 and what was printed when it ran past `timeout`."""
    begun = time.monotonic()
    proc = spawn(cmd, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out + err, time.monotonic() - begun
    except subprocess.TimeoutExpired:
        stop(proc)
        return 124, drained(proc) + f"\n(stopped after {timeout:.0f} s)", time.monotonic() - begun


def drained(proc: subprocess.Popen) -> str:
    """What a stopped step printed (its stdout, then its stderr when apart). A process outside its tree (a daemon)
    may hold its pipes open: that is not waited for beyond DRAIN_S."""
    try:
        out, err = proc.communicate(timeout=DRAIN_S)
        return (out or "") + (err or "")
    except subprocess.TimeoutExpired:
        proc.wait()  # the step itself was killed: reaped at once
        return f"(its output did not end within {DRAIN_S:.0f} s of the kill)"


def discover(env, assume_gpu: bool) -> dict:
    code, out, _ = run([sys.executable, "-c", DISCOVER, "assume-gpu" if assume_gpu else "as-is"], env, 300)
    if code != 0:
        raise SystemExit(f"could not list the exercises with a GPU path:\n{out[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def check_notebook(assignment: str, notebook: str, env, timeout: float) -> dict:
    """Step 1 for one exercise: `python -m autograder check` on its solution notebook."""
    code, out, seconds = run([sys.executable, "-m", "autograder", "check", notebook, "--assignment", assignment],
                             env, timeout)
    score = re.search(r"^\s*score:\s*([\d.]+)\s*/\s*([\d.]+)", out, re.M)
    sandbox = re.search(r"^\s*sandbox:\s*(.+)$", out, re.M)
    got, best = (float(score.group(1)), float(score.group(2))) if score else (None, None)
    return {"exit": code, "seconds": round(seconds, 1), "score": got, "max_score": best,
            "failed": [line.split()[2] for line in out.splitlines() if line.strip().startswith("FAIL")],
            "sandbox": sandbox.group(1).strip() if sandbox else None,
            "sandbox_mode": ("bwrap" if sandbox and sandbox.group(1).startswith("bubblewrap") else
                             "fallback" if sandbox else None),
            "passed": code == 0 and score is not None and got == best, "output": out}


# Beside the exercises' tests: the sandbox's own test that nothing a GPU job starts (exec stays there, for
# Triton's compilers) can load PyTorch, which on a GPU runs as a GPU job and starts CUDA after the lock
SANDBOX_TESTS = ("tests/test_sandbox_wall.py::test_no_process_a_job_starts_can_load_torch",)


def test_files(assignments) -> list[str]:
    """tests/test_<NN>_*.py of each assignment <NN>-...: the tests whose cases run on CUDA with a GPU; and,
    where there are any, SANDBOX_TESTS."""
    files = []
    for assignment in assignments:
        files += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob(f"test_{assignment[:2]}_*.py"))
    return files + list(SANDBOX_TESTS) if files else files


def run_tests(files, env, timeout: float, collect_only: bool) -> dict:
    """Step 2: pytest on `files` (on the CPU, a dry run only collects them, unless --run-tests: running them
    with the course's own versions is `make test`'s job; with the GPU machine's, the rehearsal's)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *files]
    if collect_only:
        cmd += ["-q", "--collect-only"]
    else:  # a line for each test as it ends, kept if the step runs out of time; the slowest, to size the next run
        cmd += ["-v", "--durations=20"]
        if importlib.util.find_spec("xdist") is not None:
            # a worker a file (a module's graded batch on one worker): 9 today, of the GPU machine's 16 cores
            cmd += ["-n", str(min(len(files), 10)), "--dist", "loadfile"]
    code, out, seconds = run(cmd, env, timeout)
    return {"command": " ".join(cmd[1:]), "exit": code, "seconds": round(seconds, 1), **counted(out),
            "passed": code == 0, "output": out}


def counted(out: str) -> dict:
    """What pytest's output says: its summary's counts, and the tests that failed. Where it was stopped before
    its summary (run-3: "FAIL {}" after 200 s), the counts are those of the tests that had ended, one -v line
    each, with "of" the number collected, so that the log says how far it got."""
    outcome = "(PASSED|FAILED|SKIPPED|ERROR)"  # with xdist "[gw3] [ 75%] PASSED test", without "test PASSED [ 75%]"
    ended = re.findall(rf"^(?:\[gw\d+\] \[\s*\d+%\] {outcome} (\S+)|(\S+::\S*) {outcome})", out, re.M)
    ended = [(a or d, b or c) for a, b, c, d in ended]
    failed = sorted({test for word, test in ended if word in ("FAILED", "ERROR")}
                    | set(re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)))
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|tests? collected)", out)}
    if not counts and ended:
        for word, _ in ended:
            counts[word.lower()] = counts.get(word.lower(), 0) + 1
        collected = re.search(r"\[(\d+) items?\]|collected (\d+) items?", out)
        if collected:
            counts["of"] = int(collected.group(1) or collected.group(2))
    return {"counts": counts, "failed": failed}


def run_benchmark(out_dir: Path, budget_s: float, dry_run: bool, extra: list[str], env, log, kind: str = "bench"
                  ) -> dict:
    """Step 3 (or with kind="sweep" and --sweep in `extra`, the tuning round): the benchmark in one process,
    its output streamed into the log as it comes; its results file is out_dir/<kind>-*.json."""
    cmd = [sys.executable, "-m", "normgrad.benchmark", "--out", str(out_dir), "--budget-s", f"{budget_s:.0f}", *extra]
    if dry_run:
        cmd.append("--dry-run")
    start = time.monotonic()
    proc = spawn(cmd, env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    timer = threading.Timer(budget_s + 45, stop, [proc])  # its own budget, plus a straggling compilation
    timer.start()

    def relay():
        for line in proc.stdout:
            log(f"  {kind:<5} |", line.rstrip())

    # In a thread, so that a daemon outside the benchmark's tree that holds the pipe open is not waited for
    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    code = proc.wait()
    timer.cancel()
    reader.join(DRAIN_S)
    if reader.is_alive():
        log(f"  {kind:<5} | (its output did not end within {DRAIN_S:.0f} s of its end)")
    files = sorted(out_dir.glob(f"{kind}-*.json"))
    return {"command": " ".join(cmd[1:]), "exit": code, "seconds": round(time.monotonic() - start, 1),
            "file": str(files[-1]) if files else None, "passed": code == 0 and bool(files)}


WARM_JOBS = 3
WARM_WAIT_S = 45.0  # how long the benchmark waits, after steps 1 and 2, for the compilations to finish


def start_warming(extra: list[str], dry_run: bool, env) -> list[subprocess.Popen]:
    """Compile the benchmark's kernels in a few processes while steps 1 and 2 run: Triton and torch.compile
    keep what they compile in their disk caches, and the benchmark's own first calls then load it.
    Each process takes every WARM_JOBS-th N of the sweep."""
    from normgrad import benchmark

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--columns", nargs="+", type=int)
    columns = parser.parse_known_args(extra)[0].columns or (benchmark.DRY_COLUMNS if dry_run else benchmark.COLUMNS)
    jobs = []
    for i in range(min(WARM_JOBS, len(columns))):
        cmd = [sys.executable, "-m", "normgrad.benchmark", *extra, "--columns", *map(str, columns[i::WARM_JOBS]),
               "--warm-only", *(["--dry-run"] if dry_run else [])]
        jobs.append(spawn(cmd, dict(env, TORCHINDUCTOR_COMPILE_THREADS="4"),  # 4 compiling workers each
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    return jobs


def finish_warming(jobs: list[subprocess.Popen], wait_s: float, log) -> dict:
    """Wait for the compiling processes, at most `wait_s` in all; stop what is left. Their output goes to the log."""
    deadline = time.monotonic() + wait_s
    found = {"processes": len(jobs), "stopped": 0, "failed": 0}
    for job in jobs:
        try:
            out, _ = job.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop(job)
            out = drained(job)
            found["stopped"] += 1
        found["failed"] += job.returncode not in (0, -9)
        for line in (out or "").strip().splitlines()[-20:]:
            log("  warm  |", line)
    return found


def environment(tools: dict, env) -> dict:
    """What the run ran on: the GPU and its driver (nvidia-smi's read-only query), bubblewrap, setpriv."""
    found = {"python": sys.version.split()[0], "executable": sys.executable}
    if shutil.which("nvidia-smi"):
        code, out, _ = run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,"
                                          "temperature.gpu,power.draw", "--format=csv"], env, 60)
        found["nvidia_smi"] = out.strip()
    bwrap = shutil.which("bwrap", path=env["PATH"])
    found["bwrap"] = bwrap
    if bwrap:
        found["bwrap_version"] = run([bwrap, "--version"], env, 30)[1].strip()
    found["setpriv"] = shutil.which("setpriv", path=env["PATH"])
    found["tools"] = tools
    return found


def measure_step(args, start: float, out_dir: Path, env, warm: dict, log) -> dict:
    """Step 3: the benchmark with the time that is left; its results file copied to chapters/data/."""
    log(f"   compiled ahead in {warm['processes']} processes; {warm['stopped']} stopped unfinished")
    budget = min(BENCH_MOST_S, args.limit_s - (time.monotonic() - start) - BENCH_MARGIN_S)
    if args.dry_run:
        budget = BENCH_MOST_S  # nothing to fit in: every shape of a dry run is measured
    log(f"3. benchmark, with {budget:.0f} s for the sweep")
    bench = run_benchmark(out_dir, max(budget, 30.0), args.dry_run, args.bench_args.split(), env, log)
    if bench["file"]:
        from normgrad import benchmark

        results = benchmark.read_results(Path(bench["file"]))
        bench["targets"] = results["targets"]
        bench["skipped"] = len(results["skipped"])
        if not args.dry_run:
            copied = ROOT / "chapters" / "data" / Path(bench["file"]).name
            copied.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bench["file"], copied)
            bench["copied_to"] = str(copied.relative_to(ROOT))
            log(f"   copied to {bench['copied_to']}: commit it")
    return bench


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="run every step on the CPU: interpreted, tiny shapes")
    parser.add_argument("--out", type=Path, help="folder for what it writes (default: $OUT, else gpu-results/, "
                                                 "or for a dry run a temporary folder)")
    parser.add_argument("--assignments", nargs="+", help="only these exercises (default: every one with a GPU path)")
    parser.add_argument("--bench-args", default="", help="more arguments for the benchmark, e.g. '--dtypes float32'")
    parser.add_argument("--steps", nargs="+", type=int, choices=(1, 2, 3), default=[1, 2, 3],
                        help="only these steps, e.g. `--steps 3` to measure again (default: all three)")
    parser.add_argument("--run-tests", action="store_true",
                        help="with --dry-run, run step 2's tests on the CPU instead of only collecting them")
    parser.add_argument("--limit-s", type=float, default=LIMIT_S, help="the whole run's time (default %(default)s)")
    parser.add_argument("--sweep-s", type=float, default=0.0,
                        help="then, outside that time, the tuning round for this many seconds: the benchmark's "
                             "--sweep, into sweep-<gpu>-<date>.json beside the rest (default: none)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    import torch

    gpu = torch.cuda.is_available() and not args.dry_run
    if not torch.cuda.is_available() and not args.dry_run:
        print(NO_GPU, flush=True)
        return 2
    default = Path(tempfile.mkdtemp(prefix="gpu-check-dry-run-")) if args.dry_run else ROOT / "gpu-results"
    out_dir = (args.out or Path(os.environ.get("OUT") or default)).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("bench-*.json"), *out_dir.glob("sweep-*.json")]:
        old.unlink()  # the results files of this run are the only ones here
    log = Log(out_dir / "gpu-check.log")

    def save(report):  # as the benchmark writes its results: whole or not at all
        from normgrad.benchmark import write_json

        write_json(report, out_dir / "gpu-check.json")

    mode = "GPU run" if gpu else "DRY RUN on the CPU (interpreted Triton, tiny shapes)"
    log(f"gpu-check {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: {mode}")
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    tools = install_tools(TOOLS, scratch, log)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), tools["site"], os.environ.get("PYTHONPATH")) if p),
               PATH=os.pathsep.join(p for p in (tools["bin"], os.environ.get("PATH", "/usr/bin:/bin")) if p))
    if not gpu:  # a dry run sees no GPU, even where there is one: every step on the CPU
        env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    report = {"dry_run": args.dry_run, "gpu": torch.cuda.get_device_name() if gpu else None,
              "environment": environment(tools, env)}
    log(f"bwrap: {report['environment']['bwrap'] or 'none'}; setpriv: {report['environment']['setpriv'] or 'none'}")

    found = discover(env, assume_gpu=not gpu)
    if args.assignments:
        found = {a: found[a] for a in args.assignments if a in found}
    log("exercises with a GPU path: " + ", ".join(f"{a} ({f['cuda_cases']} CUDA cases)" for a, f in found.items()))
    files = test_files(found)
    checked = found if 1 in args.steps else {}
    files = files if 2 in args.steps else []
    log(f"steps 1 and 2, side by side: autograder check on {len(checked)} solution notebooks; "
        f"pytest {' '.join(files) or '(not run)'}")
    # Without the benchmark after them, steps 1 and 2 have the whole limit (the first H200 run's tests ran
    # out of 170 s, compiling beside the benchmark's warm-up)
    timeout = DRY_TIMEOUT_S if args.dry_run else STEPS_TIMEOUT_S if 3 in args.steps else args.limit_s - 30
    warming = start_warming(args.bench_args.split(), args.dry_run, env) if 3 in args.steps else []
    with ThreadPoolExecutor(max_workers=len(found) + 1) as pool:
        tests = pool.submit(run_tests, files, env, timeout, args.dry_run and not args.run_tests) if files else None
        checks = {a: pool.submit(check_notebook, a, f["notebook"], env, timeout) for a, f in checked.items()}
        checks = {a: c.result() for a, c in checks.items()}
        tests = tests.result() if tests else {"command": "(not run)", "passed": True, "counts": {}, "failed": [],
                                              "seconds": 0, "output": ""}
    with open(out_dir / "autograder.txt", "w") as f:
        for assignment, result in checks.items():
            f.write(f"=== {assignment}: exit {result['exit']}, {result['seconds']} s ===\n{result.pop('output')}\n")
    (out_dir / "pytest.txt").write_text(f"$ python {tests['command']}\n{tests.pop('output')}")
    for assignment, result in checks.items():
        result["cuda_cases"] = found[assignment]["cuda_cases"]
        log(f"1. {assignment}: {'PASS' if result['passed'] else 'FAIL'} {result['score']}/{result['max_score']} "
            f"in {result['seconds']} s, sandbox: {result['sandbox_mode']}"
            + (f"; failed: {', '.join(result['failed'])}" if result["failed"] else ""))
    log(f"2. pytest: {'PASS' if tests['passed'] else 'FAIL'} {tests['counts']} in {tests['seconds']} s"
        + "".join(f"\n   failed: {test}" for test in tests["failed"]))
    modes = sorted({r["sandbox_mode"] for r in checks.values() if r["sandbox_mode"]})
    report.update(autograder=checks, sandbox_modes=modes, pytest=tests)
    report["benchmark"] = {"passed": None, "command": "(not finished: this file is written again when it ends)"}
    save(report)  # steps 1 and 2 are kept whatever happens to the benchmark

    report["warm"] = finish_warming(warming, DRY_TIMEOUT_S if args.dry_run else WARM_WAIT_S, log)
    bench = {"passed": True, "file": None, "command": "(not run)"}
    if 3 in args.steps:
        bench = measure_step(args, start, out_dir, env, report["warm"], log)
    report["benchmark"] = bench
    report["elapsed_s"] = round(time.monotonic() - start, 1)
    report["within_limit"] = report["elapsed_s"] <= args.limit_s
    report["passed"] = (all(r["passed"] for r in checks.values()) and tests["passed"] and bench["passed"])
    save(report)  # before the sweep: a kill keeps it
    log(f"{mode}: {'every step passed' if report['passed'] else 'A STEP FAILED'} in {report['elapsed_s']} s "
        f"(limit {args.limit_s:.0f} s); sandbox: {', '.join(modes) or 'none'}; wrote {out_dir}")
    if args.sweep_s > 0:
        log(f"then the tuning round: the benchmark's --sweep, with {args.sweep_s:.0f} s")
        report["sweep"] = run_benchmark(out_dir, args.sweep_s, args.dry_run, ["--sweep"], env, log, kind="sweep")
        report["passed"] = report["passed"] and report["sweep"]["passed"]
        save(report)
        log(f"sweep: {'wrote ' + report['sweep']['file'] if report['sweep']['passed'] else 'FAILED'} "
            f"in {report['sweep']['seconds']} s")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
