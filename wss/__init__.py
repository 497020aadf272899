"""PseudoSeg in TensorFlow 2 / Keras 3: the library and its command lines (`python -m wss.X`).

Importing the package loads TensorFlow with its C++ log quiet, so that a program's first
screen shows what runs and not `E0000 ... cuInit` or oneDNN notices: TF_CPP_MIN_LOG_LEVEL
defaults to 3, and the lines TensorFlow's native libraries print while they load (before
that level applies) are held back and shown only if the import fails. Setting
TF_CPP_MIN_LOG_LEVEL=0, or passing `--verbosity=1` to a program, shows them all.
"""

import os
import sys
import tempfile


def _wants_native_log(argv):
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--verbosity=") else None
        if arg == "--verbosity" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None and value.lstrip("-").isdigit() and int(value) >= 1:
            return True
    return False


def _import_tensorflow_quietly():
    """Imports TensorFlow with file descriptor 2 sent to a temporary file meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


_level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if _wants_native_log(sys.argv) else "3")
# Not in multiprocessing's spawned workers (the dataset builders'): they import only the
# TensorFlow-free record helpers and must start fast.
if "tensorflow" not in sys.modules and _level != "0" and "--multiprocessing-fork" not in sys.argv:
    _import_tensorflow_quietly()
