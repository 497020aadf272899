"""What a training checkpoint holds, in one place for training, evaluation and export.

Keras 3 layers kept in Python lists are not tracked by `tf.train.Checkpoint(model=...)`,
so a checkpoint of the model object would silently miss most weights. We checkpoint flat
dictionaries instead: the model's weights under their DeepLab names (stable and unique),
and the optimizer's variables (iteration count, momentum slots) by their position. Keras
paths are no key: they carry layer names that Keras makes unique per process
("pseudoseg_1"), while the order of the optimizer's variables follows the model's fixed
structure.
"""

import tensorflow as tf


def _module(variables):
    module = tf.Module()
    module.variables_by_name = dict(variables)
    return module


def training_checkpoint(model, optimizer=None):
    """A tf.train.Checkpoint of every model weight and, when given, the optimizer state."""
    parts = {"model": _module(model.tf1_variable_map())}
    if optimizer is not None:
        parts["optimizer"] = _module({f"{i:05d}": v for i, v in enumerate(optimizer.variables)})
    return tf.train.Checkpoint(**parts)
