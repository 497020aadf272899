"""NumPy/PIL helpers for dataset builders: encode, decode and check image/label pairs.

Kept free of TensorFlow so builder worker processes start fast.
"""

import io
from typing import Optional

import numpy as np
from PIL import Image

from wss.errors import UserError

IGNORE_LABEL = 255


class BadPairError(UserError, ValueError):
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


def label_from_pil(im: Image.Image, source: str = "<label>") -> np.ndarray:
    """Turns a label image into class indices: palette ('P') and grey ('L') keep their
    index values; RGB colour labels are mapped back through the VOC palette."""
    if im.mode == "P" or im.mode == "L":
        return np.asarray(im, dtype=np.uint8)
    if im.mode in ("I", "I;16"):
        return np.asarray(im).astype(np.int64).clip(0, 65535).astype(np.uint8)
    if im.mode in ("RGB", "RGBA"):
        rgb = np.asarray(im.convert("RGB"))
        return rgb_to_index(rgb, source)
    raise BadPairError(f"{source}: unsupported label image mode {im.mode!r}")


def rgb_to_index(rgb: np.ndarray, source: str = "<label>") -> np.ndarray:
    """Maps a VOC-palette colour label (HxWx3) to class indices; unknown colours raise."""
    cmap = voc_colormap().astype(np.int64)
    keys = (cmap[:, 0] << 16) | (cmap[:, 1] << 8) | cmap[:, 2]
    lut = {int(k): i for i, k in reversed(list(enumerate(keys)))}
    flat = (
        (rgb[..., 0].astype(np.int64) << 16)
        | (rgb[..., 1].astype(np.int64) << 8)
        | rgb[..., 2].astype(np.int64)
    )
    uniq, inv = np.unique(flat, return_inverse=True)
    out = np.empty(len(uniq), dtype=np.uint8)
    for j, key in enumerate(uniq):
        if int(key) not in lut:
            raise BadPairError(
                f"{source}: colour #{int(key):06x} is not in the VOC palette; "
                "give index (palette or grey) PNGs instead"
            )
        out[j] = lut[int(key)]
    return out[inv].reshape(flat.shape)


def load_label_file(path: str) -> np.ndarray:
    """Reads a label PNG (palette, grey or VOC-colour RGB) to an HxW uint8 index map."""
    try:
        with Image.open(path) as im:
            return label_from_pil(im, path)
    except BadPairError:
        raise
    except Exception as e:
        raise BadPairError(f"{path}: cannot read label ({e}); re-download or remove it") from e


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
    """Reads a whole file."""
    with open(path, "rb") as f:
        return f.read()


def sniff_format(data: bytes) -> str:
    """'jpeg' or 'png' from magic bytes, else ''."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return ""
