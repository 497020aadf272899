"""TensorFlow Datasets as a data source, without a network: tfds.testing.mock_data serves
each registered builder's splits from small synthetic examples whose image and label have
the same size (TFDS's default mock draws them at different sizes), with TFDS's own split
arithmetic for slices. PseudoSeg trains and evaluates on them through wss.train."""

import contextlib
import dataclasses
import io
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import TINY_TRAIN_PARAMS, gin_param_flags
from wss import program
from wss.data import descriptors, pipeline, tfds_registry, tfds_source
from wss.data.descriptors import IGNORE_LABEL
from wss.data.errors import DataError

pytestmark = pytest.mark.usefixtures("clear_gin")

SIZES = {"train": 12, "test": 4, "validation": 4}
EVAL_SPLIT = {"oxford_iiit_pet": "test", "scene_parse150": "test", "cityscapes": "validation"}
ENTRIES = [tfds_registry.lookup(f"tfds:{key}") for key in EVAL_SPLIT]


def _example_name(entry, split, i):
    """The id feature's value of fake example i (None: TFDS's tfds_id names it)."""
    if entry.key == "oxford_iiit_pet":
        return f"{split}_pet_{i}.jpg"
    if entry.key == "cityscapes":
        return f"{split}_city_{i:06d}_000019"
    return None


def _raw_label(entry, rng, h, w):
    """A raw label image as the builder stores it: blocks of raw values the entry maps,
    and (ADE20K's instance mask) an instance id in the green channel."""
    values = sorted(entry.label_map)
    raw = np.full((h, w), values[0], np.uint8)
    for _ in range(4):
        y, x = rng.randint(0, h - 8), rng.randint(0, w - 8)
        raw[y : y + rng.randint(6, h - y), x : x + rng.randint(6, w - x)] = rng.choice(values)
    if entry.key == "scene_parse150":
        return np.stack([raw, (raw > 0).astype(np.uint8) * 3, np.zeros_like(raw)], -1)
    return raw[..., None]


def _fake_split(entry, split):
    """SIZES[split] examples: (encoded image, encoded label, name), image sizes vary."""
    rng = np.random.RandomState(len(split) + len(entry.key))
    out = []
    for i in range(SIZES[split]):
        h, w = 30 + (i % 4) * 3, 36 + (i % 3) * 5
        image = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        label = _raw_label(entry, rng, h, w)
        out.append(
            (
                tf.io.encode_png(image).numpy(),
                tf.io.encode_png(label).numpy(),
                _example_name(entry, split, i),
            )
        )
    return out


FAKES = {e.builder.split("/")[0]: (e, {s: _fake_split(e, s) for s in SIZES}) for e in ENTRIES}


def _as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
    """The mock's `_as_dataset`: TFDS resolves the split string against SIZES (so a slice
    selects what TFDS would), the source's SkipDecoding features come back encoded."""
    del shuffle_files, kwargs
    entry, fake = FAKES[self.name]
    assert isinstance(decoders[entry.image_feature], tfds.decode.SkipDecoding)
    assert isinstance(decoders[entry.label_feature], tfds.decode.SkipDecoding)
    infos = {name: types.SimpleNamespace(num_examples=n) for name, n in SIZES.items()}
    rows = [
        (part.splitname, i)
        for part in tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
        for i in range(SIZES[part.splitname])[part.from_ : part.to]
    ]
    name_key = entry.id_feature or tfds_source.TFDS_ID

    def examples():
        for name, i in rows:
            image, label, example_name = fake[name][i]
            if example_name is None:  # TFDS's tfds_id (read_config.add_tfds_id)
                example_name = f"{self.name}-{name}.tfrecord-00000-of-00001__{i}"
            yield {entry.image_feature: image, entry.label_feature: label, name_key: example_name}

    spec = tf.TensorSpec([], tf.string)
    signature = {entry.image_feature: spec, entry.label_feature: spec, name_key: spec}
    return tf.data.Dataset.from_generator(examples, output_signature=signature)


@contextlib.contextmanager
def mocked_tfds():
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_as_dataset):
        yield


def _ids(ds, n):
    return [x["filename"].decode() for x in ds.take(n).as_numpy_iterator()]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.key)
