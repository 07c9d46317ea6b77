"""LayerNorm's backward pass on a GPU: the course's fastest kernel against PyTorch's and Liger-Kernel's.

    python -m normgrad.benchmark           (or `make bench`)  check, time, write the results file
    python -m normgrad.benchmark --check   correctness only: every kernel of chapter 6, PyTorch's and
                                           Liger-Kernel's backward, and exercise 06's solution, on CUDA
    python -m normgrad.benchmark --sweep   time the persistent kernel's launch settings around its defaults

One run does everything on the same GPU: it measures the device-to-device copy
bandwidth first, checks every implementation against the float64 oracle with
the dtype's tolerance, then times each with `triton.testing.do_bench` (median
of its repetitions, and the median of several such runs) over M in {4096,
16384}, N from 512 to 16384 (powers of two and others) in bfloat16, float16 and
float32. The backward pass must read x and dy and write dx, so it moves at
least 3 M N (element size) bytes; GB/s is that over the time, and the fraction
of the copy bandwidth is how close it comes to the speed of light.

Results go to chapters/data/bench-<gpu>-<date>.json, which chapter 6 plots.
The file format is read and written here (`read_results`, `write_results`),
so the tests can check it, and the plot, without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "chapters" / "data"
SCHEMA = 1
IMPLS = ("course", "torch", "liger")  # in the order the chapter draws them
DTYPE_NAMES = ("bfloat16", "float16", "float32")
ROWS = (4096, 16384)
COLUMNS = (512, 768, 1000, 1024, 2048, 3072, 4096, 5000, 5120, 8192, 12288, 16384)
CHECK_SHAPE = (300, 5000)  # every implementation is checked on this shape, in every dtype, before timing
ELEMENT_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
NO_GPU = ("make bench needs a CUDA GPU: torch.cuda.is_available() is False on this machine, so nothing was "
          "measured and no results file was written. Run it on a machine with an NVIDIA GPU.")


def traffic_bytes(m: int, n: int, dtype_name: str) -> int:
    """The least the backward pass must move: read x and dy, write dx (M N elements each)."""
    return 3 * m * n * ELEMENT_BYTES[dtype_name]


# --- the results file ---------------------------------------------------------------------------

def results_path(gpu: str, date: str, directory: Path = RESULTS_DIR) -> Path:
    """chapters/data/bench-<gpu, as a slug>-<date>.json"""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")
    return Path(directory) / f"bench-{slug}-{date}.json"


def write_results(results: dict, directory: Path = RESULTS_DIR) -> Path:
    """Write `results` (checked first) to its file under `directory`; returns the path."""
    validate(results)
    path = results_path(results["gpu"], results["date"], directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
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
    """Raise ValueError unless `results` has the fields and rows the chapter's plot reads."""
    if not isinstance(results, dict):
        raise ValueError(f"{where}: expected a JSON object")
    for key, kind in {"schema": int, "gpu": str, "date": str, "copy_gb_per_s": (int, float), "rows": list}.items():
        if not isinstance(results.get(key), kind):
            raise ValueError(f"{where}: field {key!r} is missing or of the wrong type")
    if results["schema"] != SCHEMA:
        raise ValueError(f"{where}: schema {results['schema']}, this code reads schema {SCHEMA}")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", results["date"]):
        raise ValueError(f"{where}: date {results['date']!r} is not YYYY-MM-DD")
    for i, row in enumerate(results["rows"]):
        ok = (isinstance(row, dict) and row.get("impl") in IMPLS and row.get("dtype") in DTYPE_NAMES
              and all(isinstance(row.get(k), int) and row[k] > 0 for k in ("M", "N"))
              and all(isinstance(row.get(k), (int, float)) and row[k] > 0 for k in ("ms", "gb_per_s")))
        if not ok:
            raise ValueError(f"{where}: row {i} is not {{impl, dtype, M, N, ms, gb_per_s}} with known values")


def find_results(directory: Path = RESULTS_DIR) -> Path | None:
    """The most recent results file in `directory` (by the date in it), or None when there is none."""
    found = sorted(Path(directory).glob("bench-*.json"), key=lambda p: (read_results(p)["date"], p.name))
    return found[-1] if found else None


