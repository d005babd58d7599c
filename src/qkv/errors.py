"""User-facing errors.

Anything a user can cause (a missing file, a bad config value, an unknown preset) raises `QKVError`
with a one-line message. The CLI prints that line and exits non-zero without a traceback; programming
errors keep their tracebacks.

A library error names arguments as the Python API spells them (``init_from``, ``text``), never a command's
flags: the same message reaches a Python caller and the web page. Where the fix is to pass an argument, the
error carries its name (``QKVError(msg, argument="init_from")``) and the CLI adds the flag that sets it
(``--init-from``).
"""


class QKVError(Exception):
    """A problem with the user's input, reported as one line; `argument`: the argument that would fix it."""

    def __init__(self, message: str = "", *, argument: str | None = None):
        super().__init__(message)
        self.argument = argument
