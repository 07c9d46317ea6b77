import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from book_site import built_site  # noqa: E402  (tests/ is on the path: pytest puts it there)

# The tests judge small tensors in this process while graders, kernels and the book run beside it on
# a machine of two cores: PyTorch's second thread only fights them for a core (ten times slower under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The book built once for the run (every chapter run), as the tests of the book and of its buttons read it.

    `make test` runs the tests on two pytest-xdist workers: they share one build (tests/book_site.py),
    which the run's controller has already started."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # each worker's own folder is a child of the run's
    return built_site(shared)


BOOK_BUILDER = pytest.StashKey[subprocess.Popen]()


def pytest_sessionstart(session):
    """The whole suite on workers: the controller starts the book's build now, in a process of its own."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return  # a worker, or no workers at all
    args_source = getattr(pytest.Config, "ArgsSource", None)  # pytest 7.2 and later
    if (args_source is None or config.args_source != args_source.TESTPATHS
            or config.option.markexpr or config.option.keyword):
        return  # not the whole suite: the book is built, if at all, when a test first reads it
    shared = config._tmp_path_factory.getbasetemp()  # the folder that xdist makes the workers' parent
    config.stash[BOOK_BUILDER] = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "book_site.py"), str(shared)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def pytest_sessionfinish(session):
    builder = session.config.stash.get(BOOK_BUILDER, None)
    if builder is not None and builder.poll() is None:  # the run ended first (-x, or no test read the book)
        os.killpg(builder.pid, signal.SIGKILL)
        builder.wait()
