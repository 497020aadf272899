"""A folder of images and masks to DeepLab TFRecords plus a descriptor.json: library side.

Input:
  images/      photos (JPEG, PNG, BMP, TIFF, ...), one per id (the file stem is the id);
  masks/       one mask per labeled image with the same stem: an index PNG (grey 'L'
               or palette 'P': the index values are the class ids), a 16-bit index PNG,
               or an RGB PNG in the class colours; 255 means ignore;
  unlabeled/   optional photos without masks;
  classes.txt  one class name per line, line i = class id i (background first), each
               optionally followed by a colour as `#rrggbb`.
`label_map` ('0:0,255:1') maps raw mask values to class ids first (values it does not
name keep their value); any value mapped to 255 is ignored by losses and metrics.

Output (in output_dir): the splits 'train' and 'val' (labeled, split by val_fraction with
the seed), 'unlabeled' (records without labels) and 'extra' (train + unlabeled, the
PseudoSeg extra set), an id list per split ({split}.txt) and descriptor.json, which
`Experiment.dataset_name` can name directly. descriptor.json is written last, so its
presence means the build finished.

Kept free of TensorFlow (workers start fast); wss.data.tfrecord_writer is imported lazily.
"""

import dataclasses
import glob
import io
import os
import re
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from wss.data import image_io, records

IGNORE_LABEL = 255
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg")
# The VOC palette's colour of 255; RGB masks drawn in it are read as ignore.
VOC_IGNORE_COLOR = (224, 224, 192)
SPLITS = ("train", "val", "unlabeled", "extra")
_COLOR_RE = re.compile(r"^(.*?)\s+#([0-9a-fA-F]{6})$")


class FolderDataError(image_io.BadPairError):
    """A problem with the input folders or classes.txt (names the file and the fix)."""


@dataclasses.dataclass(frozen=True)
class FolderItem:
    """Work item for one record: its id, image, optional mask and how to read the mask."""

    image_id: str
    image_path: str
    mask_path: Optional[str]
    num_classes: int
    label_map: Tuple[Tuple[int, int], ...] = ()
    colors: Tuple[Tuple[int, int, int], ...] = ()


# ----------------------------------------------------------------------- inputs


