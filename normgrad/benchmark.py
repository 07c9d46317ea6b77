"""LayerNorm's backward pass on a GPU: every rung of chapter 6 against PyTorch (eager and compiled) and Liger-Kernel.

    python -m normgrad.benchmark             (or `make bench`)  check, time, write the results file
    python -m normgrad.benchmark --dry-run   the same code on the CPU: interpreted Triton, tiny shapes
    python -m normgrad.benchmark --check     correctness only, on CUDA: every kernel and exercise 06's solution
    python -m normgrad.benchmark --sweep     time v3, v4 (v5 where it splits) at the launches weighed
                                             (writes sweep-<gpu>-<date>.json into --out)

One process does everything on one GPU, in this order:

1. the device-to-device copy bandwidth (a 1 GiB copy): the speed of light;
2. for each dtype (bfloat16, float16, float32) and N in COLUMNS: every
   implementation is run once at the largest M (compilation), then checked
   against the float64 oracle on 1008 random rows of width N (256 at N = 16384:
   `check_rows_for`), exercise 06's trials and tolerances; one that fails is
   not timed there;
3. for each M in ROWS: inputs are made, each implementation runs twice and its
   dgamma and dbeta must agree bit for bit (recorded), then it is timed: CUDA
   events around each call, the L2 cache (60 MiB on an H200) flushed by writing
   256 MiB before every call, the median of as many calls as the time budget
   allows (`timing.repetitions`). Shapes that do not fit in the GPU's free
   memory are skipped and listed.

Bytes moved are counted as the least any implementation must move: read x and
dy, write dx (3 M N element-size bytes), plus gamma read, dgamma and dbeta
written (3 N element-size bytes) and the float32 mean and rstd read (8 M bytes).
GB/s is that over the median time; the fraction of the copy bandwidth is how
close it comes to the speed of light. The results file also says, for the
course's fastest kernel, the launch its launcher took and what the compiler
made of it and of every other launch it weighed (registers, spills, programs
per multiprocessor), how long each of its two kernels takes alone (the first
pass, and the second reduction that sums the partial rows), how long the host
takes to issue each implementation's call beside how long the L2 flush keeps
the GPU busy, and which of issue 12's targets were met, and by how much each
miss fell short.

Results go to `--out` (chapters/data/ by default) as bench-<gpu>-<date>.json,
read and written here (`read_results`, `write_results`), so the tests and the
chapter check the file without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "chapters" / "data"
SCHEMA = 2
COURSE = ("v1 rowwise", "v2 locked", "v3 persistent", "v4 prefetch", "v5 split")  # triton_layernorm.VERSIONS
PERSISTENT = ("v3 persistent", "v4 prefetch", "v5 split")  # triton_layernorm.PERSISTENT: launches chosen
BASELINES = ("torch", "torch.compile", "liger")
IMPLS = COURSE + BASELINES
DTYPE_NAMES = ("bfloat16", "float16", "float32")
ROWS = (4096, 16384, 65536)
COLUMNS = (512, 768, 1024, 2048, 3072, 4096, 8192, 16384)
CHECK_ROWS = 1008  # the float64 oracle's check: up to 63 programs of 16 rows; a multiple of 16, as every timed M
# is, so that Triton's specialization on divisibility by 16 compiles no second kernel for it
CHECK_ENTRIES = 1 << 22  # and at most this many entries: the oracle runs in float64 on the CPU
DRY_ROWS, DRY_COLUMNS, DRY_CHECK_ROWS = (20, 36), (48, 200), 33  # --dry-run: small enough for the interpreter
ELEMENT_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
BUDGET_S = 200.0  # default time for the whole benchmark, compilation included
TARGET_FRACTION = 0.85  # of the copy bandwidth, in bfloat16, for 1024 <= N and M N >= 2**26
TARGET_SPEEDUP = 1.5  # geometric mean over the sweep, against PyTorch eager
NO_GPU = ("make bench needs a CUDA GPU: torch.cuda.is_available() is False on this machine, so nothing was "
          "measured and no results file was written. Run it on a machine with an NVIDIA GPU "
          "(or `python -m normgrad.benchmark --dry-run` to run the same code here, interpreted, on tiny shapes).")


# How the torch.compile baseline is compiled, as the results file records it. Files without "N static" were
# measured before Dynamo's automatic dynamic shapes were turned off (`shortfalls` says what that cost).
COMPILED_AS = ("torch.compile(aten.native_layer_norm_backward), default mode: one graph per (dtype, N), N static "
               "and M dynamic, compiled at the largest M")


def error_line(e: BaseException) -> str:
    """An exception in one line for the results: its type and the start of its message's first line (a CUDA
    or Triton error can run to pages; some have no message at all)."""
    first = (str(e).splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def traffic_bytes(m: int, n: int, dtype_name: str) -> int:
    """The least the backward pass must move: x and dy read, dx written (M N elements each); gamma read,
    dgamma and dbeta written (N elements each); the float32 mean and rstd read (M each)."""
    e = ELEMENT_BYTES[dtype_name]
    return 3 * m * n * e + 3 * n * e + 8 * m


# --- the results file ---------------------------------------------------------------------------

def results_path(gpu: str, date: str, directory: Path = RESULTS_DIR, kind: str = "bench") -> Path:
    """<directory>/<kind>-<gpu, as a slug>-<date>.json: kind "bench" for the benchmark, "sweep" for --sweep"""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    return Path(directory) / f"{kind}-{slug}-{date}.json"


def write_results(results: dict, directory: Path = RESULTS_DIR) -> Path:
    """Write `results` (checked first) to its file under `directory`; returns the path."""
    validate(results)
    return write_json(results, results_path(results["gpu"], results["date"], directory))


def write_json(content: dict, path: Path) -> Path:
    """`content` as JSON at `path`, through a scratch file renamed over it: a kill mid-write leaves the last
    whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".writing")
    scratch.write_text(json.dumps(content, indent=1) + "\n")
    scratch.replace(path)
    return path


def read_results(path: Path) -> dict:
    """A results file, checked; ValueError says what is wrong with it."""
    try:
        results = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable results file ({e})") from None
    validate(results, str(path))
    return results


def validate(results: dict, where: str = "results") -> None:
    """Raise ValueError unless `results` has the fields and rows the chapter reads."""
    if not isinstance(results, dict):
        raise ValueError(f"{where}: expected a JSON object")
    fields = {"schema": int, "gpu": str, "date": str, "copy_gb_per_s": (int, float), "rows": list,
              "checks": dict, "skipped": list, "targets": list, "dry_run": bool, "fastest": str}
    for key, kind in fields.items():
        if not isinstance(results.get(key), kind):
            raise ValueError(f"{where}: field {key!r} is missing or of the wrong type")
    if results["schema"] != SCHEMA:
        raise ValueError(f"{where}: schema {results['schema']}, this code reads schema {SCHEMA}")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", results["date"]):
        raise ValueError(f"{where}: date {results['date']!r} is not YYYY-MM-DD")
    if not results["copy_gb_per_s"] > 0:
        raise ValueError(f"{where}: copy_gb_per_s must be positive")
    for i, row in enumerate(results["rows"]):
        ok = (isinstance(row, dict) and row.get("impl") in IMPLS and row.get("dtype") in DTYPE_NAMES
              and all(isinstance(row.get(k), int) and row[k] > 0 for k in ("M", "N", "reps"))
              and all(isinstance(row.get(k), (int, float)) and row[k] > 0 for k in ("ms", "gb_per_s"))
              and isinstance(row.get("deterministic"), bool))
        if not ok:
            raise ValueError(f"{where}: row {i} is not {{impl, dtype, M, N, ms, gb_per_s, reps, deterministic}} "
                             "with known values")


