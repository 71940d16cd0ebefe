"""The one exception type for mistakes a user can make (bad input, missing files, busy catalog).

The CLI turns it into one line and a non-zero exit; anything else is a bug and may show a traceback.
"""


class CatalogError(Exception):
    """A problem the user can fix; the message says what, where, and what to do."""
