"""Inert data across the sandbox wall: a JSON manifest and plain .npy arrays, carried in frames.

Nothing that crosses can carry code: the manifest is JSON, arrays are loaded
with `allow_pickle=False`, dtypes and devices come from allow-lists, and sizes
are checked before anything is read. What can cross: None, bool, int, float,
str, lists and tuples, dicts with string keys, NumPy arrays of numeric or bool
dtype, and torch tensors (dtype, device and strides kept; bfloat16 travels as
its 16 raw bits).

A value packs into a few named files (`manifest.json`, `a1.npy`, ...). Files
cross the wall as *frames* on a pipe: a header line `NAME SIZE` and SIZE bytes.
The receiving side accepts only short relative names, bounded sizes and a
bounded count, and never writes them anywhere by the name it was sent: the
job's inputs go in this way and the results come out this way, so the
sandboxed process needs no folder shared with the grader.

This module imports only the standard library and NumPy (torch when a tensor
crosses): the sandbox imports it from a copy.
"""

from __future__ import annotations

import json
import math
import os
import re

import numpy as np

MANIFEST = "manifest.json"
NUMPY_DTYPES = {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                "float16", "float32", "float64"}
TENSOR_DTYPES = {"bool", "int32", "int64", "float16", "bfloat16", "float32", "float64"}
MAX_NODES = 10_000
MAX_DEPTH = 16
MAX_MANIFEST_BYTES = 1 << 20
ARRAY_NAME = re.compile(r"a[0-9]{1,6}\.npy")
# A frame's name: up to four path parts of letters, digits, '_', '.', '-', none starting with '.' or '-'.
FRAME_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}){0,3}")
MAX_HEADER = 300
# Taken when this module is imported, before any of a submission's code runs in the sandbox: `pack` runs
# after the student's function returned, and must not call what the student could have replaced since
# (numpy.save = a function of theirs). NumPy's types cannot be changed; its modules can.
_array, _ndarray, _generic, _tobytes = np.array, np.ndarray, np.generic, np.ndarray.tobytes
_dumps = json.dumps
NPY_ALIGN = 64  # np.save pads its header so that the data starts at a multiple of 64 bytes