def read_classes(path: str) -> Tuple[List[str], List[Optional[Tuple[int, int, int]]]]:
    """Class names (line i = class id i) and optional `#rrggbb` colours of classes.txt."""
    if not os.path.isfile(path):
        raise FolderDataError(
            f"{path}: classes file not found; write one class name per line, background first"
        )
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n").strip() for line in f]
    while lines and not lines[-1]:
        lines.pop()
    names, colors = [], []
    for i, line in enumerate(lines):
        if not line:
            raise FolderDataError(
                f"{path}: line {i + 1} is empty; line i names class id i-1, so "
                "blank lines would shift every later class"
            )
        m = _COLOR_RE.match(line)
        if m:
            line = m.group(1).strip()
            hx = m.group(2)
            colors.append(tuple(int(hx[j : j + 2], 16) for j in (0, 2, 4)))
        else:
            colors.append(None)
        names.append(line)
    if len(names) < 2:
        raise FolderDataError(
            f"{path}: {len(names)} classes; need at least 2 (background and one foreground class)"
        )
    if len(names) > 255:
        raise FolderDataError(f"{path}: {len(names)} classes; at most 255 (255 is ignore)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FolderDataError(f"{path}: class names {dup} appear more than once")
    return names, colors


def parse_label_map(spec, num_classes: int) -> Dict[int, int]:
    """'0:0,255:1' (or a dict) -> {raw value: class id}; targets in [0, C) or 255."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            if ":" not in part:
                raise FolderDataError(
                    f"--label_map entry {part!r} is not RAW:CLASS (e.g. 0:0,255:1)"
                )
            a, b = part.split(":", 1)
            try:
                pairs.append((int(a), int(b)))
            except ValueError:
                raise FolderDataError(
                    f"--label_map entry {part!r}: RAW and CLASS must be integers"
                ) from None
    out = {}
    for raw, cls in pairs:
        raw, cls = int(raw), int(cls)
        if raw < 0 or raw > 65535:
            raise FolderDataError(f"--label_map: raw value {raw} is not in 0..65535")
        if not (0 <= cls < num_classes or cls == IGNORE_LABEL):
            raise FolderDataError(
                f"--label_map: {raw}:{cls} maps to {cls}, which is not a class "
                f"id 0..{num_classes - 1} nor {IGNORE_LABEL} (ignore)"
            )
        if raw in out and out[raw] != cls:
            raise FolderDataError(f"--label_map: raw value {raw} is mapped twice")
        out[raw] = cls
    return out


def _files_by_stem(folder: str, extensions: Sequence[str], what: str) -> Dict[str, str]:
    """{stem: path} of the files of `folder` with an allowed extension; raises on a stem
    used by two files."""
    if not os.path.isdir(folder):
        raise FolderDataError(f"{what} folder {folder!r} does not exist")
    out: Dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        stem, ext = os.path.splitext(name)
        if name.startswith(".") or not os.path.isfile(path) or ext.lower() not in extensions:
            continue
        if stem in out:
            raise FolderDataError(
                f"{out[stem]} and {path} have the same stem {stem!r}; ids must "
                f"be unique within the {what} folder"
            )
        out[stem] = path
    return out


def palette_colors(mask_path: str, n: int) -> List[Optional[Tuple[int, int, int]]]:
    """The first n palette colours of a palette ('P') mask (None where it has none)."""
    try:
        with Image.open(mask_path) as im:
            pal = im.getpalette() if im.mode == "P" else None
    except Exception:  #  # reported when the mask is encoded
        pal = None
    pal = pal or []
    return [tuple(pal[3 * k : 3 * k + 3]) if len(pal) >= 3 * k + 3 else None for k in range(n)]


def resolve_colors(
    explicit: Sequence[Optional[Tuple[int, int, int]]], mask_paths: Sequence[str]
) -> Tuple[Tuple[int, int, int], ...]:
    """Per class: the classes.txt colour, else the palette of the first palette mask, else
    the VOC palette's."""
    n = len(explicit)
    from_palette: List[Optional[Tuple[int, int, int]]] = [None] * n
    for p in mask_paths[:20]:
        if p.lower().endswith(".png"):
            cand = palette_colors(p, n)
            if any(c is not None for c in cand):
                from_palette = cand
                break
    voc = image_io.voc_colormap(n)
    return tuple(
        tuple(int(v) for v in (e or pc or voc[k]))
        for k, (e, pc) in enumerate(zip(explicit, from_palette))
    )


# ---------------------------------------------------------------------- workers


def load_image(path: str) -> Tuple[np.ndarray, bytes, str]:
    """(RGB pixels, bytes to store, format): JPEG/PNG in RGB or grey are stored as they are;
    anything else (BMP, TIFF, palette or 16-bit PNG, CMYK JPEG, ...) is re-encoded as PNG
    so that the record decodes to exactly the pixels checked here."""
    try:
        data = image_io.read_file_bytes(path)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            rgb = np.asarray(im.convert("RGB"))
    except Exception as e:  #  # PIL raises many types
        raise image_io.BadPairError(
            f"{path}: cannot decode image ({e}); re-export it as JPEG or PNG, or remove it"
        ) from e
    fmt = image_io.sniff_format(data)
    if fmt in ("jpeg", "png") and mode in ("RGB", "L"):
        return rgb, data, fmt
    return rgb, image_io.encode_image(rgb, "png"), "png"


def _raw_mask(path: str, colors: Sequence[Tuple[int, int, int]]) -> np.ndarray:
    """The mask's raw values (int64 HxW) before the label map."""
    if os.path.splitext(path)[1].lower() in (".jpg", ".jpeg"):
        raise image_io.BadPairError(
            f"{path}: JPEG masks are lossy (edges get values between classes); save masks as PNG"
        )
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "L"):
                return np.asarray(im).astype(np.int64)
            if im.mode == "1":
                return np.asarray(im.convert("L")).astype(np.int64)
            if im.mode.startswith("I"):
                return np.asarray(im).astype(np.int64)
            if im.mode == "LA":
                return np.asarray(im)[..., 0].astype(np.int64)
            if im.mode in ("RGB", "RGBA"):
                rgb = np.asarray(im.convert("RGB"))
            else:
                raise image_io.BadPairError(
                    f"{path}: unsupported mask mode {im.mode!r}; save masks "
                    "as index (grey or palette) PNGs"
                )
    except image_io.BadPairError:
        raise
    except Exception as e:
        raise image_io.BadPairError(
            f"{path}: cannot decode mask ({e}); re-export it as an index PNG, or remove it"
        ) from e
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return rgb[..., 0].astype(np.int64)  # an index mask saved as grey RGB
    table = {tuple(c): k for k, c in reversed(list(enumerate(colors)))}
    table.setdefault(VOC_IGNORE_COLOR, IGNORE_LABEL)
    flat = rgb.reshape(-1, 3).astype(np.int64)
    keys = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inv = np.unique(keys, return_inverse=True)
    out = np.empty(len(uniq), np.int64)
    for j, key in enumerate(uniq):
        c = (int(key) >> 16, (int(key) >> 8) & 255, int(key) & 255)
        if c not in table:
            raise image_io.BadPairError(
                f"{path}: colour #{int(key):06x} is not a class colour (classes.txt colours: "
                f"{['#%02x%02x%02x' % tuple(x) for x in colors]}); give index PNGs or add "
                "`#rrggbb` colours to classes.txt"
            )
        out[j] = table[c]
    return out[inv].reshape(rgb.shape[:2])


