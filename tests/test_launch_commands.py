"""The README's TPU and multi-GPU launch commands: every flag exists and parses, the gin
files and bindings parse, and the config builds under a tf.distribute strategy of 8
logical CPUs (standing in for 8 TPU cores or GPUs).

COMMANDS holds the commands exactly as the README shows them (one string each, line
continuations allowed, a leading VAR=value environment is skipped).
"""

import copy
import os
import shlex
import subprocess
import sys

import gin
import pytest
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(os.path.dirname(__file__), "launch_worker.py")

COMMANDS = (
    # Cloud TPU VM (v3-8 / v4-8: 8 cores), the paper's global batch 64 + 64 (8 + 8 a core).
    """python -m wss.train --gin_file=gin/voc_1_8.gin --strategy=tpu --tpu=local \\
    --precision=mixed_bfloat16 --model_dir=gs://BUCKET/runs/voc_1_8 \\
    --dataset_dir=/data/voc_tfrecord \\
    --gin_param="Experiment.init_checkpoint = '/data/xception_65/model.ckpt'" \\
    --gin_param="TrainLoop.steps_per_execution = 100" \\
    --gin_param="TrainLoop.log_every = 100" --eval_at_end=false""",
    # One machine with 8 GPUs, the paper's global batch (8 + 8 a GPU).
    """python -m wss.train --gin_file=gin/voc_1_8.gin --strategy=mirrored \\
    --model_dir=runs/voc_1_8 --dataset_dir=/data/voc_tfrecord \\
    --gin_param="Experiment.init_checkpoint = '/data/xception_65/model.ckpt'" \\
    --gin_param="TrainLoop.steps_per_execution = 10\"""",
    # The paper's 16 GPUs on 2 machines (TF_CONFIG names them): 4 + 4 a GPU, so batch
    # norm statistics are synchronized over the global batch.
    """TF_CONFIG="$TF_CONFIG" python -m wss.train --gin_file=gin/voc_1_8.gin \\
    --strategy=multi_worker --model_dir=/shared/runs/voc_1_8 \\
    --dataset_dir=/data/voc_tfrecord \\
    --gin_param="Experiment.init_checkpoint = '/data/xception_65/model.ckpt'" \\
    --gin_param="ModelSettings.sync_batch_norm = True" \\
    --gin_param="TrainLoop.steps_per_execution = 10\"""",
)


def parse(command):
    """(flag values of wss.train, args) of a command; raises on an unknown flag."""
    import wss.train  # noqa: F401  defines the flags

    args = shlex.split(command.replace("\\\n", " "))
    while args and "=" in args[0] and not args[0].startswith("-"):
        args.pop(0)  # VAR=value environment
    assert args[:3] == ["python", "-m", "wss.train"], args
    values = copy.deepcopy(flags.FLAGS)
    values.unparse_flags()
    values(["wss.train"] + args[3:])
    return values


@pytest.mark.parametrize("command", COMMANDS, ids=["tpu", "mirrored", "multi_worker"])
def test_launch_command_parses_and_its_config_builds_on_8_replicas(command):
    values = parse(command)
    assert values.strategy in ("tpu", "mirrored", "multi_worker")
    assert values.model_dir and values.dataset_dir
    if values.strategy == "tpu":
        assert values.tpu, "--strategy=tpu needs --tpu"
    files = [os.path.join(ROOT, f) for f in values.gin_file]
    assert files and all(os.path.exists(f) for f in files), files
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(files, values.gin_param, skip_unknown=False)
    finally:
        gin.clear_config()
    out = subprocess.run(
        [sys.executable, WORKER, values.precision] + files + ["--"] + list(values.gin_param),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BUILT" in out.stdout, out.stdout + out.stderr


def test_an_unknown_flag_fails_to_parse():
    with pytest.raises(flags.UnrecognizedFlagError):
        parse("python -m wss.train --gin_file=gin/voc_1_8.gin --no_such_flag=1")
