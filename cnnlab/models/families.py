"""The model families as data: where each builder lives and which options it takes, with their valid values.

This is the one source of truth for a model's options. The config check reads it before torch is imported (so
``model=resnet model.depth=17`` fails in a fraction of a second), and ``create_model`` checks the same table
before it calls a builder; the builders read their depth and variant tables from here too. Imports no torch.

A new architecture adds one row to ``FAMILIES``: its builder's ``module:function`` and a ``Rule`` for each keyword
option of the builder (the ones after ``in_channels``, ``num_classes`` and ``image_size``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable, Mapping

from cnnlab.errors import ConfigError
from cnnlab.ranges import Flag, Names, Number, OneOf, Rule, Satisfies, Text, Whole

# --- the tables the builders read ------------------------------------------------------------------------------

# mlp: cnnlab.models.activations builds these (the lectures' leaky ReLU has slope 0.1).
ACTIVATION_NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu")
# torchvision.models.resnet<depth>
RESNET_DEPTHS = (18, 34, 50, 101, 152)
# Simonyan & Zisserman, Table 1: depth -> configuration; a variant other than "standard" is one configuration
# of one depth.
VGG_DEPTHS = {11: "A", 13: "B", 16: "D", 19: "E"}
VGG_VARIANTS: dict[str, tuple[int, str] | None] = {"standard": None, "lrn": (11, "A-LRN"), "conv1x1": (16, "C")}
LECUN1989_VARIANTS = ("net1", "net2", "net3", "net4", "net5", "zipcode")
LECUN1989_ACTIVATIONS = ("scaled_tanh", "tanh", "relu")
LECUN1989_OUTPUTS = ("linear", "scaled_tanh", "tanh")
LECUN1989_INITS = ("torch", "lecun", "lecun_sqrt", "karpathy")
LECUN1989_INPUT_SIZE = 16
LENET5_VARIANTS = ("modern", "classic")
LENET5_OUTPUTS = ("rbf", "linear")


def cifar_blocks_per_stack(depth: int) -> int:
    """He et al.'s CIFAR networks have 6n+2 layers: n basic blocks in each of three stacks."""
    return (depth - 2) // 6


def _is_cifar_depth(depth: Any) -> bool:
    return isinstance(depth, int) and not isinstance(depth, bool) and depth >= 8 and (depth - 2) % 6 == 0


def inception_grid_size(image_size: int, small_stem: bool) -> int:
    """The side of the 17x17 grid (at 299 px) that Inception-v3's auxiliary classifier reads."""
    size = image_size - 2 if small_stem else (image_size - 3) // 2 + 1  # Conv2d_1a
    size -= 2  # Conv2d_2a
    if not small_stem:
        size = (size - 3) // 2 + 1  # maxpool1
    size -= 2  # Conv2d_4a
    if not small_stem:
        size = (size - 3) // 2 + 1  # maxpool2
    return (size - 3) // 2 + 1  # Mixed_6a


INCEPTION_SMALL_STEM_BELOW = 75  # px: smaller inputs get a stride-1 stem without max-pooling
SMALLEST_POOLABLE = 32  # px: smaller inputs are upsampled to it (torchvision_models)

# --- rules shared by several families --------------------------------------------------------------------------

DROPOUT = Rule(Number(0, 1, high_open=True), meaning="the probability of zeroing a unit while training")
BATCH_NORM = Rule(Flag())
AUX_LOGITS = Rule(Flag(), meaning="whether the auxiliary classifiers train too")
AUX_WEIGHT = Rule(Number(0), meaning="the weight of the auxiliary classifiers' loss")


CIFAR_DEPTH = Rule(Satisfies(_is_cifar_depth, "6n+2"), message=(
    "CIFAR ResNets have 6n+2 layers; {value} is not of that form. Valid depths: 8, 14, 20, 32, 44, 56, 110, 1202, "
    "… Set model.depth to one of them."))


# model.freeze presets: conv (every conv layer with its batch norm: the lectures' "similar data" case) and
# lower_conv (the conv layers of the lower half of the conv stages, a stage being a feature-map resolution:
# the "different data" case); cnnlab.models.weights.preset_parts finds them in the built network.
FREEZE_PRESETS = ("conv", "lower_conv")
# Models without conv layers, for which the presets mean nothing: family -> variants (None: all of them).
WITHOUT_CONV: dict[str, tuple[str, ...] | None] = {"linear": None, "mlp": None, "lecun1989": ("net1", "net2")}