def loads(raw: bytes | str):
    """JSON a submission could have written: text nested too deeply for the parser (a RecursionError, which
    is no ValueError) is malformed like any other, not a crash of the grader that reads it."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


class WireError(ValueError):
    """What came back cannot be read as plain data; the message says why."""


# --- values <-> files -----------------------------------------------------------------------

def pack(value) -> dict[str, bytes]:
    """`value` as files: `manifest.json` plus one `.npy` per array."""
    files: dict[str, bytes] = {}

    def add_array(a: np.ndarray) -> str:
        name = f"a{len(files) + 1}.npy"
        files[name] = npy_bytes(a)
        return name

    def encode(v, depth=0):
        # Exact types: a subclass's methods (a list's __iter__, a float's __repr__) would run the student's
        # code here, outside the guards of the call that returned it.
        if depth > MAX_DEPTH:
            raise WireError("value nested too deeply")
        kind = type(v)
        if v is None or kind in (bool, int, str):
            return {"t": "py", "v": v}
        if kind is float:
            return {"t": "float", "v": float.__repr__(v)}  # repr keeps nan and inf, which JSON lacks
        if isinstance(v, _generic):  # NumPy's scalar types cannot be subclassed in Python and changed
            return encode(v.item(), depth)
        if kind in (list, tuple):
            return {"t": "tuple" if kind is tuple else "list", "items": [encode(i, depth + 1) for i in v]}
        if kind is dict:
            if not all(type(k) is str for k in v):
                raise WireError("dict keys must be strings")
            return {"t": "dict", "items": {k: encode(i, depth + 1) for k, i in dict.items(v)}}
        if isinstance(v, _ndarray):
            if v.dtype.name not in NUMPY_DTYPES:
                raise WireError(f"arrays of dtype {v.dtype} cannot cross")
            # np.array(..., subok=False) drops any subclass: only the values cross, not their methods
            return {"t": "ndarray", "file": add_array(_array(v, order="C", subok=False))}
        torch = _torch_if_loaded()
        if torch is not None and isinstance(v, torch.Tensor):
            return _encode_tensor(torch, v, add_array)
        plain = next((t for t in (int, float, str, list, tuple, dict) if isinstance(v, t)), None)
        raise WireError(f"values of type {kind.__name__} cannot cross" +
                        (f": return a plain {plain.__name__}" if plain else ""))

    manifest = _dumps(encode(value)).encode()
    return {MANIFEST: manifest, **files}


def npy_bytes(a: np.ndarray) -> bytes:
    """A C-ordered array of a numeric or bool dtype as the bytes np.save writes for it (format 1.0)."""
    header = f"{{'descr': '{a.dtype.str}', 'fortran_order': False, 'shape': {tuple(a.shape)!r}, }}"
    padded = header + " " * (-(10 + len(header) + 1) % NPY_ALIGN) + "\n"
    return b"\x93NUMPY\x01\x00" + len(padded).to_bytes(2, "little") + padded.encode("latin-1") + _tobytes(a, "C")


def unpack(files, max_bytes: int = 1 << 30, allow_devices=("cpu", "cuda")):
    """Read back what `pack` wrote, from a mapping name -> bytes (or a function of the name)."""
    read = files if callable(files) else (lambda name: files.get(name))
    raw = read(MANIFEST)
    if raw is None:
        raise WireError("no manifest")
    if len(raw) > MAX_MANIFEST_BYTES:
        raise WireError("manifest too large")
    try:
        manifest = loads(raw)
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
            if isinstance(v, str) and len(v) > 10_000:
                raise WireError("string too long")
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
            return _read_array(read, node.get("file"), NUMPY_DTYPES, budget)
        if kind == "tensor":
            return _decode_tensor(read, node, budget, allow_devices)
        raise WireError(f"unknown kind {kind!r}")

    return decode(manifest)


def _torch_if_loaded():
    """torch, where this process imported it; not a NumPy exercise's stand-in without a file (calling.loaded_torch)."""
    import sys
    torch = sys.modules.get("torch")
    return torch if getattr(torch, "__file__", None) else None


def _read_array(read, name, dtypes, budget) -> np.ndarray:
    if not isinstance(name, str) or not ARRAY_NAME.fullmatch(name):
        raise WireError("malformed array name")
    data = read(name)
    if data is None:
        raise WireError(f"missing array file {name}")
    budget["bytes"] -= len(data)
    if budget["bytes"] < 0:
        raise WireError("arrays too large")
    array = parse_npy(data, name)
    if array.dtype.name not in dtypes:
        raise WireError(f"array {name} has a dtype that cannot cross")
    return array


# The header np.save writes for a plain array, and nothing else: a numeric or bool dtype, a shape.
NPY_HEADER = re.compile(r"\{'descr': '([<>|=][biuf][0-9]{1,2})', 'fortran_order': (True|False), "
                        r"'shape': \(((?:[0-9]{1,12}, ?)*(?:[0-9]{1,12})?)\), \} *\n?")


def parse_npy(data: bytes, name: str = "array") -> np.ndarray:
    """An array from the bytes of a .npy file, parsed strictly here rather than by np.load.

    np.load reads the header with ast.literal_eval, which in CPython 3.11 can fail at random with
    SystemError while another thread parses Python (the grader grades in threads); and a format this
    narrow has less to go wrong with forged files.
    """
    if data[:6] != b"\x93NUMPY" or len(data) < 10 or data[6] not in (1, 2, 3):
        raise WireError(f"{name} is not a .npy file")
    start = 10 if data[6] == 1 else 12
    length = int.from_bytes(data[8:start], "little")
    if length > 4096 or len(data) < start + length:
        raise WireError(f"{name} has a malformed header")
    match = NPY_HEADER.fullmatch(data[start:start + length].decode("latin-1"))
    if match is None:
        raise WireError(f"{name} has a malformed header")
    try:
        dtype = np.dtype(match[1])
    except (TypeError, ValueError):  # a spelling np.save never writes: '<f3', '<i16'
        raise WireError(f"{name} has an unknown dtype {match[1]!r}") from None
    shape = tuple(int(n) for n in match[3].replace(" ", "").split(",") if n)
    count = math.prod(shape)
    body = memoryview(data)[start + length:]
    if len(shape) > 32 or len(body) != count * dtype.itemsize:
        raise WireError(f"{name} is truncated or has trailing bytes")
    array = np.frombuffer(body, dtype=dtype, count=count)
    return array.reshape(shape, order="F" if match[2] == "True" else "C").copy(order="K")


