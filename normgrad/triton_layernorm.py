"""Chapter 6: LayerNorm's backward pass as Triton kernels, four versions side by side, naive first.

    v1  rowwise     one program per row computes dx; dgamma and dbeta come from a
                    second kernel that reads x and dy again, column by column
    v2  locked      dx fused with the row's share of dgamma and dbeta, added into
                    one of GROUPS partial rows under a lock; a small kernel sums them
    v3  persistent  each program walks many rows and keeps its share of dgamma and
                    dbeta in float32 registers, written once at the end; a small
                    kernel sums those rows: no locks
    v4  prefetch    v3, with each step's loads issued one step ahead, so that they
                    are on their way while the step before does its arithmetic
    v5  split       v4 where a row fits in one program's registers; where it does
                    not, each row is split between a pair of programs, each of
                    which also reads its partner's half for the row sums

Every launcher has the signature of the exercise API (COURSE_API.md),
f(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta), for x and dy of shape
(M, N) in float32, float16 or bfloat16; mean and rstd of shape (M,) (float32
for the 16-bit types); gamma of shape (N,). Everything is computed in float32
and rounded once, when stored. The math, per row (chapter 4):

    x_hat = (x - mean) * rstd          g = dy * gamma
    c1 = sum_j g_j / N                 c2 = sum_j g_j x_hat_j / N
    dx = rstd * (g - c1 - x_hat * c2)
    dgamma = sum over rows of dy * x_hat,   dbeta = sum over rows of dy

On a machine without CUDA, importing this module switches Triton to its
interpreter (TRITON_INTERPRET=1), which runs the same kernels on the CPU, one
program at a time. `python -m normgrad.benchmark` (or `make bench`)
checks every version against the float64 oracle and times them on a GPU.
"""

from __future__ import annotations

import functools
import os

import torch

if not torch.cuda.is_available():  # must happen before @triton.jit: it binds a kernel to one or the other
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from normgrad.calling import fit_triton_interpreter  # noqa: E402  (absolute: chapters run this source as a cell)

fit_triton_interpreter()  # where the interpreter runs: as strict as the language, and beside any NumPy

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --- v1: one program per row ------------------------------------------------------------------

@triton.jit
def _dx_row_kernel(
    DX,      # (M, N) out: dL/dx, in x's dtype
    DY,      # (M, N) upstream gradient dL/dy
    X,       # (M, N) the forward pass's input
    GAMMA,   # (N,)   scale
    MEAN,    # (M,)   each row's mean, from the forward pass
    RSTD,    # (M,)   each row's 1 / sqrt(var + eps)
    N,       # columns (features)
    stride,  # elements between the starts of two rows of DX, DY and X
    BLOCK_N: tl.constexpr,  # a power of two >= N: the whole row is one block
):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    inside = cols < N  # the block overhangs the row when N is not a power of two
    # other=0 for dy makes the overhang contribute nothing to the sums below
    dy = tl.load(DY + row * stride + cols, mask=inside, other=0.0).to(tl.float32)
    x = tl.load(X + row * stride + cols, mask=inside, other=0.0).to(tl.float32)
    gamma = tl.load(GAMMA + cols, mask=inside, other=0.0).to(tl.float32)
    mean = tl.load(MEAN + row).to(tl.float32)
    rstd = tl.load(RSTD + row).to(tl.float32)
    x_hat = (x - mean) * rstd         # BLOCK_N; nonzero in the overhang, where g is 0
    g = dy * gamma                    # BLOCK_N
    c1 = tl.sum(g, axis=0) / N        # scalar: the path through the mean
    c2 = tl.sum(g * x_hat, axis=0) / N  # scalar: the path through the variance
    dx = (g - c1 - x_hat * c2) * rstd
    tl.store(DX + row * stride + cols, dx, mask=inside)


@triton.jit
def _column_sums_kernel(
    DGAMMA,  # (N,)   out: sum over rows of dy * x_hat, in gamma's dtype
    DBETA,   # (N,)   out: sum over rows of dy, in gamma's dtype
    DY,      # (M, N) upstream gradient
    X,       # (M, N) input
    MEAN,    # (M,)
    RSTD,    # (M,)
    M, N,    # rows, columns
    stride,  # elements between the starts of two rows
    BLOCK_M: tl.constexpr,  # rows read per step
    BLOCK_COLS: tl.constexpr,  # columns this program owns
):
    cols = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_inside = cols < N
    dgamma = tl.zeros([BLOCK_M, BLOCK_COLS], dtype=tl.float32)
    dbeta = tl.zeros([BLOCK_M, BLOCK_COLS], dtype=tl.float32)
    for start in range(0, M, BLOCK_M):  # every row, a tile at a time: x and dy are read a second time
        rows = start + tl.arange(0, BLOCK_M)
        inside = (rows < M)[:, None] & col_inside[None, :]
        offsets = rows[:, None] * stride + cols[None, :]
        dy = tl.load(DY + offsets, mask=inside, other=0.0).to(tl.float32)
        x = tl.load(X + offsets, mask=inside, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=rows < M, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=rows < M, other=0.0).to(tl.float32)
        dgamma += dy * ((x - mean[:, None]) * rstd[:, None])
        dbeta += dy
    tl.store(DGAMMA + cols, tl.sum(dgamma, axis=0), mask=col_inside)
    tl.store(DBETA + cols, tl.sum(dbeta, axis=0), mask=col_inside)


