"""The two classification losses of the lectures, plus the L1 weight penalty."""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cnnlab.errors import ConfigError

Loss = Callable[[Tensor, Tensor], Tensor]


def _mse_on_one_hot(num_classes: int, label_smoothing: float) -> Loss:
    """Squared error between the softmax probabilities and (optionally smoothed) one-hot targets."""

    def loss(logits: Tensor, target: Tensor) -> Tensor:
        one_hot = F.one_hot(target, num_classes).to(logits.dtype)
        one_hot = one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes
        return F.mse_loss(logits.softmax(dim=1), one_hot)

    return loss


def build_loss(name: str, num_classes: int, label_smoothing: float = 0.0) -> Loss:
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "mse":
        return _mse_on_one_hot(num_classes, label_smoothing)
    raise ConfigError(f"Unknown loss '{name}'. Valid losses: cross_entropy, mse. Set loss=<name>.")


def l1_penalty(model: nn.Module) -> Tensor:
    """Sum of absolute values of the weights (biases and normalisation parameters excluded)."""
    weights = [p for name, p in model.named_parameters() if p.requires_grad and p.dim() > 1]
    return torch.stack([w.abs().sum() for w in weights]).sum()
