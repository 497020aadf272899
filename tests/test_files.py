"""The file layer (wss.files): the same calls on local paths and on TensorFlow's URL file
systems, errors that name the path, and a guard that keeps every module on it."""

import ast
import os
import pathlib

import pytest

from wss import files
from wss.errors import PathError

ROOT = pathlib.Path(__file__).resolve().parent.parent
GUARDED = ("wss", "deeplab_ext", "datasets")
# Calls that take a path and bypass tf.io.gfile: they reject gs:// and file:// URLs.
FORBIDDEN = {
    ("open",),
    ("os", "path", "exists"),
    ("os", "path", "isdir"),
    ("os", "path", "isfile"),
    ("os", "path", "getsize"),
    ("os", "listdir"),
    ("os", "makedirs"),
    ("os", "replace"),
    ("os", "remove"),
    ("os", "stat"),
    ("glob", "glob"),
    ("shutil", "copyfile"),
    ("shutil", "rmtree"),
    ("tempfile", "mkdtemp"),
}
# (module, call) -> why it stays on the local file system.
ALLOWED = {
    ("wss/files.py", "tempfile.mkdtemp"): "local_copy: a library that opens the file itself "
    "(pycocotools' annotation JSON) reads a local temporary copy of a URL",
    ("wss/files.py", "shutil.rmtree"): "local_copy deletes that temporary copy",
}


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return tuple(reversed(parts))
    return ()


def local_file_calls(root=ROOT, tops=GUARDED):
    """[(module path, line, dotted call)] of every forbidden call under root/tops."""
    found = []
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and _dotted(node.func) in FORBIDDEN:
                    rel = path.relative_to(root).as_posix()
                    found.append((rel, node.lineno, ".".join(_dotted(node.func))))
    return found


def test_no_module_reads_or_writes_a_path_outside_the_file_layer():
    calls = local_file_calls()
    unexplained = [c for c in calls if (c[0], c[2]) not in ALLOWED]
    assert not unexplained, (
        "use wss.files (deeplab_ext: tf.io.gfile) so that gs:// and file:// paths work, "
        f"or add the call to ALLOWED with the reason: {unexplained}"
    )


def test_the_guard_sees_each_kind_of_call(tmp_path):
    source = (
        "import glob, os\nopen('x')\nos.path.exists('x')\nos.listdir('x')\n"
        "os.makedirs('x')\nglob.glob('x')\nos.path.join('a', 'b')\n"
    )
    (tmp_path / "wss").mkdir()
    (tmp_path / "wss" / "bad.py").write_text(source)
    assert [c[2] for c in local_file_calls(tmp_path, ("wss",))] == [
        "open",
        "os.path.exists",
        "os.listdir",
        "os.makedirs",
        "glob.glob",
    ]


@pytest.fixture(params=["local", "file_url", "ram"])
def base(request, tmp_path):
    """A fresh folder as a local path, a file:// URL and an in-memory ram:// URL."""
    if request.param == "local":
        return str(tmp_path / "base")
    if request.param == "file_url":
        return "file://" + str(tmp_path / "base")
    return f"ram://files_test_{os.getpid()}_{id(tmp_path)}/base"


def test_write_read_list_and_atomic_rename(base):
    files.write_json(base + "/a/run.json", {"miou": 0.5})  # creates the parents
    files.write_text(base + "/a/b-2.txt", "two\n")
    files.write_bytes(base + "/a/b-1.txt", b"one\n")
    assert files.read_json(base + "/a/run.json") == {"miou": 0.5}
    assert files.read_text(base + "/a/b-2.txt") == "two\n"
    assert files.read_bytes(base + "/a/b-1.txt") == b"one\n"
    assert files.glob(base + "/a/b-*") == [base + "/a/b-1.txt", base + "/a/b-2.txt"]
    # No temporary name is left behind; the listing is sorted.
    assert files.listdir(base + "/a") == ["b-1.txt", "b-2.txt", "run.json"]
    assert files.isdir(base + "/a") and not files.isfile(base + "/a")
    assert files.isfile(base + "/a/run.json") and files.size(base + "/a/b-1.txt") == 4
    assert not files.exists(base + "/nothing")
    with pytest.raises(ValueError), files.atomic_path(base + "/a/c.txt") as tmp:
        files.write_text(tmp, "half")
        raise ValueError("interrupted")
    assert not files.exists(base + "/a/c.txt")
    assert files.listdir(base + "/a") == ["b-1.txt", "b-2.txt", "run.json"]
    files.makedirs(base + "/c")
    files.copy(base + "/a/b-1.txt", base + "/c/copy.txt")
    assert files.read_bytes(base + "/c/copy.txt") == b"one\n"
    with files.local_copy(base + "/a/run.json") as local:
        assert "://" not in local
        with open(local) as f:  # a library that needs a real file reads the copy
            assert f.read() == files.read_text(base + "/a/run.json")
    files.remove(base + "/c/copy.txt")
    assert not files.exists(base + "/c/copy.txt")


def test_absolute_keeps_urls_and_resolves_local_paths():
    assert files.absolute("gs://bucket/runs/a") == "gs://bucket/runs/a"
    assert files.absolute("file:///tmp/x") == "file:///tmp/x"
    assert files.absolute("runs/a") == os.path.join(os.getcwd(), "runs/a")


def test_unknown_scheme_is_a_path_error_naming_the_path():
    with pytest.raises(PathError, match="nosuchfs://bucket/data"):
        files.exists("nosuchfs://bucket/data")
    with pytest.raises(PathError, match="nosuchfs://bucket/run"):
        files.write_text("nosuchfs://bucket/run/x.txt", "x")
