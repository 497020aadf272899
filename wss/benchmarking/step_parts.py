"""The parts of one PseudoSeg training step, each the model's own pass timed alone.

The step (wss.model.PseudoSegModel.compute_losses + train_step) is `pseudo_labels` (the
weak branch, passes 2-4), `labeled_pass` (pass 1), `strong_pass` (pass 5), the weight
decay and `apply_step_gradients`. Each part here calls that method of the model, inside
its own tf.function, on the step's inputs, differentiated where the step differentiates
it, so the split measures the code that trains and nothing rebuilt beside it.
"""

import statistics

import tensorflow as tf

from wss.benchmarking import timing
from wss.method import losses as losses_lib

# Parts whose times add up to the step; the two after them break `pseudo_labels` down.
SUMMED = ("labeled_pass", "pseudo_labels", "strong_pass", "optimizer")
WITHIN_PSEUDO_LABELS = ("cam_backbone_pass", "gradcam_sgc")


def step_parts(model, labeled, extra=None, jit_compile=False):
    """[(name, fn, args)]: the step's parts as separate tf.functions of the model's passes.

    - labeled_pass: `model.labeled_pass` (L_s, and L_sa and L_x where the SGC is on) plus
      the weight decay, forward and backward;
    - pseudo_labels: `model.pseudo_labels` as the step calls it (the backward of L_x in
      weakly mode, where the weak view trains the classification head);
    - cam_backbone_pass, gradcam_sgc (only where the options use the SGC): the two pieces
      of pseudo_labels' inference-mode side, the model's `deeplab.extract_features` and
      `cam_and_sgc`, timed alone (already inside pseudo_labels' time);
    - strong_pass: `model.strong_pass` against fixed pseudo labels, forward and backward;
    - optimizer: `model.apply_step_gradients` on the variables the step updates.
    `extra` None: the supervised step (labeled_pass and optimizer). The arguments of later
    parts are outputs of earlier ones, computed once here, untimed.
    """
    opts = model.options
    variables = model.trainable_variables
    weakly = opts.mode == "weakly"

    def compile_(fn):
        """A tf.function of `fn`, as every timed computation is."""
        return tf.function(fn, jit_compile=jit_compile)

    def gradients(tape, loss):
        """{variable path: gradient} of the variables `loss` depends on."""
        grads = tape.gradient(loss, variables)
        return {v.path: g for v, g in zip(variables, grads) if g is not None}

    def labeled_pass(batch):
        """Pass 1 and the weight decay, backward."""
        with tf.GradientTape() as tape:
            _, terms = model.labeled_pass(batch)
            loss = tf.add_n(list(terms.values())) + losses_lib.weight_decay(
                model.regularized_kernels(), opts.weight_decay
            )
        return loss, gradients(tape, loss)

    def weak_branch(batch):
        """Passes 2-4 with the step's arguments (see PseudoSegModel.compute_losses)."""
        return model.pseudo_labels(
            batch["image"],
            batch.get("weak_valid", batch["valid"]),
            image_labels=batch["image_labels"] if weakly else None,
            backbone_bn_updates=2 if weakly else 1,
        )

    def pseudo_labels(batch):
        """The weak branch; in weakly mode also L_x of its training-mode pass, backward."""
        if not weakly:
            return weak_branch(batch)["probs"], {}
        with tf.GradientTape() as tape:
            branch = weak_branch(batch)
            loss = losses_lib.classification_loss(
                branch["weak"]["cls_logits"], batch["image_labels"]
            )
        return branch["probs"], gradients(tape, loss)

    def cam_backbone_pass(images):
        """The inference-mode backbone pass whose end points feed Grad-CAM and the SGC."""
        end_points = model.deeplab.extract_features(images, training=False)
        return end_points, model.deeplab.decoder_size(end_points)

    def gradcam_sgc(end_points, decoder_size, batch):
        """Grad-CAM and the SGC on those end points, as pseudo_labels runs them."""
        return model.cam_and_sgc(
            end_points,
            batch["valid"],
            decoder_size,
            batch["image_labels"] if weakly else None,
            dropout=False,
            sgc_bn_training=opts.sgc_bn_training_in_weak_branch,
        )["sgc_logits"]

    def strong_pass(batch, probs):
        """Pass 5 against fixed pseudo labels, backward."""
        with tf.GradientTape() as tape:
            _, _, loss = model.strong_pass(batch, {"probs": probs})
        return loss, gradients(tape, loss)

    parts = [("labeled_pass", compile_(labeled_pass), (labeled,))]
    touched = set(parts[0][1](labeled)[1])
    if extra is not None:
        weak_fn = compile_(pseudo_labels)
        probs, grads = weak_fn(extra)
        touched |= set(grads)
        parts.append(("pseudo_labels", weak_fn, (extra,)))
        if opts.uses_sgc:
            backbone_fn = compile_(cam_backbone_pass)
            end_points, decoder_size = backbone_fn(extra["image"])
            parts += [
                ("cam_backbone_pass", backbone_fn, (extra["image"],)),
                ("gradcam_sgc", compile_(gradcam_sgc), (end_points, decoder_size, extra)),
            ]
        strong_fn = compile_(strong_pass)
        touched |= set(strong_fn(extra, probs)[1])
        parts.append(("strong_pass", strong_fn, (extra, probs)))
    # The optimizer updates the variables that receive a gradient in the step.
    updated = [v for v in variables if v.path in touched]
    zeros = [tf.zeros_like(v) for v in updated]

    def optimizer(grads):
        """DeepLab's gradient multipliers and TF1 momentum on the step's variables."""
        model.apply_step_gradients(grads, updated)

    parts.append(("optimizer", compile_(optimizer), (zeros,)))
    return parts


def time_split(
    model, labeled, extra, warmup, steps, full_median, jit_compile=False, print_fn=print
):
    """{part: median seconds, share of the full step's median, CPU median}, with
    'sum_of_parts' (the parts that add up to the step) and, where the SGC is on,
    'gradcam_sgc_with_backbone' (Grad-CAM + SGC and their backbone pass)."""
    out = {}
    for name, fn, args in step_parts(model, labeled, extra, jit_compile):
        times, cpu = timing.time_calls(fn, args, warmup, steps)
        median = statistics.median(times)
        out[name] = {
            "median_s": median,
            "share": median / full_median,
            "cpu_median_s": statistics.median(cpu),
        }
        if name in WITHIN_PSEUDO_LABELS:
            out[name]["within"] = "pseudo_labels"
        indent = "    " if name in WITHIN_PSEUDO_LABELS else "  "
        print_fn(f"{indent}{name:18s} {median:8.3f} s  {100 * median / full_median:5.1f}%")
    total = sum(out[name]["median_s"] for name in SUMMED if name in out)
    out["sum_of_parts"] = {"median_s": total, "share": total / full_median}
    if "gradcam_sgc" in out:
        both = out["gradcam_sgc"]["median_s"] + out["cam_backbone_pass"]["median_s"]
        out["gradcam_sgc_with_backbone"] = {"median_s": both, "share": both / full_median}
    print_fn(f"  {'sum of parts':18s} {total:8.3f} s  {100 * total / full_median:5.1f}%")
    return out
