"""Starting from trained weights (torchvision's or a checkpoint's) and freezing layers, for fine-tuning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence
from urllib.error import URLError

import torch
from torch import nn
from torchvision import models as tvm

from cnnlab.checkpoint_file import read_checkpoint
from cnnlab.errors import ConfigError

log = logging.getLogger(__name__)


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    loaded = read_checkpoint(path, purpose="model.weights")
    if "state_dict" in loaded:  # a Lightning checkpoint of cnnlab's ImageClassifier
        return {k.removeprefix("model."): v for k, v in loaded["state_dict"].items() if k.startswith("model.")}
    return loaded


def _state_dict_from_torchvision(name: str) -> dict[str, torch.Tensor]:
    try:
        weights = tvm.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"model.weights={name} is neither a file nor a torchvision weights name such as "
                          f"ResNet18_Weights.IMAGENET1K_V1 or VGG16_Weights.IMAGENET1K_V1.") from None
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (URLError, OSError, RuntimeError) as err:
        raise ConfigError(
            f"The pretrained weights {name} must be downloaded from {weights.url} first, which failed ({err}). On a "
            f"machine with internet, run python -c \"import torchvision; torchvision.models.get_weight('{name}')"
            f".get_state_dict()\" and copy {Path(torch.hub.get_dir()) / 'checkpoints' / Path(weights.url).name} to "
            f"the same place here, or pass model.weights=/path/to/that/file."
        ) from None


def load_weights(net: nn.Module, source: str) -> None:
    """Copy every tensor of ``source`` whose name and shape match into ``net``; the rest keep their fresh values
    (typically the classifier, when the class count differs)."""
    path = Path(source).expanduser()
    state = _state_dict_from_file(path) if path.is_file() else _state_dict_from_torchvision(source)
    own = net.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ConfigError(f"None of the tensors in model.weights={source} fit this model: is it for another "
                          f"architecture?")
    net.load_state_dict(matching, strict=False)
    fresh = sorted(set(own) - set(matching))
    log.info("Loaded %d tensors from %s; %d start fresh%s", len(matching), source, len(fresh),
             f" ({', '.join(fresh[:6])}{', …' if len(fresh) > 6 else ''})" if fresh else "")


def freeze(net: nn.Module, prefixes: Sequence[str]) -> None:
    """Stop training the parameters whose names start with any of ``prefixes`` (e.g. ``features`` of VGG)."""
    names = [name for name, _ in net.named_parameters()]
    for prefix in prefixes:
        if not any(name.startswith(prefix) for name in names):
            tops = sorted({name.split(".")[0] for name in names})
            raise ConfigError(f"model.freeze: this model has no parameters under '{prefix}'. Its top-level parts "
                              f"are: {', '.join(tops)}.")
    for name, parameter in net.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            parameter.requires_grad_(False)
