"""Finding and reading submissions in nbgrader's layout without trusting the file system they sit in.

SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb, as `nbgrader collect`
leaves it. A student controls what is inside their folder, so:

- a student or assignment folder that is a symbolic link is skipped (with a
  warning): its notebook is someone else's, or the course's own solutions;
- files are opened one path component at a time, relative to the folder
  above, never following a link (O_NOFOLLOW), without blocking (O_NONBLOCK, so
  a FIFO cannot hang the grader), and read only when they are regular files;
  a link or a FIFO named `forward.ipynb` is reported in the student's
  feedback, not followed;
- with several notebooks in one assignment folder (`forward.ipynb` and
  `forward (1).ipynb`), one rule picks the one graded, everywhere: the
  notebook named as the assignment's, as nbgrader grades it; failing that,
  the most recently modified regular file (not a folder, a link or a macOS
  `._` resource fork). The others are named in a warning;
- two folders are never filed under one name: a student's grades (row of
  grades.csv, feedback folder, gradebook id) are filed under
  `safe.distinct_names` of the class's folder names, which is the name itself
  for a name that is plain text, and for any other (not UTF-8, a control
  character, too long, or shown like another's) its escape and a hash of its
  bytes, the same on every run. Such a folder's full escaped name is in a
  note of its feedback;
- a notebook that is one file (a hard link) with another student's is
  graded, and both students' feedback and the instructor's warnings say so.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import safe


class SubmissionError(ValueError):
    """The submission cannot be read as a notebook; the message says why, for the student."""


def _open_at(dir_fd: int | None, part: str, flags: int) -> int:
    return os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def read_regular(path: os.PathLike, limit: int, root: os.PathLike | None = None) -> bytes:
    """The bytes of the regular file at `path` (at most limit + 1 of them).

    With `root`, `path` is relative to it and no component below root may be a
    link; without, only the file itself may not be one.
    """
    path = Path(path)
    if root is None:
        root, parts = path.parent, [path.name]
    else:
        parts = list(path.parts)
    shown = safe.name(parts[-1])
    fds = []
    try:
        fds.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        for part in parts[:-1]:
            fds.append(_open_at(fds[-1], part, os.O_RDONLY | os.O_DIRECTORY))
        try:
            fd = _open_at(fds[-1], parts[-1], os.O_RDONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ELOOP:  # the last component is a symbolic link
                raise SubmissionError(f"{shown} is a symbolic link, not a file: the grader does not follow links "
                                      "(hand in the notebook itself)") from None
            raise
        fds.append(fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SubmissionError(f"{shown} is not a regular file (a FIFO, a device or a folder): not read")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except SubmissionError:
        raise
    except OSError as e:
        raise SubmissionError(f"cannot read {shown}: {e.strerror or e}") from None
    finally:
        for fd in reversed(fds):
            os.close(fd)


@dataclass(frozen=True)
class Submission:
    """One student's submission of one assignment, and the notebook graded."""

    student: str  # the folder's name, made safe to write (see safe.name)
    assignment: str
    root: Path  # SUBMISSIONS
    folder: tuple[str, str]  # the student's and the assignment's folder names as on disk
    notebook: str | None  # the graded notebook's file name as on disk; None when there is none
    others: tuple[str, ...] = field(default=())  # notebooks in the folder that are not graded
    same_file_as: tuple[str, ...] = field(default=())  # other submissions whose notebook is this very file
    timestamp_kind: str | None = None  # what the folder's timestamp.txt is ("a regular file", ...); None: none
    timestamp: str | None = None  # its text, read once when the folder was scanned (as nbgrader writes it)

    @property
    def notebook_name(self) -> str:
        return safe.name(self.notebook or "")

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.folder, self.notebook or "")

    def read_notebook(self, limit: int) -> bytes:
        return read_regular(Path(*self.folder, self.notebook), limit, root=self.root)

    def warnings(self) -> list[str]:
        notes = []
        for kind, raw, filed in (("student", self.folder[0], self.student), ("assignment", self.folder[1],
                                                                            self.assignment)):
            if raw != filed:
                notes.append(f"the {kind} folder's name, '{safe.escaped(raw)}' (escaped), is not plain text, "
                             f"too long, or shown like another folder's: its results are filed as '{filed}'")
        if self.others:
            others = ", ".join(repr(safe.name(o)) for o in self.others)
            notes.append(f"this folder holds more than one notebook: {self.notebook_name!r} was graded, not {others} "
                         "(the grader grades the notebook named as the assignment's, else the most recently modified "
                         "file that is not a folder, a link or a ._ fork; hand in one notebook)")
        if self.timestamp_kind not in (None, "a regular file"):
            notes.append(f"timestamp.txt is {self.timestamp_kind}: no submission time is known, so no late "
                         "penalty was applied; the instructor is told")
        if self.same_file_as:
            notes.append(f"the graded notebook, {self.notebook_name!r}, is one file on disk (a hard link) with "
                         f"the notebook of {', '.join(self.same_file_as)}: each was graded as handed in, and the "
                         "instructor is told so")
        return notes


def _entries(folder: Path, warn) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        warn(f"skipped {safe.name(folder)}: {e.strerror}")
        return []
    return entries


