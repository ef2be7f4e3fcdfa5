"""The model zoo: a name → builder registry of plain ``nn.Module``s.

Every builder takes ``in_channels``, ``num_classes`` and ``image_size`` (filled from the data config) plus
its own keyword options (the keys of ``conf/model/<name>.yaml``). Four options work for every model:
``weights`` (a torchvision weights name or a checkpoint file to start from), ``freeze`` (names of the parts
whose parameters stay fixed, e.g. ``[features]`` to train only a VGG's classifier), ``channels_last`` and
``compile``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.cifar_resnet import plain_cifar, resnet_cifar
from cnnlab.models.lecun1989 import lecun1989
from cnnlab.models.lenet5 import lenet5
from cnnlab.models.mlp import linear, mlp
from cnnlab.models.torchvision_models import alexnet, googlenet, inception_v3, resnet, vgg
from cnnlab.models.weights import freeze, load_weights

MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": linear,
    "mlp": mlp,
    "lecun1989": lecun1989,
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg": vgg,
    "googlenet": googlenet,
    "inception_v3": inception_v3,
    "resnet": resnet,
    "resnet_cifar": resnet_cifar,
    "plain_cifar": plain_cifar,
}

_INPUT_KEYS = ("in_channels", "num_classes", "image_size")
COMMON_OPTIONS = ("weights", "freeze", "channels_last", "compile")


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])


def create_model(name: str, *, in_channels: int, num_classes: int, image_size: int, weights: str | None = None,
                 freeze_parts: Sequence[str] = (), channels_last: bool = False, compile: bool = False,
                 **options: Any) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"Unknown model '{name}'. Valid models: {', '.join(sorted(MODELS))}.")
    builder = MODELS[name]
    accepted = [p for p in inspect.signature(builder).parameters if p not in _INPUT_KEYS]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"Model '{name}' has no option {', '.join('model.' + k for k in unknown)}. "
            f"Its options are: {', '.join('model.' + k for k in [*accepted, *COMMON_OPTIONS])}."
        )
    net = builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)
    if weights:
        load_weights(net, weights)
    if freeze_parts:
        freeze(net, freeze_parts)
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
    if cfg.data.num_classes is None:
        raise ConfigError(
            "data.num_classes is not known yet: it is counted from the class folders when the data module is "
            "set up. Set data.num_classes, or call build_datamodule(cfg).setup() and pass its num_classes."
        )
    return create_model(
        name, in_channels=cfg.data.channels, num_classes=cfg.data.num_classes, image_size=cfg.data.image_size,
        freeze_parts=freeze_parts, **options,
    )


__all__ = ["MODELS", "build_model", "create_model"]