def load_mask(
    path: str,
    num_classes: int,
    label_map: Dict[int, int] = None,
    colors: Sequence[Tuple[int, int, int]] = (),
) -> np.ndarray:
    """A mask file as class ids (uint8 HxW, 255 = ignore) after the label map.

    Raises BadPairError naming the file for a value that is neither a class id, 255, nor a
    key of the label map, and for a 0/255-only mask read without a label map (a binary
    mask whose foreground would silently become 'ignore').
    """
    label_map = dict(label_map or {})
    raw = _raw_mask(path, colors or tuple(map(tuple, image_io.voc_colormap(num_classes))))
    values, inv = np.unique(raw, return_inverse=True)
    out = np.empty(len(values), np.uint8)
    bad = []
    for j, v in enumerate(values.tolist()):
        if v in label_map:
            out[j] = label_map[v]
        elif 0 <= v < num_classes or v == IGNORE_LABEL:
            out[j] = v
        else:
            bad.append(v)
    if bad:
        raise image_io.BadPairError(
            f"{path}: mask values {bad[:10]} are not class ids 0..{num_classes - 1} (classes.txt "
            f"has {num_classes} classes), {IGNORE_LABEL} (ignore), nor keys of --label_map "
            f"{label_map or '(none given)'}; fix classes.txt or map them, e.g. "
            f"--label_map={bad[0]}:1"
        )
    if not label_map and set(values.tolist()) == {0, IGNORE_LABEL}:
        raise image_io.BadPairError(
            f"{path}: mask holds only 0 and 255, which looks like a binary mask; 255 would be "
            'read as "ignore". Pass --label_map=0:0,255:1 for binary masks (or '
            "--label_map=255:255 if 255 really marks ignored pixels)"
        )
    return out[inv].reshape(raw.shape)


def encode_item(item: FolderItem) -> records.EncodedRecord:
    """Builder worker: reads, checks and encodes one image and its mask (if any)."""
    image, data, fmt = load_image(item.image_path)
    label_bytes = None
    if item.mask_path:
        label = load_mask(item.mask_path, item.num_classes, dict(item.label_map), item.colors)
        if label.shape != image.shape[:2]:
            raise image_io.BadPairError(
                f"{item.mask_path}: mask size {label.shape[1]}x{label.shape[0]} (WxH) differs "
                f"from the size {image.shape[1]}x{image.shape[0]} of its image "
                f"{item.image_path}; the mask does not belong to this image (or was resized)"
            )
        label_bytes = image_io.encode_label(label)
    return records.EncodedRecord(
        filename=item.image_id,
        image_bytes=data,
        image_format=fmt,
        height=image.shape[0],
        width=image.shape[1],
        label_bytes=label_bytes,
    )


