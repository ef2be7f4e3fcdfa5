"""Typed schemas for the config groups whose keys are the same for every option.

Each YAML in ``conf/<group>/`` names its schema (``/<group>_<name>_schema``) first in its defaults list, so Hydra rejects unknown keys and
values of the wrong type while composing — before torch or Lightning is imported. Groups whose keys differ
per option (``model``, ``augmentation``) or that carry ``_target_`` (``callbacks``, ``logger``) stay open and
are checked by their builders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DataConfig:
    name: str = MISSING
    root: Optional[str] = MISSING  # null: the dataset ships inside a package (digits)
    download: bool = True
    batch_size: int = 64
    eval_batch_size: Optional[int] = None  # null: same as batch_size
    num_workers: Optional[int] = 0  # null: min(4, the cores this process may use)
    val_split: float = 0.1  # fraction of the training split held out for validation
    num_classes: Optional[int] = None  # null: counted from the class folders (folder datasets)
    channels: int = 3
    image_size: int = 32
    mean: List[float] = field(default_factory=lambda: [0.5])
    std: List[float] = field(default_factory=lambda: [0.5])
    # "tensor": decode once into one uint8 tensor (cached in cache_dir), batch by indexing, augment whole batches
    # on the training device; "loader": torchvision's per-sample transforms in DataLoader workers; "auto": tensor
    # for fixed-size datasets whose augmentations all have batched versions, loader otherwise.
    pipeline: str = "auto"
    cache_dir: str = "${oc.env:CNNLAB_CACHE_DIR,'~/.cache/cnnlab'}"
    # DataLoader of the per-sample path: batches each worker keeps ready (num_workers > 0), workers kept alive
    # between epochs, and page-locked batches (null: only when training on a GPU; on a CPU pinning only costs).
    prefetch_factor: int = 4
    persistent_workers: bool = True
    pin_memory: Optional[bool] = None
    # Image folders on a CUDA device: decode JPEG training batches on the GPU (nvJPEG) instead of in workers.
    gpu_decode: bool = True
    # A fixed subset: the first N images of each class, in the dataset's order (null: all of them).
    train_per_class: Optional[int] = None
    test_per_class: Optional[int] = None
    # A fixed random subset of N images (after the per-class one), drawn with a seed of its own: every run, whatever
    # its seed, sees the same images (LeCun et al.'s 7,291 / 2,007 zip-code digits). null: all of them.
    train_size: Optional[int] = None
    test_size: Optional[int] = None
    # With a test subset (test_per_class, test_size): also test on the whole official test split, reported as
    # test_full/acc beside test/acc (a 160-image test set is too small to rank networks a few points apart).
    full_test: bool = False


@dataclass
class FolderDataConfig(DataConfig):
    """Datasets stored as ``root/<split>/<class>/<image>`` (torchvision's ImageFolder layout)."""

    train_dir: str = "train"
    test_dir: str = "val"
    # Decode every image once into a uint8 file in cache_dir and train from it at the tensor path's speed
    # (cnnlab.data.folder_cache): "memory" always, "off" never (per-sample DataLoader path), "auto" when the
    # decoded images fit in cache_memory_fraction of the available memory.
    cache: str = "auto"
    # The side of the stored squares (shorter side resized to it, centre-cropped); null: image_size / 0.875.
    cache_size: Optional[int] = None
    cache_memory_fraction: float = 0.5
    # Undecodable files: false stops with the file's path; true leaves them out and lists them in the log.
    skip_bad_images: bool = False


@dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0  # L2 penalty
    fused: Optional[bool] = None  # null: torch's fused kernel when the parameters suit it


@dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = 1e-3
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    fused: Optional[bool] = None  # null: torch's fused kernel when the parameters suit it


@dataclass
class RMSpropConfig:
    name: str = "rmsprop"
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    centered: bool = False
    weight_decay: float = 0.0


@dataclass
class SDLMConfig:
    """Stochastic diagonal Levenberg-Marquardt (cnnlab.training.sdlm): step lr / (mu + h_kk) per weight."""

    name: str = "sdlm"
    lr: float = 5e-4
    mu: float = 0.02  # bounds the step where the curvature h_kk is tiny
    samples: int = 500  # training patterns each curvature estimate (before every pass) uses
    weight_decay: float = 0.0


@dataclass
class SchedulerConfig:
    name: str = "none"
    interval: str = "epoch"  # "epoch" or "step": the unit of every count below
    warmup: int = 0  # linear warm-up length, in `interval` units
    warmup_start_factor: float = 0.01


@dataclass
class StepSchedulerConfig(SchedulerConfig):
    step_size: int = 30
    gamma: float = 0.1


@dataclass
class MultiStepSchedulerConfig(SchedulerConfig):
    milestones: List[int] = field(default_factory=lambda: [30, 60])
    gamma: float = 0.1
    # null: the rate is multiplied by gamma at each milestone; a list (one per milestone): the rate is the initial
    # one times factors[i] from milestones[i] on (LeNet-5's 20-pass schedule: not a geometric sequence)
    factors: Optional[List[float]] = None


@dataclass
class CosineSchedulerConfig(SchedulerConfig):
    t_max: Optional[int] = None  # null: the whole run (trainer.max_epochs, or max_steps for interval=step)
    eta_min: float = 0.0


@dataclass
class OneCycleSchedulerConfig(SchedulerConfig):
    max_lr: Optional[float] = None  # null: optimizer.lr
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4


@dataclass
class PlateauSchedulerConfig(SchedulerConfig):
    monitor: str = "val/loss"
    mode: str = "min"
    factor: float = 0.1
    patience: int = 5
    min_lr: float = 0.0


@dataclass
class LossConfig:
    name: str = "cross_entropy"  # or "mse": squared error against one-hot targets
    label_smoothing: float = 0.0
    l1: float = 0.0  # coefficient of the L1 penalty on the weights, added to the loss
    # mse only: [off, on] compares the outputs themselves to these values (LeCun's 1989 networks: [-1, 1] through
    # scaled-tanh output units); null compares softmax probabilities to one-hot vectors.
    targets: Optional[List[float]] = None
    # map only: the rubbish class's fixed penalty (LeCun et al. 1998's j), against which every class's penalty
    # competes; see cnnlab.training.losses.
    rubbish_penalty: float = 0.1


@dataclass
class TrainerConfig:
    """The Lightning ``Trainer`` arguments cnnlab exposes; null means Lightning's default."""

    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: Any = "32-true"
    max_epochs: int = 10
    max_steps: int = -1
    gradient_clip_val: Optional[float] = None
    gradient_clip_algorithm: str = "norm"
    accumulate_grad_batches: int = 1
    deterministic: Any = False
    benchmark: Optional[bool] = None
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    num_sanity_val_steps: Optional[int] = None
    enable_model_summary: bool = True
    profiler: Optional[str] = None  # simple, advanced, pytorch or xla: Lightning's profiler of that name


@dataclass
class AdversarialTrainingConfig:
    """Adversarial training (Goodfellow et al. 2015; Madry et al. 2018): ``fraction`` of each training batch replaced
    by its adversarial version under ``attack`` (cnnlab.attacks), in pixel space [0, 1]."""

    attack: Optional[str] = None  # null: standard training; fgsm or pgd
    epsilon: float = 0.1  # the L∞ radius, in pixel units (0.1: about 25 grey levels)
    fraction: float = 1.0  # of each batch; Goodfellow et al. mix clean and adversarial halves (0.5)
    steps: int = 7  # pgd only
    step_size: Optional[float] = None  # pgd only; null: 2.5 epsilon / steps
    random_start: bool = True  # pgd only: start from a random point of the epsilon-ball


@dataclass
class TrainingConfig:
    """How a run protects itself: when it counts as diverged, and how often it saves a checkpoint to resume from."""

    # Diverged once the training loss exceeds this many times its reference (the first step's loss, or the
    # chance-level loss if larger), or becomes NaN.
    divergence_factor: float = 100.0
    # checkpoints/last.ckpt is written at every epoch's end, and within long epochs every N steps and/or minutes.
    checkpoint_every_n_steps: Optional[int] = None
    checkpoint_every_n_minutes: Optional[float] = 5.0
    # attack null: standard training; {attack: fgsm|pgd, epsilon: ..., fraction: ...}: adversarial training
    adversarial: AdversarialTrainingConfig = field(default_factory=AdversarialTrainingConfig)


SCHEMAS = {
    "data": {"base": DataConfig, "folder": FolderDataConfig},
    "optimizer": {"sgd": SGDConfig, "adam": AdamConfig, "rmsprop": RMSpropConfig, "sdlm": SDLMConfig},
    "scheduler": {
        "none": SchedulerConfig,
        "step": StepSchedulerConfig,
        "multistep": MultiStepSchedulerConfig,
        "cosine": CosineSchedulerConfig,
        "onecycle": OneCycleSchedulerConfig,
        "plateau": PlateauSchedulerConfig,
    },
    "loss": {"base": LossConfig},
    "trainer": {"base": TrainerConfig},
    "training": {"base": TrainingConfig},
}


@dataclass
class SelectionConfig:
    """What "best" means, everywhere: the checkpoint a run keeps and tests, the trial a sweep's summary marks best,
    and what ``sweep=optuna`` optimises. A validation metric, logged every epoch; the test split is reported only."""

    metric: str = "val/loss"  # or val/acc
    mode: str = "min"  # min or max: which end of the metric is best


# The root config's `selection` node (conf/config.yaml: `- selection_base_schema@selection`).
SCHEMAS["selection"] = {"base": SelectionConfig}


def schema_name(group: str, name: str) -> str:
    return f"{group}_{name}_schema"


def register_schemas() -> None:
    """Store every schema as the root-level config ``<group>_<name>_schema`` for the YAMLs' defaults to extend.

    Root-level rather than in a group of their own, so they are not offered as options in ``--help``.
    """
    store = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(name=schema_name(group, name), node=node)
