"""The sandbox wall: what runs inside is one package, frames come only in the order the job expects,
the sandbox user gets no namespaces, mounts or keyrings, the fallback's Landlock rules hold, huge views
do not cross, graders share uid locks and sweep each other's leftovers, and autograd stays locked however
a call reaches for it."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from autograder import cgroup, grading, sandbox, seccomp
from autograder.inside import calling, confine, protocol, wire
from helpers import child_env, fallback_sandbox

INSIDE = Path(sandbox.__file__).parent / "inside"
ROOT = INSIDE.parent.parent
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a sandbox uid per job)")


# --- the package ------------------------------------------------------------------------------------

def test_the_inside_imports_nothing_of_the_course():
    siblings = {p.stem for p in INSIDE.glob("*.py")}
    allowed = set(sys.stdlib_module_names) | {"numpy", "torch", "triton"} | siblings
    for path in INSIDE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_frame_names_are_spelled_only_in_the_protocol():
    for path in [*ROOT.glob("autograder/**/*.py")]:
        if path.name == "protocol.py":
            continue
        text = path.read_text()
        assert not re.search(r"""["'][^"'\n]*(status\.json|/begun|job\.json)""", text), path


def test_the_expected_order_refuses_forged_and_out_of_turn_frames():
    job = protocol.Job((protocol.Cell("k0", "a", ""),), (protocol.CallSpec("c000", "f", "call"),
                                                          protocol.CallSpec("c001", "f", "call")))
    expected = protocol.Expected(job)
    for name, event in [(protocol.begun("k0"), "begun"), (protocol.status("k0"), "status"),
                        (protocol.begun("c000"), "begun"), (protocol.returned("c000") + "/manifest.json", None),
                        (protocol.status("c000"), "status")]:
        assert expected.accept(name) == event
    for forged in (protocol.status("c000"), protocol.status("c001"), protocol.begun("c000"),
                   protocol.returned("c001") + "/a1.npy", "k0/begun"):
        with pytest.raises(protocol.ProtocolViolation):
            expected.accept(forged)
    assert expected.accept(protocol.begun("c001")) == "begun"
    with pytest.raises(protocol.ProtocolViolation):
        expected.accept(protocol.returned("c000") + "/manifest.json")


def test_a_job_round_trips_as_json():
    job = protocol.Job((protocol.Cell("k0", "a", "x = 1"),), (protocol.CallSpec("c000", "f", "call", "cpu", 2.5),),
                       torch=True, reap=True, count_kernels=True)
    assert protocol.Job.decode(job.encode()) == job


# --- huge views -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,what", [((1 << 20, 1 << 21), "8 TiB"), ((65536, 65536), "17 GB")])
def test_a_huge_view_over_a_tiny_storage_is_refused_before_any_allocation(shape, what):
    view = torch.zeros(1).as_strided(shape, (0, 0))
    files = wire.pack(view)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(wire.WireError, match="repeating its storage"):
        wire.unpack(files)
    problems, returned = grading._judge_call({protocol.status("c0"): b'{"error": null}',
                                              **{f"{protocol.returned('c0')}/{k}": v for k, v in files.items()},
                                              **{f"{protocol.args_after('c0')}/{k}": v
                                                 for k, v in wire.pack([]).items()}}, "c0", None)
    assert returned is None and "repeating its storage" in problems[0], what
    assert time.monotonic() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 << 10  # KiB: under 64 MiB more


def test_ordinary_views_still_cross():
    base = torch.arange(24.0).reshape(4, 6)
    for view in (base.t(), base[:, 1::2], base[1:2], torch.zeros(0, 3)):
        back = wire.unpack(wire.pack(view))
        assert torch.equal(back, view) and (back.stride() == view.stride() or not view.numel())


def _forged(device: str) -> dict[str, bytes]:
    files = wire.pack(torch.arange(6.0).reshape(2, 3))
    manifest = json.loads(files[wire.MANIFEST])
    manifest["device"] = device
    return {**files, wire.MANIFEST: json.dumps(manifest).encode()}


def _judged(files: dict[str, bytes]) -> tuple[list[str], object]:
    return grading._judge_call({protocol.status("c0"): b'{"error": null}',
                                **{f"{protocol.returned('c0')}/{k}": v for k, v in files.items()},
                                **{f"{protocol.args_after('c0')}/{k}": v for k, v in wire.pack([]).items()}},
                               "c0", None)


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "cuda:99", "meta", "cpu:x", "cuda:-1", "mps", "cuda:0\n"])
def test_a_forged_device_is_a_failed_answer_not_an_internal_error(device):
    if device.startswith("cuda") and torch.cuda.is_available() and device in ("cuda", "cuda:0"):
        pytest.skip("this machine has that device")
    with pytest.raises(wire.WireError, match="device|does not have"):
        wire.unpack(_forged(device))
    problems, returned = _judged(_forged(device))
    assert returned is None and problems[0].startswith("returned something that is not plain data"), problems


