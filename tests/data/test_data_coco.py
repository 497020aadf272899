"""COCO conversion: class mapping of masks and the lazy pycocotools import."""

import sys

import numpy as np
import pytest

from wss.builders import coco


def _box_mask(seg, h, w):
    """Stand-in for pycocotools decoding: seg is a (y0, y1, x0, x1) box."""
    m = np.zeros((h, w), bool)
    y0, y1, x0, x1 = seg
    m[y0:y1, x0:x1] = True
    return m


def test_semantic_mask_order_and_crowd():
    anns = [
        (3, False, 16.0, (0, 4, 0, 4)),  # small, painted last among things
        (7, False, 100.0, (0, 10, 0, 10)),
        (80, True, 4.0, (8, 10, 8, 10)),
    ]  # crowd -> ignore
    label = coco.semantic_mask(anns, 12, 12, mask_fn=_box_mask)
    assert label[1, 1] == 3 and label[5, 5] == 7 and label[11, 11] == 0
    assert np.all(label[8:10, 8:10] == 255)


def test_missing_pycocotools_names_the_extra(tmp_path, monkeypatch):
    for name in ("pycocotools", "pycocotools.coco", "pycocotools.mask"):
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[coco\]"'):
        coco.items_from_annotations(str(tmp_path / "a.json"), str(tmp_path))
    with pytest.raises(ImportError, match="pycocotools"):
        coco.ann_mask([[0, 0, 1, 0, 1, 1]], 4, 4)


def test_unlabeled_folder_items(tmp_path):
    d = tmp_path / "unlabeled2017"
    d.mkdir()
    (d / "000000000001.jpg").write_bytes(b"x")
    (d / "notes.txt").write_text("skip me")
    items = coco.items_from_folder(str(d))
    assert [i.image_id for i in items] == ["unlabeled2017/000000000001"]
    assert items[0].anns is None
