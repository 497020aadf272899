"""Side-by-side comparison of the method's variants (Table 5/6 rows) over several seeds.

Every (row, seed) run shares the experiment gin file(s), the user's extra bindings, the
labeled split, the budget and the seed, and differs only in the method
(wss.comparison.rows builds each run's config as a value). Runs go to
OUTPUT_DIR/<row>/seed<k>, are trained, evaluated and, for the 'semi' (fusion) row,
calibrated by wss.comparison.runs, which reuses finished runs so an interrupted
comparison resumes; the 'self_training' row first has its teacher (the supervised run of
its seed) pseudo-label the extra split. wss.comparison.report writes OUTPUT_DIR/compare.json
(every number), compare.md (the mIoU table with the paper's VOC 1/8 numbers for
reference, and the ECE table) and compare.png (mean mIoU per row with std error bars).
The command line is wss.compare.
"""

import time

from wss import files
from wss.builders.dataset_dir import resolve_dataset_dir
from wss.comparison import report
from wss.comparison.rows import ROWS, CompareError, parse_config, run_spec
from wss.comparison.runs import run_one
from wss.files import resolve_path
from wss.self_training.plan import check_dataset

DEFAULT_GIN = "gin/demo.gin"
_WITHOUT_SELF_TRAINING = "leave the 'self_training' row out, e.g. --rows=" + ",".join(
    r for r in ROWS if r != "self_training"
)


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
    _check_rows_and_seeds(rows, seeds)
    gin_files = [resolve_path(f) for f in gin_files]
    for path in gin_files:
        if not files.exists(path):
            raise CompareError(f"gin file {path!r} does not exist")
    # The shared config, parsed once up front: a bad --gin_param fails before any run,
    # every run (and ./demo_data generation) sees the same data folder, and the
    # self-training student's labeled set extends the configured one.
    shared = parse_config(gin_files, list(gin_params)).experiment
    if "self_training" in rows:
        check_dataset(shared.dataset_name, fix=_WITHOUT_SELF_TRAINING)
    dataset_dir = resolve_dataset_dir(shared.dataset_name, dataset_dir, shared.tfds_data_dir)
    specs = [
        run_spec(row, seed, output_dir, gin_files, gin_params, num_steps, shared.labeled_split)
        for seed in seeds
        for row in rows
    ]
    files.makedirs(output_dir)
    runs = _run_all(specs, dataset_dir, ece_batches, log)
    summary = report.summarize(runs, rows, seeds, gin_files, gin_params)
    summary["files"] = report.write_outputs(summary, output_dir)
    log(summary["markdown"])
    log(f"Wrote {', '.join(summary['files'].values())}")
    return summary


def _check_rows_and_seeds(rows, seeds):
    if not rows or not seeds:
        raise CompareError("need at least one row and one seed")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise CompareError(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if len(set(rows)) != len(rows) or len(set(seeds)) != len(seeds):
        raise CompareError(f"rows and seeds must not repeat (rows {rows}, seeds {seeds})")


def _run_all(specs, dataset_dir, ece_batches, log):
    """Runs the specs in order with a progress line before and after each."""
    runs, start, total = [], time.time(), len(specs)
    for spec in specs:
        log(f"[{len(runs) + 1}/{total}] {spec.row} seed {spec.seed} -> {spec.run_dir}")
        run = run_one(
            spec, dataset_dir, with_ece=spec.row == "semi", ece_batches=ece_batches, log=log
        )
        runs.append(run)
        log(
            f"[{len(runs)}/{total}] {spec.row} seed {spec.seed}: mIoU {100 * run['miou']:.2f}%"
            f" ({'reused' if run['reused'] else 'trained'}, {run['seconds']:.1f}s;"
            f" elapsed {_clock(time.time() - start)})"
        )
    return runs


def _clock(seconds):
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s"
