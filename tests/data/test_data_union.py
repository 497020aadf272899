"""A union of splits in one stream: plain split names plus 'DIR:split' sources (the
self-training student's labeled set), with the id list applied to plain names only."""

import data_test_utils as u
import numpy as np
import pytest

from wss.data import pipeline, reader


def _pair(value, h=20, w=24):
    image = np.full((h, w, 3), 40 * value, np.uint8)
    return image, np.full((h, w), value, np.uint8)


@pytest.fixture
def two_dirs(tmp_path):
    data, pseudo = tmp_path / "data", tmp_path / "teacher" / "pseudo"
    # The labeled split: 6 images labeled 1; the pseudo split: 3 images labeled 2.
    u.write_records(
        data, "train", [u.encoded(f"a{i}.jpg", *_pair(1)) for i in range(6)], num_shards=2
    )
    u.write_records(
        pseudo, "pseudo", [u.encoded(f"p{i}.jpg", *_pair(2)) for i in range(3)], num_shards=2
    )
    ids = tmp_path / "ids.txt"
    ids.write_text("a1\na3\n")
    return str(data), str(pseudo), str(ids)


def _names(ds):
    return sorted(x["filename"].numpy().decode() for x in ds)


def test_parse_sources():
    s = reader.parse_sources("/d", ("train", "runs/t/pseudo:pseudo", "gs://b/x:y"))
    assert s == [
        reader.Source("/d", "train", True),
        reader.Source("runs/t/pseudo", "pseudo", False),
        reader.Source("gs://b/x", "y", False),
    ]
    assert reader.parse_sources("/d", "val") == [reader.Source("/d", "val", True)]
    for bad in ((), ("x:",), (":y",), ("",)):
        with pytest.raises(reader.DataError):
            reader.parse_sources("/d", bad)


def test_union_applies_the_id_list_to_the_plain_split_only(two_dirs):
    data, pseudo, ids = two_dirs
    split = ("train", f"{pseudo}:pseudo")
    ds = pipeline.decoded_records(data, split, 6, True, id_list=ids)
    assert _names(ds) == ["a1.jpg", "a3.jpg", "p0.jpg", "p1.jpg", "p2.jpg"]
    # Without an id list: everything; a list works like a tuple.
    assert len(_names(pipeline.decoded_records(data, list(split), 6, True))) == 9
    # exclude_ids also applies to the plain split only.
    ds = pipeline.decoded_records(data, split, 6, False, exclude_ids=["a0", "p0"])
    assert _names(ds) == [
        "a1.jpg",
        "a2.jpg",
        "a3.jpg",
        "a4.jpg",
        "a5.jpg",
        "p0.jpg",
        "p1.jpg",
        "p2.jpg",
    ]


def test_labeled_dataset_union_as_train_py_calls_it(two_dirs):
    data, pseudo, ids = two_dirs
    # train.make_input: split=exp.labeled_split (a tuple), id_list=the resolved path.
    stream = pipeline.TrainingStream(
        data,
        ("train", f"{pseudo}:pseudo"),
        65,
        dataset_name="demo",
        id_list=ids,
        shuffle_buffer=0,
        repeat=False,
        seed=0,
    )
    ds = pipeline.labeled_dataset(stream, 1)
    kinds = []
    for batch in ds:
        values = set(np.unique(batch["label"].numpy()).tolist()) - {255}
        assert len(values) == 1
        kinds.append(values.pop())
    assert sorted(kinds) == [1, 1, 2, 2, 2]  # 2 listed labeled images + 3 pseudo ones
    # Sharded by input pipeline (tf.distribute): the shards partition the union.
    per_pipeline = []
    for index in range(2):
        ctx = pipeline.tf.distribute.InputContext(2, index, 2)
        ds = pipeline.labeled_dataset(stream, 1, input_context=ctx)
        per_pipeline.append(sum(1 for _ in ds))
    assert sum(per_pipeline) == 5


def test_union_errors_name_the_problem(two_dirs, tmp_path):
    data, pseudo, ids = two_dirs
    with pytest.raises(reader.DataError, match="plain split names only"):
        pipeline.decoded_records(data, (f"{pseudo}:pseudo",), 6, True, id_list=ids)
    with pytest.raises(reader.DataError, match="split .nope. missing"):
        pipeline.decoded_records(data, ("train", f"{tmp_path}/teacher/pseudo:nope"), 6, True)
    with pytest.raises(reader.DataError, match="does not exist"):
        pipeline.decoded_records(data, ("train", f"{tmp_path}/none:pseudo"), 6, True)
    # An id of the pseudo split in the id list is an error: the list selects from 'train'.
    with pytest.raises(reader.DataError, match="not in the records"):
        pipeline.decoded_records(data, ("train", f"{pseudo}:pseudo"), 6, True, id_list=["a1", "p0"])


def test_split_files_of_a_union(two_dirs):
    data, pseudo, _ = two_dirs
    files, plain = reader.source_files(data, ("train", f"{pseudo}:pseudo"))
    assert len(files) == 4 and len(plain) == 2
    assert all("/data/train-" in f for f in plain)
    assert reader.split_files(data, ("train", f"{pseudo}:pseudo")) == files
