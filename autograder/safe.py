"""Making what a submission says safe to write: text, file names, spreadsheet cells, files.

Every string that comes from a submission (an exception's message, a returned
value's repr, a notebook's or a student folder's name) passes through `text`
before it is written anywhere: lone surrogates (a `ValueError('\\udc80')`, or a
folder name that is not UTF-8) become escapes, control characters other than
newline and tab become escapes, so do the characters that reorder a line on
screen, and a huge message is cut with a note of how much was left out.

`text` is not one to one (a folder named `b'jos\\xe9'` and one named
`jos\\udce9` both show as `jos\\udce9`), so what files a student's grades (their
row of grades.csv, their feedback folder, their id in the gradebook) is
`distinct_names`: the name itself when it is `plain` (shown as itself, in
composed form, no space at either end), else the escaped name with a hash of
its bytes, made longer while two hashed names still agree.
`csv_cell` quotes a cell that starts with a quote too, so that `=x` and `'=x`
stay two cells. `markdown` escapes text put into a notebook's Markdown.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import html
import os
import re
import stat
import string
import tempfile
import unicodedata
from contextlib import contextmanager
from pathlib import Path

MAX_TEXT = 20_000  # characters of one message kept
MAX_NAME = 120  # characters of a name kept
KEY_BYTES = 120  # UTF-8 bytes of an escaped name kept before its hash, in a key (a file name holds 255)
KEY_HASHES = (8, 16, 32)  # hex digits of a key's hash, longer while keys of two names still agree

# C0 and C1 controls but newline and tab; bidirectional overrides, isolates and marks (they reorder what a reader
# sees); characters that show as nothing (zero-width space, word joiner, byte order mark, soft hyphen). The zero-width
# (non-)joiners stay: words of several scripts need them.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\xad\u061c\u180e\u200b\u200e\u200f\u202a-\u202e"
                     "\u2060-\u2064\u2066-\u2069\ufeff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def text(value, limit: int | None = MAX_TEXT) -> str:
    """`value` as a string that encodes as UTF-8 and prints as what it is, at most about `limit` characters
    (None: all of it)."""
    s = value if isinstance(value, str) else str(value)
    if limit is not None and len(s) > limit + 64:  # the margin keeps a second pass from cutting the note of the first
        s = s[:limit] + f"... ({len(s) - limit} more characters)"
    s = s.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates -> \udc80
    return _UNSAFE.sub(_escape, s)


def name(value) -> str:
    """A name (student, assignment, notebook) on one line: `text` with newlines and tabs escaped too."""
    return escaped(text(value, MAX_NAME)) or "(empty)"


def escaped(value: str) -> str:
    """`name` without the cut: every character that `name` escapes, escaped (on one line)."""
    return text(value, None).replace("\n", "\\n").replace("\t", "\\t")


def _raw(value: str) -> bytes:
    """The bytes a name stands for: a folder's name as on disk (os.fsdecode's surrogates are its bytes)."""
    try:
        return os.fsencode(value)
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def plain(value: str) -> bool:
    """A name that shows as itself and like no other: `name` leaves it as it is, it is in Unicode's composed
    form (NFC: 'é' as one character, not 'e' and an accent), and it has no space at either end."""
    return name(value) == value and unicodedata.is_normalized("NFC", value) and value.strip() == value


def key(value: str, level: int = 0) -> str:
    """What a name (a student's folder) is filed under: the name itself when it is `plain` and level is 0;
    else its escape, cut to KEY_BYTES, `~` and KEY_HASHES[level - 1] hex digits of the SHA-256 of its bytes.

    The same name always gives the same key; `distinct_names` raises the level of names whose keys agree.
    """
    if level == 0:
        if plain(value):
            return value
        level = 1
    full = escaped(value)
    cut = full.encode("utf-8")[:KEY_BYTES].decode("utf-8", "ignore")
    if cut != full:
        cut += "..."
    digest = hashlib.sha256(_raw(value)).hexdigest()
    return f"{cut or '(empty)'}~{digest[:KEY_HASHES[min(level, len(KEY_HASHES)) - 1]]}"


def distinct_names(values) -> dict[str, str]:
    """name -> key for a set of names (a class's folders): one key per name, whatever the order they come in.

    A name keeps the key `key` gives it unless another name's key is the same. Then a plain name that reads as
    the other's key yields (it takes an escape and a hash of its own), so that no folder added beside a
    student's changes that student's key; two keys of hashed names that agree both take longer hashes (an
    escaped name and a hash of its bytes, which differ for two different names).
    """
    values = sorted(set(values))
    level = {v: 0 if plain(v) else 1 for v in values}
    keys: dict[str, str] = {}
    for _ in range(len(KEY_HASHES) * len(values) + 1):  # each round raises a level: it ends
        keys = {v: key(v, level[v]) for v in values}
        holders: dict[str, list[str]] = {}
        for v, k in keys.items():
            holders.setdefault(k, []).append(v)
        clashes = [vs for vs in holders.values() if len(vs) > 1]
        if not clashes:
            break
        for vs in clashes:
            for v in [v for v in vs if level[v] == 0] or vs:
                level[v] = min(level[v] + 1, len(KEY_HASHES))
    return keys


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet runs, or shows as something else
_FORMULA = FORMULA_STARTS + ("'",)


def csv_cell(value) -> str:
    """A text cell a spreadsheet shows as text: one that starts like a formula gets a leading quote (OWASP's rule).

    So does one that starts with a quote, so that no two values give one cell (`=x` is `'=x`, `'=x` is `''=x`).
    """
    s = text(value)
    return "'" + s if s[:1] in _FORMULA else s


_MARKDOWN = re.compile("[" + re.escape("".join(c for c in string.punctuation if c not in "&;")) + "]")


def markdown(value, limit: int = MAX_TEXT) -> str:
    """`text` as Markdown that renders as that text: no HTML (`<`, `>`, `&` become entities), no link, image,
    emphasis, code or math (every other ASCII punctuation character is backslash-escaped), on one line."""
    s = html.escape(" ".join(text(value, limit).splitlines()), quote=False)
    return _MARKDOWN.sub(lambda m: "\\" + m.group(), s)


def write_atomic(path: os.PathLike, data: str | bytes) -> None:
    """Write a file whole or not at all: a temporary file in the same folder, then a rename over the old one,
    whose permissions it takes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8", "backslashreplace") if isinstance(data, str) else data
    prefix = f".{path.name[:40]}."
    _sweep_stale(path.parent, prefix)
    try:  # a file an instructor made private (or read-only) keeps its mode; a new one is readable by all
        old = os.lstat(path)
        mode = stat.S_IMODE(old.st_mode) if stat.S_ISREG(old.st_mode) else 0o644
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{prefix}{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
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
