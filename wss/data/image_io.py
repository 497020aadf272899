"""NumPy/PIL helpers for dataset builders: encode, decode and check image/label pairs.

Files are read through wss.files (any tf.io.gfile path); TensorFlow loads on the first
read only, so builder worker processes start fast.
"""

import io
from typing import Dict, Optional, Tuple

import numpy as np
from PIL import Image

from wss import files
from wss.data.descriptors import IGNORE_LABEL
from wss.data.errors import DataError

# What to do with a label whose values do not fit 8 bits (said by every builder's error).
WIDE_LABEL_FIX = (
    "save labels as 8-bit index PNGs (class ids 0..C-1, 255 = ignore), or build with "
    "datasets/build_folder_data.py --label_map=RAW:CLASS to map the raw values"
)


class BadPairError(DataError):
    """An image/label pair that cannot go into a record (names the files and the fix)."""


def voc_colormap(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette: uint8 [n, 3], class k drawn in colour k (bit-interleaved)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for k in range(n):
        r = g = b = 0
        c = k
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        cmap[k] = (r, g, b)
    return cmap


def encode_image(array: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """Encodes a uint8 HxWx3 (or HxW) array as JPEG or PNG bytes."""
    buf = io.BytesIO()
    fmt = fmt.lower()
    if fmt in ("jpeg", "jpg"):
        Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    elif fmt == "png":
        Image.fromarray(array).save(buf, format="PNG")
    else:
        raise ValueError(f"Unsupported image format {fmt!r}; use jpeg or png")
    return buf.getvalue()


def save_png(image, path: str) -> None:
    """Writes a PIL image or a uint8 array as a PNG file at any tf.io.gfile path (PIL
    encodes into memory; wss.files writes the bytes)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    files.write_bytes(path, buf.getvalue())


def encode_label(label: np.ndarray) -> bytes:
    """Encodes a class-index map (HxW uint8) as a single-channel PNG."""
    if label.ndim == 3:
        label = label[..., 0]
    return encode_image(label.astype(np.uint8), "png")


def decode_image_bytes(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decodes encoded image bytes to uint8 HxWx3 RGB; raises BadPairError if undecodable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:  # PIL raises many types for bad data.
        raise BadPairError(f"{source}: cannot decode image ({e}); re-download or remove it") from e


def voc_colour_table(n: int = 256) -> Dict[Tuple[int, int, int], int]:
    """{colour: class id} of the VOC palette's first n colours (the lowest id wins)."""
    return {tuple(int(v) for v in c): k for k, c in reversed(list(enumerate(voc_colormap(n))))}


def colours_to_ids(
    rgb: np.ndarray, table: Dict[Tuple[int, int, int], int], source: str, fix: str
) -> np.ndarray:
    """Class ids (int64 HxW) of a colour label (HxWx3) through {colour: id}; a colour the
    table lacks raises BadPairError naming the source, the colour and `fix`."""
    flat = (
        (rgb[..., 0].astype(np.int64) << 16)
        | (rgb[..., 1].astype(np.int64) << 8)
        | rgb[..., 2].astype(np.int64)
    )
    uniq, inv = np.unique(flat, return_inverse=True)
    out = np.empty(len(uniq), dtype=np.int64)
    for j, key in enumerate(uniq.tolist()):
        colour = (key >> 16, (key >> 8) & 255, key & 255)
        if colour not in table:
            raise BadPairError(f"{source}: colour #{key:06x} is not {fix}")
        out[j] = table[colour]
    return out[inv].reshape(flat.shape)


def label_values(
    im: Image.Image,
    source: str,
    colour_table: Optional[Dict[Tuple[int, int, int], int]] = None,
    colour_fix: str = "in the VOC palette; give index (palette or grey) PNGs instead",
    grey_rgb_is_index: bool = False,
) -> np.ndarray:
    """The raw values (int64 HxW) of a label image, before any check or mapping.

    Palette ('P'), grey ('L', '1', 'LA') and 16/32-bit ('I', 'I;16', ...) images give
    their index values (16-bit ones may exceed 255: callers decide); RGB(A) colour labels
    are mapped through `colour_table` (default: the VOC palette), or, when
    `grey_rgb_is_index` and every pixel is grey, read as a grey index image.
    """
    mode = im.mode
    if mode in ("P", "L"):
        return np.asarray(im).astype(np.int64)
    if mode == "1":
        return np.asarray(im.convert("L")).astype(np.int64)
    if mode == "LA":
        return np.asarray(im)[..., 0].astype(np.int64)
    if mode.startswith("I"):
        return np.asarray(im).astype(np.int64)
    if mode not in ("RGB", "RGBA"):
        raise BadPairError(
            f"{source}: unsupported label image mode {mode!r}; save labels as index "
            "(grey or palette) PNGs"
        )
    rgb = np.asarray(im.convert("RGB"))
    if (
        grey_rgb_is_index
        and (rgb[..., 0] == rgb[..., 1]).all()
        and (rgb[..., 1] == rgb[..., 2]).all()
    ):
        return rgb[..., 0].astype(np.int64)  # an index label saved as grey RGB
    table = voc_colour_table() if colour_table is None else colour_table
    return colours_to_ids(rgb, table, source, colour_fix)


def read_label_values(
    path: str, what: str = "label", decode_fix: str = "re-download or remove it", **kwargs
) -> np.ndarray:
    """label_values (kwargs: its options) of the label file at `path`; an undecodable
    file raises BadPairError naming it (as `what`) and `decode_fix`."""
    try:
        with Image.open(io.BytesIO(files.read_bytes(path))) as im:
            im.load()
            return label_values(im, path, **kwargs)
    except BadPairError:
        raise
    except Exception as e:  # PIL raises many types for bad data.
        raise BadPairError(f"{path}: cannot decode {what} ({e}); {decode_fix}") from e


def as_uint8_label(values: np.ndarray, source: str) -> np.ndarray:
    """Raw label values as uint8; values outside 0..255 (a 16-bit label) raise BadPairError
    rather than wrap into other classes."""
    wide = values[(values < 0) | (values > 255)]
    if wide.size:
        shown = np.unique(wide)[:10].tolist()
        raise BadPairError(
            f"{source}: label values {shown} do not fit 8 bits (a 16-bit label?) and would "
            f"wrap into other classes; {WIDE_LABEL_FIX}"
        )
    return values.astype(np.uint8)


def load_label_file(path: str) -> np.ndarray:
    """Reads a label PNG (palette, grey, 16-bit or VOC-colour RGB) to an HxW uint8 index
    map; values above 255 raise BadPairError naming the file."""
    return as_uint8_label(read_label_values(path), path)


def check_pair(
    image: np.ndarray,
    label: Optional[np.ndarray],
    num_classes: int,
    source: str,
    ignore_label: int = IGNORE_LABEL,
) -> None:
    """Raises BadPairError unless image is HxWx3 and label (if any) is HxW with values in
    [0, num_classes) or ignore_label."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise BadPairError(f"{source}: image has shape {image.shape}, expected HxWx3")
    if label is None:
        return
    if label.shape[:2] != image.shape[:2]:
        raise BadPairError(
            f"{source}: label size {label.shape[:2]} differs from image size "
            f"{image.shape[:2]}; the label file does not belong to this image"
        )
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != ignore_label)]
    if bad.size:
        raise BadPairError(
            f"{source}: label values {bad.tolist()} are outside [0, "
            f"{num_classes}) and not {ignore_label}; convert colour labels to "
            "class indices or fix num_classes"
        )


def read_file_bytes(path: str) -> bytes:
    """Reads a whole file (any tf.io.gfile path)."""
    return files.read_bytes(path)


def sniff_format(data: bytes) -> str:
    """'jpeg' or 'png' from magic bytes, else ''."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return ""
