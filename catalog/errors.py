"""The one exception type for mistakes a user can make (bad input, missing files, busy catalog).

The CLI turns it into one line and a non-zero exit; anything else is a bug and may show a traceback.
"""


class CatalogError(Exception):
    """A problem the user can fix; the message says what, where, and what to do."""


def error_summary(error: BaseException, lines: int = 1) -> str:
    """The first `lines` non-empty lines of an exception's message, joined: for one-line errors
    that quote what a library (DuckDB, onnx, torch) said."""
    parts = [line.strip() for line in str(error).splitlines() if line.strip()]
    return " ".join(parts[:lines]) if parts else type(error).__name__
