"""Evaluation metrics for PseudoSeg: confusion-matrix mIoU and calibration (ECE).

Evaluation (spec section 6) is numpy and streaming-friendly: accumulate a confusion
matrix over the validation set (`confusion_matrix` per batch, summed, or
`confusion_matrix_tf` inside a tf.function) and derive mIoU, per-class IoU and pixel
accuracy from it. Cropping predictions back to each image's original height and width is
the caller's job. Calibration follows Guo et al. 2017: 15 equal-width confidence bins
over valid pixels, accumulated with `CalibrationAccumulator`.

The training monitors the model logs live beside the method (wss.method.monitors).
"""

import numpy as np
import tensorflow as tf

from wss.data.descriptors import IGNORE_LABEL

NUM_ECE_BINS = 15


# --------------------------------------------------------------------------- confusion


def _valid_pairs(labels, predictions, num_classes, ignore_label):
    """Flattens labels/predictions, drops ignored pixels and checks the class range."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels ({labels.size}) and predictions ({predictions.size}) "
            "must have the same number of pixels."
        )
    keep = labels != ignore_label
    labels, predictions = labels[keep], predictions[keep]
    for name, arr in (("labels", labels), ("predictions", predictions)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(
                f"{name} outside [0, {num_classes}) after removing ignore_label={ignore_label}."
            )
    return labels, predictions


def confusion_matrix(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """int64 [C, C] confusion matrix; rows are ground truth, columns are predictions.

    Pixels whose label equals `ignore_label` are skipped; any other label or prediction
    outside [0, C) raises ValueError. Sum the results over batches to stream.
    """
    labels, predictions = _valid_pairs(labels, predictions, num_classes, ignore_label)
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def confusion_matrix_tf(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """TF counterpart of `confusion_matrix` for use inside tf.function (int64 [C, C]).

    Out-of-range ids are not checked here (bincount would drop or misplace them).
    """
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
    keep = tf.not_equal(labels, ignore_label)
    ids = tf.boolean_mask(labels, keep) * num_classes + tf.boolean_mask(predictions, keep)
    flat = tf.math.bincount(ids, minlength=num_classes**2, maxlength=num_classes**2, dtype=tf.int64)
    return tf.reshape(flat, [num_classes, num_classes])


def per_class_iou(cm):
    """Per-class IoU = TP / (TP + FP + FN); NaN for classes absent from GT and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.where(denom > 0, denom, 1.0), np.nan)


def mean_iou(cm):
    """Mean IoU over classes present in ground truth or prediction.

    Same rule as tf.compat.v1.metrics.mean_iou: a class whose TP + FP + FN is 0 (absent
    from both) is left out of the mean; a class present in only one of them counts with
    IoU 0. Returns 0.0 when no class is present at all.
    """
    iou = per_class_iou(cm)
    present = ~np.isnan(iou)
    if not present.any():
        return 0.0
    return float(iou[present].mean())


def pixel_accuracy(cm):
    """Overall pixel accuracy trace(cm) / sum(cm); 0.0 for an empty matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else 0.0


# ------------------------------------------------------------------------- calibration


class CalibrationAccumulator:
    """Streaming expected calibration error (Guo et al. 2017) over valid pixels.

    Bins are the equal-width intervals (i/M, (i+1)/M], i = 0..M-1 (a confidence of
    exactly 0 goes to the first bin). Per bin it keeps the pixel count, the sum of
    confidences (max_c P) and the number of correct pixels (argmax_c P == label), so
    accumulators over shards can be merged exactly.
    """

    def __init__(self, num_bins=NUM_ECE_BINS):
        self.num_bins = int(num_bins)
        self.edges = np.linspace(0.0, 1.0, self.num_bins + 1)
        self.reset()

    def reset(self):
        """Clears all bins."""
        self.counts = np.zeros(self.num_bins, np.int64)
        self.confidence_sum = np.zeros(self.num_bins, np.float64)
        self.correct_sum = np.zeros(self.num_bins, np.float64)

    def bin_index(self, confidence):
        """Bin of each confidence: the number of inner edges strictly below it."""
        idx = np.searchsorted(self.edges[1:-1], np.asarray(confidence, np.float64), side="left")
        return idx.astype(np.int64)

    def update_from_confidence(self, confidence, correct, valid=None):
        """Adds pixels given their confidence, correctness (bool/0-1) and optional mask."""
        confidence = np.asarray(confidence, np.float64).reshape(-1)
        correct = np.asarray(correct).reshape(-1).astype(np.float64)
        if valid is not None:
            keep = np.asarray(valid).reshape(-1).astype(bool)
            confidence, correct = confidence[keep], correct[keep]
        idx = self.bin_index(confidence)
        self.counts += np.bincount(idx, minlength=self.num_bins)
        self.confidence_sum += np.bincount(idx, weights=confidence, minlength=self.num_bins)
        self.correct_sum += np.bincount(idx, weights=correct, minlength=self.num_bins)

    def update(self, probs, labels, ignore_label=IGNORE_LABEL, valid=None):
        """Adds a batch of probabilities [..., C] against labels [...] (ignore skipped).

        `valid` is an optional extra mask (e.g. padding) with the labels' shape.
        """
        probs = np.asarray(probs)
        labels = np.asarray(labels).reshape(probs.shape[:-1])
        keep = labels != ignore_label
        if valid is not None:
            keep &= np.asarray(valid).reshape(labels.shape).astype(bool)
        self.update_from_confidence(probs.max(axis=-1), probs.argmax(axis=-1) == labels, valid=keep)

    def merge(self, other):
        """Adds another accumulator's bins (same number of bins) into this one."""
        if other.num_bins != self.num_bins:
            raise ValueError("Cannot merge accumulators with different bin counts.")
        self.counts += other.counts
        self.confidence_sum += other.confidence_sum
        self.correct_sum += other.correct_sum

    def reliability(self):
        """Per-bin arrays for a reliability diagram.

        Returns a dict of numpy arrays: 'lower' and 'upper' bin edges, 'count',
        'accuracy' and 'confidence' (per-bin means, NaN in empty bins) and 'gap'
        (|accuracy - confidence|, NaN in empty bins).
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.where(self.counts > 0, self.correct_sum / self.counts, np.nan)
            confidence = np.where(self.counts > 0, self.confidence_sum / self.counts, np.nan)
        return {
            "lower": self.edges[:-1].copy(),
            "upper": self.edges[1:].copy(),
            "count": self.counts.copy(),
            "accuracy": accuracy,
            "confidence": confidence,
            "gap": np.abs(accuracy - confidence),
        }

    def ece(self):
        """ECE = sum_b (n_b / N) |acc_b - conf_b|; 0.0 when nothing was accumulated."""
        total = self.counts.sum()
        if total == 0:
            return 0.0
        # n_b |acc_b - conf_b| = |correct_b - confidence_sum_b|, so empty bins add 0.
        return float(np.abs(self.correct_sum - self.confidence_sum).sum() / total)


def expected_calibration_error(
    probs, labels, num_bins=NUM_ECE_BINS, ignore_label=IGNORE_LABEL, valid=None
):
    """One-shot ECE of probabilities [..., C] against labels [...] over valid pixels."""
    acc = CalibrationAccumulator(num_bins)
    acc.update(probs, labels, ignore_label=ignore_label, valid=valid)
    return acc.ece()
