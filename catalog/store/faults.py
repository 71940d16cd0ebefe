"""Fault injection for the crash-safety tests: die at a named point of a write.

Set KERNEL_CATALOG_CRASH_AT=<point> and the process kills itself with SIGKILL there, exactly as
an out-of-memory kill or a power cut would stop it. Unset (always, outside tests) it costs nothing.
"""
import os
import signal

CRASH_ENV = "KERNEL_CATALOG_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


ONCE_ENV = "KERNEL_CATALOG_CRASH_ONCE"   # a marker file: die at the point only the first time


def crash_once(name: str) -> None:
    """Like crash_point, but only in the first process that gets there (the marker file named by
    KERNEL_CATALOG_CRASH_ONCE is created atomically): a retried Ray task then succeeds."""
    marker = os.environ.get(ONCE_ENV)
    if os.environ.get(CRASH_ENV) != name or not marker:
        return
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)
