"""Builds a training config under a strategy of 8 logical CPUs, for
tests/test_launch_commands.py.

    python tests/launch_worker.py PRECISION GIN_FILE... -- GIN_PARAM...

Does what wss.train does before its first step, short of reading data: the precision
policy, the batch split over 8 replicas, the TrainLoop settings, and the model and
optimizer built in the strategy's scope (a MirroredStrategy standing in for the 8 cores
of a TPU or 8 GPUs). Prints 'BUILT <parameters> <per-replica labeled batch>'.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf

REPLICAS = 8


def main(precision, gin_files, gin_params):
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * REPLICAS
    )

    from wss import distribute
    from wss.experiment import build_optimizer, parse_run_config
    from wss.model import build_model

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
    print("BUILT", params, exp.labeled_batch_size // REPLICAS)


if __name__ == "__main__":
    split = sys.argv.index("--")
    main(sys.argv[1], sys.argv[2:split], sys.argv[split + 1 :])
