"""A small synthetic segmentation dataset ('demo'), generated from a seed.

Five object classes (disc, square, triangle, ring, cross) on textured backgrounds with
background clutter, partial occlusion and varied scale. Each class has its own shape
and texture and a preferred hue, but hues are drawn with a wide spread so colour alone
does not identify the class. Written as DeepLab TFRecords:
  train-*   DEMO_TRAIN images (also the extra set, like the release's train_aug)
  val-*     DEMO_VAL images
  labeled-* and labeled.txt  DEMO_LABELED train images, class-balanced
or, for the README's worked example of training on one's own data, as a folder of PNG
images, palette-PNG masks, unlabeled images and classes.txt (export_demo_folders).
"""

import os
from typing import Dict, List, Tuple

import numpy as np

from wss import errors, files

NUM_CLASSES = 6
DEMO_TRAIN = 400
DEMO_VAL = 100
DEMO_LABELED = 32
MIN_SIZE, MAX_SIZE = 48, 64
_MARKER = "DEMO_COMPLETE.json"
_VERSION = 1

_CLASS_HUES = {1: 0.0, 2: 0.2, 3: 0.4, 4: 0.6, 5: 0.8}
_HUE_SPREAD = 0.15


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV->RGB for arrays in [0,1]."""
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(np.shape(h) + (3,))
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        out[m] = np.stack(
            [
                np.broadcast_to(r, np.shape(h))[m],
                np.broadcast_to(g, np.shape(h))[m],
                np.broadcast_to(b, np.shape(h))[m],
            ],
            -1,
        )
    return out


def _colour(rng, hue):
    return _hsv_to_rgb(
        np.array(hue % 1.0), np.array(rng.uniform(0.4, 1.0)), np.array(rng.uniform(0.45, 1.0))
    )


def _texture(rng, kind, h, w, colour):
    """An HxWx3 float texture in [0,1] around `colour`."""
    ys, xs = np.mgrid[0:h, 0:w]
    if kind == "stripes":
        a = rng.uniform(0, np.pi)
        t = (np.sin((xs * np.cos(a) + ys * np.sin(a)) * rng.uniform(0.6, 1.2)) > 0) * 0.35
    elif kind == "checker":
        p = rng.randint(3, 6)
        t = (((ys // p) + (xs // p)) % 2) * 0.35
    elif kind == "dots":
        t = (rng.rand(h, w) > 0.7) * 0.4
    else:  # smooth shading
        t = (ys / max(h, 1)) * 0.25
    shade = 1.0 - t[..., None]
    return np.clip(colour[None, None, :] * shade + rng.normal(0, 0.03, (h, w, 3)), 0, 1)


def _shape_mask(cls, h, w, cy, cx, r, angle):
    """Boolean mask of class `cls`'s shape centred at (cy, cx), size r, rotated."""
    ys, xs = np.mgrid[0:h, 0:w].astype(float)
    dy, dx = ys - cy, xs - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    d = np.hypot(dy, dx)
    if cls == 1:  # disc
        return d <= r
    if cls == 2:  # square
        return (np.abs(u) <= r * 0.85) & (np.abs(v) <= r * 0.85)
    if cls == 3:  # triangle
        return (v <= r * 0.6) & (v >= -r + 1.8 * np.abs(u))
    if cls == 4:  # ring
        return (d <= r) & (d >= r * 0.55)
    if cls == 5:  # cross
        arm = r * 0.33
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    raise ValueError(cls)


_CLASS_TEXTURE = {1: "smooth", 2: "stripes", 3: "dots", 4: "smooth", 5: "checker"}


