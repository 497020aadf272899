"""The comparison's report: per-row numbers, the markdown tables, JSON and a bar chart.

`summarize` gathers the runs into per-row mIoU (per seed, mean, std, the paper's VOC 1/8
number for reference), the ECE table of the semi rows' pseudo-label sources and the
self-training teacher's label statistics; `write_outputs` writes compare.json,
compare.md and compare.png (mean mIoU per row with std error bars, drawn with numpy and
PIL so the report needs no plotting library).
"""

import json
import os

import numpy as np
from PIL import Image, ImageDraw

from wss.comparison.rows import PAPER_NOTE, ROWS
from wss.evaluation.reliability import VARIANTS

# Bar chart geometry (pixels).
CHART_HEIGHT = 320
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 56, 16, 36, 52
CHART_SLOT = 96
CHART_MIN_WIDTH = 320  # room for the title


def _stats(values):
    """(mean, sample std or None for a single value) of a list of numbers."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else None
    return float(values.mean()), std


def summarize(runs, rows, seeds, gin_files, gin_params):
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
    for variant in VARIANTS:
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
    """The mIoU table (with the paper's VOC rows), the self-training teacher's labels and
    the ECE table, in markdown."""
    seeds, s = summary["seeds"], summary["settings"]
    id_list = s["labeled_id_list"]
    lines = [
        f"## mIoU (%) on {s['dataset']}/{s['eval_split']}",
        "",
        f"{s['num_steps']} steps, labeled set {s['labeled_split']}"
        f"{' / ' + os.path.basename(id_list) if id_list else ''}"
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
    lines += _teacher_label_lines(summary.get("self_training_pseudo_labels"))
    lines += _ece_lines(summary["ece_semi"], summary["ece_seeds"])
    return "\n".join(lines) + "\n"


def _teacher_label_lines(labels):
    if not labels:
        return []
    lines = [
        "",
        "## The self-training teacher's offline pseudo labels (max prob > 0.5)",
        "",
        "| seed | images | coverage (%) | mIoU on covered pixels (%) | pixel acc. on covered (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in labels:
        cells = [
            f"{100 * p[k]:.2f}" if p[k] is not None else "n/a"
            for k in ("coverage", "miou", "pixel_accuracy")
        ]
        lines.append(f"| {p['seed']} | {p['num_images']} | " + " | ".join(cells) + " |")
    return lines


def _ece_lines(ece, ece_seeds):
    if not ece:
        return []
    lines = [
        "",
        "## ECE (%) of the pseudo-label sources of the semi (fusion) model",
        "",
        "| source | " + " | ".join(f"seed {k}" for k in ece_seeds) + " | mean ± std |",
        "|---|" + "---:|" * (len(ece_seeds) + 1),
    ]
    for variant, e in ece.items():
        lines.append(
            f"| {variant} | "
            + " | ".join(f"{100 * v:.2f}" for v in e["ece"])
            + f" | {_pm(e['mean'], e['std'])} |"
        )
    return lines


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
    rows, s = summary["rows"], summary["settings"]
    chart = bar_chart(
        list(rows),
        [r["mean"] for r in rows.values()],
        [r["std"] for r in rows.values()],
        title=f"mean mIoU (%) over seeds {summary['seeds']}, {s['dataset']}/{s['eval_split']}",
    )
    Image.fromarray(chart).save(paths["png"])
    return paths
