"""Decodes one record in tf.data and checks it, never raising on bad content: every
element carries its source file, record index and the first failed check, so a bad record
is reported by name (assert_ok) or dropped and counted (skip_filter, SkipCounter).
"""

import collections
import threading
from typing import List

import tensorflow as tf
from absl import logging

from wss.data import schema
from wss.data.errors import DataError
from wss.data.image_io import IGNORE_LABEL

# Reason codes for a record that fails a check.
OK, BAD_IMAGE, BAD_LABEL, SIZE_MISMATCH, LABEL_RANGE, NO_LABEL, BAD_CLASS_LABEL = range(7)
REASONS = {
    BAD_IMAGE: (
        "image/encoded is not a decodable JPEG or PNG",
        "re-encode the image or rebuild the record",
    ),
    BAD_LABEL: (
        "image/segmentation/class/encoded is not a decodable PNG",
        "rebuild the record with an index PNG label",
    ),
    SIZE_MISMATCH: (
        "label size differs from image size (or from image/height, image/width)",
        "the label belongs to another image; rebuild",
    ),
    LABEL_RANGE: (
        "label has values outside [0, num_classes) that are not 255",
        "convert colour labels to class indices, or fix num_classes",
    ),
    NO_LABEL: (
        "record has no segmentation label but this stream needs one",
        "use this split as an extra set, or build it with labels",
    ),
    BAD_CLASS_LABEL: (
        "image/class/label has ids outside [1, num_classes)",
        "store foreground class ids 1..num_classes-1",
    ),
}


class SkipCounter:
    """Thread-safe count of records dropped by skip_bad, by reason, with examples."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts = collections.Counter()
        self.examples: List[str] = []

    def add(self, path: bytes, index: int, reason: int):
        msg = f"{path.decode()} record {index}: {REASONS[reason][0]}"
        with self._lock:
            self.counts[REASONS[reason][0]] += 1
            if len(self.examples) < 100:
                self.examples.append(msg)
        logging.warning("Skipped bad record: %s", msg)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no records skipped"
        lines = [f"{n} x {r}" for r, n in self.counts.items()]
        return f"skipped {self.total} records: " + "; ".join(lines)


def _is_jpeg_or_png(data):
    return tf.logical_or(
        tf.strings.substr(data, 0, 3) == b"\xff\xd8\xff",
        tf.strings.substr(data, 0, 8) == b"\x89PNG\r\n\x1a\n",
    )


def decode_record(path, index, record, num_classes: int, require_label: bool):
    """Parses and decodes one record; never raises on bad content.

    Returns a dict with 'image' uint8 [H,W,3], 'label' int32 [H,W,1] (all 255 if none),
    'has_label' bool, 'class_ids' int64 [K], 'filename', 'path', 'index', and 'reason'
    (OK or the first failed check's code).
    """
    f = tf.io.parse_single_example(record, schema.parse_spec())
    image_bytes = f[schema.IMAGE_ENCODED]
    label_bytes = f[schema.LABEL_ENCODED]
    has_label = tf.strings.length(label_bytes) > 0
    image_ok = _is_jpeg_or_png(image_bytes)
    label_ok = tf.logical_or(tf.logical_not(has_label), _is_jpeg_or_png(label_bytes))

    image = tf.cond(
        image_ok,
        lambda: tf.io.decode_image(image_bytes, channels=3, expand_animations=False),
        lambda: tf.zeros([1, 1, 3], tf.uint8),
    )
    image.set_shape([None, None, 3])
    shape = tf.shape(image)[:2]
    label = tf.cond(
        tf.logical_and(has_label, label_ok),
        lambda: tf.cast(
            tf.io.decode_image(label_bytes, channels=1, expand_animations=False), tf.int32
        ),
        lambda: tf.fill(tf.concat([shape, [1]], 0), IGNORE_LABEL),
    )
    label.set_shape([None, None, 1])
    header = tf.cast(tf.stack([f[schema.IMAGE_HEIGHT], f[schema.IMAGE_WIDTH]]), tf.int32)
    header_ok = tf.logical_or(
        tf.reduce_all(tf.equal(header, 0)), tf.reduce_all(tf.equal(header, shape))
    )
    same_size = tf.logical_and(tf.reduce_all(tf.equal(tf.shape(label)[:2], shape)), header_ok)
    in_range = tf.reduce_all(tf.logical_or(label < num_classes, label == IGNORE_LABEL))
    in_range = tf.logical_and(in_range, tf.reduce_all(label >= 0))
    class_ids = tf.sparse.to_dense(f[schema.IMAGE_CLASS_LABEL])
    class_ok = tf.reduce_all(tf.logical_and(class_ids >= 1, class_ids < num_classes))

    checks = [
        (image_ok, BAD_IMAGE),
        (label_ok, BAD_LABEL),
        (same_size, SIZE_MISMATCH),
        (in_range, LABEL_RANGE),
        (tf.logical_or(has_label, not require_label), NO_LABEL),
        (class_ok, BAD_CLASS_LABEL),
    ]
    reason = tf.constant(OK)
    for ok, code in reversed(checks):  # First failing check wins.
        reason = tf.where(ok, reason, code)
    return {
        "image": image,
        "label": label,
        "has_label": has_label,
        "class_ids": class_ids,
        "filename": f[schema.IMAGE_FILENAME],
        "path": path,
        "index": index,
        "reason": reason,
    }


def _raise_bad_record(path, index, reason):
    what, fix = REASONS[int(reason)]
    raise DataError(
        f"{path.numpy().decode()} record {int(index)}: {what}. Fix: {fix} "
        "(or set skip_bad_records=True to skip and count such records)."
    )


def assert_ok(x):
    """Returns x unchanged, or raises DataError naming the record if a check failed."""
    ok = tf.cond(
        x["reason"] == OK,
        lambda: tf.constant(True),
        lambda: tf.py_function(_raise_bad_record, [x["path"], x["index"], x["reason"]], tf.bool),
    )
    with tf.control_dependencies([ok]):
        x = dict(x)
        x["image"] = tf.identity(x["image"])
    return x


def skip_filter(counter: SkipCounter):
    """A tf.data filter predicate keeping good records and counting the others."""

    def record_skip(path, index, reason):
        counter.add(path.numpy(), int(index), int(reason))
        return False

    def keep(x):
        return tf.cond(
            x["reason"] == OK,
            lambda: tf.constant(True),
            lambda: tf.py_function(record_skip, [x["path"], x["index"], x["reason"]], tf.bool),
        )

    return keep