def _encode_tensor(torch, t, add_array) -> dict:
    if type(t) is not torch.Tensor:  # a subclass may override what .cpu() or .numpy() return
        t = t.as_subclass(torch.Tensor)
    t = t.detach()
    dtype = str(t.dtype).removeprefix("torch.")
    if dtype not in TENSOR_DTYPES:
        raise WireError(f"tensors of dtype {t.dtype} cannot cross")
    if t.layout != torch.strided:
        raise WireError(f"tensors of layout {t.layout} cannot cross")
    if t.is_meta:
        raise WireError("tensors on the meta device hold no values and cannot cross")
    # Keep the strides: store the span of storage the view covers, and the view.
    offset = t.storage_offset()
    if any(s < 0 for s in t.stride()):
        raise WireError("tensors with negative strides cannot cross")
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride())) if t.numel() else 0
    base = t.as_strided((span,), (1,), offset).cpu() if span else t.new_empty(0, device="cpu")
    raw = base.view(torch.int16) if t.dtype == torch.bfloat16 else base
    name = add_array(np.array(raw.numpy(), subok=False))
    return {"t": "tensor", "file": name, "dtype": dtype, "device": str(t.device),
            "shape": list(t.shape), "stride": list(t.stride()) if t.numel() else [1] * t.dim()}


def _decode_tensor(read, node, budget, allow_devices):
    import torch

    dtype, device = node.get("dtype"), node.get("device")
    shape, stride = node.get("shape"), node.get("stride")
    if dtype not in TENSOR_DTYPES or not isinstance(device, str):
        raise WireError("malformed tensor")
    _check_device(torch, device, allow_devices)
    if not (isinstance(shape, list) and isinstance(stride, list) and len(shape) == len(stride) <= 8
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in shape)
            and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in stride)):
        raise WireError("malformed tensor shape")
    # Sizes first, from the manifest alone: nothing is read or allocated for a view that is refused.
    numel = math.prod(shape)
    span = 1 + sum((n - 1) * s for n, s in zip(shape, stride)) if numel else 0
    if numel > span:  # stride 0 or overlapping strides: a huge declared shape over a tiny storage
        raise WireError(f"a tensor of shape {tuple(shape)} is a view repeating its storage ({numel} elements "
                        f"over {span} stored): return a tensor that holds its values")
    stored = "int16" if dtype == "bfloat16" else dtype
    raw = _read_array(read, node.get("file"), {stored}, budget)
    if raw.ndim != 1:
        raise WireError("malformed tensor storage")
    if span > raw.size:
        raise WireError("tensor view outside its storage")
    try:
        base = torch.from_numpy(raw.copy())
        if dtype == "bfloat16":
            base = base.view(torch.bfloat16)
        return base.to(device).as_strided(shape, stride, 0)
    except MemoryError:  # the grader's machine ran out (a GPU shared by several jobs): not the answer's fault
        raise
    except Exception as e:  # whatever else torch refuses is a malformed answer, never the grader's failure
        if type(e).__name__ == "OutOfMemoryError":  # torch.cuda's, a RuntimeError: the grader's machine too
            raise
        raise WireError(f"a tensor on {device} could not be rebuilt ({type(e).__name__}: {str(e)[:200]})") from None


DEVICE = re.compile(r"(cpu|cuda)(:[0-9]{1,2})?")


