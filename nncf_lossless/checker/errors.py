"""User-facing errors (torch-free, so the checker carries them to device machines).

Anything the user can fix (a config key, a file, a shape) raises a :class:`UserError` whose
message is one line naming the offending key, file or shape. The CLI prints it without a
traceback; everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """An error in the user's input; ``str(err)`` is a complete one-line explanation."""


class DataError(UserError):
    """A dataset, archive or model file cannot be used as given."""


def openvino_reason(err: BaseException) -> str:
    """The line of an OpenVINO exception that says what is wrong.

    OpenVINO's messages start with ``Exception from <source>:<line>:`` and ``Check '...' failed at
    <source>`` locations; the reason (``Error parsing start element tag at offset 86``) comes last.
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    meaningful = [line for line in lines
                  if not line.startswith("Exception from ") and not (line.startswith("Check '") and " failed at " in line)]
    return (meaningful or lines or [type(err).__name__])[-1]
