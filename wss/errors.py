"""The project's error types a user can fix, under one base class.

Command lines (wss.program.run) print a UserError as one line `error: <message>` and exit
with code 2; anything else is a bug and keeps its traceback. Library modules subclass
UserError for their own errors (DataError, DescriptorError, BadPairError, RestoreError,
...) so the message, which names the file and the fix, is what the user sees.
"""


class UserError(Exception):
    """Bad input, a bad path or a bad config: the message says what and how to fix it."""


class InputError(UserError, ValueError):
    """A bad input file or value (an image that does not decode, an empty id list, ...)."""


class ConfigError(UserError, ValueError):
    """A gin config that does not parse or binds something unknown."""


class NonFiniteLossError(UserError, RuntimeError):
    """Training produced a NaN or Inf loss (the last good checkpoint is kept)."""


class UsageError(UserError, ValueError):
    """A missing or contradictory command-line flag."""


class PathError(UserError, OSError):
    """A path that cannot be read or written: an unknown URL scheme, no permission, a
    bucket that cannot be reached (wss.files names the path and TensorFlow's reason)."""
