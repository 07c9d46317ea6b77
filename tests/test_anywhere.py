"""Running an exercise anywhere and grading it anywhere.

- Gradescope: `make gradescope` bundles, graded as Gradescope runs them, in a folder laid out as its /autograder;
- the notebooks' set-up cell: first in every notebook, and in a fresh environment it installs the course's
  wheel from the book (served on localhost) and the visible tests run;
- the book: each chapter's launch and download buttons open its exercise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

import book
import setup_cell
from autograder import gradescope, report
from autograder.course import notebooks, read
from helpers import GAMMA_FORGOTTEN, solved, submission
from normgrad.cases import ASSIGNMENTS, load


# --- Gradescope --------------------------------------------------------------------------------------------

def test_make_gradescope_builds_the_bundles_with_the_module(root):
    dry = subprocess.run(["make", "-n", "gradescope"], cwd=root, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "-m autograder.gradescope build" in dry.stdout


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gradescope")
    done = subprocess.run([sys.executable, "-m", "autograder.gradescope", "build", "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path_factory.getbasetemp())
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_a_bundle_per_assignment_holds_what_gradescope_runs(bundles):
    for assignment in ASSIGNMENTS:
        with zipfile.ZipFile(bundles / f"{assignment}.zip") as z:
            names = set(z.namelist())
            modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
            assert {"setup.sh", "run_autograder", "requirements.txt", "constraints.txt", "autograder/cli.py",
                    "normgrad/cases/__init__.py"} <= names
            assert notebooks(assignment).source.relative_to(notebooks(assignment).source.parents[2]).as_posix() in names
            assert all(modes[s] & 0o111 for s in ("setup.sh", "run_autograder")), "scripts must be executable"
            assert f"--assignment {assignment} " in z.read("run_autograder").decode()
            assert "--time-limit 540" in z.read("run_autograder").decode()  # Gradescope's 10 minutes, less one
            other = [n for n in names if n.startswith("solutions/") and not n.startswith(f"solutions/{assignment}/")]
            assert not other, f"the {assignment} bundle holds other assignments' solutions: {other}"
            assert not [n for n in names if "__pycache__" in n]
    setup = (bundles / "01-forward" / "setup.sh").read_text()
    pinned = (bundles / "01-forward" / "requirements.txt").read_text().split()
    assert [p.split("==")[0] for p in pinned] == list(gradescope.GRADER_PACKAGES) and all("==" in p for p in pinned)
    assert "-r requirements.txt -c constraints.txt" in setup and "bubblewrap" in setup
    syntax = subprocess.run(["bash", "-n", str(bundles / "01-forward" / "setup.sh")], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


def gradescope_run(bundles: Path, tmp: Path, assignment: str, files: dict[str, nbformat.NotebookNode | str]) -> dict:
    """Lay out Gradescope's /autograder under tmp, put `files` in submission/, run run_autograder; results.json."""
    root = tmp / "autograder"
    with zipfile.ZipFile(bundles / f"{assignment}.zip") as z:
        z.extractall(root / "source")
    (root / "source" / "run_autograder").chmod(0o755)  # zipfile does not restore modes; Gradescope does
    (root / "submission").mkdir()
    (root / "results").mkdir()
    for name, content in files.items():
        path = root / "submission" / name
        if isinstance(content, str) and content.startswith("->"):
            path.symlink_to(content[2:].strip())
        else:
            nbformat.write(content, str(path))
    # a clean environment, as in Gradescope's container: nothing of the repository on the path
    env = {"PATH": os.environ["PATH"], "GRADESCOPE_ROOT": str(root), "NORMGRAD_PYTHON": sys.executable,
           "HOME": str(tmp)}
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((root / "results" / "results.json").read_text())
    assert isinstance(results["score"], (int, float)) and isinstance(results.get("tests"), list)
    for test in results["tests"]:
        assert {"name", "score", "max_score", "output", "visibility"} <= set(test)
        assert test["visibility"] in ("visible", "hidden", "after_due_date", "after_published")
    return results