def _listed(entries: list[os.DirEntry], most: int = 5) -> str:
    """What a folder holds, for a warning: 'found a.txt, b/' and how many more."""
    names = [safe.name(e.name) + ("/" if e.is_dir(follow_symlinks=False) else "") for e in entries]
    return "found " + ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def scan(root: Path, expected_name, warn) -> list[Submission]:
    """Every submission under root, in order; `expected_name(assignment)` is the notebook name to prefer, or None.

    `warn(message)` hears of folders skipped.
    """
    found, files = [], []
    students = []
    for student in _entries(root, warn):
        if student.is_symlink():
            warn(f"skipped {safe.name(student.path)}: a symbolic link, not a student's folder")
            continue
        if student.is_dir(follow_symlinks=False):
            students.append(student)
    # every folder of the class, graded or not: a student's key does not depend on what this run grades
    student_keys = _filed(students, "student", warn)
    for student in students:
        folders, entries = [], _entries(Path(student.path), warn)
        for folder in entries:
            if folder.is_symlink():
                warn(f"skipped {safe.name(folder.path)}: a symbolic link, not an assignment folder")
                continue
            if folder.is_dir(follow_symlinks=False):
                folders.append(folder)
        if not folders and not any(e.is_symlink() for e in entries):  # a link was warned of above
            warn(f"skipped {safe.name(student.path)}: no assignment folder in it "
                 f"({_listed(entries) if entries else 'it is empty'}); a notebook goes in <student>/<assignment>/")
        assignment_keys = _filed(folders, "assignment", warn)
        for folder in folders:
            entries = _entries(Path(folder.path), warn)
            notebooks = [e for e in entries if e.name.endswith(".ipynb")]
            if not notebooks:
                warn(f"skipped {safe.name(folder.path)}: no notebook (a file named *.ipynb) in it "
                     f"({_listed(entries) if entries else 'it is empty'})")
                continue
            chosen = pick_notebook(notebooks, expected_name(folder.name))
            kind, text = _timestamp(root, (student.name, folder.name))
            if kind not in (None, "a regular file"):
                warn(f"{safe.name(Path(folder.path) / 'timestamp.txt')} is {kind}: no submission time known, "
                     "no late penalty applied")
            found.append(Submission(student_keys[student.name], assignment_keys[folder.name], root,
                                    (student.name, folder.name), chosen.name,
                                    tuple(e.name for e in notebooks if e is not chosen), timestamp_kind=kind,
                                    timestamp=text))
            files.append(_linked_file(chosen))
    return _told_of_links(found, files, warn)


NO_TIME = "a regular file without a time nbgrader can read"


def _timestamp(root: Path, folder: tuple[str, str]) -> tuple[str | None, str | None]:
    """(what the folder's timestamp.txt is, its text), looked at once: (None, None) if there is none.

    The text is read only from a regular file, and kept only if it is a time; what it is otherwise ("a
    symbolic link, not a regular file", text that is no time, ...) is named for the student's feedback and
    the instructor, since a late submission that hides its time escapes the penalty.
    """
    try:
        mode = os.lstat(root.joinpath(*folder, "timestamp.txt")).st_mode
    except OSError:
        return None, None
    if not stat.S_ISREG(mode):
        for test, kind in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder")):
            if test(mode):
                return f"{kind}, not a regular file", None
        return "a device or socket, not a regular file", None
    try:  # read_regular: swapped for a link or a FIFO since the look above, it is refused all the same
        raw = read_regular(Path(*folder, "timestamp.txt"), 200, root=root)
    except SubmissionError as e:
        return f"unreadable ({e})", None
    from .gradebook import parse_timestamp  # nbgrader's reading, which the gradebook applies

    text = raw[:200].decode("utf-8", "replace").strip().removeprefix("\ufeff")  # an editor's byte-order mark
    if parse_timestamp(text) is None:  # empty, junk, a year of five digits: nbgrader itself refuses these
        return NO_TIME, None
    return "a regular file", text


def _linked_file(entry: os.DirEntry) -> tuple[int, int] | None:
    """The (device, inode) of a regular file with more than one name, else None."""
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISREG(info.st_mode) and info.st_nlink > 1 else None


def _told_of_links(found: list[Submission], files: list, warn) -> list[Submission]:
    """A student can hard-link another's notebook into their own folder (no link to refuse, as with a symbolic
    one): each submission whose notebook is the same file as another's is told whose, and so is the instructor."""
    by_file: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(files):
        if key is not None:
            by_file.setdefault(key, []).append(i)
    for shared in by_file.values():
        if len(shared) < 2:
            continue
        names = [f"{found[i].student}/{found[i].assignment}" for i in shared]
        warn(f"one notebook file is handed in by {', '.join(names)} (hard links): each was graded")
        for i in shared:
            others = tuple(n for j, n in zip(shared, names) if j != i)
            found[i] = replace(found[i], same_file_as=others)
    return found


def _filed(entries: list[os.DirEntry], kind: str, warn) -> dict[str, str]:
    """Folder name -> the distinct name its results are filed under (see safe.distinct_names); warns of renames."""
    keys = safe.distinct_names(e.name for e in entries)
    for e in entries:
        if keys[e.name] != e.name:
            warn(f"the {kind} folder {safe.name(e.path)} is filed as {keys[e.name]!r} (its name is not plain text, "
                 "too long, or shown like another folder's)")
    return keys


def pick_notebook(entries: list[os.DirEntry], expected: str | None) -> os.DirEntry:
    """The rule for a folder of several notebooks: the expected name, else the newest regular file (then the
    first by name). A folder, a link or a macOS resource fork (`._forward.ipynb`) is no notebook to prefer:
    it is picked only where nothing else is, and then reported."""
    for e in entries:
        if e.name == expected:
            return e

    def regular(e: os.DirEntry) -> bool:
        try:
            return e.is_file(follow_symlinks=False) and not e.name.startswith("._")
        except OSError:
            return False

    def modified(e: os.DirEntry) -> float:
        try:
            return e.stat(follow_symlinks=False).st_mtime
        except OSError:
            return float("-inf")

    return max([e for e in entries if regular(e)] or entries, key=lambda e: (modified(e), [-ord(c) for c in e.name]))
