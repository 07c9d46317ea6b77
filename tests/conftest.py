import fcntl
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

# The tests judge small tensors in this process while graders, kernels and the book run beside it on
# a machine of two cores: PyTorch's second thread only fights them for a core (ten times slower under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The book built once for the run (every chapter run), as the tests of the book and of its buttons read it.

    `make test` runs the tests on two pytest-xdist workers: the first to ask builds the book in the folder
    both share, and the other waits for it under a lock instead of building it a second time."""
    import book

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # each worker's own folder is a child of the run's
    out = shared / "book"
    with open(shared / "book.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "built").exists():
            shutil.rmtree(out, ignore_errors=True)  # what a build that failed left
            out.mkdir()
            done = book.build(out, capture_output=True, text=True)
            assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
            (out / "built").touch()
    return out / "_build" / "html"
