"""Tests of wss.evaluation.reliability (ECE per pseudo-label source, reliability PNG) and its command
line wss.calibration."""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from deeplab_ext.resize import resize_nearest
from tests.conftest import NUM_CLASSES
from wss import calibration
from wss.data import pipeline
from wss.evaluation import metrics, reliability

pytestmark = pytest.mark.usefixtures("clear_gin")


def _first_batch(tiny_run):
    ds = pipeline.eval_dataset(tiny_run["data"], 4, split="val", dataset_name="demo")
    return ds, next(iter(ds))


def test_ece_matches_metrics_reference(tiny_run):
    model = tiny_run["model"]
    ds, batch = _first_batch(tiny_run)
    stats_before = [w.numpy() for w in model.weights if "moving_" in w.path]
    results = reliability.calibrate(model, ds, NUM_CLASSES, max_batches=1)
    assert set(results) == set(reliability.VARIANTS)
    # The model's moving statistics are left untouched.
    for before, w in zip(stats_before, [w for w in model.weights if "moving_" in w.path]):
        np.testing.assert_array_equal(before, w.numpy())

    def labels_at(size):
        return resize_nearest(batch["label"], size).numpy()[..., 0]

    # Model predictions: softmax of inference-mode decoder logits.
    logits = model.deeplab.forward(batch["image"], training=False)["logits"]
    ref = metrics.expected_calibration_error(
        tf.nn.softmax(logits).numpy(), labels_at(tf.shape(logits)[1:3])
    )
    assert results["model"]["ece"] == pytest.approx(ref, abs=1e-6)

    # The default method's pseudo labels (fusion, norm, sharpened) via model.pseudo_labels.
    with model.frozen_statistics():
        probs = model.pseudo_labels(batch["image"], batch["valid"], dropout=False)["probs"]
    ref = metrics.expected_calibration_error(probs.numpy(), labels_at(tf.shape(probs)[1:3]))
    assert results["fusion_norm_sharpened"]["ece"] == pytest.approx(ref, abs=1e-5)

    # Decoder-only without sharpening, through the options the method reads.
    model.options, saved = (
        dataclasses.replace(model.options, source="decoder", temperature=1.0),
        model.options,
    )
    try:
        with model.frozen_statistics():
            probs = model.pseudo_labels(batch["image"], batch["valid"], dropout=False)["probs"]
    finally:
        model.options = saved
    ref = metrics.expected_calibration_error(probs.numpy(), labels_at(tf.shape(probs)[1:3]))
    assert results["decoder"]["ece"] == pytest.approx(ref, abs=1e-5)
    # Sharpening raises the confidence of the same predictions.
    assert results["decoder_sharpened"]["confidence"] > results["decoder"]["confidence"]
    assert results["decoder_sharpened"]["accuracy"] == results["decoder"]["accuracy"]
    # mIoU of the arg-max labels: a numpy confusion matrix of the same pseudo labels.
    cm = metrics.confusion_matrix(
        labels_at(tf.shape(probs)[1:3]), probs.numpy().argmax(-1), NUM_CLASSES
    )
    assert results["decoder"]["miou"] == pytest.approx(metrics.mean_iou(cm), abs=1e-9)
    assert results["decoder_sharpened"]["miou"] == results["decoder"]["miou"]
    valid = int((labels_at(tf.shape(probs)[1:3]) != 255).sum())
    assert all(r["num_pixels"] == valid for r in results.values())


def test_reliability_png_and_cli(tiny_run, monkeypatch, capsys):
    root = tiny_run["root"]
    monkeypatch.chdir(root)
    results, json_path, png_path = calibration.main(
        [
            "calibration",
            f"--model_dir={tiny_run['model_dir']}",
            "--dataset_name=demo",
            "--split=val",
            "--batch_size=2",
            f"--output_dir={root / 'out'}",
        ]
    )
    out = capsys.readouterr().out
    assert "fusion_nonorm_sharpened" in out and "ECE" in out
    with open(json_path) as f:
        saved = json.load(f)
    assert saved["step"] == tiny_run["step"]
    for name in reliability.VARIANTS:
        assert saved["variants"][name]["ece"] == pytest.approx(results[name]["ece"])
        assert 0.0 <= results[name]["ece"] <= 1.0
    image = np.asarray(Image.open(png_path))
    assert image.ndim == 3 and image.shape[2] == 3
    assert image.shape[1] > image.shape[0] > 100  # one panel per variant, side by side
    assert (image == [60, 90, 200]).all(-1).any()  # accuracy bars were drawn


def test_image_labels_from_mask():
    labels = tf.constant([[[0, 2], [255, 2]], [[5, 5], [1, 255]]])[..., None]
    hot = reliability.image_labels_from_mask(labels, NUM_CLASSES).numpy()
    np.testing.assert_array_equal(hot, [[0, 1, 0, 0, 0], [1, 0, 0, 0, 1]])
