"""The comparison's rows (Table 5/6) and each (row, seed) run's config, built as values.

A run is a `RunSpec`: its folder, the experiment gin files and the list of bindings that
make it one row at one seed (the user's --gin_param bindings, then the row's method
bindings, `Experiment.seed` and the step budget). The list is assembled here, before any
run starts; `parse_config` parses it once, at the start of the run, into the config
values (Experiment, ModelSettings, MethodOptions) the run passes down.
"""

import dataclasses
import os
import re
from typing import Optional, Tuple

from wss import restore
from wss.errors import UserError

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


class CompareError(UserError, RuntimeError):
    """A comparison cannot run as asked (bad row, conflicting run directory, ...)."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One (row, seed) run as values: its folder and the gin config that defines it.

    A self-training run also names its teacher (the supervised run of the same seed) and
    the folder its teacher's pseudo labels go to, which its bindings already read.
    """

    row: str
    seed: int
    run_dir: str
    gin_files: Tuple[str, ...]
    bindings: Tuple[str, ...]
    teacher: Optional["RunSpec"] = None
    pseudo_dir: Optional[str] = None

    def record(self):
        """What the run directory records, so that a rerun with other settings is refused."""
        return {
            "row": self.row,
            "seed": int(self.seed),
            "bindings": list(self.bindings),
            "gin_files": [os.path.basename(f) for f in self.gin_files],
        }


def run_bindings(row, seed, gin_params=(), num_steps=None, labeled_split=None):
    """The gin bindings of one run: user params, then the row's, the seed, the budget
    (and for a self-training student, `labeled_split`: the union it trains on)."""
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
    if labeled_split is not None:
        bindings.append(f"Experiment.labeled_split = {tuple(labeled_split)!r}")
    return bindings


def student_labeled_split(configured, pseudo_dir):
    """The self-training student's labeled set: the configured one (a split or a tuple of
    them) plus every record of the pseudo-label folder."""
    configured = (configured,) if isinstance(configured, str) else tuple(configured)
    return configured + (f"{os.path.abspath(pseudo_dir)}:{PSEUDO_SPLIT}",)


def run_spec(row, seed, output_dir, gin_files, gin_params=(), num_steps=None, labeled_split=None):
    """The RunSpec of `row` at `seed` in OUTPUT_DIR/<row>/seed<k>.

    `labeled_split` is the configured labeled set (Experiment.labeled_split of the gin
    files and params); only the self-training row, whose student adds its teacher's pseudo
    labels to it, needs it.
    """
    run_dir = os.path.join(output_dir, row, f"seed{int(seed)}")
    common = (seed, output_dir, gin_files, gin_params, num_steps)
    if row != "self_training":
        bindings = run_bindings(row, seed, gin_params, num_steps)
        return RunSpec(row, int(seed), run_dir, tuple(gin_files), tuple(bindings))
    if labeled_split is None:
        raise ValueError("the self_training row needs the configured labeled_split")
    pseudo_dir = os.path.join(run_dir, PSEUDO_SPLIT)
    student_split = student_labeled_split(labeled_split, pseudo_dir)
    bindings = run_bindings(row, seed, gin_params, num_steps, student_split)
    teacher = run_spec("supervised", *common)
    return RunSpec(row, int(seed), run_dir, tuple(gin_files), tuple(bindings), teacher, pseudo_dir)


def parse_config(gin_files, bindings):
    """Parses the gin files and bindings afresh (the run's edge) into config values; a bad
    binding becomes a CompareError."""
    try:
        return restore.parse_gin(gin_files, bindings)
    except ValueError as e:
        raise CompareError(f"gin config does not parse: {e}") from e
