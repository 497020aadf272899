"""One experiment's settings, filled by gin (data, model, method, schedule), and their parsing.

Every paper experiment is a gin file that binds these (see gin/); the training driver,
evaluation and export read the same bindings, so a model is always rebuilt exactly as it
was trained. Batch sizes are global (split across replicas by tf.distribute).

Config flow: a program's main calls parse_run_config(gin files, bindings) once (the tools
that restore a run go through wss.restore.parse_gin, which adds a hint for a missing
file) and passes the RunConfig it returns, or its parts, down; library functions take
values and do not read gin. parse_run_config is the only function that reads gin's
bindings, and it leaves gin cleared (tests/test_config_reads.py checks both).
"""

import dataclasses
import difflib
import logging
import os
import re
from typing import Optional, Tuple, Union

import gin
import tensorflow as tf

from deeplab_ext.backbone import check_backbone_requirements, registered_backbones
from wss import files
from wss.data import descriptors
from wss.data.augment import AugmentConfig, StrongConfig
from wss.errors import ConfigError
from wss.method.options import MethodOptions
from wss.schedule import OPTIMIZERS

# `include 'base.gin'` in an experiment file finds the project's gin folder from any cwd.
gin.add_config_file_search_path(os.path.join(files.PROJECT_ROOT, "gin"))


class _GinIncludeProbeFilter(logging.Filter):
    """Drops the lines (an info, then a 'Path not found' error) gin logs for every
    `include 'name.gin'` while it probes the Python path, before it finds the file on
    the search path above."""

    def filter(self, record):
        return not (
            record.pathname.endswith("resource_reader.py")
            and record.getMessage().startswith(("Path not found", "system_path_file_exists"))
        )


