"""What an exercise notebook runs on, in one line: the notebooks' set-up cell prints it.

Where a notebook runs (a laptop, Colab, Binder, a JupyterHub) decides what its
PyTorch and Triton code runs on: a GPU runs Triton kernels compiled for it,
a machine without one runs them in Triton's interpreter on the CPU.
"""

from __future__ import annotations

from importlib import metadata


def describe(wanted: str | None = None) -> str:
    """normgrad's version, torch's, and the GPU found (or its absence); a warning when normgrad is not `wanted`."""
    import torch  # not triton: exercise 06 sets TRITON_INTERPRET before triton is first imported

    try:
        version = metadata.version("normgrad")
    except metadata.PackageNotFoundError:
        version = "(from a source folder, not installed)"
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        device = (f"GPU: {torch.cuda.get_device_name()} (compute capability {major}.{minor}): PyTorch and Triton "
                  "code runs compiled on it")
    else:
        device = "no GPU: PyTorch runs on the CPU, and Triton kernels in Triton's interpreter"
    line = f"normgrad {version}, torch {torch.__version__}; {device}"
    if wanted and version != wanted:
        line += (f"\nWARNING: this notebook was written for normgrad {wanted}; its tests may differ from the "
                 f"grader's (pip install normgrad=={wanted} from the course's book)")
    return line
