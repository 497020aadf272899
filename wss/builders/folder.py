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

The work is split by job: folder_inputs (classes.txt, --label_map, files by stem),
folder_masks (the worker that reads and encodes one image and mask), folder_plan (the
splits); this module writes them. Kept free of TensorFlow (workers start fast);
wss.builders.tfrecord_writer is imported lazily.
"""

import os
import sys
import time
from typing import List, Optional

from wss import files
from wss.builders.folder_inputs import (
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    FolderDataError,
    files_by_stem,
    palette_colors,
    parse_label_map,
    read_classes,
    resolve_colors,
)
from wss.builders.folder_masks import (
    VOC_IGNORE_COLOR,
    FolderItem,
    encode_item,
    load_image,
    load_mask,
    mask_values,
)
from wss.builders.folder_plan import FolderPlan, default_crops, plan_folder, split_labeled
from wss.data import image_io
from wss.data.descriptors import IGNORE_LABEL

# The names this module has always offered (tests and datasets/build_folder_data.py use them).
__all__ = [
    "IGNORE_LABEL",
    "IMAGE_EXTENSIONS",
    "MASK_EXTENSIONS",
    "SPLITS",
    "VOC_IGNORE_COLOR",
    "FolderDataError",
    "FolderItem",
    "FolderPlan",
    "build_folder",
    "default_crops",
    "encode_item",
    "files_by_stem",
    "image_io",
    "load_image",
    "load_mask",
    "mask_values",
    "palette_colors",
    "parse_label_map",
    "plan_folder",
    "read_classes",
    "resolve_colors",
    "split_labeled",
]

SPLITS = ("train", "val", "unlabeled", "extra")


def _stale_files(output_dir: str) -> List[str]:
    out = []
    for s in SPLITS:
        out += files.glob(os.path.join(output_dir, f"{s}-*.tfrecord"))
        out += files.glob(os.path.join(output_dir, f"{s}.txt"))
    out += files.glob(os.path.join(output_dir, "descriptor.json"))
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
    from wss.builders import tfrecord_writer  #  # (TF)

    files.makedirs(output_dir)
    stale = _stale_files(output_dir)
    if stale:
        if not overwrite:
            raise FolderDataError(
                f"{output_dir} already holds a build ({stale[0]}, ...); pass "
                "--overwrite to replace it or choose another --output_dir"
            )
        for f in stale:
            files.remove(f)
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
        name=name or os.path.basename(files.absolute(output_dir).rstrip("/")),
        num_classes=len(plan.class_names),
        class_names=tuple(plan.class_names),
        ignore_label=IGNORE_LABEL,
        splits_to_sizes=sizes,
        eval_crop_size=int(eval_crop_size or eval_crop),
        train_crop_size=int(train_crop_size or train_crop),
        class_colors=plan.colors,
    )
    build = {
        "images": files.absolute(images_dir),
        "masks": files.absolute(masks_dir),
        "unlabeled": files.absolute(unlabeled_dir) if unlabeled_dir else None,
        "classes": files.absolute(classes_path),
        "label_map": {str(k): v for k, v in sorted(plan.label_map.items())},
        "val_fraction": val_fraction,
        "seed": seed,
        "allow_missing_masks": allow_missing_masks,
        "max_image_side": plan.max_side,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return descriptors.save_descriptor(desc, output_dir, extra={"build": build})