logging.getLogger().addFilter(_GinIncludeProbeFilter())
# gin reads its files (--gin_file, a run's operative_config.gin, includes) through
# tf.io.gfile too, so they may live in a bucket (gin's own reader is open()).
gin.config.register_file_reader(tf.io.gfile.GFile, tf.io.gfile.exists)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """DeepLabv3+ options (see deeplab_ext.deeplab.DeepLabV3Plus); defaults: the paper's."""

    backbone: str = "xception_65"
    output_stride: int = 16
    atrous_rates: Tuple[int, ...] = (6, 12, 18)
    multi_grid: Optional[Tuple[int, ...]] = None
    decoder_output_stride: Optional[int] = 4
    aspp_depth: int = 256
    decoder_depth: int = 256
    fine_tune_batch_norm: bool = True
    width_multiplier: float = 1.0
    middle_flow_units: Optional[int] = None
    batch_norm_decay: Optional[float] = None  # None: DeepLab's (0.9997; ResNet 0.95)
    sync_batch_norm: bool = False  # batch statistics over all replicas' global batch
    backbone_options: Optional[dict] = None  # backbone-specific factory keywords

    def __post_init__(self):
        if self.backbone not in registered_backbones():
            raise ConfigError(
                f"ModelSettings.backbone = {self.backbone!r} is not a registered backbone; "
                f"use one of {', '.join(registered_backbones())}"
            )
        # A backbone's optional package (keras-hub) is checked here, at the program's edge,
        # so a run stops before it creates its folder or reads data.
        check_backbone_requirements(self.backbone)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What to train on and for how long.

    dataset_name: a wss.data.descriptors name ('pascal_voc_seg', 'coco', 'demo').
    labeled_split / labeled_id_list: the pixel-labeled set D_l (a split, optionally
      narrowed by an id list file such as datasets/splits/pascal_voc_seg/8_clean.txt). A
      tuple reads a union: plain names are splits of the dataset folder (the id list
      applies to those), 'DIR:split' a split in another folder (e.g. a teacher's pseudo
      labels for the self-training baseline, read whole).
    extra_split / extra_id_list / exclude_labeled_from_extra: the extra set D_u (the
      release feeds all of train_aug, labeled ids included).
    crop_size: side of the square training crop (None = the dataset's train_crop_size).
    eval_split / eval_crop_size: evaluation (eval_crop_size None = the dataset's).
      parse_run_config resolves both crops, the id lists' and class weights' paths
      (resolve_derived_settings), so a parsed Experiment holds the values to use.
    labeled_batch_size / extra_batch_size: GLOBAL batch sizes (paper: 64 + 64).
    num_steps, base_learning_rate, learning_power, momentum, slow_start_*: DeepLab's poly
      schedule and SGD; scale_learning_rate_with_batch multiplies the base rate by
      labeled_batch_size / 64 (linear rule) for runs smaller than the paper's.
    optimizer: 'momentum' (DeepLab's, the paper's) or 'adamw' (Adam with decoupled weight
      decay `adamw_weight_decay` on kernels only, as SegFormer trains its MiT encoders; the
      poly schedule, the biases' x2 and MethodOptions.weight_decay's L2 stay as they are).
    init_checkpoint: a TF1 DeepLab checkpoint (ImageNet or trained; logits are left out)
      or a Keras .weights.h5 of this model; for the demo, 'demo_backbone' is a backbone
      pretrained on demo image-level labels (wss.pretrain, built on first use).
    class_weights: a class_weights.json (datasets/build_folder_data.py --class_weights, or
      wss.data.class_stats) weighting L_s and L_sa per class; None = unweighted (paper).
    dataset_name may also be the path of a descriptor.json written by the folder builder,
      or 'tfds:<builder>' (wss.data.tfds_registry), read from TensorFlow Datasets in
      tfds_data_dir (a folder or gs:// URL; None: TFDS's default; --dataset_dir wins);
      its splits are TFDS split strings ('train[:10%]').
    """

    dataset_name: str = "pascal_voc_seg"
    labeled_split: Union[str, Tuple[str, ...]] = "train_aug"
    labeled_id_list: Optional[str] = None
    extra_split: str = "train_aug"
    extra_id_list: Optional[str] = None
    exclude_labeled_from_extra: bool = False
    crop_size: Optional[int] = None
    eval_split: str = "val"
    eval_crop_size: Optional[int] = None
    labeled_batch_size: int = 64
    extra_batch_size: int = 64
    num_steps: int = 30000
    base_learning_rate: float = 0.007
    learning_power: float = 0.9
    end_learning_rate: float = 0.0
    momentum: float = 0.9
    optimizer: str = "momentum"
    adamw_weight_decay: float = 0.01
    slow_start_steps: int = 0
    slow_start_learning_rate: float = 1e-4
    scale_learning_rate_with_batch: bool = False
    init_checkpoint: Optional[str] = None
    class_weights: Optional[str] = None
    seed: Optional[int] = 0
    tfds_data_dir: Optional[str] = None

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"Experiment.optimizer = {self.optimizer!r} is not an optimizer of this "
                f"project; use one of {', '.join(repr(name) for name in OPTIMIZERS)}"
            )

    @property
    def descriptor(self):
        return descriptors.get_descriptor(self.dataset_name)

    @property
    def learning_rate(self):
        if self.scale_learning_rate_with_batch:
            return self.base_learning_rate * self.labeled_batch_size / 64.0
        return self.base_learning_rate


@dataclasses.dataclass(frozen=True)
class TrainLoop:
    """How the training loop runs: intervals (flags override them) and compilation.

    log_every / checkpoint_every: steps between progress lines (and TensorBoard scalars)
      and between checkpoints. With steps_per_execution N > 1 they take effect at the end
      of the call that reaches them, so multiples of N keep them exact.
    steps_per_execution: training steps per tf.function call. Every call costs a host round
      trip (the logged values are fetched, the NaN/Inf check runs) that leaves an
      accelerator idle; the logged values are the means over the call's steps. 1 on CPUs
      (a step takes seconds); 10-50 on GPUs; 100 or more on TPUs (as TF Model Garden and
      Keras's `steps_per_execution` do). A non-finite loss is seen at the end of its call.
    jit_compile: compile each replica's training step with XLA (TPUStrategy always does;
      on CPUs compiling is slow and the step is not faster, so off by default).
    """

    log_every: int = 10
    checkpoint_every: int = 1000
    steps_per_execution: int = 1
    jit_compile: bool = False

    def __post_init__(self):
        for name in ("log_every", "checkpoint_every", "steps_per_execution"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainLoop.{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """How the demo backbone is pretrained (Adam, left-right flips, sigmoid cross-entropy;
    wss.pretraining).

    num_images: demo images generated for it (apart from train and val).
    steps, batch_size, learning_rate: the schedule (constant learning rate).
    seed: data and initialisation seed.
    """

    num_images: int = 4000
    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        for name in ("num_images", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"PretrainConfig.{name} = {getattr(self, name)}: must be at least 1"
                )
        if self.learning_rate <= 0:
            raise ConfigError(f"PretrainConfig.learning_rate = {self.learning_rate}: must be > 0")


# How gin reaches the config classes: they are plain dataclasses, and gin binds
# subclasses registered under their names, which only parse_run_config instantiates, so
# building one anywhere else gives its documented defaults, never gin's bindings.
_GIN_BOUND = {
    cls: gin.external_configurable(cls, cls.__name__)
    for cls in (
        Experiment,
        ModelSettings,
        MethodOptions,
        TrainLoop,
        PretrainConfig,
        AugmentConfig,
        StrongConfig,
    )
}


_UNKNOWN_PARAMETER = re.compile(r"Configurable '(\w+)' doesn't have a parameter named '(\w+)'")
_UNKNOWN_CONFIGURABLE = re.compile(r"No configurable matching '([\w.]+)'")


def binding_hint(message):
    """' Did you mean ...?' for gin's message about an unknown configurable or parameter
    of this project's config classes (the closest names), else ''."""
    names = {cls.__name__: cls for cls in _GIN_BOUND}
    unknown = _UNKNOWN_PARAMETER.search(message)
    if unknown and unknown.group(1) in names:
        cls, name = names[unknown.group(1)], unknown.group(2)
        fields = [field.name for field in dataclasses.fields(cls)]
        close = difflib.get_close_matches(name, fields, n=2, cutoff=0.6)
        if close:
            return " Did you mean " + " or ".join(f"'{cls.__name__}.{c}'" for c in close) + "?"
        return f" {cls.__name__}'s parameters: {', '.join(fields)}."
    unknown = _UNKNOWN_CONFIGURABLE.search(message)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), sorted(names), n=1, cutoff=0.6)
        if close:
            return f" Did you mean '{close[0]}'?"
        return f" The configurables are {', '.join(sorted(names))}."
    return ""


def _from_gin(cls):
    """A plain `cls` holding gin's bindings (called by parse_run_config only)."""
    bound = _GIN_BOUND[cls]()
    return cls(**{field.name: getattr(bound, field.name) for field in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one program run is configured with: built once from gin by
    parse_run_config in a program's main and passed down as a value (library functions
    take it, or its parts, and never read gin themselves)."""

    experiment: Experiment
    model: ModelSettings
    method: MethodOptions
    loop: TrainLoop
    augment: AugmentConfig
    strong: StrongConfig
    pretrain: PretrainConfig
    gin_config: str = ""  # the parsed bindings as gin text (a run's operative_config.gin)


def resolve_derived_settings(exp):
    """`exp` with every setting that depends on the dataset or the working directory
    resolved: crop_size / eval_crop_size None -> the dataset's training / eval crop; the
    labeled and extra id lists and the class weights file -> a path that exists from any
    working directory (files.resolve_path: as given, else under the project root)."""
    desc = exp.descriptor
    return dataclasses.replace(
        exp,
        crop_size=desc.train_crop_size if exp.crop_size is None else exp.crop_size,
        eval_crop_size=desc.eval_crop_size if exp.eval_crop_size is None else exp.eval_crop_size,
        labeled_id_list=files.resolve_path(exp.labeled_id_list),
        extra_id_list=files.resolve_path(exp.extra_id_list),
        class_weights=files.resolve_path(exp.class_weights),
    )


def parse_run_config(gin_files=(), gin_params=(), skip_unknown=False):
    """Parses gin files and bindings into the RunConfig, the one place a program turns
    gin into config values.

    gin is cleared before and after, so no other code can read these bindings and
    repeated calls in one process do not mix configs. The Experiment's derived settings
    are resolved here, once (resolve_derived_settings), so the rest of the code reads
    values and never falls back itself.
    A binding of something no program reads is an error (unless `skip_unknown`, for an
    operative config written by another program).
    """
    gin.clear_config()
    try:
        try:
            gin.parse_config_files_and_bindings(
                [f for f in (gin_files or []) if f],
                list(gin_params or []),
                skip_unknown=skip_unknown,
            )
        except ValueError as e:
            hint = binding_hint(str(e))
            if not hint:
                raise
            raise ConfigError(f"gin config: {e}.{hint}") from e
        return RunConfig(
            experiment=resolve_derived_settings(_from_gin(Experiment)),
            model=_from_gin(ModelSettings),
            method=_from_gin(MethodOptions),
            loop=_from_gin(TrainLoop),
            augment=_from_gin(AugmentConfig),
            strong=_from_gin(StrongConfig),
            pretrain=_from_gin(PretrainConfig),
            gin_config=gin.config_str(),
        )
    finally:
        gin.clear_config()
