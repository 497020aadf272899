"""Tests for wss.evaluation.metrics (confusion-matrix mIoU, ECE) and wss.method.monitors
(the training monitors)."""

import numpy as np
import pytest
import tensorflow as tf

from wss.evaluation import metrics
from wss.method import monitors

# Hand example, 3 classes, 255 = ignore.
#   labels       predictions
#   0 0 1 255    0 1 1 2
#   1 1 2 2      1 0 2 0
HAND_LABELS = np.array([[0, 0, 1, 255], [1, 1, 2, 2]])
HAND_PREDS = np.array([[0, 1, 1, 2], [1, 0, 2, 0]])
HAND_CM = np.array(
    [
        [1, 1, 0],  # gt 0: one right, one predicted 1
        [1, 2, 0],  # gt 1: two right, one predicted 0
        [1, 0, 1],
    ]
)  # gt 2: one right, one predicted 0


def test_confusion_matrix_hand_example():
    cm = metrics.confusion_matrix(HAND_LABELS, HAND_PREDS, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, HAND_CM)
    cm_tf = metrics.confusion_matrix_tf(tf.constant(HAND_LABELS), tf.constant(HAND_PREDS), 3)
    np.testing.assert_array_equal(cm_tf.numpy(), HAND_CM)


def test_iou_and_accuracy_hand_example():
    # IoU_c = TP / (row + col - TP): class 0: 1/(2+3-1), class 1: 2/(3+3-2), class 2: 1/(2+1-1).
    iou = metrics.per_class_iou(HAND_CM)
    np.testing.assert_allclose(iou, [1 / 4, 2 / 4, 1 / 2])
    assert metrics.mean_iou(HAND_CM) == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert metrics.pixel_accuracy(HAND_CM) == pytest.approx(4 / 7)


def test_absent_classes_are_excluded_from_mean():
    # Class 3 never appears: NaN IoU and left out of the mean.
    cm = np.zeros((4, 4), np.int64)
    cm[:3, :3] = HAND_CM
    iou = metrics.per_class_iou(cm)
    assert np.isnan(iou[3])
    assert metrics.mean_iou(cm) == pytest.approx(metrics.mean_iou(HAND_CM))
    # A class only predicted (never in GT) counts with IoU 0.
    cm[0, 3] = 1
    assert metrics.per_class_iou(cm)[3] == 0.0
    assert metrics.mean_iou(cm) == pytest.approx((1 / 5 + 0.5 + 0.5 + 0.0) / 4)
    assert metrics.mean_iou(np.zeros((3, 3))) == 0.0
    assert metrics.pixel_accuracy(np.zeros((3, 3))) == 0.0


def test_mean_iou_matches_tf_v1_metric_and_streams():
    rng = np.random.default_rng(0)
    num_classes = 6
    labels = rng.integers(0, 5, size=(3, 9, 11))  # class 5 never in GT
    preds = rng.integers(0, 4, size=(3, 9, 11))  # classes 4, 5 never predicted
    labels[0, :2] = 255
    streamed = sum(metrics.confusion_matrix(labels[i], preds[i], num_classes) for i in range(3))
    np.testing.assert_array_equal(streamed, metrics.confusion_matrix(labels, preds, num_classes))

    graph = tf.Graph()
    with graph.as_default():
        lab = tf.constant(labels.reshape(-1))
        keep = tf.not_equal(lab, 255)
        miou, update = tf.compat.v1.metrics.mean_iou(
            tf.boolean_mask(lab, keep),
            tf.boolean_mask(tf.constant(preds.reshape(-1)), keep),
            num_classes,
        )
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.local_variables_initializer())
            sess.run(update)
            reference = sess.run(miou)
    assert metrics.mean_iou(streamed) == pytest.approx(reference, rel=1e-6)


def test_confusion_matrix_rejects_out_of_range():
    with pytest.raises(ValueError):
        metrics.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0, 254]), 3)
    with pytest.raises(ValueError):
        metrics.confusion_matrix(np.array([0, 1]), np.array([0]), 3)


# ------------------------------------------------------------------------- ECE


def np_ece_reference(confidence, correct, num_bins=15):
    """Textbook Guo et al. loop over (lower, upper] bins."""
    edges = np.linspace(0, 1, num_bins + 1)
    total = confidence.size
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            ece += in_bin.sum() / total * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return ece


