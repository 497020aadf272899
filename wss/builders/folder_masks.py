"""The folder builder's worker: reads, checks and encodes one image and its mask.

Masks are decoded by wss.data.image_io (the one label decoder of every builder); this
module adds what is particular to folder masks: class colours from classes.txt, the
--label_map, and the refusal of lossy JPEG masks and of unmapped binary 0/255 masks.
Kept free of TensorFlow (builder workers start fast).
"""

import dataclasses
import io
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from wss.data import image_io, records
from wss.data.descriptors import IGNORE_LABEL

# The VOC palette's colour of 255; RGB masks drawn in it are read as ignore.
VOC_IGNORE_COLOR = (224, 224, 192)


@dataclasses.dataclass(frozen=True)
class FolderItem:
    """Work item for one record: its id, image, optional mask and how to read the mask."""

    image_id: str
    image_path: str
    mask_path: Optional[str]
    num_classes: int
    label_map: Tuple[Tuple[int, int], ...] = ()
    colors: Tuple[Tuple[int, int, int], ...] = ()


def load_image(path: str) -> Tuple[np.ndarray, bytes, str]:
    """(RGB pixels, bytes to store, format): JPEG/PNG in RGB or grey are stored as they are;
    anything else (BMP, TIFF, palette or 16-bit PNG, CMYK JPEG, ...) is re-encoded as PNG
    so that the record decodes to exactly the pixels checked here."""
    try:
        data = image_io.read_file_bytes(path)
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            rgb = np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types
        raise image_io.BadPairError(
            f"{path}: cannot decode image ({e}); re-export it as JPEG or PNG, or remove it"
        ) from e
    fmt = image_io.sniff_format(data)
    if fmt in ("jpeg", "png") and mode in ("RGB", "L"):
        return rgb, data, fmt
    return rgb, image_io.encode_image(rgb, "png"), "png"


def mask_values(path: str, colors: Sequence[Tuple[int, int, int]]) -> np.ndarray:
    """The mask's raw values (int64 HxW) before the label map: index values of grey,
    palette and 16-bit masks, class ids of masks drawn in the class colours."""
    if os.path.splitext(path)[1].lower() in (".jpg", ".jpeg"):
        raise image_io.BadPairError(
            f"{path}: JPEG masks are lossy (edges get values between classes); save masks as PNG"
        )
    table = {tuple(c): k for k, c in reversed(list(enumerate(colors)))}
    table.setdefault(VOC_IGNORE_COLOR, IGNORE_LABEL)
    shown = ["#%02x%02x%02x" % tuple(x) for x in colors]
    return image_io.read_label_values(
        path,
        what="mask",
        decode_fix="re-export it as an index PNG, or remove it",
        colour_table=table,
        colour_fix=(
            f"a class colour (classes.txt colours: {shown}); give index PNGs or add "
            "`#rrggbb` colours to classes.txt"
        ),
        grey_rgb_is_index=True,
    )


def load_mask(
    path: str,
    num_classes: int,
    label_map: Dict[int, int] = None,
    colors: Sequence[Tuple[int, int, int]] = (),
) -> np.ndarray:
    """A mask file as class ids (uint8 HxW, 255 = ignore) after the label map.

    Raises BadPairError naming the file for a value that is neither a class id, 255, nor a
    key of the label map (16-bit values above 255 included), and for a 0/255-only mask
    read without a label map (a binary mask whose foreground would silently become
    'ignore').
    """
    label_map = dict(label_map or {})
    raw = mask_values(path, colors or tuple(map(tuple, image_io.voc_colormap(num_classes))))
    values, inv = np.unique(raw, return_inverse=True)
    out = np.empty(len(values), np.uint8)
    bad = []
    for j, v in enumerate(values.tolist()):
        if v in label_map:
            out[j] = label_map[v]
        elif 0 <= v < num_classes or v == IGNORE_LABEL:
            out[j] = v
        else:
            bad.append(v)
    if bad:
        raise image_io.BadPairError(
            f"{path}: mask values {bad[:10]} are not class ids 0..{num_classes - 1} (classes.txt "
            f"has {num_classes} classes), {IGNORE_LABEL} (ignore), nor keys of --label_map "
            f"{label_map or '(none given)'}; fix classes.txt or map them, e.g. "
            f"--label_map={bad[0]}:1"
        )
    if not label_map and set(values.tolist()) == {0, IGNORE_LABEL}:
        raise image_io.BadPairError(
            f"{path}: mask holds only 0 and 255, which looks like a binary mask; 255 would be "
            'read as "ignore". Pass --label_map=0:0,255:1 for binary masks (or '
            "--label_map=255:255 if 255 really marks ignored pixels)"
        )
    return out[inv].reshape(raw.shape)


def encode_item(item: FolderItem) -> records.EncodedRecord:
    """Builder worker: reads, checks and encodes one image and its mask (if any)."""
    image, data, fmt = load_image(item.image_path)
    label_bytes = None
    if item.mask_path:
        label = load_mask(item.mask_path, item.num_classes, dict(item.label_map), item.colors)
        if label.shape != image.shape[:2]:
            raise image_io.BadPairError(
                f"{item.mask_path}: mask size {label.shape[1]}x{label.shape[0]} (WxH) differs "
                f"from the size {image.shape[1]}x{image.shape[0]} of its image "
                f"{item.image_path}; the mask does not belong to this image (or was resized)"
            )
        label_bytes = image_io.encode_label(label)
    return records.EncodedRecord(
        filename=item.image_id,
        image_bytes=data,
        image_format=fmt,
        height=image.shape[0],
        width=image.shape[1],
        label_bytes=label_bytes,
    )
