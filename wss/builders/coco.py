"""COCO 2017 instances to 81-class semantic-segmentation TFRecords: library side.

Class 0 is background, the 80 thing categories in category-id order are 1..80, and
crowd regions are 255 (ignore), painted over everything else. Non-crowd instances are
painted largest first so small objects stay visible. Record ids are
'{image folder}/{file stem}' (e.g. 'train2017/000000177254'), as in the release's
split files. pycocotools (the `coco` extra) is imported only when needed, and checked
before anything is written.
"""

import dataclasses
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from wss import errors, files
from wss.data import image_io, records
from wss.data.errors import DataError

NUM_CLASSES = 81
COCO_INSTALL = 'pip install -e ".[coco]" (or pip install pycocotools)'
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# An image folder holding fewer than this share of the images its JSON lists is incomplete.
MIN_SHARE = 0.9


def _pycocotools(module: str):
    """A pycocotools module, or a MissingPackageError with the install command."""
    return errors.import_optional(module, COCO_INSTALL, "COCO conversion")


@dataclasses.dataclass(frozen=True)
class CocoItem:
    """Work item: one image and (if labeled) its annotations as (class, crowd, area,
    segmentation) tuples."""

    image_id: str
    image_path: str
    height: int
    width: int
    anns: Optional[tuple]  # None = image-only record


def ann_mask(segmentation, height: int, width: int) -> np.ndarray:
    """Binary HxW mask of one COCO segmentation (polygons, RLE or uncompressed RLE)."""
    mask_utils = _pycocotools("pycocotools.mask")
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def semantic_mask(anns: Sequence[tuple], height: int, width: int, mask_fn=ann_mask) -> np.ndarray:
    """The 81-class semantic mask of one image from (class, crowd, area, seg) tuples."""
    label = np.zeros((height, width), np.uint8)
    things = sorted((a for a in anns if not a[1]), key=lambda a: -a[2])
    for cls, _, _, seg in things:
        label[mask_fn(seg, height, width)] = cls
    for _, _, _, seg in (a for a in anns if a[1]):
        label[mask_fn(seg, height, width)] = 255
    return label


def items_from_annotations(annotation_file: str, image_dir: str) -> List[CocoItem]:
    """Work items for every image of a COCO instances JSON (pycocotools)."""
    coco_api = _pycocotools("pycocotools.coco")
    if not files.exists(annotation_file):
        raise DataError(
            f"{annotation_file} not found: expected COCO's annotations/instances_<split>2017.json "
            "(from annotations_trainval2017.zip). Fix: pass the folder holding annotations/ "
            "and the image folders as --coco_dir"
        )
    with files.local_copy(annotation_file) as local:
        coco = coco_api.COCO(local)
    cat_to_class = {c: i + 1 for i, c in enumerate(sorted(coco.getCatIds()))}
    if len(cat_to_class) != NUM_CLASSES - 1:
        raise DataError(
            f"{annotation_file}: {len(cat_to_class)} categories, expected COCO's 80 thing "
            "categories. Fix: pass COCO 2017's instances_<split>2017.json (not panoptic, "
            "stuff or captions annotations)"
        )
    folder = os.path.basename(image_dir.rstrip("/"))
    items = []
    for img_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(img_id)[0]
        anns = tuple(
            (
                cat_to_class[a["category_id"]],
                bool(a.get("iscrowd", 0)),
                float(a.get("area", 0)),
                a["segmentation"],
            )
            for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=None))
        )
        stem = os.path.splitext(info["file_name"])[0]
        items.append(
            CocoItem(
                f"{folder}/{stem}",
                os.path.join(image_dir, info["file_name"]),
                info["height"],
                info["width"],
                anns,
            )
        )
    return items