def test_ece_hand_example():
    # Confidences 0.95, 0.95 (one right), 0.55, 0.55 (both right), 0.3 (wrong):
    # ECE = 2/5 |0.5 - 0.95| + 2/5 |1 - 0.55| + 1/5 |0 - 0.3| = 0.42.
    acc = metrics.CalibrationAccumulator()
    acc.update_from_confidence([0.95, 0.95, 0.55, 0.55, 0.3], [1, 0, 1, 1, 0])
    assert acc.ece() == pytest.approx(0.42)
    rel = acc.reliability()
    assert rel["count"].sum() == 5
    assert rel["count"][14] == 2 and rel["count"][8] == 2 and rel["count"][4] == 1
    assert rel["accuracy"][14] == pytest.approx(0.5)
    assert rel["confidence"][8] == pytest.approx(0.55)
    assert np.isnan(rel["accuracy"][0]) and np.isnan(rel["gap"][0])
    np.testing.assert_allclose(rel["upper"] - rel["lower"], 1 / 15)


def test_ece_from_probs_with_ignore_and_valid():
    probs = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]], np.float32)
    labels = np.array([[0, 0, 255, 1]])
    valid = np.array([[1, 1, 1, 0]])
    # Kept pixels: conf 0.9 correct, conf 0.8 wrong; bins 13 and 11.
    got = metrics.expected_calibration_error(probs, labels, valid=valid)
    assert got == pytest.approx(0.5 * 0.1 + 0.5 * 0.8, rel=1e-6)


def test_ece_matches_reference_and_streaming():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 10, 12, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 5, size=(4, 10, 12))
    labels[:, :3] = 255
    keep = labels != 255
    conf = probs.max(-1)[keep]
    correct = (probs.argmax(-1) == labels)[keep].astype(float)
    expected = np_ece_reference(conf, correct)

    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(expected)
    streamed = metrics.CalibrationAccumulator()
    halves = [metrics.CalibrationAccumulator() for _ in range(2)]
    for i in range(4):
        streamed.update(probs[i], labels[i])
        halves[i // 2].update(tf.constant(probs[i : i + 1]), labels[i : i + 1])
    assert streamed.ece() == pytest.approx(expected)
    halves[0].merge(halves[1])
    np.testing.assert_array_equal(halves[0].counts, streamed.counts)
    assert halves[0].ece() == pytest.approx(expected)
    streamed.reset()
    assert streamed.ece() == 0.0


def test_ece_bins_are_right_closed():
    acc = metrics.CalibrationAccumulator(15)
    edges = acc.edges
    # Each inner edge belongs to the bin below it; 0 and 1 to the first and last bins.
    np.testing.assert_array_equal(acc.bin_index(edges), [0] + list(range(15)))
    np.testing.assert_array_equal(acc.bin_index(edges[1:] - 1e-9), range(15))
    np.testing.assert_array_equal(acc.bin_index(edges[:-1] + 1e-9), range(15))


# -------------------------------------------------------------------- monitors


def test_mean_class_accuracy_hand_example():
    # Per-class accuracies 1/2, 2/3, 1/2 (class 3 absent, 255 ignored).
    got = monitors.mean_class_accuracy(HAND_PREDS, HAND_LABELS, 4)
    assert got.numpy() == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3, rel=1e-6)
    got_zero = monitors.mean_class_accuracy(HAND_PREDS, HAND_LABELS, 4, absent="zero")
    assert got_zero.numpy() == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 4, rel=1e-6)
    hits, total = monitors.class_accuracy_counts(HAND_PREDS, HAND_LABELS, 4)
    np.testing.assert_array_equal(hits.numpy(), [1, 2, 1, 0])
    np.testing.assert_array_equal(total.numpy(), [2, 3, 2, 0])


def test_mean_class_accuracy_zero_mode_matches_tf_v1_metric():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, size=200)
    preds = rng.integers(0, 5, size=200)
    graph = tf.Graph()
    with graph.as_default():
        acc, update = tf.compat.v1.metrics.mean_per_class_accuracy(
            tf.constant(labels), tf.constant(preds), 5
        )
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.local_variables_initializer())
            sess.run(update)
            reference = sess.run(acc)
    got = monitors.mean_class_accuracy(preds, labels, 5, absent="zero")
    assert got.numpy() == pytest.approx(reference, rel=1e-6)


def test_mean_max_prob():
    probs = np.array([[[0.9, 0.1], [0.6, 0.4]], [[0.5, 0.5], [0.2, 0.8]]], np.float32)
    assert monitors.mean_max_prob(probs).numpy() == pytest.approx((0.9 + 0.6 + 0.5 + 0.8) / 4)
    valid = np.array([[1, 0], [0, 1]])
    assert monitors.mean_max_prob(probs, valid).numpy() == pytest.approx((0.9 + 0.8) / 2)
