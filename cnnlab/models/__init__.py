"""The model zoo: a name → builder registry of plain ``nn.Module``s.

Every builder takes ``in_channels``, ``num_classes`` and ``image_size`` (filled from the data config) plus
its own keyword options (the keys of ``conf/model/<name>.yaml``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models.lenet5 import lenet5
from cnnlab.models.mlp import linear, mlp
from cnnlab.models.torchvision_models import resnet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "linear": linear,
    "mlp": mlp,
    "lenet5": lenet5,
    "resnet": resnet,
}

_INPUT_KEYS = ("in_channels", "num_classes", "image_size")


def create_model(name: str, *, in_channels: int, num_classes: int, image_size: int, **options: Any) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"Unknown model '{name}'. Valid models: {', '.join(sorted(MODELS))}.")
    builder = MODELS[name]
    accepted = [p for p in inspect.signature(builder).parameters if p not in _INPUT_KEYS]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"Model '{name}' has no option {', '.join('model.' + k for k in unknown)}. "
            f"Its options are: {', '.join('model.' + k for k in accepted) or 'none'}."
        )
    return builder(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **options)


def build_model(cfg: DictConfig) -> nn.Module:
    """The ``nn.Module`` named by ``cfg.model``, shaped by ``cfg.data`` (channels, image size, classes)."""
    options = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(options, dict)
    name = options.pop("name")
    if cfg.data.num_classes is None:
        raise ConfigError(
            "data.num_classes is not known yet: it is counted from the class folders when the data module is "
            "set up. Set data.num_classes, or call build_datamodule(cfg).setup() and pass its num_classes."
        )
    return create_model(
        name, in_channels=cfg.data.channels, num_classes=cfg.data.num_classes, image_size=cfg.data.image_size,
        **options,
    )


__all__ = ["MODELS", "build_model", "create_model"]
