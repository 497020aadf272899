"""Command lines report a user's mistake as one line `error: ...` (exit 2, no traceback),
show the trace with --traceback, and start without C++ or absl INFO lines."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import TINY_TRAIN_PARAMS, gin_param_flags
from tests.data import data_test_utils as u
from wss.data import image_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Lines of TensorFlow's C++ log ("I0000 00:00:...", "E0000 ... cuInit") and absl's Python
# log prefix ("I1202 07:34:57.617043 140292 functional_saver.py:440] ...").
NOISE = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|cuInit|oneDNN|\.py:\d+\] ", re.M)


def run(args, **env):
    # The programs must quiet TensorFlow themselves: the test session's setting is dropped.
    drop = ("TF_CPP_MIN_LOG_LEVEL", "PSEUDOSEG_TRACEBACK")
    full_env = {k: v for k, v in os.environ.items() if k not in drop}
    full_env.update(PYTHONPATH=ROOT, **env)
    return subprocess.run(
        [sys.executable] + args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=600
    )


def assert_one_error_line(out, *fragments):
    """Exit 2, no traceback, and the last stderr line (the only one starting `error:`;
    warnings may come before it) names each fragment."""
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text, text
    lines = out.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error")] == lines[-1:], out.stderr
    assert lines[-1].startswith("error: "), out.stderr
    assert "In call to configurable" not in lines[-1] and "[[" not in lines[-1], lines[-1]
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


def _good(name, seed=0):
    image, label = u.random_pair(seed, 33, 40)
    return u.example(
        name, image_io.encode_image(image, "png"), image_io.encode_label(label), 33, 40
    )


def _split(folder, examples, split="val"):
    folder.mkdir(exist_ok=True)
    path = folder / f"{split}-00000-of-00001.tfrecord"
    u.write_raw(path, examples)
    return path


def read_split(folder, split="val"):
    """The input pipeline benchmark: reads a split through the training pipeline."""
    return run(
        [
            "-m",
            "wss.bench.input_pipeline",
            f"--dataset_dir={folder}",
            f"--split={split}",
            "--crop=33",
            "--batch_size=2",
            "--steps=1",
        ]
    )


def train_command(model_dir, dataset_dir, *params, gin_file="gin/demo.gin"):
    return [
        "-m",
        "wss.train",
        f"--gin_file={gin_file}",
        f"--model_dir={model_dir}",
        f"--dataset_dir={dataset_dir}",
        "--images_every=0",
        "--eval_at_end=false",
    ] + gin_param_flags(TINY_TRAIN_PARAMS + tuple(params))


def test_missing_folder_and_traceback_on_request(tmp_path):
    missing = str(tmp_path / "no_such_folder")
    command = train_command(tmp_path / "run", missing)
    assert_one_error_line(run(command), missing, "does not exist")
    for out in (run(command + ["--traceback"]), run(command, PSEUDOSEG_TRACEBACK="1")):
        assert out.returncode != 0 and "Traceback" in out.stderr, out.stderr
        assert missing in out.stderr


def test_missing_gin_file(tmp_path):
    missing = str(tmp_path / "nothing.gin")
    out = run(train_command(tmp_path / "run", tmp_path, gin_file=missing))
    assert_one_error_line(out, "nothing.gin")


def test_misspelled_gin_binding_names_the_file(tmp_path):
    gin_file = tmp_path / "typo.gin"
    gin_file.write_text("include 'gin/demo.gin'\nExperiment.num_stepz = 3\n")
    out = run(train_command(tmp_path / "run", tmp_path, gin_file=gin_file))
    assert_one_error_line(out, str(gin_file), "num_stepz", "Did you mean 'Experiment.num_steps'?")


@pytest.mark.parametrize(
    "binding,hint",
    [
        ("MethodOptions.gamm = 0.3", "Did you mean 'MethodOptions.gamma'?"),
        ("MethodOption.gamma = 0.3", "Did you mean 'MethodOptions'?"),
        ("TrainLoop.zzzz = 1", "TrainLoop's parameters: log_every, checkpoint_every, "),
        ("Nothing.at_all = 1", "The configurables are AugmentConfig, Experiment, "),
    ],
)
def test_a_misspelled_binding_gets_the_closest_name(binding, hint):
    from wss.errors import ConfigError
    from wss.experiment import parse_run_config

    with pytest.raises(ConfigError) as raised:
        parse_run_config([], [binding])
    assert hint in str(raised.value) and binding.split(" =")[0] in str(raised.value)


def test_unknown_url_scheme_names_the_path(tmp_path):
    out = run(train_command("nosuchfs://bucket/run", tmp_path))
    assert_one_error_line(out, "nosuchfs://bucket/run", "not implemented")


def test_bucket_path_that_does_not_exist(tmp_path):
    # No network here: TensorFlow's GCS file system finds nothing at the path (retries
    # off, no metadata-server probe, so the answer comes at once).
    data = "gs://pseudoseg-no-such-bucket-0/data"
    out = run(
        train_command(tmp_path / "run", data),
        NO_GCE_CHECK="true",
        GCS_RETRY_CONFIG_MAX_RETRIES="0",
    )
    assert_one_error_line(out, data)


def test_model_dir_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    model_dir = locked / "run"
    if os.access(locked, os.W_OK):  # root writes anywhere; sysfs refuses even root
        if not os.path.isdir("/sys/kernel"):
            pytest.skip("running as root without /sys: no folder refuses writes")
        model_dir = "/sys/kernel/pseudoseg_run"
    try:
        out = run(train_command(model_dir, tmp_path))
    finally:
        locked.chmod(0o700)
    assert_one_error_line(out, str(model_dir))


def test_corrupt_record_names_file_and_record(tmp_path):
    path = _split(tmp_path, [_good("a"), _good("b"), _good("c")])
    data = bytearray(path.read_bytes())
    data[len(_good("a").SerializeToString()) + 16 + 30] ^= 0xFF  # inside record 1
    path.write_bytes(bytes(data))
    assert_one_error_line(read_split(tmp_path), str(path), "record 1")


def test_undecodable_image_inside_the_pipeline(tmp_path):
    path = _split(tmp_path, [_good("a"), u.example("bad", b"not an image at all")])
    line = assert_one_error_line(read_split(tmp_path), str(path), "record 1")
    assert "not a decodable JPEG or PNG" in line and "EagerPyFunc" not in line


def test_label_out_of_range(tmp_path):
    image, label = u.random_pair(0, 33, 40)
    label[5, 5] = 17  # the demo has 6 classes
    path = _split(
        tmp_path,
        [u.example("r", image_io.encode_image(image, "png"), image_io.encode_label(label))],
    )
    assert_one_error_line(read_split(tmp_path), str(path), "outside [0, num_classes)")


def test_missing_split(tmp_path):
    _split(tmp_path, [_good("a")])
    assert_one_error_line(read_split(tmp_path, "nope"), str(tmp_path), "nope")


def test_id_list_naming_an_absent_id(tmp_path):
    _split(tmp_path, [_good("a"), _good("b")], split="train_aug")
    id_list = tmp_path / "ids.txt"
    id_list.write_text("a\nzzz\n")
    out = run(
        [
            "datasets/make_splits.py",
            f"--dataset_dir={tmp_path}",
            "--dataset=demo",
            f"--check={id_list}",
        ]
    )
    assert_one_error_line(out, str(id_list), "zzz")


def test_flag_error_is_one_line(tmp_path):
    out = run(["datasets/make_splits.py", f"--dataset_dir={tmp_path}", "--num_draws=x"])
    assert_one_error_line(out, "num_draws")


def test_coco_builder_without_pycocotools_is_one_line(tmp_path):
    """A missing optional package is found before any work: one line, exit 2 (was a
    traceback and exit 1)."""
    without = (
        "import runpy, sys; sys.modules['pycocotools'] = None; sys.path.insert(0, 'datasets'); "
        "sys.argv[0] = 'datasets/build_coco_data.py'; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    out = run(["-c", without, f"--coco_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}"])
    assert_one_error_line(out, "'pycocotools'", 'Fix: pip install -e ".[coco]"')
    assert not (tmp_path / "out").exists()


def test_model_library_errors_are_one_line_user_errors():
    """wss.program knows deeplab_ext's errors by their base class (DeepLabError)."""
    from deeplab_ext.checkpoint import CheckpointMismatchError
    from wss import program

    error = CheckpointMismatchError("checkpoint 'm.ckpt' does not match the model:\n  a/weights")
    assert program.user_message(error) == "checkpoint 'm.ckpt' does not match the model: a/weights"


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--output=m.weights.h5"], "--tf1_checkpoint and --output are required"),
        (["--tf1_checkpoint=m.ckpt", "--output=m.weights.h5", "--backbone=x"], "'x'"),
        (["--num_classes=two"], "num_classes"),
    ],
)
def test_convert_checkpoint_reports_bad_input_in_one_line(args, fragment, monkeypatch, capsys):
    """deeplab_ext's own command line (it does not import wss.program): `error: ...`, exit 2."""
    from deeplab_ext import convert_checkpoint

    monkeypatch.setattr(sys, "argv", ["convert_checkpoint"] + args)
    with pytest.raises(SystemExit) as exit_info:
        convert_checkpoint.run()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


