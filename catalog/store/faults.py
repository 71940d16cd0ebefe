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
