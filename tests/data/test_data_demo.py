"""The synthetic demo dataset: deterministic from its seed, documented sizes."""

import filecmp
import os

import numpy as np

from wss.builders import demo
from wss.data import descriptors, pipeline, reader, splits


def test_images_are_a_function_of_the_seed():
    a, la = demo.generate_image(0, 5)
    b, lb = demo.generate_image(0, 5)
    c, _ = demo.generate_image(1, 5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.shape != c.shape or not np.array_equal(a, c)
    assert demo.MIN_SIZE <= a.shape[0] <= demo.MAX_SIZE
    assert set(np.unique(la)) <= set(range(demo.NUM_CLASSES))


def test_small_builds_are_byte_identical(tmp_path):
    kw = dict(num_train=30, num_val=6, num_labeled=10)
    demo.build_demo_dataset(str(tmp_path / "a"), seed=3, **kw)
    demo.build_demo_dataset(str(tmp_path / "b"), seed=3, **kw)
    names = sorted(os.listdir(tmp_path / "a"))
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", names, shallow=False)
    assert not mismatch and not errors and len(match) == len(names)


def test_full_demo_has_documented_sizes(tmp_path):
    d = str(tmp_path / "demo")
    demo.ensure_demo_dataset(d)
    marker = os.path.join(d, "DEMO_COMPLETE.json")
    mtime = os.path.getmtime(marker)
    assert demo.ensure_demo_dataset(d) == d and os.path.getmtime(marker) == mtime
    sizes = descriptors.get_descriptor("demo").splits_to_sizes
    for split, size in sizes.items():
        scans = reader.scan_files(reader.split_files(d, split))
        assert sum(len(s.ids) for s in scans) == size
    labeled = splits.read_id_list(os.path.join(d, "labeled.txt"))
    assert len(labeled) == sizes["labeled"]
    batch = next(
        iter(
            pipeline.labeled_dataset(
                pipeline.TrainingStream(
                    d, "train", 65, id_list=labeled, dataset_name="demo", seed=0
                ),
                8,
            )
        )
    )
    assert batch["image"].shape == (8, 65, 65, 3)
    got = next(iter(pipeline.eval_dataset(d, 100, split="val", dataset_name="demo")))
    assert got["image"].shape[0] == 100
    present = set(np.unique(got["label"].numpy())) - {255}
    assert present == set(range(demo.NUM_CLASSES))
