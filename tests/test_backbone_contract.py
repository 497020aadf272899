"""Every registered backbone keeps the contract of deeplab_ext.backbone, and a new backbone
plugs into DeepLabV3Plus and PseudoSeg through the registry alone.

The contract checks run each backbone (tiny) on a 64 x 64 image: every end point it
returns has the channels and stride it declares, the end points the heads read exist
(the decoder's at strides 4 and 8), its TF1 names cover each weight once and its
weight-decay kernels are weights of its own. Each backbone gets only the options it
supports (tests/conftest.py's UNSUPPORTED_BACKBONE_OPTIONS) and rejects the others, set
to anything but their default, with an error that says what to do instead.
"""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext import backbone as backbone_lib
from deeplab_ext.backbone import (
    Backbone,
    BackboneError,
    build_backbone,
    register_backbone,
    registered_backbones,
    reject_middle_flow_units,
    reject_options,
)
from deeplab_ext.deeplab import DeepLabV3Plus
from tests.conftest import (
    NUM_CLASSES,
    TINY_HUB_ARCHITECTURES,
    TINY_MODEL,
    UNSUPPORTED_BACKBONE_OPTIONS,
    unsupported_backbone_options,
)
from wss import program
from wss.errors import ConfigError
from wss.experiment import ModelSettings, parse_run_config
from wss.method.options import MethodOptions
from wss.model import PseudoSegModel, build_model

SIZE = 64
OUTPUT_STRIDE = 16
# The options DeepLabV3Plus passes every factory, at the tiny model's sizes.
TINY_OPTIONS = dict(
    output_stride=OUTPUT_STRIDE,
    multi_grid=None,
    width_multiplier=TINY_MODEL["width_multiplier"],
    middle_flow_units=TINY_MODEL["middle_flow_units"],
    bn_decay=None,
)
# What DeepLabV3Plus passes for an option left at its default, and a value other than it.
DEFAULTS = {
    key: inspect.signature(DeepLabV3Plus).parameters[key].default
    for key in ("multi_grid", "width_multiplier", "middle_flow_units")
}
NON_DEFAULTS = {"multi_grid": (1, 2, 4), "width_multiplier": 0.5, "middle_flow_units": 1}
# What a rejection of each option tells the user to do instead.
FIXES = {
    "multi_grid": "leave multi_grid None",
    "width_multiplier": "size the encoder with backbone_options['architecture'] or a preset",
    "middle_flow_units": "middle_flow_units is an Xception option; leave it None",
}
# Backbone-specific options (DeepLabV3Plus's `backbone_options`) a backbone needs here.
EXTRA_OPTIONS = {
    # A tiny MiT whose last level is at stride 16 (keras-hub encoders run at their own).
    "keras_hub": {
        "architecture": {
            **TINY_HUB_ARCHITECTURES["MiTBackbone"],
            "layerwise_strides": [4, 2, 2, 1],
        },
        "image_size": SIZE,
    },
}


def tiny_options(name):
    """TINY_OPTIONS and EXTRA_OPTIONS for backbone `name`, those it does not support at
    their defaults (as DeepLabV3Plus passes them when left unset)."""
    unsupported = {key: DEFAULTS[key] for key in unsupported_backbone_options(name)}
    return {**TINY_OPTIONS, **unsupported, **EXTRA_OPTIONS.get(name, {})}


@pytest.mark.parametrize("name", registered_backbones())
def test_registered_backbone_keeps_the_contract(name):
    check_contract(name)