def _check_device(torch, device: str, allow_devices) -> None:
    """A tensor's device: one of `allow_devices`, spelled as torch spells it, and one this machine has."""
    match = DEVICE.fullmatch(device)
    if match is None or match[1] not in allow_devices:
        raise WireError(f"device {device[:20]!r} not allowed")
    if match[1] == "cuda":
        try:
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        except Exception:  # a driver that cannot even be asked
            count = 0
        if int((match[2] or ":0")[1:]) >= count:
            raise WireError(f"a tensor on {device}, which this machine does not have: the answer came from "
                            "code that changed what the grader sends back")


# --- frames on a pipe -----------------------------------------------------------------------

def frame(name: str, data: bytes) -> bytes:
    """One file as a frame: the header line `NAME SIZE`, then the bytes."""
    if not FRAME_NAME.fullmatch(name):
        raise WireError(f"bad frame name {name!r}")
    return f"{name} {len(data)}\n".encode() + data


def write_frames(fd: int, files) -> None:
    """Write (name, bytes) pairs to a file descriptor as frames, each in as few writes as it takes."""
    for name, data in files:
        view = memoryview(frame(name, data))
        while view:
            view = view[os.write(fd, view):]


class FrameReader:
    """Parses frames as bytes arrive, refusing bad names, duplicates, and too many or too large files.

    `files` holds what arrived whole, in order; after the first error (`error`
    says what it was) nothing more is accepted, and what came before stays.
    """

    def __init__(self, max_files: int = 20_000, max_bytes: int = 256 << 20, max_file_bytes: int = 64 << 20,
                 check=None):
        self.check = check  # called with each frame's name as its header arrives; a ValueError refuses it
        self.files: dict[str, bytes] = {}
        self.error: str | None = None
        self._buffer = bytearray()
        self._limits = (max_files, max_bytes, max_file_bytes)
        self._total = 0
        self._checked: set[str] = set()

    def feed(self, chunk: bytes) -> None:
        if self.error is not None:
            return
        self._buffer += chunk
        try:
            self._parse()
        except ValueError as e:  # WireError, or the check's refusal
            self.error = str(e)
            self._buffer = bytearray()

    def close(self) -> None:
        """No more bytes will come: an unfinished frame is an error."""
        if self.error is None and self._buffer:
            self.error = "the stream ended inside a frame"

    def _parse(self) -> None:
        max_files, max_bytes, max_file_bytes = self._limits
        while True:
            end = self._buffer.find(b"\n", 0, MAX_HEADER)
            if end < 0:
                if len(self._buffer) >= MAX_HEADER:
                    raise WireError("malformed frame header")
                return
            try:
                name, size_text = self._buffer[:end].decode("ascii").split(" ")
                size = int(size_text)
            except ValueError:
                raise WireError("malformed frame header") from None
            if not FRAME_NAME.fullmatch(name) or not size_text.isdigit():
                raise WireError(f"bad frame name {name[:80]!r}")
            if size > max_file_bytes:
                raise WireError(f"frame {name} too large")
            if name in self.files:
                raise WireError(f"frame {name} sent twice")
            if len(self.files) >= max_files or self._total + size > max_bytes:
                raise WireError("too many or too large frames")
            if self.check is not None and name not in self._checked:
                self._checked.add(name)
                self.check(name)
            if len(self._buffer) < end + 1 + size:
                return
            self.files[name] = bytes(self._buffer[end + 1:end + 1 + size])
            self._total += size
            del self._buffer[:end + 1 + size]


def read_frames(fd: int, **limits) -> dict[str, bytes]:
    """Every frame from a file descriptor until its end; WireError if the stream is malformed."""
    reader = FrameReader(**limits)
    while chunk := os.read(fd, 1 << 20):
        reader.feed(chunk)
    reader.close()
    if reader.error:
        raise WireError(reader.error)
    return reader.files


def subfolder(files: dict[str, bytes], prefix: str) -> dict[str, bytes]:
    """The files under `prefix/`, with the prefix taken off their names."""
    start = prefix.rstrip("/") + "/"
    return {name[len(start):]: data for name, data in files.items() if name.startswith(start)}
