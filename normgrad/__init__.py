"""The course's shared library.

Chapters, exercise notebooks, tests and the autograder import these helpers;
none of them pastes its own copy.

- `reference`: float64 oracles from torch's own layer_norm / batch_norm and autograd
- `inputs`: input generators (awkward shapes, tiny variance, large mean offsets)
- `tolerances`: tolerances that follow from a dtype's unit roundoff
- `checks`: type, dtype, shape and closeness checks whose messages say what was expected
- `gradcheck`: finite differences in float64
- `plotting`: the figures the chapters draw
- `bench`: timing and memory-traffic accounting for the chapters' benchmarks
- `cases`: each exercise's test cases, defined once for the notebook and the grader
"""

__all__ = ["reference", "inputs", "tolerances", "checks", "gradcheck", "plotting", "bench", "cases"]
