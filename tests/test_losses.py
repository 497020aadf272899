"""Tests for wss.method.losses against numpy references and hand-computed values."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from wss.method import fusion, losses
from wss.method.options import MethodOptions


def np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_resize_bilinear_align_corners(x, out_h, out_w):
    """[B, h, w, C] -> [B, out_h, out_w, C], corners of input and output aligned."""
    _, h, w, _ = x.shape
    x = x.astype(np.float64)

    def coords(n_in, n_out):
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = np.arange(n_out) * scale
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = coords(h, out_h)
    x0, x1, fx = coords(w, out_w)
    top = (
        x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None]
        + x[:, y0][:, :, x1] * fx[None, None, :, None]
    )
    bottom = (
        x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None]
        + x[:, y1][:, :, x1] * fx[None, None, :, None]
    )
    return top * (1 - fy)[None, :, None, None] + bottom * fy[None, :, None, None]


def np_resize_nearest_tf1(x, out_h, out_w):
    """TF1 nearest neighbour, align_corners=False, half_pixel_centers=False."""
    h, w = x.shape[1:3]
    ys = np.minimum(np.floor(np.arange(out_h) * (h / out_h)).astype(int), h - 1)
    xs = np.minimum(np.floor(np.arange(out_w) * (w / out_w)).astype(int), w - 1)
    return x[:, ys][:, :, xs]


# ----------------------------------------------------------------------- helpers


def test_div_maybe_zero():
    assert losses.div_maybe_zero(3.0, 0.0).numpy() == 0.0
    assert losses.div_maybe_zero(3.0, 2.0).numpy() == pytest.approx(1.5)
    # Tiny positive divisors are clamped to 1e-5.
    assert losses.div_maybe_zero(3.0, 1e-7).numpy() == pytest.approx(3e5, rel=1e-5)


@pytest.mark.parametrize(
    "in_hw,out_hw", [((513, 513), (129, 129)), ((7, 10), (3, 4)), ((3, 4), (7, 9))]
)
def test_resize_mask_nearest_matches_tf1_rule(in_hw, out_hw):
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 3, size=(2,) + in_hw).astype(np.uint8)
    out = losses.resize_mask_nearest(mask, out_hw)
    assert out.dtype == tf.uint8 and out.shape == (2,) + out_hw
    np.testing.assert_array_equal(out.numpy(), np_resize_nearest_tf1(mask, *out_hw))


def test_resize_mask_nearest_keeps_rank_and_dtype():
    mask = np.zeros((1, 8, 8, 1), np.float32)
    mask[:, :5, :6] = 1.0
    out = losses.resize_mask_nearest(mask, (3, 3))
    assert out.shape == (1, 3, 3, 1) and out.dtype == tf.float32
    # Source rows/cols floor(i * 8/3) = 0, 2, 5: the last one is padding.
    np.testing.assert_array_equal(out.numpy()[0, ..., 0], [[1, 1, 1], [1, 1, 1], [0, 0, 0]])
    out_bool = losses.resize_mask_nearest(mask[..., 0] > 0, tf.constant([3, 3]))
    assert out_bool.dtype == tf.bool and out_bool.shape == (1, 3, 3)
    np.testing.assert_array_equal(out_bool.numpy(), out.numpy()[..., 0] > 0)


def test_resize_logits_bilinear_is_align_corners():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    out = losses.resize_logits_bilinear(x, (13, 9))
    np.testing.assert_allclose(out.numpy(), np_resize_bilinear_align_corners(x, 13, 9), atol=1e-5)
    # Corners are copied exactly with align_corners=True.
    np.testing.assert_allclose(
        out.numpy()[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]], atol=1e-6
    )


# ------------------------------------------------------------------------ L_s


def np_supervised_ce(logits, labels, ignore=255):
    up = np_resize_bilinear_align_corners(logits, *labels.shape[1:3])
    logp = np_log_softmax(up)
    keep = labels != ignore
    safe = np.where(keep, labels, 0)
    ce = -np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return (ce * keep).sum() / keep.sum() if keep.sum() else 0.0


def test_supervised_ce_matches_numpy_with_ignore_and_upsampling():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 5, 6, 4)).astype(np.float32) * 2
    labels = rng.integers(0, 4, size=(2, 17, 21)).astype(np.int32)
    labels[0, :4] = 255
    labels[1, :, -3:] = 255
    expected = np_supervised_ce(logits, labels)
    got = losses.supervised_ce(logits, labels)
    assert got.dtype == tf.float32 and got.shape == ()
    assert got.numpy() == pytest.approx(expected, rel=1e-5)
    # [B, H, W, 1] uint8 labels (as decoded from PNG) give the same value.
    got4 = losses.supervised_ce(logits, labels[..., None].astype(np.uint8))
    assert got4.numpy() == pytest.approx(expected, rel=1e-5)


def test_supervised_ce_ignore_pixels_do_not_count():
    logits = np.zeros((1, 2, 2, 3), np.float32)
    logits[0, 0, 0] = [5.0, 0.0, 0.0]
    labels = np.array([[[0, 255], [255, 255]]])
    got = losses.supervised_ce(logits, labels, upsample_logits=False)
    expected = -np_log_softmax(logits[0, 0, 0])[0]
    assert got.numpy() == pytest.approx(expected, rel=1e-6)


def test_supervised_ce_all_ignored_is_zero():
    logits = np.random.default_rng(3).normal(size=(1, 3, 3, 4)).astype(np.float32)
    labels = np.full((1, 9, 9), 255, np.int32)
    assert losses.supervised_ce(logits, labels).numpy() == 0.0


def test_supervised_ce_mixed_precision_and_gradient():
    rng = np.random.default_rng(4)
    logits = tf.constant(rng.normal(size=(1, 3, 3, 4)), tf.float16)
    labels = rng.integers(0, 4, size=(1, 9, 9))
    labels[0, 0] = 255
    with tf.GradientTape() as tape:
        tape.watch(logits)
        loss = losses.supervised_ce(logits, labels)
    assert loss.dtype == tf.float32
    grad = tape.gradient(loss, logits)
    assert grad is not None and np.isfinite(grad.numpy().astype(np.float32)).all()


# ------------------------------------------------------------------------ L_u


@pytest.fixture
def unlabeled_batch():
    rng = np.random.default_rng(5)
    weak_p = rng.normal(size=(2, 4, 5, 3)).astype(np.float32) * 2
    weak_m = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    strong = rng.normal(size=(2, 4, 5, 3)).astype(np.float32) * 2
    valid = np.ones((2, 4, 5), np.float32)
    valid[0, :, -2:] = 0.0
    valid[1, -1] = 0.0
    probs = fusion.fuse(weak_p, weak_m, MethodOptions()).numpy()
    return probs, strong, valid, weak_p, weak_m


def test_unlabeled_ce_soft_matches_numpy(unlabeled_batch):
    probs, strong, valid, _, _ = unlabeled_batch
    ce = -(probs * np_log_softmax(strong)).sum(-1)
    expected = (ce * valid).sum() / valid.sum()
    got = losses.unlabeled_ce(probs, strong, valid)
    assert got.numpy() == pytest.approx(expected, rel=1e-5)
    # Weight scales linearly; a [B, h, w, 1] mask is accepted.
    got2 = losses.unlabeled_ce(probs, strong, valid[..., None], weight=2.5)
    assert got2.numpy() == pytest.approx(2.5 * expected, rel=1e-5)


def test_unlabeled_ce_hard_labels(unlabeled_batch):
    probs, strong, valid, _, _ = unlabeled_batch
    hard = probs.argmax(-1)
    ce = -np.take_along_axis(np_log_softmax(strong), hard[..., None], -1)[..., 0]
    expected = (ce * valid).sum() / valid.sum()
    got = losses.unlabeled_ce(probs, strong, valid, soft=False)
    assert got.numpy() == pytest.approx(expected, rel=1e-5)


def test_threshold_zeroes_sum_but_not_divisor(unlabeled_batch):
    probs, strong, valid, _, _ = unlabeled_batch
    conf = probs.max(-1)
    t = float(np.median(conf[valid > 0]))
    score = (conf >= t).astype(np.float32)
    assert 0 < (score * valid).sum() < valid.sum()
    ce = -(probs * np_log_softmax(strong)).sum(-1)
    expected = (ce * valid * score).sum() / valid.sum()
    got = losses.unlabeled_ce(probs, strong, valid, confidence_threshold=t)
    assert got.numpy() == pytest.approx(expected, rel=1e-5)
    # Dividing by the thresholded count instead would give a strictly larger value.
    assert got.numpy() < (ce * valid * score).sum() / (valid * score).sum()
    # A threshold above every confidence zeroes the loss (divisor still > 0).
    assert losses.unlabeled_ce(probs, strong, valid, confidence_threshold=1.01).numpy() == 0.0


def test_unlabeled_ce_hand_example():
    # Two valid pixels, one padding pixel; uniform strong logits -> CE = log(2) each
    # for any P; the confident pixel (0.9) survives t=0.8, the other (0.6) does not.
    probs = np.array([[[[0.9, 0.1], [0.6, 0.4], [1.0, 0.0]]]], np.float32)
    strong = np.zeros((1, 1, 3, 2), np.float32)
    valid = np.array([[[1.0, 1.0, 0.0]]], np.float32)
    got = losses.unlabeled_ce(probs, strong, valid)
    assert got.numpy() == pytest.approx(np.log(2.0), rel=1e-6)
    got_t = losses.unlabeled_ce(probs, strong, valid, confidence_threshold=0.8)
    assert got_t.numpy() == pytest.approx(np.log(2.0) / 2, rel=1e-6)


def test_unlabeled_ce_no_valid_pixels_is_zero(unlabeled_batch):
    probs, strong, valid, _, _ = unlabeled_batch
    assert losses.unlabeled_ce(probs, strong, np.zeros_like(valid)).numpy() == 0.0


def test_unlabeled_gradient_only_reaches_strong_logits(unlabeled_batch):
    _, strong, valid, weak_p, weak_m = unlabeled_batch
    p, m, z = (tf.constant(x) for x in (weak_p, weak_m, strong))
    for soft in (True, False):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([p, m, z])
            probs = fusion.fuse(p, m, MethodOptions(soft_labels=soft))
            loss = losses.unlabeled_ce(probs, z, valid, confidence_threshold=0.3, soft=soft)
        gp, gm, gz = tape.gradient(loss, [p, m, z])
        for g in (gp, gm):
            assert g is None or np.all(g.numpy() == 0)
        assert gz is not None and np.abs(gz.numpy()).sum() > 0


# ----------------------------------------------------------------- L_x and L2


def test_classification_loss_matches_numpy():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(3, 20)).astype(np.float32) * 3
    labels = (rng.random((3, 20)) < 0.2).astype(np.float32)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    expected = -(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()
    got = losses.classification_loss(logits, labels)
    assert got.numpy() == pytest.approx(expected, rel=1e-5)
    # The classifier's [B, 1, 1, K] output is accepted too.
    got4 = losses.classification_loss(logits[:, None, None], labels)
    assert got4.numpy() == pytest.approx(expected, rel=1e-5)
    # Hand value: logit 0 -> log 2 whatever the label.
    zero = losses.classification_loss(np.zeros((2, 3)), np.eye(2, 3))
    assert zero.numpy() == pytest.approx(np.log(2.0), rel=1e-6)


def test_weight_decay_is_half_sum_of_squares():
    w1 = tf.Variable([[1.0, -2.0], [3.0, 0.5]])
    w2 = keras.Variable(np.full((3, 1, 1, 2), 2.0, np.float32))
    expected = 4e-5 * ((1 + 4 + 9 + 0.25) + 6 * 4.0) / 2
    got = losses.weight_decay([w1, w2], 4e-5)
    assert got.dtype == tf.float32
    assert got.numpy() == pytest.approx(expected, rel=1e-6)
    assert losses.weight_decay([], 4e-5).numpy() == 0.0
    with tf.GradientTape() as tape:
        loss = losses.weight_decay([w1])
    np.testing.assert_allclose(tape.gradient(loss, w1).numpy(), 4e-5 * w1.numpy(), rtol=1e-6)
