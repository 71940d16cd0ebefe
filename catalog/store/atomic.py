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


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temporaries(folder: Path, name_glob: str = "*") -> None:
    """Delete the temporary files (`.NAME.tmp-<pid>[-...]`, as `staged_file` and exports name them)
    of names matching `name_glob` in `folder` whose writing process is gone: a process killed
    mid-write (SIGKILL) cannot remove its own."""
    for path in Path(folder).glob(f".{name_glob}.tmp-*"):
        pid = path.name.rsplit(".tmp-", 1)[-1].split("-")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)
