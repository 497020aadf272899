"""get_config round trips: `cls.from_config(layer.get_config())` rebuilds the same layer.

For each layer the clone must have the same options, the same variables (TF1 names and
shapes, which is what checkpoints bind to) and, once the weights are copied over, give
the same outputs. A get_config that forgets an option fails here.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.aspp import ASPP
from deeplab_ext.decoder import Decoder
from deeplab_ext.layers import ConvBN
from deeplab_ext.resnet import ResNetV1
from deeplab_ext.xception import Xception
from tests.conftest import TINY_MODEL, tiny_deeplab_config
from wss.method.options import MethodOptions
from wss.model import PseudoSegModel


def _json(config):
    """A config as it comes back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config))


def _shapes(layer):
    return {name: tuple(var.shape) for name, var in layer.tf1_variable_map().items()}


def _randomize(layer, seed=0):
    """Non-trivial values everywhere, batch-norm moving statistics included."""
    rng = np.random.default_rng(seed)
    for name, var in layer.tf1_variable_map().items():
        if name.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, var.shape)
        else:
            value = rng.normal(0, 0.3, var.shape)
        var.assign(value.astype("float32"))


def _clone(layer, input_shape):
    """The layer rebuilt from its config (through JSON, as a saved config travels), built
    for `input_shape`, with the layer's weights copied in by TF1 name."""
    clone = layer.__class__.from_config(_json(layer.get_config()))
    clone.build(input_shape)
    assert _json(clone.get_config()) == _json(layer.get_config())
    assert _shapes(clone) == _shapes(layer)
    target = clone.tf1_variable_map()
    for name, var in layer.tf1_variable_map().items():
        target[name].assign(var)
    return clone


def _assert_same(a, b):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_allclose(x.numpy(), y.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(filters=4, kernel_size=3, stride=2, rate=1, activation="relu", kernel_stddev=0.09),
        dict(kernel_size=3, rate=2, depthwise=True, use_bn=False, regularize=False),
        dict(filters=3, kernel_size=1, bn_scale=False, bn_decay=0.9, bn_epsilon=1e-5),
    ],
)
def test_conv_bn_round_trip(kwargs):
    layer = ConvBN(name="conv", **kwargs)
    layer.build((None, 9, 9, 5))
    _randomize(layer)
    clone = _clone(layer, (None, 9, 9, 5))
    x = tf.random.uniform([2, 9, 9, 5], seed=1)
    _assert_same(clone(x, training=False), layer(x, training=False))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(atrous_rates=(1, 2), depth=8, dropout_keep_prob=0.5, bn_decay=0.99),
        dict(atrous_rates=(3,), depth=4, use_separable_conv=False, add_image_level_feature=False),
    ],
)
def test_aspp_round_trip(kwargs):
    layer = ASPP(**kwargs)
    layer.build((None, 5, 5, 6))
    _randomize(layer)
    clone = _clone(layer, (None, 5, 5, 6))
    x = tf.random.uniform([2, 5, 5, 6], seed=2)
    _assert_same(clone(x, training=False), layer(x, training=False))


@pytest.mark.parametrize("separable", [True, False])
def test_decoder_round_trip(separable):
    layer = Decoder(depth=8, projection_depth=4, use_separable_conv=separable, bn_decay=0.99)
    shapes = ((None, 5, 5, 6), (None, 9, 9, 3))
    layer.build(shapes)
    _randomize(layer)
    clone = _clone(layer, shapes)
    inputs = (tf.random.uniform([1, 5, 5, 6], seed=3), tf.random.uniform([1, 9, 9, 3], seed=4))
    _assert_same(clone(inputs, training=False), layer(inputs, training=False))


def test_xception_round_trip():
    layer = Xception(
        output_stride=8,
        multi_grid=(1, 2, 4),
        width_multiplier=TINY_MODEL["width_multiplier"],
        middle_flow_units=TINY_MODEL["middle_flow_units"],
        bn_decay=0.99,
    )
    layer.build((None, None, None, 3))
    _randomize(layer)
    clone = _clone(layer, (None, None, None, 3))
    images = tf.random.uniform([1, 33, 33, 3], 0, 255, seed=5)
    out, ref = clone(images, training=False), layer(images, training=False)
    assert set(out) == set(ref)
    _assert_same(out, {name: ref[name] for name in out})


@pytest.mark.parametrize("variant", ["resnet_v1_50_beta", "resnet_v1_50"])
def test_resnet_round_trip(variant):
    layer = ResNetV1(
        variant, output_stride=8, multi_grid=(1, 2, 1), width_multiplier=0.0625, bn_decay=0.9
    )
    layer.build((None, None, None, 3))
    _randomize(layer)
    clone = _clone(layer, (None, None, None, 3))
    assert clone.scope == layer.scope and clone.name == layer.name
    images = tf.random.uniform([1, 33, 33, 3], 0, 255, seed=6)
    out, ref = clone(images, training=False), layer(images, training=False)
    assert set(out) == set(ref)
    _assert_same(out, {name: ref[name] for name in out})


def test_pseudoseg_model_from_config_builds_an_equal_model():
    """Every option, the class weights, the bias multiplier and the name survive
    get_config -> JSON -> from_config; the clone has the same variables and, with the same
    weights, the same predictions and SGC logits."""
    options = MethodOptions(
        mode="weakly",
        source="sgc",
        gamma=0.3,
        temperature=0.7,
        logit_norm=False,
        norm_form="pixel",
        soft_labels=False,
        confidence_threshold=0.2,
        unlabeled_weight=0.5,
        unlabeled_warmup_steps=7,
        attention_dim=16,
        sgc_bn_training_in_weak_branch=False,
        weight_decay=1e-4,
    )
    model = PseudoSegModel(
        deeplab_config=tiny_deeplab_config(output_stride=8, atrous_rates=(12, 24, 36)),
        options=options,
        class_weights=[1.0, 2.0, 0.5, 1.0, 3.0, 1.5],
        bias_gradient_multiplier=1.0,
        name="student",
    )
    model.build()
    clone = PseudoSegModel.from_config(_json(model.get_config()))
    clone.build()
    assert clone.options == options
    assert clone.name == "student" and clone.num_classes == 6
    assert clone.class_weights == model.class_weights
    assert clone.bias_gradient_multiplier == 1.0
    assert _json(clone.deeplab.get_config()) == _json(model.deeplab.get_config())
    assert _json(clone.get_config()) == _json(model.get_config())
    assert [(w.path, tuple(w.shape)) for w in clone.weights] == [
        (w.path, tuple(w.shape)) for w in model.weights
    ]
    assert _shapes(clone) == _shapes(model)
    assert clone.sgc.attention_dim == 16

    _randomize(model)
    for name, var in clone.tf1_variable_map().items():
        var.assign(model.tf1_variable_map()[name])
    images = tf.random.uniform([1, 33, 33, 3], 0, 255, seed=7)
    valid = tf.ones([1, 33, 33, 1], tf.int32)
    labels = tf.constant([[1.0, 0.0, 1.0, 0.0, 0.0]])
    _assert_same(clone.deeplab.predict_logits(images), model.deeplab.predict_logits(images))
    ours = clone.pseudo_labels(images, valid, labels, dropout=False, weak_training=False)
    theirs = model.pseudo_labels(images, valid, labels, dropout=False, weak_training=False)
    _assert_same(ours["sgc_logits"], theirs["sgc_logits"])
    _assert_same(ours["probs"], theirs["probs"])
