"""Colour maps for label images: the PASCAL VOC palette and generated ones for COCO/demo.

Every map is a uint8 [256, 3] array indexed by label id, so index 255 (ignore) always
has a colour: VOC's own rule gives it (224, 224, 192); generated maps use white.
"""

import colorsys

import numpy as np


def pascal_colormap():
    """The PASCAL VOC palette: the bits of each label id are spread over R, G, B,
    most significant first (id bit 3k -> R, 3k+1 -> G, 3k+2 -> B at position 7-k)."""
    cmap = np.zeros((256, 3), np.uint8)
    for label in range(256):
        value = label
        for shift in range(7, -1, -1):
            for channel in range(3):
                cmap[label, channel] |= ((value >> channel) & 1) << shift
            value >>= 3
    return cmap


def generated_colormap(num_classes):
    """Black background, then hues spaced by the golden ratio (alternating brightness)
    for classes 1..num_classes-1; other ids (incl. 255) white."""
    cmap = np.full((256, 3), 255, np.uint8)
    cmap[0] = 0
    for label in range(1, min(num_classes, 255)):
        hue = (label * 0.618033988749895) % 1.0
        value = 0.95 if label % 2 else 0.7
        saturation = 0.85 if label % 3 else 0.6
        cmap[label] = np.round(np.array(colorsys.hsv_to_rgb(hue, saturation, value)) * 255)
    return cmap


def colormap_for_dataset(dataset_name, num_classes=None):
    """The palette of a dataset: VOC for 'pascal_voc_seg', the descriptor's own colours
    when it has them (folder-built datasets), generated otherwise."""
    if dataset_name == "pascal_voc_seg":
        return pascal_colormap()
    from wss.data import descriptors

    desc = descriptors.get_descriptor(dataset_name)
    cmap = generated_colormap(num_classes or desc.num_classes)
    colors = getattr(desc, "class_colors", None)
    if colors:
        cmap[: len(colors)] = np.asarray(colors, dtype=cmap.dtype)
    return cmap


def colorize(label, cmap):
    """uint8 RGB [H, W, 3] of an integer label map [H, W] (or [H, W, 1])."""
    label = np.asarray(label)
    if label.ndim == 3:
        label = label[..., 0]
    if label.min(initial=0) < 0 or label.max(initial=0) > 255:
        raise ValueError(f"label ids must be in [0, 255], got [{label.min()}, {label.max()}]")
    return np.asarray(cmap, np.uint8)[label.astype(np.int64)]


def palette_bytes(cmap):
    """The flat [768] list PIL's Image.putpalette expects."""
    return np.asarray(cmap, np.uint8).reshape(-1).tolist()
