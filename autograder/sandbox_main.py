"""The program that runs inside the sandbox, beside the student's code.

    python -I sandbox_main.py JOB OUT

JOB (read-only) holds `job.json` and the inputs of each call; OUT is the only
place this process may write. `job.json` lists the student's solution cells
(their source, already picked out by the trusted side) and the calls to make.
Each call's result goes to OUT/<call id>/ as soon as it is known, so the calls
that finished count even if a later one hangs and the process is killed.

Nothing this process writes is believed: the trusted side reads OUT back as
plain data and judges it against an oracle this process never sees.
"""

import json
import linecache
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # wire.py and calling.py are copied beside this file

import calling  # noqa: E402
import wire  # noqa: E402


def _short_traceback(exc: BaseException) -> str:
    """The traceback, keeping only frames of the student's cells."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell")]
    lines = traceback.format_list(frames) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines)[-4000:]


class CallTimeout(Exception):
    """A call ran past its time budget (its case's `seconds`)."""


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


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f)


def main(job_dir: str, out_dir: str) -> None:
    with open(os.path.join(job_dir, "job.json")) as f:
        job = json.load(f)
    if job.get("torch"):
        import torch  # noqa: F401  (imported before the student's code, so it can be locked)

        calling.lock_autograd()

    signal.signal(signal.SIGALRM, _alarm)
    namespace = {"__name__": "__submission__"}
    cells = []
    for cell in job["cells"]:
        entry = {"label": cell["label"], "error": None}
        signal.setitimer(signal.ITIMER_REAL, float(job.get("cell_seconds", 60.0)))
        try:
            filename = f"<cell {cell['label']}>"
            # Triton's @jit reads a kernel's source back through linecache, as it does in a notebook.
            linecache.cache[filename] = (len(cell["source"]), None, cell["source"].splitlines(True), filename)
            exec(compile(cell["source"], filename, "exec"), namespace)
        except BaseException as e:  # SystemExit and KeyboardInterrupt too: keep going
            entry["error"] = _short_traceback(e)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        cells.append(entry)
    _write_json(os.path.join(out_dir, "cells.json"), cells)

    out_of_time = set()  # functions that ran out of time once: an endless loop will not end the next time
    for call in job["calls"]:
        here = os.path.join(out_dir, call["id"])
        os.makedirs(here)
        status = {"error": None, "seconds": None}
        start = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, float(call.get("seconds", 10.0)))
        try:
            if call["function"] in out_of_time:
                raise CallTimeout(f"not run: an earlier test of {call['function']} ran out of time")
            target = namespace.get(call["function"])
            if target is None:
                raise NameError(f"your code does not define {call['function']}")
            args, kwargs = wire.load(os.path.join(job_dir, call["id"]))
            returned = calling.invoke(call["protocol"], target, tuple(args), kwargs)
            if call.get("device", "cpu") != "cpu":
                torch = sys.modules["torch"]
                torch.cuda.synchronize()
            wire.dump(returned, os.path.join(here, "returned"))
            wire.dump(list(args), os.path.join(here, "args_after"))
        except BaseException as e:
            status["error"] = _short_traceback(e)
            if _ran_out_of_time(e):
                out_of_time.add(call["function"])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        status["seconds"] = time.perf_counter() - start
        _write_json(os.path.join(here, "status.json"), status)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