def test_a_tensor_on_the_cpu_still_crosses_and_torch_refusals_become_wire_errors(monkeypatch):
    files = _forged("cpu")
    assert torch.equal(wire.unpack(files), torch.arange(6.0).reshape(2, 3))
    monkeypatch.setattr(torch.Tensor, "as_strided", lambda *a, **k: (_ for _ in ()).throw(AssertionError("boom")))
    with pytest.raises(wire.WireError, match="could not be rebuilt"):
        wire.unpack(files)
    # the grader's own machine running out of memory is not the answer's fault: it is not a wire error
    for shortage in (MemoryError(), type("OutOfMemoryError", (RuntimeError,), {})("CUDA out of memory")):
        monkeypatch.setattr(torch.Tensor, "as_strided", lambda *a, e=shortage, **k: (_ for _ in ()).throw(e))
        with pytest.raises(type(shortage)):
            wire.unpack(files)


def test_every_rerun_together_sends_back_no_more_than_one_run_of_every_call_may():
    """A call that bloats what it sends back and then ends its process: each rerun once had the whole allowance
    again, and the frames every rerun kept held the grader's own process at 1.5 GB for one notebook."""
    calls = tuple(protocol.CallSpec(f"c{i:03d}", f"f{i}", "call") for i in range(6))
    inputs = {f"{protocol.inputs(c.id)}/a0.npy": b"x" * 1000 for c in calls}
    limits = sandbox.Limits(result_bytes=4 << 20)

    class Bloating:  # sends back all it may, then ends its process in the next call
        def run(self, job, sent, limits, gpu, env_extra):
            room = limits.result_bytes
            first, *rest = job.calls
            files = {protocol.status(first.id): b'{"error": null}', f"{first.id}/returned/a0.npy": b"y" * room}
            return sandbox.Outcome(files, -9, None, rest[0].id if rest else None, 0.0, "", "", None, "fake")

    result = sandbox.run_job(Bloating(), protocol.Job((), calls), inputs, limits)
    kept = sum(len(d) for frames in result.verdicts.values() if isinstance(frames, dict) for d in frames.values())
    assert kept <= limits.result_bytes + 2 * sum(map(len, inputs.values())) + 100 * len(calls)
    assert set(result.verdicts) == {c.id for c in calls}  # every call has its verdict, none is lost
    assert "all that one notebook's tests may" in result.verdicts["c005"]


@pytest.mark.parametrize("descr", ["<f3", "<i3", "<u16", "<f1", "|b2"])
def test_an_npy_header_with_an_impossible_dtype_is_a_wire_error(descr):
    good = wire.pack(np.zeros(4, np.float32))
    data = good["a1.npy"].replace(b"'<f4'", f"'{descr}'".encode())
    assert data != good["a1.npy"]
    with pytest.raises(wire.WireError):
        wire.parse_npy(data)
    problems, returned = _judged({**good, "a1.npy": data})
    assert returned is None and problems[0].startswith("returned something that is not plain data"), problems


# --- jobs in the sandbox ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def box():
    if os.geteuid() != 0:
        pytest.skip("the wall is checked in the root set-up (a sandbox uid per job)")
    found = sandbox.Sandbox()
    if found.mode != "bwrap":
        pytest.skip(found.reason)
    return found


@pytest.fixture(scope="module")
def fallback_box():
    if os.geteuid() != 0:
        pytest.skip("the wall is checked in the root set-up (a sandbox uid per job)")
    with contextlib.ExitStack() as stack:
        try:  # in CI's clone (a folder of mode 0700), on this venv's files where the sandbox user can read them
            found, _, _ = stack.enter_context(fallback_sandbox())
        except sandbox.SandboxError as e:
            pytest.skip(str(e))
        yield found


def run(box, source: str, calls: list[tuple[str, tuple]], torch_job: bool = False, seconds: float = 10.0,
        gpu: bool = False, memory_bytes: int = 2 << 30, **options) -> tuple[sandbox.JobResult, dict]:
    """One job: a cell, and calls fn(*args); returns the result and, per call, (status, returned or None).
    `gpu`: run it as a GPU job (the GPU's devices bound, exec kept)."""
    specs = tuple(protocol.CallSpec(f"c{i:03d}", fn, "call", "cpu", seconds) for i, (fn, _) in enumerate(calls))
    inputs = {f"{protocol.inputs(s.id)}/{n}": d for s, (_, args) in zip(specs, calls)
              for n, d in wire.pack((list(args), {})).items()}
    job = protocol.Job((protocol.Cell("k0", "cell", textwrap.dedent(source)),), specs, torch=torch_job, reap=True,
                       **options)
    env = {"TRITON_INTERPRET": "1"} if options.get("count_kernels") else None
    result = sandbox.run_job(box, job, inputs, sandbox.Limits(memory_bytes=memory_bytes), gpu=gpu, env_extra=env)
    out = {}
    for spec, (fn, _) in zip(specs, calls):
        verdict = result.verdicts[spec.id]
        if isinstance(verdict, str):
            out[fn] = (verdict, None)
            continue
        status = json.loads(verdict[protocol.status(spec.id)])
        back = wire.unpack(wire.subfolder(verdict, protocol.returned(spec.id))) if not status["error"] else None
        out[fn] = (status, back)
    return result, out


