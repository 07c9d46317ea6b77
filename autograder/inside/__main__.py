"""The program that runs inside the sandbox, beside the student's code.

    python -I -S -B FOLDER_OF_THIS_PACKAGE JOB_FD RESULTS_FD [SYS_PATH ...]

JOB_FD (read-only) holds the job as frames (see wire.py and protocol.py): the
`Job` (the student's solution cells, already picked out by the trusted side,
and the calls to make) and the inputs of each call. Results go out on
RESULTS_FD as frames, as soon as each is known, in the order protocol.py
fixes; so the calls that finished count even if a later one hangs or ends
the process, and the grader knows which one did.

Nothing this process writes is believed: the trusted side reads the frames as
plain data, in the order it expects them, and judges them against an oracle
this process never sees.
"""

import glob
import importlib.abc
import importlib.machinery
import json
import linecache
import os
import signal
import sys
import time
import traceback
import types

HERE = os.path.dirname(os.path.abspath(__file__))
# Only the folders the grader names (the standard library, numpy, torch, triton), and this package's
# files: no site hooks, no .pth files run.
sys.path[:] = [HERE] + sys.argv[3:]

import calling  # noqa: E402
import confine  # noqa: E402
import intact  # noqa: E402
import protocol  # noqa: E402
import wire  # noqa: E402

MAIN_PID = os.getpid()


def _short_traceback(exc: BaseException) -> str:
    """The traceback, keeping only frames of the student's cells."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell")]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines)[-4000:]


class CallTimeout(Exception):
    """A call ran past its time budget (its case's `seconds`, in CPU time)."""


def _ran_out_of_time(exc: BaseException) -> bool:
    """Was `exc` a CallTimeout, or caused by one? (Triton's interpreter wraps what a kernel raises.)"""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CallTimeout):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _alarm(signum, frame):
    raise CallTimeout("took longer than its time limit and was stopped (an endless loop, or a lock never released?)")


def _after_student_code(reap: bool) -> None:
    """Back from the student's code: a forked child ends here, and any process it left is killed."""
    if os.getpid() != MAIN_PID:
        os._exit(0)
    if not reap:
        return
    try:  # every process this user may signal, but this one: strays the student's code started
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass


LOCKED = ("torch", "functorch", "torchgen")  # the packages whose autograd the seal locks
# torch's backward formulas written in Python (its decompositions): the seal rewrote the functions it loaded, but
# their file, read and imported again under another name, would run afresh (a red-team answer scored 104/104 in
# exercise 04 so). A NumPy exercise hides all of torch; sympy and mpmath differentiate symbolically (torch's own
# modules import sympy, so a PyTorch exercise keeps it, and flags.py names it)
BACKWARD_SOURCES = ("torch/_decomp/decompositions", "torch/_decomp/decompositions_for_jvp")
SYMBOLIC = ("sympy", "mpmath")


def _installed(packages) -> list:
    """The folders of these packages on sys.path."""
    return [os.path.join(folder, name) for folder in sys.path[1:] for name in packages
            if os.path.isdir(os.path.join(folder, name))]


def _backward_sources() -> list:
    """The files of BACKWARD_SOURCES, each module's source and what Python compiled of it, in every folder of
    sys.path that holds torch."""
    return [path for folder in sys.path[1:] for module in BACKWARD_SOURCES
            for path in [os.path.join(folder, module + ".py"),
                         *glob.glob(os.path.join(folder, os.path.dirname(module), "__pycache__",
                                                 os.path.basename(module) + ".*.pyc"))]
            if os.path.exists(path)]


def _loaded_parts(packages) -> list:
    """The compiled files of these packages that this process has loaded: their extension modules, libtorch
    and libc10, which any other process needs to import torch or link a program against it. What PyTorch
    loads later, or runs (on a GPU: its linear algebra, its NVRTC wrapper, the ptxas TorchInductor hands
    Triton), stays readable: without these it loads nowhere else. Where /proc cannot be read: the packages'
    extension modules and lib/."""
    installed = _installed(packages)
    try:
        with open("/proc/self/maps") as maps:  # address, rights, offset, device, inode, then the file, if any
            mapped = {fields[5] for fields in (line.rstrip("\n").split(maxsplit=5) for line in maps)
                      if len(fields) == 6}
    except OSError:
        return [path for package in installed for path in
                [os.path.join(package, "lib"), *glob.glob(os.path.join(package, "*.so"))]]
    folders = tuple(os.path.realpath(package) + "/" for package in installed)
    return sorted(path for path in mapped if path.startswith(folders))


