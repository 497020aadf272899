"""Id lists: reading/writing, class-balanced sampling of labeled subsets, and checking a
labeled list against an extra set.

An id list has one image id per line (image/filename without extension); lines starting
with '#' are comments (the sampler records its seed there) and blank lines are ignored.
"""

import dataclasses
from typing import Iterable, List, Optional, Sequence, Set

import numpy as np

from wss import files
from wss.errors import InputError


def read_id_list(path: str) -> List[str]:
    """Ids of an id-list file in order, skipping '#' comments and blank lines."""
    if not files.exists(path):
        raise FileNotFoundError(
            f"Id list {path!r} does not exist; check the path (the "
            "release's split files ship in datasets/splits)"
        )
    ids = []
    for line in files.read_text(path).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(line)
    if not ids:
        raise InputError(f"Id list {path!r} holds no ids")
    dup = len(ids) - len(set(ids))
    if dup:
        raise InputError(f"Id list {path!r} repeats {dup} ids; remove the duplicates")
    return ids


def write_id_list(path: str, ids: Sequence[str], header: Optional[str] = None) -> None:
    """Writes an id list; `header` lines are written as '# ' comments first."""
    lines = [f"# {line}\n" for line in (header or "").splitlines()]
    files.write_text(path, "".join(lines + [f"{i}\n" for i in ids]))


@dataclasses.dataclass
class Sample:
    """A drawn labeled subset and how it was drawn."""

    ids: List[str]
    seed: int
    draw: int  # 0-based index of the accepted draw
    min_per_class: int


def sample_balanced(
    ids: Sequence[str],
    classes: Sequence[Iterable[int]],
    size: int,
    num_classes: int,
    min_per_class: int = 1,
    seed: int = 0,
    max_draws: int = 10000,
    skip_draws: int = 0,
) -> Sample:
    """Random subset of `size` ids in which every foreground class appears in at least
    `min_per_class` images, by sampling with rejection (paper appendix C).

    Args:
      ids: candidate ids (e.g. the train split).
      classes: per id, the foreground class ids present in its mask.
      size: subset size.
      num_classes: including background; classes 1..C-1 must be covered.
      min_per_class: the k of "every class at least k times".
      seed: numpy seed; the same arguments give the same subset.
      max_draws: give up after this many rejected draws.
      skip_draws: accept only draws after this many acceptable ones (for several
        independent subsets from one seed, like the release's 16_clean_3/14/20).
    """
    if size > len(ids):
        raise InputError(f"Cannot draw {size} of {len(ids)} ids")
    presence = np.zeros((len(ids), num_classes), dtype=bool)
    for row, cls in enumerate(classes):
        for c in cls:
            if 0 < c < num_classes:
                presence[row, c] = True
    totals = presence[:, 1:].sum(0)
    impossible = [c + 1 for c in np.flatnonzero(totals < min_per_class)]
    if impossible:
        raise InputError(
            f"Classes {impossible} appear in fewer than {min_per_class} "
            "candidate images; lower min_per_class"
        )
    rng = np.random.RandomState(seed)
    accepted = 0
    for draw in range(max_draws):
        pick = np.sort(rng.choice(len(ids), size, replace=False))
        if presence[pick, 1:].sum(0).min() >= min_per_class:
            if accepted == skip_draws:
                return Sample([ids[i] for i in pick], seed, draw, min_per_class)
            accepted += 1
    raise RuntimeError(
        f"No draw of {size} ids covered every class {min_per_class} times "
        f"in {max_draws} draws; lower min_per_class or raise max_draws"
    )


def sample_header(sample: Sample, source: str, extra: str = "") -> str:
    """Header text recording how a sample was drawn (written as '#' lines)."""
    text = (
        f"labeled subset drawn by wss.data.splits.sample_balanced\n"
        f"seed={sample.seed} draw={sample.draw} size={len(sample.ids)} "
        f"min_per_class={sample.min_per_class} source={source}"
    )
    return text + ("\n" + extra if extra else "")


@dataclasses.dataclass
class OverlapReport:
    """How a labeled id list relates to an extra set."""

    num_labeled: int
    num_extra: int
    overlap: List[str]  # labeled ids also in the extra set
    extra_ids: List[str]  # the extra ids to use (labeled ones removed if asked)


def check_labeled_against_extra(
    labeled: Sequence[str], extra: Sequence[str], exclude_labeled: bool = False
) -> OverlapReport:
    """Checks that every labeled id is a record of the extra set's source and reports the
    overlap. The release feeds all of train_aug (labeled ids included) as the extra set;
    `exclude_labeled` gives the paper's reading (extra = train_aug minus labeled)."""
    extra_set: Set[str] = set(extra)
    missing = [i for i in labeled if i not in extra_set]
    if missing:
        raise InputError(
            f"{len(missing)} labeled ids are not in the extra set (first: "
            f"{missing[:5]}); the labeled list and extra split do not match"
        )
    labeled_set = set(labeled)
    overlap = [i for i in extra if i in labeled_set]
    kept = [i for i in extra if i not in labeled_set] if exclude_labeled else list(extra)
    return OverlapReport(len(labeled), len(extra), overlap, kept)
