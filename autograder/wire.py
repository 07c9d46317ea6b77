"""Inert data across the sandbox wall: a JSON manifest and plain .npy arrays.

Nothing that crosses can carry code: the manifest is JSON, arrays are loaded
with `allow_pickle=False`, dtypes and devices come from allow-lists, and sizes
are checked before anything is read. What can cross: None, bool, int, float,
str, lists and tuples, dicts with string keys, NumPy arrays of numeric or bool
dtype, and torch tensors (dtype, device and strides kept; bfloat16 travels as
its 16 raw bits).

This module imports only the standard library and NumPy (torch when a tensor
crosses), because the sandbox imports it from a copy.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

MANIFEST = "manifest.json"
NUMPY_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float16", "float32", "float64"}
TENSOR_DTYPES = {"bool", "int32", "int64", "float16", "bfloat16", "float32", "float64"}
MAX_NODES = 10_000
MAX_DEPTH = 16
MAX_MANIFEST_BYTES = 1 << 20


class WireError(ValueError):
    """What came back cannot be read as plain data; the message says why."""


def dump(value, folder: str) -> None:
    """Write `value` into `folder` (created) as manifest.json plus one .npy per array."""
    os.makedirs(folder, exist_ok=True)
    counter = [0]

    def encode(v, depth=0):
        if depth > MAX_DEPTH:
            raise WireError("value nested too deeply")
        if v is None or isinstance(v, (bool, int, str)):
            return {"t": "py", "v": v}
        if isinstance(v, float):
            return {"t": "float", "v": repr(v)}  # repr keeps nan and inf, which JSON lacks
        if isinstance(v, np.generic):
            return encode(v.item(), depth)
        if isinstance(v, (list, tuple)):
            return {"t": type(v).__name__, "items": [encode(i, depth + 1) for i in v]}
        if isinstance(v, dict):
            if not all(isinstance(k, str) for k in v):
                raise WireError("dict keys must be strings")
            return {"t": "dict", "items": {k: encode(i, depth + 1) for k, i in v.items()}}
        if isinstance(v, np.ndarray):
            if v.dtype.name not in NUMPY_DTYPES:
                raise WireError(f"arrays of dtype {v.dtype} cannot cross")
            name = _next(counter)
            # np.array(..., subok=False) drops any subclass: only the values cross, not their methods
            np.save(os.path.join(folder, name), np.array(v, order="C", subok=False), allow_pickle=False)
            return {"t": "ndarray", "file": name}
        torch = _torch_if_loaded()
        if torch is not None and isinstance(v, torch.Tensor):
            return _encode_tensor(torch, v, folder, _next(counter))
        raise WireError(f"values of type {type(v).__name__} cannot cross")

    manifest = encode(value)
    with open(os.path.join(folder, MANIFEST), "w") as f:
        json.dump(manifest, f)


def load(folder: str, max_bytes: int = 1 << 30, allow_devices=("cpu", "cuda")):
    """Read back what `dump` wrote, refusing anything that is not plain data or is too big."""
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path) or os.path.islink(path):
        raise WireError("no manifest")
    if os.path.getsize(path) > MAX_MANIFEST_BYTES:
        raise WireError("manifest too large")
    with open(path) as f:
        try:
            manifest = json.load(f)
        except ValueError as e:
            raise WireError(f"manifest is not JSON: {e}") from None
    budget = {"nodes": MAX_NODES, "bytes": max_bytes}

    def decode(node, depth=0):
        budget["nodes"] -= 1
        if budget["nodes"] < 0 or depth > MAX_DEPTH or not isinstance(node, dict):
            raise WireError("malformed manifest")
        kind = node.get("t")
        if kind == "py":
            v = node.get("v")
            if v is not None and not isinstance(v, (bool, int, str)):
                raise WireError("malformed manifest")
            return v
        if kind == "float":
            text = node.get("v")
            if not isinstance(text, str) or len(text) > 40:
                raise WireError("malformed float")
            try:
                return float(text)
            except ValueError:
                raise WireError("malformed float") from None
        if kind in ("list", "tuple"):
            items = node.get("items")
            if not isinstance(items, list):
                raise WireError("malformed manifest")
            out = [decode(i, depth + 1) for i in items]
            return tuple(out) if kind == "tuple" else out
        if kind == "dict":
            items = node.get("items")
            if not isinstance(items, dict):
                raise WireError("malformed manifest")
            return {str(k): decode(i, depth + 1) for k, i in items.items()}
        if kind == "ndarray":
            return _read_array(folder, node.get("file"), NUMPY_DTYPES, budget)
        if kind == "tensor":
            return _decode_tensor(folder, node, budget, allow_devices)
        raise WireError(f"unknown kind {kind!r}")

    return decode(manifest)


def _next(counter) -> str:
    counter[0] += 1
    return f"a{counter[0]}.npy"


def _torch_if_loaded():
    import sys
    return sys.modules.get("torch")


def _read_array(folder, name, dtypes, budget) -> np.ndarray:
    if not isinstance(name, str) or not name.endswith(".npy") or "/" in name or name.startswith("."):
        raise WireError("malformed array name")
    path = os.path.join(folder, name)
    if not os.path.isfile(path) or os.path.islink(path):
        raise WireError(f"missing array file {name}")
    budget["bytes"] -= os.path.getsize(path)
    if budget["bytes"] < 0:
        raise WireError("arrays too large")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as e:  # a truncated or forged file
        raise WireError(f"unreadable array {name}: {type(e).__name__}") from None
    if type(array) is not np.ndarray or array.dtype.name not in dtypes:
        raise WireError(f"array {name} has a dtype that cannot cross")
    return array


def _encode_tensor(torch, t, folder, name) -> dict:
    t = t.detach()
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in TENSOR_DTYPES:
        raise WireError(f"tensors of dtype {t.dtype} cannot cross")
    # Keep the strides: store the span of storage the view covers, and the view.
    offset = t.storage_offset()
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0
    base = t.as_strided((span,), (1,), offset).cpu() if span else t.new_empty(0, device="cpu")
    raw = base.view(torch.int16) if t.dtype == torch.bfloat16 else base
    np.save(os.path.join(folder, name), raw.numpy(), allow_pickle=False)
    return {"t": "tensor", "file": name, "dtype": dtype, "device": str(t.device),
            "shape": list(t.shape), "stride": list(t.stride()) if t.numel() else [1] * t.dim()}


def _decode_tensor(folder, node, budget, allow_devices):
    import torch

    dtype, device = node.get("dtype"), node.get("device")
    shape, stride = node.get("shape"), node.get("stride")
    if dtype not in TENSOR_DTYPES or not isinstance(device, str):
        raise WireError("malformed tensor")
    if device.split(":")[0] not in allow_devices or len(device) > 10:
        raise WireError(f"device {device!r} not allowed")
    if not (isinstance(shape, list) and isinstance(stride, list) and len(shape) == len(stride) <= 8
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape)
            and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in stride)):
        raise WireError("malformed tensor shape")
    stored = "int16" if dtype == "bfloat16" else dtype
    raw = _read_array(folder, node.get("file"), {stored}, budget)
    if raw.ndim != 1:
        raise WireError("malformed tensor storage")
    base = torch.from_numpy(raw.copy())
    if dtype == "bfloat16":
        base = base.view(torch.bfloat16)
    numel = math.prod(shape)
    span = 1 + sum((n - 1) * s for n, s in zip(shape, stride)) if numel else 0
    if span > base.numel():
        raise WireError("tensor view outside its storage")
    return base.to(device).as_strided(shape, stride, 0)
