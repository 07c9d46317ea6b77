"""Float64 oracles: what every hand-written result in the course is compared with.

Everything here comes from torch's own kernels (`native_layer_norm`,
`native_batch_norm`) and from autograd, run in float64 on the CPU, never from
the formulas the course derives: an oracle that shared a derivation with the
code under test could share its mistakes.

Inputs may be NumPy arrays or torch tensors of any dtype and device; they are
converted exactly to float64 (every float16, bfloat16 and float32 value is a
float64 value). Results are float64 NumPy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Reference:
    """Forward values and, when an upstream gradient was given, the gradients."""

    y: np.ndarray
    mean: np.ndarray | None  # one per normalized group: (N,) for layer norm, (C,) for batch norm; None for RMSNorm
    rstd: np.ndarray  # 1 / sqrt(var + eps), same shape as mean
    x_hat: np.ndarray
    dx: np.ndarray | None = None
    dgamma: np.ndarray | None = None
    dbeta: np.ndarray | None = None


def as_float64(a) -> torch.Tensor:
    """A float64 CPU tensor holding exactly the values of `a` (array, tensor or number)."""
    if isinstance(a, torch.Tensor):
        return a.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().numpy().copy()


def _with_grads(forward, x, gamma, beta, dy) -> tuple:
    """Run `forward(x, gamma, beta)` in float64; backpropagate `dy` if given."""
    x, gamma, beta = (as_float64(a).requires_grad_(dy is not None) for a in (x, gamma, beta))
    with torch.enable_grad():
        y, mean, rstd, x_hat = forward(x, gamma, beta)
        grads = (None, None, None)
        if dy is not None:
            grads = torch.autograd.grad(y, (x, gamma, beta), as_float64(dy))
    return Reference(_numpy(y), _numpy(mean), _numpy(rstd), _numpy(x_hat), *map(_numpy, grads))


def layernorm(x, gamma, beta, eps: float = 1e-5, dy=None) -> Reference:
    """Layer norm over the last axis of `x`, with torch's `native_layer_norm`."""

    def forward(x, gamma, beta):
        d = x.shape[-1:]
        y, mean, rstd = torch.native_layer_norm(x, d, gamma, beta, eps)
        x_hat = torch.native_layer_norm(x.detach(), d, None, None, eps)[0]
        return y, mean.reshape(x.shape[:-1]), rstd.reshape(x.shape[:-1]), x_hat

    return _with_grads(forward, x, gamma, beta, dy)


def batchnorm(x, gamma, beta, eps: float = 1e-5, dy=None) -> Reference:
    """Training-mode batch norm of `x` of shape (N, C, *): statistics over every axis but 1."""

    def forward(x, gamma, beta):
        y, mean, rstd = torch.native_batch_norm(x, gamma, beta, None, None, True, 0.0, eps)
        x_hat = torch.native_batch_norm(x.detach(), None, None, None, None, True, 0.0, eps)[0]
        return y, mean, rstd, x_hat

    return _with_grads(forward, x, gamma, beta, dy)


def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps: float = 1e-5, dy=None) -> Reference:
    """Evaluation-mode batch norm: the running statistics are constants, not functions of x."""
    running_mean, running_var = as_float64(running_mean), as_float64(running_var)

    def forward(x, gamma, beta):
        y = torch.nn.functional.batch_norm(x, running_mean, running_var, gamma, beta, False, 0.0, eps)
        x_hat = torch.nn.functional.batch_norm(x.detach(), running_mean, running_var, None, None, False, 0.0, eps)
        return y, running_mean, torch.rsqrt(running_var + eps), x_hat

    return _with_grads(forward, x, gamma, beta, dy)


def groupnorm(x, gamma, beta, groups: int, eps: float = 1e-5, dy=None) -> Reference:
    """Group norm of `x` (N, C, *) with torch's `native_group_norm`: each sample's C channels in
    `groups` consecutive groups, each normalized over its channels and every trailing axis.
    `mean` and `rstd` have shape (N, groups); gamma and beta are per channel, shape (C,)."""

    def forward(x, gamma, beta):
        n, c = x.shape[:2]
        hw = x[0, 0].numel()
        y, mean, rstd = torch.native_group_norm(x, gamma, beta, n, c, hw, groups, eps)
        x_hat = torch.native_group_norm(x.detach(), None, None, n, c, hw, groups, eps)[0]
        return y, mean, rstd, x_hat

    return _with_grads(forward, x, gamma, beta, dy)


