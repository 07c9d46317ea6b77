"""The class at a glance, after a batch: scores, pass rates per test, the most common named mistakes.

Read from the batch folder's own results.json files (one per student and
assignment, whoever graded them and when), written as `summary.html` (a page)
and `summary.csv` (the same figures, one row each: `kind` is `score` for a
histogram bin, `test` for a test's pass rate, `mistake` for a named mistake).
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from normgrad.cases import ASSIGNMENTS

from . import safe
from .report import fmt_points

BINS = 10  # histogram bins from 0 to the maximum score
SUMMARY_COLUMNS = ("assignment", "kind", "name", "count", "of", "rate")


@dataclass
class Assignment:
    scores: list[float] = field(default_factory=list)
    students: list[str] = field(default_factory=list)  # the feedback folder of each score, in its order
    max_score: float = 0.0
    maxima: set = field(default_factory=set)  # each results.json's maximum: two where some had other private cases
    passed: Counter = field(default_factory=Counter)  # test name -> students who passed it
    graded: Counter = field(default_factory=Counter)  # test name -> students it ran for
    mistakes: Counter = field(default_factory=Counter)  # mistake name -> students whose answer matched it
    messages: dict = field(default_factory=dict)  # mistake name -> (function, test)

    def mixed(self) -> str:
        """A warning where the results are out of different maxima (graded with different private cases), else ''."""
        if len(self.maxima) < 2:
            return ""
        return (f"these results are out of different maximum scores ({', '.join(map(fmt_points, sorted(self.maxima)))}):"
                " some were graded with other private cases (--private); the mean and the histogram mix them, so "
                "grade the whole class with the same private cases")

    def histogram(self) -> list[tuple[float, float, int]]:
        """(low, high, count) for BINS equal bins over [0, max_score]; the last bin holds the maximum."""
        top = self.max_score or max(self.scores, default=1.0) or 1.0
        counts = [0] * BINS
        for s in self.scores:
            counts[min(BINS - 1, max(0, int(s / top * BINS)))] += 1
        return [(top * i / BINS, top * (i + 1) / BINS, c) for i, c in enumerate(counts)]


def collect(out: Path) -> dict[str, Assignment]:
    """assignment id -> its figures, from out/feedback/<student>/<assignment>/results.json."""
    found: dict[str, Assignment] = defaultdict(Assignment)
    for path in sorted((out / "feedback").glob("*/*/results.json")):
        assignment = path.parent.name
        if assignment not in ASSIGNMENTS:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            tests = data["tests"]
            score = float(data["score"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        a = found[assignment]
        a.scores.append(score)
        a.students.append(path.parent.parent.name)
        if tests:  # a notebook the grader itself failed on has none: out of no maximum
            a.maxima.add(round(sum(float(t.get("max_score", 0)) for t in tests), 6))
            a.max_score = max(a.maxima)
        seen = set()
        for t in tests:
            name = str(t.get("name", "")).split(":")[0]
            a.graded[name] += 1
            a.passed[name] += t.get("status") == "passed"
            mistake = t.get("mistake")
            if mistake and (name.split("/")[0], mistake) not in seen:  # a student counts once per function
                seen.add((name.split("/")[0], mistake))
                a.mistakes[f"{name.split('/')[0]}: {mistake}"] += 1
    return dict(sorted(found.items()))


def rows(figures: dict[str, Assignment]) -> list[dict]:
    out = []
    for assignment, a in figures.items():
        n = len(a.scores)
        for low, high, count in a.histogram():
            out.append({"assignment": assignment, "kind": "score", "name": f"{fmt_points(low)}-{fmt_points(high)}",
                        "count": count, "of": n, "rate": round(count / n, 4) if n else 0})
        for test in sorted(a.graded):
            out.append({"assignment": assignment, "kind": "test", "name": test, "count": a.passed[test],
                        "of": a.graded[test], "rate": round(a.passed[test] / a.graded[test], 4)})
        for mistake, count in a.mistakes.most_common():
            out.append({"assignment": assignment, "kind": "mistake", "name": mistake, "count": count, "of": n,
                        "rate": round(count / n, 4) if n else 0})
    return out


def csv_text(figures: dict[str, Assignment]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(figures):
        writer.writerow({k: safe.csv_cell(v) if isinstance(v, str) else v for k, v in row.items()})
    return buffer.getvalue()


def page(figures: dict[str, Assignment]) -> str:
    esc = html.escape
    parts = []
    for assignment, a in figures.items():
        n = len(a.scores)
        mean = sum(a.scores) / n if n else 0.0
        parts.append(f"<h2>{esc(assignment)}</h2><p>{n} student(s); mean {fmt_points(round(mean, 2))} / "
                     f"{fmt_points(a.max_score)}; full marks: {sum(s >= a.max_score - 1e-9 for s in a.scores)}</p>")
        if a.mixed():
            parts.append(f"<p><strong>Note:</strong> {esc(a.mixed())}.</p>")
        widest = max((c for _, _, c in a.histogram()), default=1) or 1
        bars = "".join(f"<tr><td>{fmt_points(lo)}&ndash;{fmt_points(hi)}</td><td>{c}</td>"
                       f"<td><span class='bar' style='width:{20 * c / widest:.1f}rem'></span></td></tr>"
                       for lo, hi, c in a.histogram())
        parts.append(f"<h3>Scores</h3><table>{bars}</table>")
        tests = "".join(f"<tr><td>{esc(t)}</td><td>{a.passed[t]}/{a.graded[t]}</td>"
                        f"<td>{100 * a.passed[t] / a.graded[t]:.0f}%</td></tr>" for t in sorted(a.graded))
        parts.append(f"<h3>Pass rate per test</h3><table>{tests}</table>")
        mistakes = "".join(f"<tr><td>{esc(m)}</td><td>{c}</td></tr>" for m, c in a.mistakes.most_common(10))
        parts.append("<h3>Most common named mistakes</h3>"
                     + (f"<table>{mistakes}</table>" if mistakes else "<p>none</p>"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Class summary</title>
<style>
body {{ font-family: sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; }}
td {{ padding: .1rem .6rem; }} .bar {{ display: inline-block; height: .8rem; background: #4a7; }}
</style></head><body><h1>Class summary</h1>
{''.join(parts) or '<p>No graded notebooks.</p>'}
</body></html>
"""


def write(out: Path) -> dict[str, Assignment]:
    """Write out/summary.html and out/summary.csv from the folder's results; returns the figures."""
    figures = collect(out)
    safe.write_atomic(out / "summary.html", page(figures))
    safe.write_atomic(out / "summary.csv", csv_text(figures))
    return figures