def test_run_autograder_gives_the_solution_full_marks(bundles, tmp_path):
    results = gradescope_run(bundles, tmp_path, "01-forward", {"forward.ipynb": solved("01-forward")})
    total = sum(c.points for c in load("01-forward").cases)
    assert results["score"] == total and len(results["tests"]) == len(load("01-forward").cases)
    assert all(t["score"] == t["max_score"] for t in results["tests"])
    if os.geteuid() == 0:  # as on Gradescope: without bubblewrap, the sandbox user must not read the solution
        solution = tmp_path / "autograder" / "source" / "solutions" / "01-forward" / "forward.ipynb"
        assert solution.stat().st_mode & 0o077 == 0 and solution.parent.stat().st_mode & 0o077 == 0


def test_run_autograder_names_a_known_mistake_with_a_link_to_the_published_book(bundles, tmp_path):
    wrong = submission("01-forward", {"layernorm_forward": GAMMA_FORGOTTEN}, base=solved("01-forward"))
    # a student's upload is named as their browser saved it
    results = gradescope_run(bundles, tmp_path, "01-forward", {"forward (1).ipynb": wrong})
    mistake = next(m for m in load("01-forward").mistakes
                   if m.function == "layernorm_forward" and m.name == "gamma-forgotten")
    failed = [t for t in results["tests"] if t["score"] < t["max_score"]]
    assert failed and all(t["name"].startswith("layernorm_forward/") for t in failed)
    assert all(mistake.message in t["output"] for t in failed)
    assert f"{report.default_book_url()}{mistake.section}" in failed[0]["output"]
    assert results["score"] == sum(c.points for c in load("01-forward").cases) - sum(t["max_score"] for t in failed)


def test_run_autograder_never_grades_a_link_and_says_what_to_upload(bundles, tmp_path):
    # a link to the bundle's own solution would otherwise score full marks
    solution = tmp_path / "autograder" / "source" / "solutions" / "01-forward" / "forward.ipynb"
    results = gradescope_run(bundles, tmp_path, "01-forward", {"forward.ipynb": f"-> {solution}"})
    assert results["score"] == 0 and "no notebook was submitted" in results["output"]


def test_choosing_the_submitted_notebook(tmp_path):
    assert gradescope.submitted_notebook(tmp_path, "forward.ipynb") == (None, "no notebook was submitted: upload "
                                                                             "your forward.ipynb")
    (tmp_path / "Forward.IPYNB").write_text("{}")  # not a notebook's name: the message says what came instead
    assert gradescope.submitted_notebook(tmp_path, "forward.ipynb") == (
        None, "no notebook (a file whose name ends in .ipynb) was submitted, only 'Forward.IPYNB': upload your "
              "forward.ipynb")
    (tmp_path / "Forward.IPYNB").unlink()
    hostile = "forward\nWARNING: \x1b[31mgraded.txt"  # a line break and an escape sequence, forging a line
    (tmp_path / hostile).write_text("{}")
    why = gradescope.submitted_notebook(tmp_path, "forward.ipynb")[1]
    assert "\n" not in why and "\x1b" not in why and repr(hostile) in why, why
    for i in range(11):  # at most ten named
        (tmp_path / f"extra{i:02d}.txt").write_text("")
    assert gradescope.submitted_notebook(tmp_path, "forward.ipynb")[1].endswith(" and 2 more: upload your forward.ipynb")
    for f in tmp_path.iterdir():
        f.unlink()
    for name in ("a.ipynb", "forward.ipynb"):
        (tmp_path / name).write_text("{}")
    assert gradescope.submitted_notebook(tmp_path, "forward.ipynb")[0] == tmp_path / "forward.ipynb"
    (tmp_path / "forward.ipynb").unlink()
    (tmp_path / "b.ipynb").write_text("{}")
    chosen, why = gradescope.submitted_notebook(tmp_path, "forward.ipynb")
    assert chosen is None and "2 notebooks" in why and "forward.ipynb" in why
    (tmp_path / "forward.ipynb").write_text("{}")  # the release's name wins, and the output says what was left out
    chosen, why = gradescope.submitted_notebook(tmp_path, "forward.ipynb")
    assert chosen == tmp_path / "forward.ipynb" and "'b.ipynb'" in why and "not graded" in why
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "forward.ipynb").write_text("{}")
    chosen, why = gradescope.submitted_notebook(tmp_path, "forward.ipynb")
    assert chosen is None and "2 notebooks named forward.ipynb" in why


