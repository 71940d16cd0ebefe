"""One writer at a time: an advisory file lock beside the DuckDB file.

DuckDB itself allows a single read-write process and fails the second with a low-level error;
taking our own lock first lets the second writer get a clear message (or wait), and keeps the
DuckDB file open read-write only for the short commit at the end of an ingest.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from kernel_catalog.errors import CatalogError


@contextmanager
def exclusive_lock(path: Path, wait: float | None = None, what: str = "catalog") -> Iterator[None]:
    """Hold an exclusive lock on `path`; wait up to `wait` seconds (None: fail at once)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is None or time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    hint = "retry when it is done, or pass --wait SECONDS"
                    raise CatalogError(f"{what} is being written by another process (pid {holder}); {hint}") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
