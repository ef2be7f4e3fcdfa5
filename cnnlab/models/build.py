"""Building a model of the zoo: the name → builder registry, the options every model takes, and the config's model.

Every builder takes ``in_channels``, ``num_classes`` and ``image_size`` (filled from the data config) plus
its own keyword options (the keys of ``conf/model/<name>.yaml``). Four options work for every model:
``weights`` (a torchvision weights name, a checkpoint file or a cnnlab run folder to start from), ``freeze``
(names of the parts whose parameters stay fixed, e.g. ``[features]`` to train only a VGG's classifier, or a preset:
``conv``, every conv layer, ``lower_conv``, the lower half of the conv stages; see ``weights.preset_parts``), ``channels_last`` and
``compile``. Which builders exist and which options they take is ``cnnlab.models.families``: ``create_model``
checks the options against it before building, exactly as the config check does before torch is imported.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.families import FAMILIES, check_model
from cnnlab.models.weights import freeze, load_weights

MODELS: dict[str, Callable[..., nn.Module]] = {name: family.load() for name, family in FAMILIES.items()}

_INPUT_KEYS = ("in_channels", "num_classes", "image_size")


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def _with_defaults(builder: Callable[..., nn.Module], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the builder's defaults for the ones not given (the cross-option rules need them all)."""
    defaults = {name: p.default for name, p in inspect.signature(builder).parameters.items()
                if name not in _INPUT_KEYS and p.default is not inspect.Parameter.empty}
    return {**defaults, **options}


def create_model(name: str, *, in_channels: int, num_classes: int, image_size: int, weights: str | None = None,
                 freeze_parts: Sequence[str] = (), channels_last: bool = False, compile: bool = False,
                 **options: Any) -> nn.Module:
    common = {"weights": weights, "freeze": list(freeze_parts), "channels_last": channels_last, "compile": compile}
    builder = MODELS.get(name)
    check_model(name, {**(_with_defaults(builder, options) if builder else options), **common}, image_size)
    assert builder is not None
    net = builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)
    if weights:
        load_weights(net, weights)
    if freeze_parts:
        freeze(net, freeze_parts, example=torch.zeros(1, in_channels, image_size, image_size))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        net.register_forward_pre_hook(_to_channels_last)
    if compile:
        net.compile()  # in place: parameter names, and so checkpoints, stay those of the plain module
    return net


def build_model(cfg: DictConfig) -> nn.Module:
    """The ``nn.Module`` named by ``cfg.model``, shaped by ``cfg.data`` (channels, image size, classes)."""
    options = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(options, dict)
    name = options.pop("name")
    freeze_parts = options.pop("freeze", None) or ()
    if isinstance(freeze_parts, str):  # model.freeze=conv
        freeze_parts = [freeze_parts]
    if cfg.data.num_classes is None:
        raise ConfigError(
            "data.num_classes is not known yet: it is counted from the class folders when the data module is "
            "set up. Set data.num_classes, or call build_datamodule(cfg).setup() and pass its num_classes."
        )
    return create_model(
        name, in_channels=cfg.data.channels, num_classes=cfg.data.num_classes, image_size=cfg.data.image_size,
        freeze_parts=freeze_parts, **options,
    )
