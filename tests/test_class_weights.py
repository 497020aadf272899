"""Class weights: the weighted supervised CE against numpy, and inverse-frequency weights
counted from a split's records."""

import json

import numpy as np
import pytest
import tensorflow as tf

from wss.builders import tfrecord_writer
from wss.data import class_stats, image_io, records
from wss.method import losses


def np_weighted_ce(logits, labels, weights, ignore=255):
    """sum_p w[y_p] * CE_p / sum_p w[y_p] over pixels with y_p != ignore (float64)."""
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    log_p = x - np.log(np.exp(x).sum(-1, keepdims=True))
    keep = labels != ignore
    y = np.where(keep, labels, 0)
    ce = -np.take_along_axis(log_p, y[..., None], -1)[..., 0]
    w = np.asarray(weights, np.float64)[y] * keep
    return (ce * w).sum() / w.sum()


def _example(seed=0, b=2, h=5, w=7, c=4):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(b, h, w, c)).astype(np.float32) * 3
    labels = rng.integers(0, c, size=(b, h, w)).astype(np.int32)
    labels[rng.random((b, h, w)) < 0.2] = 255
    return logits, labels


def test_weighted_ce_matches_numpy_reference():
    logits, labels = _example()
    weights = [0.5, 2.0, 0.0, 3.0]
    got = losses.supervised_ce(
        logits, labels[..., None], upsample_logits=False, class_weights=weights
    )
    want = np_weighted_ce(logits, labels, weights)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    unweighted = losses.supervised_ce(logits, labels, upsample_logits=False).numpy()
    assert abs(got.numpy() - unweighted) > 1e-3  # the weights do change the loss
    # Only relative weights matter; numpy array and tensor weights work inside tf.function.
    scaled = tf.function(
        lambda logits, y: losses.supervised_ce(
            logits, y, upsample_logits=False, class_weights=tf.constant(weights) * 10.0
        )
    )
    np.testing.assert_allclose(scaled(logits, labels).numpy(), want, rtol=1e-5)


def test_all_ones_weights_equal_unweighted_loss_with_upsampling():
    logits, _ = _example(1, h=3, w=4)
    _, labels = _example(2, h=9, w=10)
    plain = losses.supervised_ce(logits, labels)
    ones = losses.supervised_ce(logits, labels, class_weights=np.ones(4))
    np.testing.assert_allclose(ones.numpy(), plain.numpy(), rtol=1e-6)


def test_weighted_ce_edge_cases():
    logits, labels = _example(3)
    only_zero_weight = np.where(labels == 255, 255, 2)
    assert (
        losses.supervised_ce(
            logits, only_zero_weight, upsample_logits=False, class_weights=[1, 1, 0, 1]
        ).numpy()
        == 0.0
    )
    with pytest.raises(ValueError, match="3 entries for 4 classes"):
        losses.supervised_ce(logits, labels, upsample_logits=False, class_weights=[1.0, 1.0, 1.0])
    # Gradients flow and vanish for logits of pixels whose class weight is 0.
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = losses.supervised_ce(
            x, labels, upsample_logits=False, class_weights=[1.0, 1.0, 0.0, 1.0]
        )
    grad = tape.gradient(loss, x).numpy()
    assert np.isfinite(grad).all()
    assert np.abs(grad[labels == 2]).max() == 0.0 and np.abs(grad[labels == 1]).max() > 0


def test_inverse_frequency_weights_hand_example():
    counts = [6, 3, 0, 1]  # total 10, C = 4
    raw = class_stats.inverse_frequency_weights(counts, normalize=False)
    np.testing.assert_allclose(raw, [10 / 24, 10 / 12, 0.0, 10 / 4])
    norm = class_stats.inverse_frequency_weights(counts)  # mean over present = 1.25
    np.testing.assert_allclose(norm, [1 / 3, 2 / 3, 0.0, 2.0])
    np.testing.assert_allclose(class_stats.inverse_frequency_weights([5, 5]), [1.0, 1.0])
    with pytest.raises(ValueError, match="no labeled pixels"):
        class_stats.inverse_frequency_weights([0, 0])


def _record(name, label=None, h=2, w=3):
    image = np.zeros((h, w, 3), np.uint8)
    return records.EncodedRecord(
        filename=name,
        image_bytes=image_io.encode_image(image, "png"),
        image_format="png",
        height=h,
        width=w,
        label_bytes=None if label is None else image_io.encode_label(np.array(label, np.uint8)),
    )


def _identity(x):
    return x


def test_weights_from_a_split_and_json_round_trip(tmp_path):
    recs = [
        _record("a", [[0, 0, 1], [1, 255, 0]]),  # class 0: 3, class 1: 2
        _record("b", [[0, 0, 0], [0, 3, 255]]),  # class 0: 4, class 3: 1
        _record("c"),  # unlabeled: counts nothing
    ]
    tfrecord_writer.write_split(
        str(tmp_path), "train", recs, _identity, num_shards=2, num_workers=1, progress=False
    )
    counts = class_stats.class_pixel_counts(str(tmp_path), "train", 4)
    np.testing.assert_array_equal(counts, [7, 2, 0, 1])
    sub = class_stats.class_pixel_counts(str(tmp_path), "train", 4, id_list=["a"])
    np.testing.assert_array_equal(sub, [3, 2, 0, 0])
    weights, got_counts = class_stats.class_weights_from_split(str(tmp_path), "train", 4)
    np.testing.assert_array_equal(got_counts, counts)
    raw = np.array([10 / 28, 10 / 8, 0.0, 10 / 4])
    np.testing.assert_allclose(weights, raw / raw[[0, 1, 3]].mean())
    path = class_stats.save_class_weights(
        str(tmp_path / "w.json"), weights, ["bg", "a", "b", "c"], counts, split="train"
    )
    saved = json.loads(open(path).read())
    assert saved["pixel_counts"] == [7, 2, 0, 1] and saved["class_names"][3] == "c"
    np.testing.assert_allclose(class_stats.load_class_weights(path, 4), weights)
    with pytest.raises(ValueError, match="4 class weights for 3 classes"):
        class_stats.load_class_weights(path, 3)
