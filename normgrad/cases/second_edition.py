"""The functions added in the second edition (COURSE_API.md), appended to their assignments.

Each assignment module ends with one line, `CASES, MISTAKES = extend(<id>, CASES, MISTAKES)`,
so that the cases of the first edition's functions and those of the added ones live in modules of
their own.
"""

from __future__ import annotations

import importlib

ADDED = {
    "04-code-mapping": ("batchnorm_function", "rmsnorm_backward", "expose_var"),
    "05-thnn": ("shards",),
    "06-triton": ("triton_steps",),
}


def extend(assignment_id: str, cases: list, mistakes: list) -> tuple[list, list]:
    """`cases` and `mistakes` of an assignment followed by those of its added functions."""
    for name in ADDED.get(assignment_id, ()):
        module = importlib.import_module(f"{__package__}.{name}")
        cases, mistakes = [*cases, *module.CASES], [*mistakes, *module.MISTAKES]
    return cases, mistakes