def summary(results: dict) -> dict:
    """What the chapter reports from a results file: the course's kernel against the copy and PyTorch.

    - fraction_of_copy: dtype -> the course kernel's lowest fraction of the copy bandwidth at N >= 4096
    - speedup: dtype -> geometric mean over shapes of torch's time over the course's
    - slower_than_torch: the (dtype, M, N) where the course's kernel is not faster
    """
    times = {(r["impl"], r["dtype"], r["M"], r["N"]): r["ms"] for r in results["rows"]}
    fraction, speedup, slower = {}, {}, []
    for dtype in DTYPE_NAMES:
        ours = {(m, n): ms for (impl, d, m, n), ms in times.items() if impl == "course" and d == dtype}
        if not ours:
            continue
        large = [traffic_bytes(m, n, dtype) / (ms * 1e6) / results["copy_gb_per_s"]
                 for (m, n), ms in ours.items() if n >= 4096]
        if large:
            fraction[dtype] = min(large)
        ratios = []
        for (m, n), ms in sorted(ours.items()):
            theirs = times.get(("torch", dtype, m, n))
            if theirs:
                ratios.append(theirs / ms)
                if theirs <= ms:
                    slower.append((dtype, m, n))
        if ratios:
            speedup[dtype] = math.exp(sum(map(math.log, ratios)) / len(ratios))
    return {"fraction_of_copy": fraction, "speedup": speedup, "slower_than_torch": slower}


# --- on the GPU -----------------------------------------------------------------------------------

def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def implementations() -> tuple[dict[str, Callable], list[str]]:
    """name -> f(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta), and notes on what is missing."""
    import torch

    from . import triton_layernorm

    stats_dtypes = {}  # what torch's own forward pass returns mean and rstd as (float32 for 16-bit x on CUDA)
    biases = {}  # both signatures take the bias, which the backward pass never reads: made once, not timed

    def zero_bias(gamma):
        key = (gamma.shape, gamma.dtype, gamma.device)
        if key not in biases:
            biases[key] = torch.zeros_like(gamma)
        return biases[key]

    def native(dy, x, gamma, mean, rstd):
        n = x.shape[-1]
        key = (x.device, x.dtype)
        if key not in stats_dtypes:
            stats_dtypes[key] = torch.native_layer_norm(x[:1], [n], gamma, None, 1e-5)[1].dtype
        mean, rstd = mean.to(stats_dtypes[key]), rstd.to(stats_dtypes[key])
        return torch.ops.aten.native_layer_norm_backward(dy, x, [n], mean, rstd, gamma, zero_bias(gamma),
                                                         [True, True, True])

    impls = {"course": triton_layernorm.VERSIONS[triton_layernorm.FASTEST], "torch": native}
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


def check(impls: dict, device: str = "cuda") -> dict[str, dict[str, str]]:
    """impl -> dtype -> "pass" or what the float64 oracle found wrong, on CHECK_SHAPE."""
    import numpy as np

    from .cases.torch_trials import backward_trial

    found = {}
    for name, fn in impls.items():
        found[name] = {}
        for dtype in DTYPE_NAMES:
            trial = backward_trial("layer", CHECK_SHAPE, _torch_dtype(dtype))(np.random.default_rng(2026), device)
            try:
                problems = trial.judge(fn(*trial.args), trial.expected)
            except Exception as e:  # a third-party kernel that cannot run here is reported, not fatal
                problems = [f"raised {type(e).__name__}: {e}"]
            found[name][dtype] = "pass" if not problems else "; ".join(problems)
    return found


def copy_bandwidth(runs: int) -> float:
    """GB/s of a device-to-device copy of 1 GiB (read once, written once), median of `runs` medians."""
    import torch
    from triton.testing import do_bench

    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = statistics.median(do_bench(lambda: dst.copy_(src), return_mode="median") for _ in range(runs))
    return 2 * src.numel() * src.element_size() / (ms * 1e6)


def inputs_for(m: int, n: int, dtype_name: str):
    """Random dy, x, gamma and x's float32 mean and rstd on the GPU (from torch's forward pass)."""
    import torch

    dtype = _torch_dtype(dtype_name)
    x = torch.randn(m, n, device="cuda", dtype=torch.float32).to(dtype)
    dy = torch.randn(m, n, device="cuda", dtype=torch.float32).to(dtype)
    gamma = (1 + 0.1 * torch.randn(n, device="cuda")).to(dtype)
    _, mean, rstd = torch.native_layer_norm(x.float(), [n], None, None, 1e-5)
    return dy, x, gamma, mean.view(m), rstd.view(m)


def time_ms(fn, args, runs: int) -> float:
    """Median over `runs` of do_bench's median time of fn(*args), in milliseconds."""
    from triton.testing import do_bench

    return statistics.median(do_bench(lambda: fn(*args), return_mode="median") for _ in range(runs))


