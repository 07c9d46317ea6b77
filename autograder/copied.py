"""The book's own functions in a submission, names aside: what a student copied rather than wrote.

An exercise asks for code its chapter did not hand over, but a chapter works its own code through in
the open, and some of it would answer a step (chapter 6's row-wise kernel, with `[0]`, answers step 1
of exercise 06). The static read cannot tell a copy that was understood from one that was not, so it
only says where a submitted function is one of the book's: its statements the same, node for node,
once its docstring is dropped and its own names (arguments and what it assigns) are numbered in order
of appearance. What it calls (tl.load, torch.empty) keeps its name. Short functions are left out: a
three-line formula is written alike by anyone who derived it.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache

from .course import ROOT
from .pycode import parse

CHAPTERS = ROOT / "chapters"
LEAST_NODES = 60  # below this a function is a formula or two: written alike by anyone who derived it
_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)
_INCLUDED = re.compile(r"^```\{literalinclude\} (\S+)", re.M)


def fingerprint(function: ast.FunctionDef) -> str | None:
    """The function's statements with its own names numbered and its docstring dropped; None if short.
    It numbers the names in the tree itself: a nested function is then read with its outer one's numbers,
    on the book's side and the submission's alike."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    own = [a.arg for a in function.args.posonlyargs + function.args.args + function.args.kwonlyargs]
    own += [n.id for s in body for n in ast.walk(s) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    numbers = {name: f"v{i}" for i, name in enumerate(dict.fromkeys(own))}
    size = 0
    for statement in body:
        for n in ast.walk(statement):
            size += 1
            if isinstance(n, ast.Name) and n.id in numbers:
                n.id = numbers[n.id]
    if size < LEAST_NODES:
        return None
    try:
        return "\n".join(ast.dump(s, annotate_fields=False, include_attributes=False) for s in body)
    except RecursionError:  # nested deeper than ast.dump goes: not the book's
        return None


def _functions(source: str):
    tree = parse(source)  # None for what does not parse here (too deep, IPython's syntax): the read flags that
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.FunctionDef):
            yield node


@lru_cache(maxsize=1)
def book_functions() -> dict[str, tuple[str, str]]:
    """fingerprint -> (where, name), as ("chapter 6", "_dx_row_kernel"), for every function of some length
    in the chapters' code cells and in the files they include."""
    found = {}
    for page in sorted(CHAPTERS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        chapter = page.stem.split("-")[0]
        where = f"chapter {chapter.lstrip('0') or chapter}" if chapter.isdigit() else f"the {page.stem} page"
        sources = [m.group(1) for m in _CELL.finditer(text)]
        for included in dict.fromkeys(_INCLUDED.findall(text)):
            try:
                sources.append((page.parent / included).read_text(encoding="utf-8"))
            except OSError:  # a bundle without that file: its functions go unrecognized
                continue
        for source in sources:
            for function in _functions(source):
                key = fingerprint(function)
                if key is not None:
                    found.setdefault(key, (where, function.name))
    return found


def copied(source: str) -> list[tuple[int, str, tuple[str, str]]]:
    """(line, name, the book's (where, name)) for each function of the cell that is one of the book's,
    names aside."""
    book = book_functions()
    return [(f.lineno, f.name, book[key]) for f in _functions(source)
            if (key := fingerprint(f)) is not None and key in book]


def flag_copies(copies: list[tuple[str, int, str, tuple[str, str]]]) -> list[str]:
    """One flag for all of a submission's copies, (cell, line, name, the book's (where, name)) each: a paste
    of a whole chapter is one line for the instructor to read, not one per function."""
    def one(cell, line, name, shown):
        where, its = shown
        return f"`{name}` (cell {cell!r} line {line})" + ("" if name == its else f", which is {where}'s `{its}`")

    if not copies:
        return []
    places = sorted({where for *_, (where, _) in copies})
    return [f"defines {len(copies)} of {' and '.join(places)}'s functions as the book shows them (names aside): "
            + "; ".join(one(*c) for c in copies) + ". The exercise asks for code of your own"]
