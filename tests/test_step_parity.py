"""Training-step parity with the official TF1 graph: losses, gradients, batch-norm updates.

For each `*.npz` under `$PSEUDOSEG_PARITY_DIR/step` (default tests/reference/parity_step,
shipped; format in the spec's parity_step.md), the model is built from the file's settings,
the parity checkpoint is loaded strictly, the stored batches go through
`PseudoSegModel.compute_losses` (the passes and losses `train_step` differentiates) under
one persistent tape, and every stored key is compared: max |ours - ref| <= tol/<key> x
max |ref|. That covers every loss term; the gradient of the total at the sampled indices
and its norm for each variable; the norm of each loss term's gradient per variable (a
term reaching a variable the release's does not, or missing one, fails: the reference is
exactly 0 there); the moving statistics after the step and their change; and how many
updates each statistic gets. The variables in `grad_zero_vars` (gradient 0 in exact
arithmetic, round-off in the files) are held to |grad| <= 1e-6 x the largest gradient
norm of the same loss instead. An unknown key, flag or file kind fails, and so does a
variable on one side only, unless it is ours and the step leaves it untouched.

Every setting comes from the file (mode, crop and batch by the inputs' shapes, backbone,
output stride, ASPP rates, decoder stride, number of classes, checkpoint seed, release
flags), so references made with other settings pass through the same code. Files made
with the release's `--fine_tune_batch_norm=False` (`flag/fine_tune_batch_norm` False;
absent means True) build the model with `fine_tune_batch_norm=False`: every batch norm
but the SGC's `pixel_normalization` then uses its moving statistics and is not updated.
Every key of every file must be within its stored tolerance, on every CPU: the tolerances
sample the release's runs on several kernel families (spec's parity_step.md, Tolerance).
"""

import glob
import os
import zlib

import numpy as np
import pytest
import tensorflow as tf

from deeplab_ext.checkpoint import load_tf1_checkpoint
from deeplab_ext.layers import record_batch_norm_updates
from tests.conftest import REFERENCE_DIR
from wss.method.options import MethodOptions
from wss.model import LOSS_TERMS, PseudoSegModel

STEP_DIR = (
    os.path.join(os.environ["PSEUDOSEG_PARITY_DIR"], "step")
    if os.environ.get("PSEUDOSEG_PARITY_DIR")
    else str(REFERENCE_DIR / "parity_step")
)
FILES = sorted(glob.glob(os.path.join(STEP_DIR, "**", "*.npz"), recursive=True))
MODES = ("semi", "weakly", "supervised")

SETTINGS = {
    "mode",
    "crop",
    "batch",
    "model_variant",
    "output_stride",
    "atrous_rates",
    "decoder_output_stride",
    "checkpoint_seed",
    "input_seed",
    "var_names",
    "bn_names",
    "grad_zero_vars",
}
INPUTS = {
    "image",
    "label",
    "valid",
    "image_labels",
    "weak_image",
    "strong_image",
    "extra_label",
    "extra_valid",
    "extra_image_labels",
    "cutout_box",
}
# Per-variable key kinds: outputs compared, and the sampled indices / values before.
OUTPUT_KINDS = ("grad", "grad_norm", "bn_delta", "bn_after")
INDEX_KINDS = ("grad_idx", "bn_idx", "bn_before")
ZERO_GRAD_BOUND = 1e-6  # x the largest gradient norm of the same loss
# The release's soft pseudo-label sources; this project implements 'avg' as 'fusion'.
PSEUDO_SOURCES = {"avg": "fusion"}
DEFAULT_ATT_STRIDES = ("15", "16")  # the hypercolumn the SGC reads (exit flow blocks 1, 2)


def _scalar(ref, key):
    return ref[key].item() if ref[key].shape == () else ref[key]


def release_flags(ref):
    """{flag: value} of the file's `flag/<release flag>` keys."""
    return {k[len("flag/") :]: _scalar(ref, k) for k in ref if k.startswith("flag/")}


