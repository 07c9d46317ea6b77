"""Chapter 6's kernel ladder (normgrad/triton_layernorm.py), its launcher and its benchmark without a GPU.

Each rung is judged against the float64 oracle, under Triton's interpreter on
the CPU and compiled on CUDA tensors where there is a GPU; the kernels (and the
exercise's solution kernels) are also compiled for an sm_90 GPU ahead of time,
no GPU needed, so that what only a compiler rejects shows here. Apart from
exercise 06's tests (tests/test_06_triton.py), whose graded batch takes a
worker of its own in `make gpu-check`.
"""

import json
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers import child_env, solution_source
from normgrad import triton_layernorm
from normgrad.cases.torch_trials import backward_trial

# --- chapter 6's ladder, under the interpreter (compiled, on CUDA tensors, where there is a GPU) --------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("version", triton_layernorm.VERSIONS)
def test_every_rung_of_the_ladder_matches_the_oracle(version, dtype):
    device = "cuda" if torch.cuda.is_available() else "cpu"  # Triton is compiled or interpreted, not both
    # the interpreter stores bfloat16 by dropping bits: a whole unit in the last place (tolerances.output_rtol)
    truncated = device == "cpu" and dtype == torch.bfloat16
    trial = backward_trial("layer", (37, 1100), dtype, truncated=truncated)(np.random.default_rng(6), device)
    assert trial.judge(triton_layernorm.VERSIONS[version](*trial.args), trial.expected) == []


def test_the_ladder_refuses_what_it_cannot_do():
    x = torch.zeros(3, 5, dtype=torch.float64)
    with pytest.raises(TypeError, match="dtype"):
        triton_layernorm.layernorm_backward_persistent(x, x, torch.ones(5), torch.zeros(3), torch.ones(3))
    x = torch.zeros(3, 5)
    with pytest.raises(ValueError, match="gamma"):
        triton_layernorm.layernorm_backward_rowwise(x, x, torch.ones(4), torch.zeros(3), torch.ones(3))


# --- what only a GPU compiler would reject, checked without a GPU ----------------------------

COMPILE = textwrap.dedent('''
    import json, sys
    from normgrad import triton_layernorm as T
    from normgrad.gpu_compile import compile_both_builds
    sys.path.insert(0, "tests")
    from helpers import run_cell

    cell = run_cell(sys.stdin.read())  # the exercise's solution cell, loaded as the grader's sandbox loads it
    kernels = [(T._dx_row_kernel, {"BLOCK_N": 4096}),
               (T._column_sums_kernel, {"BLOCK_M": 32, "BLOCK_COLS": 32}),
               (T._dx_locked_kernel, {"BLOCK_N": 4096}),
               (T._dx_persistent_kernel, {"BLOCK_N": 16384, "ROWS": 1}),
               (T._dx_persistent_kernel, {"BLOCK_N": 512, "ROWS": 8}),
               (T._dx_prefetch_kernel, {"BLOCK_N": 2048, "ROWS": 2}),
               (T._dx_split_kernel, {"BLOCK_N": 8192, "ROWS": 1}),
               (T._sum_partials_kernel, {"BLOCK_P": 256, "BLOCK_COLS": 16}),  # an H200's, N = 512
               (cell["_ln_bwd_rows"], {"CHUNK": 1024}),
               (cell["_ln_bwd_columns"], {"WIDTH": 128, "DEPTH": 8})]
    built = []
    for dtype in ("fp32", "fp16", "bf16"):
        p = {name: "*" + dtype for name in ("DX", "DY", "X", "GAMMA", "DGAMMA", "DBETA", "W", "DW", "DB")}
        p.update({name: "*fp32" for name in ("MEAN", "RSTD", "PART", "MU", "RS", "PARTIAL")}, LOCKS="*i32")
        built += [f"{dtype}/{name}" for name in compile_both_builds(kernels, p)]
    print(json.dumps(built))
''')


