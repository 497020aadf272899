"""Models and layers save to `.keras` and load back without `custom_objects`.

Every layer and model is registered with keras.saving.register_keras_serializable, so
`keras.saving.load_model` finds the classes by their registered names and rebuilds them
from get_config; the loaded object must hold the same weights and give the same outputs.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.backbone import registered_backbones
from deeplab_ext.deeplab import DeepLabV3Plus
from tests.conftest import TINY_HUB_ARCHITECTURES, tiny_deeplab_config
from wss.method.sgc import SelfAttentionGradCAM


def _randomize(layer, seed=0):
    """Non-trivial values in every weight (batch-norm variances positive), so a weight
    the loader leaves at its initial value changes the outputs."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        low = 0.5 if "variance" in weight.path else -0.5
        weight.assign(rng.uniform(low, low + 1.0, weight.shape).astype("float32"))


def _unnumbered(path):
    """A weight path without the `_<n>` Keras appends to auto-named layers (a keras-hub
    encoder built twice in one process names its second copy's layers conv2d_6, ...)."""
    return re.sub(r"_\d+(?=/|$)", "", path)


def _save_and_load(obj, tmp_path):
    path = str(tmp_path / "saved.keras")
    keras.saving.save_model(obj, path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert type(loaded) is type(obj)
    assert loaded.get_config() == obj.get_config()
    assert [_unnumbered(w.path) for w in loaded.weights] == [
        _unnumbered(w.path) for w in obj.weights
    ]
    for ours, theirs in zip(loaded.weights, obj.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=theirs.path)
    return loaded


def tiny_config(backbone):
    """The tiny DeepLabV3Plus keywords over `backbone`: the keras-hub one over the tiny MiT
    architecture (its natural stride 32, no preset, nothing downloaded)."""
    if backbone == "keras_hub":
        pytest.importorskip("keras_hub")
        options = {"architecture": TINY_HUB_ARCHITECTURES["MiTBackbone"], "image_size": 33}
        return tiny_deeplab_config(backbone=backbone, output_stride=32, backbone_options=options)
    return tiny_deeplab_config(backbone=backbone, output_stride=8)


@pytest.mark.parametrize("backbone", registered_backbones())
def test_deeplab_round_trips_through_a_keras_file(backbone, tmp_path):
    """Every registered backbone: saved with the model and rebuilt by its registered name."""
    model = DeepLabV3Plus(**tiny_config(backbone))
    model.build()
    _randomize(model)
    loaded = _save_and_load(model, tmp_path)
    assert loaded.backbone.scope == model.backbone.scope
    images = tf.random.uniform([1, 33, 33, 3], 0, 255, seed=1)
    ours, theirs = loaded.forward(images), model.forward(images)
    for key in ("logits", "cls_logits"):
        np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())


def test_sgc_round_trips_through_a_keras_file(tmp_path):
    layer = SelfAttentionGradCAM(4, attention_dim=8)
    layer.build(12)
    _randomize(layer)
    loaded = _save_and_load(layer, tmp_path)
    hypercolumn = [tf.random.normal([2, 5, 5, 8], seed=2), tf.random.normal([2, 3, 3, 4], seed=3)]
    cam = tf.random.uniform([2, 5, 5, 3], seed=4)
    valid = tf.cast(tf.random.uniform([2, 5, 5, 1], seed=5) > 0.3, tf.int32)
    np.testing.assert_array_equal(
        loaded(hypercolumn, cam, valid).numpy(), layer(hypercolumn, cam, valid).numpy()
    )
