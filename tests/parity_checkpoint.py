"""The parity checkpoint, rebuilt by the project: deterministic values for every variable.

The reference files under tests/reference/ hold what the original TF1 graph computes with
a checkpoint whose every variable is drawn from its own numpy generator, seeded by
(seed, crc32 of the variable's name), from a distribution chosen by the variable's kind
(the last part of its name). The references passing is what proves this implementation
of the recipe equal to the one the files were made with.
"""

import math
import zlib

import numpy as np
import tensorflow as tf


def read_manifest(path):
    """{name: shape} of a variable manifest (tab-separated name, comma-separated shape, dtype)."""
    manifest = {}
    with open(path) as f:
        for row in f:
            if not row.strip():
                continue
            name, shape, _ = row.rstrip("\n").split("\t")
            manifest[name] = tuple(int(d) for d in shape.split(",")) if shape else ()
    return manifest


def _fan_in_normal(rng, shape, fan_in):
    return rng.normal(0.0, math.sqrt(1.0 / fan_in), shape)


def variable_value(name, shape, seed):
    """The float32 value of one variable of the parity checkpoint."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    kind = name.rsplit("/", 1)[-1]
    if kind == "moving_variance":
        value = rng.uniform(0.5, 2.0, shape)
    elif kind == "moving_mean":
        value = rng.normal(0.0, 0.2, shape)
    elif kind == "gamma":
        value = rng.uniform(0.5, 1.0, shape)
    elif kind in ("beta", "biases"):
        value = rng.normal(0.0, 0.1, shape)
    elif kind == "depthwise_weights":  # [kh, kw, in, multiplier]: fan-in is the window
        value = _fan_in_normal(rng, shape, shape[0] * shape[1])
    elif kind in ("weights", "pointwise_weights"):  # [kh, kw, in, out]
        value = _fan_in_normal(rng, shape, int(np.prod(shape[:-1])))
    else:
        raise ValueError(f"the parity recipe has no rule for variable {name!r}")
    return value.astype(np.float32)


def write_parity_checkpoint(prefix, manifest, seed):
    """Writes a TF1 name-based checkpoint (prefix.index, prefix.data-*) of `manifest`."""
    names = sorted(manifest)
    tensors = [tf.constant(variable_value(n, manifest[n], seed)) for n in names]
    tf.raw_ops.SaveV2(
        prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
    )
    return str(prefix)