# Options every model takes (conf/config.yaml), handled by create_model rather than by the builders.
COMMON_OPTIONS: dict[str, Rule] = {
    "weights": Rule(Text(optional=True), meaning="a torchvision weights name (e.g. ResNet18_Weights.IMAGENET1K_V1) "
                                                 "or a checkpoint file to start from"),
    "freeze": Rule(Satisfies(lambda v: Names().accepts(v) or v in FREEZE_PRESETS,
                             "a list of names of parts, e.g. [features], or a preset: conv (every conv layer) or "
                             "lower_conv (the lower half of the conv stages)"),
                   meaning="the parts of the model whose parameters stay fixed"),
    "channels_last": Rule(Flag()),
    "compile": Rule(Flag()),
}


# --- cross-option rules: (options, data.image_size) -> a message, or None -------------------------------------

def _vgg_rule(options: Mapping[str, Any], image_size: int) -> str | None:
    variant, depth = options.get("variant", "standard"), options.get("depth", 16)
    needed = VGG_VARIANTS.get(variant)
    if needed is not None and depth != needed[0]:
        return (f"VGG variant '{variant}' is configuration {needed[1]}, which has {needed[0]} layers: "
                f"set model.depth={needed[0]}.")
    return None


def _lecun1989_rule(options: Mapping[str, Any], image_size: int) -> str | None:
    if image_size != LECUN1989_INPUT_SIZE:
        return (f"LeCun's 1989 networks read {LECUN1989_INPUT_SIZE}x{LECUN1989_INPUT_SIZE} images, but data.image_size "
                f"is {image_size}. Set data.image_size={LECUN1989_INPUT_SIZE} (the data is resized to it).")
    return None


def _inception_rule(options: Mapping[str, Any], image_size: int) -> str | None:
    small = image_size < INCEPTION_SMALL_STEM_BELOW
    if options.get("aux_logits") and inception_grid_size(max(image_size, SMALLEST_POOLABLE), small) < 17:
        return (f"Inception-v3's auxiliary classifier needs a 17x17 grid, which {image_size}x{image_size} inputs do "
                f"not reach (299 px do). Set model.aux_logits=false or data.image_size=299.")
    return None


# --- the families -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    builder: str  # "module:function", imported only to build
    options: dict[str, Rule] = field(default_factory=dict)
    rule: Callable[[Mapping[str, Any], int], str | None] | None = None

    def load(self) -> Callable[..., Any]:
        module, _, function = self.builder.partition(":")
        return getattr(import_module(module), function)


