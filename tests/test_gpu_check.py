"""`make gpu-check` on a machine without a GPU: it refuses, and its dry run runs every step on the CPU."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

import gpu_check
from normgrad import benchmark

GPU_ASSIGNMENTS = ["04-code-mapping", "05-thnn", "06-triton"]


def fake_deb(path, members: dict[str, bytes]):
    """A .deb as dpkg writes one: an ar archive of debian-binary, control.tar.xz and data.tar.xz."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    parts = [("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", data.getvalue())]
    blob = b"!<arch>\n"
    for name, body in parts:
        blob += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode() + body + b"\n" * (len(body) % 2)
    path.write_bytes(blob)
    return path


def test_a_deb_unpacks_under_its_folder_and_never_outside(tmp_path):
    deb = fake_deb(tmp_path / "bubblewrap_0.8.0_amd64.deb",
                   {"./usr/bin/bwrap": b"#!/bin/sh\n", "../escaped": b"x", "/etc/absolute": b"x"})
    names = gpu_check.unpack_deb(deb, tmp_path / "root")
    assert names == ["./usr/bin/bwrap"]
    assert (tmp_path / "root" / "usr" / "bin" / "bwrap").read_bytes() == b"#!/bin/sh\n"
    assert not (tmp_path / "escaped").exists()
    (tmp_path / "not.deb").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not an ar archive"):
        gpu_check.unpack_deb(tmp_path / "not.deb", tmp_path / "other")


def test_only_wheels_this_python_can_install_are_installed(tmp_path):
    assert gpu_check._installable(tmp_path / "nbformat-5.11.1-py3-none-any.whl")
    assert not gpu_check._installable(tmp_path / "rpds_py-1.0-cp27-cp27mu-manylinux1_x86_64.whl")


def test_the_tests_of_an_exercise_are_its_numbered_files(root):
    assert gpu_check.test_files(GPU_ASSIGNMENTS) == [
        "tests/test_04_06_added.py", "tests/test_04_code_mapping.py", "tests/test_05_thnn.py",
        "tests/test_06_added.py", "tests/test_06_added_margins.py", "tests/test_06_kernel_work.py",
        "tests/test_06_ladder.py", "tests/test_06_triton.py",
        "tests/test_sandbox_wall.py::test_no_process_a_job_starts_can_load_torch"]


def test_step_two_collects_the_tests_on_a_cpu_and_runs_them_when_asked(root):
    """A dry run only collects step 2's tests; --run-tests (the rehearsal) runs them, in the same command."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}
    collected = gpu_check.run_tests(["tests/test_timing.py"], env, 300, collect_only=True)
    ran = gpu_check.run_tests(["tests/test_timing.py"], env, 300, collect_only=False)
    assert collected["passed"] and collected["counts"].get("tests collected", 0) > 0
    assert "passed" not in collected["counts"]
    assert ran["passed"] and ran["counts"]["passed"] == collected["counts"]["tests collected"]
    assert "--collect-only" in collected["command"] and "--collect-only" not in ran["command"]


def test_a_stopped_step_two_says_how_far_it_got_and_which_tests_failed(root):
    """Run-3's step 2 ran out of time before pytest's summary, and the log said only "FAIL {}"."""
    stopped = gpu_check.counted((root / "gpu-results" / "run-3" / "pytest.txt").read_text())
    assert stopped["counts"] == {"passed": 231, "failed": 5, "skipped": 8, "of": 312}, stopped
    assert len(stopped["failed"]) == 5 and all(t.startswith("tests/test_0") for t in stopped["failed"])
    whole = gpu_check.counted((root / "gpu-results" / "run-3" / "pytest-whole.txt").read_text())
    assert whole["counts"] == {"failed": 7, "passed": 283, "skipped": 22} and len(whole["failed"]) == 7, whole
    plain = gpu_check.counted("tests/test_a.py::test_x PASSED [ 50%]\ntests/test_a.py::test_y FAILED [100%]\n")
    assert plain == {"counts": {"passed": 1, "failed": 1}, "failed": ["tests/test_a.py::test_y"]}, plain


def test_a_step_past_its_time_is_stopped_with_the_processes_it_started(tmp_path):
    """pytest's workers, a benchmark's compiling workers: left running after their step, they would share
    the GPU and the CPUs with the next step's timings. (Started here from a thread, as pytest-xdist does.)"""
    pid_file = tmp_path / "pid"
    child = ("import subprocess, sys, threading, time\n"
             "def start():\n"
             "    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
             f"    open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
             "threading.Thread(target=start).start()\n"
             "print('started', flush=True)\n"
             "time.sleep(120)\n")
    code, out, seconds = gpu_check.run([sys.executable, "-c", child], {"PATH": "/usr/bin:/bin"}, 3)
    assert code == 124 and "started" in out and "stopped after 3 s" in out and seconds < 60, out
    stat = Path(f"/proc/{pid_file.read_text()}/stat")
    for _ in range(50):  # killed: gone, or a zombie until its new parent reaps it
        if not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the step's child outlived it")


