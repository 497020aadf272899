"""PASCAL VOC 2012 (+ SBD augmented labels) to DeepLab TFRecords: library side.

Layout expected: VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/
Segmentation/{train,val,trainval}.txt}; augmented labels either as index PNGs in a
SegmentationClassAug folder or as SBD's cls/*.mat files (read with scipy: pip install -e ".[voc]").
A record's label comes from VOC's own SegmentationClass when it exists (the "clean"
annotations), else from SegmentationClassAug, else from SBD's .mat.
"""

import dataclasses
import io
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from wss import errors, files
from wss.data import image_io, records
from wss.data.errors import DataError

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
    raise DataError(
        f"--voc_dir={path} holds no JPEGImages folder (expected VOC2012/JPEGImages/*.jpg "
        "and ImageSets/Segmentation/*.txt). Fix: pass VOCdevkit/VOC2012 as --voc_dir"
    )


def read_voc_split(voc_root: str, split: str) -> List[str]:
    """Ids of ImageSets/Segmentation/{split}.txt."""
    path = os.path.join(voc_root, "ImageSets", "Segmentation", f"{split}.txt")
    if not files.exists(path):
        raise FileNotFoundError(f"{path} not found; VOC splits are train, val, trainval")
    lines = files.read_text(path).splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


# A source folder holding fewer than this share of the ids its lists name is incomplete.
MIN_SHARE = 0.9
SCIPY_INSTALL = 'pip install -e ".[voc]" (or pip install scipy)'
# Where each label source lives, as the errors and the summary name it.
SOURCE_VOC, SOURCE_AUG, SOURCE_SBD = "VOC", "SegmentationClassAug", "SBD"


@dataclasses.dataclass
class VocPlan:
    """What a build will write: the work items per split and, per split, how many of them
    take their label from each source (VOC's SegmentationClass, SegmentationClassAug, SBD)."""

    splits: Dict[str, List[VocItem]]
    sources: Dict[str, Dict[str, int]]


