"""The course's shared library.

Chapters, exercise notebooks, tests and the autograder import these helpers;
none of them pastes its own copy.

- `reference`: float64 oracles from torch's own layer_norm / batch_norm and autograd
- `inputs`: input generators (awkward shapes, tiny variance, large mean offsets)
- `tolerances`: tolerances that follow from a dtype's unit roundoff
- `checks`: type, dtype, shape and closeness checks whose messages say what was expected
- `gradcheck`: finite differences in float64
- `plotting`: the figures the chapters draw
- `timing`: timing and memory-traffic accounting for the chapters' CPU measurements
- `calling`: how a test calls a student's code (autograd locked), in a notebook and in the sandbox
- `cases`: each exercise's test cases, defined once for the notebook and the grader
- `triton_layernorm`: chapter 6's ladder of Triton kernels for the LayerNorm backward
- `gpu_compile`: compiling those kernels for an H100 without a GPU, to read registers and spills
- `benchmark`: `python -m normgrad.benchmark` (`make bench`), chapter 6's GPU benchmark
"""

__all__ = ["reference", "inputs", "tolerances", "checks", "gradcheck", "plotting", "timing", "calling", "cases"]