def test_a_warm_up_whose_pipe_a_daemon_holds_is_not_waited_for(monkeypatch):
    """A compiling process stopped after its time may have left a daemon, outside its tree, holding its output
    open: the run goes on after DRAIN_S, with what it could read."""
    monkeypatch.setattr(gpu_check, "DRAIN_S", 2.0)
    daemon = ("import os, time\n"
              "if os.fork() == 0:\n"  # a child that forks a daemon and leaves it to init: out of the job's tree
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              "        time.sleep(10)\n"
              "    os._exit(0)\n"
              "time.sleep(60)\n")
    job = gpu_check.spawn([sys.executable, "-c", daemon], {"PATH": "/usr/bin:/bin"},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    logged = []
    begun = time.monotonic()
    found = gpu_check.finish_warming([job], 1.0, lambda *words: logged.append(" ".join(words)))
    assert found == {"processes": 1, "stopped": 1, "failed": 0} and time.monotonic() - begun < 20
    assert logged == ["  warm  | (its output did not end within 2 s of the kill)"]


def test_a_benchmark_whose_pipe_a_daemon_holds_is_not_waited_for(monkeypatch, tmp_path):
    """The benchmark has ended, but a daemon it left outside its tree still holds its output open: the run
    logs what was printed and goes on after DRAIN_S, instead of reading until the device call's own limit."""
    monkeypatch.setattr(gpu_check, "DRAIN_S", 2.0)
    pid_file = tmp_path / "daemon"
    daemon = ("import os, sys, time\n"
              "print('timing', flush=True)\n"
              "if os.fork() == 0:\n"
              "    os.setsid()\n"
              "    if os.fork() == 0:\n"
              f"        open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
              "        time.sleep(60)\n"
              "    os._exit(0)\n"
              "os.wait()\n")
    spawn = gpu_check.spawn
    monkeypatch.setattr(gpu_check, "spawn", lambda cmd, env, **kw: spawn([sys.executable, "-c", daemon], env, **kw))
    logged = []
    begun = time.monotonic()
    try:
        found = gpu_check.run_benchmark(tmp_path, 30, True, [], {"PATH": "/usr/bin:/bin"},
                                        lambda *words: logged.append(" ".join(words)))
        assert time.monotonic() - begun < 20 and found["exit"] == 0 and not found["passed"], found
        assert logged == ["  bench | timing", "  bench | (its output did not end within 2 s of its end)"]
    finally:
        for _ in range(50):
            if pid_file.exists() and pid_file.read_text():
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
                break
            time.sleep(0.1)


def test_a_step_stays_in_the_process_group_of_the_run(tmp_path):
    """So that whatever stops the whole run (a time limit that kills its process group) stops the steps too."""
    step = gpu_check.spawn([sys.executable, "-c", "import time; time.sleep(60)"], {"PATH": "/usr/bin:/bin"})
    try:
        assert os.getpgid(step.pid) == os.getpgid(0)
    finally:
        gpu_check.stop(step)
    assert step.wait(timeout=10) == -signal.SIGKILL


def test_the_exercises_with_a_gpu_path_are_found_in_their_cases(root):
    """06-triton picks its device when imported (one per process), so only a GPU, real or assumed, shows it."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}
    assumed = gpu_check.discover(env, assume_gpu=True)
    assert sorted(assumed) == GPU_ASSIGNMENTS
    assert all(found["cuda_cases"] > 0 and found["notebook"].endswith(".ipynb") for found in assumed.values())


def test_without_a_gpu_it_says_so_and_fails(root, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--out", str(tmp_path)], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "needs an NVIDIA GPU" in done.stdout and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_dry_run_runs_every_step_and_writes_what_the_gpu_run_writes(root, tmp_path):
    """One exercise and one small shape, to keep it short; the GPU run has every exercise and the whole sweep.
    Then the tuning round, in the same call, with a second's budget: one shape, the others listed as left."""
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--dry-run", "--out", str(tmp_path),
                           "--assignments", "05-thnn", "--bench-args", "--dtypes bfloat16 --columns 48 --rows 20",
                           "--sweep-s", "1"],
                          cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert all(p.is_file() for p in tmp_path.iterdir()) and len(files) <= 8  # what a remote runner brings back
    bench = [name for name in files if name.startswith("bench-")]
    [sweep] = [name for name in files if name.startswith("sweep-")]
    assert len(bench) == 1 and sorted(set(files) - {*bench, sweep}) == ["autograder.txt", "gpu-check.json",
                                                                       "gpu-check.log", "pytest.txt"]
    tuned = json.loads((tmp_path / sweep).read_text())
    # one shape: rungs 3 and 4 (rung 5 splits no row this narrow, and is rung 4 there), the others left
    assert [s["impl"] for s in tuned["shapes"]] == ["v3 persistent", "v4 prefetch"] and len(tuned["skipped"]) >= 1
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["passed"] and report["dry_run"]  # (its time says nothing: the six minutes are a GPU's)
    assert report["sweep"]["passed"] and report["sweep"]["file"] == str(tmp_path / sweep)
    check = report["autograder"]["05-thnn"]
    assert check["score"] == check["max_score"] > 0 and check["sandbox_mode"] in ("bwrap", "fallback")
    assert report["sandbox_modes"] == [check["sandbox_mode"]]
    assert report["pytest"]["counts"]["tests collected"] > 0
    results = benchmark.read_results(tmp_path / bench[0])
    assert results["dry_run"] and results["gpu"].startswith("dry run")
    measured = {r["impl"] for r in results["rows"]}
    assert set(benchmark.COURSE) | {"torch", "torch.compile"} <= measured
    assert all(v == "pass" for name in benchmark.COURSE for v in results["checks"][name].values())
    assert {k["impl"] for k in results["kernels"]} == set(benchmark.PERSISTENT)
    assert results["fastest"] in benchmark.COURSE
    assert not any("was stopped" in note for note in results["notes"])  # the finished file replaced the partial ones
    assert [t["met"] for t in results["targets"]][-1] is True  # the fastest rung's sums: the same bits twice
    assert "DRY RUN" in (tmp_path / "gpu-check.log").read_text()


def fake_wheel(folder, name="gpucheckprobe", version="1.0"):
    """The smallest wheel pip installs: a module and its dist-info."""
    import zipfile

    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for n, text in files.items():
            z.writestr(n, text)
    return path


def test_carried_wheels_and_bubblewrap_install_into_a_scratch_folder(tmp_path, monkeypatch):
    carried = tmp_path / "carried"
    carried.mkdir()
    fake_wheel(carried)
    fake_deb(carried / "bubblewrap_0.8.0-2_amd64.deb", {"./usr/bin/bwrap": b"#!/bin/sh\n"})
    monkeypatch.setattr(gpu_check.shutil, "which", lambda name, path=None: None)  # a machine without bubblewrap
    lines = []
    found = gpu_check.install_tools(carried, tmp_path / "scratch", lines.append)
    assert (tmp_path / "scratch" / "site" / "gpucheckprobe.py").is_file(), lines
    assert found["wheels"] == ["gpucheckprobe-1.0-py3-none-any.whl"]
    assert (tmp_path / "scratch" / "bwrap" / "usr" / "bin" / "bwrap").is_file() and found["bin"].endswith("usr/bin")
    assert gpu_check.install_tools(tmp_path / "absent", tmp_path / "s2", lines.append)["site"] is None