def test_a_run_short_of_time_keeps_the_points_of_the_tests_that_ran(bundles, tmp_path):
    """`run` gives the grader its time less CHECK_MARGIN_S: a batchnorm_forward that sleeps costs its own and the
    later functions' points, with a word on why, and layernorm_forward keeps its 12."""
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundles / "01-forward.zip") as z:
        z.extractall(root / "source")
    sleepy = "import time\n\ndef batchnorm_forward(x, gamma, beta, eps=1e-5):\n    time.sleep(600)\n"
    (root / "submission").mkdir()
    nbformat.write(submission("01-forward", {"batchnorm_forward": sleepy}, base=solved("01-forward")),
                   str(root / "submission" / "forward.ipynb"))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "autograder.gradescope", "run", "--assignment", "01-forward",
                           "--root", str(root), "--time-limit", str(gradescope.CHECK_MARGIN_S + 15)],
                          cwd=root / "source", env=env, capture_output=True, text=True, timeout=300)
    results = json.loads((root / "results" / "results.json").read_text())
    assert done.returncode == 0 and results["score"] == 12, (results["score"], done.stdout[-2000:])
    assert re.search(r"grading stopped after 1[45] s, all the time one notebook may take", results["output"])


def test_run_autograder_leaves_results_when_the_grader_cannot_start(bundles, tmp_path):
    root = tmp_path / "autograder"
    with zipfile.ZipFile(bundles / "01-forward.zip") as z:
        z.extractall(root / "source")
    (root / "source" / "run_autograder").chmod(0o755)
    (root / "submission").mkdir()
    env = {"PATH": os.environ["PATH"], "GRADESCOPE_ROOT": str(root), "NORMGRAD_PYTHON": str(tmp_path / "no-python")}
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True)
    results = json.loads((root / "results" / "results.json").read_text())
    assert done.returncode == 0 and results["score"] == 0 and "could not start" in results["output"]


# --- the set-up cell ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("assignment", list(ASSIGNMENTS))
def test_every_notebook_starts_with_the_set_up_cell(assignment):
    for path in (notebooks(assignment).source, notebooks(assignment).release):
        first = read(path).cells[0]
        assert setup_cell.is_canonical(first), f"{path}: run `python scripts/setup_cell.py`, then release"
        if path == notebooks(assignment).release:
            assert "checksum" in first.metadata["nbgrader"], "nbgrader generated the release's cell as read-only"


def test_writing_the_set_up_cell_is_idempotent_and_replaces_an_old_one(tmp_path):
    nb = read(notebooks("06-triton").source)
    once = setup_cell.with_setup_cell(nbformat.from_dict(json.loads(json.dumps(nb))), "06-triton")
    twice = setup_cell.with_setup_cell(nbformat.from_dict(json.loads(json.dumps(once))), "06-triton")
    assert nbformat.writes(once) == nbformat.writes(twice)
    assert setup_cell.is_canonical(once.cells[0]) and once.cells[1:] == [c for c in nb.cells if c.get("id") != "normgrad-setup"]
    assert once.metadata["accelerator"] == "GPU"  # Colab opens exercise 06 on a GPU runtime
    old = nbformat.from_dict(json.loads(json.dumps(once)))
    old.cells[0].source = old.cells[0].source.replace(book.VERSION, "0.0.1")
    old.cells.insert(1, old.cells.pop(0))  # an older cell, moved down by an edit
    again = setup_cell.with_setup_cell(old, "06-triton")
    assert nbformat.writes(again) == nbformat.writes(once)


def test_the_set_up_cell_installs_the_books_wheel_at_the_books_version():
    source = setup_cell.cell_source()
    assert f'"{book.book_url()}"' in source and f"{book.WHEEL}" in source
    assert book.WHEEL == f"_static/normgrad-{book.VERSION}-py3-none-any.whl"
    assert len(source.splitlines()) <= 14, "the set-up cell must stay short"


# --- the built book: the wheel, the buttons and a fresh environment -------------------------------------------

def launch_settings() -> dict:
    import yaml

    config = yaml.safe_load((book.ROOT / "_config.yml").read_text())
    org, repo = config["repository"]["url"].rstrip("/").split("/")[-2:]
    return {**config["launch_buttons"], "org": org, "repo": repo, "branch": config["repository"]["branch"]}


