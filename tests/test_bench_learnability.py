"""The learnability probe: demo arrays, both model classes, and that training fits."""

import io
import os

import gin
import numpy as np
import pytest
from absl import flags

from wss.bench import learnability
from wss.benchmarking import probe
from wss.builders import demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_padded_arrays_pad_like_deeplab():
    items = demo.train_items(0, 3)
    images, labels = demo.padded_arrays(items)
    assert images.shape == (3, demo.MAX_SIZE + 1, demo.MAX_SIZE + 1, 3)
    for n, (seed, index, _) in enumerate(items):
        image, label = demo.generate_image(seed, index)
        h, w = label.shape
        np.testing.assert_array_equal(images[n, :h, :w], image.astype(np.float32))
        np.testing.assert_array_equal(labels[n, :h, :w], label)
        assert (images[n, h:] == 127.5).all() and (labels[n, :, w:] == 255).all()


def test_labeled_sample_is_the_built_split(tmp_path):
    demo.build_demo_dataset(str(tmp_path), num_train=20, num_val=2, num_labeled=8)
    with open(tmp_path / "labeled.txt") as f:
        written = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert written == list(demo.labeled_sample(0, 20, 8).ids)


@pytest.mark.slow
def test_plain_fcn_fits_four_images():
    data = demo.padded_arrays(demo.train_items(0, 4))
    out = io.StringIO()
    result = probe.train_and_evaluate(
        probe.plain_fcn(demo.NUM_CLASSES),
        data,
        data,
        steps=60,
        batch=4,
        log_every=20,
        out=out,
    )
    assert result["final_loss"] < 0.7 * result["first_loss"]
    assert len(result["per_class_iou"]) == demo.NUM_CLASSES
    assert 0.0 <= result["miou"] <= 1.0
    assert out.getvalue().count("loss=") == 3


@pytest.mark.slow
def test_demo_deeplab_is_the_gin_model():
    from wss.restore import parse_gin

    config = parse_gin([os.path.join(REPO, "gin", "demo.gin")])
    try:
        model = probe.DeepLabLogits(demo.NUM_CLASSES, config.model)
        data = demo.padded_arrays(demo.train_items(0, 2))
        result = probe.train_and_evaluate(
            model, data, data, steps=2, batch=2, log_every=1, out=io.StringIO()
        )
    finally:
        gin.clear_config()
    assert model.deeplab.width_multiplier == 0.125
    assert model.deeplab.middle_flow_units == 2
    assert np.isfinite(result["final_loss"])


@pytest.mark.slow
def test_command_line_runs_and_rejects_bad_flags():
    result = learnability.main(
        [
            "learnability",
            "--model=plain_fcn",
            "--labeled=balanced",
            "--num_train=12",
            "--num_val=2",
            "--steps=2",
            "--batch=2",
            "--input_scale=2",
        ]
    )
    assert 0.0 <= result["miou"] <= 1.0
    with pytest.raises(flags.IllegalFlagValueError):
        learnability.main(["learnability", "--model=unet"])
    with pytest.raises(ValueError, match="--steps=0"):
        learnability.main(["learnability", "--steps=0"])
    with pytest.raises(ValueError, match="--input_scale=0"):
        learnability.main(["learnability", "--input_scale=0"])


def test_upsample_keeps_corners_and_classes():
    images, labels = demo.padded_arrays(demo.train_items(0, 2))
    big_images, big_labels = probe.upsample((images, labels), 2)
    size = 2 * (demo.MAX_SIZE + 1) - 1
    assert big_images.shape == (2, size, size, 3) and big_labels.shape == (2, size, size)
    # aligned corners: every original pixel lands on an even position unchanged
    np.testing.assert_allclose(big_images[:, ::2, ::2], images, atol=1e-3)
    np.testing.assert_array_equal(big_labels[:, ::2, ::2], labels)
    assert set(np.unique(big_labels)) == set(np.unique(labels))
    same = probe.upsample((images, labels), 1)
    assert same[0] is images and same[1] is labels