def options_from_flags(ref):
    """MethodOptions for the file's mode and release flags; an unknown flag fails."""
    mode = str(ref["mode"])
    assert mode in MODES, f"unknown step file kind (mode) {mode!r}"
    flags = release_flags(ref)
    known = {
        "weakly",
        "weight_decay",
        "fine_tune_batch_norm",
        "soft_pseudo_label",
        "pseudo_label_threshold",
        "unlabeled_weight",
        "use_attention",
        "att_v2",
        "pseudo_src",
        "temperature",
        "logit_norm",
        "cls_with_cls",
        "att_strides",
        "attention_dim",
    }
    unknown = sorted(set(flags) - known)
    assert not unknown, f"release flags this test does not know: {unknown}"
    assert bool(flags["weakly"]) == (mode == "weakly"), "flag/weakly contradicts the mode"
    kwargs = dict(mode=mode, weight_decay=float(flags["weight_decay"]))
    if mode == "supervised":
        extra_flags = set(flags) - {"weakly", "weight_decay", "fine_tune_batch_norm"}
        assert not extra_flags, f"supervised file with PseudoSeg flags {sorted(extra_flags)}"
        return MethodOptions(**kwargs)
    # Release variants this project does not implement fail rather than pass silently.
    assert flags["use_attention"] and flags["att_v2"], "only the release's att_v2 SGC exists"
    assert flags["cls_with_cls"], "only the cls_with_cls classifier exists"
    assert str(flags["pseudo_src"]) in PSEUDO_SOURCES, f"pseudo_src {flags['pseudo_src']!r}"
    assert tuple(str(s) for s in flags["att_strides"]) == DEFAULT_ATT_STRIDES
    kwargs.update(
        source=PSEUDO_SOURCES[str(flags["pseudo_src"])],
        soft_labels=bool(flags["soft_pseudo_label"]),
        confidence_threshold=float(flags["pseudo_label_threshold"]),
        unlabeled_weight=float(flags["unlabeled_weight"]),
        temperature=float(flags["temperature"]),
        logit_norm=bool(flags["logit_norm"]),
        attention_dim=int(flags["attention_dim"]),
    )
    return MethodOptions(**kwargs)


def model_for(ref):
    """The model of the file's settings (the release's default for an absent flag)."""
    return PseudoSegModel(
        deeplab_config=dict(
            # The release's image labels have a column per class but the background.
            num_classes=ref["image_labels"].shape[-1] + 1,
            backbone=str(ref["model_variant"]),
            output_stride=int(ref["output_stride"]),
            atrous_rates=tuple(int(r) for r in ref["atrous_rates"]),
            decoder_output_stride=int(ref["decoder_output_stride"]),
            fine_tune_batch_norm=bool(release_flags(ref).get("fine_tune_batch_norm", True)),
        ),
        options=options_from_flags(ref),
    )


def batches(ref, mode):
    """The two iterators' batches as the train step takes them (as the release feeds)."""
    batch, crop = int(ref["batch"]), int(ref["crop"])
    images = ("image",) if mode == "supervised" else ("image", "weak_image", "strong_image")
    for key in images:  # the inputs' shapes carry the file's crop and batch to the model
        assert ref[key].shape == (batch, crop, crop, 3), f"{key}: shape {ref[key].shape}"
    labeled = {
        "image": tf.constant(ref["image"]),
        "label": tf.constant(ref["label"]),
        "valid": tf.constant(ref["valid"]),
        "image_labels": tf.constant(ref["image_labels"]),
    }
    if mode == "supervised":
        return labeled
    extra = {
        "image": tf.constant(ref["weak_image"]),
        "strong": tf.constant(ref["strong_image"]),
        "label": tf.constant(ref["extra_label"]),
        "valid": tf.constant(ref["extra_valid"]),
        "image_labels": tf.constant(ref["extra_image_labels"]),
    }
    return labeled, extra