def test_stream_decodes_and_converts_labels(entry):
    """The decoded stream is decode_record's dict, labels in class ids: each raw value
    becomes what the registry maps it to, pixel for pixel."""
    with mocked_tfds():
        ds = pipeline.decoded_records(
            "/unused", "train[:3]", entry.num_classes, True, dataset_name=entry.name
        )
        got = list(ds.as_numpy_iterator())
    assert len(got) == 3
    for i, x in enumerate(got):
        image_bytes, label_bytes, _ = FAKES[entry.builder.split("/")[0]][1]["train"][i]
        raw = tf.io.decode_png(label_bytes).numpy()[..., :1].astype(int)
        expected = np.vectorize(lambda v: entry.label_map[v])(raw)
        np.testing.assert_array_equal(x["image"], tf.io.decode_png(image_bytes).numpy())
        np.testing.assert_array_equal(x["label"], expected)
        assert x["label"].dtype == np.int32 and x["has_label"] and x["reason"] == 0
    # The pet trimap: 1 pet, 2 background, 3 border (ignored).
    if entry.key == "oxford_iiit_pet":
        assert set(entry.lookup_table()[1:4]) == {1, 0, IGNORE_LABEL}


def test_split_slice_and_id_list_select_what_they_say(tmp_path):
    """'train[:25%]' reads the first quarter, 'train[25%:]' the rest; an id list of file
    names (with or without extension) keeps those, exclude_ids leaves them out."""
    name = "tfds:oxford_iiit_pet"
    with mocked_tfds():
        head = _ids(pipeline.decoded_records(None, "train[:25%]", 2, True, dataset_name=name), 99)
        rest = _ids(pipeline.decoded_records(None, "train[25%:]", 2, True, dataset_name=name), 99)
        assert head == [f"train_pet_{i}.jpg" for i in range(3)]
        assert rest == [f"train_pet_{i}.jpg" for i in range(3, 12)]
        listed = tmp_path / "labeled.txt"
        listed.write_text("# three pets\ntrain_pet_4\ntrain_pet_7.jpg\ntrain_pet_9\n")
        kept = pipeline.decoded_records(
            None, "train", 2, True, id_list=str(listed), dataset_name=name
        )
        assert sorted(_ids(kept, 99)) == ["train_pet_4.jpg", "train_pet_7.jpg", "train_pet_9.jpg"]
        others = pipeline.decoded_records(
            None, "train", 2, False, exclude_ids=str(listed), dataset_name=name
        )
        assert len(_ids(others, 99)) == 9 and "train_pet_7.jpg" not in _ids(others, 99)
        with pytest.raises(DataError, match="not in tfds:oxford_iiit_pet split 'test'"):
            pipeline.decoded_records(None, "test", 2, True, id_list=str(listed), dataset_name=name)


def test_streams_have_the_tfrecord_sources_shapes():
    """The labeled, extra (weak + strong) and eval streams of a TFDS dataset: static
    shapes, the registry's class count, padding to the eval crop."""
    name = "tfds:cityscapes"
    with mocked_tfds():
        stream = pipeline.TrainingStream(
            None, "train[:4]", 33, dataset_name=name, seed=0, shuffle_buffer=4
        )
        lab = pipeline.labeled_dataset(stream, 2)
        extra = pipeline.extra_dataset(dataclasses.replace(stream, split="train[4:]", seed=1), 2)
        ev = pipeline.eval_dataset(None, 3, "validation", name, eval_crop_size=65)
        pipeline.check_static(lab.element_spec)
        pipeline.check_static(extra.element_spec)
        x, e, v = next(iter(lab)), next(iter(extra)), next(iter(ev))
    assert x["image"].shape == (2, 33, 33, 3) and x["image_labels"].shape == (2, 18)
    assert e["strong"].shape == (2, 33, 33, 3) and e["has_label"].numpy().tolist() == [1, 1]
    assert v["image"].shape == (3, 65, 65, 3) and v["height"].numpy().tolist() == [30, 33, 36]
    assert set(np.unique(x["label"])) <= set(range(19)) | {IGNORE_LABEL}


