"""Every path as a URL: the README's worked example with file:// and gs:// paths across processes,
the same steps in one process under ram:// (TensorFlow's in-memory file system, behind the
same tf.io.gfile layer as gs://), resume after a kill and pseudo-label shards there.

file:// goes through TensorFlow's URL handling as gs:// does, while open(), os.path and
glob would take it for a local folder named 'file:'; ram:// files live in one process.
"""

import contextlib
import os
import re
import subprocess
import sys

import gin
import pytest

from tests.conftest import TINY_TRAIN_PARAMS
from tests.test_readme_example import TINY, in_repo, readme_commands
from wss import files

# Training runs, subprocesses: the full suite runs them.
pytestmark = pytest.mark.slow

# The worked example's flags that name a path; its gin bindings name the descriptor.
PATH_FLAGS = ("output_dir", "images", "masks", "unlabeled", "classes", "model_dir", "export_dir")


def as_url(arg, root):
    """A worked-example argument with its path (relative to the example's folder) given
    as a URL under `root` (e.g. 'file:///tmp/x')."""
    key, eq, value = arg.partition("=")
    if key.lstrip("-") in PATH_FLAGS or key == "--input":
        return f"{key}={root}/{value}"
    return re.sub(r"'(data/mine/descriptor.json)'", rf"'{root}/\1'", arg)


@pytest.mark.parametrize("scheme", ["file", "gs"])
def test_worked_example_with_every_path_a_url(scheme, tmp_path, request):
    """file:// on the local disk; gs:// through TensorFlow's own GCS client to the local
    Google Cloud Storage of the `gcs` fixture (tests/gcs_rig.py)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.getcwd())
    if scheme == "gs":
        gcs = request.getfixturevalue("gcs")
        root, bucket = gcs.root, gcs.rig.environ
        env.update(gcs.rig.env)
    else:
        root, bucket = "file://" + str(tmp_path / "cloud"), contextlib.nullcontext
    work = tmp_path / "cwd"  # relative paths would land here
    work.mkdir()
    for command in readme_commands():
        tool = command[2] if command[1] == "-m" else command[1]
        args = [in_repo(a) for a in command[1:]] + TINY.get(tool, [])
        args = [sys.executable] + [as_url(a, root) for a in args]
        assert any(root in a for a in args), args
        out = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"{' '.join(args)}\n{out.stdout}\n{out.stderr}"
    assert os.listdir(work) == []  # no local 'file:' or 'gs:' folder
    with bucket():
        descriptor = files.read_json(f"{root}/data/mine/descriptor.json")
        assert descriptor["splits_to_sizes"] == {"train": 4, "val": 4, "unlabeled": 4, "extra": 8}
        evals = files.glob(f"{root}/runs/mine/eval_val_*.json")
        assert [os.path.basename(e) for e in evals] == ["eval_val_1.json"]
        assert 0.0 <= files.read_json(evals[0])["miou"] <= 1.0
        assert files.exists(f"{root}/runs/mine/operative_config.gin")
        assert files.exists(f"{root}/runs/mine/export/saved_model.pb")
        assert files.listdir(f"{root}/runs/mine/predictions") == files.listdir(
            f"{root}/mine/unlabeled"
        )


class Stop(Exception):
    """Raised by the print hook: the process 'dies' right after a checkpoint."""


def train_tiny(model_dir, descriptor, params=(), print_fn=print):
    """wss.training.train on the folder build under ram:// (tiny demo model)."""
    from wss.experiment import parse_run_config
    from wss.training import train

    bindings = list(TINY_TRAIN_PARAMS) + [
        f"Experiment.dataset_name = '{descriptor}'",
        "Experiment.labeled_split = 'train'",
        "Experiment.extra_split = 'extra'",
        *params,
    ]
    config = parse_run_config(["gin/demo.gin"], bindings)
    try:
        return train(model_dir, None, images_every=0, print_fn=print_fn, config=config)
    finally:
        gin.clear_config()


def test_worked_example_and_resume_in_one_process_under_ram(capsys):
    from wss import eval as wss_eval
    from wss import export, predict, pseudo_label
    from wss import train as wss_train
    from wss.builders import demo, folder
    from wss.data import shards

    root = f"ram://url_paths_{os.getpid()}"
    demo.export_demo_folders(f"{root}/mine", num_labeled=8, num_unlabeled=4)
    descriptor = folder.build_folder(
        f"{root}/mine/images",
        f"{root}/mine/masks",
        f"{root}/mine/classes.txt",
        f"{root}/data/mine",
        unlabeled_dir=f"{root}/mine/unlabeled",
        val_fraction=0.5,
        num_workers=1,
        progress=False,
    )
    assert descriptor == f"{root}/data/mine/descriptor.json"

    # A kill right after the first checkpoint; the program then resumes the run. The
    # supervised mode (the self-training teacher, labelling below) keeps the run short.
    run = f"{root}/runs/mine"
    budget = [
        "Experiment.num_steps = 2",
        "TrainLoop.checkpoint_every = 1",
        "MethodOptions.mode = 'supervised'",
    ]

    def die_after_first_checkpoint(line):
        if line.startswith("saved") and line.endswith("ckpt-1"):
            raise Stop(line)

    with pytest.raises(Stop):
        train_tiny(run, descriptor, budget, print_fn=die_after_first_checkpoint)
    assert files.exists(f"{run}/ckpt-1.index") and not files.exists(f"{run}/ckpt-2.index")
    params = [f"--gin_param={p}" for p in TINY_TRAIN_PARAMS] + [
        f"--gin_param=Experiment.dataset_name = '{descriptor}'",
        "--gin_param=Experiment.labeled_split = 'train'",
        "--gin_param=Experiment.extra_split = 'extra'",
    ]
    params += [f"--gin_param={p}" for p in budget]
    capsys.readouterr()
    try:
        wss_train.main(
            ["train", "--gin_file=gin/demo.gin", f"--model_dir={run}", "--eval_at_end=false"]
            + params
        )
    finally:
        gin.clear_config()
    assert f"resumed from {run}/ckpt-1 at step 1" in capsys.readouterr().out
    assert files.exists(f"{run}/ckpt-2.index") and files.exists(f"{run}/operative_config.gin")
    assert files.glob(f"{run}/train/events.out.tfevents.*")
    wss_eval.main(["eval", f"--model_dir={run}"])
    assert files.read_json(f"{run}/eval_val_2.json")["step"] == 2
    export.main(["export", f"--model_dir={run}", f"--export_dir={run}/export"])
    written = predict.main(
        [
            "predict",
            f"--export_dir={run}/export",
            f"--input={root}/mine/unlabeled/*.png",
            f"--output_dir={run}/predictions",
        ]
    )
    assert [os.path.basename(p) for p in written] == files.listdir(f"{root}/mine/unlabeled")

    # The self-training labeller writes its shards (and resumes) under ram://.
    pseudo = [
        "pseudo_label",
        f"--model_dir={run}",
        "--split=unlabeled",
        f"--output_dir={root}/pseudo",
        "--num_shards=2",
        "--progress_every=0",
    ]
    report = pseudo_label.main(pseudo)
    assert report["num_images"] == 4
    found = shards.split_files(f"{root}/pseudo", "pseudo")
    assert [os.path.basename(f) for f in found] == [
        "pseudo-00000-of-00002.tfrecord",
        "pseudo-00001-of-00002.tfrecord",
    ]
    capsys.readouterr()
    pseudo_label.main(pseudo)
    assert "2 shards already complete, 0 to write" in capsys.readouterr().out