def test_a_job_larger_than_the_wires_defaults_runs_and_comes_back_whole(box):
    """A GPU's inputs for 06-triton come to 320 MiB, over the wire's default 256: the job reads its own file
    by its size, and the grader takes back room for each call's arguments and results beside its allowance."""
    big = np.arange(20 << 20, dtype=np.float64)  # 160 MiB, twice: 320 MiB in, as much again back
    source = "def last(a):\n    return float(a[-1])\nfirst = last\n"
    _, out = run(box, source, [("first", (big,)), ("last", (big[:-1],))], seconds=60.0)
    assert (out["first"][1], out["last"][1]) == (float(big[-1]), float(big[-2])), out


FORGER = """
import os, threading, time
def _forge():
    for i in range(40):
        for name in (b"c000/status.json", b"c000/begun", b"c001/begun"):
            frame = name + b" 15\\n" + b'{"error": null}'
            for fd in map(int, os.listdir("/proc/self/fd")):  # whichever number the results pipe has
                try:
                    os.write(fd, frame)
                except OSError:
                    pass
        time.sleep(0.25)
def hangs(x):
    threading.Thread(target=_forge, daemon=True).start()
    while True:
        time.sleep(1)
def fine(x):
    return x
"""


def test_forged_frames_from_a_thread_neither_restart_the_watchdog_nor_count(box):
    start = time.monotonic()
    # the forger starts at once and the hung call may run 5 s: on a busy machine its frames still come first
    result, out = run(box, FORGER, [("hangs", (1,)), ("fine", (2,))], seconds=5.0)
    assert out["hangs"][0].startswith("this test sent malformed results")
    assert out["fine"][1] == 2  # the next function ran in a fresh process
    assert time.monotonic() - start < 30, "the forged frames kept the hung call alive"


ESCAPES = """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
def escapes(x):
    got = []
    for name, flag in (("user", 0x10000000), ("net", 0x40000000), ("mount", 0x00020000)):
        if libc.unshare(flag) == 0:
            got.append("unshare " + name)
    pid = os.fork()  # in a child: a new user namespace, then a tmpfs in it
    if pid == 0:
        ok = libc.unshare(0x10000000 | 0x00020000) == 0 and libc.mount(b"none", b"/tmp", b"tmpfs", 0, b"size=8g") == 0
        os._exit(0 if ok else 1)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0:
        got.append("tmpfs in a user namespace")
    if libc.syscall(248, b"user", b"rt-key", b"secret", 6, -4) >= 0:  # add_key to the user keyring
        got.append("add_key")
    for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK):
        try:
            socket.socket(family, socket.SOCK_DGRAM).close()
            got.append("socket " + family.name)
        except OSError:
            pass
    ring = libc.syscall(425, 4, ctypes.create_string_buffer(120))  # io_uring_setup: 4 entries, no flags
    if ring >= 0:
        os.close(ring)
        got.append("io_uring")
    try:
        for end in socket.socketpair():  # a pair reaches no one: it stays allowed
            end.close()
    except OSError:
        got.append("socketpair refused")
    return got
def read_key(x):
    buf = ctypes.create_string_buffer(4096)
    size = libc.syscall(250, 11, -4, buf, 4096)  # KEYCTL_READ: the ids of its keys
    return max(size, 0)
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probes use x86-64 syscall numbers")
@pytest.mark.parametrize("mode", ["bwrap", "fallback"])
def test_the_sandbox_user_gets_no_namespaces_mounts_keyrings_or_sockets(mode, request):
    box = request.getfixturevalue({"bwrap": "box", "fallback": "fallback_box"}[mode])
    _, out = run(box, ESCAPES, [("escapes", (0,))])
    assert out["escapes"][1] == [], out["escapes"]
    _, later = run(box, ESCAPES, [("read_key", (0,))])
    assert later["read_key"][1] == 0


EXECS = """
import ctypes, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
def execs(x):
    got = []
    try:  # another Python: its PyTorch would not be locked
        if subprocess.run([sys.executable, "-c", "pass"]).returncode == 0:
            got.append("subprocess")
    except PermissionError:
        pass
    try:
        os.waitpid(os.posix_spawn("/bin/true", ["true"], {}), 0)
        got.append("posix_spawn")
    except PermissionError:
        pass
    pid = os.fork()  # a child that execs: refused there too; a fork alone stays allowed
    if pid == 0:
        libc.syscall(322, -100, b"/bin/false", None, None, 0)  # execveat (x86-64): false exits 1
        os._exit(0 if ctypes.get_errno() == 1 else 1)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
        got.append("execveat")
    return got
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe uses x86-64 syscall numbers")
@pytest.mark.parametrize("mode", ["bwrap", "fallback"])
def test_a_cpu_job_starts_no_other_program(mode, request):
    """A Python started from the answer would import a PyTorch the seal never locked: a CPU job gets no exec."""
    box = request.getfixturevalue({"bwrap": "box", "fallback": "fallback_box"}[mode])
    result, out = run(box, EXECS, [("execs", (0,))], torch_job=True)
    assert out["execs"][1] == [], out["execs"]
    assert "exec refused" in result.isolation