class _NoTorch(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A NumPy exercise's job: torch and its kin are not there (the grader also hides their folders).

    `import torch` alone binds a stand-in, so that an import the answer never uses costs it nothing (a
    notebook's cell often starts with one); any use of it, or a submodule's import, raises ImportError.
    """

    BLOCKED = (*LOCKED, "triton", *SYMBOLIC)

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in self.BLOCKED:
            return None
        if "." in name:
            raise ImportError(_absent(name))
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec):
        module = _Absent(spec.name)
        module.__path__ = []  # a package, so that `import torch.nn` reaches find_spec and its message
        return module

    def exec_module(self, module):
        pass


def _absent(name: str) -> str:
    return f"{name} cannot be used in this exercise: it is answered with NumPy"


class _Absent(types.ModuleType):
    """The stand-in for a blocked package: it has nothing, and says why."""

    def __getattr__(self, attr):
        if attr.startswith("__"):  # what the import system and introspection ask of any module: absent
            raise AttributeError(attr)
        raise ImportError(_absent(f"{self.__name__}.{attr}"))


_LAUNCHES = [0]


def _count_kernel_launches() -> None:
    """Count launches of Triton kernels defined in the student's cells (their source is `<cell ...>`)."""
    try:
        from triton.runtime import interpreter, jit
    except ImportError:
        return
    for cls in (jit.JITFunction, getattr(interpreter, "InterpretedFunction", None)):
        if cls is None or not hasattr(cls, "run"):
            continue

        def run(self, *args, _run=cls.run, **kwargs):
            code = getattr(getattr(self, "fn", None), "__code__", None)
            if not kwargs.get("warmup") and code is not None and code.co_filename.startswith("<cell"):
                _LAUNCHES[0] += 1
            return _run(self, *args, **kwargs)

        cls.run = run


def main(job_fd: int, out_fd: int) -> None:
    size = os.fstat(job_fd).st_size  # the grader's own file: its size, not the wire's defaults, bounds it
    job_files = wire.read_frames(job_fd, max_bytes=size, max_file_bytes=size)
    os.close(job_fd)
    job = protocol.Job.decode(job_files[protocol.JOB])

    def send(name, data):
        wire.write_frames(out_fd, [(name, data if isinstance(data, bytes) else json.dumps(data).encode())])

    if job.torch:
        import torch  # noqa: F401  (imported before the student's code, so that it can be locked)

        calling.seal()
        if job.count_kernels:
            _count_kernel_launches()
            calling.fit_triton_interpreter()  # an older Triton's interpreter beside a newer NumPy
            calling.refuse_threads()  # torch's guard on a launcher's work holds per thread
        hidden = _loaded_parts(LOCKED) + _backward_sources()
    else:
        sys.meta_path.insert(0, _NoTorch())
        hidden = _installed(_NoTorch.BLOCKED)
    # From here on, no process started from the answer (a GPU job keeps exec: Triton runs its compilers)
    # can load PyTorch, so none has a PyTorch the seal never locked; this one keeps what it loaded and can
    # still import torch's Python modules. A NumPy exercise's job cannot read torch or Triton at all.
    confine.hide(hidden)
    if job.seccomp:
        confine.install_filter(bytes.fromhex(job.seccomp))

    # CPU time, not wall time: a neighbour that hogs the machine does not make a call time out.
    signal.signal(signal.SIGPROF, _alarm)
    # A Triton exercise's calls are guarded one by one: what this program runs between them must stay its own.
    guarded = job.count_kernels
    if guarded:
        import torch._dynamo  # noqa: F401  (kernel_work's; its import replaces torch.manual_seed: before the notes)

        intact.take()
    tampered = None  # what the student's code changed, when it did
    namespace = {"__name__": "__submission__"}
    for cell in job.cells:
        send(protocol.begun(cell.id), b"")
        status = {"error": None}
        if tampered:
            send(protocol.status(cell.id), {"error": f"not run: {intact.message(tampered)}"})
            continue
        signal.setitimer(signal.ITIMER_PROF, float(job.cell_seconds))
        try:
            filename = f"<cell {cell.label}>"
            # Triton's @jit reads a kernel's source back through linecache, as it does in a notebook.
            linecache.cache[filename] = (len(cell.source), None, cell.source.splitlines(True), filename)
            exec(compile(cell.source, filename, "exec"), namespace)
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: keep going
            status["error"] = _short_traceback(e)
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            _after_student_code(job.reap)
        tampered = intact.changed() if guarded else None
        if tampered:
            status["error"] = intact.message(tampered)
        send(protocol.status(cell.id), status)

    # Functions that ran out of time or memory once: an endless loop will not end the next time, and a
    # memory bomb would only churn the machine's memory again.
    exhausted = {}
    for call in job.calls:
        send(protocol.begun(call.id), b"")
        status = {"error": None, "seconds": None}
        start, launches = time.perf_counter(), _LAUNCHES[0]
        signal.setitimer(signal.ITIMER_PROF, float(call.seconds))
        files = {}
        try:
            if tampered:
                raise RuntimeError(f"not run: {intact.message(tampered)}")
            if call.function in exhausted:
                raise RuntimeError(f"not run: an earlier test of {call.function} {exhausted[call.function]}")
            target = namespace.get(call.function)
            if target is None:
                raise NameError(f"your code does not define {call.function}")
            args, kwargs = wire.unpack(wire.subfolder(job_files, protocol.inputs(call.id)))
            returned = calling.invoke(call.protocol, target, tuple(args), kwargs, intact.disarm if guarded else None)
            tampered = intact.changed() if guarded else None
            if tampered:  # before anything of this program's runs on what the call returned
                raise intact.Tampered(tampered)
            if call.device != "cpu":
                sys.modules["torch"].cuda.synchronize()
            files.update({f"{protocol.returned(call.id)}/{k}": v for k, v in wire.pack(returned).items()})
            files.update({f"{protocol.args_after(call.id)}/{k}": v for k, v in wire.pack(list(args)).items()})
        except BaseException as e:
            status["error"] = str(e) if isinstance(e, intact.Tampered) else _short_traceback(e)
            tampered = e.what if isinstance(e, intact.Tampered) else tampered
            files = {}
            if _ran_out_of_time(e):
                exhausted[call.function] = "ran out of time"
            elif isinstance(e, MemoryError):
                exhausted[call.function] = "ran out of memory"
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
            _after_student_code(job.reap)
        status["seconds"] = time.perf_counter() - start
        if job.count_kernels:
            status["kernel_launches"] = _LAUNCHES[0] - launches
        wire.write_frames(out_fd, list(files.items()))
        send(protocol.status(call.id), status)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
