"""Files that appear whole or not at all: write beside the target, fsync, rename.

Every file the catalog writes (kernel Parquet, run results, query output, exports) goes through
here, so a crash or an error mid-write never leaves a partial file under the final name.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def staged_file(target: Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is fsynced and renamed to `target`.

    On any exception the temporary file is removed and `target` is left as it was.
    """
    target = Path(target)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        if durable:
            fsync_path(temporary)
        os.replace(temporary, target)
        if durable:
            fsync_path(target.parent)
    finally:
        temporary.unlink(missing_ok=True)
