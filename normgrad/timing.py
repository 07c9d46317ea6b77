"""Timing and memory-traffic accounting for the chapters' benchmarks.

Speed belongs in benchmarks that print figures, never in tests: these helpers
measure, and the chapter that calls them says what the numbers mean on the
machine that built it.

- `median_seconds(fn, *args)`: the median wall time of a call, after a warm-up;
- `traffic(fn, *args)`: the bytes each PyTorch operator of a call reads and
  writes, counted at the operator boundary (what eager code moves between
  operators; what a fused kernel does inside itself is invisible here);
  with `resident=`, only the bytes of the tensors named, as if the call's
  temporaries stayed in registers (what a C loop over the same expression moves).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def _synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn, *args, repeats: int = 7, min_seconds: float = 0.0, device="cpu") -> float:
    """Median wall time of fn(*args) over `repeats` timed calls (more while under `min_seconds` in all)."""
    fn(*args)  # warm-up: allocations, dispatch caches, lazy initialization
    _synchronize(device)
    times = []
    while len(times) < repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        fn(*args)
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Traffic:
    read: int = 0  # bytes of tensor inputs, over every operator of the call
    written: int = 0  # bytes of tensor outputs
    operators: int = 0  # operators that moved data (views and metadata excluded)

    def passes(self, like: torch.Tensor) -> float:
        """Traffic in units of one tensor like `like`: how many times the data was streamed."""
        return (self.read + self.written) / (like.numel() * like.element_size())


class _Counter(TorchDispatchMode):
    def __init__(self, resident=None):
        super().__init__()
        self.traffic = Traffic()
        self.resident = None if resident is None else {t.untyped_storage().data_ptr() for t in resident}

    def _bytes(self, tensors) -> int:
        return sum(_nbytes(t) for t in tensors
                   if self.resident is None or t.untyped_storage().data_ptr() in self.resident)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view or func.overloadpacket in _NO_DATA:
            return out
        self.traffic.operators += 1
        inputs = _tensors(args) + _tensors(kwargs)
        if func.overloadpacket in _OVERWRITES:
            inputs = inputs[1:]  # x.copy_(y) writes x without reading it
        self.traffic.read += self._bytes(inputs)
        self.traffic.written += self._bytes(_tensors(out))
        return out


_NO_DATA = {torch.ops.aten.detach, torch.ops.aten.empty_like, torch.ops.aten.empty, torch.ops.aten.lift_fresh}
_OVERWRITES = {torch.ops.aten.copy_, torch.ops.aten.fill_, torch.ops.aten.zero_}


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    if isinstance(tree, dict):
        return [t for item in tree.values() for t in _tensors(item)]
    return []


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def traffic(fn, *args, resident=None) -> Traffic:
    """The bytes fn(*args) moves between PyTorch operators (one call, no gradient tracking).

    With `resident` (tensors), only reads and writes of their memory (views included) count: the
    call's temporaries are taken to stay in registers, as in a C loop that computes the same expression.
    Each operator's read counts, so a tensor used twice in one expression is counted twice.
    """
    counter = _Counter(resident)
    with torch.no_grad(), counter:
        fn(*args)
    return counter.traffic


def cpu_name() -> str:
    """The processor's model name, for the caption of a measurement (Linux; else the architecture)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- on a GPU (and, for dry runs, the same calls on the CPU) ----------------------------------------

FLUSH_BYTES = 256 << 20  # written before each timed call: far more than any GPU's L2 cache (an H200's is 60 MiB)


class DeviceTimer:
    """Times calls on one device the way a GPU benchmark should: warm-up first, the L2 cache flushed
    before every timed call, each call bracketed by CUDA events (GPU time, so the host's launch
    overhead hides behind the flush), the median of the repetitions.

    On the CPU the same calls run with a wall clock and a smaller flush: a dry run of the same code.
    """

    def __init__(self, device: str = "cuda", flush_bytes: int | None = None):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        size = flush_bytes if flush_bytes is not None else FLUSH_BYTES if self.cuda else 8 << 20
        self.flush_buffer = torch.empty(size // 4, dtype=torch.int32, device=self.device)

    def flush(self) -> None:
        self.flush_buffer.zero_()

    def times_ms(self, fn, reps: int) -> list[float]:
        """Milliseconds of each of `reps` calls of fn(), each after a flush of the L2 cache."""
        if not self.cuda:
            found = []
            for _ in range(reps):
                self.flush()
                start = time.perf_counter()
                fn()
                found.append(1e3 * (time.perf_counter() - start))
            return found
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in events:
            self.flush()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in events]

    def host_ms(self, fn, reps: int = 5) -> float:
        """The median milliseconds the host spends issuing fn() (checks, allocations, launches), over `reps`
        calls queued behind a flush. On a GPU, a call whose host time exceeds the flush's time leaves the GPU
        idle for the difference, which `times_ms` then counts; on the CPU it is the whole call."""
        self.flush()
        found = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            found.append(1e3 * (time.perf_counter() - start))
        _synchronize(self.device)
        return statistics.median(found)

    def median_ms(self, fn, reps: int, warmup: int = 2) -> float:
        """The median of `reps` timed calls of fn(), after `warmup` untimed ones (compilation, caches)."""
        for _ in range(warmup):
            fn()
        _synchronize(self.device)
        return statistics.median(self.times_ms(fn, reps))


def repetitions(estimate_ms: float, budget_ms: float, overhead_ms: float = 0.1, least: int = 3,
                most: int = 100) -> int:
    """How many timed calls of about `estimate_ms` each (plus `overhead_ms` for the flush and the launch)
    fit in `budget_ms`, between `least` and `most`."""
    return int(min(most, max(least, budget_ms // max(estimate_ms + overhead_ms, 1e-6))))
