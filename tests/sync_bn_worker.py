"""Gradients of a small DeepLabv3+ with fine-tuned batch norm under N mirrored replicas,
for tests/test_distribute.py.

    python tests/sync_bn_worker.py OUT_DIR

Writes OUT_DIR/one.npy (1 replica), two.npy (2 replicas, 'sync') and local.npy (2
replicas, 'local'), all three from one process (one TensorFlow start-up). Float64 with dropout off, so that the only difference between 2 replicas and 1 device on
the same global batch of 4 images is where batch statistics come from ('sync': all
replicas, Keras's synchronized batch norm; 'local': each replica's own 2 images).
Writes the summed gradient of every trainable weight, flattened.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf


def gradients_under(replicas, batch_norm):
    """The summed gradients (flattened) of the model under `replicas` mirrored CPUs."""
    import keras

    from deeplab_ext.deeplab import DeepLabV3Plus

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = DeepLabV3Plus(
            num_classes=5,
            width_multiplier=0.0625,
            middle_flow_units=1,
            aspp_depth=8,
            decoder_depth=8,
            sync_batch_norm=batch_norm == "sync",
        )
        model.build()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 33, 33, 3))
    targets = rng.normal(size=(4, 9, 9, 5))
    dataset = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)
    )

    def replica_gradients(image, target):
        with tf.GradientTape() as tape:
            logits = model.forward(image, training=True, dropout=False)["logits"]
            loss = tf.reduce_sum(tf.sin(logits) * target) / 4  # this replica's share
        grads = tape.gradient(loss, model.trainable_variables)
        return [
            tf.zeros_like(v.value) if g is None else g  # the unused classification head
            for g, v in zip(grads, model.trainable_variables)
        ]

    @tf.function
    def gradients(batch):
        per_replica = strategy.run(replica_gradients, args=batch)
        return [strategy.reduce("SUM", g, axis=None) for g in per_replica]

    for batch in dataset:
        grads = gradients(batch)
    return np.concatenate([g.numpy().ravel() for g in grads])


def main(out_dir):
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras

    keras.config.set_floatx("float64")
    for name, replicas, batch_norm in (
        ("one", 1, "sync"),
        ("two", 2, "sync"),
        ("local", 2, "local"),
    ):
        np.save(os.path.join(out_dir, f"{name}.npy"), gradients_under(replicas, batch_norm))


if __name__ == "__main__":
    main(sys.argv[1])
