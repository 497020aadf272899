"""The PseudoSeg model: variable layout, the shared labeled pass, and real training steps."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.layers import (
    FusedBatchNorm,
    record_batch_norm_updates,
    repeated_batch_norm_updates,
)
from tests.conftest import official_manifest, tiny_deeplab_config
from wss.builders.demo import ensure_demo_dataset
from wss.data import augment, pipeline
from wss.method.options import MethodOptions
from wss.model import PseudoSegModel

# The tiny model (6 classes) with wider heads.
SMALL_HEADS = dict(aspp_depth=16, decoder_depth=16)
SMALL = tiny_deeplab_config(**SMALL_HEADS)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return ensure_demo_dataset(str(tmp_path_factory.mktemp("demo")))


def test_release_variable_list_maps_onto_pseudoseg_model():
    model = PseudoSegModel()
    model.build()
    manifest = official_manifest("xception_65")
    assert {n: tuple(v.shape) for n, v in model.tf1_variable_map().items()} == manifest


def test_shared_labeled_pass_equals_two_separate_passes():
    model = PseudoSegModel(deeplab_config=SMALL)
    model.build()
    x = tf.random.uniform([2, 33, 33, 3], 0, 255, seed=3)
    shared = model.deeplab.forward(x, training=True, dropout=False)
    seg = model.deeplab.segmentation_logits(
        model.deeplab.extract_features(x, training=True), training=True, dropout=False
    )
    ep = model.deeplab.extract_features(x, training=True)
    cls = model.deeplab.classify_pooled(model.deeplab.pool_features(ep), dropout=False)
    np.testing.assert_allclose(shared["logits"], seg, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shared["cls_logits"], cls, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "mode,source,backbone",
    [
        ("supervised", "fusion", "xception_65"),
        ("semi", "fusion", "xception_65"),
        ("weakly", "fusion", "xception_65"),
        ("semi", "decoder", "xception_65"),
        ("semi", "fusion", "resnet_v1_50_beta"),
        ("weakly", "fusion", "resnet_v1_50_beta"),
    ],
)
def test_training_steps_change_weights_with_finite_losses(demo_dir, mode, source, backbone):
    stream = pipeline.TrainingStream(demo_dir, "labeled", 33, dataset_name="demo", seed=0)
    labeled = pipeline.labeled_dataset(stream, 2)
    extra = pipeline.extra_dataset(
        dataclasses.replace(stream, split="train", seed=1),
        2,
        strong_config=augment.StrongConfig(cutout_half_size=8),
    )
    data = labeled if mode == "supervised" else tf.data.Dataset.zip((labeled, extra))
    model = PseudoSegModel(
        deeplab_config=tiny_deeplab_config(backbone=backbone, **SMALL_HEADS),
        options=MethodOptions(mode=mode, source=source),
    )
    model.build()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    history = model.fit(data, steps_per_epoch=3, epochs=1, verbose=0).history
    for name in ("total_loss", "sup_loss", "wd_loss"):
        assert np.isfinite(history[name][-1]) and history[name][-1] > 0, name
    if mode != "supervised":
        assert history["unsup_loss"][-1] > 0
    if model.options.uses_sgc:
        assert history["sgc_loss"][-1] > 0 and history["cls_loss"][-1] > 0
    else:
        assert history["sgc_loss"][-1] == 0
    changed = {
        p
        for p, v in before.items()
        if not np.array_equal(v, {w.path: w for w in model.trainable_variables}[p].numpy())
    }
    assert any("aspp0" in p for p in changed) and any("conv1_1" in p for p in changed)
    sgc_changed = any("/sgc/" in p for p in changed)
    assert sgc_changed == model.options.uses_sgc


@pytest.mark.parametrize("mode,kernels", [("semi", 80), ("weakly", 80), ("supervised", 79)])
def test_weight_decay_covers_the_release_kernels(mode, kernels):
    model = PseudoSegModel(options=MethodOptions(mode=mode))
    model.build()
    by_id = {id(v): n for n, v in model.tf1_variable_map().items()}
    names = {by_id[id(k)] for k in model.regularized_kernels()}
    assert len(names) == kernels
    assert all(n.endswith("/weights") for n in names)
    assert not any(n.startswith(("hyper_column/", "pixel_normalization/")) for n in names)
    assert ("xception_65/logits/weights" in names) == (mode != "supervised")


@pytest.mark.parametrize(
    "mode,backbone,head,sgc", [("semi", 4, 3, 2), ("weakly", 5, 3, 2), ("supervised", 1, 1, 0)]
)
def test_step_updates_moving_statistics_as_often_as_the_release(mode, backbone, head, sgc):
    """The release runs the labeled batch through the backbone twice (L_s; L_x / L_sa) and,
    in weakly mode, the weak view twice (L_x; pseudo labels): shared passes count twice."""
    model = PseudoSegModel(deeplab_config=SMALL, options=MethodOptions(mode=mode))
    model.build()
    x = tf.random.uniform([2, 33, 33, 3], 0, 255, seed=1)
    label = tf.zeros([2, 33, 33, 1], tf.int32)
    ones = tf.ones([2, 33, 33, 1], tf.int32)
    labels = tf.one_hot([1, 2], 5)
    labeled = dict(image=x, label=label, valid=ones, image_labels=labels)
    extra = dict(image=x, strong=x[::-1], label=label, valid=ones, image_labels=labels)
    data = labeled if mode == "supervised" else (labeled, extra)
    before = {n: v.numpy() for n, v in model.tf1_variable_map().items() if "moving_" in n}
    with record_batch_norm_updates() as counts:
        model.compute_losses(data, dropout=False)
    for name, var in model.tf1_variable_map().items():
        if "moving_" not in name:
            continue
        if name.startswith("xception_65/"):
            want = backbone
        elif name.startswith("pixel_normalization/"):
            want = sgc
        else:
            want = head
        assert counts.get(id(var), 0) == want, name
        assert np.array_equal(var.numpy(), before[name]) == (want == 0), name


def test_repeated_update_equals_sequential_updates():
    bn = FusedBatchNorm(momentum=0.9)
    bn.build((None, 4, 4, 3))
    x = tf.random.normal([2, 4, 4, 3], seed=2) * 3 + 1
    bn(x, training=True)
    bn(x, training=True)
    twice = bn.moving_variance.numpy()
    other = FusedBatchNorm(momentum=0.9)
    other.build((None, 4, 4, 3))
    with repeated_batch_norm_updates(other, 2):
        other(x, training=True)
    assert other.update_repeats == 1  # restored after the block
    np.testing.assert_allclose(other.moving_variance.numpy(), twice, rtol=1e-6)
    # Bessel-corrected batch variance, no debiasing: v = 1 - (1 - 0.9^2) (1 - var_unbiased).
    unbiased = np.var(x.numpy().reshape(-1, 3), axis=0, ddof=1)
    np.testing.assert_allclose(twice, 0.81 + 0.19 * unbiased, rtol=1e-5)
