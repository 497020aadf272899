"""Synthetic batches with the training pipelines' keys, dtypes and shapes (for timing)."""

import tensorflow as tf

from wss.data.descriptors import IGNORE_LABEL


def synthetic_labels(batch, crop, num_classes, seed):
    """Label maps [B, crop, crop, 1] int32 of a few blocky classes, ~5% ignore pixels and
    an ignored padding strip; and the valid mask (0 on the strip) [B, crop, crop, 1]."""
    cells = 8
    grid_seed = tf.constant([seed, 1], tf.int32)
    # Each image uses background plus up to three foreground classes, so that the
    # image-level labels are sparse as in real data.
    palette = tf.random.stateless_uniform([batch, 4], grid_seed, 1, num_classes, tf.int32)
    palette = tf.concat([tf.zeros([batch, 1], tf.int32), palette[:, 1:]], axis=1)
    pick = tf.random.stateless_uniform([batch, cells, cells], grid_seed + 1, 0, 4, tf.int32)
    grid = tf.gather(palette, pick, batch_dims=1)[..., tf.newaxis]
    label = tf.image.resize(grid, [crop, crop], method="nearest")
    noise = tf.random.stateless_uniform([batch, crop, crop, 1], grid_seed + 2)
    label = tf.where(noise < 0.05, IGNORE_LABEL, label)
    rows = tf.range(crop)[tf.newaxis, :, tf.newaxis, tf.newaxis]
    valid = tf.cast(rows < crop - max(1, crop // 8), tf.float32) * tf.ones_like(noise)
    label = tf.where(valid > 0, label, IGNORE_LABEL)
    return tf.cast(label, tf.int32), valid


def image_labels_of(label, num_classes):
    """Multi-hot [B, C-1] of the foreground classes present in each label map."""
    flat = tf.reshape(label, [tf.shape(label)[0], -1])
    hot = tf.one_hot(flat, num_classes, dtype=tf.float32)  # IGNORE_LABEL gives a zero row
    return tf.reduce_max(hot, axis=1)[:, 1:]


def synthetic_batches(labeled_batch, extra_batch, crop, num_classes, seed=0):
    """(labeled, extra) dicts with the pipelines' keys, dtypes and shapes."""

    def images(batch, offset):
        """Uniform [0, 255] float32 images."""
        return tf.random.stateless_uniform([batch, crop, crop, 3], [seed, offset], 0.0, 255.0)

    label, valid = synthetic_labels(labeled_batch, crop, num_classes, seed)
    labeled = {
        "image": images(labeled_batch, 10),
        "label": label,
        "valid": valid,
        "image_labels": image_labels_of(label, num_classes),
    }
    label, valid = synthetic_labels(extra_batch, crop, num_classes, seed + 1)
    extra = {
        "image": images(extra_batch, 11),
        "strong": images(extra_batch, 12),
        "valid": valid,
        "label": label,
        "has_label": tf.ones([extra_batch]),
        "image_labels": image_labels_of(label, num_classes),
    }
    return labeled, extra
