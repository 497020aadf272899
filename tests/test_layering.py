"""The layer rules of docs/architecture.md, read from the source's imports (no import runs).

Layers: deeplab_ext (the Keras model library) <- wss libraries <- command lines. A
command-line module is one with a module-level `if __name__ == "__main__":` block (the
tools the README's commands run); only they and wss/program.py, their shared prologue,
import absl's flags; no module imports a command line; deeplab_ext never imports wss.
Also: docs/architecture.md names every module file of the three packages.
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("wss", "deeplab_ext", "datasets")
ARCHITECTURE = os.path.join(REPO, "docs", "architecture.md")

# The command lines the README documents (python -m wss.<tool>, python -m wss.bench.<tool>,
# python -m deeplab_ext.convert_checkpoint, python datasets/<builder>.py).
EXPECTED_COMMAND_LINES = {
    "wss/train.py",
    "wss/eval.py",
    "wss/calibration.py",
    "wss/vis.py",
    "wss/export.py",
    "wss/predict.py",
    "wss/pseudo_label.py",
    "wss/compare.py",
    "wss/pretrain.py",
    "wss/bench/step.py",
    "wss/bench/input_pipeline.py",
    "wss/bench/learnability.py",
    "deeplab_ext/convert_checkpoint.py",
    "datasets/build_voc2012_data.py",
    "datasets/build_coco_data.py",
    "datasets/build_folder_data.py",
    "datasets/build_demo_data.py",
    "datasets/make_splits.py",
}
FLAG_MODULES_BESIDES_COMMAND_LINES = {"wss/program.py"}


def module_files():
    """Repository-relative paths of every .py file under the three packages."""
    found = []
    for package in PACKAGES:
        for root, dirs, files in os.walk(os.path.join(REPO, package)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            found += [
                os.path.relpath(os.path.join(root, f), REPO).replace(os.sep, "/")
                for f in sorted(files)
                if f.endswith(".py")
            ]
    return found


def module_name(path):
    """'wss/data/pipeline.py' -> 'wss.data.pipeline' ('wss/__init__.py' -> 'wss')."""
    name = path[: -len(".py")].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def parse(path):
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def imported_names(tree):
    """Every module name an import anywhere in `tree` may bind (for `from a import b`
    both 'a' and 'a.b', since b may be a module)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_command_line(tree):
    """True where the module has a top-level `if __name__ == "__main__":` block."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            sides = [node.test.left] + node.test.comparators
            if any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and any(
                isinstance(s, ast.Constant) and s.value == "__main__" for s in sides
            ):
                return True
    return False


@pytest.fixture(scope="module")
def modules():
    """{path: (syntax tree, imported names)} of every module file."""
    out = {}
    for path in module_files():
        tree = parse(path)
        out[path] = (tree, imported_names(tree))
    return out


@pytest.fixture(scope="module")
def command_lines(modules):
    return {path for path, (tree, _) in modules.items() if is_command_line(tree)}


def test_the_command_lines_are_the_documented_tools(command_lines):
    assert command_lines == EXPECTED_COMMAND_LINES


def test_deeplab_ext_never_imports_wss(modules):
    bad = {
        path: sorted(n for n in names if n == "wss" or n.startswith("wss."))
        for path, (_, names) in modules.items()
        if path.startswith("deeplab_ext/")
    }
    assert {path: names for path, names in bad.items() if names} == {}


def test_only_programs_import_absl_flags(modules, command_lines):
    allowed = command_lines | FLAG_MODULES_BESIDES_COMMAND_LINES
    users = {
        path
        for path, (_, names) in modules.items()
        if names & {"absl.flags", "absl.flags.flags"}
        or any(n.startswith("absl.flags.") for n in names)
    }
    assert sorted(users - allowed) == []


def test_no_module_imports_a_command_line(modules, command_lines):
    """Libraries sit below the command lines, and no command line imports another."""
    cli_names = {module_name(path) for path in command_lines}
    bad = {
        path: sorted(names & cli_names) for path, (_, names) in modules.items() if names & cli_names
    }
    assert bad == {}


def test_the_rules_see_imports_inside_functions_and_command_line_blocks():
    """The readers themselves: nested imports count, a __main__ check only at top level."""
    tree = ast.parse(
        "def f():\n    from absl import flags\n    import wss.eval\n"
        "def g():\n    if __name__ == '__main__':\n        pass\n"
    )
    assert {"absl.flags", "wss.eval"} <= imported_names(tree)
    assert not is_command_line(tree)
    assert is_command_line(ast.parse("if '__main__' == __name__:\n    main()\n"))


def test_architecture_doc_names_every_module():
    """docs/architecture.md names each module file by its path (a package's __init__.py
    only where it holds code beyond its docstring; the package folder itself always)."""
    with open(ARCHITECTURE, encoding="utf-8") as f:
        doc = f.read()
    missing = []
    for path in module_files():
        if path.endswith("/__init__.py"):
            folder = path[: -len("__init__.py")]
            if folder not in doc:
                missing.append(folder)
            body = parse(path).body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            if not body:
                continue
        if path not in doc:
            missing.append(path)
    assert missing == []
