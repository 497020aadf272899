"""The data error every dataset problem derives from (kept free of TensorFlow, so that
builders, the reader and command lines can share one type to catch)."""

from wss.errors import UserError


class DataError(UserError, ValueError):
    """A dataset problem (names the files and the fix)."""