def find_results(directory: Path = RESULTS_DIR) -> Path | None:
    """The most recent measured results file in `directory` (by its date), or None when there is none.
    Dry runs never count."""
    found = [(read_results(p), p) for p in sorted(Path(directory).glob("bench-*.json"))]
    found = [(r["date"], p.name, p) for r, p in found if not r["dry_run"]]
    return max(found)[2] if found else None


def _geomean(values) -> float:
    values = list(values)
    return math.exp(sum(map(math.log, values)) / len(values)) if values else float("nan")


def fastest_rung(results: dict) -> str:
    """The course's fastest rung in these results, the one issue 12's targets are about: of the rungs that
    passed every check, the highest geometric mean of GB/s over the shapes where all of them were timed.
    The last rung when nothing decides it."""
    passed = [impl for impl in COURSE if results["checks"].get(impl)
              and all(v == "pass" for v in results["checks"][impl].values())]
    speeds = {impl: {(r["dtype"], r["M"], r["N"]): r["gb_per_s"] for r in results["rows"] if r["impl"] == impl}
              for impl in passed}
    speeds = {impl: s for impl, s in speeds.items() if s}
    if not speeds:
        return COURSE[-1]
    common = set.intersection(*map(set, speeds.values()))
    if not common:
        return max(speeds, key=lambda impl: len(speeds[impl]))
    return max(speeds, key=lambda impl: _geomean(speeds[impl][k] for k in common))


def targets(results: dict) -> list[dict]:
    """Issue 12's targets for the course's fastest kernel, judged from the rows: met or not, and by how much.

    Each entry: {"target", "met", "measured", "misses": the shapes that fell short, each with by how much and
    what was measured there about the kernel: registers and spills per thread, warps resident per
    multiprocessor, the launch (rows per step, warps), and the share of the time its second reduction (the sum
    of the partial rows) takes}.
    A target with nothing measured to judge it by has met None.
    """
    fastest = results["fastest"]
    copy = results["copy_gb_per_s"]
    times = {(r["impl"], r["dtype"], r["M"], r["N"]): r for r in results["rows"]}
    ours = {(d, m, n): r for (impl, d, m, n), r in times.items() if impl == fastest}
    kernels = {(k["dtype"], k["M"], k["N"]): k for k in results.get("kernels", []) if k["impl"] == fastest}

    def why(d, m, n) -> dict:
        """What was measured about the fastest kernel at a shape where it fell short."""
        k = kernels.get((d, m, n))
        if k is None:
            return {}
        mine = ours[(d, m, n)]
        return {"rows_per_step": k.get("ROWS"), "num_warps": k.get("num_warps"),
                "registers": k.get("registers"), "spilled_words": k.get("spilled_words"),
                "resident_warps": k.get("resident_warps"), "programs": k.get("programs"),
                "second_reduction_share": k["second_reduction_ms"] / mine["ms"]
                if k.get("second_reduction_ms") else None,
                "first_pass_share": k["first_pass_ms"] / mine["ms"] if k.get("first_pass_ms") else None,
                "host_ms": mine.get("host_ms")}

    found = []

    # 1. the speed of light, in bfloat16, for the large shapes
    large = {k: r for k, r in ours.items() if k[0] == "bfloat16" and k[2] >= 1024 and k[1] * k[2] >= 2**26}
    misses = [{"dtype": d, "M": m, "N": n, "fraction_of_copy": r["gb_per_s"] / copy,
               "short_by": TARGET_FRACTION - r["gb_per_s"] / copy, **why(d, m, n)}
              for (d, m, n), r in sorted(large.items()) if r["gb_per_s"] / copy < TARGET_FRACTION]
    found.append({"target": f"{fastest} reaches {TARGET_FRACTION:.0%} of the copy bandwidth in bfloat16 at every "
                            "N from 1024 with M N >= 2^26",
                  "met": (not misses) if large else None,
                  "measured": min((r["gb_per_s"] / copy for r in large.values()), default=None),
                  "misses": misses})

    # 2. faster than each baseline at every shape
    for rival in ("torch", "torch.compile", "liger"):
        pairs = {k: (times[(rival, *k)]["ms"], r["ms"]) for k, r in ours.items() if (rival, *k) in times}
        strict = rival != "liger"  # "faster than" PyTorch, "no slower than" Liger-Kernel
        misses = [{"dtype": d, "M": m, "N": n, "speedup": theirs / mine, "short_by": 1.0 - theirs / mine,
                   **why(d, m, n)}
                  for (d, m, n), (theirs, mine) in sorted(pairs.items())
                  if (theirs <= mine if strict else theirs < mine)]
        found.append({"target": f"{fastest} is {'faster than' if strict else 'no slower than'} {rival} at every "
                                "shape measured",
                      "met": (not misses) if pairs else None,
                      "measured": min((t / m for t, m in pairs.values()), default=None), "misses": misses})

    # 3. the geometric-mean speedup over eager PyTorch
    ratios = [times[("torch", *k)]["ms"] / r["ms"] for k, r in ours.items() if ("torch", *k) in times]
    mean = _geomean(ratios) if ratios else None
    found.append({"target": f"{fastest}'s geometric-mean speedup over PyTorch eager is at least {TARGET_SPEEDUP}",
                  "met": (mean >= TARGET_SPEEDUP) if ratios else None, "measured": mean,
                  "misses": [] if not ratios or mean >= TARGET_SPEEDUP else [{"short_by": TARGET_SPEEDUP - mean}]})

    # 4. dgamma and dbeta, summed in float32, the same bit for bit from run to run
    misses = [{"dtype": d, "M": m, "N": n} for (d, m, n), r in sorted(ours.items()) if not r["deterministic"]]
    found.append({"target": f"{fastest}'s dgamma and dbeta are identical bit for bit from run to run",
                  "met": (not misses) if ours else None, "measured": len(ours) - len(misses), "misses": misses})
    return found


