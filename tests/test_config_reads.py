"""Config is read in one place: wss.experiment.parse_run_config turns gin into values, no
other module calls into gin at run time, and nothing gin bound outlives the parse."""

import ast
import pathlib

import gin
import pytest

from wss.experiment import Experiment, parse_run_config
from wss.method.options import MethodOptions

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("wss", "deeplab_ext", "datasets")
# The parser: the one module that may parse, query and clear gin.
PARSER_MODULES = {"wss/experiment.py"}
# What any module may use of gin: declaring configurables, and constants.
DECLARATIONS = {"configurable", "register", "REQUIRED", "__file__"}


def gin_uses(source):
    """(line, what) of every use of gin in a module's source that is not a declaration:
    an attribute of the imported gin module outside DECLARATIONS, or a name imported from
    gin (or one of its submodules) that is not one."""
    tree = ast.parse(source)
    names = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "gin" or alias.name.startswith("gin."):
                    names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "gin":
            for alias in node.names:
                if node.module != "gin" or alias.name not in DECLARATIONS:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in names
            and node.attr not in DECLARATIONS
        ):
            found.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return sorted(found)


def test_the_rule_sees_every_kind_of_gin_read():
    source = (
        "import gin\nimport gin.config as gc\nfrom gin import query_parameter\n"
        "@gin.configurable\nclass A: pass\n"
        "gin.query_parameter('A.x')\ngc.config_str()\nf = gin.get_bindings\n"
    )
    assert [what for _, what in gin_uses(source)] == [
        "from gin import query_parameter",
        "gin.query_parameter",
        "gc.config_str",
        "gin.get_bindings",
    ]


def test_only_the_parser_calls_into_gin():
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative in PARSER_MODULES:
                continue
            for line, what in gin_uses(path.read_text()):
                offenders.append(f"{relative}:{line}: {what}")
    assert not offenders, (
        "gin is read outside wss.experiment.parse_run_config (parse there, pass values): "
        + "; ".join(offenders)
    )


def test_parse_leaves_no_binding_behind():
    config = parse_run_config([], ["Experiment.num_steps = 7", "MethodOptions.gamma = 0.3"])
    assert (config.experiment.num_steps, config.method.gamma) == (7, 0.3)
    assert "Experiment.num_steps = 7" in config.gin_config
    assert gin.config_str() == ""
    # Built anywhere else, the config classes hold their defaults, never gin's values.
    assert (Experiment().num_steps, MethodOptions().gamma) == (30000, 0.5)
    # A failed parse leaves nothing behind either.
    with pytest.raises(ValueError):
        parse_run_config([], ["Experiment.num_steps = 9", "Experiment.no_such_field = 1"])
    assert gin.config_str() == ""


def test_crop_size_is_resolved_once_at_parse_time():
    assert Experiment().crop_size is None  # unresolved: the dataset decides
    demo = parse_run_config([], ["Experiment.dataset_name = 'demo'"]).experiment
    voc = parse_run_config([], ["Experiment.dataset_name = 'pascal_voc_seg'"]).experiment
    assert (demo.crop_size, voc.crop_size) == (65, 513)  # the descriptors' train_crop_size
    bound = parse_run_config([], ["Experiment.dataset_name = 'demo'", "Experiment.crop_size = 33"])
    assert bound.experiment.crop_size == 33
