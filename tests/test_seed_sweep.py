"""scripts/seed_sweep.py: the solutions judged at many grading seeds, and the rare failure it is there to find."""

import pytest

import seed_sweep


def test_the_solutions_pass_and_the_sweep_says_so(capsys):
    assert seed_sweep.main(["01-forward", "05-thnn", "--seeds", "0:3"]) == 0
    out = capsys.readouterr().out
    assert "01-forward: 3 seeds (0 to 2) in" in out and "05-thnn: 3 seeds" in out
    assert out.count("no cases failed") == 2


def test_a_failure_at_one_seed_in_a_thousand_is_reported_with_that_seed(monkeypatch, capsys):
    """01's mean held to its own size (its floor 0, as before cda2cd2) failed the correct solution at seed 503
    alone of 500..505: the sweep names that case and that seed, and exits 1."""
    monkeypatch.setattr("normgrad.cases.forward.mean_floor", lambda x: 0.0)
    failed = seed_sweep.sweep("01-forward", range(500, 505), seed_sweep.solution_namespace("01-forward"),
                              {"layernorm_forward"})
    assert list(failed) == ["layernorm_forward/one-sample"]
    assert [seed for seed, _ in failed["layernorm_forward/one-sample"]] == [503]
    assert "cache['mean']" in failed["layernorm_forward/one-sample"][0][1][0]

    assert seed_sweep.main(["01-forward", "--seeds", "503:504", "--function", "layernorm_forward"]) == 1
    assert "layernorm_forward/one-sample: 1 of 1 seeds, first 503:" in capsys.readouterr().out


def forward_a_thousandth_off(assignment):
    """01's solutions with y scaled by 1.001: every case of layernorm_forward fails at every seed."""
    namespace = seed_sweep.solution_namespace(assignment)
    right = namespace["layernorm_forward"]

    def off(*args, **kwargs):
        y, cache = right(*args, **kwargs)
        return y * 1.001, cache

    return {**namespace, "layernorm_forward": off}


def test_seeds_shared_among_processes_find_what_one_process_finds():
    """Seeds judged in two processes: the failures come back whole, in seed order, as one process reports them
    (a case that fails everywhere lists every seed)."""
    seeds, functions = range(0, 5), {"layernorm_forward"}
    alone = seed_sweep.sweep("01-forward", seeds, forward_a_thousandth_off("01-forward"), functions)
    with seed_sweep.spawned_pool(2) as pool:
        shared = seed_sweep.sweep_seeds("01-forward", seeds, functions, pool, namespace_of=forward_a_thousandth_off)
    assert [seed for seed, _ in alone["layernorm_forward/small"]] == list(seeds)
    assert shared == alone


@pytest.mark.parametrize("argv,reason", [
    (["09-nothing"], "no assignment 09-nothing; there are 01-forward,"),
    (["--seeds", "3"], "--seeds takes START:STOP, two integers, not '3'"),
    (["01-forward", "--function", "layernorm_dx_triton"], "no function layernorm_dx_triton in 01-forward"),
    (["01-forward", "--jobs", "0"], "--jobs takes a number of processes, at least 1, not 0"),
])
def test_what_it_cannot_sweep_is_refused_with_a_reason(argv, reason, capsys):
    with pytest.raises(SystemExit) as exit:
        seed_sweep.main(argv)
    assert exit.value.code == 2
    assert f"scripts/seed_sweep.py: error: {reason}" in capsys.readouterr().err
