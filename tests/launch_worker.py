"""Builds training configs under a strategy of 8 logical CPUs, for
tests/test_launch_commands.py.

    python tests/launch_worker.py '[[PRECISION, [GIN_FILE...], [GIN_PARAM...]], ...]'

Does what wss.train does before its first step, short of reading data: the precision
policy, the batch split over 8 replicas, the TrainLoop settings, and the model and
optimizer built in the strategy's scope (a MirroredStrategy standing in for the 8 cores
of a TPU or 8 GPUs). All configs in one process (one TensorFlow start-up); prints
'BUILT <index> <parameters> <per-replica labeled batch>' for each config that builds, or
'FAILED <index>' and its traceback.
"""

import gc
import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf

REPLICAS = 8


def build(index, precision, gin_files, gin_params):
    """Builds one config under 8 replicas and prints its BUILT line."""
    from wss import distribute
    from wss.experiment import parse_run_config
    from wss.model import build_model
    from wss.schedule import build_optimizer

    config = parse_run_config(gin_files, gin_params)
    exp = config.experiment
    distribute.set_precision(precision)
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
    for size in (exp.labeled_batch_size, exp.extra_batch_size):
        assert size % REPLICAS == 0, f"batch {size} does not split over {REPLICAS} replicas"
    with strategy.scope():
        model = build_model(exp.descriptor.num_classes, config.model, config.method)
        build_optimizer(exp, model, precision)
    params = sum(int(tf.size(v)) for v in model.trainable_variables)
    distribute.set_precision("float32")  # the policy is global: the next config sets its own
    print("BUILT", index, params, exp.labeled_batch_size // REPLICAS, flush=True)


def main(configs):
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )
    for index, (precision, gin_files, gin_params) in enumerate(configs):
        try:
            build(index, precision, gin_files, gin_params)
        except Exception:  # reported per config: the other configs still build
            print("FAILED", index, traceback.format_exc(), flush=True)
        gc.collect()  # the last config's 8 mirrored copies of its weights go first


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
