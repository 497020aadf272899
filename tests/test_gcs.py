"""The bucket as a Cloud TPU run sees it: TensorFlow's own gs:// file system against a
local Google Cloud Storage (tests/gcs_rig.py), with faults on demand and its traffic
counted.
"""

import os
import re
import shlex
import signal
import subprocess
import sys
import types

import numpy as np
import pytest

from tests.conftest import (
    TINY_TRAIN_PARAMS,
    gin_param_flags,
    readme_launch_commands,
    tiny_deeplab_config,
)
from tests.gcs_rig import summarize
from wss import files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_files_round_trip_through_tensorflows_gs_file_system(gcs):
    root = gcs.root
    mark = gcs.rig.mark()
    with gcs.rig.environ():
        files.write_text(f"{root}/a/b/x.txt", "hello")
        files.write_json(f"{root}/a/y.json", {"k": 1})
        assert files.read_text(f"{root}/a/b/x.txt") == "hello"
        assert files.read_json(f"{root}/a/y.json") == {"k": 1}
        assert files.listdir(f"{root}/a") == ["b", "y.json"]
        assert files.isdir(f"{root}/a/b") and files.isfile(f"{root}/a/y.json")
        files.rename(f"{root}/a/b/x.txt", f"{root}/a/z.txt")
        assert files.glob(f"{root}/a/*.txt") == [f"{root}/a/z.txt"]
        assert not files.exists(f"{root}/a/b/x.txt")
        files.remove(f"{root}/a/z.txt")
        assert files.glob(f"{root}/a/*.txt") == []
        assert files.size(f"{root}/a/y.json") == len('{\n  "k": 1\n}\n')
    seen = gcs.rig.since(mark)
    # It went over the wire: each file uploaded once under its temporary name, then
    # renamed by a server-side copy (GCS has no rename).
    folder = root.split("/", 3)[3]
    uploaded = sorted(r.object for r in seen if r.upload and r.sent)
    assert uploaded == [
        f"{folder}/a/.y.json.tmp-{os.getpid()}",
        f"{folder}/a/b/.x.txt.tmp-{os.getpid()}",
    ]
    assert any("/rewriteTo/" in r.object for r in seen)
    assert all(r.status in (200, 204, 206, 404) for r in seen)


# ---------------------------------------------------------------- runs on the bucket
# A tiny supervised run (the self-training teacher's mode: the shortest step) that
# checkpoints and logs every step.
RUN_PARAMS = TINY_TRAIN_PARAMS + (
    "MethodOptions.mode = 'supervised'",
    "Experiment.num_steps = 3",
)


def train_command(run, data, steps=3):
    """wss.train on the demo data in the bucket, a checkpoint and a log line every step."""
    params = RUN_PARAMS + (f"Experiment.num_steps = {steps}",)
    return [
        sys.executable,
        "-m",
        "wss.train",
        "--gin_file=gin/demo.gin",
        f"--model_dir={run}",
        f"--dataset_dir={data}",
        "--checkpoint_every=1",
        "--log_every=1",
        "--images_every=0",
        "--eval_at_end=false",
        *gin_param_flags(params),
    ]


def run_until(command, env, line_starts, then):
    """Runs `command`, calls `then(process)` at the first stdout line starting with
    `line_starts`; returns (exit code, stdout, stderr)."""
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith(line_starts):
            then(process)
            line_starts = "\0"  # once
    stderr = process.stderr.read()
    return process.wait(timeout=600), "".join(lines), stderr


def copy_tree(local, url):
    """Uploads a local folder's files to `url` (the rig's environment must be set)."""
    for name in os.listdir(local):
        files.copy(os.path.join(local, name), f"{url}/{name}")


def checkpoint_values(prefix):
    """{key: value} of every tensor a checkpoint holds (reads all of it)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def optimizer_step(prefix):
    """The optimizer's iteration count saved in a checkpoint."""
    values = checkpoint_values(prefix)
    return int(next(v for k, v in sorted(values.items()) if k.startswith("optimizer/")))


