"""Learnability probe: how well can a model class learn the demo data, apart from PseudoSeg?

    python -m wss.bench.learnability --model=demo_deeplab|plain_fcn \
        [--labeled=all|balanced] [--steps=1500] [--batch=16] [--input_scale=1] \
        [--gin_file=gin/demo.gin]

Trains one model with plain supervised cross-entropy on demo images generated in memory
(no TFRecords, no scale augmentation: whole images padded to 65 px, left-right flips, Adam
1e-3), then prints the val mIoU, per-class IoU and the final training loss.
'demo_deeplab' is the DeepLabv3+ of the gin config (the demo's small Xception by default);
'plain_fcn' is a small U-Net-like conv net at full resolution, a reference for what the
data allows within the same budget. `--labeled=all` uses every train mask, `balanced` the
demo's 32 labeled images. `--input_scale=2` enlarges images and masks twice (as DeepLab's
resizing: bilinear / nearest, corners aligned), evaluated at that size. The loss is the
project's L_s (wss.method.losses.supervised_ce).
This tells a model or schedule limit from a data limit (docs/demo_findings.md: the demo's
model, not its data, is the limit). The models and the loop live in wss.benchmarking.probe.
"""

from absl import flags

from wss import program
from wss.benchmarking import probe
from wss.builders import demo
from wss.experiment import parse_run_config

FLAGS = program.flag_values()
flags.DEFINE_enum(
    "model", "demo_deeplab", ["demo_deeplab", "plain_fcn"], "Model to train.", flag_values=FLAGS
)
flags.DEFINE_enum(
    "labeled",
    "all",
    ["all", "balanced"],
    "Train masks: every train image, or the demo's class-balanced labeled set.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("steps", 1500, "Training steps.", flag_values=FLAGS)
flags.DEFINE_integer("batch", 16, "Images per step.", flag_values=FLAGS)
flags.DEFINE_integer("num_train", demo.DEMO_TRAIN, "Train images generated.", flag_values=FLAGS)
flags.DEFINE_integer(
    "input_scale",
    1,
    "Enlarge every image (and mask) this many times "
    "before training and evaluation (objects of the demo are 12-36 px, "
    "small for a stride-16 backbone).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("num_val", demo.DEMO_VAL, "Val images generated.", flag_values=FLAGS)
flags.DEFINE_integer(
    "seed", 0, "Demo data seed (the demo's is 0) and training seed.", flag_values=FLAGS
)
flags.DEFINE_multi_string(
    "gin_file", ["gin/demo.gin"], "Config of demo_deeplab's model.", flag_values=FLAGS
)
flags.DEFINE_multi_string("gin_param", [], "Extra gin bindings.", flag_values=FLAGS)


def main(argv=None):
    """Command line entry; returns the result dict (None for --help)."""
    if not program.parse_flags(FLAGS, argv):
        return None
    fv = FLAGS
    for name in ("steps", "batch", "num_train", "num_val", "input_scale"):
        if fv[name].value < 1:
            raise program.UsageError(f"--{name}={fv[name].value}: must be at least 1.")
    train_items = probe.probe_train_items(fv.seed, fv.num_train, fv.labeled)
    if fv.model == "demo_deeplab":
        config = parse_run_config(fv.gin_file, fv.gin_param)
        model = probe.DeepLabLogits(demo.NUM_CLASSES, config.model)
    else:
        model = probe.plain_fcn(demo.NUM_CLASSES)
    print(
        f"{fv.model}: {len(train_items)} train masks, {fv.steps} steps of "
        f"{fv.batch} images, input scale {fv.input_scale}",
        flush=True,
    )
    result = probe.train_and_evaluate(
        model,
        probe.upsample(demo.padded_arrays(train_items), fv.input_scale),
        probe.upsample(demo.padded_arrays(demo.val_items(fv.seed, fv.num_val)), fv.input_scale),
        fv.steps,
        fv.batch,
        seed=fv.seed,
    )
    ious = " ".join(f"{100 * v:.1f}" for v in result["per_class_iou"])
    print(
        f"{fv.model} ({fv.labeled}): val mIoU {100 * result['miou']:.2f}% "
        f"[{ious}], training loss {result['first_loss']:.3f} -> "
        f"{result['final_loss']:.3f}, {result['seconds']:.0f}s"
    )
    return result


if __name__ == "__main__":
    program.run(main, FLAGS)
