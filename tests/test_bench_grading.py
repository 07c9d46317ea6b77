"""The grading benchmark's batch still builds: its slips still apply to the solution (the run itself is `make bench-grading`)."""

import bench_grading
from autograder.cells import defined_names


def test_the_benchmark_batch_builds_with_each_kind_of_submission():
    batch = bench_grading.batch(8)
    assert [name.split("-", 1)[1] for name, _ in batch[:4]] == ["correct", "release", "gamma-forgotten",
                                                                "unbiased-variance"]
    for name, nb in batch:
        sources = [c.source for c in nb.cells if c.cell_type == "code"]
        assert any("layernorm_forward" in defined_names(s) for s in sources), name
    gamma = next(nb for name, nb in batch if name.endswith("gamma-forgotten"))
    assert any("out = normalized + beta" in c.source for c in gamma.cells)
