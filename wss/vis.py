"""Side-by-side PNGs of images, ground truth and predictions (and optionally the weak
view's CAM, SGC and pseudo label) for the first N images of a split.

    python -m wss.vis --gin_file=x.gin --model_dir=DIR --dataset_dir=DATA \
        --num_images=8 --output_dir=VIS [--with_pseudo]

Panels are cropped to each image's original size; decoder-resolution maps (CAM, SGC,
pseudo label) are resized to it by nearest neighbour (CAM: bilinear).
"""

import os
import sys

import numpy as np
import tensorflow as tf
from absl import flags
from PIL import Image

from deeplab_ext.resize import resize_bilinear, resize_nearest
from wss import calibration, colormap, restore
from wss import eval as wss_eval

SEPARATOR = 4  # white pixels between panels


def heatmap(values):
    """uint8 RGB of values in [0, 1] (black -> red -> yellow -> white)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
    rgb = np.stack(
        [np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1
    )
    return (rgb * 255).round().astype(np.uint8)


def side_by_side(panels):
    """Concatenates equally tall RGB panels horizontally with white separators."""
    height = panels[0].shape[0]
    gap = np.full((height, SEPARATOR, 3), 255, np.uint8)
    out = []
    for i, panel in enumerate(panels):
        if panel.shape[0] != height:
            raise ValueError(f"panel {i} is {panel.shape[0]} px tall, expected {height}")
        out += ([gap] if i else []) + [panel.astype(np.uint8)]
    return np.concatenate(out, axis=1)


def _weak_maps(model, images, valid, size):
    """CAM max [B,H,W], SGC argmax and pseudo-label argmax [B,H,W] at the padded size."""
    branch = calibration.weak_branch(model, images, valid)
    probs = calibration.variant_probs(
        branch, model.options, ("fusion_norm_sharpened", "sgc", "decoder")
    )
    source = {"fusion": "fusion_norm_sharpened", "sgc": "sgc", "decoder": "decoder"}[
        model.options.source
    ]
    cam = resize_bilinear(tf.reduce_max(branch["cam"], axis=-1, keepdims=True), size)

    def up(x):
        x = tf.argmax(x, axis=-1, output_type=tf.int32)[..., tf.newaxis]
        return resize_nearest(x, size)[..., 0]

    return cam[..., 0], up(branch["sgc_logits"]), up(probs[source])


def visualize(model, dataset, output_dir, num_images, cmap, with_pseudo=False):
    """Writes <output_dir>/<index>_<filename>.png for the first num_images; returns paths.

    Panels: image | ground truth | prediction [| CAM | SGC | pseudo label].
    """
    os.makedirs(output_dir, exist_ok=True)
    step = wss_eval.make_eval_step(model, model.num_classes)
    weak = tf.function(lambda im, va, size: _weak_maps(model, im, va, size), reduce_retracing=True)
    written = []
    for batch in dataset:
        height, width = wss_eval._batch_sizes(batch)
        _, predictions, _ = step(batch["image"], batch["label"], height, width)
        predictions = predictions.numpy()
        if with_pseudo:
            with calibration.frozen_statistics(model):
                cam, sgc, pseudo = [
                    t.numpy()
                    for t in weak(batch["image"], batch["valid"], tf.shape(batch["image"])[1:3])
                ]
        images = batch["image"].numpy()
        labels = batch["label"].numpy()[..., 0]
        names = batch["filename"].numpy() if "filename" in batch else [b""] * len(images)
        for i in range(len(images)):
            if len(written) >= num_images:
                return written
            h, w = int(height[i]), int(width[i])
            panels = [
                np.clip(images[i, :h, :w], 0, 255).round(),
                colormap.colorize(labels[i, :h, :w], cmap),
                colormap.colorize(predictions[i, :h, :w], cmap),
            ]
            if with_pseudo:
                panels += [
                    heatmap(cam[i, :h, :w]),
                    colormap.colorize(sgc[i, :h, :w], cmap),
                    colormap.colorize(pseudo[i, :h, :w], cmap),
                ]
            name = names[i].decode() if isinstance(names[i], bytes) else str(names[i])
            stem = os.path.splitext(os.path.basename(name))[0] or "image"
            path = os.path.join(output_dir, f"{len(written):04d}_{stem}.png")
            Image.fromarray(side_by_side(panels)).save(path)
            written.append(path)
    return written


FLAGS = flags.FlagValues()
restore.define_model_flags(FLAGS)
restore.define_data_flags(FLAGS)
flags.DEFINE_integer("num_images", 8, "How many images to draw.", flag_values=FLAGS)
flags.DEFINE_string(
    "output_dir", None, "Where the PNGs go (default: MODEL_DIR/vis).", flag_values=FLAGS
)
flags.DEFINE_bool(
    "with_pseudo", False, "Add the weak view's CAM, SGC and pseudo label.", flag_values=FLAGS
)


def main(argv=None):
    """CLI entry point; returns the written paths."""
    from wss.data import pipeline

    if not restore.parse_flags(FLAGS, argv):
        return []
    fv = FLAGS
    setup = restore.setup_from_flags(fv)
    model, model_dir, desc = setup.model, setup.model_dir, setup.descriptor
    name, dataset_dir, split, crop = (
        setup.dataset_name,
        setup.dataset_dir,
        setup.split,
        setup.crop,
    )
    restore.restore_model(model, fv.checkpoint or model_dir)
    dataset = pipeline.eval_dataset(
        dataset_dir, fv.batch_size, split=split, dataset_name=name, eval_crop_size=crop
    )
    output_dir = fv.output_dir or os.path.join(model_dir, "vis")
    written = visualize(
        model,
        dataset,
        output_dir,
        fv.num_images,
        colormap.colormap_for_dataset(name, desc.num_classes),
        with_pseudo=fv.with_pseudo,
    )
    print(f"Wrote {len(written)} images to {output_dir}", flush=True)
    return written


if __name__ == "__main__":
    try:
        main(sys.argv)
    except restore.RestoreError as e:
        sys.exit(f"error: {e}")
