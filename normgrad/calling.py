"""How a test case calls a student's code: the grader's own calling protocol, for the notebooks' `run_tests`.

It lives in `autograder.inside.calling`, beside the rest of what runs inside
the sandbox (which imports nothing of the course); this name keeps it where
the notebooks and `normgrad.cases` import it.
"""

from autograder.inside.calling import (  # noqa: F401
    NO_AUTOGRAD, PROTOCOLS, bounds, fit_triton_interpreter, invoke, lock_autograd, no_autograd)

__all__ = ["NO_AUTOGRAD", "PROTOCOLS", "bounds", "fit_triton_interpreter", "invoke", "lock_autograd", "no_autograd"]
