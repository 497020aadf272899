"""Loading official TF1 (slim) name-based checkpoints into our Keras models, strictly.

A model exposes `tf1_variable_map()`: {DeepLab variable name: Keras variable}. The loader
reads the checkpoint with `tf.train.load_checkpoint`, assigns every weight by name, and
reports what it could not match. Strict by default: a model weight with no value, a
checkpoint tensor nobody uses, or a shape mismatch is an error that lists the names.
Training state that official checkpoints carry (global_step, optimizer slots, moving-average
shadows) is never model data and is reported apart, not as unused.
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from deeplab_ext.errors import DeepLabError

# Tensors of a training checkpoint that are not model weights.
_TRAINING_STATE = re.compile(
    r"(^global_step$|/Momentum$|/Adam(_1)?$|/ExponentialMovingAverage$|^beta[12]_power$"
    r"|/RMSProp(_1)?$|^_CHECKPOINTABLE_OBJECT_GRAPH$)"
)
# Classification layers DeepLab leaves out when starting from other weights
# (initialize_last_layer=False): the semantic logits and the backbone's own logits.
_LOGITS = re.compile(r"(^logits/|^[^/]+/logits/)")


class CheckpointMismatchError(DeepLabError):
    """Raised when a checkpoint and a model do not match under the chosen options."""


@dataclasses.dataclass
class LoadReport:
    """What `load_tf1_checkpoint` did: names loaded, skipped, left unset and left unused."""

    loaded: list
    skipped: list
    missing: list
    unused: list
    training_state: list

    def summary(self):
        return (
            f"loaded {len(self.loaded)}, skipped {len(self.skipped)}, "
            f"missing {len(self.missing)}, unused {len(self.unused)} "
            f"(+{len(self.training_state)} training-state tensors ignored)"
        )


def _open(path):
    """Opens a checkpoint prefix or directory, with an error that names the path."""
    prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
    if prefix is None:
        raise FileNotFoundError(
            f"no checkpoint in directory {path!r}: expected a "
            "'checkpoint' file or pass the prefix (e.g. DIR/model.ckpt)"
        )
    try:
        return tf.train.load_checkpoint(prefix)
    except (tf.errors.NotFoundError, tf.errors.DataLossError, ValueError) as e:
        raise FileNotFoundError(
            f"cannot read TF1 checkpoint {prefix!r} ({e.__class__.__name__}). Pass the "
            "prefix shared by its .index and .data-* files, e.g. /path/model.ckpt"
        ) from e


def _as_list(values):
    return sorted(values)


def load_tf1_checkpoint(
    model, path, skip_logits=False, allow_missing=False, allow_unused=False, exclude=()
):
    """Assigns a TF1 checkpoint's tensors to `model`'s weights by DeepLab name.

    Args:
      model: anything with `tf1_variable_map()` (built).
      path: checkpoint prefix, or a directory with a `checkpoint` file.
      skip_logits: leave `logits/semantic/*` and `<backbone>/logits/*` out on both sides
        (starting from ImageNet weights, or a different class count).
      allow_missing: model weights without a checkpoint value keep their initial values.
      allow_unused: checkpoint tensors that match no weight are ignored.
      exclude: regular expressions of names to leave out on both sides.
    Returns a LoadReport; raises CheckpointMismatchError in strict mode.
    """
    reader = _open(path)
    shapes = reader.get_variable_to_shape_map()
    variables = model.tf1_variable_map()
    patterns = [re.compile(p) for p in exclude] + ([_LOGITS] if skip_logits else [])
    skipped_name = lambda n: any(p.search(n) for p in patterns)  # noqa: E731

    training_state = [n for n in shapes if _TRAINING_STATE.search(n)]
    candidates = {n: s for n, s in shapes.items() if n not in set(training_state)}
    skipped = sorted({n for n in list(candidates) + list(variables) if skipped_name(n)})
    wanted = {n: v for n, v in variables.items() if not skipped_name(n)}
    missing = [n for n in wanted if n not in candidates]
    unused = [n for n in candidates if n not in variables and not skipped_name(n)]
    mismatched = [
        f"{n}: checkpoint {list(candidates[n])} vs model {list(v.shape)}"
        for n, v in wanted.items()
        if n in candidates and list(candidates[n]) != list(v.shape)
    ]

    problems = []
    if mismatched:
        problems.append("shape mismatches:\n  " + "\n  ".join(sorted(mismatched)))
    if missing and not allow_missing:
        problems.append(
            f"{len(missing)} model weights have no value in the checkpoint "
            "(pass allow_missing=True to keep their initial values):\n  "
            + "\n  ".join(sorted(missing)[:50])
        )
    if unused and not allow_unused:
        problems.append(
            f"{len(unused)} checkpoint tensors match no model weight "
            "(pass allow_unused=True to ignore them, or skip_logits=True if "
            "they are logits layers):\n  " + "\n  ".join(sorted(unused)[:50])
        )
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {path!r} does not match the model:\n" + "\n".join(problems)
        )
    loaded = []
    for name, var in wanted.items():
        if name in candidates:
            var.assign(np.asarray(reader.get_tensor(name), dtype=var.dtype))
            loaded.append(name)
    return LoadReport(
        _as_list(loaded), skipped, _as_list(missing), _as_list(unused), _as_list(training_state)
    )


def save_tf1_checkpoint(model, prefix):
    """Writes the model's weights under their DeepLab names (a TF1 name-based checkpoint)."""
    names, tensors = zip(*sorted(model.tf1_variable_map().items()))
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=list(names),
        shape_and_slices=[""] * len(names),
        tensors=[tf.convert_to_tensor(v) for v in tensors],
    )
    return prefix
