"""One (row, seed) run of the comparison: train or reuse it, evaluate it, calibrate it.

`run_one` parses the run's config once (wss.comparison.rows.parse_config), refuses a run
folder started with other settings, trains into it (resuming from its latest checkpoint),
evaluates the final checkpoint on Experiment.eval_split and, when asked, measures the ECE
of every pseudo-label source there. A run whose eval JSON exists is reused (and so is its
calibration JSON), so an interrupted comparison resumes with the same command.

A self-training run (Table 6) is three stages with the same seed and budget: its teacher
(the supervised run of that seed, reused when it is there) runs first; with the teacher's
config, the teacher's pseudo labels of the extra split, labeled ids excluded, go into the
run's `pseudo` folder (wss.self_training.labeller, resumable shards); then the student trains.
"""

import os
import time

import keras
import tensorflow as tf

from wss import files, restore, training
from wss.builders.dataset_dir import resolve_dataset_dir
from wss.comparison.rows import PSEUDO_SPLIT, CompareError, parse_config
from wss.data import pipeline
from wss.evaluation import reliability
from wss.model import build_model
from wss.self_training import labeller

RUN_RECORD = "compare_run.json"


def run_one(spec, dataset_dir=None, with_ece=False, ece_batches=None, log=print):
    """Trains (or resumes, or reuses) the run of `spec` (a RunSpec) and evaluates it.

    Returns {'miou', 'pixel_accuracy', 'eval_json', 'reused', 'seconds', 'ece', ...}.
    """
    return _run(spec, dataset_dir, with_ece, ece_batches, log)[0]


def _run(spec, dataset_dir, with_ece, ece_batches, log):
    """run_one's result and the run's parsed config values."""
    start = time.time()
    pseudo_report = None
    if spec.teacher is not None:
        pseudo_report = teacher_pseudo_labels(spec, dataset_dir, log)
    config = parse_config(spec.gin_files, spec.bindings)
    exp = config.experiment
    _check_run_record(spec.run_dir, spec.record())
    dataset_dir = resolve_dataset_dir(exp.dataset_name, dataset_dir, exp.tfds_data_dir)
    eval_json = os.path.join(spec.run_dir, f"eval_{exp.eval_split}_{exp.num_steps}.json")
    result, model = _train_or_reuse(spec.run_dir, config, dataset_dir, eval_json, log)
    out = {
        "row": spec.row,
        "seed": int(spec.seed),
        "run_dir": spec.run_dir,
        "eval_json": eval_json,
        "miou": float(result["miou"]),
        "pixel_accuracy": float(result["pixel_accuracy"]),
        "step": int(result["step"]),
        "reused": model is None,
        "num_steps": exp.num_steps,
        "labeled_split": exp.labeled_split,
        "labeled_id_list": exp.labeled_id_list,
        "dataset": exp.dataset_name,
        "eval_split": exp.eval_split,
        "ece": None,
        "pseudo_labels": pseudo_report,
    }
    if with_ece:
        out["ece"] = _run_ece(spec.run_dir, config, dataset_dir, model, result, ece_batches, log)
    out["seconds"] = time.time() - start
    keras.backend.clear_session()  # the next run builds a fresh model
    return out, config


def _train_or_reuse(run_dir, config, dataset_dir, eval_json, log):
    """(eval result, trained model): the saved result and None when `eval_json` exists,
    else trains the parsed config into run_dir and evaluates its final checkpoint."""
    if files.exists(eval_json):
        log(f"    reusing {eval_json}")
        return files.read_json(eval_json), None
    _check_not_past_budget(run_dir, config.experiment.num_steps)
    model, _, dataset_dir, checkpoint = training.train(
        run_dir, dataset_dir, images_every=0, print_fn=lambda s: log(f"    {s}"), config=config
    )
    if not checkpoint:
        raise CompareError(f"training {run_dir} wrote no checkpoint")
    result = training.evaluate_final(model, checkpoint, run_dir, dataset_dir, exp=config.experiment)
    if not files.exists(eval_json):
        raise CompareError(f"evaluation did not write {eval_json} (checkpoint {checkpoint})")
    result = {
        "miou": float(result["miou"]),
        "pixel_accuracy": float(result["pixel_accuracy"]),
        "step": result["step"],
        "checkpoint": checkpoint,
    }
    return result, model