FAMILIES: dict[str, Family] = {
    "linear": Family("cnnlab.models.mlp:linear"),
    "mlp": Family("cnnlab.models.mlp:mlp", {
        "depth": Rule(Whole(0), meaning="the number of hidden layers"),
        "width": Rule(Whole(1), meaning="the number of units in each hidden layer"),
        "activation": Rule(OneOf(ACTIVATION_NAMES), message=(
            "Unknown activation {value}. Valid activations: " + ", ".join(ACTIVATION_NAMES)
            + ". Set model.activation to one of them.")),
        "dropout": DROPOUT,
        "batch_norm": BATCH_NORM,
    }),
    "lecun1989": Family("cnnlab.models.lecun1989:lecun1989", {
        "variant": Rule(OneOf(LECUN1989_VARIANTS), message=(
            "Unknown lecun1989 variant {value}. Valid variants: " + ", ".join(LECUN1989_VARIANTS)
            + ". Set model.variant.")),
        "activation": Rule(OneOf(LECUN1989_ACTIVATIONS), message=(
            "Unknown lecun1989 activation {value}. Valid activations: " + ", ".join(LECUN1989_ACTIVATIONS)
            + " (scaled_tanh: the papers' 1.7159 tanh(2x/3); tanh: Karpathy's reproduction's). Set model.activation.")),
        "output": Rule(OneOf(LECUN1989_OUTPUTS), message=(
            "model.output must be 'linear' (class scores, for cross-entropy), 'scaled_tanh' (the papers' output "
            "units, trained towards ±1 targets with loss=mse loss.targets=[-1,1]) or 'tanh' (the same with plain "
            "tanh units, as Karpathy's reproduction), got {value}.")),
        "init": Rule(OneOf(LECUN1989_INITS), message=(
            "Unknown lecun1989 init {value}. Valid: torch (torch's default), lecun (the papers' uniform ±2.4/F_i), "
            "lecun_sqrt (±2.4/sqrt(F_i)), karpathy (lecun_sqrt's weights, zero biases, output biases -1, as Karpathy's "
            "reproduction). Set model.init.")),
        "dropout": DROPOUT,
    }, _lecun1989_rule),
    "lenet5": Family("cnnlab.models.lenet5:lenet5", {
        "variant": Rule(OneOf(LENET5_VARIANTS), message=(
            "Unknown LeNet-5 variant {value}. Valid variants: modern, classic. Set model.variant.")),
        "dropout": DROPOUT,
        "batch_norm": BATCH_NORM,
        "output": Rule(OneOf(LENET5_OUTPUTS),
                       message="model.output must be 'rbf' (the paper's) or 'linear', got {value}."),
    }),
    "alexnet": Family("cnnlab.models.torchvision_models:alexnet", {
        "lrn": Rule(Flag(), meaning="whether to add the paper's local response normalisation"),
        "dropout": DROPOUT,
    }),
    "vgg": Family("cnnlab.models.torchvision_models:vgg", {
        "depth": Rule(OneOf(tuple(VGG_DEPTHS)), message=(
            "VGG has no depth {value}. Valid depths: 11, 13, 16, 19 (configurations A, B, D, E). Set model.depth.")),
        "variant": Rule(OneOf(tuple(VGG_VARIANTS)), message=(
            "Unknown VGG variant {value}. Valid variants: " + ", ".join(VGG_VARIANTS) + ". Set model.variant.")),
        "batch_norm": BATCH_NORM,
        "dropout": DROPOUT,
    }, _vgg_rule),
    "googlenet": Family("cnnlab.models.torchvision_models:googlenet", {
        "aux_logits": AUX_LOGITS, "aux_weight": AUX_WEIGHT, "dropout": DROPOUT,
    }),
    "inception_v3": Family("cnnlab.models.torchvision_models:inception_v3", {
        "aux_logits": AUX_LOGITS, "aux_weight": AUX_WEIGHT, "dropout": DROPOUT,
    }, _inception_rule),
    "resnet": Family("cnnlab.models.torchvision_models:resnet", {
        "depth": Rule(OneOf(RESNET_DEPTHS), message=(
            "ResNet has no depth {value}. Valid depths: " + ", ".join(map(str, RESNET_DEPTHS)) + ". Set model.depth "
            "to one of them (for CIFAR-style 6n+2 depths use model=resnet_cifar).")),
    }),
    "resnet_cifar": Family("cnnlab.models.cifar_resnet:resnet_cifar", {"depth": CIFAR_DEPTH}),
    "plain_cifar": Family("cnnlab.models.cifar_resnet:plain_cifar", {"depth": CIFAR_DEPTH}),
}


def model_problem(name: Any, options: Mapping[str, Any], image_size: int) -> str | None:
    """Why the model ``name`` with ``options`` (its own and the common ones) cannot be built for ``image_size``
    inputs, in one paragraph; None when it can."""
    if name not in FAMILIES:
        return f"Unknown model {name!r}. Valid models: {', '.join(sorted(FAMILIES))}. Set model=<name>."
    family = FAMILIES[name]
    known = {**family.options, **COMMON_OPTIONS}
    unknown = sorted(set(options) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(known), n=1)
        hint = f" Did you mean model.{close[0]}?" if close else ""
        return (f"Model '{name}' has no option {', '.join('model.' + k for k in unknown)}.{hint} "
                f"Its options are: {', '.join('model.' + k for k in known)}.")
    for key, value in options.items():
        problem = known[key].problem(f"model.{key}", value)
        if problem:
            return problem
    freeze = options.get("freeze")
    presets = [p for p in ([freeze] if isinstance(freeze, str) else freeze or []) if p in FREEZE_PRESETS]
    if presets and name in WITHOUT_CONV:
        variants = WITHOUT_CONV[name]
        if variants is None or options.get("variant") in variants:
            which = name if variants is None else f"{name} {options.get('variant')}"
            return (f"model.freeze={presets[0]} freezes conv layers, and {which} has none. Name the parts to freeze "
                    f"instead (cnnlab summary lists them), or pick a conv model.")
    return family.rule(options, image_size) if family.rule else None


def check_model(name: Any, options: Mapping[str, Any], image_size: int) -> None:
    """Raise ``ConfigError`` with ``model_problem``'s message, if there is one."""
    problem = model_problem(name, options, image_size)
    if problem:
        raise ConfigError(problem)