# The tests that read `bucket_run` share one xdist group, so that under
# `-n 2 --dist loadgroup` one worker trains it (about 40 s) instead of each.
SHARED_RUN = pytest.mark.xdist_group("gcs_bucket_run")


@pytest.fixture(scope="module")
def bucket_run(gcs_rig, tiny_run):
    """A run in the bucket preempted (SIGKILL) right after its first checkpoint and
    resumed by the same command: {'data', 'run', 'killed', 'resumed' (exit, stdout,
    stderr), 'traffic' (the resumed run's requests)}."""
    root = gcs_rig.new_bucket_path("preempted")
    data, run = f"{root}/data", f"{root}/run"
    with gcs_rig.environ():
        copy_tree(tiny_run["data"], data)
    env = gcs_rig.subprocess_env()
    command = train_command(run, data)
    killed = run_until(command, env, f"saved {run}/ckpt-1", lambda p: p.send_signal(signal.SIGKILL))
    mark = gcs_rig.mark()
    resumed = run_until(command, env, "\0", None)
    return {
        "data": data,
        "run": run,
        "killed": killed,
        "resumed": resumed,
        "traffic": gcs_rig.since(mark),
    }


@pytest.mark.slow
@SHARED_RUN
def test_a_preempted_run_resumes_from_the_bucket(bucket_run, gcs_rig):
    run = bucket_run["run"]
    code, out, _ = bucket_run["killed"]
    assert code == -signal.SIGKILL and f"saved {run}/ckpt-1" in out
    code, out, err = bucket_run["resumed"]
    assert code == 0, out + err
    assert f"resumed from {run}/ckpt-1 at step 1" in out
    assert re.findall(r"^step (\d+)/3", out, re.M) == ["2", "3"]
    with gcs_rig.environ():
        prefixes = [f"{run}/ckpt-{step}" for step in (1, 2, 3)]
        # The optimizer's state came back: its count went on from 1, not from 0.
        assert [optimizer_step(p) for p in prefixes] == [1, 2, 3]
        assert files.exists(f"{run}/operative_config.gin")
        # Nothing half-written is left: no temporary file next to the checkpoints.
        assert not [n for n in files.listdir(run) if ".tmp" in n or n.startswith(".")]


