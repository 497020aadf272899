"""Dataset descriptors: the one place that fixes class counts, names, split sizes and crops.

Every other module (readers, pipelines, split makers, the training driver) looks datasets up
here by name: 'pascal_voc_seg', 'coco' or 'demo'.
"""
import dataclasses
from typing import Dict, Tuple

IGNORE_LABEL = 255


@dataclasses.dataclass(frozen=True)
class DatasetDescriptor:
  """Static facts about one segmentation dataset.

  Attributes:
    name: registry key.
    num_classes: number of classes including background (class 0).
    class_names: one name per class, background first.
    ignore_label: label value excluded from losses and metrics.
    splits_to_sizes: number of images in each known split (TFRecord split or id list).
    eval_crop_size: side every eval image is padded to.
    train_crop_size: default training crop side.
  """
  name: str
  num_classes: int
  class_names: Tuple[str, ...]
  ignore_label: int
  splits_to_sizes: Dict[str, int]
  eval_crop_size: int
  train_crop_size: int

  def __post_init__(self):
    if len(self.class_names) != self.num_classes:
      raise ValueError(f'{self.name}: {len(self.class_names)} class names for '
                       f'{self.num_classes} classes')

  @property
  def num_foreground_classes(self) -> int:
    """Length of an image-level label vector (background excluded)."""
    return self.num_classes - 1


VOC_CLASS_NAMES = (
    'background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
    'sheep', 'sofa', 'train', 'tvmonitor')

# COCO 2017 thing categories in category-id order; class k (1..80) is the k-th of these.
COCO_CLASS_NAMES = ('background',) + (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack',
    'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball',
    'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket',
    'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
    'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse',
    'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier',
    'toothbrush')

DEMO_CLASS_NAMES = ('background', 'disc', 'square', 'triangle', 'ring', 'cross')

PASCAL_VOC_SEG = DatasetDescriptor(
    name='pascal_voc_seg',
    num_classes=21,
    class_names=VOC_CLASS_NAMES,
    ignore_label=IGNORE_LABEL,
    splits_to_sizes={
        'train': 1464, 'val': 1449, 'train_aug': 10582, 'trainval': 2913,
        '2_clean': 732, '4_clean': 366, '8_clean': 183,
        '16_clean_3': 92, '16_clean_14': 92, '16_clean_20': 92,
    },
    eval_crop_size=513,
    train_crop_size=513,
)

COCO = DatasetDescriptor(
    name='coco',
    num_classes=81,
    class_names=COCO_CLASS_NAMES,
    ignore_label=IGNORE_LABEL,
    splits_to_sizes={
        'train': 118287, 'val': 5000,
        '32_all': 3697, '64_all': 1849, '128_all': 925, '256_all': 463, '512_all': 232,
    },
    eval_crop_size=641,
    train_crop_size=513,
)

# Sizes are those wss.data.demo builds by default (see DEMO_* constants there).
DEMO = DatasetDescriptor(
    name='demo',
    num_classes=6,
    class_names=DEMO_CLASS_NAMES,
    ignore_label=IGNORE_LABEL,
    splits_to_sizes={'train': 400, 'val': 100, 'labeled': 32},
    eval_crop_size=65,
    train_crop_size=65,
)

_REGISTRY: Dict[str, DatasetDescriptor] = {
    d.name: d for d in (PASCAL_VOC_SEG, COCO, DEMO)
}

# Fraction-of-train labeled subsets the paper uses, per dataset.
LABELED_FRACTIONS = {
    'pascal_voc_seg': (2, 4, 8, 16),
    'coco': (32, 64, 128, 256, 512),
}


def get_descriptor(name: str) -> DatasetDescriptor:
  """Returns the descriptor registered under `name`, or raises naming the known ones."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f'Unknown dataset {name!r}; known datasets: '
                     f'{sorted(_REGISTRY)}') from None


def register(descriptor: DatasetDescriptor) -> None:
  """Adds a descriptor (e.g. for a custom dataset) to the registry."""
  _REGISTRY[descriptor.name] = descriptor


def registered_names():
  """Names of every registered dataset."""
  return sorted(_REGISTRY)