TORCH_FILES = """
import glob, os, subprocess, sys, torch
import triton
import triton.language as tl

@triton.jit
def add_one(x_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=offsets < n) + 1, mask=offsets < n)

def torch_files(x):
    got = []
    library = glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libc10*.so*"))[0]
    try:
        open(library, "rb").read(1)
        got.append("read")
    except PermissionError:
        pass
    # what PyTorch loads or runs later (on a GPU: its linear algebra, the ptxas TorchInductor hands Triton)
    loaded = {line.split(maxsplit=5)[5].strip() for line in open("/proc/self/maps") if len(line.split()) == 6}
    folder = os.path.dirname(torch.__file__)
    compiled = glob.glob(os.path.join(folder, "lib", "*.so*")) + glob.glob(os.path.join(folder, "bin", "*"))
    later = [path for path in compiled if os.path.isfile(path) and os.path.realpath(path) not in loaded]
    for path in later or ["nothing PyTorch loads later"]:
        try:
            open(path, "rb").read(1)
        except OSError:
            got.append("hid " + os.path.basename(path))
    from torch.utils import show_pickle  # noqa: F401  (not imported with torch: its Python stays readable)
    for module in ("decompositions", "decompositions_for_jvp"):  # but not its backward formulas in Python
        try:
            open(os.path.join(folder, "_decomp", module + ".py")).read(1)
            got.append("read " + module)
        except PermissionError:
            pass
    loader = (glob.glob("/lib64/ld-linux-*.so*") + glob.glob("/lib/ld-linux-*.so*") + [""])[0]
    import_torch = "import sys; sys.path[:0] = %r; import torch" % sys.path
    for how in ([sys.executable], [loader, sys.executable]):  # the dynamic loader runs what an exec list skips
        try:
            if subprocess.run([*how, "-c", import_torch], capture_output=True).returncode == 0:
                got.append(" ".join(how) + " imported torch")
        except (PermissionError, FileNotFoundError):
            got.append("no exec: " + " ".join(how))
    for move in (os.link, os.symlink, os.rename):
        try:
            move(library, "/tmp/libc10.so")
            open("/tmp/libc10.so", "rb").read(1)
            got.append(move.__name__)
        except OSError:
            pass
    if torch.cuda.is_available():  # CUDA starts after the lock, and Triton builds, caches and runs a kernel
        ones = torch.ones(3, device="cuda")
        if ones.sum().item() != 3:
            got.append("CUDA")
        try:
            add_one[(1,)](ones, 3, BLOCK=4)
            if ones.sum().item() != 6:
                got.append("Triton's kernel")
        except Exception as e:
            got.append(f"Triton: {type(e).__name__}: {e}"[:400])
    return got
"""


@pytest.mark.skipif(not confine.can_hide(), reason="this kernel has no Landlock ABI 2")
@pytest.mark.parametrize("mode", ["bwrap", "fallback"])
def test_no_process_a_job_starts_can_load_torch(mode, request, monkeypatch):
    """A GPU job keeps exec (Triton runs ptxas and a C compiler), so the answer can start another Python, even
    through the dynamic loader, which an allow-list of programs would not see; but once the seal is on, none
    of the compiled parts PyTorch has loaded can be read, linked or moved, so that Python cannot import a
    PyTorch the seal never locked, while the job can still import torch's Python modules and load or run
    what PyTorch has not loaded yet. Here on the CPU, with exec left as a
    GPU job leaves it; on a GPU, as a GPU job (`make gpu-check` runs it there), which also starts CUDA and
    compiles a Triton kernel, whose cache moves each file it writes into place."""
    box = request.getfixturevalue({"bwrap": "box", "fallback": "fallback_box"}[mode])
    gpu = torch.cuda.is_available()
    if not gpu:
        monkeypatch.setattr(sandbox.seccomp, "no_exec", lambda machine=None: None)  # a GPU job's exec
    # the grader's own memory limit: a CUDA build of torch (the GPU machine's) maps more than 2 GiB
    result, out = run(box, TORCH_FILES, [("torch_files", (0,))], torch_job=True, gpu=gpu, seconds=60.0,
                      memory_bytes=sandbox.Limits.memory_bytes)
    got = out["torch_files"][1]
    assert got is not None, (out["torch_files"][0], result.cell_errors, result.notes)
    assert got == [], got  # nor "no exec": the Pythons started, and failed to import torch
    assert "PyTorch's compiled parts unreadable" in result.isolation


