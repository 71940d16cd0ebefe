"""Checks for files made by others (ARCHITECTURE.md, "Trust boundaries").

A model file is data: a path it records must stay inside its own folder, and a size or offset it
states must fit the file, both checked before anything is allocated or read. Each adapter turns
what a parsing library raises on hostile bytes into one CatalogError at its edge (`refuse_corrupt`).
"""
from __future__ import annotations

import math
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from kernel_catalog.errors import CatalogError, error_summary

AGAIN = "the file is corrupt, truncated or not what it claims to be: get it again from a source you trust"


def contained_file(folder: Path, location: str, source: Path, what: str) -> Path:
    """The regular file `location` (a relative path recorded in `source`) inside `folder`.

    Refused: an empty, absolute or backslashed path, a '..' part, or one that resolves (links
    followed) outside the folder. Nothing is opened.
    """
    parts = PurePosixPath(location).parts
    if (not location or "\\" in location or "\0" in location or os.path.isabs(location)
            or PurePosixPath(location).is_absolute() or ".." in parts):
        raise CatalogError(f"{source}: {what} names {location!r}, not a plain path inside its folder;"
                           " the model refers to files it does not own: do not use it")
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, target]) != root:
        raise CatalogError(f"{source}: {what} ({location!r}) resolves outside the model's folder ({root});"
                           " the model refers to files it does not own: do not use it")
    try:
        mode = os.stat(target).st_mode
    except OSError:
        raise CatalogError(f"{source}: {what} ({location!r}) is missing; put it beside the model file") from None
    if not stat.S_ISREG(mode):
        raise CatalogError(f"{source}: {what} ({location!r}) is not a regular file; {AGAIN}")
    return Path(target)


def check_span(offset: int, length: int, size: int, source: Path, what: str) -> None:
    """offset/length (as a file states them) lie within `size` bytes."""
    if offset < 0 or length < 0 or offset + length > size:
        raise CatalogError(f"{source}: {what} spans bytes {offset}..{offset + length}, beyond the"
                           f" {size} bytes there are; {AGAIN}")


def element_count(shape: Iterable[int], source: Path, what: str) -> int:
    """The number of elements of a stated shape; refused when a dimension is negative."""
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise CatalogError(f"{source}: {what} has shape {dims} (a negative dimension); {AGAIN}")
    return math.prod(dims)


def check_nbytes(needed: int, held: int, source: Path, what: str) -> None:
    """The bytes a stated shape and dtype need equal the bytes the file gives for them."""
    if needed != held:
        raise CatalogError(f"{source}: {what}: its shape needs {needed} bytes, the file gives {held}; {AGAIN}")


@contextmanager
def refuse_corrupt(source: Path, kind: str) -> Iterator[None]:
    """The adapter's edge: whatever a parsing library raises on bad bytes becomes one CatalogError,
    and what it warns about them is not printed (a refusal is one line)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except CatalogError:
        raise
    except Exception as exc:  # noqa: BLE001 -- hostile bytes fail anywhere inside a parser
        reason = error_summary(exc)[:200]
        raise CatalogError(f"{source}: not a readable {kind} ({type(exc).__name__}: {reason});"
                           f" {AGAIN}") from None