def generate_image(seed: int, index: int) -> Tuple[np.ndarray, np.ndarray]:
    """One (image uint8 HxWx3, label uint8 HxW) pair, a pure function of (seed, index)."""
    rng = np.random.RandomState((seed * 1000003 + index) % (2**32))
    h, w = rng.randint(MIN_SIZE, MAX_SIZE + 1, size=2)
    bg = _texture(
        rng, rng.choice(["stripes", "checker", "dots", "smooth"]), h, w, _colour(rng, rng.rand())
    )
    image = bg * rng.uniform(0.6, 1.0) + 0.2 * _texture(
        rng, "smooth", h, w, _colour(rng, rng.rand())
    )
    label = np.zeros((h, w), np.uint8)
    # Clutter: background blobs and bars in arbitrary colours (label stays 0).
    ys, xs = np.mgrid[0:h, 0:w]
    for _ in range(rng.randint(2, 6)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        if rng.rand() < 0.5:
            m = ((ys - cy) / rng.uniform(2, 6)) ** 2 + ((xs - cx) / rng.uniform(2, 10)) ** 2 <= 1
        else:
            a = rng.uniform(0, np.pi)
            m = np.abs((xs - cx) * np.sin(a) - (ys - cy) * np.cos(a)) <= rng.uniform(0.5, 1.5)
            m &= np.hypot(ys - cy, xs - cx) < rng.uniform(5, 20)
        image[m] = _colour(rng, rng.rand())
    # Objects, drawn in order so later ones occlude earlier ones.
    for _ in range(rng.randint(1, 5)):
        cls = rng.randint(1, NUM_CLASSES)
        r = rng.uniform(6, 18)
        cy, cx = rng.uniform(r * 0.3, h - r * 0.3), rng.uniform(r * 0.3, w - r * 0.3)
        m = _shape_mask(cls, h, w, cy, cx, r, rng.uniform(0, 2 * np.pi))
        if m.sum() < 8:
            continue
        hue = _CLASS_HUES[cls] + rng.normal(0, _HUE_SPREAD)
        tex = _texture(rng, _CLASS_TEXTURE[cls], h, w, _colour(rng, hue))
        image[m] = tex[m]
        label[m] = cls
    image = np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1)
    return (image * 255).round().astype(np.uint8), label


def _encode(item):
    """Builder worker: (seed, index, id) -> EncodedRecord."""
    from wss.data import (
        image_io,
        records,
    )

    seed, index, name = item
    image, label = generate_image(seed, index)
    return records.EncodedRecord(
        filename=name,
        image_bytes=image_io.encode_image(image, "jpeg"),
        image_format="jpeg",
        height=image.shape[0],
        width=image.shape[1],
        label_bytes=image_io.encode_label(label),
    )


def _items(seed: int, prefix: str, start: int, count: int) -> List[tuple]:
    return [(seed, start + i, f"demo_{prefix}_{i:05d}") for i in range(count)]


def train_items(seed: int, count: int = DEMO_TRAIN) -> List[tuple]:
    """(seed, index, id) of the train split's images."""
    return _items(seed, "train", 0, count)


def val_items(seed: int, count: int = DEMO_VAL) -> List[tuple]:
    """(seed, index, id) of the val split's images (an index range train never reaches)."""
    return _items(seed, "val", 10**6, count)


def pretrain_items(seed: int, count: int) -> List[tuple]:
    """(seed, index, id) of images for backbone pretraining (wss.pretrain), from an index
    range neither train nor val reaches."""
    return _items(seed, "pretrain", 2 * 10**6, count)


def padded_arrays(items) -> Tuple[np.ndarray, np.ndarray]:
    """Images [N, S, S, 3] float32 in [0, 255] and labels [N, S, S] int32 of `items`, with
    S = MAX_SIZE + 1 (every demo image fits), padded bottom/right as DeepLab pads (image
    PAD_PIXEL, label IGNORE_LABEL)."""
    from wss.data.augment import IGNORE_LABEL, PAD_PIXEL

    size = MAX_SIZE + 1
    images = np.full((len(items), size, size, 3), PAD_PIXEL, np.float32)
    labels = np.full((len(items), size, size), IGNORE_LABEL, np.int32)
    for n, (seed, index, _) in enumerate(items):
        image, label = generate_image(seed, index)
        h, w = label.shape
        images[n, :h, :w] = image
        labels[n, :h, :w] = label
    return images, labels