@pytest.mark.slow
@SHARED_RUN
def test_eval_continuous_and_pseudo_label_shards_on_the_bucket(bucket_run, gcs_rig):
    run, env = bucket_run["run"], gcs_rig.subprocess_env()
    evaluate = [
        sys.executable,
        "-m",
        "wss.eval",
        f"--model_dir={run}",
        f"--dataset_dir={bucket_run['data']}",
        "--continuous",
        "--eval_interval_secs=0",
        "--eval_timeout_secs=1",
    ]
    mark = gcs_rig.mark()
    out = subprocess.run(evaluate, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    print("\nCOST per evaluated image (6, with the restore)", per(gcs_rig.since(mark), 6))
    label = [
        sys.executable,
        "-m",
        "wss.pseudo_label",
        f"--model_dir={run}",
        f"--dataset_dir={bucket_run['data']}",
        "--split=train",
        f"--output_dir={run}/pseudo",
        "--num_shards=2",
        "--progress_every=0",
    ]
    labelled = subprocess.run(label, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert labelled.returncode == 0, labelled.stdout + labelled.stderr
    with gcs_rig.environ():
        # The latest checkpoint (the run's last: --continuous stops there) was evaluated.
        assert files.read_json(f"{run}/eval_val_3.json")["step"] == 3
        shards = [n for n in files.listdir(f"{run}/pseudo") if n.endswith(".tfrecord")]
        assert shards == ["pseudo-00000-of-00002.tfrecord", "pseudo-00001-of-00002.tfrecord"]
    assert "2 written, 0 already complete" in labelled.stdout


@pytest.mark.slow
def test_a_run_through_503s_and_reset_uploads_finishes_and_every_checkpoint_restores(gcs, tiny_run):
    data, run = f"{gcs.root}/data", f"{gcs.root}/run"
    with gcs.rig.environ():
        copy_tree(tiny_run["data"], data)
    gcs.rig.set_faults(fail_fraction=0.1, reset_fraction=0.2, seed=1)
    out = subprocess.run(
        train_command(run, data, steps=2),
        cwd=ROOT,
        env=gcs.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seen = gcs.rig.since(0)
    gcs.rig.set_faults()
    assert out.returncode == 0, out.stdout + out.stderr
    assert any(r.status == 503 for r in seen) and any(r.status == 0 for r in seen)
    with gcs.rig.environ():
        assert [optimizer_step(f"{run}/ckpt-{step}") for step in (1, 2)] == [1, 2]


@pytest.mark.slow
def test_a_bucket_that_refuses_writes_stops_the_run_with_one_error_line(gcs, tiny_run):
    data, run = f"{gcs.root}/data", f"{gcs.root}/run"
    with gcs.rig.environ():
        copy_tree(tiny_run["data"], data)
    code, out, err = run_until(
        train_command(run, data),
        gcs.env,
        f"saved {run}/ckpt-1",
        lambda p: gcs.rig.set_faults(refuse_writes=True),
    )
    gcs.rig.set_faults()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, out + err
    assert run.split("/", 3)[3] in errors[0] and "Traceback" not in err, err
    assert "fix: give the account running this write access" in errors[0]
    with gcs.rig.environ():
        assert optimizer_step(f"{run}/ckpt-1") == 1


def per(requests, count):
    """Requests and bytes each way per item (one decimal)."""
    return {k: round(v / count, 1) for k, v in summarize(requests).items()}


@pytest.mark.slow
@SHARED_RUN
def test_what_a_run_costs_on_the_bucket(bucket_run):
    """Requests and bytes of the resumed run (steps 2 and 3, a checkpoint and a log line
    each), by what they were for; the figures of README "Cloud"."""
    traffic = bucket_run["traffic"]
    restore = [r for r in traffic if "/ckpt-1" in r.object]
    saves = [r for r in traffic if "/ckpt-2" in r.object or "/ckpt-3" in r.object]
    state = [r for r in traffic if r.object.endswith("checkpoint") and r.method != "GET"]
    events = [r for r in traffic if "tfevents" in r.object]
    data = [r for r in traffic if "/data/" in r.object]
    print(
        "\nCOST restore",
        per(restore, 1),
        "checkpoint",
        per(saves + state, 2),
        "logged step",
        per(events, 2),
        "data per step",
        per(data, 2),
        "all",
        summarize(traffic),
    )
    # Each events file is uploaded whole at every flush (objects cannot be appended), so
    # training starts a new file per checkpoint: every file ends as large as the first,
    # and the bytes uploaded per logged step stay flat as the run grows.
    sizes = {}
    for r in events:
        if r.upload:
            sizes[r.object] = max(sizes.get(r.object, 0), r.sent)
    assert len(sizes) == 2, sizes
    first, last = sizes.values()
    assert abs(last - first) <= 0.1 * first, sizes
    # A file is uploaded on creation (its header), at a flush and at its close.
    assert sum(r.sent for r in events) <= 3 * (first + last), sizes


def tool(name, *args):
    """A `python -m wss.<name>` command line."""
    return [sys.executable, "-m", f"wss.{name}", *args]


@pytest.mark.slow
@SHARED_RUN
def test_eval_export_and_predict_into_a_bucket_that_refuses_writes(bucket_run, gcs_rig):
    """Each stops with one `error:` line, exit 2, and leaves no output that looks whole."""
    import io

    from PIL import Image

    run, env = bucket_run["run"], gcs_rig.subprocess_env()
    image = io.BytesIO()
    Image.new("RGB", (40, 30), (90, 120, 30)).save(image, format="PNG")
    with gcs_rig.environ():
        files.write_bytes(f"{run}/inputs/a.png", image.getvalue())
    outputs = {"eval": "refused_eval", "export": "refused_export", "predict": "refused_predict"}
    commands = {
        "eval": lambda out: tool("eval", f"--model_dir={run}", f"--output_dir={run}/{out}"),
        "export": lambda out: tool("export", f"--model_dir={run}", f"--export_dir={run}/{out}"),
        "predict": lambda out: tool(
            "predict",
            f"--export_dir={run}/export",
            f"--input={run}/inputs/*.png",
            f"--output_dir={run}/{out}",
        ),
    }

    def run_tool(command):
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
        )

    for name, out_dir in (("export", "export"), ("predict", "predictions")):
        mark = gcs_rig.mark()
        done = run_tool(commands[name](out_dir))
        assert done.returncode == 0, done.stdout + done.stderr
    print("\nCOST predicted image (1, with the SavedModel load)", per(gcs_rig.since(mark), 1))
    gcs_rig.set_faults(refuse_writes=True)
    try:
        results = {name: run_tool(command(outputs[name])) for name, command in commands.items()}
    finally:
        gcs_rig.set_faults()
    for name, out in results.items():
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode == 2 and len(errors) == 1, f"{name}: {out.stdout}{out.stderr}"
        assert "403" in errors[0] and "fix:" in errors[0], errors
    with gcs_rig.environ():
        assert not files.glob(f"{run}/refused_eval/eval_*.json")
        assert not files.exists(f"{run}/refused_export/saved_model.pb")
        assert not files.glob(f"{run}/refused_predict/*.png")
        assert files.listdir(f"{run}/predictions") == ["a.png"]


# ---------------------------------------------------------------- the README's TPU launch
# What shrinks the README's Cloud TPU launch line for a CPU, and nothing else: the tiny
# model, batch 2 + 2 at crop 33 (the fake VOC's images are 24-33 px), 2 steps.
CPU_LAUNCH_PARAMS = TINY_TRAIN_PARAMS + (
    "Experiment.eval_crop_size = 33",
    "Experiment.num_steps = 2",
    "TrainLoop.log_every = 1",
    "TrainLoop.checkpoint_every = 1",
)
VOC_CLASSES = 21


def write_fake_voc(folder, train_ids, val_ids, aug_ids):
    """A VOCdevkit/VOC2012 of tiny random images (24-33 px) and labels (classes 0-20, a
    void row): VOC's own labels for train and val, SegmentationClassAug PNGs for SBD's
    extra ids; returns (voc_dir, aug_label_dir)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    voc, aug = folder / "VOCdevkit" / "VOC2012", folder / "SegmentationClassAug"
    lists = voc / "ImageSets" / "Segmentation"
    for sub in (voc / "JPEGImages", voc / "SegmentationClass", lists, aug):
        sub.mkdir(parents=True)
    for ids, labels in ((train_ids + val_ids, voc / "SegmentationClass"), (aug_ids, aug)):
        for image_id in ids:
            height, width = rng.integers(24, 34, 2)
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg")
            label = rng.integers(0, VOC_CLASSES, (height, width), dtype=np.uint8)
            label[0] = 255
            Image.fromarray(label).save(labels / f"{image_id}.png")
    for split, ids in (("train", train_ids), ("val", val_ids)):
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return str(voc), str(aug)


def write_imagenet_style_checkpoint(prefix):
    """A TF1 checkpoint at `prefix` laid out as DeepLab's ImageNet Xception-65 one: the
    backbone's variables only (its own logits included), from the tiny model under its
    DeepLab names; returns how many weights a run's model loads from it (all but logits)."""
    from deeplab_ext.checkpoint import save_tf1_checkpoint
    from wss.model import PseudoSegModel

    source = PseudoSegModel(deeplab_config=tiny_deeplab_config(num_classes=VOC_CLASSES))
    source.build()
    backbone = {n: v for n, v in source.tf1_variable_map().items() if n.startswith("xception_65/")}
    save_tf1_checkpoint(types.SimpleNamespace(tf1_variable_map=lambda: backbone), prefix)
    return len([n for n in backbone if not n.startswith("xception_65/logits/")])


@pytest.mark.slow
def test_the_readmes_cloud_tpu_launch_line_trains_on_the_bucket_for_a_few_cpu_steps(gcs, tmp_path):
    """The README's first launch command as written, BUCKET the rig's, on the default
    strategy (no TPU here) and shrunk to a few CPU steps, on VOC records built into the
    bucket by the VOC builder and an init checkpoint in the bucket."""
    line = readme_launch_commands()[0].replace("gs://BUCKET/", f"{gcs.root}/")
    args = shlex.split(line)
    assert args[:3] == ["python", "-m", "wss.train"] and "--precision=mixed_bfloat16" in args
    assert {"--strategy=tpu", "--tpu=local"} <= set(args), args
    args = [a for a in args[1:] if a not in ("--strategy=tpu", "--tpu=local")]
    command = [sys.executable, *args, *gin_param_flags(CPU_LAUNCH_PARAMS)]
    values = dict(a[2:].split("=", 1) for a in args if a.startswith(("--model_dir", "--data")))
    run, data = values["model_dir"], values["dataset_dir"]
    init = re.search(r"init_checkpoint = '([^']+)'", line).group(1)
    assert run.startswith(gcs.root) and data.startswith(gcs.root) and init.startswith(gcs.root)

    # The gin file's labeled ids (VOC's train split holds them), a few val and SBD ids.
    id_list = os.path.join(ROOT, "datasets", "splits", "pascal_voc_seg", "8_clean.txt")
    with open(id_list) as f:
        train_ids = f.read().split()
    val_ids = [f"2099_{k:06d}" for k in range(4)]
    aug_ids = [f"2098_{k:06d}" for k in range(4)]
    voc, aug = write_fake_voc(tmp_path, train_ids, val_ids, aug_ids)
    build = [
        sys.executable,
        "datasets/build_voc2012_data.py",
        f"--voc_dir={voc}",
        f"--aug_label_dir={aug}",
        f"--output_dir={data}",
        "--num_shards=2",
        "--num_workers=1",
    ]
    built = subprocess.run(
        build, cwd=ROOT, env=gcs.env, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "train 183 (VOC); val 4 (VOC); train_aug 187 = 183 VOC + 4 SegmentationClassAug" in (
        built.stdout
    ), built.stdout
    with gcs.rig.environ():
        loads = write_imagenet_style_checkpoint(init)

    out = subprocess.run(
        command, cwd=ROOT, env=gcs.env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert f"from {data}" in text and "(ids of datasets/splits/pascal_voc_seg/8_clean.txt)" in text
    assert re.search(
        rf"^initialised from {re.escape(init)}: loaded {loads}, .* unused 0 ", text, re.M
    )
    # TrainLoop.steps_per_execution = 100 (as written): one call runs both steps.
    assert re.findall(r"^step (\d+)/2 ", text, re.M) == ["2"], text
    assert f"saved {run}/ckpt-2" in text and "final mIoU on val: " in text
    with gcs.rig.environ():
        assert {"ckpt-2.index", "checkpoint", "operative_config.gin", "eval_val_2.json"} <= set(
            files.listdir(run)
        )
        assert "8_clean.txt" in files.read_text(f"{run}/operative_config.gin")
        assert files.glob(f"{run}/train/events.out.tfevents.*")
        result = files.read_json(f"{run}/eval_val_2.json")
        assert result["step"] == 2 and 0.0 <= result["miou"] <= 1.0