def test_every_kernel_compiles_for_a_gpu(root):
    """Triton in compiled mode (TRITON_INTERPRET=0) builds each kernel for sm_90, with no GPU needed."""
    env = child_env(TRITON_INTERPRET="0")
    source = solution_source("06-triton", "layernorm_backward_triton")
    done = subprocess.run([sys.executable, "-c", COMPILE], input=source, cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(json.loads(done.stdout.splitlines()[-1])) == 3 * 10 * 2


ROW_SUMS = textwrap.dedent(r'''
    import json, re
    from normgrad import triton_layernorm as T
    from normgrad.gpu_compile import compile_for_gpu, persistent_pointers
    found = []
    for dtype in ("fp32", "bf16"):
        p = persistent_pointers(dtype)
        for block_n, rows, warps in ((8192, 1, 32), (8192, 1, 16), (512, 4, 4)):
            for aligned in (False, True):
                ir = compile_for_gpu(T._dx_split_kernel, p, {"BLOCK_N": block_n, "ROWS": rows}, warps,
                                     aligned=aligned).asm["ttgir"]
                sums = re.findall(r'"tt.reduce"\(%\w+\) <\{axis = 1 : i32\}>.*?\) : \((tensor<[^)]*?>)\)', ir, re.S)
                found.append(sums)
    print(json.dumps(found))
''')


def test_both_programs_of_a_pair_sum_each_half_of_a_row_alike(root):
    """v5's two programs of a pair each add a sum over their own half and one over their partner's; they get
    the same c1 and c2 to the bit only if both halves are reduced over the same layout (the same tree of
    additions). Compiled for sm_90: the four row sums of every launch share one layout."""
    done = subprocess.run([sys.executable, "-c", ROW_SUMS], cwd=root, env=child_env(TRITON_INTERPRET="0"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for sums in json.loads(done.stdout.splitlines()[-1]):
        assert len(sums) == 4 and len(set(sums)) == 1, sums


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(37, 1100), (21, 777), (4, 2)])
def test_rung_5_split_matches_the_oracle_at_any_width(shape, dtype):
    """v5 made to split rows that would fit (the split kernel itself, odd widths, two columns)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    truncated = device == "cpu" and dtype == torch.bfloat16
    trial = backward_trial("layer", shape, dtype, truncated=truncated)(np.random.default_rng(7), device)
    assert trial.judge(triton_layernorm.layernorm_backward_split(*trial.args, split=True), trial.expected) == []
    assert not triton_layernorm.splits(*trial.args)  # where rows fit, v5 is v4 unless told


def test_rung_5_splits_the_rows_no_launch_of_rung_4_holds():
    """Without a GPU, from SPLIT_FROM columns; the plan says so, and programs come in pairs."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    trial = backward_trial("layer", (3, 16384), torch.float32)(np.random.default_rng(8), device)
    if device == "cpu":
        assert triton_layernorm.splits(*trial.args)
    plan = triton_layernorm.persistent_plan(*trial.args, version="v5 split")
    assert plan["split"] == triton_layernorm.splits(*trial.args)
    if plan["split"]:
        assert plan["BLOCK_N"] == 8192 and plan["programs"] % 2 == 0
    assert trial.judge(triton_layernorm.layernorm_backward_split(*trial.args), trial.expected) == []
    with pytest.raises(ValueError, match="one column"):
        x = torch.ones(3, 1, device=device)
        triton_layernorm.layernorm_backward_split(x, x, torch.ones(1, device=device), x[:, 0], x[:, 0], split=True)


@pytest.mark.parametrize("spilled,split", [(0, False), (2, False), (16, False), (17, True), (66, True), (100, True)])
def test_on_a_gpu_rung_5_splits_where_rung_4_s_launch_spills_more_than_a_few_words(monkeypatch, spilled, split):
    """On the H200 (gpu-results/run-4) v4 spilling 2 words (float32, N = 8192) lost less than splitting did;
    66 and 100 words (N = 16384) lost more. What the compiler reports is stood in for here."""
    T = triton_layernorm
    monkeypatch.setattr(T, "_stand_in", lambda device, dtype: None)
    monkeypatch.setattr(T, "launch_plan", lambda kernel, args, block_n: (1, 16))
    monkeypatch.setattr(T, "compiled_usage", lambda kernel, args, block_n, rows, warps: {"spilled": spilled})
    x = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float32, stride=lambda dim: 8192)
    assert T._splits(None, x, None, None, None, 4, 8192, 8192) is split


