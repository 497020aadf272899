"""The README's worked example (own data: folders -> records -> train -> eval -> export ->
predict) runs as written, at a tiny size, from a fresh folder."""

import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Only these are added, to keep the run tiny; every command and flag of the README stays.
# (One build worker: the multi-process build has its own test in tests/data.)
TINY = {
    "datasets/build_demo_data.py": ["--num_labeled=8", "--num_unlabeled=4"],
    "datasets/build_folder_data.py": ["--num_workers=1"],
    "wss.train": [
        "--gin_param=Experiment.num_steps = 1",
        "--gin_param=Experiment.crop_size = 33",
        "--gin_param=Experiment.labeled_batch_size = 4",
        "--gin_param=Experiment.extra_batch_size = 4",
    ],
}


def readme_commands():
    """The worked example's commands, continuation lines joined, split like a shell."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = re.search(r"<!-- worked-example -->\n(.*?)<!-- /worked-example -->", text, re.S)
    assert block, "README.md lost its <!-- worked-example --> block"
    joined = block.group(1).replace("\\\n", " ")
    return [shlex.split(line) for line in joined.splitlines() if line.strip()]


def in_repo(arg):
    """Repository paths (scripts, gin files) made absolute; the example's own paths stay
    relative to the fresh working folder."""
    key, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if value.startswith(("datasets/", "gin/")):
        value = os.path.join(ROOT, value)
    return key + eq + value


@pytest.mark.slow
def test_worked_example_runs_as_written(tmp_path):
    commands = readme_commands()
    assert [c[1] if c[1] != "-m" else c[2] for c in commands] == [
        "datasets/build_demo_data.py",
        "datasets/build_folder_data.py",
        "wss.train",
        "wss.eval",
        "wss.export",
        "wss.predict",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    for command in commands:
        assert command[0] == "python"
        tool = command[2] if command[1] == "-m" else command[1]
        args = [sys.executable] + [in_repo(a) for a in command[1:]] + TINY.get(tool, [])
        out = subprocess.run(
            args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, f"{' '.join(command)}\n{out.stdout}\n{out.stderr}"

    with open(tmp_path / "data/mine/descriptor.json") as f:
        descriptor = json.load(f)
    assert descriptor["num_classes"] == 6
    assert descriptor["splits_to_sizes"] == {"train": 4, "val": 4, "unlabeled": 4, "extra": 8}
    evals = glob.glob(str(tmp_path / "runs/mine/eval_val_*.json"))
    assert evals
    with open(evals[0]) as f:
        result = json.load(f)
    assert 0.0 <= result["miou"] <= 1.0 and len(result["per_class_iou"]) == 6
    assert os.path.exists(tmp_path / "runs/mine/export/saved_model.pb")
    predictions = sorted(os.listdir(tmp_path / "runs/mine/predictions"))
    assert predictions == sorted(os.listdir(tmp_path / "mine/unlabeled"))