def test_large_images_are_resized_to_the_registry_size():
    """An image longer than max_size comes out with its longer side max_size (bilinear),
    its label nearest-resized, so every eval image fits the eval crop."""
    entry = tfds_registry.OXFORD_IIIT_PET
    image = np.zeros((300, 600, 3), np.uint8)
    image[:, 300:] = 200
    raw = np.full((300, 600, 1), 2, np.uint8)
    raw[:, 300:] = 1
    x = {
        "image": tf.io.encode_png(image),
        "label": tf.io.encode_png(raw),
        "filename": tf.constant("big.jpg"),
    }
    out = tfds_source.decode_example(entry, "here ", tf.constant(0, tf.int64), x)
    assert out["image"].shape == (256, 512, 3) and out["label"].shape == (256, 512, 1)
    assert out["image"].dtype == tf.uint8
    np.testing.assert_array_equal(out["label"][:, :250, 0], 0)
    np.testing.assert_array_equal(out["label"][:, 262:, 0], 1)


def test_descriptor_names_classes_from_the_registry():
    """Evaluation, vis and export read the registry's descriptor by the dataset name."""
    pet = descriptors.get_descriptor("tfds:oxford_iiit_pet")
    assert pet.class_names == ("background", "pet") and pet.num_classes == 2
    city = descriptors.get_descriptor("tfds:cityscapes")
    assert city.num_classes == 19 and city.class_names[13] == "car"
    assert city.class_colors[0] == (128, 64, 128)
    ade = descriptors.get_descriptor("tfds:scene_parse150")
    assert ade.num_classes == 101 and ade.class_names[4] == "person"


@pytest.mark.parametrize(
    "name, why",
    [
        ("tfds:no_such_dataset", "TensorFlow Datasets has no builder"),
        ("tfds:mnist", "no per-pixel label feature"),
    ],
)
def test_unsupported_builder_is_one_error_line_naming_the_supported(name, why):
    with pytest.raises(tfds_registry.TfdsNameError) as caught:
        descriptors.get_descriptor(name)
    line = program.user_message(caught.value)
    assert line is not None and "\n" not in line and why in line
    for supported in tfds_registry.supported_names():
        assert supported in line


def test_a_split_the_builder_lacks_is_named_with_its_splits():
    builder = types.SimpleNamespace(info=types.SimpleNamespace(splits={"train": 0, "test": 0}))
    tfds_source.check_split(tfds_registry.OXFORD_IIIT_PET, builder, "train[:10%]+test")
    with pytest.raises(DataError, match="no split 'val'.*test, train.*eval_split = 'test'"):
        tfds_source.check_split(tfds_registry.OXFORD_IIIT_PET, builder, "val")


def test_data_dir_resolution():
    """--dataset_dir wins over Experiment.tfds_data_dir, then TFDS's default."""
    from wss.builders.dataset_dir import resolve_dataset_dir

    name = "tfds:oxford_iiit_pet"
    assert resolve_dataset_dir(name, "gs://b/tfds", "gs://other") == "gs://b/tfds"
    assert resolve_dataset_dir(name, None, "gs://other") == "gs://other"
    assert resolve_dataset_dir(name) == tfds.core.constants.DATA_DIR


def _train_args(model_dir, entry, *params):
    return [
        "train",
        "--gin_file=gin/demo.gin",
        f"--model_dir={model_dir}",
        "--images_every=0",
        "--log_every=1",
    ] + gin_param_flags(
        TINY_TRAIN_PARAMS
        + (
            f"Experiment.dataset_name = '{entry.name}'",
            "Experiment.labeled_split = 'train[:50%]'",
            "Experiment.extra_split = 'train[50%:]'",
            f"Experiment.eval_split = '{EVAL_SPLIT[entry.key]}'",
            "Experiment.eval_crop_size = 65",
            "Experiment.num_steps = 2",
            "StrongConfig.cutout_half_size = 3",
        )
        + params
    )


def _train(model_dir, entry):
    """wss.train on the mocked builder (2 PseudoSeg steps, final evaluation); returns its
    logs and what it printed."""
    from wss import train

    out = io.StringIO()
    with mocked_tfds(), contextlib.redirect_stdout(out):
        logs = train.main(_train_args(model_dir, entry))
    return logs, out.getvalue()


def _assert_trained_and_evaluated(entry, logs, out):
    assert np.isfinite(logs["total_loss"]) and "unsup_loss" in logs, out
    assert f"on {entry.name} ({entry.num_classes} classes)" in out
    table = out[out.index("class ") :]
    for name in entry.class_names:
        assert re.search(rf"^{re.escape(name)} +(n/a|\d+\.\d\d)$", table, re.M), table
    assert "final mIoU on " + EVAL_SPLIT[entry.key] in out


