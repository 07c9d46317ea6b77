"""How a test case calls a student's code: the grader's own calling protocol, for the notebooks' `run_tests`.

It lives in `autograder.inside.calling`, beside the rest of what runs inside
the sandbox (which imports nothing of the course); this name keeps it where
the notebooks and `normgrad.cases` import it.
"""

from autograder.inside.calling import NO_AUTOGRAD, PROTOCOLS, invoke, lock_autograd, no_autograd  # noqa: F401

__all__ = ["NO_AUTOGRAD", "PROTOCOLS", "invoke", "lock_autograd", "no_autograd"]
