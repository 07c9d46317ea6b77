"""Compiling Triton kernels for an NVIDIA GPU on a machine without one: what only the compiler can tell.

Triton's interpreter (TRITON_INTERPRET=1) runs a kernel as Python and never
compiles it, so it cannot say whether the compiler accepts the kernel, nor how
many registers a program needs or whether values spill to memory. Triton's
own compiler can still build PTX and a cubin for an sm_90 GPU (an H100) with
no GPU present, and the ptxas it ships reports registers and spills.

A process picks compiled or interpreted Triton when it first decorates a
kernel, so `persistent_kernel_usage` runs the compiler in a fresh process
(`python -m normgrad.gpu_compile`) with TRITON_INTERPRET=0.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_for_gpu(kernel, pointers: dict[str, str], constexprs: dict, num_warps: int = 4, capability: int = 90,
                    *, aligned: bool):
    """Compile a @triton.jit kernel for CUDA compute capability `capability`; returns Triton's compiled kernel.

    `pointers` gives the type of each pointer argument ("*bf16", "*fp32", ...); the
    other arguments that are not in `constexprs` are 32-bit integers. The JIT on a
    GPU builds one kernel for each pattern of which pointers start on 16 bytes and
    which integers are multiples of 16; `aligned` picks the build for all of them
    (torch's allocations, with N and the row stride multiples of 16, as in every
    shape the benchmark times), which knows rows start on 16 bytes and loads 16
    bytes at a time; else the build for none, which loads one element at a time.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {a: "constexpr" if a in constexprs else pointers.get(a, "i32") for a in kernel.arg_names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, a in enumerate(kernel.arg_names) if a not in constexprs}
    return triton.compile(ASTSource(kernel, signature, constexprs, attrs if aligned else None),
                          target=GPUTarget("cuda", capability, 32), options={"num_warps": num_warps})


def compile_both_builds(kernels: list[tuple], pointers: dict[str, str], num_warps: int = 8) -> list[str]:
    """Compile each (kernel, constexprs) for sm_90 in both of the JIT's builds (every pointer and integer a
    multiple of 16, and none; see compile_for_gpu); returns "kernel/aligned" for each build, in order."""
    built = []
    for kernel, constexprs in kernels:
        for aligned in (False, True):
            compile_for_gpu(kernel, pointers, constexprs, num_warps, aligned=aligned)
            built.append(f"{kernel.fn.__name__}/{aligned}")
    return built


def ptxas_usage(compiled) -> tuple[int, int]:
    """(registers per thread, bytes of spill stores per thread) that Triton's bundled ptxas reports."""
    import triton

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    ptx = compiled.asm["ptx"]
    arch = re.search(r"^\.target\s+(\w+)", ptx, re.M).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        done = subprocess.run([str(ptxas), f"-arch={arch}", "-v", str(source), "-o", str(Path(tmp) / "kernel.cubin")],
                              capture_output=True, text=True, check=True)
    report = done.stdout + done.stderr
    return (int(re.search(r"Used (\d+) registers", report).group(1)),
            int(re.search(r"(\d+) bytes spill stores", report).group(1)))


def persistent_pointers(dtype: str) -> dict[str, str]:
    """The pointer types of chapter 6's persistent kernels (v3's, v4's, v5's) for x in `dtype` ("bf16", ...)."""
    return {**{name: f"*{dtype}" for name in ("DX", "DY", "X", "GAMMA")}, "MEAN": "*fp32", "RSTD": "*fp32",
            "PART": "*fp32"}


def persistent_kernel_usage(configs: list[tuple[str, int, int, int]], kernel: str = "_dx_persistent_kernel",
                            *, aligned: bool) -> list[dict]:
    """For each (dtype, BLOCK_N, ROWS, num_warps): chapter 6's persistent kernel (or `kernel`, the name of
    another with its arguments, v4's) compiled for sm_90, as triton_layernorm.choose_launch reads it:
    registers per thread, spilled (bytes of spill stores per thread) and shared_bytes per program.
    `aligned`: the build for N and the row stride multiples of 16, or for neither (see compile_for_gpu)."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    done = subprocess.run([sys.executable, "-m", "normgrad.gpu_compile"], cwd=ROOT, env=env, capture_output=True,
                          input=json.dumps([kernel, configs, aligned]), text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"compiling for the GPU failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def main() -> None:
    from . import triton_layernorm as T

    name, configs, aligned = json.load(sys.stdin)
    kernel = getattr(T, name)
    found = []
    for dtype, block_n, rows, num_warps in configs:
        compiled = compile_for_gpu(kernel, persistent_pointers(dtype), {"BLOCK_N": block_n, "ROWS": rows},
                                   num_warps, aligned=aligned)
        registers, spills = ptxas_usage(compiled)
        found.append({"dtype": dtype, "BLOCK_N": block_n, "ROWS": rows, "num_warps": num_warps,
                      "registers": registers, "spilled": spills, "shared_bytes": compiled.metadata.shared})
    print(json.dumps(found))


if __name__ == "__main__":
    main()
