"""The book, built once for a test run into a folder that the run's processes share.

`python tests/book_site.py FOLDER` builds it there. conftest.py's `site` fixture calls `built_site`, and
when `make test` runs the whole suite its controller starts this file at the beginning of the run, beside
the two workers: the build fills the time they spend waiting on graders and sandboxes, and the book is
ready by the time a test reads it, instead of one worker building it while the other waits on the lock.
"""

import fcntl
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def built_site(shared: Path) -> Path:
    """shared/book/_build/html, built by the first process to ask; the others wait under a lock, and a
    failed build is reported to every test that asks, not tried again."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import book

    out = shared / "book"
    with open(shared / "book.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        failed = shared / "book-failed.txt"
        if not (out / "built").exists() and not failed.exists():
            shutil.rmtree(out, ignore_errors=True)  # what a build that was killed left
            out.mkdir()
            done = book.build(out, capture_output=True, text=True)
            if done.returncode == 0:
                (out / "built").touch()
            else:
                failed.write_text(done.stdout[-5000:] + done.stderr[-5000:])
        assert not failed.exists(), failed.read_text()
    return out / "_build" / "html"


if __name__ == "__main__":
    built_site(Path(sys.argv[1]))
