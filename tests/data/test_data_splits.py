"""Id lists, class-balanced sampling, and split selection by pattern and by id list."""

import os

import data_test_utils as u
import numpy as np
import pytest

from wss.data import descriptors, pipeline, reader, splits


def read_header(path):
    """The key=value pairs of an id list's '#' header (e.g. seed, draw)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        if not line.startswith("#"):
            break
        out.update(tok.split("=", 1) for tok in line[1:].split() if "=" in tok)
    return out


def test_id_list_skips_comments_and_release_files_parse(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("# seed=3\n\na\nb\n# trailing\n")
    assert splits.read_id_list(str(p)) == ["a", "b"]
    p.write_text("a\na\n")
    with pytest.raises(ValueError, match="repeats"):
        splits.read_id_list(str(p))


def test_balanced_sampling_is_reproducible_and_covers_classes(tmp_path):
    rng = np.random.RandomState(0)
    ids = [f"i{k}" for k in range(200)]
    classes = [
        set(rng.choice(np.arange(1, 6), rng.randint(1, 3), replace=False).tolist()) for _ in ids
    ]
    a = splits.sample_balanced(ids, classes, 20, 6, min_per_class=2, seed=5)
    b = splits.sample_balanced(ids, classes, 20, 6, min_per_class=2, seed=5)
    c = splits.sample_balanced(ids, classes, 20, 6, min_per_class=2, seed=5, skip_draws=1)
    assert a.ids == b.ids and a.ids != c.ids and len(set(a.ids)) == 20
    counts = np.zeros(6)
    for i in a.ids:
        for k in classes[ids.index(i)]:
            counts[k] += 1
    assert counts[1:].min() >= 2
    path = tmp_path / "s.txt"
    splits.write_id_list(str(path), a.ids, splits.sample_header(a, "test"))
    assert splits.read_id_list(str(path)) == a.ids
    assert read_header(str(path))["seed"] == "5"
    with pytest.raises(ValueError, match="fewer than"):
        splits.sample_balanced(ids, [set()] * 200, 20, 6)


def test_labeled_against_extra_reports_overlap():
    rep = splits.check_labeled_against_extra(["a", "b"], ["a", "b", "c"])
    assert rep.overlap == ["a", "b"] and rep.extra_ids == ["a", "b", "c"]
    rep = splits.check_labeled_against_extra(["a"], ["a", "b", "c"], exclude_labeled=True)
    assert rep.extra_ids == ["b", "c"]
    with pytest.raises(ValueError, match="not in the extra set"):
        splits.check_labeled_against_extra(["z"], ["a"])


def _write(tmp_path):
    recs = [u.encoded(f"id{k}", *u.random_pair(k, 33, 35)) for k in range(6)]
    u.write_records(tmp_path, "train", recs, num_shards=3)
    u.write_records(tmp_path, "train_aug", recs[:2], num_shards=1)


def _names(ds):
    return sorted(n.decode() for n in u.collect(ds)["filename"])


def test_selection_by_pattern_and_by_id_list(tmp_path):
    _write(tmp_path)
    assert len(reader.split_files(str(tmp_path), "train")) == 3  # not train_aug-*
    assert _names(pipeline.eval_dataset(str(tmp_path), 4, split="train", dataset_name="demo")) == [
        f"id{k}" for k in range(6)
    ]
    assert _names(
        pipeline.eval_dataset(str(tmp_path), 4, split="train_aug", dataset_name="demo")
    ) == ["id0", "id1"]
    ids = tmp_path / "ids.txt"
    ids.write_text("# picked\nid4\nid1\n")
    assert _names(
        pipeline.eval_dataset(
            str(tmp_path), 4, split="train", id_list=str(ids), dataset_name="demo"
        )
    ) == ["id1", "id4"]
    extra = pipeline.extra_dataset(
        pipeline.TrainingStream(
            str(tmp_path), "train", 65, dataset_name="demo", repeat=False, shuffle_buffer=0
        ),
        1,
        exclude_ids=str(ids),
    )
    assert len(list(extra)) == 4
    with pytest.raises(reader.DataError, match="not in the records"):
        pipeline.eval_dataset(str(tmp_path), 4, split="train", id_list=["id9"], dataset_name="demo")


def test_descriptors_registry():
    voc = descriptors.get_descriptor("pascal_voc_seg")
    assert (voc.num_classes, voc.eval_crop_size, voc.splits_to_sizes["train_aug"]) == (
        21,
        513,
        10582,
    )
    coco = descriptors.get_descriptor("coco")
    assert (coco.num_classes, coco.eval_crop_size, coco.splits_to_sizes["512_all"]) == (
        81,
        641,
        232,
    )
    assert descriptors.get_descriptor("demo").num_foreground_classes == 5
    with pytest.raises(ValueError, match="known datasets"):
        descriptors.get_descriptor("cityscapes")


# The official lists shipped in datasets/splits and their documented sizes.
SHIPPED = {
    "pascal_voc_seg/4_clean.txt": 366,
    "pascal_voc_seg/8_clean.txt": 183,
    "pascal_voc_seg/16_clean_3.txt": 92,
    "pascal_voc_seg/16_clean_14.txt": 92,
    "pascal_voc_seg/16_clean_20.txt": 92,
    "coco/32_all.txt": 3697,
    "coco/64_all.txt": 1849,
    "coco/128_all.txt": 925,
    "coco/256_all.txt": 463,
    "coco/512_all.txt": 232,
}


@pytest.mark.parametrize("name,size", sorted(SHIPPED.items()))
def test_shipped_official_splits_parse_with_documented_sizes(name, size):
    root = os.path.join(os.path.dirname(__file__), "..", "..", "datasets", "splits")
    ids = splits.read_id_list(os.path.join(root, name))
    assert len(ids) == size == len(set(ids))
    if name.startswith("pascal_voc_seg/4"):
        assert size == descriptors.get_descriptor("pascal_voc_seg").splits_to_sizes["4_clean"]