def teacher_pseudo_labels(spec, dataset_dir=None, log=print):
    """Self-training's first two stages for the student `spec`: its teacher run (reused
    when it is there) labels the extra split, labeled ids excluded, into spec.pseudo_dir
    (resumable shards). Returns the labels' coverage / mIoU / accuracy on covered pixels
    (where the extra split has ground truth)."""
    teacher = spec.teacher
    log(f"    teacher: {teacher.run_dir}")
    _, config = _run(teacher, dataset_dir, False, None, lambda s: log(f"    {s}"))
    exp = config.experiment
    dataset_dir = resolve_dataset_dir(exp.dataset_name, dataset_dir, exp.tfds_data_dir)
    model = build_model(exp.descriptor.num_classes, config.model, config.method)
    checkpoint = restore.restore_model(model, teacher.run_dir)
    log(f"    pseudo labels of {exp.extra_split} by {checkpoint} -> {spec.pseudo_dir}")
    report = labeller.generate(
        model,
        dataset_dir,
        exp.extra_split,
        spec.pseudo_dir,
        exp.descriptor.num_classes,
        exp.eval_crop_size,
        output_split=PSEUDO_SPLIT,
        num_shards=2,
        batch_size=8,
        exclude_ids=training.labeled_ids(exp, dataset_dir),
        class_names=exp.descriptor.class_names,
        settings={"checkpoint": files.absolute(checkpoint)},
        progress_every=0,
        log=lambda s: log(f"    {s}"),
    )
    keras.backend.clear_session()
    return {key: report[key] for key in ("num_images", "coverage", "miou", "pixel_accuracy")}


def _check_run_record(run_dir, record):
    """Refuses a run directory that was started with other settings; records new ones."""
    path = os.path.join(run_dir, RUN_RECORD)
    if files.exists(path):
        old = files.read_json(path)
        if old != record:
            raise CompareError(
                f"{run_dir} holds a run started with other settings:\n  before: {old}\n"
                f"  now:    {record}\nUse another --output_dir, or delete {run_dir}."
            )
        return
    files.write_json(path, record, indent=1)


def _check_not_past_budget(run_dir, num_steps):
    """A run directory whose checkpoint is beyond the budget would be evaluated there."""
    latest = tf.train.latest_checkpoint(run_dir)
    if latest and restore.checkpoint_step(latest) > num_steps:
        raise CompareError(
            f"{run_dir} holds {latest}, beyond num_steps {num_steps}; use "
            "another --output_dir (or the larger --num_steps)."
        )


def _run_ece(run_dir, config, dataset_dir, model, eval_result, max_batches, log):
    """Reads or computes the run's calibration JSON; returns {variant: {ece, ...}}."""
    exp, step = config.experiment, eval_result["step"]
    path = os.path.join(run_dir, f"calibration_{exp.eval_split}_{step}.json")
    if files.exists(path):
        saved = files.read_json(path)
        if saved.get("max_batches") == max_batches:
            log(f"    reusing {path}")
            return saved["variants"]
    if model is None:  # a reused run: rebuild its model from the config values
        model = build_model(exp.descriptor.num_classes, config.model, config.method)
        restore.restore_model(model, eval_result["checkpoint"])
    log(f"    ECE of the pseudo-label sources on {exp.eval_split} ...")
    dataset = pipeline.eval_dataset(
        dataset_dir,
        8,
        split=exp.eval_split,
        dataset_name=exp.dataset_name,
        eval_crop_size=exp.eval_crop_size,
    )
    results = reliability.calibrate(
        model, dataset, exp.descriptor.num_classes, max_batches=max_batches, log=log
    )
    reliability.save_reliability_png(results, path[: -len(".json")] + ".png")
    variants = {
        name: {k: v for k, v in r.items() if k != "accumulator"} for name, r in results.items()
    }
    saved = {
        "checkpoint": eval_result["checkpoint"],
        "step": step,
        "split": exp.eval_split,
        "temperature": model.options.temperature,
        "gamma": model.options.gamma,
        "max_batches": max_batches,
        "variants": variants,
    }
    files.write_json(path, saved, indent=1)
    return variants
