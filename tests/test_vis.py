"""Tests of wss.evaluation.colormap, wss.evaluation.pictures (readable side-by-side PNGs with a legend) and its
command line wss.vis."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wss import vis
from wss.data import descriptors, pipeline
from wss.evaluation import colormap, pictures

pytestmark = pytest.mark.usefixtures("clear_gin")


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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ("background", "cat", "dog")


def _legend_colours(picture, top):
    """The set of RGB colours in the legend band (rows from `top` down)."""
    return set(map(tuple, picture[top:].reshape(-1, 3).tolist()))


def test_compose_enlarges_small_panels_titles_them_and_adds_a_legend():
    cmap = colormap.generated_colormap(3)
    label = np.array([[0, 1, 2, 255]] * 3)
    panels = [np.full((3, 4, 3), 90, np.uint8), colormap.colorize(label, cmap)]
    picture = pictures.compose(panels, ("image", "ground truth"), NAMES, cmap)
    factor = pictures.scale_factor(3, 4)
    assert factor == 86 and 3 * factor >= pictures.MIN_PANEL  # whole factor, shorter side >= 256
    top, bottom = pictures.TITLE_HEIGHT, pictures.TITLE_HEIGHT + 3 * factor
    assert picture.shape[1] == 2 * 4 * factor + pictures.SEPARATOR
    # Nearest neighbour: the label panel holds exactly the label's colours, in blocks.
    gt = picture[top:bottom, 4 * factor + pictures.SEPARATOR :]
    np.testing.assert_array_equal(gt[::factor, ::factor], colormap.colorize(label, cmap))
    assert len({tuple(c) for c in gt.reshape(-1, 3).tolist()}) == 4
    # Titles are drawn (dark text pixels in the strip), and the legend shows every class
    # colour and the ignore colour under the panels.
    assert (picture[:top, : 4 * factor] < 100).any()
    legend = _legend_colours(picture, bottom)
    for k in (0, 1, 2, 255):
        assert tuple(cmap[k].tolist()) in legend
    # Large images are not enlarged.
    assert pictures.scale_factor(300, 500) == 1


def test_vis_writes_readable_pngs_and_method_panels(tiny_run, tmp_path, monkeypatch):
    data, model = tiny_run["data"], tiny_run["model"]
    desc = descriptors.get_descriptor("demo")
    cmap = colormap.colormap_for_dataset("demo")
    ds = pipeline.eval_dataset(data, 2, split="val", dataset_name="demo")
    sizes = [(int(h), int(w)) for b in ds for h, w in zip(b["height"], b["width"])]
    written = pictures.visualize(model, ds, str(tmp_path / "v"), 2, cmap, desc.class_names)
    assert len(written) == 2
    for path, (h, w) in zip(written, sizes):
        picture = np.asarray(Image.open(path))
        factor = pictures.scale_factor(h, w)
        assert min(h, w) * factor >= pictures.MIN_PANEL
        assert picture.shape[1] == 3 * w * factor + 2 * pictures.SEPARATOR
        gt = picture[
            pictures.TITLE_HEIGHT : pictures.TITLE_HEIGHT + h * factor,
            w * factor + pictures.SEPARATOR :,
        ]
        assert set(map(tuple, gt[:, : w * factor].reshape(-1, 3).tolist())) <= set(
            map(tuple, cmap.tolist())
        )
        legend = _legend_colours(picture, pictures.TITLE_HEIGHT + h * factor)
        assert all(tuple(cmap[k].tolist()) in legend for k in list(range(6)) + [255])
    before = [w.numpy() for w in model.weights]
    crop = desc.train_crop_size
    extra = pipeline.extra_dataset(
        pipeline.TrainingStream(
            data, "train", crop, dataset_name="demo", shuffle_buffer=0, repeat=False, seed=0
        ),
        2,
    )
    method = pictures.visualize_method(model, extra, str(tmp_path / "v"), 3, cmap, desc.class_names)
    assert len(method) == 3 and all(os.path.basename(p).startswith("extra_") for p in method)
    factor = pictures.scale_factor(crop, crop)
    for path in method:
        picture = np.asarray(Image.open(path))
        assert picture.shape[1] == 6 * crop * factor + 5 * pictures.SEPARATOR  # six method panels
    for w, value in zip(model.weights, before):  # drawing moved no batch-norm statistic
        np.testing.assert_array_equal(w.numpy(), value)
    model.options = dataclasses.replace(model.options, mode="supervised")
    with pytest.raises(ValueError, match="supervised"):
        pictures.visualize_method(model, extra, str(tmp_path / "v"), 1, cmap, desc.class_names)
    model.options = dataclasses.replace(model.options, mode="semi")
    # CLI: three val images and two method pictures, demo data found in ./demo_data.
    monkeypatch.chdir(tiny_run["root"])
    written = vis.main(
        [
            "vis",
            f"--model_dir={tiny_run['model_dir']}",
            "--dataset_name=demo",
            "--num_images=3",
            "--batch_size=2",
            "--method_panels",
            "--num_extra_images=2",
            "--extra_split=train",
        ]
    )
    assert len(written) == 5 and sum("extra_" in p for p in written) == 2
    assert all(os.path.dirname(p) == str(tiny_run["model_dir"] / "vis") for p in written)


@pytest.mark.slow
def test_vis_without_checkpoint_prints_one_error_line(tiny_run, tmp_path):
    data, gin_file = tiny_run["data"], tiny_run["gin"]
    model_dir = tmp_path / "empty_run"
    model_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wss.vis",
            f"--model_dir={model_dir}",
            f"--gin_file={gin_file}",
            f"--dataset_dir={data}",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "checkpoint" in errors[0], proc.stderr