def check_contract(name):
    """Builds backbone `name` (tiny), runs it and checks every member of the contract."""
    if name == "keras_hub":
        pytest.importorskip("keras_hub")  # the optional [hub] extra
    backbone = build_backbone(name, **tiny_options(name))
    assert isinstance(backbone, Backbone)
    backbone.build((None, None, None, 3))
    images = tf.random.uniform([1, SIZE, SIZE, 3], 0, 255, seed=1)
    end_points = backbone(backbone.preprocess(images), training=False)

    for point, tensor in end_points.items():
        stride = backbone.end_point_stride(point)
        assert tuple(tensor.shape) == (1, SIZE // stride, SIZE // stride, tensor.shape[3]), point
        assert tensor.shape[3] == backbone.end_point_channels(point), point
    read = {
        backbone.feature_end_point,
        backbone.cam_end_point,
        backbone.decoder_end_point(4),
        backbone.decoder_end_point(8),
    } | set(backbone.hypercolumn_end_points)
    assert read <= set(end_points)
    assert backbone.end_point_stride(backbone.feature_end_point) == OUTPUT_STRIDE
    assert backbone.end_point_stride(backbone.decoder_end_point(4)) == 4
    assert backbone.end_point_stride(backbone.decoder_end_point(8)) == 8
    with pytest.raises(ValueError):
        backbone.decoder_end_point(2)
    assert 0.0 < backbone.classifier_keep_prob <= 1.0

    weights = {id(w) for w in backbone.weights}
    names = backbone.tf1_variable_map()
    if names:  # {} is allowed for backbones without TF1 checkpoints
        assert sorted(id(v) for v in names.values()) == sorted(weights)
        assert all(n.startswith(backbone.scope + "/") for n in names)
    kernels = backbone.regularized_kernels()
    assert kernels and {id(k) for k in kernels} <= {id(w) for w in backbone.trainable_weights}


@pytest.mark.parametrize(
    "name,option",
    [
        (name, key)
        for name in registered_backbones()
        for prefix, keys in UNSUPPORTED_BACKBONE_OPTIONS.items()
        if name.startswith(prefix)
        for key in keys
    ],
)
def test_backbone_rejects_a_set_option_it_does_not_support(name, option, monkeypatch):
    """An option that does not apply to a backbone, set, is an error naming it and the fix
    (never a setting without effect); it comes before any layer is built."""

    def no_layer(self, *args, **kwargs):
        raise AssertionError(f"{type(self).__name__} built before the option was checked")

    monkeypatch.setattr(Backbone, "__init__", no_layer)
    options = {**tiny_options(name), option: NON_DEFAULTS[option]}
    with pytest.raises(BackboneError) as error:
        build_backbone(name, **options)
    message = str(error.value)
    assert message.startswith(f"backbone {name!r} does not support the options ['{option}']")
    assert f"{option}={NON_DEFAULTS[option]!r}" in message and FIXES[option] in message


@pytest.mark.parametrize(
    "backbone,binding",
    [
        ("resnet_v1_50_beta", "ModelSettings.middle_flow_units = 1"),
        ("keras_hub", "ModelSettings.width_multiplier = 0.5"),
    ],
)
def test_a_model_setting_the_backbone_rejects_is_one_error_line(backbone, binding, clear_gin):
    """A program reports the setting (gin) a backbone rejects as one `error: ...` line."""
    config = parse_run_config([], [f"ModelSettings.backbone = {backbone!r}", binding])
    with pytest.raises(BackboneError) as error:
        build_model(NUM_CLASSES, config.model, config.method)
    setting, value = binding.split(" = ")
    option = setting.split(".")[1]
    message = program.user_message(error.value)  # printed as `error: <message>`
    assert message == str(error.value) and "\n" not in message
    assert message.startswith(
        f"backbone {backbone!r} does not support the options ['{option}'] ({option}={value})"
    )
    assert FIXES[option] in message


def test_unknown_backbone_and_options_are_errors_naming_them():
    with pytest.raises(ValueError, match="'resnet_v3'.*registered: .*xception_65"):
        build_backbone("resnet_v3", **TINY_OPTIONS)
    with pytest.raises(ValueError, match="'xception_65'.*'preset'"):
        build_backbone("xception_65", preset="x", **TINY_OPTIONS)
    with pytest.raises(ValueError, match="output_stride"):
        DeepLabV3Plus(backbone_options={"output_stride": 8})
    with pytest.raises(ConfigError, match="ModelSettings.backbone = 'resnet_v3'.*xception_65"):
        ModelSettings(backbone="resnet_v3")


class ToyBackbone(Backbone):
    """Three strided convs (strides 4, 8, 16): the smallest backbone of the contract."""

    feature_end_point = "top"
    cam_end_point = "top"
    hypercolumn_end_points = ("top", "mid")

    def __init__(self, width=8, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.convs = {}
        for i, (point, stride) in enumerate((("low", 4), ("mid", 2), ("top", 2))):
            self.convs[point] = keras.layers.Conv2D(
                width * 2**i, stride, strides=stride, padding="same", activation="relu", name=point
            )
            self.declare_end_point(point, width * 2**i, 4 * 2**i)

    @property
    def scope(self):
        return "toy"

    def preprocess(self, images):
        return tf.cast(images, self.compute_dtype) / 255.0

    def build(self, input_shape):
        channels = input_shape[-1]
        for conv in self.convs.values():
            conv.build((None, None, None, channels))
            channels = conv.filters

    def call(self, images, training=False):
        x, out = images, {}
        for point, conv in self.convs.items():
            x = out[point] = conv(x)
        return out

    def decoder_end_point(self, decoder_output_stride):
        if decoder_output_stride not in (4, 8):
            raise ValueError(f"toy has no decoder end point at stride {decoder_output_stride}")
        return "low" if decoder_output_stride == 4 else "mid"

    def regularized_kernels(self):
        return [conv.kernel for conv in self.convs.values()]

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@pytest.fixture
def toy_registered(monkeypatch):
    """Registers 'toy' (as a backbone module would, with the options it rejects) for this
    test only."""
    monkeypatch.setattr(backbone_lib, "_REGISTRY", dict(backbone_lib._REGISTRY))
    monkeypatch.setitem(UNSUPPORTED_BACKBONE_OPTIONS, "toy", ("middle_flow_units",))

    @register_backbone("toy")
    def build_toy(
        name,
        output_stride=16,
        multi_grid=None,
        width_multiplier=1.0,
        middle_flow_units=None,
        bn_decay=None,
        width=8,
        **unsupported,
    ):
        del bn_decay  # no batch norm here; the decay still sets ASPP's and the decoder's
        reject_options(name, unsupported)
        reject_middle_flow_units(name, middle_flow_units)
        if output_stride != 16 or multi_grid:
            raise ValueError("toy has output stride 16 and no multi-grid")
        return ToyBackbone(width=max(2, round(width * width_multiplier)), name=name)

    return build_toy


def test_a_new_backbone_plugs_into_deeplab_and_pseudoseg(toy_registered):
    """Registering a backbone is all it takes: DeepLabV3Plus (its options forwarded) and
    PseudoSeg's classification head, Grad-CAM and SGC run on it unchanged."""
    assert "toy" in registered_backbones()
    check_contract("toy")
    model = PseudoSegModel(
        deeplab_config=dict(
            num_classes=3,
            backbone="toy",
            atrous_rates=(1, 2),
            aspp_depth=8,
            decoder_depth=8,
            backbone_options={"width": 4},
        ),
        options=MethodOptions(attention_dim=4),
    )
    model.build()
    deeplab = model.deeplab
    assert deeplab.backbone.width == 4 and deeplab.low_level_end_point == "low"
    assert {"toy/logits/weights", "logits/semantic/weights"} <= set(model.tf1_variable_map())

    images = tf.random.uniform([2, 33, 33, 3], 0, 255, seed=2)
    out = deeplab.forward(images)
    assert out["logits"].shape == (2, 9, 9, 3)  # stride 4, 'same' padding rounds up
    assert out["cls_logits"].shape == (2, 2)
    valid = tf.ones([2, 33, 33, 1], tf.int32)
    labels = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    pseudo = model.pseudo_labels(images, valid, labels, dropout=False, weak_training=False)
    assert pseudo["sgc_logits"].shape[-1] == 3
    assert np.isfinite(pseudo["probs"].numpy()).all()