def summary(results: dict) -> dict:
    """What the chapter quotes: per dtype, the fastest kernel's lowest fraction of the copy bandwidth over the
    large shapes (M N >= 2**26, N >= 1024) and its geometric-mean speedup over each baseline."""
    fastest = results["fastest"]
    copy = results["copy_gb_per_s"]
    times = {(r["impl"], r["dtype"], r["M"], r["N"]): r["ms"] for r in results["rows"]}
    out = {"fraction_of_copy": {}, "speedup": {}}
    for dtype in DTYPE_NAMES:
        ours = {(m, n): ms for (impl, d, m, n), ms in times.items() if impl == fastest and d == dtype}
        large = [traffic_bytes(m, n, dtype) / (ms * 1e6) / copy for (m, n), ms in ours.items()
                 if n >= 1024 and m * n >= 2**26]
        if large:
            out["fraction_of_copy"][dtype] = min(large)
        for rival in BASELINES:
            ratios = [times[(rival, dtype, m, n)] / ms for (m, n), ms in ours.items() if (rival, dtype, m, n) in times]
            if ratios:
                out["speedup"].setdefault(rival, {})[dtype] = _geomean(ratios)
    return out


def _best_rung_sentence(fastest, rungs, wins, shapes, large, best, times, copy) -> str:
    """`shortfalls`' first sentence: the rung fastest by geometric mean is not the fastest everywhere."""
    line = (f"{fastest} has the highest geometric mean of GB/s, yet it is the fastest rung at only {wins[fastest]} "
            f"of {len(shapes)} shapes (" + ", ".join(f"{impl} at {wins[impl]}" for impl in rungs if impl != fastest)
            + ").")
    eager = [s for s in shapes if ("torch", *s) in times]
    if large and eager:
        lowest = min(times[(best[s], *s)]["gb_per_s"] for s in large) / copy
        speedup = _geomean(times[("torch", *s)]["ms"] / times[(best[s], *s)]["ms"] for s in eager)
        line += (" Had each shape been run by its best rung, a choice this run could make only after timing them "
                 f"all, the lowest fraction of the copy bandwidth over the large bfloat16 shapes would be "
                 f"{lowest:.2f}, and the geometric-mean speedup over eager PyTorch {speedup:.2f}.")
    return line


