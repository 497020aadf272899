"""The TensorFlow Datasets builders PseudoSeg can train on, and what each one's features mean.

`Experiment.dataset_name = 'tfds:<key>'` names an entry here. An entry says which TFDS
builder (and config) to load, which features hold the image, the per-pixel label and the
example's id, how raw label values become class ids (the rest of the project's convention:
class 0 plays the background's role in image-level labels and the SGC, 255 is ignored), the
class names and colours, the split sizes, the evaluation split, and the image size and
crops. The entry also gives the dataset's DatasetDescriptor, so evaluation, vis and export
name the classes. This module never imports tensorflow_datasets (wss.data.tfds_source
reads the data).
"""

import dataclasses
from typing import Dict, Mapping, Optional, Tuple

from wss.data.descriptor import IGNORE_LABEL, DatasetDescriptor
from wss.errors import UserError

PREFIX = "tfds:"


class TfdsNameError(UserError, ValueError):
    """A `tfds:` dataset name that no registry entry serves."""


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    """How one TFDS builder's examples become PseudoSeg examples.

    Attributes:
      key: the name after 'tfds:'.
      builder: the TFDS name given to tfds.builder (with '/config' where needed).
      image_feature, label_feature: the Image features of the picture and of the labels.
      label_channel: the label image's channel that holds the raw label.
      label_map: raw label value -> class id (IGNORE_LABEL to ignore); any other raw value
        is an error (the data is not what this entry describes).
      id_feature: the Text feature naming an example (id lists match it, extension
        dropped); None: TFDS's per-example `tfds_id` (stable for one prepared copy).
      class_names, class_colors: one per class id.
      splits_to_sizes: the builder's splits (as TFDS documents them).
      eval_split: the split evaluation reads (Experiment.eval_split must name it).
      max_size: images (and labels) whose longer side exceeds it are resized down to it
        before any augmentation (DeepLab's max_resize_value); None keeps them as stored.
      train_crop_size, eval_crop_size: the default crops (the eval crop holds every image).
      manual_download: what a user must download by hand first (None: TFDS downloads).
    """

    key: str
    builder: str
    image_feature: str
    label_feature: str
    label_map: Mapping[int, int]
    class_names: Tuple[str, ...]
    splits_to_sizes: Dict[str, int]
    eval_split: str
    train_crop_size: int
    eval_crop_size: int
    label_channel: int = 0
    id_feature: Optional[str] = None
    class_colors: Optional[Tuple[Tuple[int, int, int], ...]] = None
    max_size: Optional[int] = None
    manual_download: Optional[str] = None

    def __post_init__(self):
        bad = sorted(
            v
            for v in self.label_map.values()
            if v != IGNORE_LABEL and not 0 <= v < self.num_classes
        )
        if bad:
            raise ValueError(f"tfds:{self.key}: label_map targets {bad} are not class ids")
        if self.max_size is not None and self.max_size > self.eval_crop_size:
            raise ValueError(f"tfds:{self.key}: max_size {self.max_size} > eval crop")

    @property
    def name(self) -> str:
        """The dataset name as Experiment.dataset_name gives it."""
        return PREFIX + self.key

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def lookup_table(self):
        """[256] raw value -> class id, -1 for a raw value the entry does not know."""
        table = [-1] * 256
        for raw, cls in self.label_map.items():
            table[raw] = cls
        return table

    def descriptor(self) -> DatasetDescriptor:
        """The DatasetDescriptor every other part of the project reads."""
        return DatasetDescriptor(
            name=self.name,
            num_classes=self.num_classes,
            class_names=self.class_names,
            ignore_label=IGNORE_LABEL,
            splits_to_sizes=dict(self.splits_to_sizes),
            eval_crop_size=self.eval_crop_size,
            train_crop_size=self.train_crop_size,
            class_colors=self.class_colors,
        )


# Oxford-IIIT Pet: the trimap is 1 = pet, 2 = background, 3 = border (not classified).
OXFORD_IIIT_PET = TfdsDataset(
    key="oxford_iiit_pet",
    builder="oxford_iiit_pet",
    image_feature="image",
    label_feature="segmentation_mask",
    id_feature="file_name",
    label_map={1: 1, 2: 0, 3: IGNORE_LABEL},
    class_names=("background", "pet"),
    class_colors=((0, 0, 0), (128, 0, 0)),
    splits_to_sizes={"train": 3680, "test": 3669},
    eval_split="test",
    max_size=512,
    train_crop_size=513,
    eval_crop_size=513,
)