def measure(runs: int = 5, log=print) -> dict:
    """Everything, on the current GPU: copy bandwidth, checks, then times. Returns the results dict."""
    import torch
    import triton

    impls, notes = implementations()
    gpu = torch.cuda.get_device_name()
    log(f"{gpu}: torch {torch.__version__}, triton {triton.__version__}")
    copy = copy_bandwidth(runs)
    log(f"device-to-device copy: {copy:.0f} GB/s")
    checks = check(impls)
    for name, by_dtype in checks.items():
        for dtype, outcome in by_dtype.items():
            log(f"check {name:>6} {dtype:>8}: {outcome}")
    failed = [d for d, outcome in checks["course"].items() if outcome != "pass"]
    if failed:
        raise SystemExit(f"the course's kernel fails the float64 check in {', '.join(failed)}: nothing timed")
    notes += [f"{name} fails the float64 check in {dtype}: {outcome}" for name, by_dtype in checks.items()
              if name != "course" for dtype, outcome in by_dtype.items() if outcome != "pass"]
    rows = []
    for dtype in DTYPE_NAMES:
        for m in ROWS:
            for n in COLUMNS:
                args = inputs_for(m, n, dtype)
                line = []
                for name, fn in impls.items():
                    if checks[name][dtype].startswith("raised"):
                        continue
                    ms = time_ms(fn, args, runs)
                    gbs = traffic_bytes(m, n, dtype) / (ms * 1e6)
                    rows.append({"impl": name, "dtype": dtype, "M": m, "N": n, "ms": ms, "gb_per_s": gbs,
                                 "fraction_of_copy": gbs / copy})
                    line.append(f"{name} {ms * 1e3:8.1f} us {gbs:6.0f} GB/s ({gbs / copy:4.0%})")
                log(f"{dtype:>8} M={m:<5} N={n:<5}  " + "  ".join(line))
                del args
                torch.cuda.empty_cache()
    return {"schema": SCHEMA, "gpu": gpu, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "triton": triton.__version__, "liger_kernel": _version("liger_kernel"), "copy_gb_per_s": copy,
            "timing": f"triton.testing.do_bench, return_mode='median'; the median of {runs} such runs",
            "checks": checks, "notes": notes, "rows": rows}


def _version(package: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(package.replace("_", "-"))
    except Exception:
        return None


def sweep(runs: int = 1, log=print) -> None:
    """Time the persistent kernel at launch settings around its defaults, in bfloat16; print the best."""
    import torch
    import triton

    from . import triton_layernorm as T

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for m in ROWS:
        for n in COLUMNS:
            args = inputs_for(m, n, "bfloat16")
            block_n = triton.next_power_of_2(n)
            rows, warps = T.rows_for(block_n), T.warps_for(T.rows_for(block_n) * block_n)
            default = time_ms(T.layernorm_backward_persistent, args, runs)
            best = (default, "the defaults")
            for r in sorted({max(1, rows // 2), rows, rows * 2}):
                for w in sorted({max(1, warps // 2), warps, min(32, warps * 2)}):
                    for per_sm in (None, 1, 2, 4):
                        def run(*a, r=r, w=w, p=per_sm and sms * per_sm):
                            return T.layernorm_backward_persistent(*a, programs=p, num_warps=w, rows=r)
                        ms = time_ms(run, args, runs)
                        if ms < best[0]:
                            best = (ms, f"rows={r}, num_warps={w}, programs={per_sm or 'default'}"
                                        f"{' x SMs' if per_sm else ''}")
            gbs = traffic_bytes(m, n, "bfloat16") / (best[0] * 1e6)
            log(f"M={m:<5} N={n:<5} defaults {default * 1e3:7.1f} us; best {best[0] * 1e3:7.1f} us "
                f"({gbs:.0f} GB/s) with {best[1]}")


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normgrad.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check correctness on the GPU only; time nothing")
    parser.add_argument("--sweep", action="store_true", help="time the persistent kernel's launch settings")
    parser.add_argument("--runs", type=int, default=5, help="do_bench runs per measurement (their median counts)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the results file")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.check:
        impls, notes = implementations()
        checks = check(impls)
        for name, by_dtype in checks.items():
            for dtype, outcome in by_dtype.items():
                print(f"{name:>6} {dtype:>8}: {outcome}")
        from . import triton_layernorm

        versions = check(triton_layernorm.VERSIONS)
        for name, by_dtype in versions.items():
            for dtype, outcome in by_dtype.items():
                print(f"{name:>14} {dtype:>8}: {outcome}")
        print(*notes, sep="\n")
        exercise = check_exercise()
        print("exercise 06 on CUDA:", "all tests pass" if exercise else "FAILED")
        ok = exercise and all(v == "pass" for d in (checks["course"], *versions.values()) for v in d.values())
        return 0 if ok else 1
    if args.sweep:
        sweep(1)
        return 0
    results = measure(args.runs)
    path = write_results(results, args.out)
    print(f"wrote {path}")
    for key, value in summary(results).items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