def items_from_folder(image_dir: str) -> List[CocoItem]:
    """Image-only work items for every image of a folder (e.g. unlabeled2017); a folder
    that is missing or holds no images raises a DataError naming it."""
    names = []
    if files.isdir(image_dir):
        names = sorted(f for f in files.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not names:
        raise DataError(
            f"{image_dir} holds no images (expected *.jpg, e.g. COCO's unlabeled2017/). "
            "Fix: pass the folder the images were extracted into as --unlabeled_dir"
        )
    folder = os.path.basename(image_dir.rstrip("/"))
    return [
        CocoItem(f"{folder}/{os.path.splitext(n)[0]}", os.path.join(image_dir, n), 0, 0, None)
        for n in names
    ]


def check_images(
    items: List[CocoItem], annotation_file: str, image_dir: str, skip_bad: bool = False
) -> List[CocoItem]:
    """The items whose image is in `image_dir`. Raises a DataError naming the folder, the
    images found against those the JSON lists, and the fix, when the folder holds none
    or far fewer (below MIN_SHARE); a few missing images stop the build too, unless
    `skip_bad` (then they are left out and reported)."""
    present = set(files.listdir(image_dir)) if files.isdir(image_dir) else set()
    found = [i for i in items if os.path.basename(i.image_path) in present]
    missing = [i.image_path for i in items if os.path.basename(i.image_path) not in present]
    if not missing:
        return found
    listed = f"{os.path.basename(annotation_file)} lists {len(items):,}"
    if not found or len(found) < MIN_SHARE * len(items) or not skip_bad:
        raise DataError(
            f"{image_dir} holds {len(found):,} of the images {listed} (expected "
            f"{os.path.join(image_dir, '<file_name>.jpg')}; first missing: {missing[0]}). "
            "Fix: extract the matching image zip (e.g. train2017.zip) into that folder, "
            "or pass --skip_bad to leave a few missing images out"
        )
    sys.stderr.write(
        f"Note: {len(missing):,} images {listed} are not in {image_dir} (first: "
        f"{missing[0]}); they are left out (--skip_bad)\n"
    )
    return found


def encode_item(item: CocoItem):
    """Builder worker: reads, checks and encodes one COCO image and its mask."""
    data = image_io.read_file_bytes(item.image_path)
    image = image_io.decode_image_bytes(data, item.image_path)
    label_bytes = None
    if item.anns is not None:
        h, w = image.shape[:2]
        if (item.height, item.width) != (h, w):
            raise image_io.BadPairError(
                f"{item.image_path}: annotation size {item.height}x{item.width} differs from "
                f"the image {h}x{w}; the annotation file does not match the images"
            )
        label = semantic_mask(item.anns, h, w)
        image_io.check_pair(image, label, NUM_CLASSES, item.image_path)
        label_bytes = image_io.encode_label(label)
    return records.EncodedRecord(
        filename=item.image_id,
        image_bytes=data,
        image_format=image_io.sniff_format(data) or "jpeg",
        height=image.shape[0],
        width=image.shape[1],
        label_bytes=label_bytes,
    )


@dataclasses.dataclass
class CocoPlan:
    """What a build will write: work items per split and the source each came from."""

    splits: Dict[str, List[CocoItem]]
    sources: Dict[str, str]


def plan_coco(splits: Dict[str, tuple], skip_bad: bool = False) -> CocoPlan:
    """Checks every source of splits {name: (annotation json or None, image dir)} before
    anything is written: pycocotools is installed (when a split is labeled), each JSON
    exists, each image folder holds the images its JSON lists (see check_images), an
    unlabeled folder holds images."""
    if any(ann_file for ann_file, _ in splits.values()):
        _pycocotools("pycocotools.coco")
        _pycocotools("pycocotools.mask")
    items, sources = {}, {}
    for name, (ann_file, image_dir) in splits.items():
        folder = os.path.basename(image_dir.rstrip("/")) + "/"
        if ann_file:
            listed = items_from_annotations(ann_file, image_dir)
            items[name] = check_images(listed, ann_file, image_dir, skip_bad)
            sources[name] = f"{os.path.basename(ann_file)} + {folder}"
        else:
            items[name] = items_from_folder(image_dir)
            sources[name] = f"{folder}, no labels"
    return CocoPlan(items, sources)


def summary(plan: CocoPlan, written: Dict[str, int]) -> str:
    """One line of what was written per split and its source, e.g.
    'train 118,287 (instances_train2017.json + train2017/)'."""
    parts = []
    for name, source in plan.sources.items():
        skipped = len(plan.splits[name]) - written.get(name, 0)
        note = f", {skipped:,} bad images skipped" if skipped else ""
        parts.append(f"{name} {written.get(name, 0):,} ({source}{note})")
    return "; ".join(parts)


def build_coco(
    output_dir: str,
    splits: Dict[str, tuple],
    num_shards: int = 256,
    num_workers: int = 0,
    skip_bad: bool = False,
    resume: bool = False,
) -> Tuple[Dict[str, int], str]:
    """Writes splits given as {name: (annotation json or None, image dir)}, after
    plan_coco checked every source; returns ({split: records written}, the summary line
    counting each split with its source)."""
    plan = plan_coco(splits, skip_bad)
    from wss.builders import tfrecord_writer

    written = tfrecord_writer.write_splits(
        output_dir, plan.splits, encode_item, num_shards, num_workers, skip_bad, resume
    )
    return written, summary(plan, written)