def test_nothing_is_hidden_under_landlock_abi_1_where_no_file_could_move_to_another_folder(tmp_path):
    """Under ABI 1 a confined process can move no file to another folder, and Triton's cache does so with
    every file it writes: there the job hides nothing, and its `sandbox:` line says so."""
    (tmp_path / "kept").write_text("readable")
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(INSIDE)!r})
        import confine
        confine.landlock_abi = lambda: 1
        assert not confine.can_hide() and confine.hide([{str(tmp_path / "kept")!r}]) is False
        os.mkdir({str(tmp_path / "cache")!r})
        os.replace({str(tmp_path / "kept")!r}, {str(tmp_path / "cache" / "kept")!r})
        print(open({str(tmp_path / "cache" / "kept")!r}).read())
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "readable", done.stderr
    box = object.__new__(sandbox.Sandbox)
    box.mode, box.reason, box.root, box.options, box.cgroups = "bwrap", "", True, set(), []
    box.hides_torch = False
    assert "no Landlock ABI 2 (Linux 5.19)" in box.describe(gpu=True)


@as_root
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probe uses x86-64 syscall numbers")
def test_a_sandbox_uids_keyrings_are_emptied_after_each_job():
    uid = sandbox.UID_BASE + sandbox.UID_COUNT - 1
    code = textwrap.dedent(f"""
        import ctypes, os, sys
        os.setgid({uid}); os.setuid({uid})
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.argv[1] == "add":
            assert libc.syscall(248, b"user", b"rt-key", b"secret", 6, -4) >= 0
        buf = ctypes.create_string_buffer(64)
        print(max(libc.syscall(250, 11, -4, buf, 64), 0))
        """)
    as_uid = lambda what: int(subprocess.run([sys.executable, "-c", code, what], capture_output=True, text=True,
                                             check=True).stdout)
    assert as_uid("add") >= 4  # a key id (4 bytes) in the user keyring
    sandbox.clear_keyrings(uid)
    assert as_uid("read") == 0


@as_root
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the probes use x86-64 syscall numbers")
def test_the_launchers_filter_refuses_what_the_fallback_must_not_do():
    """The fallback's filter, as the launcher installs it, wherever a sandbox user can run Python or not."""
    uid = sandbox.UID_BASE + sandbox.UID_COUNT - 1
    # the uid is dropped after the imports: the grader's Python may lie where that uid cannot read
    code = f"{textwrap.dedent(ESCAPES)}\nos.setgid({uid}); os.setuid({uid})\nprint(escapes(0))"
    def escapes(spec):
        try:
            done = sandbox.launched(spec, [sys.executable, "-I", "-c", code], timeout=60)
        finally:
            sandbox.clear_keyrings(uid)
        assert done.returncode == 0, done.stderr
        return ast.literal_eval(done.stdout.strip())
    unfiltered = escapes({})  # without it this machine lets the probes through: they can fail
    assert {"add_key", "socket AF_INET", "socket AF_INET6"} <= set(unfiltered), unfiltered
    assert escapes({"seccomp": seccomp.program().hex()}) == []


REACHES = """
import json, os, socket, sys
neighbour, scratch, own, repository_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def tried(what, fn):
    try:
        fn()
        got.append(what)
    except OSError:
        pass
def abstract():
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(f"\\0normgrad-neighbour-{neighbour}")
def shared_memory():
    path = f"/dev/shm/normgrad-probe-{os.getpid()}"
    open(path, "w").close()
    os.unlink(path)
got = []
tried("the repository", lambda: open(repository_file).read(1))
tried("/etc/passwd", lambda: open("/etc/passwd").read(1))
tried("another process's /proc", lambda: open(f"/proc/{neighbour}/cmdline").read(1))
tried("a folder of the grader's", lambda: open(os.path.join(scratch, "x"), "w").write("x"))
tried("/dev/shm", shared_memory)
tried("an abstract unix socket", abstract)
tried("a signal to a process outside", lambda: os.kill(neighbour, 0))
with open(os.path.join(own, "mine"), "w") as f:  # its own folder, and what torch reads, stay open to it
    f.write(open("/proc/self/status").read(1) + open("/dev/urandom", "rb").read(1).hex())
import numpy
print(json.dumps(got))
"""
LISTENER = """
import os, socket, time
s = socket.socket(socket.AF_UNIX)
s.bind(f"\\0normgrad-neighbour-{os.getpid()}")
s.listen()
print("listening", flush=True)
time.sleep(120)
"""


