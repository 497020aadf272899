"""Helpers shared by the wss.data tests: tiny generated images and records."""

import numpy as np
import tensorflow as tf

from wss.builders import tfrecord_writer
from wss.data import image_io, schema


def random_pair(seed, h=40, w=50, num_classes=6, ignore_frac=0.05):
    """A random uint8 image and a blocky label with some 255 pixels."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
    coarse = rng.randint(0, num_classes, (h // 8 + 1, w // 8 + 1))
    label = np.kron(coarse, np.ones((8, 8), int))[:h, :w].astype(np.uint8)
    label[rng.rand(h, w) < ignore_frac] = 255
    return image, label


def encoded(name, image, label=None, fmt="png", class_ids=None):
    return tfrecord_writer.EncodedRecord(
        filename=name,
        image_bytes=image_io.encode_image(image, fmt),
        image_format=fmt,
        height=image.shape[0],
        width=image.shape[1],
        label_bytes=None if label is None else image_io.encode_label(label),
        image_class_labels=class_ids,
    )


def identity(x):
    return x


def write_records(directory, split, records, num_shards=2):
    """Writes EncodedRecords as a split; returns the shard paths."""
    return tfrecord_writer.write_split(
        str(directory),
        split,
        records,
        identity,
        num_shards=num_shards,
        num_workers=1,
        progress=False,
    ).files


def write_raw(path, examples):
    """Writes tf.train.Examples (or raw bytes) to one TFRecord file."""
    with tf.io.TFRecordWriter(str(path)) as w:
        for e in examples:
            w.write(e if isinstance(e, bytes) else e.SerializeToString())


def example(name, image_bytes, label_bytes=None, h=0, w=0, fmt="png"):
    return schema.make_example(image_bytes, name, h, w, fmt, label_bytes=label_bytes)


def collect(ds):
    """All batches of a finite dataset, concatenated per key as numpy."""
    out = {}
    for b in ds:
        for k, v in b.items():
            out.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}
