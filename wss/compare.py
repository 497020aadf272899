"""Side-by-side comparison of the method's variants (Table 5/6 rows) over several seeds.

    python -m wss.compare [--output_dir=runs/compare] [--seeds=0,1,2] [--num_steps=N] \
        [--rows=supervised,self_training,semi,weakly,decoder,sgc] \
        [--gin_param="ModelSettings.aspp_depth = 32"]

Each (row, seed) run parses the experiment gin file(s) (default gin/demo.gin), then the
extra --gin_param bindings, then the row's method bindings, `Experiment.seed = seed` and
the --num_steps override, so every row shares the labeled split, budget and seed and
differs only in the method. It trains into OUTPUT_DIR/<row>/seed<k> (wss.train.train,
which resumes from the run's latest checkpoint), evaluates the final checkpoint on
Experiment.eval_split (wss.train.evaluate_final) and, for the 'semi' (fusion) row,
measures the ECE of every pseudo-label source there (wss.calibration.calibrate). A run
whose eval JSON already exists is reused, so an interrupted comparison resumes with the
same command.

The 'self_training' row (Table 6) is three stages with the same seed and budget: the
'supervised' run of that seed is the teacher (trained first if that row is not asked
for), wss.pseudo_label labels the extra split without the labeled ids (arg-max where the
teacher's max probability is > 0.5, 255 elsewhere) into
OUTPUT_DIR/self_training/seed<k>/pseudo, and a supervised student trains from the same
initialisation on the union of the labeled split and those records.

Outputs in OUTPUT_DIR: compare.json (every number), compare.md (the mIoU table with the
paper's VOC 1/8 numbers for reference, and the ECE table) and compare.png (mean mIoU per
row with std error bars).
"""

import json
import os
import re
import time

import gin
import keras
import numpy as np
import tensorflow as tf
from absl import flags
from PIL import Image, ImageDraw

from wss import calibration, program, pseudo_label, restore
from wss import train as train_lib
from wss.data import pipeline
from wss.errors import UserError
from wss.experiment import Experiment, build_model, resolve_dataset_dir, resolve_path

DEFAULT_GIN = "gin/demo.gin"
RUN_RECORD = "compare_run.json"
PSEUDO_SPLIT = "pseudo"

# Row name -> (description, method bindings, paper reference (table, VOC 1/8 mIoU %)).
ROWS = {
    "supervised": (
        "supervised baseline (L_s only)",
        ["MethodOptions.mode = 'supervised'"],
        ("Table 6, supervised", 64.00),
    ),
    "self_training": (
        "self-training: supervised student on labeled + teacher's pseudo labels",
        ["MethodOptions.mode = 'supervised'"],
        ("Table 6, self-training", 69.88),
    ),
    "semi": (
        "PseudoSeg, calibrated fusion",
        ["MethodOptions.mode = 'semi'", "MethodOptions.source = 'fusion'"],
        ("Table 5, calibrated fusion", 73.13),
    ),
    "weakly": (
        "PseudoSeg, fusion + image-level labels",
        ["MethodOptions.mode = 'weakly'", "MethodOptions.source = 'fusion'"],
        ("Table 5, with image-level labels", 74.70),
    ),
    "decoder": (
        "PseudoSeg, decoder-only pseudo labels",
        ["MethodOptions.mode = 'semi'", "MethodOptions.source = 'decoder'"],
        ("Table 5, decoder only", 69.35),
    ),
    "sgc": (
        "PseudoSeg, SGC-only pseudo labels",
        ["MethodOptions.mode = 'semi'", "MethodOptions.source = 'sgc'"],
        ("Table 5, SGC only", 62.61),
    ),
}
PAPER_NOTE = (
    "Paper numbers: PASCAL VOC 2012 val, 1/8 labeled split, Xception-65 at "
    "full budget. They are given for the ordering of the rows only; absolute "
    "values are not comparable with this experiment."
)
# Bindings the comparison itself sets; a --gin_param binding them would be overridden.
_RESERVED = re.compile(r"^\s*(MethodOptions\.(mode|source)|Experiment\.seed)\s*=")

# Bar chart geometry (pixels).
CHART_HEIGHT = 320
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 56, 16, 36, 52
CHART_SLOT = 96
CHART_MIN_WIDTH = 320  # room for the title


class CompareError(UserError, RuntimeError):
    """A comparison cannot run as asked (bad row, conflicting run directory, ...)."""