@pytest.fixture(scope="module")
def pet_run(tmp_path_factory):
    """One tiny PseudoSeg run on the mocked pets, shared by the tests that read it."""
    model_dir = tmp_path_factory.mktemp("tfds_pet") / "run"
    logs, out = _train(model_dir, tfds_registry.OXFORD_IIIT_PET)
    return {"model_dir": model_dir, "logs": logs, "out": out}


@pytest.mark.slow
def test_pseudoseg_trains_on_pets_and_evaluates_with_the_registry_names(pet_run):
    """PseudoSeg steps (finite losses, the unsupervised loss of the extra slice), then the
    final evaluation prints every class by the registry's name."""
    _assert_trained_and_evaluated(tfds_registry.OXFORD_IIIT_PET, pet_run["logs"], pet_run["out"])


@pytest.mark.slow
def test_eval_tool_restores_the_tfds_run(pet_run):
    """wss.eval rebuilds the run from its operative config (dataset, classes, data dir)
    and evaluates a slice of the eval split."""
    from wss import eval as eval_tool

    out = io.StringIO()
    with mocked_tfds(), contextlib.redirect_stdout(out):
        (result,) = eval_tool.main(
            ["eval", f"--model_dir={pet_run['model_dir']}", "--split=test[:2]"]
        )
    printed = out.getvalue()
    assert result["num_images"] == 2 and "on tfds:oxford_iiit_pet/test[:2]" in printed
    assert re.search(r"^background +\S+$", printed, re.M) and re.search(
        r"^pet +\S+$", printed, re.M
    )


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES[1:], ids=lambda e: e.key)
def test_pseudoseg_trains_and_evaluates_on_the_other_builders(tmp_path, entry):
    logs, out = _train(tmp_path / "run", entry)
    _assert_trained_and_evaluated(entry, logs, out)


@pytest.mark.slow
def test_train_command_prints_one_error_line_for_a_builder_without_masks(tmp_path):
    """`python -m wss.train` with 'tfds:mnist' (a TFDS builder, no per-pixel label):
    exit 2, no traceback, one `error:` line naming the supported datasets."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "PSEUDOSEG_TRACEBACK"}
    env["PYTHONPATH"] = root
    out = subprocess.run(
        [sys.executable, "-m", "wss.train", "--gin_file=gin/demo.gin"]
        + [f"--model_dir={tmp_path}", "--gin_param=Experiment.dataset_name = 'tfds:mnist'"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert [line for line in lines if line.startswith("error")] == lines[-1:], out.stderr
    assert "'tfds:mnist'" in lines[-1] and "no per-pixel label" in lines[-1]
    for supported in tfds_registry.supported_names():
        assert supported in lines[-1]


def test_cityscapes_without_its_manual_download_says_where_the_zips_go(tmp_path):
    """TFDS cannot download Cityscapes (no network needed to find that out): a DataError
    names the two zips and the folder to put them in."""
    with pytest.raises(DataError) as caught:
        tfds_source.load_builder(tfds_registry.CITYSCAPES, str(tmp_path))
    message = program.user_message(caught.value)
    assert "leftImg8bit_trainvaltest.zip" in message and "gtFine_trainvaltest.zip" in message
    assert str(tmp_path / "downloads" / "manual") in message and "\n" not in message


def test_labeled_slice_is_left_out_of_the_extra_split():
    """exclude_labeled_from_extra with a labeled slice: its ids, read from TFDS (here
    ADE20K's tfds_id, as it has no file name), are what the extra stream drops."""
    from wss.experiment import Experiment
    from wss.training import labeled_ids

    exp = Experiment(dataset_name="tfds:scene_parse150", labeled_split="train[:4]")
    with mocked_tfds():
        ids = labeled_ids(exp, None)
        extra = pipeline.decoded_records(
            None, "train", 101, False, exclude_ids=ids, dataset_name=exp.dataset_name
        )
        names = _ids(extra, 99)
    assert ids == [f"scene_parse150-train.tfrecord-00000-of-00001__{i}" for i in range(4)]
    assert names == [f"scene_parse150-train.tfrecord-00000-of-00001__{i}" for i in range(4, 12)]
