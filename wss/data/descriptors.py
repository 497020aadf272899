"""Dataset descriptors by name: the one place that fixes class counts, names, split sizes
and crops (the built-in datasets, the TFDS registry's, a descriptor.json's).

Every other module (readers, pipelines, split makers, the training driver) looks datasets up
here by name: 'pascal_voc_seg', 'coco' or 'demo' -- or by the path of a descriptor.json
(or of a folder holding one) such as datasets/build_folder_data.py writes, so that
`Experiment.dataset_name = '/data/mine/descriptor.json'` works wherever a name does.
"""

import json
import os
from typing import Any, Dict, Optional

from wss import files
from wss.data import tfds_registry
from wss.data.descriptor import IGNORE_LABEL, DatasetDescriptor
from wss.errors import UserError

VOC_CLASS_NAMES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# COCO 2017 thing categories in category-id order; class k (1..80) is the k-th of these.
COCO_CLASS_NAMES = ("background",) + (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

DEMO_CLASS_NAMES = ("background", "disc", "square", "triangle", "ring", "cross")

PASCAL_VOC_SEG = DatasetDescriptor(
    name="pascal_voc_seg",
    num_classes=21,
    class_names=VOC_CLASS_NAMES,
    ignore_label=IGNORE_LABEL,
    splits_to_sizes={
        "train": 1464,
        "val": 1449,
        "train_aug": 10582,
        "trainval": 2913,
        "2_clean": 732,
        "4_clean": 366,
        "8_clean": 183,
        "16_clean_3": 92,
        "16_clean_14": 92,
        "16_clean_20": 92,
    },
    eval_crop_size=513,
    train_crop_size=513,
)

COCO = DatasetDescriptor(
    name="coco",
    num_classes=81,
    class_names=COCO_CLASS_NAMES,
    ignore_label=IGNORE_LABEL,
    splits_to_sizes={
        "train": 118287,
        "val": 5000,
        "32_all": 3697,
        "64_all": 1849,
        "128_all": 925,
        "256_all": 463,
        "512_all": 232,
    },
    eval_crop_size=641,
    train_crop_size=513,
)

# Sizes are those wss.builders.demo builds by default (see DEMO_* constants there).
DEMO = DatasetDescriptor(
    name="demo",
    num_classes=6,
    class_names=DEMO_CLASS_NAMES,
    ignore_label=IGNORE_LABEL,
    splits_to_sizes={"train": 400, "val": 100, "labeled": 32},
    eval_crop_size=65,
    train_crop_size=65,
)

_REGISTRY: Dict[str, DatasetDescriptor] = {d.name: d for d in (PASCAL_VOC_SEG, COCO, DEMO)}

# Fraction-of-train labeled subsets the paper uses, per dataset.
LABELED_FRACTIONS = {
    "pascal_voc_seg": (2, 4, 8, 16),
    "coco": (32, 64, 128, 256, 512),
}


class DescriptorError(UserError, ValueError):
    """A dataset name that is neither registered nor a readable descriptor.json."""


DESCRIPTOR_FILE = "descriptor.json"
DESCRIPTOR_FORMAT = 1
# Keys every descriptor.json holds; anything else (e.g. 'build') is kept out of the type.
_REQUIRED_KEYS = (
    "name",
    "num_classes",
    "class_names",
    "ignore_label",
    "splits_to_sizes",
    "eval_crop_size",
    "train_crop_size",
)
_FILE_CACHE: Dict[tuple, DatasetDescriptor] = {}


def looks_like_path(name: str) -> bool:
    """True for strings that can only be meant as a file path (not a registry name)."""
    return (
        name.endswith(".json")
        or "/" in name
        or os.sep in name
        or name.startswith(".")
        or name.startswith("~")
    )


def descriptor_file(name: str) -> Optional[str]:
    """The descriptor.json `name` points to (the file itself, or a folder holding
    descriptor.json), or None when there is none."""
    if not isinstance(name, str) or not name:
        return None
    path = name if files.has_scheme(name) else os.path.expanduser(name)
    if files.isdir(path):
        path = os.path.join(path, DESCRIPTOR_FILE)
    return path if files.isfile(path) else None


def descriptor_from_dict(d: Dict[str, Any], source: Optional[str] = None) -> DatasetDescriptor:
    """A DatasetDescriptor from the dict of a descriptor.json; raises naming the source."""
    where = source or "<descriptor dict>"
    if not isinstance(d, dict):
        raise DescriptorError(f"{where}: expected a JSON object, got {type(d).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in d]
    if missing:
        raise DescriptorError(
            f"{where}: missing keys {missing}; a dataset descriptor needs "
            f"{list(_REQUIRED_KEYS)} (datasets/build_folder_data.py writes one)"
        )
    colors = d.get("class_colors")
    try:
        desc = DatasetDescriptor(
            name=str(d["name"]),
            num_classes=int(d["num_classes"]),
            class_names=tuple(str(n) for n in d["class_names"]),
            ignore_label=int(d["ignore_label"]),
            splits_to_sizes={str(k): int(v) for k, v in dict(d["splits_to_sizes"]).items()},
            eval_crop_size=int(d["eval_crop_size"]),
            train_crop_size=int(d["train_crop_size"]),
            class_colors=None
            if colors is None
            else tuple(tuple(int(v) for v in c) for c in colors),
            source=source,
        )
    except (TypeError, ValueError) as e:
        raise DescriptorError(f"{where}: invalid descriptor ({e})") from None
    if desc.num_classes < 2 or desc.num_classes > 255:
        raise DescriptorError(f"{where}: num_classes {desc.num_classes} is not in [2, 255]")
    if desc.class_colors is not None and any(
        len(c) != 3 or min(c) < 0 or max(c) > 255 for c in desc.class_colors
    ):
        raise DescriptorError(f"{where}: class_colors must be [r, g, b] triples in 0..255")
    return desc


def descriptor_to_dict(
    desc: DatasetDescriptor, extra: Optional[Dict[str, Any]] = None
) -> Dict[str, Any]:
    """The JSON-ready dict of a descriptor (`extra` keys, e.g. build facts, are added)."""
    d = {
        "format": DESCRIPTOR_FORMAT,
        "name": desc.name,
        "num_classes": desc.num_classes,
        "class_names": list(desc.class_names),
        "class_colors": (
            None if desc.class_colors is None else [list(c) for c in desc.class_colors]
        ),
        "ignore_label": desc.ignore_label,
        "splits_to_sizes": dict(desc.splits_to_sizes),
        "eval_crop_size": desc.eval_crop_size,
        "train_crop_size": desc.train_crop_size,
    }
    d.update(extra or {})
    return d


def save_descriptor(
    desc: DatasetDescriptor, path: str, extra: Optional[Dict[str, Any]] = None
) -> str:
    """Writes descriptor.json atomically (`path` may be a folder); returns the file path."""
    if files.isdir(path):
        path = os.path.join(path, DESCRIPTOR_FILE)
    files.write_json(path, descriptor_to_dict(desc, extra))
    return path


def load_descriptor(path: str) -> DatasetDescriptor:
    """Reads a descriptor.json (or the one in folder `path`); cached per file version."""
    found = descriptor_file(path)
    if found is None:
        raise DescriptorError(
            f"Dataset descriptor {path!r} does not exist (give a "
            f"descriptor.json or a folder holding one)"
        )
    # Local files are cached per modification time; URLs are read each time.
    key = (files.absolute(found), None if files.has_scheme(found) else files.mtime_ns(found))
    if key[1] is not None and key in _FILE_CACHE:
        return _FILE_CACHE[key]
    try:
        d = files.read_json(found)
    except (OSError, UnicodeDecodeError) as e:
        raise DescriptorError(f"{found}: cannot read dataset descriptor ({e})") from None
    except json.JSONDecodeError as e:
        raise DescriptorError(
            f"{found}: not valid JSON ({e}); rebuild it with datasets/build_folder_data.py"
        ) from None
    desc = descriptor_from_dict(d, found)
    if key[1] is not None:
        _FILE_CACHE[key] = desc
    return desc


def get_descriptor(name) -> DatasetDescriptor:
    """The descriptor registered under `name`, the TFDS registry's for 'tfds:<builder>'
    (wss.data.tfds_registry), else the one in descriptor.json at path `name` (a file or a
    folder holding descriptor.json); raises DescriptorError (a ValueError) naming the
    known datasets otherwise."""
    if isinstance(name, DatasetDescriptor):
        return name
    if name in _REGISTRY:
        return _REGISTRY[name]
    if isinstance(name, str) and name.startswith("tfds:"):
        return tfds_registry.lookup(name).descriptor()
    if isinstance(name, str) and descriptor_file(name) is not None:
        return load_descriptor(name)
    if isinstance(name, str) and looks_like_path(name):
        raise DescriptorError(
            f"Dataset descriptor {name!r} does not exist: give a registered "
            f"dataset ({sorted(_REGISTRY)}), a descriptor.json file, or a "
            "folder holding one (datasets/build_folder_data.py writes it)"
        )
    raise DescriptorError(
        f"Unknown dataset {name!r}; known datasets: {sorted(_REGISTRY)}, "
        "or give the path of a descriptor.json"
    )


def default_dataset_dir(name) -> Optional[str]:
    """For a descriptor given by path: the folder holding it (where build_folder_data.py
    writes the TFRecords); None for registered names."""
    if isinstance(name, str) and name not in _REGISTRY:
        found = descriptor_file(name)
        if found is not None:
            return os.path.dirname(found) or "."
    return None


def register(descriptor: DatasetDescriptor) -> None:
    """Adds a descriptor (e.g. for a custom dataset) to the registry."""
    _REGISTRY[descriptor.name] = descriptor
