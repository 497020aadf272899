"""Rebuilding a trained PseudoSeg model for evaluation, export and visualisation.

The training driver saves `wss.checkpointing.training_checkpoint(model, optimizer)` with a
CheckpointManager (prefix 'ckpt') and writes the effective gin config to
`model_dir/operative_config.gin`. A model is restored by parsing the same gin files into
a RunConfig (wss.experiment.parse_run_config), building it with
`wss.model.build_model` from that config and restoring the model's part only.

`setup_tool` is what the tools that read a trained run (wss.eval, wss.calibration,
wss.vis, wss.pseudo_label) rebuild before they start; it takes the values of the flags
wss.program.define_model_flags / define_data_flags define (wss.program.model_flag_values
and data_flag_values), never the flags themselves.
"""

import dataclasses
import os
import re

import tensorflow as tf

from deeplab_ext.checkpoint import open_checkpoint
from wss import experiment, files
from wss import model as model_lib
from wss.builders.dataset_dir import resolve_dataset_dir
from wss.checkpointing import training_checkpoint
from wss.data import descriptors
from wss.errors import UserError

OPERATIVE_CONFIG = "operative_config.gin"


class RestoreError(UserError, RuntimeError):
    """A checkpoint or gin file could not be found or does not fit the model."""


def parse_gin(gin_files=(), gin_params=(), skip_unknown=False):
    """wss.experiment.parse_run_config for a trained run's gin files: a missing file
    raises RestoreError naming the file and the fix. Returns the RunConfig (gin is
    cleared first, so repeated calls in one process do not mix configs)."""
    gin_files = [f for f in (gin_files or []) if f]
    for path in gin_files:
        if not files.exists(path):
            raise RestoreError(
                f"gin file {path!r} does not exist. Fix: pass the gin files "
                "the model was trained with (e.g. MODEL_DIR/"
                f"{OPERATIVE_CONFIG}) with --gin_file."
            )
    return experiment.parse_run_config(gin_files, gin_params, skip_unknown=skip_unknown)


def default_gin_files(model_dir, gin_files):
    """The gin files to use: `gin_files` if given, else model_dir's operative config."""
    if gin_files:
        return list(gin_files), False
    operative = os.path.join(model_dir, OPERATIVE_CONFIG) if model_dir else None
    if operative and files.exists(operative):
        return [operative], True
    raise RestoreError(
        f"no --gin_file given and {operative!r} does not exist. Fix: pass "
        "the experiment's gin file(s) with --gin_file."
    )


def find_checkpoint(model_dir_or_ckpt):
    """Resolves a checkpoint prefix from a model directory (latest) or a prefix."""
    path = model_dir_or_ckpt
    if path is None:
        raise RestoreError(
            "no model directory or checkpoint given. Fix: pass --model_dir (or --checkpoint)."
        )
    if files.isdir(path) and not files.exists(path + ".index"):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise RestoreError(
                f"no checkpoint in directory {path!r} (no 'checkpoint' "
                "index file or no ckpt-* files). Fix: train first, or point "
                "--model_dir/--checkpoint at a directory or prefix holding "
                "a checkpoint."
            )
        return latest
    if not files.exists(path + ".index"):
        raise RestoreError(
            f"checkpoint {path!r} not found (expected {path}.index). Fix: "
            "pass a prefix such as MODEL_DIR/ckpt-1000, or the model "
            "directory for the latest one."
        )
    return path


# What restoring a checkpoint raises: a mismatch with the model (AssertionError,
# ValueError, InvalidArgumentError) or files it cannot read (other OpErrors; IndexError
# from TensorFlow's reader on a truncated data file).
RESTORE_FAILURES = (AssertionError, ValueError, IndexError, tf.errors.OpError)


def unreadable_checkpoint(path, error):
    """The RestoreError for checkpoint `path` when `error` (one of RESTORE_FAILURES) says
    its files cannot be read (truncated, corrupt), else None (a mismatch)."""
    if isinstance(error, tf.errors.InvalidArgumentError) or not isinstance(
        error, (IndexError, tf.errors.OpError)
    ):
        return None
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return RestoreError(
        f"cannot read checkpoint {path!r} ({reason}): its files are truncated or corrupt. "
        "Fix: delete them and name an earlier checkpoint in the directory's 'checkpoint' "
        "file, or train again"
    )