def rmsnorm(x, gamma, eps: float = 1e-6, dy=None) -> Reference:
    """RMSNorm over the last axis with torch's `rms_norm`: y = gamma * x * rstd,
    rstd = 1 / sqrt(mean(x**2) + eps). No mean is subtracted and there is no beta, so
    `mean` and `dbeta` are None; `x_hat` is x * rstd."""
    x, gamma = (as_float64(a).requires_grad_(dy is not None) for a in (x, gamma))
    with torch.enable_grad():
        y = torch.nn.functional.rms_norm(x, x.shape[-1:], gamma, eps)
        dx = dgamma = None
        if dy is not None:
            dx, dgamma = torch.autograd.grad(y, (x, gamma), as_float64(dy))
    x = x.detach()
    rstd = torch.rsqrt(x.pow(2).mean(-1) + eps)
    return Reference(_numpy(y), None, _numpy(rstd), _numpy(x * rstd[..., None]), _numpy(dx), _numpy(dgamma), None)


def rmsnorm_jacobian(x_row, eps: float = 1e-6) -> np.ndarray:
    """The (D, D) matrix d(x_i * rstd) / d x_j of one row (no gamma), by float64 autograd."""
    x_row = as_float64(x_row)
    return torch.autograd.functional.jacobian(
        lambda v: torch.nn.functional.rms_norm(v, v.shape, None, eps), x_row).numpy()


def layernorm_jacobian(x_row, eps: float = 1e-5) -> np.ndarray:
    """The (D, D) matrix d x_hat_i / d x_j of one row, by float64 autograd."""
    x_row = as_float64(x_row)
    d = x_row.shape

    def normalize(v):
        return torch.native_layer_norm(v, d, None, None, eps)[0]

    return torch.autograd.functional.jacobian(normalize, x_row).numpy()


def forward_cache(x, gamma, eps: float = 1e-5, norm: str = "layer") -> dict:
    """The `cache` of exercise 01 for x of shape (N, D), from the oracle, in x's dtype.

    norm='layer' reduces over axis 1 (mean, rstd of shape (N,)), norm='batch' over
    axis 0 (shape (D,)). The backward exercises receive this cache, never one
    built by the student's own forward pass.
    """
    x, gamma = np.asarray(x), np.asarray(gamma)
    oracle = layernorm if norm == "layer" else batchnorm
    ref = oracle(x, gamma, np.zeros_like(gamma), eps)
    return {"x": x.copy(), "mean": ref.mean.astype(x.dtype), "rstd": ref.rstd.astype(x.dtype),
            "x_hat": ref.x_hat.astype(x.dtype), "gamma": gamma.copy(), "eps": float(eps)}


def grad_paths(x, gamma, dy, eps: float = 1e-5, norm: str = "layer") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dL/dx split into the chain rule's three paths, by float64 autograd: (direct, via_mean, via_var).

    x (N, D) enters the forward pass as three separate copies: the one in
    x_hat's numerator, the one that feeds the mean, and the one that feeds the
    variance (which takes its own mean of that copy). Autograd's gradient with
    respect to each copy is one path, and the three add up to dx. This is the
    forward formula differentiated by autograd, not the course's closed forms;
    a test checks the two against each other and the sum against torch's own
    layer_norm / batch_norm gradient.
    """
    axis = 1 if norm == "layer" else 0
    direct, for_mean, for_var = (as_float64(x).requires_grad_(True) for _ in range(3))
    with torch.enable_grad():
        mean = for_mean.mean(axis, keepdim=True)
        var = ((for_var - for_var.mean(axis, keepdim=True)) ** 2).mean(axis, keepdim=True)
        y = as_float64(gamma) * (direct - mean) / torch.sqrt(var + eps)
        grads = torch.autograd.grad(y, (direct, for_mean, for_var), as_float64(dy))
    return tuple(_numpy(g) for g in grads)


def variance_grad(x, axis: int = -1) -> np.ndarray:
    """d(sigma^2)/dx of the biased variance of each group along `axis`, by float64 autograd.

    Each group's variance depends on its own values only, so the gradient of
    the sum of all variances holds every d(sigma_i^2)/d(x_ij) at once.
    """
    x = as_float64(x).requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(torch.var(x, dim=axis, correction=0).sum(), x)
    return _numpy(grad)
