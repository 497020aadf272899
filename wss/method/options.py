"""The PseudoSeg method's options: one frozen record that gin fills (through
wss.experiment.parse_run_config) and the model reads.

Defaults are the release's (spec sections 3-5): fusion of decoder and SGC, batch-wide RMS
logit norm, gamma 0.5, T 0.5, soft labels, no confidence threshold, unit loss weights.
"""

import dataclasses

from wss.errors import ConfigError
from wss.method import fusion

MODES = ("supervised", "semi", "weakly")


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """How one PseudoSeg step is computed.

    mode: 'supervised' (baseline, L_s only), 'semi' (unlabeled extra set, classifier
      trained on the labeled set) or 'weakly' (extra set with image-level labels).
    source: the pseudo-label rule, a name registered in wss.method.fusion: 'fusion',
      'decoder' only, or 'sgc' only (Table 5).
    gamma / temperature: fusion weight of the decoder softmax and sharpening T
      (high-data setting of section 4.5: gamma 0.3, T 0.7).
    logit_norm / norm_form: the calibration norm ('release': one RMS scale over the batch;
      'paper': the same with a sum instead of a mean; 'pixel': one L2 scale per pixel over
      the classes of both logits).
    soft_labels: soft cross-entropy (True) or hard argmax labels.
    confidence_threshold: pseudo-label pixels below it leave the sum of L_u.
    unlabeled_weight: weight of L_u.
    unlabeled_warmup_steps: ramp the weight of L_u linearly from 0 over this many steps
      (0 = the release: full weight from the first step). Useful when training starts
      without pretrained weights, when early pseudo labels are mostly background.
    attention_dim: key/query channels of the SGC.
    sgc_bn_training_in_weak_branch: the release runs the SGC batch norm in training mode in
      the weak branch although that backbone pass is in inference mode.
    weight_decay: L2 coefficient on DeepLab's regularised kernels (slim semantics).
    """

    mode: str = "semi"
    source: str = "fusion"
    gamma: float = 0.5
    temperature: float = 0.5
    logit_norm: bool = True
    norm_form: str = "release"
    soft_labels: bool = True
    confidence_threshold: float = 0.0
    unlabeled_weight: float = 1.0
    unlabeled_warmup_steps: int = 0
    attention_dim: int = 128
    sgc_bn_training_in_weak_branch: bool = True
    weight_decay: float = 4e-5

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.source not in fusion.RULES:
            raise ConfigError(f"source must be one of {tuple(fusion.RULES)}, got {self.source!r}")
        if self.norm_form not in fusion.NORM_FORMS:
            raise ConfigError(
                f"norm_form must be one of {fusion.NORM_FORMS}, got {self.norm_form!r}"
            )
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")

    @property
    def uses_sgc(self):
        """Whether Grad-CAM, the SGC and L_sa run: never when supervised, else when the
        pseudo-label rule reads the SGC (the release skips them for decoder-only)."""
        return self.mode != "supervised" and fusion.get_rule(self.source).needs_sgc

    @property
    def uses_classifier(self):
        """Whether the step trains the classification head (L_x): weakly mode always, semi
        mode with the SGC; the release's supervised graph has no such head."""
        return self.mode == "weakly" or self.uses_sgc
