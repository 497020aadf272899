"""The base class of every error deeplab_ext raises for bad input a user can fix.

deeplab_ext never imports wss: a program layer (wss.program, or this package's own
command line) recognises these by the base class and prints the message as one line.
"""


class DeepLabError(ValueError):
    """Bad input to the model library (a checkpoint that does not fit, an unknown backbone
    or backbone option): the message names the value and how to fix it."""


class MissingPackageError(DeepLabError, ImportError):
    """An optional package a model part needs is not installed (the message gives the
    exact install command)."""
