"""A few supervised steps under a tf.distribute strategy, for tests/test_distribute.py.

    python tests/distributed_worker.py OUT_DIR mirrored 1,2   # 1, then 2 logical CPU replicas
    TF_CONFIG=... python tests/distributed_worker.py OUT.npy multi_worker

Writes the trainable weights after the steps (flattened; mirrored: OUT_DIR/mirrored_N.npy
for each N, all from this one process) and prints the last loss.
Batch norm is frozen (fine_tune_batch_norm=False) so that per-replica batch statistics
do not make N replicas differ from one device on the same global batch.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf


def train(out_path, kind, replicas=1):
    """A few steps under the strategy; saves the weights to `out_path`."""
    import keras

    from wss.method.options import MethodOptions
    from wss.model import PseudoSegModel

    if kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = PseudoSegModel(
            deeplab_config=dict(
                num_classes=5,
                width_multiplier=0.0625,
                middle_flow_units=1,
                aspp_depth=8,
                decoder_depth=8,
                fine_tune_batch_norm=False,
            ),
            options=MethodOptions(mode="supervised"),
        )
        model.build()
        optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
        optimizer.build(model.trainable_variables)
        model.compile(optimizer=optimizer)
    rng = np.random.default_rng(0)
    batches = [
        {
            "image": rng.uniform(0, 255, (4, 33, 33, 3)).astype("float32"),
            "label": rng.integers(0, 5, (4, 33, 33, 1)).astype("int32"),
            "valid": np.ones((4, 33, 33, 1), "float32"),
            "image_labels": np.ones((4, 4), "float32"),
        }
        for _ in range(3)
    ]

    def dataset_fn(ctx):
        # Every worker builds the same global batches and keeps its replicas' slices.
        per_replica = ctx.get_per_replica_batch_size(4)
        ds = tf.data.Dataset.from_tensor_slices(
            {k: np.stack([b[k] for b in batches]) for k in batches[0]}
        ).unbatch()
        return ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id).batch(per_replica)

    dataset = strategy.distribute_datasets_from_function(dataset_fn)

    @tf.function
    def step(batch):
        out = strategy.run(model.train_step, args=(batch,))
        return strategy.reduce("MEAN", out["total_loss"], axis=None)

    for batch in dataset:
        loss = step(batch)
    print("LOSS", float(loss))
    np.save(out_path, np.concatenate([v.numpy().ravel() for v in model.trainable_variables]))


def main(out, kind, replicas="1"):
    counts = [int(n) for n in replicas.split(",")]
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * max(counts)
    )
    if kind == "multi_worker":
        train(out, kind)
    else:
        for n in counts:
            train(os.path.join(out, f"mirrored_{n}.npy"), kind, n)


if __name__ == "__main__":
    main(*sys.argv[1:])