def sampled_indices(name, size):
    """The spec's sampling of up to 32 flat indices per variable (checks the file's)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    return np.sort(rng.choice(size, min(32, size), replace=False))


def run_step(ref, prefix):
    """Our step on the file's inputs: ({key: value}, untouched-check failures)."""
    mode = str(ref["mode"])
    model = model_for(ref)
    model.build()
    report = load_tf1_checkpoint(model, prefix)  # strict: nothing unused, nothing missing
    assert not report.missing and not report.unused
    names = model.tf1_variable_map()
    by_id = {id(v): n for n, v in names.items()}
    trainable = {by_id[id(v)]: v for v in model.trainable_variables}
    stats = {n: v for n, v in names.items() if n not in trainable}
    before = {n: v.numpy().astype(np.float64) for n, v in stats.items()}

    variables = list(trainable.values())
    with record_batch_norm_updates() as counts:
        with tf.GradientTape(persistent=True) as tape:
            losses, _ = model.compute_losses(batches(ref, mode), dropout=False)
    grads = {}
    for term in ("total",) + LOSS_TERMS:
        grads[term] = dict(zip(trainable, tape.gradient(losses[term], variables)))
    del tape

    out = {f"loss/{t}": float(losses[t]) for t in ("total",) + LOSS_TERMS}
    norms = {
        term: {n: 0.0 if g is None else float(tf.norm(g)) for n, g in gs.items()}
        for term, gs in grads.items()
    }
    for n, var in trainable.items():
        g = grads["total"][n]
        g = np.zeros(var.shape, np.float32) if g is None else g.numpy()
        out[f"grad_full/{n}"] = g.reshape(-1)
        out[f"grad_norm/{n}"] = norms["total"][n]
        for term in LOSS_TERMS:
            out[f"grad_norm/{term}/{n}"] = norms[term][n]
    for n, var in stats.items():
        out[f"bn_after_full/{n}"] = var.numpy().astype(np.float64).reshape(-1)
        out[f"bn_before_full/{n}"] = before[n].reshape(-1)
        out[f"bn_delta_full/{n}"] = out[f"bn_after_full/{n}"] - before[n].reshape(-1)
        out[f"bn_update_count/{n}"] = counts.get(id(var), 0)
    return out, norms, set(trainable), set(stats)


def compare(ref, ours, norms, our_vars, our_stats):
    """Failures and {key family: (worst rel error, its tol, key)} of one file."""
    mode = str(ref["mode"])
    var_names = [str(n) for n in ref["var_names"]]
    bn_names = [str(n) for n in ref["bn_names"]]
    zero_vars = {str(n) for n in ref["grad_zero_vars"]}
    terms = ("semantic", "regularization") if mode == "supervised" else LOSS_TERMS
    failures, worst = [], {}

    # Every key of the file must be one this test knows (settings, inputs, outputs).
    expected = set(SETTINGS | INPUTS) - (
        {"weak_image", "strong_image", "extra_label", "extra_valid", "extra_image_labels"}
        | {"cutout_box"}
        if mode == "supervised"
        else set()
    )
    expected |= {k for k in ref if k.startswith("flag/")}
    outputs = [f"loss/{t}" for t in ("total",) + terms] + ["bn_update_count"]
    for n in var_names:
        outputs += [f"grad/{n}", f"grad_norm/{n}"] + [f"grad_norm/{t}/{n}" for t in terms]
        expected.add(f"grad_idx/{n}")
    for n in bn_names:
        outputs += [f"bn_delta/{n}", f"bn_after/{n}"]
        expected |= {f"bn_idx/{n}", f"bn_before/{n}"}
    expected |= set(outputs) | {f"tol/{k}" for k in outputs}
    unknown = sorted(set(ref) - expected)
    missing = sorted(expected - set(ref))
    assert not unknown, f"keys this test does not know: {unknown[:20]}"
    assert not missing, f"keys the file lacks: {missing[:20]}"

    # Variables on one side only: the release's must all exist here; ours must be untouched.
    assert set(var_names) <= our_vars, f"missing here: {sorted(set(var_names) - our_vars)}"
    assert set(bn_names) <= our_stats, f"missing here: {sorted(set(bn_names) - our_stats)}"
    for n in sorted(our_vars - set(var_names)):
        touched = {t: norms[t][n] for t in ("total",) + LOSS_TERMS if norms[t][n] != 0.0}
        if touched:
            failures.append(f"{n}: not in the release's graph, but trained by {touched}")
    for n in sorted(our_stats - set(bn_names)):
        if ours[f"bn_update_count/{n}"] or np.any(ours[f"bn_delta_full/{n}"] != 0):
            failures.append(f"{n}: not in the release's graph, but updated by the step")

    largest = {
        t: max(v for n, v in norms[t].items() if n not in zero_vars) for t in ("total",) + terms
    }

    def check(key, got, family):
        want = np.asarray(ref[key], np.float64)
        got = np.asarray(got, np.float64)
        tol = float(ref[f"tol/{key}"])
        assert got.shape == want.shape, f"{key}: shape {got.shape} vs {want.shape}"
        err = np.abs(got - want).max() if got.size else 0.0
        scale = np.abs(want).max() if want.size else 0.0
        rel = err / scale if scale > 0 else (0.0 if err == 0 else np.inf)
        if key.startswith("grad_norm/") and (np.all(got == 0) != np.all(want == 0)):
            # Which variables a loss trains is exact: 0 in the release's graph means the
            # loss does not reach the variable there.
            failures.append(f"{key}: ours {got} vs ref {want} (reach differs)")
        elif rel > tol:
            failures.append(
                f"{key}: max|ours-ref| {err:.3g} > tol {tol:.3g} x max|ref| {scale:.3g} "
                f"({rel / tol:.2g} x tol)"
            )
        if family not in worst or rel / tol > worst[family][0] / worst[family][1]:
            worst[family] = (rel, tol, key)

    def check_zero(key, got, term):
        """A `grad_zero_vars` entry: exactly 0 where the release's is, else round-off."""
        got = np.abs(np.asarray(got, np.float64)).max()
        want = np.abs(np.asarray(ref[key], np.float64)).max()
        bound = 0.0 if want == 0 else ZERO_GRAD_BOUND * largest[term]
        family = "grad_zero_vars (|x| / largest norm)"
        rel = got / largest[term]
        if got > bound:
            failures.append(f"{key}: {got:.3g} > bound {bound:.3g} (grad_zero_vars)")
        if family not in worst or rel > worst[family][0]:
            worst[family] = (rel, ZERO_GRAD_BOUND, key)

    for t in ("total",) + terms:
        check(f"loss/{t}", ours[f"loss/{t}"], "loss/*")
    for n in var_names:
        idx = np.asarray(ref[f"grad_idx/{n}"])
        size = ours[f"grad_full/{n}"].size
        assert np.array_equal(idx, sampled_indices(n, size)), f"grad_idx/{n}: not the spec's"
        part = part_of(n)
        if n in zero_vars:
            check_zero(f"grad/{n}", ours[f"grad_full/{n}"][idx], "total")
            check_zero(f"grad_norm/{n}", ours[f"grad_norm/{n}"], "total")
            for t in terms:
                check_zero(f"grad_norm/{t}/{n}", ours[f"grad_norm/{t}/{n}"], t)
            continue
        check(f"grad/{n}", ours[f"grad_full/{n}"][idx], f"grad/* {part}")
        check(f"grad_norm/{n}", ours[f"grad_norm/{n}"], f"grad_norm/* {part}")
        for t in terms:
            check(f"grad_norm/{t}/{n}", ours[f"grad_norm/{t}/{n}"], f"grad_norm/{t}/* {part}")
    counts = [ours[f"bn_update_count/{n}"] for n in bn_names]
    check("bn_update_count", counts, "bn_update_count")
    for n in bn_names:
        idx = np.asarray(ref[f"bn_idx/{n}"])
        size = ours[f"bn_after_full/{n}"].size
        assert np.array_equal(idx, sampled_indices(n, size)), f"bn_idx/{n}: not the spec's"
        before = ours[f"bn_before_full/{n}"][idx].astype(np.float32)
        np.testing.assert_array_equal(before, ref[f"bn_before/{n}"], err_msg=f"bn_before/{n}")
        check(f"bn_delta/{n}", ours[f"bn_delta_full/{n}"][idx], f"bn_delta/* {part_of(n)}")
        check(f"bn_after/{n}", ours[f"bn_after_full/{n}"][idx], "bn_after/*")
    return failures, worst


