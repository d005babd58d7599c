"""User-facing errors.

Anything a user can cause (a missing file, a bad config value, an unknown preset) raises `QKVError`
with a one-line message. The CLI prints that line and exits non-zero without a traceback; programming
errors keep their tracebacks.
"""


class QKVError(Exception):
    """A problem with the user's input, reported as one line."""