@pytest.mark.book
def test_the_book_publishes_the_wheel_and_every_exercise(site):
    import zipfile as zf

    with zf.ZipFile(site / book.WHEEL) as wheel:
        names = wheel.namelist()
        metadata = wheel.read(f"normgrad-{book.VERSION}.dist-info/METADATA").decode()
    assert "normgrad/cases/forward.py" in names and "normgrad/environment.py" in names
    assert not [n for n in names if n.startswith("autograder/")], "the grader is not the notebooks' business"
    assert f"Version: {book.VERSION}" in metadata
    assert {line.split(":", 1)[1].split(">=")[0].strip() for line in metadata.splitlines()
            if line.startswith("Requires-Dist:")} == {"numpy", "torch", "triton"}
    for assignment in ASSIGNMENTS:
        release = notebooks(assignment).release
        assert (site / release.relative_to(book.ROOT)).read_bytes() == release.read_bytes()


@pytest.mark.book
@pytest.mark.browser
def test_each_chapter_shows_buttons_that_open_its_own_exercise(site, tmp_path):
    from test_book import rendered_dom

    launch = launch_settings()
    ui = {"classic": "tree", "jupyterlab": "lab/tree"}[launch["notebook_interface"]]
    for assignment in ASSIGNMENTS:
        page = f"chapters/{assignment}.html"
        dom = rendered_dom(site, page, tmp_path)
        exercise = notebooks(assignment).release.relative_to(book.ROOT).as_posix()
        assert 'aria-label="Open this chapter\'s exercise"' in dom, f"{page}: no launch menu"
        links = dict(re.findall(r'<a href="([^"]+)"[^>]*?title="((?:Open|Download) this chapter[^"]*)"', dom))
        by_title = {title: url for url, title in links.items()}
        expected = {
            "Open this chapter's exercise on Binder":
                f"{launch['binderhub_url']}/v2/gh/{launch['org']}/{launch['repo']}/{launch['branch']}?urlpath={ui}/{exercise}",
            "Open this chapter's exercise on Colab":
                f"{launch['colab_url']}/github/{launch['org']}/{launch['repo']}/blob/{launch['branch']}/{exercise}",
        }
        for title, url in expected.items():
            assert by_title.get(title) == url, f"{page}: {title}: {by_title.get(title)} (expected {url})"
        download = by_title.get("Download this chapter's exercise notebook")
        assert download == f"../{exercise}", f"{page}: download link {download}"
        assert (site / "chapters" / download).resolve() == (site / exercise).resolve()
    students = rendered_dom(site, "chapters/students.html", tmp_path)
    assert "dropdown-launch-buttons" not in students, "a page without an exercise has nothing to launch"


FRESH_PACKAGES = ("ipykernel", "numpy", "torch", "triton")  # Jupyter's kernel, and what the visible tests need


def fresh_packages() -> Path:
    """FRESH_PACKAGES at the course's pins, installed once into _build/fresh-packages-<pins' hash>/.

    They weigh gigabytes (PyTorch, Triton): installing them for every run would cost minutes, so
    the folder is kept between runs and rebuilt when the pins change.
    """
    import hashlib

    pins = book.ROOT / "requirements.txt"
    folder = book.ROOT / "_build" / f"fresh-packages-{hashlib.sha256(pins.read_bytes()).hexdigest()[:12]}"
    if not folder.is_dir():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(partial),
                               "-c", str(pins), *FRESH_PACKAGES], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        partial.rename(folder)  # only a complete folder is ever used
    return folder


