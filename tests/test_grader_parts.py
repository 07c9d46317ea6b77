"""The autograder's parts on their own: the data wire, cell picking, the autograd lock."""

import json

import numpy as np
import pytest
import torch

from autograder import wire
from autograder.cells import SubmissionError, defined_names, pick, read_submission
from autograder.course import notebooks
from helpers import solved, submission
from normgrad import calling


# --- wire -----------------------------------------------------------------------------------

def test_wire_round_trip_keeps_structure_dtypes_and_strides(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    value = ([np.arange(6.0).reshape(2, 3), {"eps": 1e-5, "n": 3, "name": "x", "none": None}],
             torch.tensor([1.5, -2.0], dtype=torch.bfloat16), base.t(), base[:, 1::2], float("nan"), (True,))
    wire.dump(value, str(tmp_path))
    back = wire.load(str(tmp_path))
    assert isinstance(back, tuple) and isinstance(back[0], list)
    np.testing.assert_array_equal(back[0][0], value[0][0])
    assert back[0][1] == value[0][1]
    assert back[1].dtype == torch.bfloat16 and torch.equal(back[1], value[1])
    assert back[2].stride() == base.t().stride() and torch.equal(back[2], base.t())
    assert not back[3].is_contiguous() and torch.equal(back[3], base[:, 1::2])
    assert np.isnan(back[4]) and back[5] == (True,)


def test_wire_drops_array_subclasses_to_their_values(tmp_path):
    class Liar(np.ndarray):
        def __eq__(self, other):
            return True

    wire.dump(np.ones(3).view(Liar), str(tmp_path))
    back = wire.load(str(tmp_path))
    assert type(back) is np.ndarray


@pytest.mark.parametrize("value", [object(), np.array([object()]), {1: 2}, lambda: 0])
def test_wire_refuses_what_is_not_plain_data(tmp_path, value):
    with pytest.raises(wire.WireError):
        wire.dump(value, str(tmp_path))


def test_wire_load_refuses_pickles_forged_manifests_and_oversized_arrays(tmp_path):
    np.save(tmp_path / "a1.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "manifest.json").write_text(json.dumps({"t": "ndarray", "file": "a1.npy"}))
    with pytest.raises(wire.WireError):
        wire.load(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"t": "ndarray", "file": "../../etc/passwd"}))
    with pytest.raises(wire.WireError):
        wire.load(str(tmp_path))
    (tmp_path / "manifest.json").write_text(json.dumps({"t": "code", "v": "import os"}))
    with pytest.raises(wire.WireError):
        wire.load(str(tmp_path))
    np.save(tmp_path / "a2.npy", np.zeros(1000))
    (tmp_path / "manifest.json").write_text(json.dumps({"t": "ndarray", "file": "a2.npy"}))
    with pytest.raises(wire.WireError):
        wire.load(str(tmp_path), max_bytes=100)
    (tmp_path / "manifest.json").write_text("not json")
    with pytest.raises(wire.WireError):
        wire.load(str(tmp_path))


def test_wire_refuses_tensor_views_outside_their_storage(tmp_path):
    wire.dump(torch.zeros(4), str(tmp_path))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["shape"], manifest["stride"] = [4, 4], [4, 1]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(wire.WireError):
        wire.load(str(tmp_path))


# --- picking the solution cells -------------------------------------------------------------

def test_defined_names_reads_top_level_definitions_even_in_broken_code():
    assert defined_names("import numpy as np\n\ndef f(x):\n    def inner(): pass\nclass G: pass") == {"f", "G"}
    assert defined_names("def f(x):\n    return (\n") == {"f"}


def test_pick_ignores_metadata_order_and_unchanged_test_cells():
    nb = solved("01-forward")
    for cell in nb.cells:  # a student who swaps grade_ids and points gains nothing
        if "nbgrader" in cell.metadata:
            cell.metadata["nbgrader"]["grade_id"] = "swapped"
            cell.metadata["nbgrader"]["points"] = 1000
    nb.cells.reverse()
    picked, problems = pick(nb, notebooks("01-forward"))
    assert problems == []
    assert sorted(p.label for p in picked) == ["batchnorm_forward", "layernorm_forward"]
    assert all("run_tests" not in p.source for p in picked)


def test_pick_reports_a_deleted_cell_and_takes_the_last_definition():
    nb = submission("01-forward", {"layernorm_forward": "def layernorm_forward(x, gamma, beta, eps=1e-5):\n    return 1"})
    nb.cells = [c for c in nb.cells if "def batchnorm_forward" not in c.source]
    nb.cells.append(nb.cells[0].copy())
    nb.cells[-1].cell_type = "code"
    nb.cells[-1].source = "def layernorm_forward(x, gamma, beta, eps=1e-5):\n    return 2"
    nb.cells[-1].outputs, nb.cells[-1].execution_count = [], None
    picked, problems = pick(nb, notebooks("01-forward"))
    assert [p.source.endswith("return 2") for p in picked] == [True]
    assert any("batchnorm_forward" in p for p in problems)


@pytest.mark.parametrize("content,reason", [
    (b"{not json", "not valid notebook JSON"),
    (b'{"cells": 3}', "not a notebook"),
    (b"\xff\xfe", "not valid notebook JSON"),
])
def test_unreadable_submissions_are_refused_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    with pytest.raises(SubmissionError, match=reason):
        read_submission(path)


# --- the autograd lock ----------------------------------------------------------------------

def test_autograd_is_locked_during_a_call_and_restored_after():
    def cheat(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (x**2).sum().backward()
        return x.grad

    with pytest.raises(RuntimeError, match="compute the gradient by hand"):
        calling.invoke("call", cheat, (torch.ones(3),), {})
    assert torch.equal(cheat(torch.ones(3)), 2 * torch.ones(3))


def test_autograd_function_protocol_runs_the_students_backward():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta):
            ctx.save_for_backward(x)
            return x * x * gamma + beta

        @staticmethod
        def backward(ctx, dy):
            (x,) = ctx.saved_tensors
            return 2 * x * dy, None, dy

    x, gamma, beta, dy = torch.tensor([1.0, 2.0]), torch.tensor(3.0), torch.tensor([0.5, 0.25]), torch.tensor([1.0, -1.0])
    y, dx, dgamma, dbeta = calling.invoke("autograd_function", Square, (x, gamma, beta, dy), {})
    assert torch.equal(y, x * x * 3 + beta) and torch.equal(dx, 2 * x * dy) and dgamma is None
    assert torch.equal(dbeta, dy)


def test_autograd_function_protocol_refuses_gradients_it_did_not_compute():
    class Plain:  # not a Function: autograd would differentiate its ops
        @staticmethod
        def apply(x, gamma, beta):
            return x * gamma + beta

    class Sneaky(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta):
            return x * gamma + beta

        @staticmethod
        def backward(ctx, dy):
            return dy, None, None

        @staticmethod
        def apply(x, gamma, beta):  # the Function is bypassed: autograd's own Mul and Add would answer
            return x * gamma + beta

    args = (torch.tensor([1.0, 2.0]), torch.tensor(3.0), torch.tensor(0.5), torch.tensor([1.0, -1.0]))
    with pytest.raises(TypeError, match="subclass of torch.autograd.Function"):
        calling.invoke("autograd_function", Plain, args, {})
    with pytest.raises(TypeError, match="its gradient would come from AddBackward0"):
        calling.invoke("autograd_function", Sneaky, args, {})