def test_rung_5_decides_whether_to_split_once_per_shape_not_at_every_call(monkeypatch):
    """Deciding at every call cost v5 10 to 40 us a call more than v4 at M = 4096 on the H200 (gpu-results/run-3),
    where a call is host time: the choice is kept with the launch, as v3's and v4's are."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    T = triton_layernorm
    monkeypatch.setattr(T, "_LAUNCHES", {})
    decided = []
    monkeypatch.setattr(T, "_splits", lambda *prepared: decided.append(prepared[-1]) or True)
    trial = backward_trial("layer", (5, 300), torch.float32)(np.random.default_rng(9), device)
    for _ in range(3):
        assert trial.judge(T.layernorm_backward_split(*trial.args), trial.expected) == []
    assert decided == [512]  # the split kernel, decided for once
    T.layernorm_backward_split(*trial.args, split=False)  # an override is a launch of its own, decided by it
    wider = backward_trial("layer", (5, 700), torch.float32)(np.random.default_rng(9), device)
    T.layernorm_backward_split(*wider.args)
    assert decided == [512, 1024]


# --- the benchmark without a GPU (its results file, targets and figure: tests/test_benchmark.py) --------


def test_the_benchmark_without_a_gpu_says_so_and_writes_nothing(root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    done = subprocess.run([sys.executable, "-m", "normgrad.benchmark", "--out", str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "needs a CUDA GPU" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


H100 = {"max_num_regs": 65536, "max_shared_mem": 232448}


def test_programs_fit_the_registers_and_shared_memory_and_leave_16_rows_each():
    assert triton_layernorm.resident_programs(128, 32, 8, H100) == 2      # 128 x 256 threads: half the registers
    assert triton_layernorm.resident_programs(130, 32, 8, H100) == 1      # 136 a thread: registers go 256 a warp
    assert triton_layernorm.resident_programs(64, 0, 32, H100) == 1       # 32 warps: all of them
    assert triton_layernorm.resident_programs(32, 100_000, 4, H100) == 2  # shared memory runs out first
    assert triton_layernorm.resident_programs(16, 0, 2, H100) == 32       # at most 64 warps per multiprocessor
    assert triton_layernorm.resident_programs(16, 0, 1, H100) == 32       # and at most 32 programs
    assert triton_layernorm.programs_to_launch(132, 2, 16384) == 264
    assert triton_layernorm.programs_to_launch(132, 2, 4096) == 256       # 16 rows each
    assert triton_layernorm.programs_to_launch(132, 2, 5) == 1


@pytest.mark.parametrize("block_n", [16, 512, 1024, 4096, 8192, 16384, 65536])
def test_the_launches_weighed_step_1024_to_8192_elements_at_8_or_16_per_thread(block_n):
    launches = triton_layernorm.launch_candidates(block_n)
    interpreted = triton_layernorm.rows_for(block_n)
    assert (interpreted, triton_layernorm.warps_for(interpreted * block_n)) in launches
    assert len(set(launches)) == len(launches)
    assert len(launches) > 1 or block_n >= 16384  # from 16 384 on, 32 warps hold 16 elements each or more
    for rows, warps in launches:
        step = rows * block_n
        assert 1 <= warps <= 32 and rows >= 1 and rows & (rows - 1) == 0
        assert 1024 <= step <= 8192 or rows == 1
        assert step // (32 * warps) in triton_layernorm.PER_THREAD or block_n > 16384


# What ptxas 13.0 (Triton 3.6, the GPU machines' version, in .gpu-rehearsal/) made of v3's kernel in bfloat16 at
# 4096 columns, by (ROWS, num_warps), for a row length that is not a multiple of 16 (one element per load):
# registers per thread, no spills. (Where N is a multiple of 16 it needs 64, 128, 64 and 104; Triton 3.7.1's
# needs 128 at (1, 8) either way.)
TRITON_3_6_AT_4096 = {(1, 16): 90, (1, 8): 148, (2, 32): 64, (2, 16): 128}
TRITON_3_6_AT_4096_ALIGNED = {(1, 16): 64, (1, 8): 128, (2, 32): 64, (2, 16): 104}


def _usages(registers: dict, block_n: int = 4096, spilled: dict | None = None) -> list[dict]:
    return [{"BLOCK_N": block_n, "ROWS": r, "num_warps": w, "registers": n, "spilled": (spilled or {}).get((r, w), 0),
             "shared_bytes": 32} for (r, w), n in registers.items()]


def test_the_launcher_takes_the_launch_with_most_in_flight_then_most_programs_then_warps():
    chosen = triton_layernorm.choose_launch(_usages(TRITON_3_6_AT_4096), H100)
    # (1, 8) at 148 registers: one program of 8 warps, 4096 elements of x in flight on a multiprocessor; (2, 32)
    # and (2, 16) hold 8192, and (2, 32) has the more warps
    assert (chosen["ROWS"], chosen["num_warps"], chosen["programs_per_multiprocessor"]) == (2, 32, 1)
    spilling = triton_layernorm.choose_launch(_usages(TRITON_3_6_AT_4096, spilled={(2, 32): 4, (2, 16): 8}), H100)
    assert (spilling["ROWS"], spilling["num_warps"]) == (1, 16)  # no spills first: 96 registers, 1 program
    ties = triton_layernorm.choose_launch(_usages({(2, 4): 64, (4, 8): 64}, block_n=512), H100)
    assert (ties["ROWS"], ties["programs_per_multiprocessor"]) == (2, 8)  # 8192 in flight both: more programs


CHOOSE = textwrap.dedent('''
    import json
    from normgrad import triton_layernorm as T
    from normgrad.gpu_compile import persistent_kernel_usage
    H100 = {"max_num_regs": 65536, "max_shared_mem": 232448}
    found = {}
    for aligned in (True, False):
        for dtype in ("fp32", "fp16"):
            for b in (512, 4096, 8192):
                usage = persistent_kernel_usage([(dtype, b, r, w) for r, w in T.launch_candidates(b)],
                                                aligned=aligned)
                rows = T.rows_for(b)
                interpreted = [u for u in usage if (u["ROWS"], u["num_warps"]) == (rows, T.warps_for(rows * b))]
                found[f"{aligned}/{dtype}/{b}"] = [
                    {k: u[k] for k in ("ROWS", "spilled", "registers", "programs_per_multiprocessor")}
                    for u in (T.choose_launch(usage, H100), T.choose_launch(interpreted, H100))]
    print(json.dumps(found))
''')


def test_the_launch_taken_on_what_the_compiler_reports_spills_nothing_and_loads_no_less(root):
    """ptxas's figures for sm_90, fed to the launcher's choice, for N a multiple of 16 (16-byte loads) and
    not: below 16 384 columns nothing spills, and a multiprocessor keeps at least as much of x in flight as
    with the interpreter's launch; twice as much at 512 columns not a multiple of 16, where that launch's
    146 registers leave room for one program."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU the launcher itself chooses so, at every call, and the benchmark records it")
    done = subprocess.run([sys.executable, "-c", CHOOSE], cwd=root, env=child_env(TRITON_INTERPRET="0"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for where, (taken, interpreted) in json.loads(done.stdout.splitlines()[-1]).items():
        aligned, width = where.split("/")[0] == "True", int(where.split("/")[2])
        assert taken["spilled"] == 0, where
        in_flight = [u["programs_per_multiprocessor"] * u["ROWS"] * width for u in (taken, interpreted)]
        assert in_flight[0] >= in_flight[1] * (2 if width == 512 and not aligned else 1), (where, in_flight)
        if width == 512 and not aligned:
            assert interpreted["registers"] > 128 and interpreted["programs_per_multiprocessor"] == 1, where


def test_on_a_gpu_the_launcher_compiles_each_candidate_and_takes_the_choice(monkeypatch):
    """The launcher's GPU path, with Triton's compiler and driver standing in: what it reads, what it keeps,
    and the interpreter's launch when Triton's internals are not what it expects."""
    import triton
    T = triton_layernorm
    registers = {**{launch: 128 for launch in T.launch_candidates(4096)}, **TRITON_3_6_AT_4096}
    compiled = []

    def warmup(*args, BLOCK_N, ROWS, num_warps, grid):
        compiled.append((ROWS, num_warps))
        return SimpleNamespace(n_regs=registers[(ROWS, num_warps)], n_spills=0, metadata=SimpleNamespace(shared=32),
                               _init_handles=lambda: None)

    monkeypatch.setattr(T._dx_persistent_kernel, "warmup", warmup, raising=False)
    driver = SimpleNamespace(active=SimpleNamespace(utils=SimpleNamespace(get_device_properties=lambda index: H100)))
    monkeypatch.setattr(triton.runtime, "driver", driver)
    monkeypatch.setattr(T, "_USAGE", {})
    monkeypatch.setattr(T, "_CHOSEN", {})
    gpu = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.bfloat16)  # x, as far as the launcher looks
    args = (None, None, None, gpu)
    kernel = T._dx_persistent_kernel
    assert T.launch_plan(kernel, args, 4096) == (2, 32)
    assert sorted(compiled) == sorted(T.launch_candidates(4096))
    assert T.launch_plan(kernel, args, 4096) == (2, 32) and len(compiled) == len(T.launch_candidates(4096))  # kept
    assert T.compiled_usage(kernel, args, 4096, 2, 32)["programs_per_multiprocessor"] == 1
    assert T.compiled_usage(kernel, args, 4096, 1, 8)["programs_per_multiprocessor"] == 1  # 148 registers

    def refuses(*args, BLOCK_N, ROWS, num_warps, grid):  # a compiler that refuses every launch but one
        if (ROWS, num_warps) != (2, 16):
            raise RuntimeError("out of resources")
        return warmup(*args, BLOCK_N=BLOCK_N, ROWS=ROWS, num_warps=num_warps, grid=grid)

    def by_alignment(*args, BLOCK_N, ROWS, num_warps, grid):  # N (args[4]) a multiple of 16 or not
        registers.update(TRITON_3_6_AT_4096_ALIGNED if args[4] % 16 == 0 else TRITON_3_6_AT_4096)
        return warmup(*args, BLOCK_N=BLOCK_N, ROWS=ROWS, num_warps=num_warps, grid=grid)

    monkeypatch.setattr(T._dx_persistent_kernel, "warmup", by_alignment, raising=False)
    compiled.clear()
    wide = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float32)
    assert T.launch_plan(kernel, (None, None, None, wide, 4090), 4096) == (2, 32)  # 148 registers at (1, 8)
    assert T.launch_plan(kernel, (None, None, None, wide, 4096), 4096) == (1, 16)  # 128: 2 programs, more warps
    assert sorted(compiled) == sorted(T.launch_candidates(4096) * 2)  # each specialization compiled for once

    monkeypatch.setattr(T._dx_persistent_kernel, "warmup", refuses, raising=False)
    half = SimpleNamespace(device=torch.device("cuda", 0), dtype=torch.float16)  # not chosen for yet
    assert T.launch_plan(kernel, (None, None, None, half), 4096) == (2, 16)

    def differs(*args, **kwargs):
        raise AttributeError("this Triton's warmup is not the one the launcher knows")

    monkeypatch.setattr(T._dx_persistent_kernel, "warmup", differs, raising=False)
    assert T.launch_plan(kernel, args, 1024) == (4, 8)  # the interpreter's
    assert T.compiled_usage(kernel, args, 1024, 4, 8) is None