def part_of(name):
    """The network part of a TF1 variable name, for the printed summary."""
    if name.startswith(("hyper_column/", "pixel_normalization/")):
        return "SGC"
    if name.startswith("logits/"):
        return "logits"
    if "/logits/" in name:
        return "classifier"
    if name.startswith("decoder/"):
        return "decoder"
    if name.startswith(("aspp", "image_pooling", "concat_projection")):
        return "ASPP"
    return "backbone"


def test_step_parity_directory_has_reference_files():
    assert FILES, f"no *.npz step references in {STEP_DIR} (set PSEUDOSEG_PARITY_DIR)"


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(f, STEP_DIR) for f in FILES])
def test_step_parity_with_official_graph(path, parity_checkpoints):
    ref = dict(np.load(path))
    prefix = parity_checkpoints(str(ref["model_variant"]), int(ref["checkpoint_seed"]))
    ours, norms, our_vars, our_stats = run_step(ref, prefix)
    failures, worst = compare(ref, ours, norms, our_vars, our_stats)
    print(f"\n{os.path.basename(path)}: worst relative error per key family (and its tol)")
    for family in sorted(worst):
        rel, tol, key = worst[family]
        print(f"  {family:44s} {rel:9.2e}  (tol {tol:.1e})  {key}")
    name = os.path.basename(path)
    assert not failures, f"{name}: {len(failures)} keys fail:\n" + "\n".join(failures[:60])
