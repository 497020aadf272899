"""The layer rules of docs/architecture.md, read from the source's imports (no import runs).

LAYERS is the layer order, bottom first: each layer a tuple of module prefixes (a prefix
places the module and everything under it; the longest prefix wins). Every module sits in
one layer and imports only modules of its own layer or lower ones, anywhere in the file
(an import inside a function counts: it cannot hide a cycle), and the imports of all the
modules together have no cycle. Command lines (a module-level `if __name__ ==
"__main__":` block, the tools the README's commands run) sit above every layer; only
they and wss/program.py, their shared prologue, import absl's flags; no module imports a
command line; deeplab_ext never imports wss. docs/architecture.md draws the same order
and names every module file of the three packages exactly once.

A new package is one line in LAYERS (and its lines in docs/architecture.md).
"""

import ast
import os
import re

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

# The layers, bottom first: (name, module prefixes). A module imports only its own layer
# and lower ones; command lines sit above the last.
LAYERS = (
    ("the model library", ("deeplab_ext",)),
    ("foundation", ("wss", "wss.errors", "wss.files")),
    ("training input", ("wss.data",)),
    ("dataset builders", ("wss.builders",)),
    ("method", ("wss.method",)),
    (
        "model and optimisation",
        ("wss.model", "wss.schedule", "wss.checkpointing", "wss.distribute"),
    ),
    ("config", ("wss.experiment",)),
    ("evaluation", ("wss.evaluation",)),
    ("restoring and serving a run", ("wss.restore", "wss.serving")),
    ("training", ("wss.pretraining", "wss.training")),
    ("workflows", ("wss.self_training", "wss.comparison", "wss.benchmarking")),
    ("the programs' prologue", ("wss.program", "wss.bench", "datasets")),
)
COMMAND_LINE_LAYER = "command lines"
# Root packages whose entry places only their own __init__.py, so a new module under them
# must be given a layer explicitly.
ROOTS_PLACING_ONLY_THEMSELVES = {"wss"}


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


def layer_of(name, command_line_names):
    """The index in LAYERS of module `name` (len(LAYERS) for a command line), or None
    when no entry places it."""
    if name in command_line_names:
        return len(LAYERS)
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix in ROOTS_PLACING_ONLY_THEMSELVES and name != prefix:
                continue
            if (name == prefix or name.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (index, prefix)
    return None if best is None else best[0]


def layer_name(index):
    return LAYERS[index][0] if index < len(LAYERS) else COMMAND_LINE_LAYER


def import_edges(modules):
    """{module name: module names of the three packages it imports, anywhere in it}."""
    names = {module_name(path) for path in modules}
    return {
        module_name(path): sorted(n for n in imported if n in names and n != module_name(path))
        for path, (_, imported) in modules.items()
    }


def find_cycle(edges):
    """One import cycle as a list of module names [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


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


def test_every_module_has_a_layer(modules, command_lines):
    cli_names = {module_name(path) for path in command_lines}
    assert [p for p in modules if layer_of(module_name(p), cli_names) is None] == []


def test_no_module_imports_a_higher_layer(modules, command_lines):
    """Every import, at module level or inside a function, points down or sideways."""
    cli_names = {module_name(path) for path in command_lines}
    upward = [
        f"{name} ({layer_name(layer_of(name, cli_names))}) imports {target} "
        f"({layer_name(layer_of(target, cli_names))})"
        for name, targets in import_edges(modules).items()
        for target in targets
        if layer_of(target, cli_names) > layer_of(name, cli_names)
    ]
    assert upward == []


def test_the_imports_have_no_cycle(modules):
    """Within a layer too, and counting the imports inside functions, which would
    otherwise hide one."""
    assert find_cycle(import_edges(modules)) is None


def test_the_layer_rules_catch_what_they_are_for():
    """The checks themselves, on made-up modules: an upward import, a cycle hidden
    behind a function-level import, a module no layer places."""
    assert layer_of("wss.model", set()) < layer_of("wss.evaluation.metrics", set())
    assert layer_of("deeplab_ext.convert_checkpoint", {"deeplab_ext.convert_checkpoint"}) == len(
        LAYERS
    )
    assert layer_of("wss.new_module", set()) is None
    hidden = ast.parse("def f():\n    from wss.data import tfds_registry\n")
    assert "wss.data.tfds_registry" in imported_names(hidden)
    edges = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


def test_the_rules_see_imports_inside_functions_and_command_line_blocks():
    """The readers themselves: nested imports count, a __main__ check only at top level."""
    tree = ast.parse(
        "def f():\n    from absl import flags\n    import wss.eval\n"
        "def g():\n    if __name__ == '__main__':\n        pass\n"
    )
    assert {"absl.flags", "wss.eval"} <= imported_names(tree)
    assert not is_command_line(tree)
    assert is_command_line(ast.parse("if '__main__' == __name__:\n    main()\n"))


def read_architecture():
    with open(ARCHITECTURE, encoding="utf-8") as f:
        return f.read()


def doc_section(doc, heading):
    """The text of the '## heading' section of docs/architecture.md."""
    start = doc.index(f"\n## {heading}\n")
    end = doc.find("\n## ", start + 1)
    return doc[start : end if end != -1 else len(doc)]


def test_architecture_doc_draws_the_layer_order():
    """The layer rule's numbered list names the layers of LAYERS in order, bottom first,
    each line naming its prefixes, then the command lines."""
    section = doc_section(read_architecture(), "The layer rule")
    items = re.findall(r"^(\d+)\. ([^:\n]+): (.*(?:\n {3}.*)*)", section, re.M)
    assert [int(number) for number, _, _ in items] == list(range(1, len(LAYERS) + 2))
    assert [name for _, name, _ in items] == [name for name, _ in LAYERS] + [COMMAND_LINE_LAYER]
    for (_, prefixes), (_, _, text) in zip(LAYERS, items):
        assert all(f"`{prefix}`" in text for prefix in prefixes), text


def test_architecture_doc_names_every_module_once():
    """The module list names each module file exactly once."""
    section = doc_section(read_architecture(), "Every module and its job")
    counts = {path: section.count(f"`{path}`") for path in module_files()}
    assert {path: n for path, n in counts.items() if n > 1} == {}


def test_architecture_doc_names_every_module():
    """docs/architecture.md names each module file by its path (a package's __init__.py
    only where it holds code beyond its docstring; the package folder itself always)."""
    doc = read_architecture()
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
