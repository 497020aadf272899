"""The folder builder's inputs: classes.txt, --label_map, and the files of a folder by stem.

Files are read through wss.files (TensorFlow loads on the first read only).
"""

import io
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image

from wss import files
from wss.data import image_io
from wss.data.descriptors import IGNORE_LABEL

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MASK_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff", ".gif", ".jpg", ".jpeg")
_COLOR_RE = re.compile(r"^(.*?)\s+#([0-9a-fA-F]{6})$")

Colour = Tuple[int, int, int]


class FolderDataError(image_io.BadPairError):
    """A problem with the input folders or classes.txt (names the file and the fix)."""


def read_classes(path: str) -> Tuple[List[str], List[Optional[Colour]]]:
    """Class names (line i = class id i) and optional `#rrggbb` colours of classes.txt."""
    if not files.isfile(path):
        raise FolderDataError(
            f"{path}: classes file not found; write one class name per line, background first"
        )
    lines = [line.strip() for line in files.read_text(path).splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    names, colors = [], []
    for i, line in enumerate(lines):
        if not line:
            raise FolderDataError(
                f"{path}: line {i + 1} is empty; line i names class id i-1, so "
                "blank lines would shift every later class"
            )
        m = _COLOR_RE.match(line)
        if m:
            line = m.group(1).strip()
            hx = m.group(2)
            colors.append(tuple(int(hx[j : j + 2], 16) for j in (0, 2, 4)))
        else:
            colors.append(None)
        names.append(line)
    if len(names) < 2:
        raise FolderDataError(
            f"{path}: {len(names)} classes; need at least 2 (background and one foreground class)"
        )
    if len(names) > 255:
        raise FolderDataError(f"{path}: {len(names)} classes; at most 255 (255 is ignore)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise FolderDataError(f"{path}: class names {dup} appear more than once")
    return names, colors


def parse_label_map(spec, num_classes: int) -> Dict[int, int]:
    """'0:0,255:1' (or a dict) -> {raw value: class id}; targets in [0, C) or 255."""
    if not spec:
        return {}
    if isinstance(spec, dict):
        pairs = list(spec.items())
    else:
        pairs = []
        for part in str(spec).split(","):
            part = part.strip()
            if not part:
                continue
            if ":" not in part:
                raise FolderDataError(
                    f"--label_map entry {part!r} is not RAW:CLASS (e.g. 0:0,255:1)"
                )
            a, b = part.split(":", 1)
            try:
                pairs.append((int(a), int(b)))
            except ValueError:
                raise FolderDataError(
                    f"--label_map entry {part!r}: RAW and CLASS must be integers"
                ) from None
    out = {}
    for raw, cls in pairs:
        raw, cls = int(raw), int(cls)
        if raw < 0 or raw > 65535:
            raise FolderDataError(f"--label_map: raw value {raw} is not in 0..65535")
        if not (0 <= cls < num_classes or cls == IGNORE_LABEL):
            raise FolderDataError(
                f"--label_map: {raw}:{cls} maps to {cls}, which is not a class "
                f"id 0..{num_classes - 1} nor {IGNORE_LABEL} (ignore)"
            )
        if raw in out and out[raw] != cls:
            raise FolderDataError(f"--label_map: raw value {raw} is mapped twice")
        out[raw] = cls
    return out


def files_by_stem(folder: str, extensions: Sequence[str], what: str) -> Dict[str, str]:
    """{stem: path} of the files of `folder` with an allowed extension (any case); raises
    on a stem used by two files."""
    if not files.isdir(folder):
        raise FolderDataError(f"{what} folder {folder!r} does not exist")
    out: Dict[str, str] = {}
    for name in files.listdir(folder):
        path = os.path.join(folder, name)
        stem, ext = os.path.splitext(name)
        # The extension test first: it spares a file-system call per name (a bucket).
        if name.startswith(".") or ext.lower() not in extensions or files.isdir(path):
            continue
        if stem in out:
            raise FolderDataError(
                f"{out[stem]} and {path} have the same stem {stem!r}; ids must "
                f"be unique within the {what} folder"
            )
        out[stem] = path
    return out


def palette_colors(mask_path: str, n: int) -> List[Optional[Colour]]:
    """The first n palette colours of a palette ('P') mask (None where it has none)."""
    try:
        with Image.open(io.BytesIO(files.read_bytes(mask_path))) as im:
            pal = im.getpalette() if im.mode == "P" else None
    except Exception:  # reported when the mask is encoded
        pal = None
    pal = pal or []
    return [tuple(pal[3 * k : 3 * k + 3]) if len(pal) >= 3 * k + 3 else None for k in range(n)]


def resolve_colors(
    explicit: Sequence[Optional[Colour]], mask_paths: Sequence[str]
) -> Tuple[Colour, ...]:
    """Per class: the classes.txt colour, else the palette of the first palette mask, else
    the VOC palette's."""
    n = len(explicit)
    from_palette: List[Optional[Colour]] = [None] * n
    for p in mask_paths[:20]:
        if p.lower().endswith(".png"):
            cand = palette_colors(p, n)
            if any(c is not None for c in cand):
                from_palette = cand
                break
    voc = image_io.voc_colormap(n)
    return tuple(
        tuple(int(v) for v in (e or pc or voc[k]))
        for k, (e, pc) in enumerate(zip(explicit, from_palette))
    )