# --- v2: fused, partial sums under a lock ------------------------------------------------------

@triton.jit
def _dx_locked_kernel(
    DX,      # (M, N) out: dL/dx
    PART,    # (2, GROUPS, N) float32: running sums of dy * x_hat (0) and dy (1) per group of rows
    LOCKS,   # (2, GROUPS) int32, zeroed: a lock per group (0 free, 1 held), then a count per group
    DY,      # (M, N) upstream gradient
    X,       # (M, N) input
    GAMMA,   # (N,)
    MEAN,    # (M,)
    RSTD,    # (M,)
    N,       # columns
    stride,  # elements between the starts of two rows
    GROUPS,  # rows r, r + GROUPS, r + 2 GROUPS, ... share one partial row
    BLOCK_N: tl.constexpr,
):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    inside = cols < N
    dy = tl.load(DY + row * stride + cols, mask=inside, other=0.0).to(tl.float32)
    x = tl.load(X + row * stride + cols, mask=inside, other=0.0).to(tl.float32)
    gamma = tl.load(GAMMA + cols, mask=inside, other=0.0).to(tl.float32)
    mean = tl.load(MEAN + row).to(tl.float32)
    rstd = tl.load(RSTD + row).to(tl.float32)
    x_hat = (x - mean) * rstd
    g = dy * gamma
    c1 = tl.sum(g, axis=0) / N
    c2 = tl.sum(g * x_hat, axis=0) / N
    tl.store(DX + row * stride + cols, (g - c1 - x_hat * c2) * rstd, mask=inside)

    # This row's share of dgamma and dbeta joins its group's partial row.
    share_gamma = dy * x_hat  # BLOCK_N, float32
    share_beta = dy
    group = row % GROUPS
    lock = LOCKS + group
    count = LOCKS + GROUPS + group
    part_gamma = PART + group * N + cols
    part_beta = PART + (GROUPS + group) * N + cols
    while tl.atomic_cas(lock, 0, 1) == 1:  # spin until this program holds the group's lock
        pass
    if tl.load(count) == 0:  # first visitor: the partial row is uninitialized memory, overwrite it
        tl.atomic_xchg(count, 1)
    else:  # later visitors add to what the earlier ones left
        share_gamma += tl.load(part_gamma, mask=inside, other=0.0)
        share_beta += tl.load(part_beta, mask=inside, other=0.0)
    tl.store(part_gamma, share_gamma, mask=inside)
    tl.store(part_beta, share_beta, mask=inside)
    tl.debug_barrier()  # every thread of the program has stored its slice before the lock is let go
    tl.atomic_xchg(lock, 0)


# --- v3: persistent, partial sums in registers -------------------------------------------------

@triton.jit
def _dx_persistent_kernel(
    DX,      # (M, N) out: dL/dx
    PART,    # (2, P, N) float32 out: this program's sums of dy * x_hat (0) and dy (1)
    DY,      # (M, N) upstream gradient
    X,       # (M, N) input
    GAMMA,   # (N,)
    MEAN,    # (M,)
    RSTD,    # (M,)
    M, N,    # rows, columns
    stride,  # elements between the starts of two rows
    BLOCK_N: tl.constexpr,
    ROWS: tl.constexpr,  # rows per step: more than 1 when rows are short, to keep enough bytes in flight
):
    program = tl.program_id(0)
    programs = tl.num_programs(0)  # P
    cols = tl.arange(0, BLOCK_N)
    col_inside = cols < N
    gamma = tl.load(GAMMA + cols, mask=col_inside, other=0.0).to(tl.float32)  # read once, kept for every row
    dgamma = tl.zeros([BLOCK_N], dtype=tl.float32)  # this program's partial sums, in registers
    dbeta = tl.zeros([BLOCK_N], dtype=tl.float32)
    # steps of ROWS rows, starting at rows program * ROWS, (program + P) * ROWS, (program + 2P) * ROWS, ...
    for first in range(program * ROWS, M, programs * ROWS):
        rows = first + tl.arange(0, ROWS)                       # ROWS
        row_inside = rows < M
        inside = row_inside[:, None] & col_inside[None, :]     # ROWS, BLOCK_N
        offsets = rows[:, None] * stride + cols[None, :]
        dy = tl.load(DY + offsets, mask=inside, other=0.0).to(tl.float32)
        x = tl.load(X + offsets, mask=inside, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=row_inside, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_inside, other=0.0).to(tl.float32)
        x_hat = (x - mean[:, None]) * rstd[:, None]             # ROWS, BLOCK_N
        g = dy * gamma[None, :]
        c1 = tl.sum(g, axis=1) / N                              # ROWS
        c2 = tl.sum(g * x_hat, axis=1) / N
        tl.store(DX + offsets, (g - c1[:, None] - x_hat * c2[:, None]) * rstd[:, None], mask=inside)
        dgamma += tl.sum(dy * x_hat, axis=0)                    # BLOCK_N: this step's rows added in
        dbeta += tl.sum(dy, axis=0)
    tl.store(PART + program * N + cols, dgamma, mask=col_inside)  # one write per program: nobody else owns this row
    tl.store(PART + (programs + program) * N + cols, dbeta, mask=col_inside)