# ------------------------------------------------------------------------ build


@dataclasses.dataclass
class FolderPlan:
    """What a build will write: items per split and the facts for the descriptor."""

    class_names: List[str]
    colors: Tuple[Tuple[int, int, int], ...]
    label_map: Dict[int, int]
    splits: Dict[str, List[FolderItem]]
    max_side: int
    orphan_masks: List[str]


def split_labeled(
    ids: Sequence[str], val_fraction: float, seed: int
) -> Tuple[List[str], List[str]]:
    """(train ids, val ids): a seeded permutation of the sorted ids; val gets
    round(val_fraction * n) ids (at least 1 when val_fraction > 0), train keeps >= 1."""
    if not 0.0 <= val_fraction < 1.0:
        raise FolderDataError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    ids = sorted(ids)
    n = len(ids)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n_val == 0 and n >= 2:
        n_val = 1
    n_val = min(n_val, n - 1) if n else 0
    order = np.random.RandomState(seed).permutation(n)
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


def _image_side(path: str) -> int:
    try:
        with Image.open(path) as im:
            return max(im.size)
    except Exception as e:
        raise image_io.BadPairError(
            f"{path}: cannot decode image ({e}); re-export it as JPEG or PNG, or remove it"
        ) from e


def plan_folder(
    images_dir: str,
    masks_dir: str,
    classes_path: str,
    unlabeled_dir: Optional[str] = None,
    val_fraction: float = 0.1,
    label_map=None,
    seed: int = 0,
    allow_missing_masks: bool = False,
) -> FolderPlan:
    """Matches images to masks by stem and splits them; raises naming the first problem."""
    names, explicit = read_classes(classes_path)
    c = len(names)
    lmap = parse_label_map(label_map, c)
    images = _files_by_stem(images_dir, IMAGE_EXTENSIONS, "images")
    masks = _files_by_stem(masks_dir, MASK_EXTENSIONS, "masks")
    if not images:
        raise FolderDataError(
            f"images folder {images_dir!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    missing = [images[s] for s in images if s not in masks]
    if missing and not allow_missing_masks:
        raise FolderDataError(
            f"{missing[0]}: no mask with stem {os.path.splitext(os.path.basename(missing[0]))[0]!r}"
            f" in {masks_dir} ({len(missing)} images lack one); add the masks, or pass "
            "--allow_missing_masks to write such images as unlabeled"
        )
    unlabeled = {s: p for s, p in images.items() if s not in masks}
    if unlabeled_dir:
        for s, p in _files_by_stem(unlabeled_dir, IMAGE_EXTENSIONS, "unlabeled").items():
            if s in images:
                raise FolderDataError(
                    f"{p} has the same stem as {images[s]}; ids must be unique "
                    "across --images and --unlabeled"
                )
            unlabeled[s] = p
    labeled = sorted(s for s in images if s in masks)
    if not labeled:
        raise FolderDataError(
            f"no image of {images_dir} has a mask in {masks_dir} (masks are "
            "matched by file stem: images/a.jpg <-> masks/a.png)"
        )
    orphans = sorted(masks[s] for s in masks if s not in images)
    colors = resolve_colors(explicit, [masks[s] for s in labeled])
    train, val = split_labeled(labeled, val_fraction, seed)
    lm = tuple(sorted(lmap.items()))

    def item(s, path, mask):
        return FolderItem(s, path, mask, c, lm, colors)

    splits = {
        "train": [item(s, images[s], masks[s]) for s in train],
        "val": [item(s, images[s], masks[s]) for s in val],
        "unlabeled": [item(s, unlabeled[s], None) for s in sorted(unlabeled)],
    }
    splits["extra"] = sorted(splits["train"] + splits["unlabeled"], key=lambda i: i.image_id)
    max_side = max(
        _image_side(i.image_path) for i in splits["train"] + splits["val"] + splits["unlabeled"]
    )
    return FolderPlan(names, colors, lmap, splits, max_side, orphans)


def default_crops(max_side: int) -> Tuple[int, int]:
    """(train crop, eval crop): eval = smallest 16k+1 >= the largest image side (every eval
    image must fit); train = min(513, eval)."""
    eval_crop = 16 * int(np.ceil(max(max_side - 1, 0) / 16)) + 1
    return min(513, eval_crop), eval_crop


def _stale_files(output_dir: str) -> List[str]:
    out = []
    for s in SPLITS:
        out += glob.glob(os.path.join(output_dir, f"{s}-*.tfrecord"))
        out += glob.glob(os.path.join(output_dir, f"{s}.txt"))
    out += glob.glob(os.path.join(output_dir, "descriptor.json"))
    return sorted(out)


def build_folder(
    images_dir: str,
    masks_dir: str,
    classes_path: str,
    output_dir: str,
    unlabeled_dir: Optional[str] = None,
    val_fraction: float = 0.1,
    label_map=None,
    seed: int = 0,
    allow_missing_masks: bool = False,
    name: Optional[str] = None,
    train_crop_size: Optional[int] = None,
    eval_crop_size: Optional[int] = None,
    num_shards: int = 4,
    num_workers: int = 0,
    write_extra: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Writes the splits, their id lists and descriptor.json; returns the descriptor path.

    Raises FolderDataError / BadPairError naming the offending file; refuses to write over
    an earlier build's files (stale shards would mix with new ones) unless `overwrite`.
    """
    from wss.data import descriptors
    from wss.data import splits as splits_lib

    plan = plan_folder(
        images_dir,
        masks_dir,
        classes_path,
        unlabeled_dir,
        val_fraction,
        label_map,
        seed,
        allow_missing_masks,
    )
    from wss.data import tfrecord_writer  #  # (TF)

    os.makedirs(output_dir, exist_ok=True)
    stale = _stale_files(output_dir)
    if stale:
        if not overwrite:
            raise FolderDataError(
                f"{output_dir} already holds a build ({stale[0]}, ...); pass "
                "--overwrite to replace it or choose another --output_dir"
            )
        for f in stale:
            os.remove(f)
    if plan.orphan_masks:
        sys.stderr.write(
            f"Note: {len(plan.orphan_masks)} masks have no image (first: "
            f"{plan.orphan_masks[0]}); they are not used\n"
        )
    sizes = {}
    for split in SPLITS:
        items = plan.splits[split]
        if not items or (split == "extra" and (not write_extra or not plan.splits["unlabeled"])):
            continue  # without unlabeled images 'extra' would just repeat 'train'
        tfrecord_writer.write_split(
            output_dir, split, items, encode_item, num_shards, num_workers, progress=progress
        )
        splits_lib.write_id_list(
            os.path.join(output_dir, f"{split}.txt"), [i.image_id for i in items]
        )
        sizes[split] = len(items)
    train_crop, eval_crop = default_crops(plan.max_side)
    desc = descriptors.DatasetDescriptor(
        name=name or os.path.basename(os.path.abspath(output_dir)),
        num_classes=len(plan.class_names),
        class_names=tuple(plan.class_names),
        ignore_label=IGNORE_LABEL,
        splits_to_sizes=sizes,
        eval_crop_size=int(eval_crop_size or eval_crop),
        train_crop_size=int(train_crop_size or train_crop),
        class_colors=plan.colors,
    )
    build = {
        "images": os.path.abspath(images_dir),
        "masks": os.path.abspath(masks_dir),
        "unlabeled": os.path.abspath(unlabeled_dir) if unlabeled_dir else None,
        "classes": os.path.abspath(classes_path),
        "label_map": {str(k): v for k, v in sorted(plan.label_map.items())},
        "val_fraction": val_fraction,
        "seed": seed,
        "allow_missing_masks": allow_missing_masks,
        "max_image_side": plan.max_side,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return descriptors.save_descriptor(desc, output_dir, extra={"build": build})
