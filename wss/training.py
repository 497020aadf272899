"""The training loop of PseudoSeg (or the supervised baseline), as a library.

`train(model_dir, dataset_dir, ..., config=RunConfig)`: strategy and model, input, resume
or initialise, then the loop (progress line, TensorBoard, checkpoints every
`TrainLoop.checkpoint_every` steps and at the end, a clean stop on NaN/Inf that keeps the
last good checkpoint); `evaluate_final` evaluates the final model. A killed job restarts
with the same call and continues from its latest checkpoint: same step, learning rate and
optimizer slots. `python -m wss.train` is its command line; `wss.comparison.runner` calls it too.
"""

import dataclasses
import math
import os
import time

import keras
import tensorflow as tf
from absl import logging

from deeplab_ext.checkpoint import load_tf1_checkpoint, open_checkpoint
from wss import distribute, files, restore
from wss.builders.dataset_dir import resolve_dataset_dir
from wss.checkpointing import training_checkpoint
from wss.data import class_stats, pipeline, reader, tfds_registry
from wss.data.augment import cutout_advice
from wss.data.descriptors import IGNORE_LABEL
from wss.errors import NonFiniteLossError
from wss.evaluation import evaluator
from wss.model import build_model
from wss.pretraining import resolve_init_checkpoint
from wss.schedule import build_optimizer


def labeled_ids(exp, dataset_dir):
    """The ids of the labeled set: its id list, or every record of its split(s)."""
    if exp.labeled_id_list:
        return exp.labeled_id_list
    if tfds_registry.is_tfds_name(exp.dataset_name):
        from wss.data import tfds_source

        return tfds_source.split_ids(exp.dataset_name, dataset_dir, exp.labeled_split)
    scans = reader.scan_files(reader.split_files(dataset_dir, exp.labeled_split))
    return [image_id for scan in scans for image_id in scan.ids]


def make_input(strategy, config, dataset_dir):
    """Distributed dataset of (labeled, extra) batches, or labeled batches when supervised,
    as the RunConfig `config` describes them."""
    exp, options = config.experiment, config.method
    labeled = pipeline.TrainingStream(
        dataset_dir,
        exp.labeled_split,
        exp.crop_size,
        dataset_name=exp.dataset_name,
        id_list=exp.labeled_id_list,
        augment_config=config.augment,
        seed=exp.seed,
    )
    lab_fn = pipeline.make_dataset_fn(
        pipeline.labeled_dataset, exp.labeled_batch_size, static_shapes=True, stream=labeled
    )
    if options.mode == "supervised":
        fn = lab_fn
    else:
        extra = dataclasses.replace(
            labeled,
            split=exp.extra_split,
            id_list=exp.extra_id_list,
            seed=None if exp.seed is None else exp.seed + 1,
        )
        extra_fn = pipeline.make_dataset_fn(
            pipeline.extra_dataset,
            exp.extra_batch_size,
            static_shapes=True,
            stream=extra,
            strong_config=config.strong,
            exclude_ids=labeled_ids(exp, dataset_dir) if exp.exclude_labeled_from_extra else None,
        )

        def fn(ctx):
            return tf.data.Dataset.zip((lab_fn(ctx), extra_fn(ctx)))

    return strategy.distribute_datasets_from_function(fn)


def initialize(model, path):
    """Loads initial weights: a TF1 DeepLab checkpoint or a .weights.h5 of DeepLabV3Plus.

    As DeepLab does, the logits layers are never taken from the initial checkpoint; the
    SGC's output conv (`pixel_normalization`) is left out too when the class count differs.
    Weights the checkpoint lacks (the decoder of an ImageNet checkpoint) keep their init.
    """
    if path.endswith(".weights.h5"):
        if not files.exists(path):
            raise FileNotFoundError(f"init checkpoint {path} does not exist")
        model.deeplab.load_weights(path)
        return f"loaded Keras weights {path}"
    shapes = open_checkpoint(path).get_variable_to_shape_map()
    exclude = [
        rf"^{name}$"
        for name, var in model.sgc.tf1_variable_map().items()
        if name in shapes and list(shapes[name]) != list(var.shape)
    ]
    report = load_tf1_checkpoint(model, path, skip_logits=True, allow_missing=True, exclude=exclude)
    note = (
        " (class count differs: the logits and the SGC output conv start fresh)" if exclude else ""
    )
    return f"initialised from {path}: {report.summary()}{note}"


