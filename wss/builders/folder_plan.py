"""The folder builder's plan: images matched to masks by stem, split into train / val /
unlabeled / extra, with the facts the descriptor needs (class names, colours, crops).

Kept free of TensorFlow (builder workers start fast).
"""

import dataclasses
import io
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from wss.builders.folder_inputs import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    FolderDataError,
    files_by_stem,
    parse_label_map,
    read_classes,
    resolve_colors,
)
from wss.builders.folder_masks import FolderItem
from wss.data import image_io


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
        with Image.open(io.BytesIO(image_io.read_file_bytes(path))) as im:
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
    images = files_by_stem(images_dir, IMAGE_EXTENSIONS, "images")
    masks = files_by_stem(masks_dir, MASK_EXTENSIONS, "masks")
    if not images:
        raise FolderDataError(
            f"images folder {images_dir!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    if not masks:
        raise FolderDataError(
            f"masks folder {masks_dir!r} holds no masks ({', '.join(MASK_EXTENSIONS)}) for the "
            f"{len(images):,} images of {images_dir}. Fix: pass the folder of the masks as "
            "--masks (matched by file stem: images/a.jpg <-> masks/a.png)"
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
        extra = files_by_stem(unlabeled_dir, IMAGE_EXTENSIONS, "unlabeled")
        if not extra:
            raise FolderDataError(
                f"unlabeled folder {unlabeled_dir!r} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}). Fix: pass the folder of the unlabeled "
                "images as --unlabeled, or leave --unlabeled out"
            )
        for s, p in extra.items():
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
