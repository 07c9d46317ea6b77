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


def test_views_move_no_data():
    a = torch.ones(10, 100)
    assert traffic(lambda u: u.t().reshape(-1, 10)[:3], a).operators == 0


def test_median_seconds_times_the_call_and_names_the_processor():
    calls = []
    assert median_seconds(lambda: calls.append(1), repeats=3) >= 0.0
    assert len(calls) == 4  # a warm-up, then the timed calls
    assert cpu_name()
