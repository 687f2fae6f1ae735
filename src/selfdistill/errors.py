"""The one base class of the mistakes a user can fix (a flag, a file, a plan, a model spec).

The CLI catches ``UserError`` and prints its message as one line with exit code 2; anything else is a bug and
keeps its traceback. Each module raises its own subclass, so a caller can still tell a data error from a plan error.
"""


class UserError(ValueError):
    """Something the user gave is wrong; the message names the flag, file or field and says what."""
