"""Sphinx extension: each chapter's launch and download buttons open that chapter's exercise.

Jupyter Book's own launch buttons (`launch_buttons:` and `repository:` in
_config.yml: Binder, JupyterHub, Colab) launch the page they sit on. A chapter
page is not what a reader wants to run: its exercise is. So on a chapter with
an exercise (chapters/<id>.md and exercises/<id>/<name>.ipynb) this points
the theme's buttons at the exercise notebook of the same repository and
branch, and adds the notebook to the page's download menu; pages without an
exercise lose the launch menu, whose Colab link could not open a Markdown page
anyway. The release notebooks are published with the book, under
exercises/<id>/<name>.ipynb.
"""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def exercise_of(pagename: str) -> str | None:
    """exercises/<id>/<name>.ipynb, relative to the repository root, for chapters/<id>; else None."""
    folder, _, name = pagename.partition("/")
    found = sorted((ROOT / "exercises" / name).glob("*.ipynb")) if folder == "chapters" and name else []
    if len(found) > 1:
        raise RuntimeError(f"exercises/{name}/ holds {len(found)} notebooks; a chapter links one")
    return found[0].relative_to(ROOT).as_posix() if found else None


def point_buttons_at_exercise(app, pagename, templatename, context, doctree):
    groups = {button.get("label"): button for button in context.get("header_buttons", [])}
    launch = groups.get("launch-buttons")
    exercise = exercise_of(pagename)
    if launch is None or exercise is None:
        if launch is not None:
            context["header_buttons"].remove(launch)
        return
    page = f"{pagename}{Path(context['sourcename']).suffix}"  # the path the theme put in each URL
    for button in launch["buttons"]:
        if button.get("type") == "link":
            if button["url"].count(page) != 1:
                raise RuntimeError(f"{pagename}: cannot find {page} in the {button['text']} link {button['url']}")
            button["url"] = button["url"].replace(page, exercise)
            button["tooltip"] = f"Open this chapter's exercise on {button['text']}"
    launch["tooltip"] = "Open this chapter's exercise"
    download = groups.get("download-buttons")
    if download is not None:
        download["buttons"].insert(0, {
            "type": "link", "url": context["pathto"](exercise, 1), "text": f"exercise {Path(exercise).name}",
            "tooltip": "Download this chapter's exercise notebook", "icon": "fas fa-file-code",
            "label": "download-exercise-button"})


def publish_exercises(app, exception):
    if exception is None and app.builder.format == "html":
        for chapter in app.env.found_docs:
            exercise = exercise_of(chapter)
            if exercise:
                target = Path(app.outdir) / exercise
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ROOT / exercise, target)


def setup(app):
    app.connect("html-page-context", point_buttons_at_exercise, priority=600)  # after the theme's (501)
    app.connect("build-finished", publish_exercises)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