def restore_model(model, model_dir_or_ckpt):
    """Restores `model`'s weights from a model directory (latest checkpoint) or prefix.

    Only the model's weights are read (the optimizer is skipped). Every model weight must
    receive a value: a checkpoint that lacks some, or holds them with other shapes, raises
    RestoreError instead of leaving weights at their initial values. Returns the prefix.
    """
    path = find_checkpoint(model_dir_or_ckpt)
    fix = f" Fix: use the gin files the model was trained with (its {OPERATIVE_CONFIG})."
    # Object-graph keys escape '.' as '..' and '/' as '.S'.
    expected = {
        "model/variables_by_name/"
        + name.replace(".", "..").replace("/", ".S")
        + "/.ATTRIBUTES/VARIABLE_VALUE"
        for name in model.tf1_variable_map()
    }
    keys = set(open_checkpoint(path).get_variable_to_shape_map())
    missing = sorted(expected - keys)
    if missing:
        raise RestoreError(
            f"checkpoint {path!r} does not fit the model built from the gin "
            f"config: no value for {len(missing)} of {len(expected)} model "
            f"weights (e.g. {missing[:3]})." + fix
        )
    try:
        status = training_checkpoint(model).restore(path).expect_partial()
        status.assert_existing_objects_matched()
    except RESTORE_FAILURES as e:
        raise unreadable_checkpoint(path, e) or RestoreError(
            f"checkpoint {path!r} does not fit the model built from the gin config: {e}." + fix
        ) from e
    return path


def checkpoint_step(path):
    """Training step of a checkpoint: its 'step' variable, else the prefix's number."""
    try:
        reader = open_checkpoint(path)
        key = "step/.ATTRIBUTES/VARIABLE_VALUE"
        if reader.has_tensor(key):
            return int(reader.get_tensor(key))
    except (tf.errors.OpError, ValueError, FileNotFoundError):
        pass
    match = re.search(r"-(\d+)$", path)
    return int(match.group(1)) if match else 0


# ----------------------------------------------------------------------- a tool's setup


@dataclasses.dataclass
class ToolSetup:
    """What every command-line tool rebuilds from its flags before it starts."""

    model: object
    model_dir: str
    descriptor: object
    dataset_name: str  # as given (a registered name or a descriptor.json path)
    dataset_dir: str
    split: str
    crop: object
    config: object = None  # the run's wss.experiment.RunConfig


def parse_run(model_dir=None, checkpoint=None, gin_files=(), gin_params=(), what="the run"):
    """Parses the gin config of the run in `model_dir` (or the directory of `checkpoint`):
    its operative config unless `gin_files` are given. Returns (model directory, RunConfig)."""
    if not model_dir and not checkpoint:
        raise RestoreError(f"pass --model_dir of {what} (and optionally --checkpoint).")
    model_dir = model_dir or os.path.dirname(checkpoint)
    files, operative = default_gin_files(model_dir, gin_files)
    return model_dir, parse_gin(files, gin_params, skip_unknown=operative)


def setup_tool(
    model_dir=None,
    checkpoint=None,
    gin_files=(),
    gin_params=(),
    dataset_name=None,
    dataset_dir=None,
    split=None,
    eval_crop_size=None,
    what="the run",
):
    """Parses the run's gin config, resolves the data (each value None: the run's
    Experiment's) and builds the (unrestored) model; returns a ToolSetup."""
    model_dir, config = parse_run(model_dir, checkpoint, gin_files, gin_params, what)
    name, dataset_dir, split, crop = resolve_data(
        config.experiment, dataset_name, dataset_dir, split, eval_crop_size
    )
    desc = descriptors.get_descriptor(name)
    model = model_lib.build_model(desc.num_classes, config.model, config.method)
    return ToolSetup(model, model_dir, desc, name, dataset_dir, split, crop, config)


def resolve_data(exp, dataset_name=None, dataset_dir=None, split=None, eval_crop_size=None):
    """(dataset_name, dataset_dir, split, eval_crop_size): each given value, else the
    parsed Experiment `exp`'s (the crop: eval_crop)."""
    name = dataset_name or exp.dataset_name
    split = split or exp.eval_split
    crop = eval_crop(exp, dataset_name, eval_crop_size)
    try:
        dataset_dir = resolve_dataset_dir(name, dataset_dir, exp.tfds_data_dir)
    except (ValueError, FileNotFoundError) as e:
        raise RestoreError(str(e)) from e
    return name, dataset_dir, split, crop


def eval_crop(exp, dataset_name=None, eval_crop_size=None):
    """The eval crop a tool uses: `eval_crop_size` if given, else the parsed Experiment
    `exp`'s, unless `dataset_name` names another dataset than the run's: then that
    dataset's."""
    if eval_crop_size:
        return eval_crop_size
    if dataset_name and dataset_name != exp.dataset_name:
        return descriptors.get_descriptor(dataset_name).eval_crop_size
    return exp.eval_crop_size
