"""Tests of wss.export (SavedModel signatures) and wss.predict (PNG label maps)."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import NUM_CLASSES
from wss import export, predict, serving
from wss.data import pipeline
from wss.evaluation import colormap, evaluator

pytestmark = pytest.mark.usefixtures("clear_gin")


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    """The tiny run's checkpoint exported by wss.export, and its loaded SavedModel."""
    export_dir = str(tmp_path_factory.mktemp("export") / "saved")
    assert (
        export.main(
            [
                "export",
                f"--gin_file={tiny_run['gin']}",
                f"--model_dir={tiny_run['model_dir']}",
                f"--export_dir={export_dir}",
            ]
        )
        == export_dir
    )
    return dict(tiny_run, dir=export_dir, loaded=tf.saved_model.load(export_dir))


def _eval_batches(exported):
    """(batch, eval predictions, in-memory logits) of the demo val split."""
    out = []
    ds = pipeline.eval_dataset(exported["data"], 3, split="val", dataset_name="demo")
    evaluator.evaluate(exported["model"], ds, NUM_CLASSES, on_batch=lambda b, p: out.append((b, p)))
    return [(b, p, exported["model"].deeplab.predict_logits(b["image"]).numpy()) for b, p in out]


@pytest.mark.slow
def test_saved_model_matches_eval_predictions(exported):
    sigs = exported["loaded"].signatures
    assert {"serving_default", "serving_float", "serving_encoded"} <= set(sigs)
    checked = 0
    for batch, preds, logits in _eval_batches(exported):
        for i in range(preds.shape[0]):
            h, w = int(batch["height"][i]), int(batch["width"][i])
            image = batch["image"][i : i + 1, :h, :w]  # the original, unpadded image
            out = sigs["serving_default"](images=tf.cast(image, tf.uint8))
            assert out["class_map"].shape == (1, h, w)
            assert out["class_map"].dtype == tf.int32
            np.testing.assert_array_equal(out["class_map"].numpy()[0], preds[i, :h, :w])
            # Graph vs eager and batch 1 vs 3 may reorder float sums: 1e-5 relative.
            ref = logits[i, :h, :w]
            np.testing.assert_allclose(
                out["logits"].numpy()[0], ref, rtol=0, atol=1e-5 * max(1.0, np.abs(ref).max())
            )
            np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)
            out_f = sigs["serving_float"](images=image)
            np.testing.assert_array_equal(out_f["class_map"].numpy(), out["class_map"])
            png = tf.io.encode_png(tf.cast(image[0], tf.uint8))
            out_e = sigs["serving_encoded"](image_bytes=png)
            np.testing.assert_array_equal(out_e["class_map"].numpy(), out["class_map"])
            checked += 1
    assert checked == 6


@pytest.mark.slow
def test_batched_and_oversized_inputs(exported):
    sig = exported["loaded"].signatures["serving_default"]
    images = tf.cast(tf.random.stateless_uniform([2, 70, 40, 3], [1, 2], 0, 255), tf.uint8)
    out = sig(images=images)  # taller than the crop: kept at its size
    assert out["class_map"].shape == (2, 70, 40)
    assert out["probabilities"].shape == (2, 70, 40, NUM_CLASSES)
    single = sig(images=images[1:])
    np.testing.assert_array_equal(single["class_map"].numpy()[0], out["class_map"][1])
    meta = serving.load_metadata(exported["dir"])
    assert meta["num_classes"] == NUM_CLASSES and meta["crop_size"] == 65
    assert meta["dataset"] == "demo" and meta["checkpoint"].endswith("ckpt-5")
    # The palette travels with the export, so predict needs no dataset.
    np.testing.assert_array_equal(
        meta["class_colors"], colormap.colormap_for_dataset("demo")[:NUM_CLASSES]
    )


@pytest.mark.slow
def test_predict_cli_writes_label_pngs(exported, tmp_path):
    sig = exported["loaded"].signatures["serving_default"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.RandomState(1)
    arrays = {
        "a.png": rng.randint(0, 255, (50, 60, 3)).astype(np.uint8),
        "b.jpg": rng.randint(0, 255, (48, 52, 3)).astype(np.uint8),
    }
    for name, array in arrays.items():
        Image.fromarray(array).save(inputs / name)
    out_dir = tmp_path / "out"
    written = predict.main(
        [
            "predict",
            f"--export_dir={exported['dir']}",
            f"--input={inputs / '*.png'}",
            f"--input={inputs / 'b.jpg'}",
            f"--output_dir={out_dir}",
        ]
    )
    assert sorted(os.path.basename(p) for p in written) == ["a.png", "b.png"]
    for name in arrays:
        label = Image.open(out_dir / (os.path.splitext(name)[0] + ".png"))
        assert label.mode == "P"
        # TF's decoder, as the signature uses (JPEG decoders differ slightly).
        decoded = tf.io.decode_image((inputs / name).read_bytes(), channels=3).numpy()
        assert label.size == (decoded.shape[1], decoded.shape[0])
        expected = sig(images=decoded[None])["class_map"].numpy()[0]
        np.testing.assert_array_equal(np.asarray(label), expected)
        palette = np.asarray(label.getpalette()[: 3 * NUM_CLASSES]).reshape(-1, 3)
        np.testing.assert_array_equal(
            palette, colormap.generated_colormap(NUM_CLASSES)[:NUM_CLASSES]
        )
    with pytest.raises(FileNotFoundError, match="nothing"):
        predict.main(
            [
                "predict",
                f"--export_dir={exported['dir']}",
                f"--input={tmp_path / 'nothing*.png'}",
                f"--output_dir={out_dir}",
            ]
        )
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        predict.predict_files(exported["dir"], [str(bad)], str(out_dir))
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        predict.predict_files(str(tmp_path), [str(bad)], str(out_dir))


def test_export_requires_export_dir(tmp_path):
    from wss.restore import RestoreError

    with pytest.raises(RestoreError, match="export_dir"):
        export.main(["export", f"--model_dir={tmp_path}"])


def test_pad_to_crop_uses_eval_padding():
    images = tf.ones([1, 3, 5, 3])
    padded = serving.pad_to_crop(images, 6).numpy()
    assert padded.shape == (1, 6, 6, 3)
    assert (padded[0, 3:] == 127.5).all() and (padded[0, :, 5:] == 127.5).all()
    assert (padded[0, :3, :5] == 1).all()