# The 100 object categories of the Places Challenge 2017 instance masks, in id order.
ADE_INSTANCE_NAMES = (
    "bed", "windowpane", "cabinet", "person", "door", "table", "curtain", "chair", "car",
    "painting", "sofa", "shelf", "mirror", "armchair", "seat", "fence", "desk", "wardrobe",
    "lamp", "bathtub", "railing", "cushion", "box", "column", "signboard",
    "chest of drawers", "counter", "sink", "fireplace", "refrigerator", "stairs", "case",
    "pool table", "pillow", "screen door", "bookcase", "coffee table", "toilet", "flower",
    "book", "bench", "countertop", "stove", "palm", "kitchen island", "computer",
    "swivel chair", "boat", "arcade machine", "bus", "towel", "light", "truck",
    "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "apparel", "pole", "bannister", "ottoman", "bottle", "van", "ship", "fountain",
    "washer", "plaything", "stool", "barrel", "basket", "bag", "minibike", "oven", "ball",
    "food", "step", "trade name", "microwave", "pot", "animal", "bicycle", "dishwasher",
    "screen", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan",
    "fan", "plate", "monitor", "bulletin board", "radiator", "glass", "clock", "flag",
)  # fmt: skip

# ADE20K as TFDS builds it (scene_parse150 1.0.0): the label image is the Places
# Challenge 2017 *instance* mask (annotations_instance.tar), whose red channel is one of
# 100 object categories and 0 everywhere else (wall, floor, sky, ... and unlabeled), not
# the 150-class scene-parsing mask. So it is read as COCO is: 0 = background, 1..100 the
# objects. TFDS's 'test' split holds the 2,000 validation images.
SCENE_PARSE150 = TfdsDataset(
    key="scene_parse150",
    builder="scene_parse150",
    image_feature="image",
    label_feature="annotation",
    label_channel=0,
    label_map={i: i for i in range(len(ADE_INSTANCE_NAMES) + 1)},
    class_names=("background",) + ADE_INSTANCE_NAMES,
    splits_to_sizes={"train": 20210, "test": 2000},
    eval_split="test",
    max_size=512,  # DeepLab's ADE20K setting (max_resize_value 512, crop 513)
    train_crop_size=513,
    eval_crop_size=513,
)

# Cityscapes labelIds -> the 19 evaluated classes (trainIds, DeepLab's and the
# benchmark's); every other labelId (void, license plate, ...) is ignored. Class 0
# (road) takes the background's place in PseudoSeg's image-level labels and SGC.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
CITYSCAPES = TfdsDataset(
    key="cityscapes",
    builder="cityscapes/semantic_segmentation",
    image_feature="image_left",
    label_feature="segmentation_label",
    id_feature="image_id",
    label_map={raw: CITYSCAPES_TRAIN_IDS.get(raw, IGNORE_LABEL) for raw in range(34)},
    class_names=(
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),  # fmt: skip
    class_colors=(
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ),  # fmt: skip
    splits_to_sizes={"train": 2975, "validation": 500, "test": 1525},
    eval_split="validation",
    train_crop_size=769,  # DeepLab's Cityscapes crops (images are 1024 x 2048)
    eval_crop_size=2049,
    manual_download=(
        "TFDS cannot download Cityscapes: register at https://www.cityscapes-dataset.com, "
        "download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip and put both "
        "in {manual_dir}, then run again (TFDS extracts and prepares them once)"
    ),
)

_REGISTRY: Dict[str, TfdsDataset] = {
    d.key: d for d in (OXFORD_IIIT_PET, SCENE_PARSE150, CITYSCAPES)
}


def is_tfds_name(name) -> bool:
    """True for a dataset name of this source ('tfds:...')."""
    return isinstance(name, str) and name.startswith(PREFIX)


def supported_names():
    """Every dataset name this registry serves, as Experiment.dataset_name gives it."""
    return sorted(d.name for d in _REGISTRY.values())


def register(entry: TfdsDataset) -> None:
    """Adds an entry (e.g. for another TFDS segmentation builder) to the registry."""
    _REGISTRY[entry.key] = entry


def lookup(name: str) -> TfdsDataset:
    """The entry of dataset name 'tfds:<key>'; TfdsNameError naming the supported ones
    (and, for a TFDS builder without a per-pixel label, why) otherwise."""
    key = name[len(PREFIX) :] if is_tfds_name(name) else name
    if key in _REGISTRY:
        return _REGISTRY[key]
    supported = ", ".join(supported_names())
    why = _unsupported_reason(key)
    raise TfdsNameError(
        f"dataset {name!r}: {why}. Supported TFDS datasets: {supported} (an entry in "
        "wss.data.tfds_registry adds another builder with an image and a per-pixel label)"
    )


def _unsupported_reason(key: str) -> str:
    """Why `key` is not served: no such TFDS builder, or one without a per-pixel label."""
    import tensorflow_datasets as tfds  # only on this error path

    try:
        builder_cls = tfds.builder_cls(key.split("/")[0].split(":")[0])
    except Exception:  # TFDS raises several types for a name it does not know
        return "TensorFlow Datasets has no builder of that name"
    try:
        features = builder_cls(data_dir=_NO_DATA_DIR).info.features
        names = ", ".join(sorted(features.keys()))
    except Exception:  # a builder that needs a config or files just to say its features
        names = "see its TFDS catalog page"
    return f"this TFDS builder has no per-pixel label feature PseudoSeg knows (features: {names})"


_NO_DATA_DIR = "/nonexistent/tfds_features_only"