# ------------------------------------------------------------------------------ runs


def run_bindings(row, seed, gin_params=(), num_steps=None, pseudo_dir=None):
    """The gin bindings of one run: user params, then the row's, the seed, the budget
    (and for a self-training student, the labeled set joined with `pseudo_dir`)."""
    if row not in ROWS:
        raise CompareError(f"unknown row {row!r}; choose from {', '.join(ROWS)}")
    for param in gin_params:
        if _RESERVED.match(param):
            raise CompareError(
                f"--gin_param {param!r} conflicts with the comparison, which "
                "sets MethodOptions.mode/source per row and Experiment.seed "
                "per seed (use --rows and --seeds instead)."
            )
    bindings = list(gin_params) + ROWS[row][1] + [f"Experiment.seed = {int(seed)}"]
    if num_steps is not None:
        bindings.append(f"Experiment.num_steps = {int(num_steps)}")
    if pseudo_dir is not None:
        bindings.append(f"Experiment.labeled_split = {student_labeled_split(pseudo_dir)!r}")
    return bindings


def student_labeled_split(pseudo_dir):
    """The self-training student's labeled set: the configured one plus every record of
    the pseudo-label folder (read from the currently parsed Experiment)."""
    configured = Experiment().labeled_split
    configured = (configured,) if isinstance(configured, str) else tuple(configured)
    return configured + (f"{os.path.abspath(pseudo_dir)}:{PSEUDO_SPLIT}",)


def _parse(gin_files, bindings):
    """Parses the gin config afresh; a bad binding becomes a CompareError."""
    try:
        restore.parse_gin(gin_files, bindings)
    except ValueError as e:
        raise CompareError(f"gin config does not parse: {e}") from e


def _check_run_record(run_dir, record):
    """Refuses a run directory that was started with other settings; records new ones."""
    path = os.path.join(run_dir, RUN_RECORD)
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != record:
            raise CompareError(
                f"{run_dir} holds a run started with other settings:\n  before: {old}\n"
                f"  now:    {record}\nUse another --output_dir, or delete {run_dir}."
            )
        return
    os.makedirs(run_dir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1)


def _check_not_past_budget(run_dir, num_steps):
    """A run directory whose checkpoint is beyond the budget would be evaluated there."""
    latest = tf.train.latest_checkpoint(run_dir)
    if latest and restore.checkpoint_step(latest) > num_steps:
        raise CompareError(
            f"{run_dir} holds {latest}, beyond num_steps {num_steps}; use "
            "another --output_dir (or the larger --num_steps)."
        )


