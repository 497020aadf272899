"""The DeepLab TFRecord schema: feature keys, tf.train.Example building and parse specs.

Matches what tensorflow/models research/deeplab/datasets/build_data.py writes, plus one
optional key for image-level labels of weakly-labeled extra sets.
"""

from typing import Optional, Sequence

import tensorflow as tf

IMAGE_ENCODED = "image/encoded"
IMAGE_FILENAME = "image/filename"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_CHANNELS = "image/channels"
LABEL_ENCODED = "image/segmentation/class/encoded"
LABEL_FORMAT = "image/segmentation/class/format"
# Optional: int64 list of foreground class ids (1..C-1) present in the image.
IMAGE_CLASS_LABEL = "image/class/label"

# A split named S is stored as shards S-00000-of-0000N.tfrecord.
SHARD_TEMPLATE = "{split}-{index:05d}-of-{count:05d}.tfrecord"


def shard_name(split: str, index: int, count: int) -> str:
    """File name of shard `index` (0-based) of `count` for `split`."""
    return SHARD_TEMPLATE.format(split=split, index=index, count=count)


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def make_example(
    image_bytes: bytes,
    filename: str,
    height: int,
    width: int,
    image_format: str = "jpeg",
    label_bytes: Optional[bytes] = None,
    label_format: str = "png",
    image_class_labels: Optional[Sequence[int]] = None,
    channels: int = 3,
) -> tf.train.Example:
    """Builds one record; `label_bytes=None` makes an image-only (unlabeled) record."""
    feature = {
        IMAGE_ENCODED: _bytes(image_bytes),
        IMAGE_FILENAME: _bytes(filename.encode("utf-8")),
        IMAGE_FORMAT: _bytes(image_format.encode("utf-8")),
        IMAGE_HEIGHT: _ints([height]),
        IMAGE_WIDTH: _ints([width]),
        IMAGE_CHANNELS: _ints([channels]),
    }
    if label_bytes is not None:
        feature[LABEL_ENCODED] = _bytes(label_bytes)
        feature[LABEL_FORMAT] = _bytes(label_format.encode("utf-8"))
    if image_class_labels is not None:
        feature[IMAGE_CLASS_LABEL] = _ints(sorted(set(int(c) for c in image_class_labels)))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def parse_spec():
    """Feature spec for tf.io.parse_single_example; missing optional keys get defaults."""
    return {
        IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
        IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
        IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
        IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64, default_value=0),
        IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64, default_value=0),
        LABEL_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
        LABEL_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="png"),
        IMAGE_CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
    }


def filename_spec():
    """Spec that parses only the file name (used to index and filter splits by id)."""
    return {IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value="")}
