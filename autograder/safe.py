"""Making what a submission says safe to write: text, file names, spreadsheet cells, files.

Every string that comes from a submission (an exception's message, a returned
value's repr, a notebook's or a student folder's name) passes through `text`
before it is written anywhere: lone surrogates (a `ValueError('\\udc80')`, or a
folder name that is not UTF-8) become escapes, control characters other than
newline and tab become escapes, so do the characters that reorder a line on
screen, and a huge message is cut with a note of how much was left out.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

MAX_TEXT = 20_000  # characters of one message kept
MAX_NAME = 120  # characters of a name kept

# C0 and C1 controls but newline and tab; bidirectional overrides and isolates (they reorder what a reader sees)
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(value, limit: int = MAX_TEXT) -> str:
    """`value` as a string that encodes as UTF-8 and prints as what it is, at most about `limit` characters."""
    s = value if isinstance(value, str) else str(value)
    if len(s) > limit + 64:  # the margin keeps a second pass from cutting the note of the first
        s = s[:limit] + f"... ({len(s) - limit} more characters)"
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates -> \udc80
    return _UNSAFE.sub(_escape, s)


def name(value) -> str:
    """A name (student, assignment, notebook) on one line: `text` with newlines and tabs escaped too."""
    s = text(value, MAX_NAME)
    return s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") or "(empty)"


def csv_cell(value) -> str:
    """A text cell a spreadsheet shows as text: one that starts like a formula gets a leading quote (OWASP's rule)."""
    s = text(value)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def write_atomic(path: os.PathLike, data: str | bytes) -> None:
    """Write a file whole or not at all: a temporary file in the same folder, then a rename over the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    prefix = f".{path.name[:40]}."
    _sweep_stale(path.parent, prefix)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _sweep_stale(folder: Path, prefix: str) -> None:
    """Remove the temporary files that a killed writer of this file left (their pid is gone)."""
    for tmp in folder.glob(f"{glob.escape(prefix)}*-*.tmp"):
        pid = tmp.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # alive, and someone else's
            pass


@contextmanager
def locked(path: os.PathLike):
    """An exclusive lock on `path` (created if missing), held by this process until the block ends."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