# --- v4: persistent, the next step's loads in flight during this step's arithmetic --------------

@triton.jit
def _dx_prefetch_kernel(
    DX, PART, DY, X, GAMMA, MEAN, RSTD,  # as v3's
    M, N, stride,
    BLOCK_N: tl.constexpr,
    ROWS: tl.constexpr,
):
    program = tl.program_id(0)
    programs = tl.num_programs(0)
    cols = tl.arange(0, BLOCK_N)
    col_inside = cols < N
    gamma = tl.load(GAMMA + cols, mask=col_inside, other=0.0).to(tl.float32)
    dgamma = tl.zeros([BLOCK_N], dtype=tl.float32)
    dbeta = tl.zeros([BLOCK_N], dtype=tl.float32)
    # the first step's rows are loaded before the loop; in x's dtype, as they come from memory
    rows = program * ROWS + tl.arange(0, ROWS)
    inside = (rows < M)[:, None] & col_inside[None, :]
    dy_ahead = tl.load(DY + rows[:, None] * stride + cols[None, :], mask=inside, other=0.0)
    x_ahead = tl.load(X + rows[:, None] * stride + cols[None, :], mask=inside, other=0.0)
    for first in range(program * ROWS, M, programs * ROWS):
        rows = first + tl.arange(0, ROWS)
        row_inside = rows < M
        inside = row_inside[:, None] & col_inside[None, :]
        offsets = rows[:, None] * stride + cols[None, :]
        dy = dy_ahead.to(tl.float32)  # this step's rows, loaded one step ago
        x = x_ahead.to(tl.float32)
        # the next step's loads go out now and travel while this step computes (masked off past the end)
        later = rows + programs * ROWS
        later_inside = (later < M)[:, None] & col_inside[None, :]
        dy_ahead = tl.load(DY + later[:, None] * stride + cols[None, :], mask=later_inside, other=0.0)
        x_ahead = tl.load(X + later[:, None] * stride + cols[None, :], mask=later_inside, other=0.0)
        mean = tl.load(MEAN + rows, mask=row_inside, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_inside, other=0.0).to(tl.float32)
        x_hat = (x - mean[:, None]) * rstd[:, None]
        g = dy * gamma[None, :]
        c1 = tl.sum(g, axis=1) / N
        c2 = tl.sum(g * x_hat, axis=1) / N
        tl.store(DX + offsets, (g - c1[:, None] - x_hat * c2[:, None]) * rstd[:, None], mask=inside)
        dgamma += tl.sum(dy * x_hat, axis=0)
        dbeta += tl.sum(dy, axis=0)
    tl.store(PART + program * N + cols, dgamma, mask=col_inside)
    tl.store(PART + (programs + program) * N + cols, dbeta, mask=col_inside)


# --- v5: rows too wide for one program, split between two -------------------------------------

@triton.jit
def _dx_split_kernel(
    DX, PART, DY, X, GAMMA, MEAN, RSTD,  # as v3's; PART has a row per pair of programs
    M, N, stride,
    BLOCK_N: tl.constexpr,  # half of the row's block: programs 2k and 2k + 1 own its first and second half
    ROWS: tl.constexpr,
):
    program = tl.program_id(0)
    pairs = tl.num_programs(0) // 2
    pair = program // 2
    own = (program % 2) * BLOCK_N + tl.arange(0, BLOCK_N)        # the columns this program computes
    other = (1 - program % 2) * BLOCK_N + tl.arange(0, BLOCK_N)  # its partner's, read only for the row sums
    own_inside = own < N
    other_inside = other < N
    gamma = tl.load(GAMMA + own, mask=own_inside, other=0.0).to(tl.float32)
    dgamma = tl.zeros([BLOCK_N], dtype=tl.float32)  # partial sums for this program's half only
    dbeta = tl.zeros([BLOCK_N], dtype=tl.float32)
    for first in range(pair * ROWS, M, pairs * ROWS):
        rows = first + tl.arange(0, ROWS)
        row_inside = rows < M
        inside = row_inside[:, None] & own_inside[None, :]
        offsets = rows[:, None] * stride + own[None, :]
        dy = tl.load(DY + offsets, mask=inside, other=0.0).to(tl.float32)
        x = tl.load(X + offsets, mask=inside, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=row_inside, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + rows, mask=row_inside, other=0.0).to(tl.float32)
        x_hat = (x - mean[:, None]) * rstd[:, None]
        g = dy * gamma[None, :]
        # the partner's half, read a second time (from L2 while the partner is near) and summed at once;
        # its gamma too is loaded again each step rather than held, to keep registers for this half
        there = rows[:, None] * stride + other[None, :]
        there_inside = row_inside[:, None] & other_inside[None, :]
        gamma_there = tl.load(GAMMA + other, mask=other_inside, other=0.0).to(tl.float32)
        g_there = tl.load(DY + there, mask=there_inside, other=0.0).to(tl.float32) * gamma_there[None, :]
        x_hat_there = (tl.load(X + there, mask=there_inside, other=0.0).to(tl.float32) - mean[:, None]) * rstd[:, None]
        # each half summed alike in both programs, and a + b == b + a: both get the same c1 and c2, to the bit
        c1 = (tl.sum(g, axis=1) + tl.sum(g_there, axis=1)) / N
        c2 = (tl.sum(g * x_hat, axis=1) + tl.sum(g_there * x_hat_there, axis=1)) / N
        tl.store(DX + offsets, (g - c1[:, None] - x_hat * c2[:, None]) * rstd[:, None], mask=inside)
        dgamma += tl.sum(dy * x_hat, axis=0)
        dbeta += tl.sum(dy, axis=0)
    tl.store(PART + pair * N + own, dgamma, mask=own_inside)  # the pair's partial row, each its own half
    tl.store(PART + (pairs + pair) * N + own, dbeta, mask=own_inside)