def shortfalls(results: dict) -> list[str]:
    """Sentences, each computed from the results, that say why the fastest rung fell short where it did: which
    rung was fastest where, what the compiler made of the widest rows, what the second reduction and the host
    cost at the smallest shapes, where Liger-Kernel won, and a torch.compile baseline compiled for any N. A
    sentence appears only where the figures it needs were measured; every number in it is read from the results."""
    fastest, copy = results["fastest"], results["copy_gb_per_s"]
    times = {(r["impl"], r["dtype"], r["M"], r["N"]): r for r in results["rows"]}
    kernels = {(k["impl"], k["dtype"], k["M"], k["N"]): k for k in results.get("kernels", [])}
    rungs = [impl for impl in PERSISTENT if any(k[0] == impl for k in times)]
    shapes = sorted({k[1:] for k in times if all((impl, *k[1:]) in times for impl in rungs)})
    said = []
    if not shapes or fastest not in rungs:
        return said

    # 1. the fastest by geometric mean is not the fastest at every shape
    best = {s: min(rungs, key=lambda impl: times[(impl, *s)]["ms"]) for s in shapes}
    wins = {impl: sum(b == impl for b in best.values()) for impl in rungs}
    large = [s for s in shapes if s[0] == "bfloat16" and s[2] >= 1024 and s[1] * s[2] >= 2**26]
    if wins[fastest] < len(shapes):
        said.append(_best_rung_sentence(fastest, rungs, wins, shapes, large, best, times, copy))

    # 2. the widest rows: spills, and what splitting them costs instead
    widest = max(s[2] for s in shapes)
    m = max((s[1] for s in shapes if s[0] == "bfloat16" and s[2] == widest), default=None)
    wide = {impl: kernels.get((impl, "bfloat16", m, widest)) for impl in rungs} if m else {}
    spilling = {impl: k["spilled_words"] for impl, k in wide.items() if k and k.get("spilled_words")}
    split = wide.get("v5 split")
    if spilling:
        line = (f"At N = {widest} (bfloat16, M = {m}) a row no longer fits in one program's registers: "
                + " and ".join(f"{impl} spills {words} 32-bit words per thread" for impl, words in spilling.items())
                + ", reaching " + " and ".join(f"{times[(impl, 'bfloat16', m, widest)]['gb_per_s'] / copy:.2f}"
                                                for impl in spilling) + " of the copy bandwidth.")
        if split and split.get("split") and split.get("spilled_words") == 0 and split.get("resident_warps"):
            line += (f" v5 splits each row between two programs and spills nothing, but reaches only "
                     f"{times[('v5 split', 'bfloat16', m, widest)]['gb_per_s'] / copy:.2f}: each of its programs "
                     f"runs {split['num_warps']} warps, {split['resident_warps']} resident per multiprocessor of "
                     "the 64 a Hopper multiprocessor holds, loads no step ahead, and reads its partner's half of x "
                     "and dy as well as its own for the row sums.")
        said.append(line)

    # 3. the second reduction: alone, and what that says about it inside the call
    def partial_rows(k: dict) -> int:  # one per program, or per pair where v5 splits rows
        return k["programs"] // (2 if k.get("split") else 1)

    shares = [(k["second_reduction_ms"] / times[(fastest, *s)]["ms"], s, k) for s in shapes
              for k in [kernels.get((fastest, *s))] if k and k.get("second_reduction_ms")]
    if shares:
        share, (d, m, n), k = max(shares)
        whole = times[(fastest, d, m, n)]["ms"]
        line = (f"{fastest}'s second reduction, timed alone with the L2 cache flushed, takes up to {share:.0%} of "
                f"a whole call's time: {k['second_reduction_ms'] * 1e3:.1f} us of {whole * 1e3:.1f} us at {d}, "
                f"M = {m}, N = {n}, summing {partial_rows(k)} partial rows")
        if "reduction" in k:
            line += (f" in {k['reduction']['programs']} programs of {k['reduction']['BLOCK_COLS']} columns, "
                     f"{k['reduction']['BLOCK_P']} partial rows a step.")
        else:  # files written before the launch was recorded: it was fixed then
            line += (f" in {-(-n // 32)} programs of 32 columns, 64 partial rows a step (the launch of the code that "
                     "wrote these results).")
        if k.get("first_pass_ms"):
            line += (f" The first pass alone takes {k['first_pass_ms'] * 1e3:.1f} us there, "
                     f"{k['first_pass_ms'] / whole:.0%} of the call.")
        # where the reduction alone leaves the first pass least time, the rate the first pass would need
        need, (d, m, n), k = max((traffic_bytes(*s[1:], s[0]) / (copy * 1e6) / (call - k["second_reduction_ms"])
                                  if call > k["second_reduction_ms"] else math.inf, s, k)
                                 for _, s, k in shares for call in [times[(fastest, *s)]["ms"]])
        if need >= 1.5:  # no memory-bound kernel moves its bytes half as fast again as a copy
            part_mb = 2 * partial_rows(k) * n * 4 / 1e6  # float32 dgamma and dbeta rows
            line += (f" Inside a call it takes less than alone, at least where that can be checked: at {d}, M = {m}, "
                     f"N = {n}, the call lasts {times[(fastest, d, m, n)]['ms'] * 1e3:.1f} us and the reduction "
                     f"alone {k['second_reduction_ms'] * 1e3:.1f} us, which would leave the first pass to move its "
                     "bytes " + ("in no time" if need == math.inf else f"at {need:.2f} times the copy rate")
                     + f". There the {part_mb:.1f} MB of partial rows have just been written, and can still be in "
                     "the L2 cache that the timing flushes.")
        said.append(line)

    # 4. the smallest shapes: a floor under every rung
    small = min(s[1] for s in shapes)
    at_small = [s for s in shapes if s[1] == small]
    floor = min(times[(impl, *s)]["ms"] for impl in rungs for s in at_small)
    torch_small = [times[("torch", *s)]["ms"] for s in at_small if ("torch", *s) in times]
    narrow = min(at_small, key=lambda s: traffic_bytes(*s[1:], s[0]))
    line = (f"At M = {small} no rung takes less than {floor * 1e3:.1f} us, where moving the counted bytes at "
            f"the copy rate would take {traffic_bytes(narrow[1], narrow[2], narrow[0]) / (copy * 1e6) * 1e3:.1f} us "
            f"at the narrowest ({narrow[0]}, N = {narrow[2]})")
    if torch_small:
        line += f" and eager PyTorch takes {min(torch_small) * 1e3:.1f} us"
    line += "."
    reductions = [kernels[(fastest, *s)]["second_reduction_ms"] for s in at_small
                  if kernels.get((fastest, *s), {}).get("second_reduction_ms")]
    if reductions:
        line += (f" {fastest}'s second reduction alone takes {min(reductions) * 1e3:.1f} to "
                 f"{max(reductions) * 1e3:.1f} us there.")
    same_kernel = [s for s in at_small if kernels.get(("v5 split", *s), {}).get("split") is False
                   and ("v4 prefetch", *s) in times and ("v5 split", *s) in times]
    if same_kernel:
        def beside_v4(key, s):  # v5's figure less v4's, at shape s
            return times[("v5 split", *s)][key] - times[("v4 prefetch", *s)][key]

        late = statistics.median(beside_v4("ms", s) for s in same_kernel)
        big = [s for s in shapes if s[1] == max(x[1] for x in shapes)
               and kernels.get(("v5 split", *s), {}).get("split") is False and ("v4 prefetch", *s) in times]
        gap = statistics.median(abs(beside_v4("ms", s)) for s in big) if big else None
        apart = f" and a median {gap * 1e3:.1f} us apart at M = {big[0][1]}" if big else ""
        issued = [beside_v4("host_ms", s) for s in same_kernel
                  if times[("v5 split", *s)].get("host_ms") and times[("v4 prefetch", *s)].get("host_ms")]
        extra = statistics.median(issued) if issued else None
        line += " v5 runs v4's kernel wherever it does not split, "
        if extra is not None and extra < 5e-3:  # deciding on every call cost v5 12 us a call (gpu-results/run-3)
            line += (f"and there the host issues its call as fast (a median {abs(extra) * 1e3:.1f} us "
                     f"{'more' if extra >= 0 else 'less'} than for v4's): the calls are a median "
                     f"{abs(late) * 1e3:.1f} us {'longer' if late >= 0 else 'shorter'} than v4's at M = "
                     f"{small}{apart}, since v5 decides whether to split once per shape, with its launch.")
        else:
            line += (f"yet there it takes a median {late * 1e3:.1f} us longer than v4 at M = {small}{apart}: the only "
                     "difference there is the host's work in deciding whether to split, which a long call hides"
                     + (f" (a median {extra * 1e3:.1f} us a call)." if extra is not None else "."))
    host = [times[(fastest, *s)]["host_ms"] for s in at_small if "host_ms" in times[(fastest, *s)]]
    torch_host = [times[("torch", *s)]["host_ms"] for s in at_small if "host_ms" in times.get(("torch", *s), {})]
    if host and results.get("flush_ms"):
        line += (f" The host takes {min(host) * 1e3:.1f} to {max(host) * 1e3:.1f} us to issue its call"
                 + (f" (eager PyTorch {min(torch_host) * 1e3:.1f} to {max(torch_host) * 1e3:.1f} us)" if torch_host
                    else "")
                 + f", and the L2 flush before it keeps the GPU busy for {results['flush_ms'] * 1e3:.1f} us: "
                 "host work beyond that is timed as the call's.")
    said.append(line)

    # 5. where Liger-Kernel is faster
    lost = [s for s in shapes if ("liger", *s) in times and times[("liger", *s)]["ms"] < times[(fastest, *s)]["ms"]]
    if lost:
        by_n = sorted({s[2] for s in lost})
        said.append(f"Liger-Kernel is faster than {fastest} at {len(lost)} of {len(shapes)} shapes, at N in "
                    f"{{{', '.join(map(str, by_n))}}}; "
                    f"{sum(s[2] == widest for s in lost)} of them at N = {widest}.")

    # 6. a torch.compile baseline compiled for any N (files from before COMPILED_AS)
    compiled = [s for s in shapes if ("torch.compile", *s) in times and ("torch", *s) in times]
    if compiled and "N static" not in results.get("torch_compile", "N static"):
        first = min(compiled, key=lambda s: (DTYPE_NAMES.index(s[0]), s[2]))  # the order `measure` compiles in
        m = max(s[1] for s in compiled if s[0] == first[0])
        row = sorted((s for s in compiled if s[0] == first[0] and s[1] == m), key=lambda s: s[2])
        fraction = {impl: [times[(impl, *s)]["gb_per_s"] / copy for s in row[1:]]
                    for impl in ("torch.compile", "torch")}
        said.append(f"torch.compile's graphs here, after its first ({first[0]}, N = {first[2]}), were compiled for "
                    "any row length: at its first recompile Dynamo made N symbolic (its automatic dynamic shapes), "
                    f"and every later graph kept it so. At M = {m} in {first[0]} it reached "
                    f"{times[('torch.compile', *row[0])]['gb_per_s'] / copy:.2f} of the copy bandwidth at N = "
                    f"{first[2]}, and {min(fraction['torch.compile']):.2f} to {max(fraction['torch.compile']):.2f} "
                    f"at the other N (eager PyTorch {min(fraction['torch']):.2f} to {max(fraction['torch']):.2f}): "
                    "the targets against torch.compile were judged against that. The benchmark now compiles each N "
                    "for itself; the next run on a GPU measures it so.")
    return said


