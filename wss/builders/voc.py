"""PASCAL VOC 2012 (+ SBD augmented labels) to DeepLab TFRecords: library side.

Layout expected: VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/
Segmentation/{train,val,trainval}.txt}; augmented labels either as index PNGs in a
SegmentationClassAug folder or as SBD's cls/*.mat files (read with scipy if installed).
A record's label comes from VOC's own SegmentationClass when it exists (the "clean"
annotations), else from SegmentationClassAug, else from SBD's .mat.
"""

import dataclasses
import io
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from wss import files
from wss.data import image_io, records

NUM_CLASSES = 21


@dataclasses.dataclass(frozen=True)
class VocItem:
    """Work item for one record: where its image and label are."""

    image_id: str
    image_path: str
    label_path: Optional[str]
    num_classes: int = NUM_CLASSES


def resolve_voc_root(path: str) -> str:
    """Accepts VOCdevkit or VOCdevkit/VOC2012; returns the folder holding JPEGImages."""
    for cand in (path, os.path.join(path, "VOC2012")):
        if files.isdir(os.path.join(cand, "JPEGImages")):
            return cand
    raise FileNotFoundError(f"{path!r} holds no JPEGImages folder; pass VOCdevkit/VOC2012")


def read_voc_split(voc_root: str, split: str) -> List[str]:
    """Ids of ImageSets/Segmentation/{split}.txt."""
    path = os.path.join(voc_root, "ImageSets", "Segmentation", f"{split}.txt")
    if not files.exists(path):
        raise FileNotFoundError(f"{path} not found; VOC splits are train, val, trainval")
    lines = files.read_text(path).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def load_mat_label(path: str) -> np.ndarray:
    """Reads an SBD cls/*.mat label (needs scipy)."""
    try:
        import scipy.io
    except ImportError as e:
        raise ImportError(
            "Reading SBD .mat labels needs scipy: pip install scipy (or give "
            "SegmentationClassAug PNGs with --aug_label_dir)"
        ) from e
    data = io.BytesIO(files.read_bytes(path))
    mat = scipy.io.loadmat(data, mat_dtype=True, squeeze_me=True, struct_as_record=False)
    return np.asarray(mat["GTcls"].Segmentation, dtype=np.uint8)


def label_path_for(
    image_id: str, voc_root: str, aug_dir: Optional[str], sbd_dir: Optional[str]
) -> Optional[str]:
    """The label file of an id, by the priority described in the module docstring."""
    cands = [os.path.join(voc_root, "SegmentationClass", f"{image_id}.png")]
    if aug_dir:
        cands.append(os.path.join(aug_dir, f"{image_id}.png"))
    if sbd_dir:
        cands.append(os.path.join(sbd_dir, f"{image_id}.mat"))
    for c in cands:
        if files.exists(c):
            return c
    return None


def train_aug_ids(voc_root: str, aug_dir: Optional[str], sbd_dir: Optional[str]) -> List[str]:
    """The 10,582-image train_aug set: VOC train plus every SBD-labeled id, minus VOC val."""
    ids = set(read_voc_split(voc_root, "train"))
    for folder, ext in ((aug_dir, ".png"), (sbd_dir, ".mat")):
        if folder and files.isdir(folder):
            ids.update(f[: -len(ext)] for f in files.listdir(folder) if f.endswith(ext))
    ids -= set(read_voc_split(voc_root, "val"))
    return sorted(ids)


def make_items(
    ids: Sequence[str],
    voc_root: str,
    aug_dir: Optional[str] = None,
    sbd_dir: Optional[str] = None,
    require_label: bool = True,
) -> List[VocItem]:
    """Work items for ids; raises naming the first ids without image or label."""
    items, missing = [], []
    for i in ids:
        image = os.path.join(voc_root, "JPEGImages", f"{i}.jpg")
        label = label_path_for(i, voc_root, aug_dir, sbd_dir)
        if not files.exists(image) or (require_label and label is None):
            missing.append(i)
        items.append(VocItem(i, image, label))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} ids lack an image or label (first: "
            f"{missing[:5]}); pass --aug_label_dir/--sbd_dir for SBD ids"
        )
    return items


def encode_item(item: VocItem):
    """Builder worker: reads, checks and encodes one VOC image/label pair."""
    data = image_io.read_file_bytes(item.image_path)
    fmt = image_io.sniff_format(data)
    image = image_io.decode_image_bytes(data, item.image_path)
    label_bytes = None
    if item.label_path:
        if item.label_path.endswith(".mat"):
            label = load_mat_label(item.label_path)
        else:
            label = image_io.load_label_file(item.label_path)
        image_io.check_pair(
            image, label, item.num_classes, f"{item.image_path} / {item.label_path}"
        )
        label_bytes = image_io.encode_label(label)
    return records.EncodedRecord(
        filename=item.image_id,
        image_bytes=data,
        image_format=fmt or "jpeg",
        height=image.shape[0],
        width=image.shape[1],
        label_bytes=label_bytes,
    )


def build_voc(
    voc_dir: str,
    output_dir: str,
    splits: Sequence[str] = ("train", "val", "train_aug"),
    aug_dir: Optional[str] = None,
    sbd_dir: Optional[str] = None,
    id_lists: Optional[Dict[str, str]] = None,
    num_shards: int = 4,
    num_workers: int = 0,
    skip_bad: bool = False,
    resume: bool = False,
) -> Dict[str, int]:
    """Writes the requested VOC splits (and id-list splits {name: path}) as TFRecords."""
    from wss.builders import tfrecord_writer
    from wss.data import splits as splits_lib

    root = resolve_voc_root(voc_dir)
    todo = {}
    for s in splits:
        todo[s] = (
            train_aug_ids(root, aug_dir, sbd_dir) if s == "train_aug" else (read_voc_split(root, s))
        )
    for name, path in (id_lists or {}).items():
        todo[name] = splits_lib.read_id_list(path)
    split_items = {name: make_items(ids, root, aug_dir, sbd_dir) for name, ids in todo.items()}
    return tfrecord_writer.write_splits(
        output_dir, split_items, encode_item, num_shards, num_workers, skip_bad, resume
    )