@triton.jit
def _sum_partials_kernel(
    DGAMMA,  # (N,) out, gamma's dtype
    DBETA,   # (N,) out, gamma's dtype
    PART,    # (2, P, N) float32 partial sums: dgamma's P rows, then dbeta's
    P, N,    # partial rows, columns
    BLOCK_P: tl.constexpr,  # partial rows read per step
    BLOCK_COLS: tl.constexpr,  # columns this program owns
):
    cols = tl.program_id(0) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    col_inside = cols < N
    dgamma = tl.zeros([BLOCK_P, BLOCK_COLS], dtype=tl.float32)
    dbeta = tl.zeros([BLOCK_P, BLOCK_COLS], dtype=tl.float32)
    for start in range(0, P, BLOCK_P):
        rows = start + tl.arange(0, BLOCK_P)
        inside = (rows < P)[:, None] & col_inside[None, :]
        dgamma += tl.load(PART + rows[:, None] * N + cols[None, :], mask=inside, other=0.0)
        dbeta += tl.load(PART + (P + rows[:, None]) * N + cols[None, :], mask=inside, other=0.0)
    tl.store(DGAMMA + cols, tl.sum(dgamma, axis=0), mask=col_inside)
    tl.store(DBETA + cols, tl.sum(dbeta, axis=0), mask=col_inside)


# --- launchers ----------------------------------------------------------------------------------

def _prepared(dy, x, gamma, mean, rstd):
    """The inputs, checked, as contiguous tensors; plus (M, N) and the block width."""
    if x.dim() != 2 or dy.shape != x.shape:
        raise ValueError(f"x and dy must be 2-D of the same shape, got {tuple(x.shape)} and {tuple(dy.shape)}")
    if x.dtype not in DTYPES or dy.dtype != x.dtype:
        raise TypeError(f"x and dy must share a dtype among {DTYPES}, got {x.dtype} and {dy.dtype}")
    m, n = x.shape
    if gamma.shape != (n,) or mean.shape != (m,) or rstd.shape != (m,):
        raise ValueError(f"gamma must have shape ({n},) and mean, rstd ({m},)")
    if x.numel() >= 2**31:
        raise ValueError("x has 2**31 elements or more: the kernels' offsets are 32-bit")
    block_n = triton.next_power_of_2(n)
    return dy.contiguous(), x.contiguous(), gamma.contiguous(), mean.contiguous(), rstd.contiguous(), m, n, block_n