@pytest.mark.slow
def test_train_starts_quiet_and_says_what_runs(tmp_path, demo_dir):
    model_dir = tmp_path / "run"
    out = run(train_command(model_dir, demo_dir, "Experiment.num_steps = 1"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert not NOISE.search(out.stdout + out.stderr), out.stdout + out.stderr
    head = out.stdout.splitlines()[:5]
    assert head[0].startswith("training PseudoSeg (mode semi) on demo"), head
    assert demo_dir in head[0]
    assert any("xception_65, output stride 16" in line for line in head), head
    assert any("steps: 1, batch 2 labeled + 2 extra" in line for line in head), head
    assert any(str(model_dir) in line for line in head), head
    assert re.search(r"^step 1/1 total_loss=", out.stdout, re.M), out.stdout


@pytest.mark.slow
def test_bad_record_during_training_is_one_line(tmp_path, demo_dir):
    data = tmp_path / "data"
    path = _split(data, [_good("a"), _good("b"), u.example("bad", b"not an image")], "labeled")
    for f in os.listdir(demo_dir):
        if f.startswith("train-"):
            os.symlink(os.path.join(demo_dir, f), data / f)
    out = run(train_command(tmp_path / "run", data, "Experiment.num_steps = 3"))
    line = assert_one_error_line(out, str(path), "not a decodable JPEG or PNG")
    assert "[[" not in line
    assert out.stdout.startswith("training PseudoSeg"), out.stdout
