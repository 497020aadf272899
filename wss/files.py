"""The one file layer: every path the project reads or writes goes through tf.io.gfile.

A path is a local path or a URL TensorFlow's file systems know (`gs://bucket/...` on
Cloud TPUs, `file:///...`, `ram://...`), so data, checkpoints and runs can live in a
bucket. Object stores have no atomic in-place write or rename of folders, so an atomic
write here is "write a temporary name next to the target, then rename it" (the rename of
one object is atomic enough: a reader sees the old file or the new one, never half).

TensorFlow is imported on the first call, not with this module, so builder worker
processes that never touch a file stay light. A file-system failure that is not a plain
"not found" (an unknown URL scheme, no permission, an unreachable bucket) raises
`errors.PathError` naming the path, which programs print as one `error: ...` line.
"""

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, List

from wss.errors import PERMISSION_FIX, PathError


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _guarded(what: str, path: str, fn, *args, **kwargs):
    """Calls fn; a TensorFlow file-system error other than NotFound becomes PathError."""
    import tensorflow as tf

    try:
        return fn(*args, **kwargs)
    except tf.errors.NotFoundError:
        raise
    except tf.errors.OpError as e:
        reason = " ".join(e.message.split())
        fix = PERMISSION_FIX if isinstance(e, tf.errors.PermissionDeniedError) else ""
        raise PathError(f"cannot {what} {path}: {reason}{fix}") from None


def has_scheme(path: str) -> bool:
    """True for a URL (`gs://...`, `file://...`, `ram://...`), False for a local path."""
    return "://" in str(path)


def absolute(path: str) -> str:
    """A local path made absolute (recorded in reports and configs); URLs as given."""
    return path if has_scheme(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    """Whether a file or folder exists at `path`."""
    if not _guarded("read", path, _gfile().exists, path):
        return False
    return not path.startswith("ram://") or _ram_is_entry(path)


def isdir(path: str) -> bool:
    """Whether `path` is a folder (on object stores: a prefix holding objects)."""
    if not _guarded("read", path, _gfile().isdir, path):
        return False
    return not path.startswith("ram://") or _ram_is_folder(path)


def _ram_is_folder(path: str) -> bool:
    # TensorFlow's in-memory file system calls every string prefix of a file's name a
    # folder ('ram://d/ckpt-2' of 'ram://d/ckpt-2.index'): here a folder holds something
    # under 'path/' or was made by makedirs (then its parent lists it).
    path = path.rstrip("/")
    gfile = _gfile()
    return bool(gfile.glob(path + "/*")) or path in gfile.glob(os.path.dirname(path) + "/*")


def _ram_is_entry(path: str) -> bool:
    return not _gfile().stat(path).is_directory or _ram_is_folder(path)


def isfile(path: str) -> bool:
    """Whether `path` is an existing file (not a folder)."""
    return exists(path) and not isdir(path)


# The project's folder (gin/, datasets/splits/): relative config paths fall back to it.
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def resolve_path(path):
    """A path as given if it exists, else relative to the project root (for the split lists
    the gin files name, e.g. datasets/splits/pascal_voc_seg/8_clean.txt), else as given."""
    if path is None or os.path.isabs(path) or has_scheme(path) or exists(path):
        return path
    candidate = os.path.join(PROJECT_ROOT, path)
    return candidate if exists(candidate) else path


def glob(pattern: str) -> List[str]:
    """The paths matching a glob pattern, sorted (gfile's order is the file system's)."""
    return sorted(_guarded("list", pattern, _gfile().glob, pattern))


def listdir(path: str) -> List[str]:
    """The names (not paths) in folder `path`, sorted."""
    return sorted(n.rstrip("/") for n in _guarded("list", path, _gfile().listdir, path))


def makedirs(path: str) -> None:
    """Creates folder `path` and its parents (nothing if it exists)."""
    _guarded("create the folder", path, _gfile().makedirs, path)


def size(path: str) -> int:
    """The length of a file in bytes."""
    return _guarded("read", path, _gfile().stat, path).length


def mtime_ns(path: str) -> int:
    """A file's modification time in ns (0 where the file system keeps none, e.g. ram://)."""
    return _guarded("read", path, _gfile().stat, path).mtime_nsec


def remove(path: str) -> None:
    """Deletes one file."""
    _guarded("delete", path, _gfile().remove, path)


def rename(src: str, dst: str) -> None:
    """Moves file `src` to `dst`, replacing it."""
    _guarded("write", dst, _gfile().rename, src, dst, overwrite=True)


def copy(src: str, dst: str) -> None:
    """Copies file `src` to `dst` (e.g. a local temporary file into a bucket)."""
    _guarded("write", dst, _gfile().copy, src, dst, overwrite=True)


def read_bytes(path: str) -> bytes:
    """The whole content of a file."""

    def read():
        with _gfile().GFile(path, "rb") as f:
            return f.read()

    return _guarded("read", path, read)


def read_text(path: str) -> str:
    """The whole content of a text file (UTF-8)."""
    return read_bytes(path).decode("utf-8")


def read_json(path: str) -> Any:
    """The JSON value of a file."""
    return json.loads(read_text(path))


def temporary_name(path: str) -> str:
    """A hidden name in the target's folder, for a file written then renamed onto `path`
    (hidden so that a `{split}-*` pattern never matches a half-written file)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary name to write; renames it onto `path` when the block ends
    without an error, and deletes it otherwise."""
    tmp = temporary_name(path)
    try:
        yield tmp
        rename(tmp, path)
    finally:
        if _gfile().exists(tmp):
            _gfile().remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
    """Writes a whole file atomically (temporary name, then rename); parent folders are
    created."""
    folder = os.path.dirname(path)
    if folder:
        makedirs(folder)

    def write(tmp):
        with _gfile().GFile(tmp, "wb") as f:
            f.write(data)

    with atomic_path(path) as tmp:
        _guarded("write", path, write, tmp)


def write_text(path: str, text: str) -> None:
    """Writes a whole text file (UTF-8) atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value: Any, indent: int = 2) -> None:
    """Writes `value` as JSON (a trailing newline) atomically."""
    write_text(path, json.dumps(value, indent=indent) + "\n")


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """Yields a local file name holding `path`'s content, for a library that opens files
    itself (pycocotools reads the annotation JSON with open()): the path itself when it
    is local, else a temporary copy deleted afterwards."""
    if not has_scheme(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="pseudoseg-")
    try:
        local = os.path.join(folder, os.path.basename(path))
        copy(path, local)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)