def _run_ece(run_dir, exp, dataset_dir, model, eval_result, max_batches, log):
    """Reads or computes the run's calibration JSON; returns {variant: {ece, ...}}."""
    step = eval_result["step"]
    path = os.path.join(run_dir, f"calibration_{exp.eval_split}_{step}.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("max_batches") == max_batches:
            log(f"    reusing {path}")
            return saved["variants"]
    if model is None:  # a reused run: rebuild the model of the parsed config
        model = build_model(exp.descriptor.num_classes)
        restore.restore_model(model, eval_result["checkpoint"])
    log(f"    ECE of the pseudo-label sources on {exp.eval_split} ...")
    dataset = pipeline.eval_dataset(
        dataset_dir,
        8,
        split=exp.eval_split,
        dataset_name=exp.dataset_name,
        eval_crop_size=exp.eval_crop_size,
    )
    results = calibration.calibrate(
        model, dataset, exp.descriptor.num_classes, max_batches=max_batches, log=log
    )
    calibration.save_reliability_png(results, path[: -len(".json")] + ".png")
    variants = {
        name: {k: v for k, v in r.items() if k != "accumulator"} for name, r in results.items()
    }
    with open(path, "w") as f:
        json.dump(
            {
                "checkpoint": eval_result["checkpoint"],
                "step": step,
                "split": exp.eval_split,
                "temperature": model.options.temperature,
                "gamma": model.options.gamma,
                "max_batches": max_batches,
                "variants": variants,
            },
            f,
            indent=1,
        )
    return variants


def run_one(
    row,
    seed,
    run_dir,
    gin_files,
    gin_params=(),
    num_steps=None,
    dataset_dir=None,
    with_ece=False,
    ece_batches=None,
    log=print,
):
    """Trains (or resumes, or reuses) one (row, seed) run and evaluates it.

    Returns {'miou', 'pixel_accuracy', 'eval_json', 'reused', 'seconds', 'ece', ...}.
    """
    start = time.time()
    pseudo_dir = pseudo_report = None
    if row == "self_training":
        pseudo_dir, pseudo_report = teacher_pseudo_labels(
            seed, run_dir, gin_files, gin_params, num_steps, dataset_dir, log
        )
        _parse(gin_files, run_bindings(row, seed, gin_params, num_steps))
    bindings = run_bindings(row, seed, gin_params, num_steps, pseudo_dir)
    _parse(gin_files, bindings)
    exp = Experiment()
    _check_run_record(
        run_dir,
        {
            "row": row,
            "seed": int(seed),
            "bindings": bindings,
            "gin_files": [os.path.basename(f) for f in gin_files],
        },
    )
    dataset_dir = resolve_dataset_dir(exp.dataset_name, dataset_dir)
    eval_json = os.path.join(run_dir, f"eval_{exp.eval_split}_{exp.num_steps}.json")
    model = None
    reused = os.path.exists(eval_json)
    if reused:
        log(f"    reusing {eval_json}")
        with open(eval_json) as f:
            result = json.load(f)
    else:
        _check_not_past_budget(run_dir, exp.num_steps)
        model, _, dataset_dir, ckpt = train_lib.train(
            run_dir, dataset_dir, images_every=0, print_fn=lambda s: log(f"    {s}")
        )
        if not ckpt:
            raise CompareError(f"training {run_dir} wrote no checkpoint")
        result = train_lib.evaluate_final(model, ckpt, run_dir, dataset_dir)
        result = {
            "miou": float(result["miou"]),
            "pixel_accuracy": float(result["pixel_accuracy"]),
            "step": result["step"],
            "checkpoint": ckpt,
        }
        if not os.path.exists(eval_json):
            raise CompareError(f"evaluation did not write {eval_json} (checkpoint {ckpt})")
    out = {
        "row": row,
        "seed": int(seed),
        "run_dir": run_dir,
        "eval_json": eval_json,
        "miou": float(result["miou"]),
        "pixel_accuracy": float(result["pixel_accuracy"]),
        "step": int(result["step"]),
        "reused": reused,
        "num_steps": exp.num_steps,
        "labeled_split": exp.labeled_split,
        "labeled_id_list": exp.labeled_id_list,
        "dataset": exp.dataset_name,
        "eval_split": exp.eval_split,
        "ece": None,
        "pseudo_labels": pseudo_report,
    }
    if with_ece:
        out["ece"] = _run_ece(
            run_dir,
            exp,
            dataset_dir,
            model,
            {"step": out["step"], "checkpoint": result["checkpoint"]},
            ece_batches,
            log,
        )
    out["seconds"] = time.time() - start
    keras.backend.clear_session()  # the next run builds a fresh model
    return out


def teacher_dir_of(student_dir):
    """OUTPUT_DIR/self_training/seed<k> -> OUTPUT_DIR/supervised/seed<k> (the teacher)."""
    seed_dir = os.path.basename(os.path.normpath(student_dir))
    output_dir = os.path.dirname(os.path.dirname(os.path.normpath(student_dir)))
    return os.path.join(output_dir, "supervised", seed_dir)


def teacher_pseudo_labels(
    seed, student_dir, gin_files, gin_params=(), num_steps=None, dataset_dir=None, log=print
):
    """Self-training's first two stages: the seed's supervised run (reused when it is
    there) labels the extra split, labeled ids excluded, into student_dir/pseudo
    (resumable shards). Returns that folder and the labels' coverage / mIoU / accuracy
    on covered pixels (where the extra split has ground truth)."""
    teacher_dir = teacher_dir_of(student_dir)
    log(f"    teacher: {teacher_dir}")
    teacher = run_one(
        "supervised",
        seed,
        teacher_dir,
        gin_files,
        gin_params,
        num_steps,
        dataset_dir,
        log=lambda s: log(f"    {s}"),
    )
    _parse(gin_files, run_bindings("supervised", seed, gin_params, num_steps))
    exp = Experiment()
    dataset_dir = resolve_dataset_dir(exp.dataset_name, dataset_dir)
    out_dir = os.path.join(student_dir, PSEUDO_SPLIT)
    model = build_model(exp.descriptor.num_classes)
    checkpoint = restore.restore_model(model, teacher["run_dir"])
    crop = exp.eval_crop_size or exp.descriptor.eval_crop_size
    log(f"    pseudo labels of {exp.extra_split} by {checkpoint} -> {out_dir}")
    report = pseudo_label.generate(
        model,
        dataset_dir,
        exp.extra_split,
        out_dir,
        exp.descriptor.num_classes,
        crop,
        output_split=PSEUDO_SPLIT,
        num_shards=2,
        batch_size=8,
        exclude_ids=train_lib.labeled_ids(exp, dataset_dir),
        class_names=exp.descriptor.class_names,
        settings={"checkpoint": os.path.abspath(checkpoint)},
        progress_every=0,
        log=lambda s: log(f"    {s}"),
    )
    keras.backend.clear_session()
    return out_dir, {
        key: report[key] for key in ("num_images", "coverage", "miou", "pixel_accuracy")
    }


def _stats(values):
    """(mean, sample std or None for a single value) of a list of numbers."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else None
    return float(values.mean()), std


def run_comparison(
    output_dir,
    seeds=(0, 1, 2),
    rows=tuple(ROWS),
    num_steps=None,
    gin_files=(DEFAULT_GIN,),
    gin_params=(),
    dataset_dir=None,
    ece_batches=None,
    log=print,
):
    """Runs every (seed, row), writes compare.json/.md/.png; returns the summary dict."""
    rows, seeds = list(rows), [int(s) for s in seeds]
    if not rows or not seeds:
        raise CompareError("need at least one row and one seed")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise CompareError(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if len(set(rows)) != len(rows) or len(set(seeds)) != len(seeds):
        raise CompareError(f"rows and seeds must not repeat (rows {rows}, seeds {seeds})")
    gin_files = [resolve_path(f) for f in gin_files]
    for path in gin_files:
        if not os.path.exists(path):
            raise CompareError(f"gin file {path!r} does not exist")
    if dataset_dir is None:
        # Resolve once, so that every run (and ./demo_data generation) sees the same folder.
        _parse(gin_files, list(gin_params))
        dataset_dir = resolve_dataset_dir(Experiment().dataset_name, None)
    os.makedirs(output_dir, exist_ok=True)

    runs, start = [], time.time()
    total = len(rows) * len(seeds)
    try:
        for seed in seeds:
            for row in rows:
                run_dir = os.path.join(output_dir, row, f"seed{seed}")
                log(f"[{len(runs) + 1}/{total}] {row} seed {seed} -> {run_dir}")
                run = run_one(
                    row,
                    seed,
                    run_dir,
                    gin_files,
                    gin_params,
                    num_steps,
                    dataset_dir,
                    with_ece=row == "semi",
                    ece_batches=ece_batches,
                    log=log,
                )
                runs.append(run)
                log(
                    f"[{len(runs)}/{total}] {row} seed {seed}: mIoU {100 * run['miou']:.2f}%"
                    f" ({'reused' if run['reused'] else 'trained'}, {run['seconds']:.1f}s;"
                    f" elapsed {_clock(time.time() - start)})"
                )
    finally:
        gin.clear_config()
    summary = summarize(runs, rows, seeds, gin_files, gin_params, num_steps)
    summary["files"] = write_outputs(summary, output_dir)
    log(summary["markdown"])
    log(f"Wrote {', '.join(summary['files'].values())}")
    return summary


def _clock(seconds):
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s"


# ------------------------------------------------------------------------- summaries


def summarize(runs, rows, seeds, gin_files, gin_params, num_steps):
    """The comparison's numbers: per-row mIoU per seed, mean/std, paper row, ECE table."""
    table = {}
    for row in rows:
        mious = [r["miou"] for r in runs if r["row"] == row]
        mean, std = _stats(mious)
        paper_table, paper_miou = ROWS[row][2]
        table[row] = {
            "description": ROWS[row][0],
            "bindings": ROWS[row][1],
            "miou": mious,
            "mean": mean,
            "std": std,
            "paper_voc_1_8": {"table": paper_table, "miou_percent": paper_miou},
        }
    ece = {}
    semi_runs = [r for r in runs if r["ece"]]
    for variant in calibration.VARIANTS:
        values = [r["ece"][variant]["ece"] for r in semi_runs if variant in r["ece"]]
        if values:
            mean, std = _stats(values)
            ece[variant] = {"ece": values, "mean": mean, "std": std}
    teacher_labels = [
        dict(r["pseudo_labels"], seed=r["seed"]) for r in runs if r.get("pseudo_labels")
    ]
    first = runs[0]
    summary = {
        "seeds": seeds,
        "rows": table,
        "ece_semi": ece,
        "self_training_pseudo_labels": teacher_labels,
        "ece_seeds": [r["seed"] for r in semi_runs],
        "settings": {
            "gin_files": list(gin_files),
            "gin_params": list(gin_params),
            "num_steps": first["num_steps"],
            "dataset": first["dataset"],
            "labeled_split": first["labeled_split"],
            "labeled_id_list": first["labeled_id_list"],
            "eval_split": first["eval_split"],
        },
        "paper_note": PAPER_NOTE,
        "runs": runs,
    }
    summary["markdown"] = format_markdown(summary)
    return summary


def _pm(mean, std):
    return f"{100 * mean:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * mean:.2f}"


def format_markdown(summary):
    """The mIoU table (with the paper's VOC rows) and the ECE table, in markdown."""
    seeds, s = summary["seeds"], summary["settings"]
    lines = [
        f"## mIoU (%) on {s['dataset']}/{s['eval_split']}",
        "",
        f"{s['num_steps']} steps, labeled set {s['labeled_split']}"
        f"{' / ' + os.path.basename(s['labeled_id_list']) if s['labeled_id_list'] else ''}"
        f", gin: {', '.join(os.path.basename(f) for f in s['gin_files'])}"
        f"{'; ' + '; '.join(s['gin_params']) if s['gin_params'] else ''}.",
        "",
        "| row | method | "
        + " | ".join(f"seed {k}" for k in seeds)
        + " | mean ± std | paper VOC 1/8 (reference only) |",
        "|---|---|" + "---:|" * len(seeds) + "---:|---|",
    ]
    for row, r in summary["rows"].items():
        paper = r["paper_voc_1_8"]
        lines.append(
            f"| {row} | {r['description']} | "
            + " | ".join(f"{100 * v:.2f}" for v in r["miou"])
            + f" | {_pm(r['mean'], r['std'])} | {paper['miou_percent']:.2f} "
            f"({paper['table']}) |"
        )
    lines += ["", f"*{summary['paper_note']}*"]
    if summary.get("self_training_pseudo_labels"):
        lines += [
            "",
            "## The self-training teacher's offline pseudo labels (max prob > 0.5)",
            "",
            "| seed | images | coverage (%) | mIoU on covered pixels (%) | "
            "pixel acc. on covered (%) |",
            "|---|---:|---:|---:|---:|",
        ]
        for p in summary["self_training_pseudo_labels"]:
            cells = [
                f"{100 * p[k]:.2f}" if p[k] is not None else "n/a"
                for k in ("coverage", "miou", "pixel_accuracy")
            ]
            lines.append(f"| {p['seed']} | {p['num_images']} | " + " | ".join(cells) + " |")
    if summary["ece_semi"]:
        ece_seeds = summary["ece_seeds"]
        lines += [
            "",
            "## ECE (%) of the pseudo-label sources of the semi (fusion) model",
            "",
            "| source | " + " | ".join(f"seed {k}" for k in ece_seeds) + " | mean ± std |",
            "|---|" + "---:|" * (len(ece_seeds) + 1),
        ]
        for variant, e in summary["ece_semi"].items():
            lines.append(
                f"| {variant} | "
                + " | ".join(f"{100 * v:.2f}" for v in e["ece"])
                + f" | {_pm(e['mean'], e['std'])} |"
            )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- chart


def chart_size(num_rows):
    """(width, height) in pixels of the bar chart of `num_rows` rows."""
    return max(CHART_LEFT + num_rows * CHART_SLOT + CHART_RIGHT, CHART_MIN_WIDTH), CHART_HEIGHT


def bar_chart(labels, means, stds, title=""):
    """uint8 RGB bar chart of mIoU means (0..1) with std error bars and labels."""
    width, height = chart_size(len(labels))
    plot_h = height - CHART_TOP - CHART_BOTTOM
    base = CHART_TOP + plot_h  # y of mIoU 0
    stds = [s or 0.0 for s in stds]
    top = max([m + s for m, s in zip(means, stds)] + [0.1])
    y_max = float(np.ceil(top * 10 - 1e-9) / 10)  # next multiple of 10%

    def y_of(value):
        return int(round(base - plot_h * min(max(value, 0.0), y_max) / y_max))

    right = CHART_LEFT + len(labels) * CHART_SLOT
    canvas = np.full((height, width, 3), 255, np.uint8)
    ticks = np.linspace(0.0, y_max, int(round(y_max * 10)) + 1)
    for tick in ticks:  # horizontal grid
        canvas[y_of(tick), CHART_LEFT:right] = (225, 225, 225)
    bar_w = CHART_SLOT // 2
    for k, (mean, std) in enumerate(zip(means, stds)):
        x0 = CHART_LEFT + k * CHART_SLOT + (CHART_SLOT - bar_w) // 2
        canvas[y_of(mean) : base, x0 : x0 + bar_w] = (70, 110, 190)
        if std > 0:  # error bar with caps
            cx, lo, hi = x0 + bar_w // 2, y_of(mean + std), y_of(mean - std)
            canvas[lo : hi + 1, cx - 1 : cx + 1] = 0
            canvas[lo, cx - 8 : cx + 8] = canvas[hi, cx - 8 : cx + 8] = 0
    canvas[CHART_TOP : base + 1, CHART_LEFT] = 0  # axes
    canvas[base, CHART_LEFT:right] = 0

    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    draw.text((CHART_LEFT, 8), title, fill=(0, 0, 0))
    for tick in ticks:
        draw.text((6, y_of(tick) - 6), f"{100 * tick:.0f}", fill=(80, 80, 80))
    for k, (label, mean) in enumerate(zip(labels, means)):
        x0 = CHART_LEFT + k * CHART_SLOT + 6
        draw.text((x0, base + 8), label, fill=(0, 0, 0))
        draw.text((x0, base + 24), f"{100 * mean:.1f}%", fill=(60, 60, 60))
    return np.asarray(image)


def write_outputs(summary, output_dir):
    """Writes compare.json, compare.md and compare.png; returns their paths."""
    paths = {ext: os.path.join(output_dir, f"compare.{ext}") for ext in ("json", "md", "png")}
    with open(paths["json"], "w") as f:
        json.dump({k: v for k, v in summary.items() if k not in ("markdown", "files")}, f, indent=1)
    with open(paths["md"], "w") as f:
        f.write(summary["markdown"])
    rows = summary["rows"]
    chart = bar_chart(
        list(rows),
        [r["mean"] for r in rows.values()],
        [r["std"] for r in rows.values()],
        title=f"mean mIoU (%) over seeds {summary['seeds']}, "
        f"{summary['settings']['dataset']}/"
        f"{summary['settings']['eval_split']}",
    )
    Image.fromarray(chart).save(paths["png"])
    return paths


# ------------------------------------------------------------------------------- CLI

FLAGS = program.flag_values()
flags.DEFINE_string(
    "output_dir", "runs/compare", "Where the runs and compare.* go.", flag_values=FLAGS
)
flags.DEFINE_list(
    "seeds", ["0", "1", "2"], "Seeds (Experiment.seed), comma-separated.", flag_values=FLAGS
)
flags.DEFINE_list(
    "rows", list(ROWS), f"Rows to compare, from {', '.join(ROWS)}.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "num_steps",
    None,
    "Training steps of every run (default: the gin file's Experiment.num_steps).",
    flag_values=FLAGS,
)
flags.DEFINE_multi_string("gin_file", [DEFAULT_GIN], "Experiment gin file(s).", flag_values=FLAGS)
flags.DEFINE_multi_string(
    "gin_param",
    [],
    "Extra gin bindings for every run (not MethodOptions.mode/source or Experiment.seed).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "dataset_dir",
    None,
    "TFRecord folder (demo: ./demo_data, generated when absent).",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "ece_batches", None, "Batches of the eval split for the ECE (default: all).", flag_values=FLAGS
)


def main(argv=None):
    """CLI entry point; returns the summary dict (None for --help)."""
    if not program.parse_flags(FLAGS, argv):
        return None
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError as e:
        raise CompareError(f"--seeds must be integers, got {FLAGS.seeds}") from e
    if FLAGS.num_steps is not None and FLAGS.num_steps <= 0:
        raise CompareError(f"--num_steps must be positive, got {FLAGS.num_steps}")
    return run_comparison(
        FLAGS.output_dir,
        seeds,
        FLAGS.rows,
        FLAGS.num_steps,
        FLAGS.gin_file,
        FLAGS.gin_param,
        FLAGS.dataset_dir,
        FLAGS.ece_batches,
        log=lambda s: print(s, flush=True),
    )


if __name__ == "__main__":
    program.run(main, FLAGS)
