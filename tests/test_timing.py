"""The benchmark helpers count what they claim to count."""

import torch

from normgrad.timing import cpu_name, median_seconds, traffic


def test_traffic_counts_each_operator_s_reads_and_writes():
    a, b = torch.ones(1000), torch.ones(1000)
    one_op = traffic(lambda u, v: u + v, a, b)
    assert (one_op.read, one_op.written, one_op.operators) == (8000, 4000, 1)
    assert one_op.passes(a) == 3.0
    two_ops = traffic(lambda u, v: (u + v) * v, a, b)  # the intermediate is written, then read back
    assert two_ops.passes(a) == 6.0 and two_ops.operators == 2


def test_resident_counts_only_the_named_tensors_memory_and_copy_does_not_read_its_target():
    a, b, out = torch.ones(1000), torch.ones(1000), torch.empty(1000)
    fused = traffic(lambda u, v: out.copy_(u * 2 + v), a, b, resident=(a, b, out))
    assert fused.passes(a) == 3.0  # a and b read, out written: the temporaries stay in registers
    assert traffic(lambda u, v: out.copy_(u * 2 + v), a, b).passes(a) == 7.0  # at operator boundaries
    assert traffic(lambda u, v: out.copy_((u + v) * v), a, b, resident=(a, b, out)).passes(a) == 4.0  # per use
    halves = traffic(lambda u: [out[:500].copy_(u[:500]), out[500:].copy_(u[500:] * 2)], a, resident=(a, out))
    assert halves.passes(a) == 2.0  # views of resident tensors count, by their own size


def test_views_move_no_data():
    a = torch.ones(10, 100)
    assert traffic(lambda u: u.t().reshape(-1, 10)[:3], a).operators == 0


def test_median_seconds_times_the_call_and_names_the_processor():
    calls = []
    assert median_seconds(lambda: calls.append(1), repeats=3) >= 0.0
    assert len(calls) == 4  # a warm-up, then the timed calls
    assert cpu_name()


def test_device_timer_flushes_before_every_timed_call_and_takes_the_median():
    from normgrad.timing import DeviceTimer

    timer = DeviceTimer("cpu", flush_bytes=1 << 16)
    order = []
    timer.flush = lambda: order.append("flush")
    times = timer.times_ms(lambda: order.append("call"), reps=3)
    assert order == ["flush", "call"] * 3 and len(times) == 3 and all(t >= 0 for t in times)
    calls = []
    assert timer.median_ms(lambda: calls.append(1), reps=5, warmup=2) >= 0 and len(calls) == 7


def test_repetitions_fit_the_budget_within_bounds():
    from normgrad.timing import repetitions

    assert repetitions(0.9, 100.0, overhead_ms=0.1) == 100  # 100 calls of 1 ms fit in 100 ms
    assert repetitions(1.9, 100.0, overhead_ms=0.1) == 50
    assert repetitions(500.0, 100.0) == 3  # never fewer than `least`
    assert repetitions(0.0, 1e9) == 100  # never more than `most`
