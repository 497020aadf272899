"""Readable pictures of a run: titled, enlarged panels with a legend of class names.

`visualize` draws image, ground truth and prediction for the first N images of an eval
stream; `visualize_method` draws the method's panels (weak view, CAM, SGC, pseudo label,
strong view, strong-view prediction) for N images of the extra stream, from the model's
own weak branch, `PseudoSegModel.pseudo_labels`, with the fusion the model's MethodOptions
bind. Small images are enlarged by a whole factor (nearest neighbour, so every label pixel
stays one colour) until each panel is at least MIN_PANEL pixels on its shorter side. The
command line is wss.vis.
"""

import os

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont

from deeplab_ext.resize import resize_bilinear, resize_nearest
from wss.data.descriptors import IGNORE_LABEL
from wss.evaluation import colormap, evaluator

MIN_PANEL = 256  # shorter side of a panel after enlarging, in pixels
SEPARATOR = 4  # white pixels between panels
TITLE_HEIGHT = 22
SWATCH = 16
LEGEND_ENTRY_WIDTH = 150
LEGEND_ROW = 22
MARGIN = 8
PANEL_TITLES = ("image", "ground truth", "prediction")
METHOD_TITLES = ("weak view", "CAM", "SGC", "pseudo label", "strong view", "strong prediction")


def font(size=14):
    """Pillow's bundled font at `size` (its fixed bitmap font without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):
        return ImageFont.load_default()


def heatmap(values):
    """uint8 RGB of values in [0, 1] (black -> red -> yellow -> white)."""
    v = np.clip(np.asarray(values, np.float32), 0.0, 1.0)
    rgb = np.stack(
        [np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1
    )
    return (rgb * 255).round().astype(np.uint8)


def scale_factor(height, width, min_panel=MIN_PANEL):
    """The whole factor that makes the shorter side at least min_panel (1 if it is)."""
    return max(1, -(-min_panel // max(1, min(height, width))))


def enlarge(panel, factor):
    """Nearest-neighbour enlargement of an [H, W, 3] panel by a whole factor."""
    return np.repeat(np.repeat(np.asarray(panel, np.uint8), factor, 0), factor, 1)


def titled_row(panels, titles):
    """Equally tall RGB panels side by side, white separators, a title strip above each."""
    height = panels[0].shape[0]
    for i, panel in enumerate(panels):
        if panel.shape[0] != height:
            raise ValueError(f"panel {i} is {panel.shape[0]} px tall, expected {height}")
    width = sum(p.shape[1] for p in panels) + SEPARATOR * (len(panels) - 1)
    canvas = Image.new("RGB", (width, TITLE_HEIGHT + height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for panel, title in zip(panels, titles):
        canvas.paste(Image.fromarray(panel.astype(np.uint8)), (x, TITLE_HEIGHT))
        draw.text((x + 4, 3), title, fill="black", font=font())
        x += panel.shape[1] + SEPARATOR
    return np.asarray(canvas)


def legend(class_names, cmap, width, ignore_label=IGNORE_LABEL):
    """[h, width, 3] white band of colour swatches and class names (ignore last)."""
    entries = [(name, cmap[k]) for k, name in enumerate(class_names)]
    entries.append(("ignore", cmap[ignore_label]))
    per_row = max(1, (width - 2 * MARGIN) // LEGEND_ENTRY_WIDTH)
    rows = -(-len(entries) // per_row)
    canvas = Image.new("RGB", (width, 2 * MARGIN + rows * LEGEND_ROW), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, colour) in enumerate(entries):
        x = MARGIN + (i % per_row) * LEGEND_ENTRY_WIDTH
        y = MARGIN + (i // per_row) * LEGEND_ROW
        box = [x, y, x + SWATCH - 1, y + SWATCH - 1]
        draw.rectangle(box, fill=tuple(int(c) for c in colour), outline=(128, 128, 128))
        draw.text((x + SWATCH + 6, y + 1), str(name)[:18], fill="black", font=font())
    return np.asarray(canvas)


def compose(panels, titles, class_names, cmap):
    """One readable picture: enlarged titled panels above a legend."""
    factor = scale_factor(*panels[0].shape[:2])
    row = titled_row([enlarge(p, factor) for p in panels], titles)
    key = legend(class_names, cmap, row.shape[1])
    return np.concatenate([row, key], axis=0)


def _save(output_dir, index, name, prefix, picture):
    stem = os.path.splitext(os.path.basename(name))[0]
    path = os.path.join(output_dir, f"{prefix}{index:04d}{'_' + stem if stem else ''}.png")
    Image.fromarray(picture).save(path)
    return path


def _name(names, i):
    return names[i].decode() if isinstance(names[i], bytes) else str(names[i])


def visualize(model, dataset, output_dir, num_images, cmap, class_names):
    """Writes <output_dir>/<index>_<id>.png (image | ground truth | prediction, legend)
    for the first num_images of an eval stream; returns the paths."""
    os.makedirs(output_dir, exist_ok=True)
    step = evaluator.make_eval_step(model, model.num_classes)
    written = []
    for batch in dataset:
        height, width = evaluator._batch_sizes(batch)
        _, predictions, _ = step(batch["image"], batch["label"], height, width)
        predictions = predictions.numpy()
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
            picture = compose(panels, PANEL_TITLES, class_names, cmap)
            written.append(_save(output_dir, len(written), _name(names, i), "", picture))
    return written


def weak_branch(model, batch):
    """The model's weak branch (`PseudoSegModel.pseudo_labels`) on one extra batch, with
    the train step's arguments (no dropout), leaving the moving statistics as they were."""
    labels = batch["image_labels"] if model.options.mode == "weakly" else None
    valid = batch.get("weak_valid", batch["valid"])
    with model.frozen_statistics():  # a picture must not change the model it draws
        return model.pseudo_labels(batch["image"], valid, image_labels=labels, dropout=False)