def figure(results: dict):
    """Two rows of panels, one column per dtype: GB/s against N (top) and the fraction of the copy bandwidth
    (bottom), one line per implementation at the largest M measured, the course's rungs solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = [d for d in DTYPE_NAMES if any(r["dtype"] == d for r in results["rows"])]
    fig, axes = plt.subplots(2, len(dtypes), figsize=(4.3 * len(dtypes), 6.6), sharex=True, squeeze=False)
    copy = results["copy_gb_per_s"]
    styles = {"v1 rowwise": ("#e0a06a", "-", "o"), "v2 locked": ("#d07030", "-", "s"),
              "v3 persistent": ("#b03a00", "-", "D"), "v4 prefetch": ("#6a1a00", "-", "P"),
              "v5 split": ("#3a0a00", ":", "*"), "torch": ("#2a6fb0", "--", "^"),
              "torch.compile": ("#5a9be0", "--", "v"), "liger": ("#3b8f3b", "--", "x")}
    for col, dtype in enumerate(dtypes):
        m = max(r["M"] for r in results["rows"] if r["dtype"] == dtype)
        for impl in IMPLS:
            points = sorted((r["N"], r["gb_per_s"]) for r in results["rows"]
                            if r["impl"] == impl and r["dtype"] == dtype and r["M"] == m)
            if not points:
                continue
            color, line, marker = styles[impl]
            n, gbs = zip(*points)
            axes[0][col].plot(n, gbs, color=color, ls=line, marker=marker, ms=3.5, lw=1.3, label=impl)
            axes[1][col].plot(n, [g / copy for g in gbs], color=color, ls=line, marker=marker, ms=3.5, lw=1.3)
        axes[0][col].axhline(copy, color="#999999", lw=1, ls=":")
        axes[1][col].axhline(1.0, color="#999999", lw=1, ls=":")
        axes[1][col].axhline(TARGET_FRACTION, color="#b03a00", lw=0.8, ls=(0, (1, 3)))
        axes[0][col].set_title(f"{dtype}, M = {m}", fontsize=10)
        axes[1][col].set_xlabel("N (columns)")
        axes[1][col].set_ylim(0, 1.1)
        for ax in axes[:, col]:
            ax.set_xscale("log", base=2)
            ax.grid(alpha=0.25)
    axes[0][0].set_ylabel("GB/s")
    axes[1][0].set_ylabel(f"fraction of copy ({copy:.0f} GB/s)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    title = f"LayerNorm backward, {results['gpu']}, {results['date']}"
    if results.get("synthetic"):
        title = "SYNTHETIC TEST DATA, NOT A MEASUREMENT: " + title
    elif results["dry_run"]:
        title = "DRY RUN ON A CPU, NOT A GPU MEASUREMENT: " + title
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    return fig


# --- the implementations --------------------------------------------------------------------------

def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def implementations() -> tuple[dict[str, Callable], list[str]]:
    """name -> f(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta), and notes on what is missing."""
    import torch

    from . import triton_layernorm

    assert tuple(triton_layernorm.VERSIONS) == COURSE and tuple(triton_layernorm.PERSISTENT) == PERSISTENT
    stats_dtypes = {}  # what torch's own forward pass returns mean and rstd as (float32 for 16-bit x on CUDA)
    biases = {}  # both signatures take the bias, which the backward pass never reads: made once, not timed

    def zero_bias(gamma):
        key = (gamma.shape, gamma.dtype, gamma.device)
        if key not in biases:
            biases[key] = torch.zeros_like(gamma)
        return biases[key]

    def stats(x, mean, rstd):
        key = (x.device, x.dtype)
        if key not in stats_dtypes:
            stats_dtypes[key] = torch.native_layer_norm(x[:1], x.shape[-1:], None, None, 1e-5)[1].dtype
        return mean.to(stats_dtypes[key]), rstd.to(stats_dtypes[key])

    def aten_backward(dy, x, gamma, mean, rstd, bias):
        return torch.ops.aten.native_layer_norm_backward(dy, x, [x.shape[-1]], mean, rstd, gamma, bias,
                                                         [True, True, True])

    def native(dy, x, gamma, mean, rstd):
        return aten_backward(dy, x, gamma, *stats(x, mean, rstd), zero_bias(gamma))

    # One graph per (dtype, N), with M dynamic: compiled at the first call, which `measure` makes at the
    # largest M. The default limit of 8 graphs per function would silently fall back to eager beyond it, and
    # by default a recompile for a new N makes N symbolic too: every later graph would be compiled for any
    # row length, against a kernel tuned for its own.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 1024)
    torch._dynamo.config.automatic_dynamic_shapes = False  # only what maybe_mark_dynamic marks (M) is dynamic
    compiled_backward = torch.compile(aten_backward)

    def compiled(dy, x, gamma, mean, rstd):
        mean, rstd = stats(x, mean, rstd)
        for t in (dy, x, mean, rstd):
            torch._dynamo.maybe_mark_dynamic(t, 0)
        return compiled_backward(dy, x, gamma, mean, rstd, zero_bias(gamma))

    impls = {**triton_layernorm.VERSIONS, "torch": native, "torch.compile": compiled}
    notes = []
    try:
        from liger_kernel.ops.layer_norm import layer_norm_backward
    except ImportError as e:
        notes.append(f"Liger-Kernel is not installed here ({e}); its layer_norm backward was not measured")
    else:
        def liger(dy, x, gamma, mean, rstd):
            return tuple(layer_norm_backward(dy, x, gamma, zero_bias(gamma), mean, rstd)[:3])

        impls["liger"] = liger
    return impls, notes


def check_all(impls: dict, shape, dtype_name: str, device: str, seed: int = 2026) -> dict[str, str]:
    """impl -> "pass", or what the float64 oracle found wrong, on one random trial of `shape` (exercise 06's)."""
    import numpy as np

    from .cases.torch_trials import backward_trial

    # On the CPU (a dry run) Triton's interpreter stores bfloat16 by dropping bits: a whole unit in the last place
    truncated = device == "cpu" and dtype_name == "bfloat16"
    trial = backward_trial("layer", shape, _torch_dtype(dtype_name), truncated=truncated)(
        np.random.default_rng(seed), device)
    found = {}
    for name, fn in impls.items():
        try:
            problems = trial.judge(fn(*trial.args), trial.expected)
        except Exception as e:  # a kernel that cannot run here is reported, not fatal
            problems = [f"raised {error_line(e)}"]
        found[name] = "pass" if not problems else "; ".join(problems)
    return found


def check(impls: dict, device: str = "cuda", shape=(300, 5000)) -> dict[str, dict[str, str]]:
    """impl -> dtype -> "pass" or what the float64 oracle found wrong, on one shape."""
    by_dtype = {dtype: check_all(impls, shape, dtype, device) for dtype in DTYPE_NAMES}
    return {name: {dtype: by_dtype[dtype][name] for dtype in DTYPE_NAMES} for name in impls}


def inputs_for(m: int, n: int, dtype_name: str, device: str = "cuda"):
    """Random dy, x, gamma and x's float32 mean and rstd (from torch's forward pass), on `device`."""
    import torch

    dtype = _torch_dtype(dtype_name)
    x = torch.randn(m, n, device=device, dtype=torch.float32).to(dtype)
    dy = torch.randn(m, n, device=device, dtype=torch.float32).to(dtype)
    gamma = (1 + 0.1 * torch.randn(n, device=device)).to(dtype)
    _, mean, rstd = torch.native_layer_norm(x.float(), [n], None, None, 1e-5)
    return dy, x, gamma, mean.view(m), rstd.view(m)


def same_bits(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8),
                                                                      b.view(-1).view(torch.uint8))