def load_mat_label(path: str) -> np.ndarray:
    """Reads an SBD cls/*.mat label: the `GTcls.Segmentation` class-index map (needs scipy)."""
    scipy_io = errors.import_optional("scipy.io", SCIPY_INSTALL, "Reading SBD's .mat labels")
    data = io.BytesIO(files.read_bytes(path))
    try:
        mat = scipy_io.loadmat(data, mat_dtype=True, squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises several types for a file that is not MATLAB's
        raise image_io.BadPairError(
            f"{path}: cannot read it as a MATLAB file ({e}); re-extract SBD's cls/ folder"
        ) from None
    if "GTcls" not in mat:
        raise image_io.BadPairError(
            f"{path} holds no GTcls struct (it has {sorted(k for k in mat if k[0] != '_')}): "
            "not an SBD class label. Fix: pass benchmark_RELEASE/dataset/cls as --sbd_dir "
            "(inst/ holds instance labels)"
        )
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


def _stems(folder: str, ext: str) -> List[str]:
    """The file stems of a folder's `*ext` files (none when it is not a folder)."""
    if not folder or not files.isdir(folder):
        return []
    return sorted(f[: -len(ext)] for f in files.listdir(folder) if f.endswith(ext))


def _sbd_listed(sbd_dir: str) -> List[str]:
    """The ids SBD's own lists (train.txt, val.txt beside cls/) name; [] where absent."""
    for folder in (sbd_dir, os.path.dirname(sbd_dir.rstrip("/"))):
        lists = [os.path.join(folder, f"{s}.txt") for s in ("train", "val")]
        if all(files.exists(p) for p in lists):
            ids = set()
            for p in lists:
                ids.update(line.strip() for line in files.read_text(p).splitlines())
            return sorted(i for i in ids if i)
    return []


@dataclasses.dataclass(frozen=True)
class LabelSource:
    """A folder of labels for SBD's ids, as its flag and its errors name it."""

    flag: str
    ext: str
    what: str  # what the folder holds, e.g. "SBD .mat labels (<id>.mat)"
    home: str  # where a full download keeps them
    full_count: int  # how many a full download holds


SBD_LABELS = LabelSource(
    "--sbd_dir", ".mat", "SBD .mat labels (<id>.mat)", "benchmark_RELEASE/dataset/cls", 11355
)
AUG_LABELS = LabelSource(
    "--aug_label_dir", ".png", "index PNG labels (<id>.png)", "SegmentationClassAug", 12031
)


def check_label_folder(folder: str, source: LabelSource, listed: Sequence[str] = ()) -> List[str]:
    """The label ids of an SBD or SegmentationClassAug folder; raises a DataError naming
    the folder, what belongs inside, the ids found against those its lists name (or a
    full download holds), and the fix, when the folder yields none or far fewer (below
    MIN_SHARE) than `listed`."""
    ids = _stems(folder, source.ext)
    listed = sorted(set(listed))
    if ids and len(ids) >= MIN_SHARE * len(listed):
        return ids
    flag = f"{source.flag}={folder}"
    if not files.isdir(folder):
        raise DataError(
            f"{flag} is not a folder; expected {source.home}/ with {source.what}. "
            f"Fix: pass that folder as {source.flag}"
        )
    if ids:  # far fewer than the lists name (only SBD has lists)
        raise DataError(
            f"{flag} holds {len(ids):,} {source.what}, far fewer than the {len(listed):,} "
            "ids SBD's train.txt and val.txt name. Fix: extract the whole archive again"
        )
    named = (
        f"SBD's train.txt and val.txt name {len(listed):,}"
        if listed
        else f"a full download holds {source.full_count:,}"
    )
    sub = [
        d.rstrip("/")
        for d in files.listdir(folder)
        if files.isdir(os.path.join(folder, d)) and _stems(os.path.join(folder, d), source.ext)
    ]
    fix = (
        f"pass {source.flag}={os.path.join(folder.rstrip('/'), sub[0])}"
        if sub
        else f"pass the folder that holds them ({source.home}/) as {source.flag}"
    )
    raise DataError(
        f"{flag} holds no {source.what}: expected them directly inside, as in "
        f"{source.home}/; found 0 ids, {named}. Fix: {fix}"
    )


def train_aug_ids(voc_root: str, aug_dir: Optional[str], sbd_dir: Optional[str]) -> List[str]:
    """The 10,582-image train_aug set: VOC train plus every SBD-labeled id, minus VOC val."""
    ids = set(read_voc_split(voc_root, "train"))
    for folder, ext in ((aug_dir, ".png"), (sbd_dir, ".mat")):
        ids.update(_stems(folder, ext))
    ids -= set(read_voc_split(voc_root, "val"))
    return sorted(ids)


def make_items(
    ids: Sequence[str],
    voc_root: str,
    aug_dir: Optional[str] = None,
    sbd_dir: Optional[str] = None,
    split: str = "",
) -> List[VocItem]:
    """Work items for ids; raises a DataError naming the split, the folders and the first
    ids without image or label."""
    items, no_image, no_label = [], [], []
    for i in ids:
        image = os.path.join(voc_root, "JPEGImages", f"{i}.jpg")
        label = label_path_for(i, voc_root, aug_dir, sbd_dir)
        if not files.exists(image):
            no_image.append(i)
        elif label is None:
            no_label.append(i)
        items.append(VocItem(i, image, label))
    where = f"split {split!r}" if split else "the list"
    if no_image:
        raise DataError(
            f"{len(no_image):,} of {len(ids):,} ids of {where} have no image "
            f"{os.path.join(voc_root, 'JPEGImages', '<id>.jpg')} (first: {no_image[:5]}). "
            "Fix: pass the complete VOCdevkit/VOC2012 as --voc_dir"
        )
    if no_label:
        folders = [os.path.join(voc_root, "SegmentationClass")] + [
            d for d in (aug_dir, sbd_dir) if d
        ]
        raise DataError(
            f"{len(no_label):,} of {len(ids):,} ids of {where} have no label in "
            f"{', '.join(folders)} (first: {no_label[:5]}). Fix: pass SBD's cls/ folder "
            "as --sbd_dir or SegmentationClassAug as --aug_label_dir for SBD ids"
        )
    return items


def item_source(item: VocItem) -> str:
    """Which source an item's label comes from (VOC, SegmentationClassAug or SBD)."""
    if item.label_path.endswith(".mat"):
        return SOURCE_SBD
    folder = os.path.basename(os.path.dirname(item.label_path))
    return SOURCE_VOC if folder == "SegmentationClass" else SOURCE_AUG


def plan_voc(
    voc_dir: str,
    splits: Sequence[str] = ("train", "val", "train_aug"),
    aug_dir: Optional[str] = None,
    sbd_dir: Optional[str] = None,
    id_lists: Optional[Dict[str, str]] = None,
) -> VocPlan:
    """Checks every source before anything is written and returns the work items.

    Raises a DataError for a source folder that yields no labels (or far fewer than its
    lists name), for train_aug without SBD labels, for listed ids without image or label;
    a MissingPackageError when SBD's .mat labels are needed and scipy is not installed.
    """
    from wss.data import splits as splits_lib

    root = resolve_voc_root(voc_dir)
    if aug_dir:
        check_label_folder(aug_dir, AUG_LABELS)
    if sbd_dir:
        check_label_folder(sbd_dir, SBD_LABELS, _sbd_listed(sbd_dir))
    if "train_aug" in splits and not (aug_dir or sbd_dir):
        raise DataError(
            "split 'train_aug' is VOC train plus SBD's labels, and no SBD source was given. "
            "Fix: pass --sbd_dir=benchmark_RELEASE/dataset/cls (or "
            "--aug_label_dir=SegmentationClassAug), or leave train_aug out of --splits"
        )
    todo = {}
    for s in splits:
        todo[s] = (
            train_aug_ids(root, aug_dir, sbd_dir) if s == "train_aug" else read_voc_split(root, s)
        )
    for name, path in (id_lists or {}).items():
        todo[name] = splits_lib.read_id_list(path)
    items = {
        name: make_items(ids, root, aug_dir, sbd_dir, split=name) for name, ids in todo.items()
    }
    sources = {}
    for name, split_items in items.items():
        counts = {}
        for item in split_items:
            counts[item_source(item)] = counts.get(item_source(item), 0) + 1
        sources[name] = counts
    sbd_items = [i for split in items.values() for i in split if item_source(i) == SOURCE_SBD]
    if sbd_items:
        errors.import_optional(
            "scipy.io",
            SCIPY_INSTALL + " or pass SegmentationClassAug PNGs as --aug_label_dir",
            f"Reading SBD's .mat labels from {sbd_dir}",
        )
        load_mat_label(sbd_items[0].label_path)  # the folder holds SBD's class labels
    return VocPlan(items, sources)


def summary(plan: VocPlan, written: Dict[str, int]) -> str:
    """One line of what was written per split and source, e.g.
    'train_aug 10,582 = 1,464 VOC + 9,118 SBD'; names skipped images' counts."""
    parts = []
    for name, counts in plan.sources.items():
        by_source = " + ".join(f"{n:,} {s}" for s, n in counts.items())
        if len(counts) == 1:
            by_source = f"({by_source.split(' ', 1)[1]})"
        else:
            by_source = f"= {by_source}"
        text = f"{name} {written.get(name, 0):,} {by_source}"
        skipped = sum(counts.values()) - written.get(name, 0)
        parts.append(text + (f" ({skipped:,} bad images skipped)" if skipped else ""))
    return "; ".join(parts)


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
) -> Tuple[Dict[str, int], str]:
    """Writes the requested VOC splits (and id-list splits {name: path}) as TFRecords,
    after plan_voc checked every source; returns ({split: records written}, the summary
    line counting each split per source)."""
    plan = plan_voc(voc_dir, splits, aug_dir, sbd_dir, id_lists)
    from wss.builders import tfrecord_writer

    written = tfrecord_writer.write_splits(
        output_dir, plan.splits, encode_item, num_shards, num_workers, skip_bad, resume
    )
    return written, summary(plan, written)
