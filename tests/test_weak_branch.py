"""One weak branch: calibration's and the pictures' pseudo labels are the train step's.

`PseudoSegModel.pseudo_labels` is the only implementation of the weak branch (spec
section 3); wss.evaluation.reliability (calibration) and wss.evaluation.pictures (vis) call it under
`PseudoSegModel.frozen_statistics`. For the same weights and batch their pseudo labels
must equal those `compute_losses` (what `train_step` differentiates) supervises L_u with;
dropout is off everywhere, the step's only random part.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import tiny_deeplab_config
from wss.evaluation import pictures, reliability
from wss.method.options import MethodOptions
from wss.model import PseudoSegModel

TINY = tiny_deeplab_config(num_classes=6)


def _batches(num_classes=6, size=33):
    images = tf.random.uniform([2, size, size, 3], 0, 255, seed=4)
    label = tf.random.uniform([2, size, size, 1], 0, num_classes, tf.int32, seed=5)
    label = tf.where(tf.random.uniform(label.shape, seed=6) < 0.1, 255, label)
    valid = tf.cast(tf.range(size)[tf.newaxis, :, tf.newaxis, tf.newaxis] < size - 5, tf.int32)
    valid = tf.broadcast_to(valid, label.shape)
    # The image labels the step reads are the ones calibration derives from the masks.
    image_labels = reliability.image_labels_from_mask(label, num_classes)
    labeled = dict(image=images[::-1], label=label, valid=tf.ones_like(label))
    labeled["image_labels"] = image_labels[::-1]
    extra = dict(image=images, strong=images[:, ::-1], label=label, valid=valid)
    extra["image_labels"] = image_labels
    return labeled, extra


def _moving_statistics(model):
    return {w.path: w.numpy() for w in model.weights if "moving_" in w.path}


@pytest.mark.parametrize(
    "mode,source,variant",
    [
        ("semi", "fusion", "fusion_norm_sharpened"),
        ("weakly", "fusion", "fusion_norm_sharpened"),
        ("semi", "decoder", "decoder_sharpened"),
    ],
)
def test_calibration_and_pictures_get_the_train_steps_pseudo_labels(mode, source, variant):
    model = PseudoSegModel(deeplab_config=TINY, options=MethodOptions(mode=mode, source=source))
    model.build()
    labeled, extra = _batches()
    before = _moving_statistics(model)

    with model.frozen_statistics():
        calibration = reliability.source_probs(
            model,
            extra["image"],
            extra["valid"],
            extra["image_labels"] if mode == "weakly" else None,
            variants=(variant,),
        )[variant]
    vis = pictures.weak_branch(model, extra)["probs"]
    with model.frozen_statistics():
        _, outputs = model.compute_losses((labeled, extra), dropout=False)
    step = outputs["branch"]["probs"]

    assert step.shape == (2, 9, 9, 6)
    np.testing.assert_allclose(calibration.numpy(), step.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(vis.numpy(), step.numpy(), rtol=0, atol=1e-6)
    for path, value in _moving_statistics(model).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_frozen_statistics_restores_every_moving_statistic():
    model = PseudoSegModel(deeplab_config=TINY, options=MethodOptions(mode="weakly"))
    model.build()
    labeled, extra = _batches()
    before = _moving_statistics(model)
    assert len(before) > 20  # backbone, ASPP, decoder and SGC batch norms
    with model.frozen_statistics():
        model.compute_losses((labeled, extra), dropout=False)
        inside = _moving_statistics(model)
        # The training-mode passes did move them (else this test would prove nothing)...
        moved = [p for p in before if not np.array_equal(inside[p], before[p])]
        assert len(moved) == len(before)
    # ... and every one is back, bit for bit.
    for path, value in _moving_statistics(model).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)
    # Also when the block raises.
    with pytest.raises(RuntimeError):
        with model.frozen_statistics():
            model.pseudo_labels(extra["image"], extra["valid"], extra["image_labels"])
            raise RuntimeError("stop")
    for path, value in _moving_statistics(model).items():
        np.testing.assert_array_equal(value, before[path], err_msg=path)


def test_inference_mode_decoder_logits_for_calibration():
    """--decoder_bn_training=False: p comes from the inference-mode pass, so the decoder
    source is the model's own prediction; the step's default path is unchanged."""
    model = PseudoSegModel(deeplab_config=TINY)
    model.build()
    _, extra = _batches()
    with model.frozen_statistics():
        probs = reliability.source_probs(
            model, extra["image"], extra["valid"], variants=("model", "decoder")
        )
        off = reliability.source_probs(
            model,
            extra["image"],
            extra["valid"],
            variants=("model", "decoder"),
            decoder_bn_training=False,
        )
    inference = tf.nn.softmax(model.deeplab.forward(extra["image"])["logits"]).numpy()
    np.testing.assert_allclose(probs["model"].numpy(), inference, atol=1e-6)
    np.testing.assert_allclose(off["decoder"].numpy(), inference, atol=1e-6)
    assert not np.allclose(probs["decoder"].numpy(), inference, atol=1e-3)
