"""User-facing errors (torch-free, so the checker carries them to device machines).

Anything the user can fix (a config key, a file, a shape) raises a :class:`UserError` whose
message is one line naming the offending key, file or shape. The CLI prints it without a
traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error in the user's input; ``str(err)`` is a complete one-line explanation."""


class DataError(UserError):
    """A dataset, archive or model file cannot be used as given."""
