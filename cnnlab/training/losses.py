"""The lectures' classification losses (cross-entropy, squared error, LeNet-5's MAP criterion), plus the L1
weight penalty."""

from __future__ import annotations

from typing import Callable, Sequence

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


def _mse_to_targets(num_classes: int, off: float, on: float) -> Loss:
    """Squared error between the network's outputs themselves and target values: ``on`` for the image's class,
    ``off`` for the others — LeCun's 1989 networks, whose scaled-tanh output units are trained towards ±1
    (the values where 1.7159 tanh(2x/3) has its largest second derivative, so the targets never saturate it).
    The mean over the outputs, as ``F.mse_loss``: per pattern it is the paper's sum of squares divided by the
    number of outputs, a constant factor the learning rate absorbs."""

    def loss(outputs: Tensor, target: Tensor) -> Tensor:
        wanted = torch.full_like(outputs, off).scatter_(1, target[:, None], on)
        return F.mse_loss(outputs, wanted)

    return loss


def _map_criterion(rubbish_penalty: float) -> Loss:
    """LeCun et al. (1998)'s MAP criterion for penalty outputs (eq. 9): with ``y_i`` the penalty of class i (the
    RBF unit's squared distance, so the scores are ``-y_i``) and ``j`` the rubbish class's fixed penalty,
    ``E = y_D + log(exp(-j) + sum_i exp(-y_i))`` — cross-entropy over the scores and one extra score ``-j``.

    The extra term is not a constant offset: while every penalty is large, ``log(exp(-j) + ...)`` stays near
    ``-j`` and ``E`` is ``y_D`` itself, so training keeps pulling F6 onto the correct class's code. Plain
    cross-entropy over the same scores stops as soon as the correct penalty is the smallest by a few units, a
    margin that is tiny next to the distances between the codes (measured: LeNet-5 with the RBF output then fits
    only 98.3 % of MNIST's training digits in 20 passes)."""

    def loss(scores: Tensor, target: Tensor) -> Tensor:
        rubbish = scores.new_full((len(scores), 1), -rubbish_penalty)
        return F.cross_entropy(torch.cat([scores, rubbish], dim=1), target)

    return loss


def build_loss(name: str, num_classes: int, label_smoothing: float = 0.0,
               targets: Sequence[float] | None = None, rubbish_penalty: float = 0.1) -> Loss:
    """``targets`` ([off, on]) only for ``mse``: compare the outputs themselves to these values instead of the
    softmax probabilities to one-hot vectors. ``rubbish_penalty`` only for ``map`` (the paper's ``j``)."""
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "map":
        return _map_criterion(float(rubbish_penalty))
    if name == "mse":
        if targets is not None:
            return _mse_to_targets(num_classes, float(targets[0]), float(targets[1]))
        return _mse_on_one_hot(num_classes, label_smoothing)
    raise ConfigError(f"Unknown loss '{name}'. Valid losses: cross_entropy, mse, map. Set loss=<name>.")


def l1_penalty(model: nn.Module) -> Tensor:
    """Sum of absolute values of the weights (biases and normalisation parameters excluded)."""
    weights = [p for name, p in model.named_parameters() if p.requires_grad and p.dim() > 1]
    return torch.stack([w.abs().sum() for w in weights]).sum()