def copy_bandwidth(timer, device: str, nbytes: int) -> tuple[float, float]:
    """(GB/s, ms) of a device-to-device copy of `nbytes` (read once, written once)."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = timer.median_ms(lambda: dst.copy_(src), reps=20)
    del src, dst
    return 2 * nbytes / (ms * 1e6), ms


def _fits(m: int, n: int, dtype_name: str, device: str) -> str | None:
    """Why a shape cannot run in the GPU's free memory, or None: x, dy, dx, and float32 temporaries that the
    compiled and eager baselines may make (two M x N float32 arrays), with 10% to spare."""
    import torch

    if device != "cuda":
        return None
    need = 3 * m * n * ELEMENT_BYTES[dtype_name] + 2 * m * n * 4
    free, _ = torch.cuda.mem_get_info()
    return None if need * 1.1 < free else f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"


def _environment(device: str) -> dict:
    import torch
    import triton

    from .timing import cpu_name

    env = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
           "liger_kernel": _version("liger_kernel"), "device": device}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=torch.cuda.get_device_name(), multiprocessors=p.multi_processor_count,
                   memory_bytes=p.total_memory, capability=f"{p.major}.{p.minor}",
                   l2_bytes=getattr(p, "L2_cache_size", None), cuda=torch.version.cuda)
    else:
        env.update(gpu=f"dry run on {cpu_name()}")
    return env


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package.replace("_", "-"))
    except Exception:
        return None


def check_rows_for(n: int, most: int = CHECK_ROWS) -> int:
    """Rows of the oracle's check at width n: `most`, or fewer (a multiple of 16) to stay near CHECK_ENTRIES."""
    return min(most, max(64, CHECK_ENTRIES // n // 16 * 16))


def first_calls(impls: dict, m: int, n: int, dtype: str, device: str, notes: list) -> None:
    """Call every implementation once at (m, n), where it fits: what compiles, compiles here (and is cached on
    disk, by Triton and by torch.compile, for any later process that makes the same call)."""
    import torch

    if _fits(m, n, dtype, device) is not None:
        return
    args = inputs_for(m, n, dtype, device)
    for name, fn in impls.items():
        try:
            fn(*args)
        except Exception as e:
            notes.append(f"{name} {dtype} N={n}: the first call raised {error_line(e)}")
    del args
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def warm(dry_run: bool, dtypes, rows, columns, log=print) -> int:
    """Only the first calls (compilation) of `measure`, for the given dtypes and N: run in a few processes
    side by side while other work goes on, they leave the compiled kernels in the disk caches."""
    device = "cpu" if dry_run else "cuda"
    rows = tuple(rows or (DRY_ROWS if dry_run else ROWS))
    columns = tuple(columns or (DRY_COLUMNS if dry_run else COLUMNS))
    impls, notes = implementations()
    start = time.monotonic()
    check_rows = DRY_CHECK_ROWS if dry_run else CHECK_ROWS
    # The largest M first, where `measure` calls first; then the other M and the check's rows, where a kernel
    # whose launch depends on M (Liger-Kernel's rows per program, the second reduction's block) compiles again.
    calls = [(dtype, n, max(rows)) for dtype in dtypes for n in columns]
    calls += [(dtype, n, m) for dtype in dtypes for n in columns
              for m in sorted({*rows, check_rows_for(n, check_rows)} - {max(rows)})]
    for dtype, n, m in calls:
        first_calls(impls, m, n, dtype, device, notes)
    log(f"compiled {len(impls)} implementations for {list(dtypes)} x N = {list(columns)}, each at M = "
        f"{sorted(set(rows))} and the check's rows, in {time.monotonic() - start:.0f} s", *notes, sep="\n")
    return 0


def measure(dry_run: bool = False, dtypes=DTYPE_NAMES, rows=None, columns=None, budget_s: float = BUDGET_S,
            log=print, checkpoint=None) -> dict:
    """Everything, on the current GPU (or, dry, on the CPU): copy bandwidth, checks, determinism, times.
    `checkpoint(results, "<dtype> N=<n>")`, when given, is called after each (dtype, N) with what is measured so
    far (`main` writes it down, so that a run stopped before its end keeps what it measured)."""
    import torch

    from . import triton_layernorm
    from .timing import DeviceTimer, repetitions

    start = time.monotonic()
    deadline = start + budget_s
    device = "cpu" if dry_run else "cuda"
    rows = tuple(rows or (DRY_ROWS if dry_run else ROWS))
    columns = tuple(columns or (DRY_COLUMNS if dry_run else COLUMNS))
    check_rows = DRY_CHECK_ROWS if dry_run else CHECK_ROWS
    env = _environment(device)
    log(f"{env['gpu']}: torch {env['torch']}, triton {env['triton']}, liger-kernel {env['liger_kernel']}")
    impls, notes = implementations()
    timer = DeviceTimer(device)
    copy, copy_ms = copy_bandwidth(timer, device, (1 << 30) if not dry_run else (64 << 20))
    flush_ms = timer.median_ms(timer.flush, reps=1 if dry_run else 20)  # what hides a call's host work
    log(f"device-to-device copy: {copy:.0f} GB/s; the L2 flush takes {flush_ms * 1e3:.0f} us")

    results = {"schema": SCHEMA, "gpu": env["gpu"], "date": datetime.date.today().isoformat(), "dry_run": dry_run,
               "environment": env, "fastest": None, "copy_gb_per_s": copy,
               "copy": {"bytes": (1 << 30) if not dry_run else (64 << 20), "ms": copy_ms}, "flush_ms": flush_ms,
               "sweep": {"dtypes": list(dtypes), "M": list(rows), "N": list(columns), "check_rows": check_rows},
               "traffic": "3 M N e + 3 N e + 8 M bytes: x, dy read and dx written; gamma read, dgamma and dbeta "
                          "written; float32 mean and rstd read (e: the element size)",
               "timing": "CUDA events around each call, 256 MiB written before each to flush the L2 cache; the "
                         "median of `reps` calls after at least 3 untimed ones (two to compare dgamma and dbeta bit for "
                         "bit, one to estimate the time); reps from the time budget "
                         "(timing.repetitions). host_ms: the median time the host takes to issue one call, "
                         "5 calls queued behind a flush; a call whose host_ms exceeds the flush's time (flush_ms) "
                         "leaves the GPU idle and is timed for it" if not dry_run
                         else "wall clock on the CPU (a dry run)",
               "torch_compile": COMPILED_AS,
               "budget_s": budget_s, "checks": {}, "kernels": [], "skipped": [], "notes": notes, "rows": []}
    pending = len(dtypes) * len(columns) * len(rows) * len(impls)
    spent = f"the time budget of {budget_s:.0f} s was spent"
    for dtype in dtypes:
        for n in columns:
            if time.monotonic() > deadline:  # not even compiled: what is left is listed, not measured
                results["skipped"] += [{"dtype": dtype, "M": m, "N": n, "reason": spent} for m in rows]
                pending -= len(rows) * len(impls)
                continue
            first_calls(impls, max(rows), n, dtype, device, notes)
            verdicts = check_all(impls, (check_rows_for(n, check_rows), n), dtype, device)
            for name, verdict in verdicts.items():
                results["checks"].setdefault(name, {})[f"{dtype} N={n}"] = verdict
                if verdict != "pass":
                    log(f"check {name} {dtype} {check_rows_for(n, check_rows)} x {n}: {verdict}")
            for m in sorted(rows, reverse=True):
                why = _fits(m, n, dtype, device)
                if why is None and time.monotonic() > deadline:
                    why = spent
                if why is not None:
                    results["skipped"].append({"dtype": dtype, "M": m, "N": n, "reason": why})
                    pending -= len(impls)
                    log(f"{dtype:>8} M={m:<5} N={n:<5}  skipped: {why}")
                    continue
                args = inputs_for(m, n, dtype, device)
                line = []
                for name, fn in impls.items():
                    pending -= 1
                    # a wrong course kernel is never timed; a baseline is timed all the same, its verdict kept
                    # in results["checks"] (PyTorch's CPU 16-bit dgamma, for one, misses the tolerance: its error
                    # grows with the rows, as a sum kept in 16 bits does, while a float32 sum stays near 1e-7)
                    if name in COURSE and verdicts[name] != "pass":
                        continue
                    try:
                        a, b = fn(*args), fn(*args)
                        deterministic = same_bits(a[1], b[1]) and same_bits(a[2], b[2])
                        del a, b
                        estimate = timer.median_ms(lambda: fn(*args), reps=1, warmup=0)
                        share = 1e3 * max(0.0, deadline - time.monotonic()) / (pending + 1)
                        reps = repetitions(estimate, 0.7 * share, **({"least": 1, "most": 2} if dry_run else {}))
                        ms = timer.median_ms(lambda: fn(*args), reps=reps, warmup=0 if dry_run else 1)
                        host = timer.host_ms(lambda: fn(*args), reps=1 if dry_run else 5)
                    except Exception as e:  # out of memory, or a third-party kernel that refuses this shape
                        results["skipped"].append({"dtype": dtype, "M": m, "N": n, "impl": name,
                                                   "reason": error_line(e)})
                        if device == "cuda":
                            torch.cuda.empty_cache()
                        continue
                    gbs = traffic_bytes(m, n, dtype) / (ms * 1e6)
                    results["rows"].append({"impl": name, "dtype": dtype, "M": m, "N": n, "ms": ms, "gb_per_s": gbs,
                                            "fraction_of_copy": gbs / copy, "reps": reps, "host_ms": host,
                                            "deterministic": deterministic})
                    line.append(f"{name} {ms * 1e3:.1f}us {gbs / copy:.0%}{'' if deterministic else ' (nondet)'}")
                for version in PERSISTENT:
                    if verdicts[version] != "pass":
                        continue
                    try:
                        plan = triton_layernorm.persistent_plan(*args, version=version)
                        for part in ("first_pass", "second_reduction"):  # each kernel alone, the L2 flushed
                            plan[f"{part}_ms"] = timer.median_ms(plan.pop(part), reps=1 if dry_run else 10, warmup=1)
                    except Exception as e:  # its times are kept; only what was learnt about its kernels is not
                        results["notes"].append(f"{version} {dtype} {m} x {n}: timing its two kernels alone raised "
                                                + error_line(e))
                        continue
                    results["kernels"].append({"impl": version, "dtype": dtype, "M": m, "N": n, **plan})
                log(f"{dtype:>8} M={m:<5} N={n:<5}  " + ", ".join(line))
                del args
                if device == "cuda":
                    torch.cuda.empty_cache()
            if checkpoint is not None:
                checkpoint(results, f"{dtype} N={n}")
    results["fastest"] = fastest_rung(results)
    results["targets"] = targets(results)
    results["elapsed_s"] = time.monotonic() - start
    return results


REDUCTION_COLUMNS = (16, 32, 64)  # the second reduction's column blocks and entries a step, swept
REDUCTION_STEPS = (1024, 4096, 8192)


def sweep(dry_run: bool = False, runs: int = 5, budget_s: float = BUDGET_S, log=print, checkpoint=None) -> dict:
    """Time v3, v4 and (where it splits rows) v5 in bfloat16 at every launch their launcher weighs and at the
    neighbours of the one it takes, each with the programs that fit and with 1, 2 and 4 per multiprocessor,
    and their second reduction alone at the launch `reduction_launch` takes and at every pair of
    REDUCTION_COLUMNS and REDUCTION_STEPS; the median of `runs` calls each, the L2 flushed before every
    call. Prints the best per rung and shape and
    returns everything timed (written by `main` to sweep-<gpu>-<date>.json, and by `checkpoint(results,
    "M=<m> N=<n>")` after each shape). Shapes reached after `budget_s` are listed as skipped; a launch that
    fails (one the launcher would never take, past what the GPU holds) is listed with its error instead of a
    time. A dry run goes through the same launches on the CPU, interpreted, on tiny shapes, as if with 2 SMs.
    """
    import torch

    from . import triton_layernorm as T
    from .timing import DeviceTimer

    deadline = time.monotonic() + budget_s
    device = "cpu" if dry_run else "cuda"
    env = _environment(device)
    timer = DeviceTimer(device)
    sms = 2 if dry_run else torch.cuda.get_device_properties(0).multi_processor_count
    runs = 1 if dry_run else runs
    results = {"gpu": env["gpu"], "date": datetime.date.today().isoformat(), "dry_run": dry_run,
               "environment": env, "impls": list(PERSISTENT), "dtype": "bfloat16", "runs": runs,
               "budget_s": budget_s, "shapes": [], "skipped": []}

    def timed(call, **launch) -> dict:
        try:
            return {**launch, "ms": timer.median_ms(call, runs)}
        except Exception as e:
            return {**launch, "error": error_line(e)}

    for m in DRY_ROWS if dry_run else ROWS:
        for n in DRY_COLUMNS if dry_run else COLUMNS:
            why = "the time budget was spent" if time.monotonic() >= deadline else _fits(m, n, "bfloat16", device)
            if why:
                results["skipped"].append({"M": m, "N": n, "reason": why})
                continue
            args = inputs_for(m, n, "bfloat16", device)
            for version in PERSISTENT:
                fn = T.VERSIONS[version]
                plan = T.persistent_plan(*args, version=version)
                if version == "v5 split" and not plan["split"]:
                    continue  # there v5 is v4, just timed
                r, w = plan["ROWS"], plan["num_warps"]
                neighbours = {(rows, warps) for rows in (max(1, r // 2), r, r * 2)
                              for warps in (max(1, w // 2), w, min(32, w * 2))}
                launches = set(T.launch_candidates(plan["BLOCK_N"])) | neighbours
                taken = {"ROWS": r, "num_warps": w, "programs": plan["programs"],
                         "ms": timer.median_ms(lambda: fn(*args), runs)}
                timings = []
                for rows, warps in sorted(launches):
                    for per_sm in (None, 1, 2, 4):
                        def run(rows=rows, warps=warps, p=per_sm and sms * per_sm):
                            return fn(*args, programs=p, num_warps=warps, rows=rows)
                        timings.append(timed(run, ROWS=rows, num_warps=warps, programs_per_multiprocessor=per_sm))
                best = min((t for t in timings if "ms" in t), key=lambda t: t["ms"],
                           default={"ROWS": r, "num_warps": w, "programs_per_multiprocessor": None, "ms": taken["ms"]})
                gbs = traffic_bytes(m, n, "bfloat16") / (best["ms"] * 1e6)
                reduction = {"taken": {**plan["reduction"], "ms": timer.median_ms(plan["second_reduction"], runs)},
                             "timings": [timed(lambda launch=(step // cols, cols): plan["second_reduction"](launch),
                                               BLOCK_P=step // cols, BLOCK_COLS=cols)
                                         for cols in REDUCTION_COLUMNS for step in REDUCTION_STEPS]}
                reduction["best"] = min((t for t in reduction["timings"] if "ms" in t), key=lambda t: t["ms"],
                                        default=reduction["taken"])
                results["shapes"].append({"impl": version, "M": m, "N": n, "taken": taken,
                                          "best": {**best, "gb_per_s": gbs}, "timings": timings,
                                          "reduction": reduction})
                per = best["programs_per_multiprocessor"]
                log(f"{version} M={m:<5} N={n:<5} the launcher's rows={r}, num_warps={w}, {plan['programs']} "
                    f"programs: {taken['ms'] * 1e3:7.1f} us; best {best['ms'] * 1e3:7.1f} us ({gbs:.0f} GB/s) with "
                    f"rows={best['ROWS']}, num_warps={best['num_warps']}, "
                    f"programs={f'{per} x SMs' if per else 'as fit'}; second reduction "
                    f"{reduction['taken']['ms'] * 1e3:.1f} us, best {reduction['best']['ms'] * 1e3:.1f} us with "
                    f"{reduction['best']['BLOCK_COLS']} columns, {reduction['best']['BLOCK_P']} partial rows a step")
            del args
            if checkpoint is not None:
                checkpoint(results, f"M={m} N={n}")
    return results


def check_exercise(log=print) -> bool:
    """Run exercise 06's visible and hidden tests on this GPU against the solution in solutions/."""
    import linecache

    from .cases import TestsFailed, run_tests

    notebook = json.loads((ROOT / "solutions" / "06-triton" / "triton.ipynb").read_text())
    cell = next(c for c in notebook["cells"] if c["metadata"].get("nbgrader", {}).get("solution"))
    source = "".join(cell["source"])
    linecache.cache["<solution>"] = (len(source), None, source.splitlines(True), "<solution>")
    namespace = {}
    exec(compile(source, "<solution>", "exec"), namespace)
    try:
        for hidden in (False, True):
            run_tests("06-triton", "layernorm_backward_triton", namespace["layernorm_backward_triton"], hidden)
    except TestsFailed as e:
        log(str(e))
        return False
    return True


def report(results: dict) -> str:
    """A short table: each target, met or missed and by how much; then the geometric-mean speedups."""
    lines = [f"{results['gpu']} {results['date']}: copy {results['copy_gb_per_s']:.0f} GB/s, "
             f"{len(results['rows'])} timings, {len(results['skipped'])} skipped, {results.get('elapsed_s', 0):.0f} s"]
    for t in results["targets"]:
        verdict = {True: "MET   ", False: "MISSED", None: "n/a   "}[t["met"]]
        measured = t["measured"]
        lines.append(f"  {verdict} {t['target']}: measured {measured if not isinstance(measured, float) else round(measured, 3)}"
                     + (f"; {len(t['misses'])} miss(es), worst short by {max(x['short_by'] for x in t['misses'] if 'short_by' in x):.3f}"
                        if any("short_by" in x for x in t["misses"]) else ""))
    for rival, by_dtype in summary(results)["speedup"].items():
        lines.append(f"  speedup over {rival}: " + ", ".join(f"{d} {x:.2f}" for d, x in by_dtype.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normgrad.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="run the same code on the CPU, interpreted, tiny shapes")
    parser.add_argument("--check", action="store_true", help="check correctness on the GPU only; time nothing")
    parser.add_argument("--sweep", action="store_true", help="time the persistent kernel's launch settings")
    parser.add_argument("--warm-only", action="store_true",
                        help="only compile (the first call of each implementation), filling the disk caches")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results file")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="seconds for the whole benchmark, or --sweep (default %(default)s)")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPE_NAMES, default=list(DTYPE_NAMES))
    parser.add_argument("--rows", nargs="+", type=int, help="M values (default: the sweep's, or the dry run's)")
    parser.add_argument("--columns", nargs="+", type=int, help="N values (default: the sweep's, or the dry run's)")
    args = parser.parse_args(argv)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.check:
        impls, notes = implementations()
        checks = check(impls)
        for name, by_dtype in checks.items():
            for dtype, outcome in by_dtype.items():
                print(f"{name:>14} {dtype:>8}: {outcome}")
        print(*notes, sep="\n")
        exercise = check_exercise()
        print("exercise 06 on CUDA:", "all tests pass" if exercise else "FAILED")
        ok = exercise and all(v == "pass" for name in COURSE for v in checks[name].values())
        return 0 if ok else 1
    if args.sweep:
        def swept_so_far(results, done):  # as the benchmark's checkpoint below: a kill keeps what was timed
            write_json(dict(results, stopped_after=done), results_path(results["gpu"], results["date"], args.out,
                                                                       kind="sweep"))

        results = sweep(args.dry_run, budget_s=args.budget_s, checkpoint=swept_so_far)
        path = write_json(results, results_path(results["gpu"], results["date"], args.out, kind="sweep"))
        print(f"wrote {path}")
        return 0
    if args.warm_only:
        return warm(args.dry_run, tuple(args.dtypes), args.rows, args.columns)
    def checkpoint(results, done):  # what is measured so far, where the finished file will go: a kill keeps it
        partial = dict(results, notes=[*results["notes"], f"the run was stopped after {done}: this file holds "
                                                            "what was measured up to there"])
        partial["fastest"] = fastest_rung(partial)
        partial["targets"] = targets(partial)
        write_results(partial, args.out)

    results = measure(args.dry_run, tuple(args.dtypes), args.rows, args.columns, args.budget_s,
                      checkpoint=checkpoint)
    path = write_results(results, args.out)
    print(report(results))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