@pytest.fixture
def fresh_python(tmp_path) -> Path:
    """A new virtual environment (no system site-packages) that sees only FRESH_PACKAGES besides its own pip."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # from the base interpreter
    python = venv / "bin" / "python"
    site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    (Path(site_packages) / "fresh_packages.pth").write_text(f"{fresh_packages()}\n")
    return python


@pytest.mark.book
def test_a_notebook_installs_the_course_from_the_book_and_runs_its_visible_tests(site, fresh_python, tmp_path,
                                                                                  monkeypatch):
    import functools
    import http.server
    import threading

    from nbclient import NotebookClient
    from test_book import _Quiet

    monkeypatch.delenv("PYTHONPATH", raising=False)  # the repository must not be importable in there
    assert subprocess.run([str(fresh_python), "-c", "import normgrad"], capture_output=True, cwd=tmp_path,
                          env=dict(os.environ)).returncode != 0, "normgrad is importable before the set-up cell ran"
    kernels = tmp_path / "jupyter" / "kernels" / "fresh"
    kernels.mkdir(parents=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(fresh_python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh", "language": "python", "env": {"NORMGRAD_BOOK": url}}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = solved("01-forward")  # the release, its answers filled in (hidden tests stay out)
    if not setup_cell.is_canonical(nb.cells[0]):  # until scripts/setup_cell.py runs at the merge
        nb = setup_cell.with_setup_cell(nb, "01-forward")
    work = tmp_path / "work"
    work.mkdir()
    try:
        NotebookClient(nb, kernel_name="fresh", timeout=600, resources={"metadata": {"path": str(work)}}).execute()
    finally:
        server.shutdown()
    outputs = ["".join(o.get("text", "") for o in c.get("outputs", [])) for c in nb.cells if c.cell_type == "code"]
    assert f"installing the course's library: {url}{book.WHEEL}" in outputs[0]
    assert f"normgrad {book.VERSION}, torch " in outputs[0] and "no GPU" in outputs[0]
    passes = sum(len(re.findall(r"^\s*PASS\b", text, re.M)) for text in outputs)
    visible = [c for c in load("01-forward").cases if not c.hidden]
    assert passes == len(visible) and not any(re.search(r"^\s*FAIL\b", t, re.M) for t in outputs)
    where = subprocess.run([str(fresh_python), "-c", "import normgrad; print(normgrad.__file__)"],
                           capture_output=True, text=True, cwd=work)
    assert str(fresh_python.parent.parent) in where.stdout, "normgrad came from somewhere else than the wheel"
    system = subprocess.run([str(fresh_python), "-c", "import matplotlib"], capture_output=True, cwd=work)
    assert system.returncode != 0, "the fresh environment sees packages beyond Jupyter's kernel and the tests' own"


def test_binders_environment_has_the_courses_pins():
    pins = gradescope.requirement_pins()
    lines = [l for l in (book.ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith(("#", "-"))]
    assert lines and all(pins[l.split("==")[0].lower().replace("_", "-")] == l for l in lines)
    assert {l.split("==")[0] for l in lines} >= set(gradescope.GRADER_PACKAGES)


def test_a_jupyterhub_in_the_config_gets_a_button_that_pulls_the_exercise(tmp_path):
    """The theme's own launch buttons, with a JupyterHub named, pointed at the exercise by exercise_launch."""
    from types import SimpleNamespace

    import exercise_launch
    from sphinx_book_theme.header_buttons.launch import add_launch_buttons

    launch = launch_settings()
    pagename, exercise = "chapters/01-forward", notebooks("01-forward").release.relative_to(book.ROOT).as_posix()
    (tmp_path / "jupyter_execute" / "chapters").mkdir(parents=True)
    (tmp_path / "jupyter_execute" / f"{pagename}.ipynb").write_text("{}")  # the theme copies it for download
    options = {"launch_buttons": {**{k: launch[k] for k in ("notebook_interface", "binderhub_url", "colab_url")},
                                  "jupyterhub_url": "https://hub.example.edu"}, "repository_branch": launch["branch"]}
    app = SimpleNamespace(outdir=str(tmp_path / "html"), config={"html_theme_options": options},
                          env=SimpleNamespace(metadata={pagename: {"kernelspec": {}}},
                                              doc2path=lambda name: str(book.ROOT / f"{name}.md")))
    context = {"header_buttons": [], "pagename": pagename, "sourcename": f"{pagename}.md",
               "github_url": "https://github.com", "github_user": launch["org"], "github_repo": launch["repo"],
               "pathto": lambda target, resource=0: f"../{target}"}
    add_launch_buttons(app, pagename, "page.html", context, None)
    exercise_launch.point_buttons_at_exercise(app, pagename, "page.html", context, None)
    urls = {b["text"]: b["url"] for b in context["header_buttons"][0]["buttons"]}
    assert urls["JupyterHub"] == (f"https://hub.example.edu/hub/user-redirect/git-pull?repo=https%3A//github.com/"
                                  f"{launch['org']}/{launch['repo']}&urlpath=lab/tree/{launch['repo']}/{exercise}"
                                  f"&branch={launch['branch']}")
    assert set(urls) == {"Binder", "JupyterHub", "Colab"} and all(exercise in u for u in urls.values())