def warps_for(elements: int) -> int:
    """Warps per program for blocks of this many elements: 16 elements per thread, 1 to 32 warps.

    v1's and v2's launch, and v3's where nothing was compiled to measure (the
    interpreter): at 16 elements of each block-sized tensor per thread the
    persistent kernel needs 80 to 150 registers per thread (ptxas, sm_90; the
    fewer where N is a multiple of 16, and the kernel loads 16 bytes at a time).
    """
    return min(max(elements // 512, 1), 32)


def rows_for(block_n: int) -> int:
    """v3's rows per step where nothing was compiled: enough that a step reads at least 4096 elements of x."""
    return max(1, 4096 // block_n)


REDUCTION_STEP = 4096  # partial-row entries each program of the second reduction loads per step, per sum


def reduction_launch(p: int, n: int, multiprocessors: int) -> tuple[int, int]:
    """The second reduction's (BLOCK_P, BLOCK_COLS) for P partial rows of n columns.

    Its P x N floats are few; what costs is latency, so the columns are cut
    narrow enough (down to 16: 64 contiguous bytes of each partial row) that
    every multiprocessor gets two programs where n allows, and each step reads
    REDUCTION_STEP entries of each sum, so that few steps follow one another.
    The first H200 run timed the earlier launch (always 32 columns and 64
    partial rows a step: 16 programs where N = 512) alone: chapter 6 quotes it.
    """
    block_cols = 64
    while block_cols > 16 and triton.cdiv(n, block_cols) < 2 * multiprocessors:
        block_cols //= 2
    return min(REDUCTION_STEP // block_cols, triton.next_power_of_2(p)), block_cols


@functools.lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 for the interpreter, which runs one program at a time."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1


def _sum_partials(part, p, n, gamma, launch: tuple[int, int] | None = None):
    """dgamma and dbeta from P partial rows; `launch` (BLOCK_P, BLOCK_COLS) overrides `reduction_launch`."""
    dgamma = torch.empty_like(gamma)
    dbeta = torch.empty_like(gamma)
    block_p, block_cols = launch or reduction_launch(p, n, _multiprocessors(part.device))
    _sum_partials_kernel[(triton.cdiv(n, block_cols),)](dgamma, dbeta, part, p, n, BLOCK_P=block_p,
                                                          BLOCK_COLS=block_cols)
    return dgamma, dbeta


def layernorm_backward_rowwise(dy, x, gamma, mean, rstd):
    """v1: one program per row for dx; a separate column reduction reads x and dy again for dgamma, dbeta."""
    dy, x, gamma, mean, rstd, m, n, block_n = _prepared(dy, x, gamma, mean, rstd)
    dx = torch.empty_like(x)
    _dx_row_kernel[(m,)](dx, dy, x, gamma, mean, rstd, n, x.stride(0), BLOCK_N=block_n,
                         num_warps=warps_for(block_n))
    dgamma, dbeta = torch.empty_like(gamma), torch.empty_like(gamma)
    block_cols = 32
    _column_sums_kernel[(triton.cdiv(n, block_cols),)](dgamma, dbeta, dy, x, mean, rstd, m, n, x.stride(0),
                                                        BLOCK_M=32, BLOCK_COLS=block_cols)
    return dx, dgamma, dbeta


def default_groups(n: int) -> int:
    """v2's number of partial rows: more groups mean less waiting for locks, and more to sum at the end."""
    return 64 if n <= 4096 else 32 if n <= 8192 else 16


def layernorm_backward_locked(dy, x, gamma, mean, rstd, groups: int | None = None):
    """v2: dx and each row's share of dgamma, dbeta in one kernel; shares added under a lock per group."""
    dy, x, gamma, mean, rstd, m, n, block_n = _prepared(dy, x, gamma, mean, rstd)
    groups = min(groups or default_groups(n), m)  # every group must get a row, or its partial row stays garbage
    dx = torch.empty_like(x)
    part = torch.empty((2, groups, n), dtype=torch.float32, device=x.device)  # no memset: the counts say what is set
    locks = torch.zeros((2, groups), dtype=torch.int32, device=x.device)
    _dx_locked_kernel[(m,)](dx, part, locks, dy, x, gamma, mean, rstd, n, x.stride(0), groups, BLOCK_N=block_n,
                            num_warps=warps_for(block_n))
    return (dx, *_sum_partials(part, groups, n, gamma))


STEPS = (1024, 2048, 4096, 8192)  # elements of x (and as many of dy) that one step of a program loads
PER_THREAD = (8, 16)  # elements of each block-sized tensor per thread: 56-96 and 80-150 registers (ptxas, sm_90)


def launch_candidates(block_n: int) -> list[tuple[int, int]]:
    """The (ROWS, num_warps) that the persistent rungs' launcher compiles and chooses among on a GPU.

    Steps of 1024 to 8192 elements (one row, when a row is longer), at 8 or 16
    elements per thread, 1 to 32 warps; and the interpreter's launch (rows_for,
    warps_for), the only one left for rows longer than 32 warps can hold at 16.
    """
    found = []
    for step in sorted({max(s, block_n) for s in STEPS}):
        for per_thread in PER_THREAD:
            warps = step // (32 * per_thread)
            if 1 <= warps <= 32:
                found.append((step // block_n, warps))
    interpreted = (rows_for(block_n), warps_for(rows_for(block_n) * block_n))
    return found + [interpreted] * (interpreted not in found)


def resident_programs(registers: int, shared_bytes: int, num_warps: int, device_properties: dict) -> int:
    """How many programs one multiprocessor runs at once, given what one program uses.

    `registers` per thread and `shared_bytes` per program come from the compiled kernel;
    `device_properties` is Triton's driver's: max_num_regs and max_shared_mem, the
    most one program may use, which on Hopper are also what a multiprocessor has
    (65 536 registers; 227 KB). Registers go to a warp 256 at a time, and a Hopper
    multiprocessor holds at most 64 warps and 32 programs.
    """
    per_warp = -(-registers * 32 // 256) * 256
    by_registers = device_properties["max_num_regs"] // max(1, per_warp * num_warps)
    by_memory = device_properties["max_shared_mem"] // max(1, shared_bytes)
    return max(1, min(by_registers, by_memory, 64 // num_warps, 32))


def choose_launch(usages: list[dict], device_properties: dict) -> dict:
    """Of compiled launches, the one that keeps the most of x and dy in flight on each multiprocessor.

    Each usage has BLOCK_N, ROWS, num_warps and what the compiler made of that
    launch: registers (per thread), spilled (any measure of local memory per
    thread, 0 when nothing spills) and shared_bytes. A memory-bound kernel moves
    bytes at about the bytes in flight over the memory's latency, and a program's
    loads are in flight only until its step's row sums begin, so: no spills first;
    then the most elements loaded per step by all the programs that fit on a
    multiprocessor at once; then the most programs (one waits at its sums while
    another loads); then the most warps. Returns the usage, with
    programs_per_multiprocessor added.
    """
    def programs(u):
        return resident_programs(u["registers"], u["shared_bytes"], u["num_warps"], device_properties)

    def rank(u):
        per = programs(u)
        return u["spilled"], -per * u["ROWS"] * u["BLOCK_N"], -per, -per * u["num_warps"]

    chosen = min(usages, key=rank)
    return {**chosen, "programs_per_multiprocessor": programs(chosen)}


_USAGE: dict = {}  # (kernel, device, dtype, specialization, BLOCK_N, ROWS, num_warps) -> what the compiler made
_CHOSEN: dict = {}  # (kernel, device, dtype, specialization, BLOCK_N) -> the (ROWS, num_warps) taken


def specialization(args: tuple) -> tuple:
    """What Triton's JIT compiles a separate kernel for, beyond dtypes and constexprs: which pointers start
    on 16 bytes and which integers are multiples of 16 (or 1). Where N and the row stride are multiples of
    16, every row starts on 16 bytes and the kernel loads 16 bytes at a time; elsewhere one element at a
    time, with other registers: a launch chosen for one is not the launch for the other."""
    return tuple(a.data_ptr() % 16 == 0 if isinstance(a, torch.Tensor) else (a % 16 == 0, a == 1)
                 if isinstance(a, int) else None for a in args)


def compiled_usage(kernel, args: tuple, block_n: int, rows: int, num_warps: int) -> dict | None:
    """Compile a persistent rung's kernel for these arguments (`warmup`, as Triton's persistent-softmax tutorial
    does) and read its registers, spills and shared memory; None off a GPU, for a launch this compiler
    refuses, or where Triton's internals differ."""
    x = args[3]
    if x.device.type != "cuda":
        return None
    key = (kernel, x.device, x.dtype, specialization(args), block_n, rows, num_warps)
    if key not in _USAGE:
        try:
            compiled = kernel.warmup(*args, BLOCK_N=block_n, ROWS=rows, num_warps=num_warps, grid=(1,))
            compiled._init_handles()
            properties = triton.runtime.driver.active.utils.get_device_properties(x.device.index)
            usage = {"BLOCK_N": block_n, "ROWS": rows, "num_warps": num_warps, "registers": compiled.n_regs,
                     "spilled": getattr(compiled, "n_spills", 0) or 0, "shared_bytes": compiled.metadata.shared}
            usage["programs_per_multiprocessor"] = resident_programs(usage["registers"], usage["shared_bytes"],
                                                                     num_warps, properties)
            _USAGE[key] = usage
        except Exception:  # not weighed; the launch itself, if it is the one taken, raises what went wrong
            _USAGE[key] = None
    return _USAGE[key]


def launch_plan(kernel, args: tuple, block_n: int) -> tuple[int, int]:
    """A persistent rung's (ROWS, num_warps) for these arguments.

    On a GPU every launch_candidates() is compiled and choose_launch() picks one
    of those that compiled, so the choice follows what this Triton's compiler
    makes of the kernel for these arguments: its registers differ between Triton
    versions, and between the JIT's specializations (see `specialization`), so
    each is chosen for once. Elsewhere: rows_for and warps_for.
    """
    x = args[3]
    key = (kernel, x.device, x.dtype, specialization(args), block_n)
    if key not in _CHOSEN:
        usages = [compiled_usage(kernel, args, block_n, r, w) for r, w in launch_candidates(block_n)]
        usages = [u for u in usages if u]
        if usages:
            chosen = choose_launch(usages, triton.runtime.driver.active.utils.get_device_properties(x.device.index))
            _CHOSEN[key] = chosen["ROWS"], chosen["num_warps"]
        else:  # the interpreter, or a Triton whose internals differ
            _CHOSEN[key] = rows_for(block_n), warps_for(rows_for(block_n) * block_n)
    return _CHOSEN[key]


def programs_to_launch(multiprocessors: int, per_multiprocessor: int, m: int) -> int:
    """All the programs the GPU runs at once, unless that leaves fewer than 16 rows to each."""
    return max(1, min(multiprocessors * per_multiprocessor, m // 16))


@functools.lru_cache(maxsize=None)
def _stand_in(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A one-element tensor that stands in for an output while compiling: only its dtype and alignment matter."""
    return torch.empty(1, dtype=dtype, device=device)


def _arguments(dx, dy, x, gamma, mean, rstd, m, n) -> list:
    """The persistent kernels' arguments, in their order; PART stood in for until its size is known."""
    return [dx, _stand_in(x.device, torch.float32), dy, x, gamma, mean, rstd, m, n, x.stride(0)]


_LAUNCHES: dict = {}  # (kernel, split, device, dtype, specialization, M, N, overrides) -> _persistent_launch's choice


def _persistent_launch(kernel, dx, dy, x, gamma, mean, rstd, m, n, block_n, programs, num_warps, rows, split=None):
    """v3's, v4's or v5's launch for rows of block_n: (kernel arguments with PART allocated, the kernel, P, its
    BLOCK_N, ROWS, num_warps, what the compiler made of it). `kernel` None is v5's choice between its two
    kernels (`split`: None to let `splits` decide). The choice is made once per kernel, device, dtype,
    specialization and shape: later calls only allocate PART, so that the host's work per call stays small
    beside a short row's kernel (v5's choice made at every call cost it 10 to 40 us a call more than v4 at
    M = 4096 on the H200, gpu-results/run-3)."""
    args = _arguments(dx, dy, x, gamma, mean, rstd, m, n)
    key = (kernel, split, x.device, x.dtype, specialization(args), m, n, programs, num_warps, rows)
    if key not in _LAUNCHES:
        chosen = _v5_kernel((dy, x, gamma, mean, rstd, m, n, block_n), split) if kernel is None else kernel
        _LAUNCHES[key] = chosen, *_choose_persistent_launch(chosen, tuple(args), m, n, block_n, programs,
                                                             num_warps, rows)
    kernel, p, parts, block_n, rows, num_warps, usage = _LAUNCHES[key]
    args[1] = torch.empty((2, parts, n), dtype=torch.float32, device=x.device)  # every row written by its program
    return args, kernel, p, block_n, rows, num_warps, usage


def _choose_persistent_launch(kernel, args: tuple, m, n, block_n, programs, num_warps, rows):
    """(P, partial rows, BLOCK_N, ROWS, num_warps, compiler's usage) for `_persistent_launch`."""
    x = args[3]
    split = kernel is _dx_split_kernel  # each row to a pair of programs, each with half its block
    if split and block_n < 2:
        raise ValueError("a row of one column cannot be split between two programs")
    block_n = block_n // 2 if split else block_n
    if rows is None and num_warps is None:
        rows, num_warps = launch_plan(kernel, args, block_n)
    rows = rows or rows_for(block_n)
    num_warps = num_warps or warps_for(rows * block_n)
    usage = compiled_usage(kernel, args, block_n, rows, num_warps)
    if programs is None:
        if x.device.type != "cuda":
            programs = min(m, 4)  # the interpreter runs programs one at a time: their number is bookkeeping
        else:
            per = usage["programs_per_multiprocessor"] if usage else max(1, 16 // num_warps)  # 128 registers
            programs = programs_to_launch(_multiprocessors(x.device), per, m)
    p = min(programs, triton.cdiv(m, rows))
    parts = p  # partial rows: one per program, or per pair of programs where each row is split in two
    if split:
        parts = max(1, min(programs // 2, triton.cdiv(m, rows)))
        p = 2 * parts
    return p, parts, block_n, rows, num_warps, usage


def _persistent(kernel, dy, x, gamma, mean, rstd, programs, num_warps, rows, split=None):
    """Launch a persistent rung; `kernel` None is v5's choice (`split`: None to let `splits` decide)."""
    dy, x, gamma, mean, rstd, m, n, block_n = _prepared(dy, x, gamma, mean, rstd)
    dx = torch.empty_like(x)
    args, kernel, p, block_n, rows, num_warps, _ = _persistent_launch(kernel, dx, dy, x, gamma, mean, rstd, m, n,
                                                                      block_n, programs, num_warps, rows, split)
    kernel[(p,)](*args, BLOCK_N=block_n, ROWS=rows, num_warps=num_warps)
    return (dx, *_sum_partials(args[1], args[1].shape[1], n, gamma))


def layernorm_backward_persistent(dy, x, gamma, mean, rstd, programs: int | None = None,
                                  num_warps: int | None = None, rows: int | None = None):
    """v3: P programs each walk M / P rows, keeping partial dgamma, dbeta in registers; then a P-row sum.

    `programs`, `num_warps` and `rows` (rows per step, a power of two) override the launcher's choice.
    """
    return _persistent(_dx_persistent_kernel, dy, x, gamma, mean, rstd, programs, num_warps, rows)


def layernorm_backward_prefetch(dy, x, gamma, mean, rstd, programs: int | None = None,
                                num_warps: int | None = None, rows: int | None = None):
    """v4: v3 with each step's x and dy loaded one step ahead. The same overrides as v3's."""
    return _persistent(_dx_prefetch_kernel, dy, x, gamma, mean, rstd, programs, num_warps, rows)


SPLIT_FROM = 16384  # off a GPU, v5 splits rows of this block and wider: where every launch of v3 and v4 spills
# On the H200 (gpu-results/run-4) v4's launch spilled 66 and 100 32-bit words per thread at N = 16384, where
# split rows took v5 41 to 65% less time than v4, and 2 words in float32 at N = 8192, where they took it 18 to 23%
# more: a few words spilled cost less than reading x and dy twice. Any bound from 2 to 65 parts the two.
SPLIT_SPILLS = 16


def splits(dy, x, gamma, mean, rstd) -> bool:
    """Whether v5 splits these rows between pairs of programs: on a GPU, where the launch v4's launcher
    takes for them spills more than SPLIT_SPILLS 32-bit words per thread (what this Triton's compiler
    reports); elsewhere, from SPLIT_FROM columns."""
    return _splits(*_prepared(dy, x, gamma, mean, rstd))


def _splits(dy, x, gamma, mean, rstd, m, n, block_n) -> bool:
    """`splits`, for inputs already `_prepared`."""
    if x.device.type != "cuda":
        return block_n >= SPLIT_FROM
    args = tuple(_arguments(_stand_in(x.device, x.dtype), dy, x, gamma, mean, rstd, m, n))  # DX stood in for too
    usage = compiled_usage(_dx_prefetch_kernel, args, block_n, *launch_plan(_dx_prefetch_kernel, args, block_n))
    return bool(usage and usage["spilled"] > SPLIT_SPILLS)


def layernorm_backward_split(dy, x, gamma, mean, rstd, programs: int | None = None,
                             num_warps: int | None = None, rows: int | None = None, split: bool | None = None):
    """v5: v4, except where a row does not fit in one program's registers (`splits`): there each row is split
    between two programs, each computing half of dx, dgamma and dbeta and reading the other half for the
    row sums. `split` overrides that choice; `programs` (counting both of a pair), `num_warps` and `rows`
    override the launcher's, as v3's."""
    return _persistent(None, dy, x, gamma, mean, rstd, programs, num_warps, rows, split)


def _v5_kernel(prepared: tuple, split: bool | None = None):
    """The kernel v5 runs on `_prepared` inputs: the split kernel where `split` (by default `splits`) says
    so, else v4's."""
    return _dx_split_kernel if (_splits(*prepared) if split is None else split) else _dx_prefetch_kernel


def persistent_plan(dy, x, gamma, mean, rstd, version: str = "v3 persistent") -> dict:
    """What v3's (v4's, v5's) launcher chooses for these inputs, and what the compiler made of it (on a GPU).

    Keys: BLOCK_N, ROWS, num_warps, programs (P), and where the kernel was compiled
    registers (per thread), spilled_words (32-bit words of local memory per thread),
    shared_bytes, programs_per_multiprocessor and resident_warps (per multiprocessor,
    of the 64 a Hopper multiprocessor holds); None for what an interpreter cannot say.
    `candidates`: each launch the launcher compiled and chose among, with the same
    figures. `split`: whether v5 splits these rows (then BLOCK_N is half the row's
    block, P counts both programs of each pair, and there are P / 2 partial rows).
    `reduction`: the second reduction's launch (BLOCK_P, BLOCK_COLS, programs).
    Also two calls that each run one of the launch's two kernels alone, on these
    inputs: `first_pass` (dx and the partial rows) and `second_reduction` (the sum of
    the partial rows), so that a benchmark can time them apart.
    """
    dy, x, gamma, mean, rstd, m, n, block_n = _prepared(dy, x, gamma, mean, rstd)
    kernel = None if version == "v5 split" else PERSISTENT[version]  # v5 runs v4's kernel where rows fit
    args, kernel, p, block_n, rows, num_warps, usage = _persistent_launch(kernel, torch.empty_like(x), dy, x, gamma,
                                                                          mean, rstd, m, n, block_n, None, None, None)
    usage = usage or {}
    per = usage.get("programs_per_multiprocessor")
    candidates = [compiled_usage(kernel, tuple(args), block_n, r, w) for r, w in launch_candidates(block_n)]
    part = args[1].normal_()
    block_p, block_cols = reduction_launch(part.shape[1], n, _multiprocessors(x.device))
    return {"BLOCK_N": block_n, "ROWS": rows, "num_warps": num_warps, "programs": p,
            "split": kernel is _dx_split_kernel,
            "registers": usage.get("registers"), "spilled_words": usage.get("spilled"),
            "shared_bytes": usage.get("shared_bytes"), "programs_per_multiprocessor": per,
            "resident_warps": per and per * num_warps,
            "candidates": [{k: c[k] for k in ("ROWS", "num_warps", "registers", "spilled", "shared_bytes",
                                              "programs_per_multiprocessor")} for c in candidates if c],
            "reduction": {"BLOCK_P": block_p, "BLOCK_COLS": block_cols, "programs": triton.cdiv(n, block_cols)},
            "first_pass": lambda: kernel[(p,)](*args, BLOCK_N=block_n, ROWS=rows, num_warps=num_warps),
            "second_reduction": lambda launch=None: _sum_partials(part, part.shape[1], n, gamma, launch)}


VERSIONS = {
    "v1 rowwise": layernorm_backward_rowwise,
    "v2 locked": layernorm_backward_locked,
    "v3 persistent": layernorm_backward_persistent,
    "v4 prefetch": layernorm_backward_prefetch,
    "v5 split": layernorm_backward_split,
}
PERSISTENT = {"v3 persistent": _dx_persistent_kernel, "v4 prefetch": _dx_prefetch_kernel,  # launches chosen
              "v5 split": _dx_split_kernel}


def checked(fn, shape, dtype, device: str, seed: int = 0) -> dict:
    """Run `fn` on a random trial (exercise 06's inputs) and compare with the float64 oracle.

    Returns the relative error (largest error over largest entry) of dx, dgamma and
    dbeta and the tolerance for the dtype; raises AssertionError, saying what is
    wrong, when any is outside it. Every version is checked so before it is timed.
    """
    import numpy as np

    from . import tolerances
    from .cases.torch_trials import backward_trial
    from .checks import as_float64

    truncated = device == "cpu" and dtype == torch.bfloat16  # the interpreter stores bfloat16 by dropping bits
    trial = backward_trial("layer", shape, dtype, truncated=truncated)(np.random.default_rng(seed), device)
    returned = fn(*trial.args)
    problems = trial.judge(returned, trial.expected)
    assert not problems, f"{getattr(fn, '__name__', fn)} in {dtype}: " + "; ".join(problems)
    errors = {name: float(np.abs(as_float64(got) - want).max() / np.abs(want).max())
              for name, got, want in zip(("dx", "dgamma", "dbeta"), returned, trial.expected)}
    kappa = tolerances.conditioning(as_float64(trial.args[1]), (1,))
    return {**errors, "tolerance": tolerances.output_rtol(dtype, kappa, truncated)}
