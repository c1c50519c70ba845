"""One writer at a time for files that several processes (``torchrun`` / ``accelerate launch`` ranks, two runs sharing
a folder) may build: an exclusive advisory lock on ``<path>.lock``. A file lock rather than a process-group barrier,
so it composes with ``main_process_first`` and never hits the process group's timeout during a long build."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def lock_file(file) -> None:
    """An exclusive advisory lock on an open file (POSIX ``flock``; a no-op where it does not exist), released when
    the file is closed."""
    try:
        import fcntl
    except ImportError:  # Windows
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX)


_HELD: set[str] = set()  # the locks this process holds: taking one again inside its block is a no-op


@contextlib.contextmanager
def one_writer(path: str | os.PathLike) -> Iterator[None]:
    """Hold the lock on ``<path>.lock`` for the block: of several processes building ``path``, one builds while the
    others wait, then find it built. Re-entrant within a process (a nested block on the same path does not wait on
    itself)."""
    lock_path = Path(f"{os.fspath(path).rstrip(os.sep)}.lock").resolve()
    if str(lock_path) in _HELD:
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        lock_file(lock)
        _HELD.add(str(lock_path))
        try:
            yield
        finally:
            _HELD.discard(str(lock_path))
