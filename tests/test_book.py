"""The book: it builds, runs every chapter, renders its math in a browser offline, and holds no solutions."""

import functools
import html
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

import book
from normgrad.cases import ASSIGNMENTS, load
from test_exercises import solution_lines
from autograder.course import notebooks, read

pytestmark = pytest.mark.book


def text_of(page: str) -> str:
    """What a reader can read on a page: tags dropped, entities decoded, spaces collapsed."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())


def published_texts(site: Path):
    """(path, text) for everything a visitor can download: pages, sources, the search index."""
    for path in site.rglob("*"):
        if path.suffix in (".html", ".txt", ".md", ".ipynb", ".js", ".json", ".py") and path.is_file():
            if "_static" in path.parts and path.name != "searchindex.js":
                continue  # third-party assets
            raw = path.read_text(errors="ignore")
            yield path, raw, text_of(raw) if path.suffix == ".html" else raw


def test_chapter_one_ran_its_code(site):
    page = text_of((site / "chapters" / "01-forward.html").read_text())
    assert "largest relative difference to torch" in page
    assert re.search(r"largest relative difference to torch \d\.\de-1[4-7]", page)


def hidden_test_lines(assignment: str) -> set[str]:
    lines = set()
    for cell in read(notebooks(assignment).source).cells:
        for region in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", cell.source, re.S):
            lines |= {line.strip() for line in region.splitlines() if len(line.strip()) >= 16}
    return lines


def test_published_book_holds_no_solution_code_and_no_hidden_tests(site):
    secrets = set().union(*(solution_lines(a) | hidden_test_lines(a) for a in ASSIGNMENTS))
    assert secrets, "nothing to look for: the check would pass vacuously"
    for path, raw, text in published_texts(site):
        for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS"):
            assert marker not in raw, f"{path} contains {marker}"
        squeezed = " ".join(text.split())
        for line in secrets:
            assert " ".join(line.split()) not in squeezed, f"{path.relative_to(site)} contains {line!r}"


def test_the_leak_check_would_see_a_leak(tmp_path):
    planted = tmp_path / "page.html"
    line = next(iter(solution_lines("01-forward")))
    planted.write_text(f"<pre><span>{html.escape(line[:5])}</span>{html.escape(line[5:])}</pre>")
    texts = [t for _, _, t in published_texts(tmp_path)]
    assert any(" ".join(line.split()) in " ".join(t.split()) for t in texts)


def test_pages_load_nothing_from_the_internet(site):
    for page in site.rglob("*.html"):
        raw = page.read_text()
        assert not re.search(r"<script[^>]+src=\"https?:", raw), page
        assert not re.search(r"<link[^>]+href=\"https?:[^\"]*\"[^>]*stylesheet", raw), page
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def rendered_dom(site: Path, page: str, tmp_path: Path) -> str:
    """The page's DOM after a headless Chromium with no internet access has run its scripts."""
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: `make test` installs it (Debian package chromium)"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/{page}"
        done = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             # every host but this one resolves to nothing: the page must do without the internet
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000", "--dump-dom", url],
            capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def chapter_pages(site: Path) -> list[str]:
    return sorted(str(p.relative_to(site)) for p in (site / "chapters").glob("[0-9]*.html"))


def test_every_chapter_of_the_toc_is_built(site, root):
    listed = re.findall(r"file:\s*chapters/(\d\d-[\w-]+)", (root / "_toc.yml").read_text())
    assert listed and [f"chapters/{name}.html" for name in listed] == chapter_pages(site)


@pytest.mark.browser
def test_math_renders_in_a_browser_offline(site, tmp_path):
    for page in chapter_pages(site):
        static = (site / page).read_text()
        formulas = len(re.findall(r'class="math notranslate nohighlight"', static))
        if page.endswith("01-forward.html"):
            assert formulas >= 20
        if formulas:
            check_typeset(rendered_dom(site, page, tmp_path), formulas, page)


def check_typeset(dom: str, formulas: int, page: str):
    typeset = re.findall(r"<mjx-container[^>]*jax=\"CHTML\"", dom)
    assert len(typeset) == formulas, f"{page}: {len(typeset)} of {formulas} formulas typeset"
    assert "<mjx-merror" not in dom and "Math Processing Error" not in dom, f"{page}: a formula failed"
    body = text_of(dom[dom.find("<main"):])
    assert "\\(" not in body and "\\frac" not in body, f"{page}: raw TeX left on the page"


def test_every_diagnosis_links_to_a_section_that_exists(site):
    for assignment in ASSIGNMENTS:
        for mistake in load(assignment).mistakes:
            page, _, anchor = mistake.section.partition("#")
            path = site / "chapters" / page
            assert path.is_file(), f"{assignment}/{mistake.name} links to a missing page {page}"
            assert f'id="{anchor}"' in path.read_text(), f"{assignment}/{mistake.name}: no #{anchor} on {page}"