def method_maps(model, batch):
    """The method's maps of one extra batch at the crop size, from the model's own weak
    branch: CAM max [B,H,W] (None without the SGC), SGC arg-max [B,H,W] (None without
    it), the pseudo label [B,H,W] (arg-max; ignore where L_u does not use it) and the
    strong view's prediction [B,H,W]."""
    size = tf.shape(batch["image"])[1:3]
    out = weak_branch(model, batch)
    strong = model.deeplab.forward(batch["strong"], training=False)["logits"]

    def classes(scores):
        ids = tf.argmax(scores, axis=-1, output_type=tf.int32)[..., tf.newaxis]
        return resize_nearest(ids, size)[..., 0].numpy()

    cam = sgc = None
    if "cam" in out:
        cam_max = tf.reduce_max(out["cam"], axis=-1, keepdims=True)
        cam = resize_bilinear(cam_max, size)[..., 0].numpy()
        sgc = classes(out["sgc_logits"])
    # Drawn as L_u sees it: pixels outside the strong view's valid mask (padding, CutOut)
    # or below the confidence threshold supervise nothing, so they show as ignore.
    pseudo = classes(out["probs"])
    confident = tf.reduce_max(out["probs"], axis=-1, keepdims=True)
    confident = tf.cast(confident >= model.options.confidence_threshold, tf.int32)
    used = resize_nearest(confident, size)[..., 0].numpy() * batch["valid"].numpy()[..., 0]
    pseudo = np.where(used > 0, pseudo, IGNORE_LABEL)
    return cam, sgc, pseudo, classes(strong)


def visualize_method(model, dataset, output_dir, num_images, cmap, class_names):
    """Writes <output_dir>/extra_<index>_<id>.png with the method's panels for the first
    num_images of an extra stream (weak and strong views); returns the paths."""
    if model.options.mode == "supervised":
        raise ValueError("method panels need a PseudoSeg model; this one is supervised")
    os.makedirs(output_dir, exist_ok=True)
    written = []
    for batch in dataset:
        cam, sgc, pseudo, strong = method_maps(model, batch)
        weak_images, strong_images = batch["image"].numpy(), batch["strong"].numpy()
        names = batch["filename"].numpy() if "filename" in batch else [b""] * len(weak_images)
        for i in range(len(weak_images)):
            if len(written) >= num_images:
                return written
            panels, titles = [np.clip(weak_images[i], 0, 255).round()], ["weak view"]
            if cam is not None:
                panels += [heatmap(cam[i]), colormap.colorize(sgc[i], cmap)]
                titles += ["CAM", "SGC"]
            panels += [
                colormap.colorize(pseudo[i], cmap),
                np.clip(strong_images[i], 0, 255).round(),
                colormap.colorize(strong[i], cmap),
            ]
            titles += ["pseudo label", "strong view", "strong prediction"]
            picture = compose(panels, titles, class_names, cmap)
            written.append(_save(output_dir, len(written), _name(names, i), "extra_", picture))
    return written