def format_logs(step, total, logs, rate, eta):
    keys = (
        "total_loss",
        "sup_loss",
        "unsup_loss",
        "cls_loss",
        "sgc_loss",
        "acc_seg",
        "acc_pseudo",
        "learning_rate",
    )
    parts = " ".join(f"{k}={logs[k]:.4g}" for k in keys if k in logs)
    return f"step {step}/{total} {parts} | {rate:.2f} steps/s, ETA {eta}"


def format_duration(seconds):
    if not math.isfinite(seconds):
        return "?"
    h, rem = divmod(int(seconds), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def write_images(writer, model, batch, step):
    """TensorBoard images of one batch (first 3 images): input, label, and for the extra
    set the weak prediction, CAM, SGC, pseudo label and strong prediction. The extra set's
    maps come from the model's own weak branch, as the step computes them (dropout off),
    with every batch-norm moving statistic put back afterwards."""
    labeled, extra = (batch, None) if model.options.mode == "supervised" else batch
    scale = 255.0 / max(1, model.num_classes - 1)

    def as_image(classes):
        return tf.cast(tf.cast(classes, tf.float32) * scale, tf.uint8)[..., tf.newaxis]

    def classes(scores):
        return as_image(tf.argmax(scores, axis=-1))

    with writer.as_default(step=step):
        tf.summary.image("labeled/image", tf.cast(labeled["image"], tf.uint8), max_outputs=3)
        tf.summary.image(
            "labeled/label",
            as_image(tf.where(labeled["label"] == IGNORE_LABEL, 0, labeled["label"])[..., 0]),
            max_outputs=3,
        )
        if extra is None:
            return
        weakly = model.options.mode == "weakly"
        with model.frozen_statistics():
            branch = model.pseudo_labels(
                extra["image"],
                extra.get("weak_valid", extra["valid"]),
                image_labels=extra["image_labels"] if weakly else None,
                dropout=False,
            )
        strong = model.deeplab.forward(extra["strong"], training=False)["logits"]
        if "cam" in branch:
            tf.summary.image(
                "extra/cam_max", tf.reduce_max(branch["cam"], -1, keepdims=True), max_outputs=3
            )
            tf.summary.image("extra/sgc", classes(branch["sgc_logits"]), max_outputs=3)
        tf.summary.image("extra/weak_image", tf.cast(extra["image"], tf.uint8), max_outputs=3)
        tf.summary.image("extra/strong_image", tf.cast(extra["strong"], tf.uint8), max_outputs=3)
        tf.summary.image("extra/weak_prediction", classes(branch["weak"]["logits"]), max_outputs=3)
        tf.summary.image("extra/pseudo_label", classes(branch["probs"]), max_outputs=3)
        tf.summary.image("extra/strong_prediction", classes(strong), max_outputs=3)


def steps_in_call(step, num_steps, steps_per_execution):
    """Steps of the next call: up to the next multiple of `steps_per_execution` (so that a
    resumed run makes the same calls), never past `num_steps`."""
    return min(steps_per_execution - step % steps_per_execution, num_steps - step)


def crossed(before, after, every):
    """Whether a multiple of `every` lies in (before, after]: the call that went from step
    `before` to `after` reached an interval's end."""
    return after // every > before // every


def train(
    model_dir,
    dataset_dir=None,
    strategy_name="default",
    tpu="",
    precision="float32",
    log_every=None,
    checkpoint_every=None,
    images_every=500,
    max_checkpoints=5,
    print_fn=print,
    jit_compile=None,
    *,
    config,
):
    """Runs (or resumes) the experiment of the RunConfig `config`; returns (model, final
    logs, dataset_dir, latest checkpoint).

    `jit_compile` None takes TrainLoop.jit_compile. Each call of the compiled function runs
    TrainLoop.steps_per_execution steps; progress lines, TensorBoard, images, checkpoints
    and the NaN/Inf check happen between calls.
    """
    exp, options, loop = config.experiment, config.method, config.loop
    log_every = log_every or loop.log_every
    checkpoint_every = checkpoint_every or loop.checkpoint_every
    jit_compile = loop.jit_compile if jit_compile is None else jit_compile
    per_call = loop.steps_per_execution
    dataset_dir = resolve_dataset_dir(exp.dataset_name, dataset_dir, exp.tfds_data_dir)
    files.makedirs(model_dir)
    init_checkpoint = exp.init_checkpoint
    if init_checkpoint and not tf.train.latest_checkpoint(model_dir):
        # Before the run's seed is set: a pretrained start built now or found cached
        # leaves the run's own randomness the same.
        init_checkpoint = resolve_init_checkpoint(
            init_checkpoint,
            exp.dataset_name,
            dataset_dir,
            config.model,
            config.pretrain,
            print_fn=print_fn,
        )

    # ------------------------------------------------------------ strategy and model
    if exp.seed is not None:
        keras.utils.set_random_seed(exp.seed)  # same seed, same initial weights and data
    distribute.set_precision(precision)
    strategy = distribute.make_strategy(strategy_name, tpu)
    replicas = strategy.num_replicas_in_sync
    for name, size in (("labeled", exp.labeled_batch_size), ("extra", exp.extra_batch_size)):
        if size % replicas:
            raise ValueError(f"{name} batch size {size} is not divisible by {replicas} replicas")
    settings = config.model
    for advice in distribute.small_batch_advice(
        exp.labeled_batch_size,
        replicas,
        settings.fine_tune_batch_norm,
        settings.sync_batch_norm,
        exp.scale_learning_rate_with_batch,
        exp.base_learning_rate,
    ):
        logging.warning(advice)
    if options.mode != "supervised":
        advice = cutout_advice(exp.crop_size, config.strong)
        if advice:
            logging.warning(advice)
    with strategy.scope():
        weights = (
            class_stats.load_class_weights(exp.class_weights, exp.descriptor.num_classes)
            if exp.class_weights
            else None
        )
        model = build_model(exp.descriptor.num_classes, settings, options, class_weights=weights)
        optimizer = build_optimizer(exp, model, precision)
        model.compile(optimizer=optimizer)
        checkpoint = training_checkpoint(model, optimizer)
        manager = tf.train.CheckpointManager(
            checkpoint, model_dir, max_to_keep=max_checkpoints, checkpoint_name="ckpt"
        )

    # ------------------------------------------------------------ resume or initialise
    if manager.latest_checkpoint:
        try:
            checkpoint.restore(manager.latest_checkpoint).assert_consumed()
        except restore.RESTORE_FAILURES as e:
            raise _resume_error(manager.latest_checkpoint, e) from e
        print_fn(
            f"resumed from {manager.latest_checkpoint} at step {int(optimizer.iterations.numpy())}"
        )
    elif init_checkpoint:
        print_fn(initialize(model, init_checkpoint))
    files.write_text(os.path.join(model_dir, "operative_config.gin"), config.gin_config)

    # ------------------------------------------------------------ input and step
    dataset = make_input(strategy, config, dataset_dir)
    iterator = iter(dataset)
    run_steps = distribute.make_train_function(strategy, model, jit_compile)

    # ------------------------------------------------------------ loop
    summaries = os.path.join(model_dir, "train")
    writer = tf.summary.create_file_writer(summaries)
    step = int(optimizer.iterations.numpy())
    start_step, start_time = step, time.time()
    logs = {}
    if step >= exp.num_steps:
        print_fn(f"already trained: step {step} >= num_steps {exp.num_steps}")
    while step < exp.num_steps:
        count = steps_in_call(step, exp.num_steps, per_call)
        logs = {k: float(v) for k, v in run_steps(iterator, tf.constant(count)).items()}
        before, step = step, int(optimizer.iterations.numpy())
        if not math.isfinite(logs["total_loss"]):
            kept = manager.latest_checkpoint or "none (no checkpoint was written yet)"
            raise NonFiniteLossError(
                f"loss became {logs['total_loss']} at step {step}; training stopped without "
                f"saving. Last good checkpoint: {kept}. Lower the learning rate or check the "
                "data (labels out of range, empty crops)."
            )
        if crossed(before, step, log_every) or step == exp.num_steps:
            elapsed = time.time() - start_time
            rate = (step - start_step) / elapsed if elapsed > 0 else float("nan")
            eta = format_duration((exp.num_steps - step) / rate if rate > 0 else float("inf"))
            print_fn(format_logs(step, exp.num_steps, logs, rate, eta))
            with writer.as_default(step=step):
                for name, value in logs.items():
                    tf.summary.scalar(name, value)
        if images_every and crossed(before, step, images_every) and replicas == 1:
            write_images(writer, model, next(iterator), step)
        if crossed(before, step, checkpoint_every) or step == exp.num_steps:
            path = manager.save(checkpoint_number=step)
            print_fn(f"saved {path}")
            if step < exp.num_steps:
                # A bucket object cannot be appended to: each flush uploads the whole
                # events file again, so one file for the run costs quadratic bytes. A new
                # file per checkpoint bounds a flush by one interval's summaries
                # (TensorBoard reads every events file of the folder).
                writer.close()
                writer = tf.summary.create_file_writer(summaries)
    writer.flush()
    return model, logs, dataset_dir, manager.latest_checkpoint


def evaluate_final(model, checkpoint, model_dir, dataset_dir, exp, batch_size=8):
    """Evaluates `checkpoint` on the Experiment `exp`'s eval_split: table, JSON and
    summaries."""
    desc = exp.descriptor

    def dataset_fn():
        return pipeline.eval_dataset(
            dataset_dir,
            batch_size,
            split=exp.eval_split,
            dataset_name=exp.dataset_name,
            eval_crop_size=exp.eval_crop_size,
        )

    writer = tf.summary.create_file_writer(os.path.join(model_dir, "eval"))
    checkpoint = restore.restore_model(model, checkpoint)
    return evaluator.evaluate_checkpoint(
        model,
        checkpoint,
        restore.checkpoint_step(checkpoint),
        dataset_fn,
        desc,
        exp.eval_split,
        model_dir,
        scales=(1.0,),
        flip=False,
        progress_every=0,
        writer=writer,
    )


def _resume_error(path, error):
    """The RestoreError for a checkpoint training cannot resume from: files it cannot read,
    or a checkpoint that does not fit this run's model and optimizer (the gin config
    changed: other shapes, another optimizer)."""
    unreadable = restore.unreadable_checkpoint(path, error)
    if unreadable:
        return unreadable
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return restore.RestoreError(
        f"cannot resume from {path!r}: it does not fit the model and optimizer built from "
        f"this run's gin config ({reason}). Fix: resume with the gin files and bindings the "
        "run started with (its operative_config.gin), or train in a new --model_dir"
    )


def describe_run(exp, settings, options, dataset_dir, model_dir, checkpoint_every):
    """The lines a training run starts with: what runs on which data, and where outputs go."""
    desc = exp.descriptor
    sets = f"labeled {exp.labeled_split!r}" + (
        f" (ids of {exp.labeled_id_list})" if exp.labeled_id_list else ""
    )
    batches = f"batch {exp.labeled_batch_size} labeled"
    if options.mode != "supervised":
        sets += f", extra {exp.extra_split!r}" + (
            f" (ids of {exp.extra_id_list})" if exp.extra_id_list else ""
        )
        batches += f" + {exp.extra_batch_size} extra"
    width = "" if settings.width_multiplier == 1 else f", width x{settings.width_multiplier:g}"
    return [
        f"training {'the supervised baseline' if options.mode == 'supervised' else 'PseudoSeg'}"
        f" (mode {options.mode}) on {desc.name} ({desc.num_classes} classes) from {dataset_dir}",
        f"  data: {sets}; evaluation on {exp.eval_split!r}",
        f"  model: DeepLabv3+ {settings.backbone}, output stride {settings.output_stride}"
        f"{width}, ASPP/decoder depth {settings.aspp_depth}/{settings.decoder_depth}",
        f"  steps: {exp.num_steps}, {batches}, crop {exp.crop_size}, "
        f"learning rate {exp.learning_rate:g}"
        f"{'' if exp.optimizer == 'momentum' else f' ({exp.optimizer})'}, seed {exp.seed}",
        f"  outputs: {files.absolute(model_dir)} (a checkpoint every {checkpoint_every} steps"
        ", TensorBoard summaries, operative_config.gin)",
    ]