@as_root
def test_the_launchers_landlock_confines_what_the_fallback_may_touch(tmp_path):
    """The fallback's Landlock rules, as the launcher applies them: the probes reach everything without them."""
    if sandbox.launch.landlock_abi() < 6:
        pytest.skip("needs Landlock with scopes (ABI 6, Linux 6.12)")
    scratch, own = tmp_path / "grader", tmp_path / "job"
    scratch.mkdir()
    own.mkdir()
    neighbour = subprocess.Popen([sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    try:
        assert neighbour.stdout.readline().strip() == "listening"
        # the interpreter itself, as the fallback runs it: a venv's pyvenv.cfg is not in the rules
        python, paths = os.path.realpath(sys.executable), sandbox.python_paths()
        code = f"import sys; sys.path += {paths!r}\n{REACHES}"
        def reaches(spec):
            done = sandbox.launched(spec, [python, "-I", "-S", "-c", code, str(neighbour.pid), str(scratch), str(own),
                                           str(ROOT / "README.md")], timeout=60)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout.strip().splitlines()[-1])
        rules = sandbox.fallback_rules(python, paths, [str(own)])
        assert len(reaches({})) == 7  # without Landlock every probe gets through: each can fail
        assert reaches({"landlock": rules}) == []
    finally:
        neighbour.kill()
        neighbour.wait()


def test_the_launcher_handles_every_file_right_its_abi_knows():
    """A right the ruleset does not handle is allowed everywhere: from ABI 9, connecting to a unix socket."""
    assert confine.fs_rights(1) == (1 << 13) - 1 and confine.fs_rights(5) == (1 << 16) - 1
    assert not confine.fs_rights(8) & confine.FS_RESOLVE_UNIX
    assert confine.fs_rights(9) & confine.FS_RESOLVE_UNIX and confine.FILE_RIGHTS & confine.FS_RESOLVE_UNIX


@pytest.mark.parametrize("landlock,gpu,seccomp_hex,says,can", [
    (9, False, "00", "no process or unix socket outside the job", ""),
    (7, False, "00", "Landlock ABI 7 (", "connect to the unix sockets in the file system"),
    (5, False, "00", "Landlock ABI 5 (", "open the unix sockets that user may open"),
    (7, True, "00", "no Landlock (a GPU job)", "read whatever that user may read"),
    (0, False, "00", "no Landlock (no Landlock here)", "read whatever that user may read"),
    (0, True, "00", "no Landlock (no Landlock here)", "read whatever that user may read"),
    (7, False, None, "no seccomp filter (no filter here)", "reach the network"),
])
def test_the_fallbacks_line_says_what_held_and_what_the_code_can_still_do(landlock, gpu, seccomp_hex, says, can):
    box = object.__new__(sandbox.Sandbox)  # the line alone: no probes
    box.mode, box.reason, box.root, box.options, box.cgroups = "fallback", "chosen", False, set(), []
    box.fallback_filter, box.filter_problem = seccomp_hex, "no filter here"
    box.landlock, box.landlock_problem = landlock, "no Landlock here"
    box.hides_torch = bool(landlock)
    line = box.describe(gpu=gpu)
    assert line.startswith("FALLBACK without bubblewrap") and says in line and can in line
    assert ("read whatever" in line) == (not landlock or gpu)
    assert ("abstract unix socket outside the job" in line) == (6 <= landlock < 9 and not gpu)
    assert ("the code can" in line) == bool(can)
    assert ("exec refused" in line) == (not gpu)
    assert ("PyTorch's compiled parts unreadable" in line) == bool(landlock)
    assert ("can import PyTorch unlocked" in line) == (gpu and not landlock)


# --- autograd, however a call reaches for it --------------------------------------------------------

WALKAROUNDS = """
import gc, importlib, torch
captured_grad = torch.autograd.grad  # captured at cell level
_x0 = torch.ones(3, requires_grad=True)
captured_fn = (_x0 * 2).sum().grad_fn
def by_assembled_op(x, dy):
    ops = getattr(torch.ops, "at" + "en")
    y, mean, rstd = torch.native_layer_norm(x, [x.shape[1]], None, None, 1e-5)
    return getattr(ops, "native_layer_norm_" + "backward")(dy, x, [x.shape[1]], mean, rstd, None, None,
                                                            [True, False, False])[0]
def by_captured_grad(x, dy):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = torch.nn.functional.layer_norm(x, [x.shape[1]])
    return captured_grad(y, x, dy)[0]
def by_grad_fn(x, dy):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = torch.nn.functional.layer_norm(x, [x.shape[1]])
    return y.grad_fn(dy)[0]
def by_gc(x, dy):
    real = [o for o in gc.get_objects() if callable(o) and getattr(o, "__name__", "") == "grad"
            and getattr(o, "__module__", "") == "torch.autograd"]
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = torch.nn.functional.layer_norm(x, [x.shape[1]])
    for fn in real:
        try:
            got = fn(y, x, dy)
        except Exception:
            continue
        if isinstance(got, tuple):
            return got[0]
    raise RuntimeError("autograd is switched off: nothing found")
def by_engine(x, dy):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = torch.nn.functional.layer_norm(x, [x.shape[1]])
    return torch.autograd.Variable._execution_engine.run_backward((y,), (dy,), False, False, (x,), True, False)[0]
def by_backward(x, dy):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        torch.nn.functional.layer_norm(x, [x.shape[1]]).backward(dy)
    return x.grad
def _by_hand(x, dy):
    mean = x.mean(1, keepdim=True)
    rstd = 1 / torch.sqrt(((x - mean) ** 2).mean(1, keepdim=True) + 1e-5)
    xhat = (x - mean) * rstd
    return rstd * (dy - dy.mean(1, keepdim=True) - xhat * (dy * xhat).mean(1, keepdim=True))
honest = _by_hand
honest_compiled = torch.compile(_by_hand, backend="eager")
"""


def test_autograd_and_backward_operators_stay_locked_however_reached(box):
    x, dy = torch.randn(5, 7, dtype=torch.float64) * 3 + 2, torch.randn(5, 7, dtype=torch.float64)
    xr = x.detach().requires_grad_(True)
    torch.nn.functional.layer_norm(xr, [7]).backward(dy)
    names = ["by_assembled_op", "by_captured_grad", "by_grad_fn", "by_gc", "by_engine", "by_backward", "honest",
             "honest_compiled"]
    _, out = run(box, WALKAROUNDS, [(n, (x, dy)) for n in names], torch_job=True, seconds=60.0)
    for name in names[:-2]:
        status, returned = out[name]
        assert returned is None and "autograd is switched off" in status["error"], (name, status)
    for name in names[-2:]:
        status, returned = out[name]
        assert returned is not None, (name, status)
        torch.testing.assert_close(returned, xr.grad, rtol=1e-9, atol=1e-9)


def test_a_numpy_exercise_can_use_neither_torch_nor_triton(box):
    """`import torch` binds a stand-in (an unused import costs nothing); nothing in it, or under it, is there."""
    source = """
    import importlib, sys
    def sneaky(x):
        got = []
        for attempt in (lambda: importlib.import_module("to" + "rch").ones(3),
                        lambda: importlib.import_module("to" + "rch.nn"),
                        lambda: __import__("tri" + "ton").jit, lambda: __import__("tri" + "ton.language")):
            try:
                attempt()
                got.append("used")
            except ImportError:
                pass
        sys.meta_path.clear()  # even without the grader's import hook, the files are not there
        sys.modules.pop("torch", None)
        sys.modules.pop("triton", None)
        try:
            importlib.import_module("to" + "rch")
            got.append("imported without the hook")
        except ImportError:
            pass
        return got
    """
    _, out = run(box, source, [("sneaky", (np.ones(3),))])
    assert out["sneaky"][1] == [], out["sneaky"]


KERNEL = """
import torch, triton, triton.language as tl
@triton.jit
def _double(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=offs < n) * 2, mask=offs < n)
def with_kernel(x):
    y = torch.empty_like(x)
    _double[(1,)](x, y, x.numel(), BLOCK=16)
    return y
def without_kernel(x):
    return x * 2
"""


def test_each_call_reports_the_launches_of_the_students_triton_kernels(box):
    x = torch.arange(5.0)
    _, out = run(box, KERNEL, [("with_kernel", (x,)), ("without_kernel", (x,))], torch_job=True,
                 seconds=60.0, count_kernels=True)
    assert out["with_kernel"][0]["kernel_launches"] == 1 and torch.equal(out["with_kernel"][1], 2 * x)
    assert out["without_kernel"][0]["kernel_launches"] == 0


THREADED = """
import _thread, threading, time
from concurrent.futures import ThreadPoolExecutor
import torch
def by_thread(x):
    box = {}
    t = threading.Thread(target=lambda: box.update(v=x * 2))
    t.start()
    t.join()
    return box["v"]
def by_start_new_thread(x):
    box = {}
    _thread.start_new_thread(lambda: box.update(v=x * 2), ())
    while "v" not in box:
        time.sleep(0.01)
    return box["v"]
def by_pool(x):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: x * 2).result()
"""


def test_a_triton_exercise_starts_no_threads(box):
    """kernel_work's guard is torch's per-thread state: a thread the answer starts would compute in torch
    outside it (a red team's 120/120). A Triton job refuses threads however started; a torch job keeps them."""
    x = torch.arange(5.0)
    names = ["by_thread", "by_start_new_thread", "by_pool"]
    _, out = run(box, THREADED, [(n, (x,)) for n in names], torch_job=True, seconds=60.0, count_kernels=True)
    for name in names:
        status, returned = out[name]
        assert returned is None and calling.NO_THREADS in status["error"], (name, status)
    _, out = run(box, THREADED, [(n, (x,)) for n in names], torch_job=True, seconds=60.0)
    for name in names:
        assert torch.equal(out[name][1], 2 * x), (name, out[name][0])


def test_a_kernel_exercise_gives_no_credit_to_a_call_without_a_kernel():
    verdict = {protocol.status("c0"): b'{"error": null, "kernel_launches": 0}', **{
        f"{protocol.returned('c0')}/{k}": v for k, v in wire.pack(1.0).items()}}
    problems, _ = grading._judge_call(verdict, "c0", None, needs_kernel=True)
    assert problems == [grading.NO_KERNEL]


# --- graders side by side, and after a killed one ----------------------------------------------------

@as_root
def test_graders_with_different_tmpdirs_take_different_uids(tmp_path):
    code = textwrap.dedent("""
        import sys, time
        from autograder import sandbox
        with sandbox.sandbox_user() as uid:
            print(uid, flush=True)
            time.sleep(float(sys.argv[1]))
        """)
    env = child_env()
    first = subprocess.Popen([sys.executable, "-c", code, "4"], stdout=subprocess.PIPE, text=True,
                             env={**env, "TMPDIR": str(tmp_path / "a")})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    held = first.stdout.readline()
    second = subprocess.run([sys.executable, "-c", code, "0"], capture_output=True, text=True,
                            env={**env, "TMPDIR": str(tmp_path / "b")})
    first.wait()
    assert held.strip() and second.stdout.strip() and held.strip() != second.stdout.strip()


@as_root
def test_a_grader_sweeps_what_killed_graders_left_and_nothing_of_live_ones(tmp_path, monkeypatch):
    # The folders go in a temporary folder of this test's own: a grader another test worker starts
    # sweeps /tmp too, and would otherwise remove `gone` before this sweep can show that it does.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = tmp_path / f"{sandbox.PRIVATE_PREFIX}{dead.pid}-x1"
    live = tmp_path / f"{sandbox.PRIVATE_PREFIX}{os.getpid()}-x2"
    for folder in (gone, live):
        (folder / "home").mkdir(parents=True)
    group = cgroup.JobGroup(1 << 30, 16)
    left = []
    if group.active:  # a job group of the dead grader's
        for d in group.dirs:
            left.append(d.with_name(f"autograder-{dead.pid}-0"))
            d.rename(left[-1])
    try:
        removed = sandbox.sweep_leftovers()
        assert str(gone) in removed and not gone.exists()
        assert live.exists()
        assert all(not d.exists() for d in left)
    finally:
        import shutil
        shutil.rmtree(live, ignore_errors=True)
        shutil.rmtree(gone, ignore_errors=True)


@as_root
def test_two_graders_with_different_tmpdirs_leave_every_honest_student_full_marks(tmp_path, box):
    import csv

    from helpers import solved, write

    graders = []
    for name in ("a", "b"):
        submitted, scratch = tmp_path / name / "submitted", tmp_path / name / "tmp"
        scratch.mkdir(parents=True)
        for student in ("s1", "s2", "s3"):
            write(solved("01-forward"), submitted, f"{name}-{student}", "01-forward")
        graders.append(subprocess.Popen(
            [sys.executable, "-m", "autograder", "grade", str(submitted), "--out", str(tmp_path / name / "out"),
             "--jobs", "2"], cwd=tmp_path / name, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_env(TMPDIR=str(scratch))))
    for grader, name in zip(graders, ("a", "b")):
        out, err = grader.communicate(timeout=600)
        assert grader.returncode == 0, err
        with open(tmp_path / name / "out" / "grades.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 3 and all(float(r["score"]) == float(r["max_score"]) for r in rows), rows


def test_a_python_under_tmp_is_mounted_where_the_sandbox_tmpfs_does_not_hide_it(monkeypatch):
    """A venv under /tmp (a clone in a temporary folder) must not vanish under the sandbox's own /tmp."""
    monkeypatch.setattr(sandbox, "python_paths", lambda: ["/tmp/somewhere/.venv/lib/python3/site-packages"])
    mounts, inside = sandbox._mount_plan()
    assert ("/tmp/somewhere/.venv/lib/python3/site-packages", inside[0]) in mounts
    assert inside[0].startswith("/sandbox/lib")
