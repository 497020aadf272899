"""Choosing a tf.distribute strategy and a mixed-precision policy from flag values."""
import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def make_strategy(name="default", tpu=""):
    """Returns the tf.distribute strategy `name` ('default', 'mirrored', 'multi_worker',
    'tpu'; `tpu` is the TPU address for TPUStrategy)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"--strategy must be one of {STRATEGIES}, got {name!r}")


def set_precision(policy):
    """Sets Keras's global dtype policy: 'float32', 'mixed_float16' (GPU) or
    'mixed_bfloat16' (TPU). Losses and softmaxes are computed in float32 regardless."""
    if policy not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"unknown precision policy {policy!r}")
    keras.mixed_precision.set_global_policy(policy)
