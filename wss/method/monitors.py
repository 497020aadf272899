"""The release's training monitors, as TF functions the model logs every step.

Class-balanced pixel accuracy (acc_seg, acc_pseudo, ...) and the mean max probability of
a distribution (max_prob_*); evaluation's metrics are wss.evaluation.metrics.
"""

import tensorflow as tf

from wss.data.descriptors import IGNORE_LABEL


def class_accuracy_counts(predictions, labels, num_classes, ignore_label=IGNORE_LABEL):
    """TF per-class (correct, total) float32 [C] counts over pixels whose label != ignore.

    predictions and labels must have the same number of pixels (resize the labels to
    the prediction size with losses.resize_mask_nearest first, as the release does).
    Summing these over steps gives the streaming version of the release's monitor.
    """
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int32), [-1])
    keep = tf.not_equal(labels, ignore_label)
    labels = tf.boolean_mask(labels, keep)
    correct = tf.cast(tf.equal(tf.boolean_mask(predictions, keep), labels), tf.float32)
    total = tf.math.unsorted_segment_sum(tf.ones_like(correct), labels, num_classes)
    hits = tf.math.unsorted_segment_sum(correct, labels, num_classes)
    return hits, total


def mean_class_accuracy(
    predictions, labels, num_classes, ignore_label=IGNORE_LABEL, absent="exclude"
):
    """Class-balanced pixel accuracy (the release's acc_weak / acc_strong / acc_seg).

    The release weights every pixel by the inverse frequency of its class and feeds
    tf.metrics.mean_per_class_accuracy; those weights cancel within each class, so the
    value is the mean over classes of correct_c / total_c. tf.metrics averages over all
    C classes with absent ones as 0 (absent='zero'); since it streams over the whole run,
    absent classes soon disappear, so the per-batch default excludes them
    (absent='exclude'; 0.0 if no class is present).
    """
    hits, total = class_accuracy_counts(predictions, labels, num_classes, ignore_label)
    per_class = tf.math.divide_no_nan(hits, total)
    if absent == "zero":
        return tf.reduce_mean(per_class)
    if absent != "exclude":
        raise ValueError(f"absent must be 'exclude' or 'zero', got {absent!r}.")
    present = tf.cast(total > 0, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(per_class * present), tf.reduce_sum(present))


def mean_max_prob(probs, valid=None):
    """Mean over pixels of max_c P (the release's max_prob_* monitors), float32 scalar.

    With `valid` ([B, h, w] or [B, h, w, 1]) the mean is over valid pixels only.
    """
    confidence = tf.reduce_max(tf.cast(probs, tf.float32), axis=-1)
    if valid is None:
        return tf.reduce_mean(confidence)
    valid = tf.reshape(tf.cast(valid, tf.float32), tf.shape(confidence))
    return tf.math.divide_no_nan(tf.reduce_sum(confidence * valid), tf.reduce_sum(valid))