def test_the_sweep_runs_each_launch_through_the_interpreter_and_writes_what_it_timed(tmp_path, capsys):
    from normgrad import benchmark

    if torch.cuda.is_available():
        pytest.skip("on a GPU the kernels are compiled for it, and `--sweep` runs for real")
    assert benchmark.main(["--sweep", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    [path] = tmp_path.glob("sweep-dry-run-*.json")
    assert lines[-1] == f"wrote {path}"
    found = json.loads(path.read_text())
    shapes = len(benchmark.DRY_ROWS) * len(benchmark.DRY_COLUMNS)
    swept = ("v3 persistent", "v4 prefetch")  # v5 splits none of these rows: it is v4 there, not timed twice
    assert len(found["shapes"]) == len(lines) - 1 == len(swept) * shapes
    assert {s["impl"] for s in found["shapes"]} == set(swept)
    assert found["skipped"] == [] and found["dry_run"] and found["impls"] == list(benchmark.PERSISTENT)
    for shape in found["shapes"]:
        weighed = triton_layernorm.launch_candidates(triton_layernorm.triton.next_power_of_2(shape["N"]))
        timed = {(t["ROWS"], t["num_warps"]) for t in shape["timings"]}
        assert set(weighed) <= timed and (shape["taken"]["ROWS"], shape["taken"]["num_warps"]) in timed
        assert all(t["ms"] > 0 for t in shape["timings"]) and shape["taken"]["ms"] > 0
        assert shape["best"]["ms"] == min(t["ms"] for t in shape["timings"])
        reduction = shape["reduction"]  # the second reduction alone, at its launch and at every one swept
        assert len(reduction["timings"]) == len(benchmark.REDUCTION_COLUMNS) * len(benchmark.REDUCTION_STEPS)
        assert reduction["taken"]["ms"] > 0 and reduction["best"]["ms"] == min(t["ms"] for t in reduction["timings"])
    assert all("the launcher's rows=" in line and "; best " in line and "; second reduction " in line
               for line in lines[:-1]), lines
    assert "stopped_after" not in found  # the finished file replaced the ones written after each shape


def test_a_launch_that_fails_in_the_sweep_is_listed_with_its_error_and_a_stopped_sweep_keeps_its_shapes(
        tmp_path, monkeypatch):
    """On the GPU a launch the launcher would never take may ask for more than a multiprocessor holds: the sweep
    lists it and goes on. And a sweep killed midway leaves the shapes it timed, in a whole file."""
    from normgrad import benchmark

    if torch.cuda.is_available():
        pytest.skip("on a GPU `--sweep` runs for real")
    monkeypatch.setattr(benchmark, "DRY_ROWS", (20,))
    monkeypatch.setattr(benchmark, "DRY_COLUMNS", (48,))
    v3 = triton_layernorm.VERSIONS["v3 persistent"]

    def out_of_resources(*args, num_warps=None, **kwargs):
        if num_warps == 16:
            raise RuntimeError("out of resource: shared memory, Required: 300000, Hardware limit: 232448")
        return v3(*args, num_warps=num_warps, **kwargs)

    monkeypatch.setitem(triton_layernorm.VERSIONS, "v3 persistent", out_of_resources)
    kept = []

    def stop_after_the_first_shape(results, done):
        kept.append(json.loads(json.dumps(dict(results, stopped_after=done))))
        raise KeyboardInterrupt  # where a kill would stop it

    with pytest.raises(KeyboardInterrupt):
        benchmark.sweep(dry_run=True, log=lambda line: None, checkpoint=stop_after_the_first_shape)
    [found] = kept
    assert found["stopped_after"] == "M=20 N=48" and [s["impl"] for s in found["shapes"]] == ["v3 persistent",
                                                                                              "v4 prefetch"]
    timings = found["shapes"][0]["timings"]
    failed = [t for t in timings if "error" in t]
    assert failed and all(t["num_warps"] == 16 and "ms" not in t for t in failed)
    assert all(t["error"] == "RuntimeError: out of resource: shared memory, Required: 300000, Hardware limit: "
                             "232448" for t in failed)
    assert found["shapes"][0]["best"]["ms"] == min(t["ms"] for t in timings if "ms" in t)
    assert not any("error" in t for t in found["shapes"][1]["timings"])  # v4's launches all ran


def test_a_sweep_out_of_time_lists_the_shapes_it_did_not_reach():
    from normgrad import benchmark

    if torch.cuda.is_available():
        pytest.skip("on a GPU `--sweep` runs for real")
    found = benchmark.sweep(dry_run=True, budget_s=0.0, log=lambda line: None)
    assert found["shapes"] == []
    assert [(x["M"], x["N"]) for x in found["skipped"]] == [(m, n) for m in benchmark.DRY_ROWS
                                                            for n in benchmark.DRY_COLUMNS]


def test_the_second_reduction_gives_every_multiprocessor_two_programs_where_n_allows_and_sums_right():
    T = triton_layernorm
    # the first H200 run's shapes: 1584 partial rows of 512 columns had 16 programs of 25 steps; now 32 of 7
    assert T.reduction_launch(1584, 512, 132) == (256, 16)
    assert T.reduction_launch(264, 4096, 132) == (256, 16)  # 256 programs
    assert T.reduction_launch(132, 16384, 132) == (128, 32)  # 512 programs: 64 columns would give 256
    assert T.reduction_launch(3, 4096, 1) == (4, 64)  # the interpreter: one program at a time, the widest block
    # the H200's launch for 300 partial rows of 517 columns, interpreted: masks on both axes, two steps
    p, n = 300, 517
    block_p, block_cols = T.reduction_launch(p, n, 132)
    assert (block_p, block_cols, -(-n // block_cols)) == (256, 16, 33)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # compiled on a GPU: its pointers must be the GPU's
    part = torch.from_numpy(np.random.default_rng(7).standard_normal((2, p, n)).astype(np.float32)).to(device)
    dgamma, dbeta = torch.empty(n, device=device), torch.empty(n, device=device)
    T._sum_partials_kernel[(-(-n // block_cols),)](dgamma, dbeta, part, p, n, BLOCK_P=block_p, BLOCK_COLS=block_cols)
    part, dgamma, dbeta = part.cpu(), dgamma.cpu(), dbeta.cpu()
    want = part.double().sum(dim=1)
    room = part.double().abs().sum(dim=1) * p * 2.0**-24  # float32 sums of p terms, in any order
    assert ((torch.stack([dgamma, dbeta]).double() - want).abs() <= room).all()
