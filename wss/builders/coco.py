"""COCO 2017 instances to 81-class semantic-segmentation TFRecords: library side.

Class 0 is background, the 80 thing categories in category-id order are 1..80, and
crowd regions are 255 (ignore), painted over everything else. Non-crowd instances are
painted largest first so small objects stay visible. Record ids are
'{image folder}/{file stem}' (e.g. 'train2017/000000177254'), as in the release's
split files. pycocotools is imported only when needed.
"""

import dataclasses
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from wss import files
from wss.data import image_io, records

NUM_CLASSES = 81
_INSTALL_HINT = (
    'COCO conversion needs pycocotools: pip install -e ".[coco]" (or pip install pycocotools)'
)


def _mask_api():
    try:
        from pycocotools import mask as mask_utils
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    return mask_utils


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
    mask_utils = _mask_api()
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
    try:
        from pycocotools.coco import COCO
    except ImportError as e:
        raise ImportError(_INSTALL_HINT) from e
    with files.local_copy(annotation_file) as local:
        coco = COCO(local)
    cat_to_class = {c: i + 1 for i, c in enumerate(sorted(coco.getCatIds()))}
    if len(cat_to_class) != NUM_CLASSES - 1:
        raise ValueError(f"{annotation_file}: {len(cat_to_class)} categories, expected 80")
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
    """Image-only work items for every image of a folder (e.g. unlabeled2017)."""
    if not files.isdir(image_dir):
        raise FileNotFoundError(f"{image_dir} is not a folder of images")
    folder = os.path.basename(image_dir.rstrip("/"))
    names = [f for f in files.listdir(image_dir) if f.lower().endswith((".jpg", ".jpeg", ".png"))]
    return [
        CocoItem(f"{folder}/{os.path.splitext(n)[0]}", os.path.join(image_dir, n), 0, 0, None)
        for n in names
    ]


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


def build_coco(
    output_dir: str,
    splits: Dict[str, tuple],
    num_shards: int = 256,
    num_workers: int = 0,
    skip_bad: bool = False,
    resume: bool = False,
) -> Dict[str, int]:
    """Writes splits given as {name: (annotation json or None, image dir)}."""
    from wss.builders import tfrecord_writer

    split_items = {
        name: items_from_annotations(ann_file, image_dir)
        if ann_file
        else items_from_folder(image_dir)
        for name, (ann_file, image_dir) in splits.items()
    }
    return tfrecord_writer.write_splits(
        output_dir, split_items, encode_item, num_shards, num_workers, skip_bad, resume
    )