def labeled_sample(seed: int, num_train: int = DEMO_TRAIN, num_labeled: int = DEMO_LABELED):
    """The class-balanced labeled subset of the train split (a splits.Sample)."""
    from wss.data import splits

    train = train_items(seed, num_train)
    classes = [set(np.unique(generate_image(s, i)[1]).tolist()) - {0} for s, i, _ in train]
    return splits.sample_balanced(
        [n for _, _, n in train], classes, num_labeled, NUM_CLASSES, min_per_class=2, seed=seed
    )


def build_demo_dataset(
    dataset_dir: str,
    seed: int = 0,
    num_train: int = DEMO_TRAIN,
    num_val: int = DEMO_VAL,
    num_labeled: int = DEMO_LABELED,
    num_shards: int = 2,
    progress: bool = False,
) -> Dict[str, int]:
    """Generates and writes the demo dataset; returns split sizes."""
    from wss.builders import tfrecord_writer
    from wss.data import splits

    train = train_items(seed, num_train)
    val = val_items(seed, num_val)
    sample = labeled_sample(seed, num_train, num_labeled)
    chosen = set(sample.ids)
    labeled = [t for t in train if t[2] in chosen]
    for split, items in (("train", train), ("val", val), ("labeled", labeled)):
        tfrecord_writer.write_split(
            dataset_dir,
            split,
            items,
            _encode,
            num_shards=num_shards,
            num_workers=1,
            progress=progress,
        )
    splits.write_id_list(
        os.path.join(dataset_dir, "labeled.txt"),
        sample.ids,
        splits.sample_header(sample, "demo train"),
    )
    sizes = {"train": num_train, "val": num_val, "labeled": num_labeled}
    files.write_json(
        os.path.join(dataset_dir, _MARKER), {"version": _VERSION, "seed": seed, "sizes": sizes}
    )
    return sizes


def export_demo_folders(
    output_dir: str, seed: int = 0, num_labeled: int = 64, num_unlabeled: int = DEMO_TRAIN - 64
) -> Dict[str, int]:
    """Writes demo images as a user's own data would look: `images/` (PNG) with
    `masks/` (palette PNGs, same stems), `unlabeled/` (images without masks) and
    `classes.txt` (names and colours), the input of datasets/build_folder_data.py.
    Returns the counts."""
    from PIL import Image

    from wss.data import image_io
    from wss.data.descriptors import DEMO_CLASS_NAMES

    if num_labeled < 1 or num_unlabeled < 0:
        raise errors.InputError(
            f"--num_labeled={num_labeled} --num_unlabeled={num_unlabeled}: the folders need "
            "at least one labeled image (and no negative count), or build_folder_data.py "
            "has nothing to train on. Fix: --num_labeled=64 (the default) or more"
        )

    for sub in ("images", "masks", "unlabeled"):
        files.makedirs(os.path.join(output_dir, sub))
    palette = image_io.voc_colormap(256).astype(np.uint8)
    items = train_items(seed, num_labeled + num_unlabeled)
    for n, (s, i, name) in enumerate(items):
        image, label = generate_image(s, i)
        if n < num_labeled:
            image_io.save_png(image, os.path.join(output_dir, "images", name + ".png"))
            mask = Image.fromarray(label.astype(np.uint8), mode="P")
            mask.putpalette(palette.ravel().tolist())
            image_io.save_png(mask, os.path.join(output_dir, "masks", name + ".png"))
        else:
            image_io.save_png(image, os.path.join(output_dir, "unlabeled", name + ".png"))
    lines = [
        "{} #{:02x}{:02x}{:02x}\n".format(class_name, *palette[c])
        for c, class_name in enumerate(DEMO_CLASS_NAMES)
    ]
    files.write_text(os.path.join(output_dir, "classes.txt"), "".join(lines))
    return {"labeled": num_labeled, "unlabeled": num_unlabeled}


def ensure_demo_dataset(dataset_dir: str, seed: int = 0) -> str:
    """Builds the demo dataset in `dataset_dir` unless a complete one with this seed is
    there; returns dataset_dir."""
    marker = os.path.join(dataset_dir, _MARKER)
    if files.exists(marker):
        info = files.read_json(marker)
        if info.get("seed") == seed and info.get("version") == _VERSION:
            return dataset_dir
    build_demo_dataset(dataset_dir, seed=seed)
    return dataset_dir
