"""Tests of wss.eval (streaming mIoU) and wss.restore, with the tiny run of conftest
(tiny model checkpoint and demo data)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import NUM_CLASSES, build_run_model, write_gin
from wss import eval as wss_eval
from wss import restore
from wss.data import pipeline
from wss.evaluation import evaluator, metrics

pytestmark = pytest.mark.usefixtures("clear_gin")


def _one_hot_model(images):
    """A perfect 'model' for label-encoding images: class = round(red / 40)."""
    cls = tf.cast(tf.round(images[..., 0] / 40.0), tf.int32)
    return tf.one_hot(cls, NUM_CLASSES) * 10.0


def _encoded_dataset(labels, heights, widths, pad_label):
    """Eval-style batches whose images encode their labels (see _one_hot_model)."""
    labels = np.asarray(labels, np.int32)
    images = np.repeat((labels * 40.0)[..., None], 3, axis=-1).astype(np.float32)
    for i, (h, w) in enumerate(zip(heights, widths)):
        images[i, h:] = images[i, :, w:] = 127.5  # padding would predict class 3
        labels[i, h:] = labels[i, :, w:] = pad_label
    return tf.data.Dataset.from_tensor_slices(
        {
            "image": images,
            "label": labels[..., None],
            "height": np.asarray(heights, np.int32),
            "width": np.asarray(widths, np.int32),
        }
    ).batch(2)


def test_perfect_predictor_gives_miou_one_and_ignores_padding():
    rng = np.random.RandomState(0)
    labels = rng.randint(0, NUM_CLASSES, (3, 20, 20))
    # Padding labels are valid classes here: only height/width may exclude them.
    ds = _encoded_dataset(labels, [20, 13, 17], [15, 20, 9], pad_label=1)
    result = evaluator.evaluate(_one_hot_model, ds, NUM_CLASSES)
    assert result["miou"] == 1.0
    assert result["pixel_accuracy"] == 1.0
    assert result["num_images"] == 3
    assert result["num_pixels"] == 20 * 15 + 13 * 20 + 17 * 9
    cm = result["confusion_matrix"]
    assert np.count_nonzero(cm - np.diag(np.diag(cm))) == 0


def test_ignore_label_and_flip_scales_keep_perfect_prediction():
    labels = np.zeros((2, 16, 16), np.int32)
    labels[:, :, 8:] = 2
    labels[0, :4] = 255  # ignored pixels count nowhere
    images = np.repeat((np.where(labels == 255, 4, labels) * 40.0)[..., None], 3, -1)
    ds = tf.data.Dataset.from_tensor_slices(
        {"image": images.astype(np.float32), "label": labels[..., None]}
    ).batch(2)
    for kwargs in ({}, {"flip": True}, {"scales": [1.0, 1.0], "merge": "probs"}):
        result = evaluator.evaluate(_one_hot_model, ds, NUM_CLASSES, **kwargs)
        assert result["miou"] == 1.0
        assert result["num_pixels"] == 2 * 256 - 4 * 16


def test_out_of_range_label_is_reported():
    labels = np.full((1, 8, 8), 7, np.int32)
    ds = _encoded_dataset(np.zeros((1, 8, 8)), [8], [8], 0)
    ds = ds.map(lambda b: dict(b, label=tf.constant(labels[..., None])))
    with pytest.raises(ValueError, match="outside"):
        evaluator.evaluate(_one_hot_model, ds, NUM_CLASSES)


def test_evaluate_matches_numpy_reference(tiny_run):
    model = tiny_run["model"]
    ds = pipeline.eval_dataset(tiny_run["data"], 4, split="val", dataset_name="demo")
    seen = []
    result = evaluator.evaluate(model, ds, NUM_CLASSES, on_batch=lambda b, p: seen.append((b, p)))
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for batch, _ in seen:
        logits = model.deeplab.predict_logits(batch["image"]).numpy()
        pred = logits.argmax(-1)
        for i in range(pred.shape[0]):
            h, w = int(batch["height"][i]), int(batch["width"][i])
            cm += metrics.confusion_matrix(
                batch["label"].numpy()[i, :h, :w, 0], pred[i, :h, :w], NUM_CLASSES
            )
    np.testing.assert_array_equal(result["confusion_matrix"], cm)
    assert result["miou"] == pytest.approx(metrics.mean_iou(cm))
    assert result["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert result["num_images"] == 6
    # The padded area holds no counted pixel: total = sum of original image areas.
    areas = sum(int(h) * int(w) for b, _ in seen for h, w in zip(b["height"], b["width"]))
    assert result["num_pixels"] == areas
    assert 0.0 < result["pixel_accuracy"] < 1.0


def test_restore_roundtrip_and_errors(tiny_run, tmp_path):
    model = build_run_model(restore.parse_gin([tiny_run["gin"]]))
    assert restore.restore_model(model, str(tiny_run["model_dir"])) == tiny_run["prefix"]
    for a, b in zip(model.weights, tiny_run["model"].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert restore.checkpoint_step(tiny_run["prefix"]) == 5
    with pytest.raises(restore.RestoreError, match=str(tmp_path)):
        restore.restore_model(model, str(tmp_path))
    with pytest.raises(restore.RestoreError, match="nothing.gin"):
        restore.parse_gin([str(tmp_path / "nothing.gin")])
    deeper = restore.parse_gin([tiny_run["gin"]], ["ModelSettings.aspp_depth = 16"])
    with pytest.raises(restore.RestoreError, match="does not fit"):
        restore.restore_model(build_run_model(deeper), tiny_run["prefix"])


def test_checkpoint_of_another_model_fails_loudly(tiny_run, tmp_path):
    """A checkpoint without this model's weights raises, naming what is missing: never a
    silently half-initialised model."""
    model = build_run_model(restore.parse_gin([tiny_run["gin"]]))
    prefix = tf.train.Checkpoint(step=tf.Variable(1)).save(str(tmp_path / "ckpt"))
    with pytest.raises(restore.RestoreError, match="no value for"):
        restore.restore_model(model, prefix)


def test_truncated_checkpoint_is_named_unreadable(tiny_run, tmp_path):
    """A checkpoint cut short (a copy of the session's, its data file truncated) raises
    RestoreError saying so, not TensorFlow's reader error."""
    prefix = str(tmp_path / "ckpt-5")
    for source in tf.io.gfile.glob(tiny_run["prefix"] + ".*"):
        target = prefix + source[len(tiny_run["prefix"]) :]
        tf.io.gfile.copy(source, target)
        if ".data-" in source:
            with open(target, "r+b") as f:
                f.truncate(100)
    model = build_run_model(restore.parse_gin([tiny_run["gin"]]))
    with pytest.raises(restore.RestoreError, match=r"cannot read checkpoint .*truncated"):
        restore.restore_model(model, prefix)


@pytest.mark.slow
def test_eval_cli_end_to_end(tiny_run, monkeypatch, capsys):
    root = tiny_run["root"]
    monkeypatch.chdir(root)  # --dataset_name=demo without a directory uses ./demo_data
    model_dir = str(root / "model")
    results = wss_eval.main(
        [
            "eval",
            f"--gin_file={tiny_run['gin']}",
            f"--model_dir={model_dir}",
            "--dataset_name=demo",
            "--split=val",
            "--batch_size=4",
            "--progress_every=1",
        ]
    )
    out = capsys.readouterr().out
    assert len(results) == 1
    path = os.path.join(model_dir, "eval_val_5.json")
    with open(path) as f:
        saved = json.load(f)
    assert saved["miou"] == pytest.approx(results[0]["miou"])
    assert saved["num_images"] == 6 and saved["step"] == 5
    assert list(saved["per_class_iou"]) == list(demo_class_names())
    assert "mIoU" in out and "triangle" in out and "batch 1" in out
    assert os.listdir(os.path.join(model_dir, "eval"))  # TensorBoard events
    # Same number as evaluating the in-memory model directly.
    ds = pipeline.eval_dataset(tiny_run["data"], 4, split="val", dataset_name="demo")
    direct = evaluator.evaluate(tiny_run["model"], ds, NUM_CLASSES)
    assert saved["miou"] == pytest.approx(direct["miou"])
    # Continuous mode evaluates the existing checkpoint once, then times out.
    results = wss_eval.main(
        [
            "eval",
            f"--model_dir={model_dir}",
            "--dataset_name=demo",
            "--continuous",
            "--eval_timeout_secs=0.1",
            "--eval_interval_secs=0",
            f"--output_dir={root / 'cont'}",
        ]
    )
    assert [r["step"] for r in results] == [5]
    assert os.path.exists(root / "cont" / "eval_val_5.json")


def test_eval_cli_errors_name_the_problem(tmp_path):
    with pytest.raises(restore.RestoreError, match="dataset_dir"):
        wss_eval.main(
            [
                "eval",
                f"--gin_file={write_gin(tmp_path)}",
                f"--model_dir={tmp_path}",
                "--dataset_name=pascal_voc_seg",
            ]
        )
    with pytest.raises(restore.RestoreError, match="operative_config.gin"):
        wss_eval.main(["eval", f"--model_dir={tmp_path / 'none'}"])


def demo_class_names():
    """The demo dataset's class names."""
    from wss.data import descriptors

    return descriptors.get_descriptor("demo").class_names