@pytest.mark.parametrize("cell,why", [
    ("raise RuntimeError('boom')", "an error in a cell"),
    ("import sys; print('careful', file=sys.stderr)", "a warning printed by a cell"),
])
def test_a_chapter_that_fails_fails_the_build(root, tmp_path, cell, why):
    shutil.copy(root / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page\n")
    (tmp_path / "page.md").write_text(
        "---\nkernelspec:\n  name: python3\n  display_name: Python 3\n---\n# Page\n\n```{code-cell} ipython3\n"
        f"{cell}\n```\n")
    done = book.build(tmp_path / "out", source=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0, f"the build succeeded despite {why}"


def test_every_figure_a_chapter_draws_reaches_its_page_as_an_image(site, root):
    """A display-less backend in the book's kernel would drop every figure: count them on the pages."""
    figures_seen = 0
    for source in sorted((root / "chapters").glob("[0-9]*.md")):
        text = source.read_text()
        # a plotting call that is a cell's last statement, at the top level (not one made only when a file exists)
        figures = len(re.findall(r"^\w+_(?:figure|graph)\(.*\);?$", text, re.M))
        page = (site / "chapters" / f"{source.stem}.html").read_text()
        images = len(re.findall(r"<img[^>]+src=\"[^\"]+\.png\"", page))
        assert images >= figures, f"{source.name} draws {figures} figure(s), its page shows {images} image(s)"
        figures_seen += figures
    assert figures_seen, "no chapter draws a figure: the check would pass vacuously"


def test_chapters_four_and_five_ran_their_code(site):
    four = text_of((site / "chapters" / "04-code-mapping.html").read_text())
    assert re.search(r"RowNorm dx: relative error \d\.\de-1[4-7]", four)
    assert "RowNormDividingByVar, tiny-variance rows: gradcheck says False" in four
    numerics = text_of((site / "chapters" / "04-numerics.html").read_text())
    assert re.search(r"bfloat16 3\.9e-03 3\.9e-03 cpu", numerics)  # a row of the tolerance table
    assert re.search(r"every mistake: at least \d+\.\d times it", numerics)  # the margins, measured
    five = text_of((site / "chapters" / "05-thnn.html").read_text())
    assert re.search(r"staged \(eager\): \d+\.\d passes over the data", five)
    assert re.search(r"native is \d+\.\d times faster than staged", five)


def test_chapter_six_checked_every_rung_and_shows_no_invented_timings(site):
    page = text_of((site / "chapters" / "06-triton.html").read_text())
    assert len(re.findall(r"\(tolerance \d\.\de-\d\d\)", page)) == 5 * 3  # five rungs (the fifth split), 3 dtypes
    assert re.search(r"BLOCK_N = 16384, ROWS = 1, 32 warps: +\d+ registers", page)  # compiled for sm_90 at build time
    assert re.search(r"BLOCK_N = +4096: v3 ROWS = \d+, +\d+ warps, +\d+ registers.*v4 ROWS = \d+", page)  # and v4
    from normgrad.benchmark import find_results, read_results, shortfalls

    shown = "No GPU measurement has been recorded yet. This page"  # the cell's output; its source has **...**
    if find_results() is None:
        assert shown in page
    else:
        assert f"Measured on {read_results(find_results())['gpu']} on" in page and shown not in page
        said = shortfalls(read_results(find_results()))  # why the targets were missed, each sentence shown
        assert said and all(" ".join(x.split()) in " ".join(page.replace("\u2019", "'").split()) for x in said)


def test_the_tables_cells_draw_render_as_tables(site):
    """display(Markdown(...)) tables are parsed as MyST: as CommonMark they showed their pipes."""
    def headers(page: str) -> list[str]:
        raw = (site / "chapters" / page).read_text()
        return [text_of(h) for h in re.findall(r"<th\b.*?</th>", raw, flags=re.S)]

    from normgrad.benchmark import find_results

    instructors = headers("instructors.html")
    assert {"stock nbgrader", "test cases", "seconds per notebook, all in"} <= set(instructors), instructors
    if find_results() is not None:  # chapter 6 draws its targets' table from the results file
        assert {"target", "shortfall"} <= set(headers("06-triton.html"))


def test_the_students_page_lists_each_task_with_its_points(site):
    """The table is drawn from the cases at build time; each row reaches the page with the cases' points."""
    rows = {}
    for row in re.findall(r"<tr\b.*?</tr>", (site / "chapters" / "students.html").read_text(), flags=re.S):
        cells = [text_of(c) for c in re.findall(r"<td\b.*?</td>", row, flags=re.S)]
        if len(cells) == 4:
            rows[cells[1]] = (cells[0], cells[3])
    expected = {f: (a[:2], f"{load(a).points_of(f):g}") for a in ASSIGNMENTS for f in load(a).functions}
    assert rows == expected


# ---- Every page at 1280 px: no display equation scrolls sideways, every figure is there ----

WIDTH = 1280
NEW_FIGURES = {"02-chain-rule": ["group_graph_figure"], "03-variance-derivative": ["jacobian_geometry_figure"],
               "06-triton": ["triton_rungs_figure", "two_stage_reduction_figure"]}

# Runs in the page once MathJax has typeset it, and writes what it measured into the DOM for --dump-dom.
_PROBE = """<script>
function probe() {
  if (window.MathJax && !(MathJax.startup && MathJax.startup.promise)) { setTimeout(probe, 100); return; }
  (window.MathJax ? MathJax.startup.promise : Promise.resolve()).then(() => {
    const displays = [...document.querySelectorAll('mjx-container[display="true"]')];
    const wide = [];
    displays.forEach((m, i) => {
      for (const box of [m, m.parentElement]) {
        if (box.scrollWidth - box.clientWidth > 1) { wide.push(i + ': ' + box.scrollWidth + ' > ' + box.clientWidth); break; }
      }
    });
    const images = [...document.querySelectorAll('main img')];
    const report = {displays: displays.length, wide: wide, width: window.innerWidth,
                    images: images.filter(i => i.complete && i.naturalWidth > 0).length, broken: images.filter(
                      i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))};
    const out = document.createElement('pre');
    out.id = 'probe-report';
    out.textContent = JSON.stringify(report);
    document.body.appendChild(out);
  });
}
window.addEventListener('load', probe);
</script>"""


def _chromium(site: Path, tmp_path: Path, page: str, *options: str) -> subprocess.CompletedProcess:
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: `make test` installs it (Debian package chromium)"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=15000", *options, f"http://127.0.0.1:{server.server_port}/{page}"],
            capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()


def figures_drawn(source: Path) -> list[str]:
    """The plotting calls that end a cell of a chapter (the figures its page must show)."""
    return re.findall(r"^(\w+_(?:figure|graph))\(.*\);?$", source.read_text(), re.M)


@pytest.mark.browser
def test_every_page_at_1280px_fits_its_equations_and_shows_its_figures(site, root, tmp_path):
    """Headless Chromium, 1280 px wide: no display equation needs a horizontal scroll bar, and every
    figure a chapter draws (the second edition's new ones among them) is on its page and loads.
    Screenshots of the top of every chapter are kept under the test's tmp_path for a person to look at."""
    import json

    pages = chapter_pages(site) + sorted(str(p.relative_to(site)) for p in (site / "chapters").glob("[a-z]*.html"))
    for name, functions in NEW_FIGURES.items():
        drawn = figures_drawn(root / "chapters" / f"{name}.md")
        assert set(functions) <= set(drawn), f"{name} no longer draws {set(functions) - set(drawn)}"
    for page in pages:
        original = (site / page).read_text()
        if 'class="math notranslate nohighlight"' not in original and "<img" not in original:
            continue  # no display equation, no figure: nothing to measure
        probe = site / page.replace(".html", "-probe.html")
        probe.write_text(original.replace("</body>", _PROBE + "</body>"))
        try:
            done = _chromium(site, tmp_path, str(probe.relative_to(site)), f"--window-size={WIDTH},1000",
                             "--dump-dom")
        finally:
            probe.unlink()
        assert done.returncode == 0, done.stderr[-2000:]
        found = re.search(r'<pre id="probe-report"[^>]*>(.*?)</pre>', done.stdout, re.S)
        assert found, f"{page}: the page's probe did not report (MathJax did not finish?)"
        report = json.loads(html.unescape(found.group(1)))
        assert report["width"] == WIDTH
        assert not report["wide"], f"{page}: display equations wider than their box at {WIDTH} px: {report['wide']}"
        assert not report["broken"], f"{page}: images that do not load: {report['broken']}"
        source = root / "chapters" / (Path(page).stem + ".md")
        if source.is_file():
            assert report["images"] >= len(figures_drawn(source)), f"{page}: {report} for {figures_drawn(source)}"
        if not source.is_file() or not Path(page).stem[:1].isdigit():
            continue
        shot = tmp_path / (Path(page).stem + ".png")
        _chromium(site, tmp_path, page, f"--window-size={WIDTH},2400", f"--screenshot={shot}")
        assert shot.is_file() and shot.stat().st_size > 10_000, f"{page}: no screenshot"
