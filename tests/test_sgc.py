"""Self-attention Grad-CAM (spec section 3.3) against a numpy reference, masks, gradients."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import TINY_MODEL
from wss.method.losses import supervised_ce
from wss.method.sgc import SelfAttentionGradCAM, attention_valid_mask

NUM_CLASSES = 4  # cam has 3 foreground channels
C1, C2, DIM = 6, 5, 8
B, H, W = 2, 4, 5


def make_sgc(seed=0):
    sgc = SelfAttentionGradCAM(NUM_CLASSES, attention_dim=DIM)
    sgc.build(C1 + C2)
    rng = np.random.default_rng(seed)
    for name, var in sgc.tf1_variable_map().items():
        if name.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, var.shape)
        else:
            value = rng.normal(0, 0.5, var.shape)
        var.assign(value.astype("float32"))
    return sgc


def make_inputs(seed=1, valid=True):
    rng = np.random.default_rng(seed)
    f1 = rng.normal(0, 1, (B, H, W, C1)).astype("float32")
    f2 = rng.normal(0, 1, (B, H, W, C2)).astype("float32")
    cam = rng.uniform(0, 1, (B, H, W, NUM_CLASSES - 1)).astype("float32")
    mask = np.ones((B, H, W, 1), "float32")
    if valid:
        mask[0, :, 3:] = 0.0  # padding on the right of item 0
        mask[1, 3:, :] = 0.0  # padding at the bottom of item 1
    return f1, f2, cam, mask


def numpy_sgc(sgc, f1, f2, cam, valid, training):
    """The SGC math written out, in float32 like the release (the -1e9 is added in float32)."""
    weights = {k: v.numpy() for k, v in sgc.tf1_variable_map().items()}
    feats = np.concatenate([f1, f2], axis=3)  # order as given, no resize (sizes match)
    b, h, w, _ = cam.shape
    q = (feats @ weights["hyper_column/query/weights"][0, 0]).reshape(b, h * w, -1)
    k = (feats @ weights["hyper_column/key/weights"][0, 0]).reshape(b, h * w, -1)
    att = (q @ k.transpose(0, 2, 1)) / np.float32(np.sqrt(DIM))
    att = att.astype(np.float32)
    if valid is not None:
        v = valid.reshape(b, h * w, 1)
        att = att + (np.float32(1.0) - v @ v.transpose(0, 2, 1)) * np.float32(-1e9)
    att = att.astype(np.float64)
    att = np.exp(att - att.max(axis=2, keepdims=True))
    att /= att.sum(axis=2, keepdims=True)
    value = cam.reshape(b, h * w, -1).astype(np.float64)
    score = (att @ value + value).reshape(b, h, w, -1)
    score = np.concatenate([2.0 - score.max(axis=3, keepdims=True), score], axis=3)
    y = score @ weights["pixel_normalization/weights"][0, 0].astype(np.float64)
    if training:
        mean, var = y.mean(axis=(0, 1, 2)), y.var(axis=(0, 1, 2))
    else:
        mean = weights["pixel_normalization/BatchNorm/moving_mean"]
        var = weights["pixel_normalization/BatchNorm/moving_variance"]
    return (y - mean) / np.sqrt(var + 1e-3) + weights["pixel_normalization/BatchNorm/beta"]


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("use_valid", [False, True])
def test_matches_numpy_reference(training, use_valid):
    sgc = make_sgc()
    f1, f2, cam, mask = make_inputs(valid=use_valid)
    valid = mask if use_valid else None
    out = sgc(
        [tf.constant(f1), tf.constant(f2)],
        tf.constant(cam),
        None if valid is None else tf.constant(valid),
        training=training,
    )
    ref = numpy_sgc(sgc, f1, f2, cam, valid, training)
    assert out.shape == (B, H, W, NUM_CLASSES) and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4, atol=1e-4)


def test_reference_is_sensitive_to_attention_and_concat_order():
    """Guards the reference itself: swapped hypercolumn order or no mask give other logits."""
    sgc = make_sgc()
    f1, f2, cam, mask = make_inputs()
    out = sgc([tf.constant(f1), tf.constant(f2)], tf.constant(cam), tf.constant(mask)).numpy()
    assert not np.allclose(out, numpy_sgc(sgc, f1, f2, cam, None, False), atol=1e-3)
    # Same total channels, other order: the layer must not be order-agnostic.
    other = sgc([tf.constant(f2), tf.constant(f1)], tf.constant(cam), tf.constant(mask)).numpy()
    assert not np.allclose(out, other, atol=1e-3)


def test_training_mode_updates_moving_mean_with_decay_0999():
    sgc = make_sgc()
    f1, f2, cam, mask = make_inputs()
    before = sgc.pixel_normalization.bn.moving_mean.numpy().copy()
    weights = {k: v.numpy() for k, v in sgc.tf1_variable_map().items()}
    sgc([tf.constant(f1), tf.constant(f2)], tf.constant(cam), tf.constant(mask), training=True)
    after = sgc.pixel_normalization.bn.moving_mean.numpy()
    # Batch mean of the pre-BN activations, recovered from the reference's training output.
    ref = numpy_sgc(sgc, f1, f2, cam, mask, training=True)
    assert np.all(np.isfinite(ref))
    assert not np.allclose(before, after)
    # moving = 0.999 * moving + 0.001 * batch_mean  ->  batch_mean = (after - 0.999 before) / 0.001
    batch_mean = (after - 0.999 * before) / 0.001
    y_mean = _pre_bn_mean(weights, f1, f2, cam, mask)
    np.testing.assert_allclose(batch_mean, y_mean, rtol=1e-2, atol=1e-2)
    # Inference mode leaves the statistics alone.
    sgc([tf.constant(f1), tf.constant(f2)], tf.constant(cam), tf.constant(mask), training=False)
    np.testing.assert_array_equal(sgc.pixel_normalization.bn.moving_mean.numpy(), after)


def _pre_bn_mean(weights, f1, f2, cam, mask):
    sgc_like = type(
        "S",
        (),
        {
            "tf1_variable_map": lambda self: {
                **{k: tf.constant(v) for k, v in weights.items()},
                "pixel_normalization/BatchNorm/moving_mean": tf.zeros(NUM_CLASSES),
                "pixel_normalization/BatchNorm/moving_variance": tf.fill([NUM_CLASSES], 1.0 - 1e-3),
                "pixel_normalization/BatchNorm/beta": tf.zeros(NUM_CLASSES),
            }
        },
    )()
    y = numpy_sgc(sgc_like, f1, f2, cam, mask, training=False)
    return y.mean(axis=(0, 1, 2))


def test_padding_does_not_leak_into_valid_pixels():
    sgc = make_sgc()
    f1, f2, cam, mask = make_inputs()
    base = sgc([tf.constant(f1), tf.constant(f2)], tf.constant(cam), tf.constant(mask)).numpy()
    rng = np.random.default_rng(5)
    invalid = mask[..., 0] == 0
    f1b, f2b, camb = f1.copy(), f2.copy(), cam.copy()
    f1b[invalid] = rng.normal(0, 10, f1b[invalid].shape)
    f2b[invalid] = rng.normal(0, 10, f2b[invalid].shape)
    camb[invalid] = rng.uniform(0, 1, camb[invalid].shape)
    out = sgc([tf.constant(f1b), tf.constant(f2b)], tf.constant(camb), tf.constant(mask)).numpy()
    valid = ~invalid
    np.testing.assert_allclose(out[valid], base[valid], rtol=1e-5, atol=1e-5)
    assert not np.allclose(out[invalid], base[invalid], atol=1e-3)  # the change was real
    # Without the mask the same change does reach the valid pixels.
    nomask = sgc([tf.constant(f1), tf.constant(f2)], tf.constant(cam)).numpy()
    nomask_b = sgc([tf.constant(f1b), tf.constant(f2b)], tf.constant(camb)).numpy()
    assert not np.allclose(nomask[valid], nomask_b[valid], atol=1e-4)


@pytest.mark.parametrize("training", [False, True])
def test_gradients_reach_only_sgc_variables(training):
    sgc = make_sgc()
    f1, f2, cam, mask = make_inputs()
    f1, f2, cam = tf.constant(f1), tf.constant(f2), tf.constant(cam)
    labels = tf.constant(np.random.default_rng(3).integers(0, NUM_CLASSES, (B, H, W)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([f1, f2, cam])
        logits = sgc([f1, f2], cam, tf.constant(mask), training=training)
        loss = supervised_ce(logits, labels, upsample_logits=False)
    own = {
        "key": sgc.key.kernel,
        "query": sgc.query.kernel,
        "pixel_normalization": sgc.pixel_normalization.kernel,
        "beta": sgc.pixel_normalization.bn.beta,
    }
    for name, var in own.items():
        grad = tape.gradient(loss, var)
        assert grad is not None and np.abs(grad.numpy()).sum() > 0, name
    for tensor in (f1, f2, cam):
        grad = tape.gradient(loss, tensor)
        assert grad is None or not np.any(grad.numpy())
    trainable = {v.path for v in sgc.trainable_variables}
    assert len(trainable) == 4  # key, query, pixel_normalization kernel, beta (no gamma)
    del tape


def test_tf1_variable_map_and_config_round_trip():
    sgc = make_sgc()
    names = sgc.tf1_variable_map()
    assert set(names) == {
        "hyper_column/key/weights",
        "hyper_column/query/weights",
        "pixel_normalization/weights",
        "pixel_normalization/BatchNorm/beta",
        "pixel_normalization/BatchNorm/moving_mean",
        "pixel_normalization/BatchNorm/moving_variance",
    }
    assert tuple(names["hyper_column/key/weights"].shape) == (1, 1, C1 + C2, DIM)
    assert tuple(names["hyper_column/query/weights"].shape) == (1, 1, C1 + C2, DIM)
    assert tuple(names["pixel_normalization/weights"].shape) == (1, 1, NUM_CLASSES, NUM_CLASSES)
    for n in ("beta", "moving_mean", "moving_variance"):
        assert tuple(names[f"pixel_normalization/BatchNorm/{n}"].shape) == (NUM_CLASSES,)
    assert len({id(v) for v in names.values()}) == 6
    assert len(sgc.weights) == 6  # nothing outside the map

    config = sgc.get_config()
    assert config["num_classes"] == NUM_CLASSES and config["attention_dim"] == DIM
    clone = SelfAttentionGradCAM.from_config(config)
    assert clone.get_config() == config
    clone.build(C1 + C2)
    assert {n: tuple(v.shape) for n, v in clone.tf1_variable_map().items()} == {
        n: tuple(v.shape) for n, v in names.items()
    }
    for name, var in clone.tf1_variable_map().items():
        var.assign(names[name])
    f1, f2, cam, mask = make_inputs()
    args = ([tf.constant(f1), tf.constant(f2)], tf.constant(cam), tf.constant(mask))
    np.testing.assert_allclose(clone(*args).numpy(), sgc(*args).numpy(), rtol=1e-6, atol=1e-6)
    assert SelfAttentionGradCAM(NUM_CLASSES).attention_dim == 128  # spec default
    assert SelfAttentionGradCAM(NUM_CLASSES).name == "sgc"


def test_hypercolumn_is_resized_bilinear_align_corners_to_cam_size():
    sgc = make_sgc()
    f1, f2, cam, mask = make_inputs(valid=False)
    small = tf.compat.v1.image.resize_bilinear(tf.constant(f2), [2, 3], align_corners=True)
    up = tf.compat.v1.image.resize_bilinear(small, [H, W], align_corners=True)
    out = sgc([tf.constant(f1), small], tf.constant(cam))
    ref = sgc([tf.constant(f1), up], tf.constant(cam))
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "full,decoder,cam_size",
    [((65, 65), (17, 17), (5, 5)), ((33, 49), (9, 13), (3, 4)), ((40, 30), (10, 8), (3, 2))],
)
def test_attention_valid_mask_is_nearest_twice(full, decoder, cam_size):
    rng = np.random.default_rng(0)
    valid = np.ones((2,) + full + (1,), "float32")
    valid[0, :, full[1] // 2 + 1 :] = 0
    valid[1, full[0] // 3 :] = 0
    valid[1] *= rng.integers(0, 2, valid[1].shape)  # irregular pattern
    got = attention_valid_mask(tf.constant(valid), decoder, cam_size).numpy()
    step = tf.compat.v1.image.resize_nearest_neighbor(tf.constant(valid), decoder)
    ref = tf.compat.v1.image.resize_nearest_neighbor(step, cam_size).numpy()
    assert got.shape == (2,) + cam_size + (1,)
    np.testing.assert_array_equal(got, ref)
    # Boolean input works too.
    got_bool = attention_valid_mask(tf.constant(valid > 0), decoder, cam_size).numpy()
    np.testing.assert_array_equal(got_bool, ref)


def test_model_sgc_loss_trains_only_the_sgc():
    from deeplab_ext.xception import CAM_END_POINT
    from wss.model import PseudoSegModel

    model = PseudoSegModel(deeplab_config=dict(num_classes=5, **TINY_MODEL))
    model.build()
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (2, 33, 33, 3)).astype("float32"))
    valid = np.ones((2, 33, 33, 1), "float32")
    valid[1, :, 20:] = 0
    labels = rng.integers(0, 5, (2, 33, 33))
    labels[valid[..., 0] == 0] = 255
    with tf.GradientTape() as tape:
        end_points = model.deeplab.extract_features(images, training=True)
        decoder_size = model.deeplab.decoder_size(end_points)
        out = model.cam_and_sgc(
            end_points,
            tf.constant(valid),
            decoder_size,
            image_labels=tf.ones([2, 4]),
            dropout=False,
        )
        loss = supervised_ce(out["sgc_logits"], tf.constant(labels))
    assert out["sgc_logits"].shape == (2, 3, 3, 5)
    assert end_points[CAM_END_POINT].shape[1:3] == (3, 3)
    assert np.abs(out["cam"].numpy()).sum() > 0
    sgc_vars = model.sgc.trainable_variables
    deeplab_vars = model.deeplab.trainable_variables
    assert len(sgc_vars) == 4 and len(deeplab_vars) > 50
    grads = tape.gradient(loss, sgc_vars + deeplab_vars)
    for var, grad in zip(sgc_vars, grads[: len(sgc_vars)]):
        assert grad is not None and np.abs(grad.numpy()).sum() > 0, var.path
    leaked = [
        v.path
        for v, g in zip(deeplab_vars, grads[len(sgc_vars) :])
        if g is not None and np.any(g.numpy())
    ]
    assert leaked == []
