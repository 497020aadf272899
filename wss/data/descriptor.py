"""What describes a dataset: the `DatasetDescriptor` record and `IGNORE_LABEL`.

The record type only (no registry), so the registries that produce descriptors
(wss.data.descriptors, wss.data.tfds_registry) both sit above it.
"""

import dataclasses
from typing import Dict, Optional, Tuple

IGNORE_LABEL = 255  # the one definition of the ignore label (DeepLab, the release)


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
      class_colors: optional (r, g, b) per class for label images (None = the default
        palette of the dataset).
      source: the descriptor.json this descriptor was read from (None if built in).
    """

    name: str
    num_classes: int
    class_names: Tuple[str, ...]
    ignore_label: int
    splits_to_sizes: Dict[str, int]
    eval_crop_size: int
    train_crop_size: int
    class_colors: Optional[Tuple[Tuple[int, int, int], ...]] = None
    source: Optional[str] = None

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if self.class_colors is not None and len(self.class_colors) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_colors)} class colours for "
                f"{self.num_classes} classes"
            )

    @property
    def num_foreground_classes(self) -> int:
        """Length of an image-level label vector (background excluded)."""
        return self.num_classes - 1
