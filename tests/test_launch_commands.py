"""The README's TPU and multi-GPU launch commands: every flag exists and parses, the gin
files and bindings parse, and the config builds under a tf.distribute strategy of 8
logical CPUs (standing in for 8 TPU cores or GPUs).

The commands are read from the README's <!-- launch-commands --> block (line continuations
joined; a leading VAR=value environment is skipped).
"""

import copy
import json
import os
import re
import shlex
import subprocess
import sys

import gin
import pytest
from absl import flags

from tests.conftest import readme_launch_commands

# Training runs, subprocesses or XLA compiles: minutes each (the full suite runs them).
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(os.path.dirname(__file__), "launch_worker.py")


COMMANDS = readme_launch_commands()


def parse(command):
    """(flag values of wss.train, args) of a command; raises on an unknown flag."""
    from wss import train

    args = shlex.split(command)
    while args and "=" in args[0] and not args[0].startswith("-"):
        args.pop(0)  # VAR=value environment
    assert args[:3] == ["python", "-m", "wss.train"], args
    values = copy.deepcopy(train.FLAGS)
    values.unparse_flags()
    values(["wss.train"] + args[3:])
    return values


def gin_files(values):
    """The command's gin files, as paths in the repository."""
    return [os.path.join(ROOT, f) for f in values.gin_file]


@pytest.fixture(scope="module")
def built():
    """The worker's output for every command's config, all built in one process (one
    TensorFlow start-up): {index of the command: its BUILT or FAILED text}."""
    configs = []
    for command in COMMANDS:
        values = parse(command)
        configs.append([values.precision, gin_files(values), list(values.gin_param)])
    out = subprocess.run(
        [sys.executable, WORKER, json.dumps(configs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    parts = re.split(r"^(?=BUILT |FAILED )", out.stdout, flags=re.M)
    return {int(p.split()[1]): p for p in parts if p.startswith(("BUILT ", "FAILED "))}


@pytest.mark.parametrize("index", range(len(COMMANDS)), ids=["tpu", "mirrored", "multi_worker"])
def test_launch_command_parses_and_its_config_builds_on_8_replicas(index, built):
    values = parse(COMMANDS[index])
    assert values.strategy in ("tpu", "mirrored", "multi_worker")
    assert values.model_dir and values.dataset_dir
    if values.strategy == "tpu":
        assert values.tpu, "--strategy=tpu needs --tpu"
    files = gin_files(values)
    assert files and all(os.path.exists(f) for f in files), files
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(files, values.gin_param, skip_unknown=False)
    finally:
        gin.clear_config()
    assert built.get(index, "").startswith("BUILT "), built


def test_an_unknown_flag_fails_to_parse():
    with pytest.raises(flags.UnrecognizedFlagError):
        parse("python -m wss.train --gin_file=gin/voc_1_8.gin --no_such_flag=1")
