"""Training options that change what a step or a run does, each checked by its effect:
the L_u warm-up, the weak branch's SGC batch-norm mode, excluding the labeled images
from the extra stream, and starting from a Keras `.weights.h5`."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import NUM_CLASSES, tiny_deeplab_config
from tests.data import data_test_utils as u
from wss.data.augment import AugmentConfig, StrongConfig
from wss.experiment import (
    Experiment,
    ModelSettings,
    PretrainConfig,
    RunConfig,
    TrainLoop,
)
from wss.method.options import MethodOptions
from wss.model import PseudoSegModel
from wss.training import initialize, make_input


def _model(**options):
    model = PseudoSegModel(deeplab_config=tiny_deeplab_config(), options=MethodOptions(**options))
    model.build()
    return model


def _batches(size=33):
    """(labeled, extra) batches of two random images with random masks."""
    images = tf.random.uniform([2, size, size, 3], 0, 255, seed=4)
    label = tf.random.uniform([2, size, size, 1], 0, NUM_CLASSES, tf.int32, seed=5)
    image_labels = tf.constant([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1]], tf.float32)
    labeled = dict(image=images[::-1], label=label, valid=tf.ones_like(label))
    labeled["image_labels"] = image_labels
    extra = dict(image=images, strong=images[:, ::-1], label=label, valid=tf.ones_like(label))
    extra["image_labels"] = image_labels
    return labeled, extra


def _moving_statistics(layer):
    return {name: v.numpy() for name, v in layer.tf1_variable_map().items() if "moving_" in name}


def test_unlabeled_warmup_ramps_the_weight_of_l_u_linearly_from_zero():
    """L_u's weight at optimizer step k is unlabeled_weight * min(1, k / warm-up steps);
    the other loss terms do not depend on it."""
    model = _model(mode="semi", source="decoder", unlabeled_weight=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    data = _batches()

    def losses(warmup, step):
        model.options = dataclasses.replace(model.options, unlabeled_warmup_steps=warmup)
        model.optimizer.iterations.assign(step)
        with model.frozen_statistics():
            out, _ = model.compute_losses(data, dropout=False)
        return {name: float(value) for name, value in out.items()}

    full = losses(0, 0)  # no warm-up: unlabeled_weight from the first step
    assert full["consistency"] > 0
    assert losses(0, 3)["consistency"] == pytest.approx(full["consistency"], rel=1e-6)
    for step, ramp in ((0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (9, 1.0)):
        warm = losses(4, step)
        assert warm["consistency"] == pytest.approx(ramp * full["consistency"], rel=1e-5, abs=1e-8)
        assert warm["semantic"] == pytest.approx(full["semantic"], rel=1e-6)


@pytest.mark.parametrize("bn_training", [True, False])
def test_sgc_batch_norm_mode_in_the_weak_branch(bn_training):
    """False: the weak branch's SGC runs its batch norm on the moving statistics, so its
    logits are the inference-mode SGC's and pixel_normalization's statistics stay put;
    True (the release): batch statistics, and they move."""
    model = _model(mode="semi", sgc_bn_training_in_weak_branch=bn_training)
    _, extra = _batches()
    sgc_stats = _moving_statistics(model.sgc)
    assert sgc_stats and all(name.startswith("pixel_normalization/") for name in sgc_stats)

    # The inference-mode SGC, before the branch's training-mode pass moves the backbone's
    # statistics.
    end_points = model.deeplab.extract_features(extra["image"], training=False)
    decoder_size = model.deeplab.decoder_size(end_points)
    inference = model.cam_and_sgc(end_points, extra["valid"], decoder_size, sgc_bn_training=False)
    branch = model.pseudo_labels(extra["image"], extra["valid"], dropout=False)
    moved = [
        name
        for name, value in _moving_statistics(model.sgc).items()
        if not np.array_equal(value, sgc_stats[name])
    ]
    if bn_training:
        assert not np.allclose(branch["sgc_logits"], inference["sgc_logits"], atol=1e-3)
        assert sorted(moved) == sorted(sgc_stats)
    else:
        np.testing.assert_allclose(branch["sgc_logits"], inference["sgc_logits"], atol=1e-6)
        assert moved == []


def _grey_records(folder, count, size=40):
    """A 'train' split of `count` flat grey images: image i has grey level 10 (i + 1), so
    a crop of it (any scale or flip) says which record it came from."""
    records = []
    for i in range(count):
        image = np.full((size, size, 3), 10 * (i + 1), np.uint8)
        label = np.full((size, size), i % NUM_CLASSES, np.uint8)
        records.append(u.encoded(f"img{i:02d}", image, label))
    u.write_records(folder, "train", records)


def _levels(images):
    """The record indices whose grey levels appear in a batch of weak views (the padding,
    127.5, is no record's level)."""
    values = set(np.unique(np.round(images.numpy())).tolist()) - {128.0}
    return {int(v) // 10 - 1 for v in values}


@pytest.mark.parametrize("exclude", [True, False])
def test_exclude_labeled_from_extra_through_the_training_input(tmp_path, exclude):
    """make_input with exclude_labeled_from_extra: the extra stream never shows a labeled
    image (without it, it does: the release feeds them to both streams)."""
    _grey_records(tmp_path, 12)
    labeled = [1, 4, 7, 10]
    id_list = tmp_path / "labeled.txt"
    id_list.write_text("".join(f"img{i:02d}\n" for i in labeled))
    exp = Experiment(
        dataset_name="demo",
        labeled_split="train",
        labeled_id_list=str(id_list),
        extra_split="train",
        exclude_labeled_from_extra=exclude,
        crop_size=33,
        labeled_batch_size=2,
        extra_batch_size=2,
    )
    config = RunConfig(
        experiment=exp,
        model=ModelSettings(),
        method=MethodOptions(mode="semi"),
        loop=TrainLoop(),
        augment=AugmentConfig(),
        strong=StrongConfig(),
        pretrain=PretrainConfig(),
    )
    dataset = make_input(tf.distribute.get_strategy(), config, str(tmp_path))
    batches = iter(dataset)
    seen_labeled, seen_extra = set(), set()
    for _ in range(16):  # 32 images per stream: every record more than once
        lab, extra = next(batches)
        seen_labeled |= _levels(lab["image"])
        seen_extra |= _levels(extra["image"])
    assert seen_labeled == set(labeled)
    if exclude:
        assert seen_extra == set(range(12)) - set(labeled)
    else:
        assert seen_extra == set(range(12))


def test_initialize_from_a_keras_weights_file(tmp_path):
    """Experiment.init_checkpoint = '....weights.h5': DeepLab's weights come from the file
    bit for bit; the SGC (not part of DeepLabV3Plus) keeps its own."""
    source = _model()
    rng = np.random.default_rng(0)
    for var in source.deeplab.weights:
        var.assign(var + rng.normal(0, 0.1, var.shape).astype("float32"))
    path = str(tmp_path / "init.weights.h5")
    source.deeplab.save_weights(path)

    target = _model()
    sgc_before = {name: v.numpy() for name, v in target.sgc.tf1_variable_map().items()}
    assert initialize(target, path) == f"loaded Keras weights {path}"
    loaded, saved = target.deeplab.tf1_variable_map(), source.deeplab.tf1_variable_map()
    assert set(loaded) == set(saved)
    for name, var in saved.items():
        np.testing.assert_array_equal(loaded[name].numpy(), var.numpy(), err_msg=name)
    for name, var in target.sgc.tf1_variable_map().items():
        np.testing.assert_array_equal(var.numpy(), sgc_before[name], err_msg=name)
    images = tf.random.uniform([1, 33, 33, 3], 0, 255, seed=1)
    np.testing.assert_allclose(
        target.deeplab.predict_logits(images), source.deeplab.predict_logits(images), atol=1e-6
    )
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        initialize(target, str(tmp_path / "missing.weights.h5"))
