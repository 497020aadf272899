"""Backbone pretraining for the demo: labels, data, the checkpoint layout, caching."""

import dataclasses
import os

import gin
import numpy as np
import pytest
import tensorflow as tf

from wss import pretrain, pretraining
from wss.builders import demo
from wss.experiment import ModelSettings

SMALL = ModelSettings(width_multiplier=0.0625, middle_flow_units=1, aspp_depth=8, decoder_depth=8)
QUICK = pretraining.PretrainConfig(num_images=6, steps=3, batch_size=2)


def test_image_level_labels_mark_present_foreground_classes():
    masks = np.array([[[0, 1], [1, 255]], [[3, 3], [0, 5]], [[0, 0], [255, 0]]])
    expected = [[1, 0, 0, 0, 0], [0, 0, 1, 0, 1], [0, 0, 0, 0, 0]]
    np.testing.assert_array_equal(pretraining.image_level_labels(masks, 6), expected)


def test_pretrain_images_are_apart_from_train_and_val():
    items = demo.pretrain_items(0, 50)
    indices = {i for _, i, _ in items}
    assert not indices & {i for _, i, _ in demo.train_items(0)}
    assert not indices & {i for _, i, _ in demo.val_items(0)}
    images, targets = pretraining.pretrain_arrays(pretraining.PretrainConfig(num_images=5))
    assert images.shape == (5, demo.MAX_SIZE + 1, demo.MAX_SIZE + 1, 3)
    _, masks = demo.padded_arrays(demo.pretrain_items(0, 5))
    np.testing.assert_array_equal(targets, pretraining.image_level_labels(masks, demo.NUM_CLASSES))
    assert targets.sum(axis=1).min() >= 1  # every demo image holds an object


@pytest.mark.slow
def test_pretraining_lowers_the_classification_loss():
    images, targets = pretraining.pretrain_arrays(pretraining.PretrainConfig(num_images=4))
    model = pretraining.build_classifier(demo.NUM_CLASSES, SMALL)
    config = pretraining.PretrainConfig(steps=60, batch_size=4, learning_rate=3e-3)
    result = pretraining.pretrain(
        model, images, targets, config, log_every=10, print_fn=lambda *_: None
    )
    assert result["final_loss"] < 0.7 * result["first_loss"], result


def test_checkpoint_holds_the_backbone_and_initialises_a_model_like_imagenet(tmp_path):
    from wss.model import PseudoSegModel
    from wss.training import initialize

    model = pretraining.build_classifier(demo.NUM_CLASSES, SMALL)
    prefix = pretraining.save_backbone(model, str(tmp_path / "model.ckpt"))
    names = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
    scope = model.backbone.scope
    assert names == set(model.backbone.tf1_variable_map())
    assert all(n.startswith(scope + "/") for n in names) and f"{scope}/logits/weights" not in names

    target = PseudoSegModel(
        deeplab_config=dict(num_classes=demo.NUM_CLASSES, **dataclasses.asdict(SMALL))
    )
    target.build()
    before = {n: v.numpy() for n, v in target.tf1_variable_map().items()}
    message = initialize(target, prefix)
    assert message.startswith(f"initialised from {prefix}")
    source, loaded = model.tf1_variable_map(), target.tf1_variable_map()
    for name in names:
        np.testing.assert_array_equal(loaded[name].numpy(), source[name].numpy())
    # the heads start fresh, as from an ImageNet checkpoint
    for name in ("aspp0/weights", "logits/semantic/weights", f"{scope}/logits/weights"):
        np.testing.assert_array_equal(loaded[name].numpy(), before[name])


@pytest.mark.slow
def test_demo_backbone_is_built_once_per_settings(tmp_path):
    lines = []
    first = pretraining.ensure_demo_backbone(str(tmp_path), SMALL, QUICK, print_fn=lines.append)
    assert any(line.startswith("pretraining the demo backbone") for line in lines)
    assert os.path.exists(first + ".index")
    lines.clear()
    assert (
        pretraining.ensure_demo_backbone(str(tmp_path), SMALL, QUICK, print_fn=lines.append)
        == first
    )
    assert not lines  # cached
    other = pretraining.ensure_demo_backbone(
        str(tmp_path),
        SMALL,
        pretraining.PretrainConfig(num_images=6, steps=2, batch_size=2),
        print_fn=lines.append,
    )
    assert other != first and lines


def test_config_rejects_non_positive_values():
    with pytest.raises(ValueError, match="PretrainConfig.steps = 0"):
        pretraining.PretrainConfig(steps=0)
    with pytest.raises(ValueError, match="learning_rate"):
        pretraining.PretrainConfig(learning_rate=0.0)


def test_resolve_init_checkpoint():
    assert (
        pretraining.resolve_init_checkpoint("/ckpt/model.ckpt", "coco", "/data")
        == "/ckpt/model.ckpt"
    )
    assert pretraining.resolve_init_checkpoint(None, "demo", "/data") is None
    with pytest.raises(ValueError, match="only serves dataset 'demo'"):
        pretraining.resolve_init_checkpoint(pretraining.DEMO_BACKBONE, "pascal_voc_seg", "/data")


@pytest.mark.slow
def test_cli_writes_a_checkpoint_and_requires_output(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gin_file = os.path.join(repo, "gin", "demo.gin")
    params = [
        "ModelSettings.width_multiplier = 0.0625",
        "ModelSettings.middle_flow_units = 1",
        "PretrainConfig.num_images = 4",
        "PretrainConfig.steps = 2",
        "PretrainConfig.batch_size = 2",
    ]
    argv = ["pretrain", f"--gin_file={gin_file}"] + [f"--gin_param={p}" for p in params]
    try:
        with pytest.raises(ValueError, match="--output is required"):
            pretrain.main(argv)
        result = pretrain.main(argv + [f"--output={tmp_path}/b/model.ckpt"])
    finally:
        gin.clear_config()
    assert np.isfinite(result["final_loss"])
    assert os.path.exists(tmp_path / "b" / "model.ckpt.index")
