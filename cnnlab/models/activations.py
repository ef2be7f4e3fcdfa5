"""The activation functions a config can name, as module factories (their names: ``families.ACTIVATION_NAMES``)."""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from cnnlab.errors import ConfigError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": partial(nn.ReLU, inplace=True),
    # The lectures define leaky ReLU as max(0.1x, x).
    "leaky_relu": partial(nn.LeakyReLU, negative_slope=0.1, inplace=True),
    "elu": partial(nn.ELU, inplace=True),
    "gelu": nn.GELU,
    "silu": partial(nn.SiLU, inplace=True),
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"Unknown activation '{name}'. Valid activations: {', '.join(ACTIVATIONS)}. "
            f"Set model.activation to one of them."
        ) from None
