"""Tests of the comparison (wss.comparison and its command line wss.compare): a two-row,
one-seed comparison end to end, then its resumption; the self-training row's three stages;
clear errors."""

import json
import math
import os

import pytest
from PIL import Image

from tests.conftest import TINY_TRAIN_PARAMS
from wss import compare
from wss.comparison import report, runner
from wss.comparison.rows import CompareError, run_bindings, run_spec
from wss.comparison.runs import RUN_RECORD, run_one
from wss.files import resolve_path

# 32 images instead of 100: keeps it < 60 s
TINY = list(TINY_TRAIN_PARAMS) + ["Experiment.eval_split = 'labeled'"]
pytestmark = pytest.mark.usefixtures("clear_gin")


def _argv(out_dir, demo_dir):
    return [
        "compare",
        f"--output_dir={out_dir}",
        "--seeds=0",
        "--rows=supervised,semi",
        "--num_steps=2",
        f"--dataset_dir={demo_dir}",
        "--ece_batches=1",
    ] + [f"--gin_param={p}" for p in TINY]


@pytest.mark.slow
def test_compare_two_rows_then_reuse(tmp_path, capsys, demo_dir):
    out_dir = tmp_path / "compare"

    summary = compare.main(_argv(out_dir, demo_dir))
    first = capsys.readouterr().out
    assert "[1/2] supervised seed 0" in first and "[2/2] semi seed 0" in first
    assert "reusing" not in first

    with open(out_dir / "compare.json") as f:
        data = json.load(f)
    assert list(data["rows"]) == ["supervised", "semi"]
    for row in ("supervised", "semi"):
        (miou,) = data["rows"][row]["miou"]
        assert math.isfinite(miou) and 0.0 <= miou <= 1.0
        assert data["rows"][row]["mean"] == pytest.approx(miou)
        assert os.path.isdir(out_dir / row / "seed0")
    assert data["settings"]["num_steps"] == 2
    assert data["settings"]["eval_split"] == "labeled"
    assert data["rows"]["semi"]["paper_voc_1_8"]["miou_percent"] == 73.13
    # The semi model's pseudo-label sources were calibrated.
    ece = data["ece_semi"]
    assert {"decoder", "sgc", "fusion_norm_sharpened"} <= set(ece)
    assert all(0.0 <= e["mean"] <= 1.0 for e in ece.values())

    markdown = (out_dir / "compare.md").read_text()
    assert "| supervised |" in markdown and "| semi |" in markdown
    assert "64.00" in markdown and "73.13" in markdown and "not comparable" in markdown
    assert "| fusion_norm_sharpened |" in markdown

    with Image.open(out_dir / "compare.png") as image:
        image.load()
        assert image.size == report.chart_size(2)
        assert image.mode == "RGB"

    # Second call: every run (and the ECE) is read back, nothing is retrained.
    checkpoints = sorted((out_dir / "semi" / "seed0").glob("ckpt-*"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    again = compare.main(_argv(out_dir, demo_dir))
    second = capsys.readouterr().out
    assert second.count("reusing") == 3  # two eval JSONs and one calibration JSON
    assert "step 1/2" not in second and "saved " not in second
    assert all(run["reused"] for run in again["runs"])
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps
    assert again["rows"]["semi"]["miou"] == summary["rows"]["semi"]["miou"]


def test_errors_are_clear(tmp_path):
    with pytest.raises(CompareError, match="unknown rows"):
        runner.run_comparison(str(tmp_path), rows=["fusion"])
    with pytest.raises(CompareError, match="conflicts"):
        run_bindings("semi", 0, ["MethodOptions.mode = 'weakly'"])
    with pytest.raises(CompareError, match="does not parse"):
        runner.run_comparison(str(tmp_path), rows=["semi"], gin_params=["Experiment.nope = 1"])
    # A run directory started with other settings is refused, not silently mixed.
    run_dir = tmp_path / "semi" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / RUN_RECORD).write_text(json.dumps({"row": "semi", "seed": 0}))
    gin_files = [resolve_path(runner.DEFAULT_GIN)]
    spec = run_spec("semi", 0, str(tmp_path), gin_files, TINY, num_steps=2)
    assert spec.run_dir == str(run_dir)
    with pytest.raises(CompareError, match="other settings"):
        run_one(spec, dataset_dir=str(tmp_path))


def test_run_specs_are_values_built_before_any_run(tmp_path):
    """Each row's config is a list of bindings built up front; the self-training student's
    extends the configured labeled set with its teacher's pseudo labels."""
    gin_files = [resolve_path(runner.DEFAULT_GIN)]
    semi = run_spec("semi", 3, str(tmp_path), gin_files, TINY, num_steps=5)
    assert semi.bindings == tuple(TINY) + (
        "MethodOptions.mode = 'semi'",
        "MethodOptions.source = 'fusion'",
        "Experiment.seed = 3",
        "Experiment.num_steps = 5",
    )
    assert semi.teacher is None and semi.record()["gin_files"] == ["demo.gin"]
    student = run_spec("self_training", 1, str(tmp_path), gin_files, (), None, "labeled")
    assert student.teacher == run_spec("supervised", 1, str(tmp_path), gin_files)
    assert student.pseudo_dir == str(tmp_path / "self_training" / "seed1" / "pseudo")
    assert student.bindings[-1] == (
        f"Experiment.labeled_split = ('labeled', '{student.pseudo_dir}:pseudo')"
    )
    with pytest.raises(ValueError, match="labeled_split"):
        run_spec("self_training", 1, str(tmp_path), gin_files)


@pytest.mark.slow
def test_self_training_row_teacher_pseudo_labels_student(tmp_path, capsys, demo_dir):
    out_dir = tmp_path / "compare"
    argv = [
        "compare",
        f"--output_dir={out_dir}",
        "--seeds=0",
        "--rows=self_training",
        "--num_steps=2",
        f"--dataset_dir={demo_dir}",
    ] + [f"--gin_param={p}" for p in TINY]
    summary = compare.main(argv)
    out = capsys.readouterr().out
    assert "teacher: " in out and "pseudo labels of train by " in out
    # Stage 1: the teacher is the supervised run of the same seed and budget.
    teacher_dir = out_dir / "supervised" / "seed0"
    assert sorted(teacher_dir.glob("ckpt-2.index"))
    # Stage 2: the extra split minus the 32 labeled ids, thresholded, in 2 shards.
    pseudo_dir = out_dir / "self_training" / "seed0" / "pseudo"
    assert len(sorted(pseudo_dir.glob("pseudo-*-of-00002.tfrecord"))) == 2
    (labels,) = summary["self_training_pseudo_labels"]
    assert labels["num_images"] == 400 - 32
    assert 0.0 <= labels["coverage"] <= 1.0 and labels["miou"] is not None
    # Stage 3: the student reads the labeled split plus every pseudo-labeled record.
    with open(out_dir / "self_training" / "seed0" / RUN_RECORD) as f:
        record = json.load(f)
    assert f"Experiment.labeled_split = ('labeled', '{pseudo_dir}:pseudo')" in record["bindings"]
    assert "MethodOptions.mode = 'supervised'" in record["bindings"]
    (miou,) = summary["rows"]["self_training"]["miou"]
    assert 0.0 <= miou <= 1.0
    assert "teacher's offline pseudo labels" in (out_dir / "compare.md").read_text()
    # A rerun reuses the teacher, the shards and the student.
    again = compare.main(argv)
    assert "2 shards already complete, 0 to write" in capsys.readouterr().out
    assert again["rows"]["self_training"]["miou"] == [miou]


def _fake_run(row, seed, miou, ece=None):
    return {
        "row": row,
        "seed": seed,
        "miou": miou,
        "ece": ece,
        "pseudo_labels": None,
        "num_steps": 7,
        "dataset": "demo",
        "labeled_split": "labeled",
        "labeled_id_list": None,
        "eval_split": "val",
    }


def test_report_of_given_runs(tmp_path):
    """The report alone: per-row mean and sample std, the markdown rows, the ECE table in
    the calibration's variant order, and the three files."""
    runs = [
        _fake_run("supervised", 0, 0.5),
        _fake_run("semi", 0, 0.7, {"sgc": {"ece": 0.2}, "decoder": {"ece": 0.1}}),
        _fake_run("supervised", 1, 0.6),
        _fake_run("semi", 1, 0.7, {"sgc": {"ece": 0.4}, "decoder": {"ece": 0.3}}),
    ]
    summary = report.summarize(
        runs, ["supervised", "semi"], [0, 1], ["/x/demo.gin"], ["Experiment.num_steps = 7"]
    )
    supervised = summary["rows"]["supervised"]
    assert supervised["miou"] == [0.5, 0.6] and supervised["mean"] == pytest.approx(0.55)
    assert supervised["std"] == pytest.approx(0.0707107, abs=1e-6)
    assert list(summary["ece_semi"]) == ["decoder", "sgc"]
    assert summary["ece_semi"]["sgc"]["mean"] == pytest.approx(0.3)
    markdown = summary["markdown"]
    assert "| supervised | supervised baseline (L_s only) | 50.00 | 60.00 | 55.00 ± 7.07 |" in (
        markdown
    )
    assert "| semi | PseudoSeg, calibrated fusion | 70.00 | 70.00 | 70.00 ± 0.00 |" in markdown
    assert "| sgc | 20.00 | 40.00 | 30.00 ± 14.14 |" in markdown
    assert "7 steps, labeled set labeled, gin: demo.gin; Experiment.num_steps = 7." in markdown
    assert "teacher's offline pseudo labels" not in markdown

    paths = report.write_outputs(summary, str(tmp_path))
    with open(paths["json"]) as f:
        assert json.load(f)["rows"]["semi"]["mean"] == pytest.approx(0.7)
    assert open(paths["md"]).read() == markdown
    with Image.open(paths["png"]) as image:
        assert image.size == report.chart_size(2) and image.mode == "RGB"
