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
    """The book built once for the session (every chapter run), as the tests of the book and of its buttons read it."""
    import book

    out = tmp_path_factory.mktemp("book")
    done = book.build(out, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    return out / "_build" / "html"
