"""Reading Python source without running it: the names a cell defines, and the IPython lines it holds.

Shared by the notebooks' trusted side (`course`) and the picking of a
submission's cells (`cells`), so that neither imports the other.
"""

from __future__ import annotations

import ast
import functools
import re
import threading

# CPython 3.11's ast.parse is not safe in two threads at once (it can fail with SystemError,
# "AST constructor recursion depth mismatch"), and the grader grades in threads.
_AST_LOCK = threading.Lock()


def parse(source: str) -> ast.Module | None:
    """The module's syntax tree, or None when it does not parse."""
    try:
        with _AST_LOCK:
            return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def unreadable(source: str) -> str | None:
    """Why `parse` gives None for a cell that Python itself may still run: too deeply nested or too large to
    build a tree of here, where the stack is deeper than in the sandbox. None when it parses, or is no Python."""
    try:
        with _AST_LOCK:
            ast.parse(source)
    except (RecursionError, MemoryError) as e:
        return type(e).__name__
    except (SyntaxError, ValueError):
        return None
    return None


def defined_names(source: str) -> set[str]:
    """Functions and classes a cell defines at top level; by regex if it does not parse."""
    return set(_defined_names(source))


def bound_names(source: str) -> set[str]:
    """defined_names, plus names bound at top level by assignment or import (`f = _impl`, `from m import g as f`)."""
    return set(_bound_names(source))


# A submission's cells are read once per solution slot: each cell is parsed once, not once per slot.
@functools.lru_cache(maxsize=64)
def _defined_names(source: str) -> frozenset[str]:
    tree = parse(source)
    if tree is None:
        return frozenset(re.findall(r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)", source, re.M))
    return frozenset(node.name for node in tree.body
                     if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))


@functools.lru_cache(maxsize=64)
def _bound_names(source: str) -> frozenset[str]:
    names = set(_defined_names(source))
    tree = parse(source)
    for node in tree.body if tree is not None else ():
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            targets = [node.target]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        for target in targets:
            for t in ast.walk(target):
                if isinstance(t, ast.Name):
                    names.add(t.id)
    return frozenset(names)


# A line IPython reads as a command rather than Python: `%magic`, `!shell`, `x = !ls`, `y = %time f()`.
_IPYTHON_LINE = re.compile(r"^(?P<indent>[ \t]*)(?:[A-Za-z_][\w., ]*=\s*)?(?P<command>[%!].*)$")


def without_ipython(source: str) -> tuple[str, list[str]]:
    """The cell as plain Python: IPython magics and shell lines replaced by `pass`; and the lines replaced.

    A cell magic (`%%time`) on the first line makes the whole cell IPython's: its
    line is dropped and the body kept, which is what %%time, %%capture and the
    like run. Lines inside strings are left alone when the cell parses as it is.
    """
    if parse(source) is not None:
        return source, []
    removed = []
    lines = source.split("\n")
    if lines and lines[0].lstrip().startswith("%%"):
        removed.append(lines[0].strip())
        lines = lines[1:]
    out = []
    for line in lines:
        match = _IPYTHON_LINE.match(line)
        if match and not line.lstrip().startswith("!="):
            removed.append(line.strip())
            out.append(match.group("indent") + "pass")
        else:
            out.append(line)
    cleaned = "\n".join(out)
    if removed and parse(cleaned) is None:  # not IPython's doing: leave the cell as it was, its error stands
        return source, []
    return cleaned, removed
