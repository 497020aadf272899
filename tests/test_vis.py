"""Tests of wss.colormap and wss.vis (side-by-side PNGs)."""

import os

import gin
import numpy as np
import pytest
from PIL import Image

from tests.test_eval import make_checkpoint, make_demo
from wss import colormap, vis
from wss.data import pipeline


@pytest.fixture(autouse=True)
def _clear_gin():
    yield
    gin.clear_config()


def test_pascal_colormap_known_entries():
    cmap = colormap.pascal_colormap()
    assert cmap.shape == (256, 3) and cmap.dtype == np.uint8
    np.testing.assert_array_equal(cmap[:4], [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]])
    np.testing.assert_array_equal(cmap[15], [192, 128, 128])  # person
    np.testing.assert_array_equal(cmap[255], [224, 224, 192])  # VOC's void colour
    assert len({tuple(c) for c in cmap}) == 256


def test_generated_colormap_and_colorize():
    cmap = colormap.colormap_for_dataset("coco")
    assert len({tuple(c) for c in cmap[:81]}) == 81
    np.testing.assert_array_equal(cmap[0], [0, 0, 0])
    np.testing.assert_array_equal(cmap[255], [255, 255, 255])
    label = np.array([[0, 1], [255, 2]])
    rgb = colormap.colorize(label[..., None], cmap)
    assert rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[1, 0], cmap[255])
    with pytest.raises(ValueError, match="255"):
        colormap.colorize(np.array([[300]]), cmap)


def test_vis_writes_side_by_side_pngs(tmp_path, monkeypatch):
    data = make_demo(tmp_path / "demo_data", num_val=3)
    model, _ = make_checkpoint(tmp_path / "model", step=4)
    ds = pipeline.eval_dataset(data, 2, split="val", dataset_name="demo")
    sizes = [(int(h), int(w)) for b in ds for h, w in zip(b["height"], b["width"])]
    cmap = colormap.colormap_for_dataset("demo")
    written = vis.visualize(model, ds, str(tmp_path / "v"), 2, cmap, with_pseudo=True)
    assert len(written) == 2
    for path, (h, w) in zip(written, sizes):
        image = np.asarray(Image.open(path))
        assert image.shape == (h, 6 * w + 5 * vis.SEPARATOR, 3)
        gt = image[:, w + vis.SEPARATOR : 2 * w + vis.SEPARATOR]
        assert set(map(tuple, gt.reshape(-1, 3))) <= set(map(tuple, cmap))
    # CLI: all three images, three panels each, demo data found in ./demo_data.
    monkeypatch.chdir(tmp_path)
    written = vis.main(
        [
            "vis",
            f"--model_dir={tmp_path / 'model'}",
            "--dataset_name=demo",
            "--num_images=5",
            "--batch_size=2",
        ]
    )
    assert len(written) == 3
    assert all(os.path.dirname(p) == str(tmp_path / "model" / "vis") for p in written)
    for path, (h, w) in zip(written, sizes):
        assert np.asarray(Image.open(path)).shape == (h, 3 * w + 2 * vis.SEPARATOR, 3)
