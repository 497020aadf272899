"""Grad-CAM (spec section 3.2) against the release's per-class tf.gradients loop."""

import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.deeplab import DeepLabV3Plus
from tests.conftest import TINY_MODEL
from wss.method.gradcam import grad_cam

NUM_CLASSES = 5  # 4 foreground classes


@pytest.fixture(scope="module")
def head():
    """A real tiny DeepLabV3Plus whose classification head has non-trivial weights."""
    model = DeepLabV3Plus(num_classes=NUM_CLASSES, **TINY_MODEL)
    model.build()
    rng = np.random.default_rng(1)
    kernel = model.cls_logits.kernel
    model.cls_logits.kernel.assign(rng.normal(0, 0.5, kernel.shape).astype("float32"))
    # Biases of both signs so that the predicted labels mix 0 and 1.
    model.cls_logits.bias.assign(np.array([2.0, -2.0, 0.5, -0.5], "float32"))
    return model


def classifier(model):
    return lambda pooled, dropout: model.classify_pooled(pooled, dropout)


def random_features(batch=3, height=5, width=6, channels=128, seed=0):
    rng = np.random.default_rng(seed)
    # Mixed signs, so the ReLU matters; one channel offset so maps are not flat.
    feats = rng.normal(0, 1, (batch, height, width, channels)).astype("float32")
    return tf.constant(feats)


def release_grad_cam(features, model, labels):
    """The release's way: loop over classes, gradient of sum_b logits[b, c] w.r.t. A itself."""
    features = tf.convert_to_tensor(features)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(features)
        pooled = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
        logits = model.classify_pooled(pooled, False)
        per_class = [tf.reduce_sum(logits[:, c]) for c in range(logits.shape[1])]
    maps = []
    for c, target in enumerate(per_class):
        grad = tape.gradient(target, features)  # [B, H, W, K], w.r.t. A (not pooled)
        weights = tf.reduce_mean(grad, axis=[1, 2], keepdims=True)  # [B, 1, 1, K]
        maps.append(tf.nn.relu(tf.reduce_sum(weights * features, axis=3)))
    del tape
    cam = tf.stack(maps, axis=3).numpy().astype(np.float64)
    cam = cam * np.asarray(labels, np.float64)[:, None, None, :]
    peak = cam.max(axis=(1, 2), keepdims=True)
    out = np.where(peak > 0, cam / np.maximum(1e-5, peak), 0.0)
    return out, logits.numpy()


def test_matches_release_per_class_loop(head):
    feats = random_features(batch=3)
    labels = np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 1, 1, 1]], "float32")
    cam, logits, used = grad_cam(feats, classifier(head), tf.constant(labels))
    ref, ref_logits = release_grad_cam(feats, head, labels)
    assert cam.shape == (3, 5, 6, 4)
    np.testing.assert_allclose(logits.numpy(), ref_logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(used.numpy(), labels)
    np.testing.assert_allclose(cam.numpy(), ref, rtol=1e-4, atol=1e-5)
    # The reference is non-trivial: every labelled class has a map peaking exactly at 1.
    peaks = cam.numpy().max(axis=(1, 2))
    np.testing.assert_allclose(peaks[labels > 0], 1.0, rtol=1e-6)
    assert cam.numpy().min() >= 0.0
    # Several distinct values per map (not just a 0/1 mask).
    assert len(np.unique(np.round(cam.numpy()[0, :, :, 0], 4))) > 5


def test_matches_release_loop_on_non_square_and_single_item(head):
    feats = random_features(batch=1, height=3, width=7, seed=3)
    labels = np.ones([1, 4], "float32")
    cam, _, _ = grad_cam(feats, classifier(head), labels)
    ref, _ = release_grad_cam(feats, head, labels)
    np.testing.assert_allclose(cam.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_matches_release_loop_inside_tf_function(head):
    feats = random_features(batch=2, seed=5)
    labels = tf.ones([2, 4])
    fn = tf.function(lambda f, labels: grad_cam(f, classifier(head), labels)[0])
    ref, _ = release_grad_cam(feats, head, labels.numpy())
    np.testing.assert_allclose(fn(feats, labels).numpy(), ref, rtol=1e-4, atol=1e-5)


def test_unlabelled_classes_are_zero_and_zero_maps_stay_finite(head):
    feats = random_features(batch=2, seed=7).numpy()
    feats[1] = 0.0  # all-zero activation: CAM max is 0, must give 0 (not NaN)
    labels = np.array([[0, 1, 0, 1], [1, 1, 1, 1]], "float32")
    cam, _, _ = grad_cam(tf.constant(feats), classifier(head), labels)
    cam = cam.numpy()
    assert np.all(np.isfinite(cam))
    assert np.all(cam[0, :, :, 0] == 0) and np.all(cam[0, :, :, 2] == 0)
    assert cam[0, :, :, 1].max() == pytest.approx(1.0)
    assert np.all(cam[1] == 0)


def test_predicted_labels_when_no_image_labels(head):
    feats = random_features(batch=4, seed=11)
    cam, logits, used = grad_cam(feats, classifier(head), None)
    predicted = (tf.sigmoid(logits).numpy() >= 0.5).astype("float32")
    np.testing.assert_array_equal(used.numpy(), predicted)
    assert 0 < predicted.sum() < predicted.size  # both kinds of classes present
    ref, _ = release_grad_cam(feats, head, predicted)
    np.testing.assert_allclose(cam.numpy(), ref, rtol=1e-4, atol=1e-5)
    assert np.all(cam.numpy().transpose(0, 3, 1, 2)[predicted == 0] == 0)
    assert np.all(cam.numpy().transpose(0, 3, 1, 2)[predicted == 1].max(axis=(1, 2)) > 0.99)


def test_dropout_switch_is_forwarded_to_the_head():
    seen = []
    kernel = tf.constant(np.random.default_rng(0).normal(size=(8, 3)).astype("float32"))

    def head_fn(pooled, dropout):
        seen.append(dropout)
        return tf.reshape(pooled, [-1, 8]) @ kernel

    grad_cam(tf.random.normal([2, 4, 4, 8]), head_fn, tf.ones([2, 3]), dropout=True)
    grad_cam(tf.random.normal([2, 4, 4, 8]), head_fn, tf.ones([2, 3]))
    assert seen == [True, False]


def test_cam_is_stop_gradient_but_logits_are_not(head):
    feats = random_features(batch=2, seed=13)
    weights = tf.random.normal([2, 5, 6, 4])
    kernel = head.cls_logits.kernel
    for labels in (tf.ones([2, 4]), None):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(feats)
            cam, logits, used = grad_cam(feats, classifier(head), labels)
            cam_loss = tf.reduce_sum(cam * weights) + tf.reduce_sum(used)
            logit_loss = tf.reduce_sum(logits * tf.constant([1.0, -2.0, 3.0, 0.5]))
        assert tf.reduce_sum(tf.abs(cam)).numpy() > 0
        for target in (feats, kernel, head.cls_logits.bias):
            grad = tape.gradient(cam_loss, target)
            assert grad is None or not np.any(grad.numpy())
        g_kernel = tape.gradient(logit_loss, kernel)
        assert g_kernel is not None and np.abs(g_kernel.numpy()).sum() > 0
        g_feats = tape.gradient(logit_loss, feats)
        assert g_feats is not None and np.abs(g_feats.numpy()).sum() > 0
        del tape
