"""The second edition's transfer and insight tasks (COURSE_API.md, "Added in the second edition"),
and what the NumPy tasks' judges share.

- 01-forward: `groupnorm_forward`, `rmsnorm_forward`
- 02-chain-rule: `groupnorm_backward`, `hide_path`
- 03-variance-derivative: `rmsnorm_jacobian`
- 04-code-mapping: `BatchNormFunction`, `rmsnorm_backward`, `expose_var_without_eps`
- 05-thnn: `shard_sums`, `shard_grad_in`
- 06-triton: `layernorm_dx_triton`, `rmsnorm_backward_triton` (and a float64 case of
  `layernorm_backward_triton`, which the contract's dtypes ask for)

Their cases and mistakes live in modules of their own, named below; each
assignment's module appends them with `extend` on its last line.

Every judge here is a `functools.partial` with an `rtol` keyword, so the tests
can rerun it at a multiple of its tolerance and measure each mistake's margin.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..checks import array_problems, closeness_problems, describe

ADDED = {  # assignment id -> the modules whose CASES and MISTAKES it takes, and the functions it takes from them
    "01-forward": {"groupnorm": ("groupnorm_forward",), "rmsnorm": ("rmsnorm_forward",)},
    "02-chain-rule": {"groupnorm": ("groupnorm_backward",), "hide_path": ("hide_path",)},
    "03-variance-derivative": {"rmsnorm": ("rmsnorm_jacobian",)},
    "04-code-mapping": {"batchnorm_function": ("BatchNormFunction",), "rmsnorm_backward": ("rmsnorm_backward",),
                        "expose_var": ("expose_var_without_eps",)},
    "05-thnn": {"shards": ("shard_sums", "shard_grad_in")},
    "06-triton": {"triton_steps": ("layernorm_dx_triton", "layernorm_backward_triton", "rmsnorm_backward_triton")},
}

# assignment id -> the functions the contract adds to it (06's module also holds a float64 case of a
# first-edition function, which stays first-edition for the points)
FUNCTIONS = {a: [f for functions in modules.values() for f in functions if f != "layernorm_backward_triton"]
             for a, modules in ADDED.items()}


def extend(assignment_id: str, cases: list, mistakes: list) -> tuple[list, list]:
    """`cases` and `mistakes` of an assignment with those of its added functions appended."""
    cases, mistakes = list(cases), list(mistakes)
    for name, functions in ADDED[assignment_id].items():
        module = importlib.import_module(f"{__package__}.{name}")
        cases += [c for c in module.CASES if c.function in functions]
        mistakes += [m for m in module.MISTAKES if m.function in functions]
    return cases, mistakes


def cache_problems(returned, expected, *, dtype, rtol: float, floors: dict[str, float],
                   exact: tuple[str, ...] = ("x", "gamma")) -> list[str]:
    """(y, cache) against the expected (y, cache): every entry that is wrong, named.

    `floors` names the arrays compared within `rtol` (y and the cache's statistics) with the
    natural scale of each; the entries named in `exact` must be the inputs exactly, and every
    other key of the expected cache (eps, groups) must be the number the function was given.
    """
    if not isinstance(returned, (tuple, list)) or len(returned) != 2:
        return [f"should return a pair (y, cache), got {describe(returned)}"]
    (y, cache), (want_y, want) = returned, expected
    problems = array_problems(y, "y", np.shape(want_y), dtype) or \
        closeness_problems(y, want_y, "y", rtol, floors["y"])
    if not isinstance(cache, dict):
        return problems + [f"cache should be a dict, got {type(cache).__name__}"]
    missing = [k for k in want if k not in cache]
    if missing:
        return problems + [f"cache lacks the key(s) {', '.join(map(repr, missing))}"]
    for key, value in want.items():
        name = f"cache[{key!r}]"
        if value is None:
            continue
        if key in floors:
            problems += array_problems(cache[key], name, np.shape(value), dtype) or \
                closeness_problems(cache[key], value, name, rtol, floors[key])
        elif key in exact:
            problems += array_problems(cache[key], name, np.shape(value), dtype) or \
                closeness_problems(cache[key], value, name, 0.0)
        else:
            got = cache[key]
            if isinstance(got, np.ndarray) and got.shape == ():
                got = got.item()
            if not isinstance(got, (int, float)) or isinstance(got, bool) or got != value:
                problems.append(f"{name} should be the {key} the function was called with ({value})")
    return problems


