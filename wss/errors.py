"""The project's error types a user can fix, under one base class.

Command lines (wss.program.run) print a UserError as one line `error: <message>` and exit
with code 2; anything else is a bug and keeps its traceback. Library modules subclass
UserError for their own errors (DataError, DescriptorError, BadPairError, RestoreError,
...) so the message, which names the file and the fix, is what the user sees.
"""

# What to do about a path the file system refuses (a bucket without write access), added
# to the message of every such error.
PERMISSION_FIX = (
    " (fix: give the account running this write access to that path, e.g. the role "
    "roles/storage.objectAdmin on a gs:// bucket, or write elsewhere; what was written "
    "before, such as earlier checkpoints, is kept)"
)


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


class MissingPackageError(UserError, ImportError):
    """An optional package a feature needs is not installed (the message gives the exact
    install command)."""


def import_optional(module: str, install: str, purpose: str):
    """The module `module`, or a MissingPackageError saying `purpose` needs it and how to
    install it (`install`: the exact command). Callers run it before any work starts, so
    nothing is half-written when a package is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingPackageError(
            f"{purpose} needs the package {module.split('.')[0]!r}, which is not "
            f"installed ({e}). Fix: {install}"
        ) from None
