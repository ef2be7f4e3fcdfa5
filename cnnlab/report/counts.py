"""Architecture counts of the zoo's networks, measured on the built models, as the papers count them.

- ``parameters``: every parameter; ``free_parameters``: the trained ones (LeNet-5's fixed RBF centres excluded, as
  the paper's "60,000 trainable parameters" excludes them).
- ``connections`` (the papers' "links"): every use of a weight, plus one per bias, summed over the layers. A shared
  convolution kernel counts once per output position; a network or layer that defines ``connections()`` (LeCun's
  1989 networks and their locally connected and shared layers) counts itself.
- ``units``: the input units plus the output units of every layer with weights of its own (or the network's own
  ``units()``, as LeCun's 1989 networks count them).

No library counts connections this way (``torch.utils.flop_counter`` counts multiply-accumulates, which leave
out biases and count LeNet-5's subsampling differently), hence the small rule table below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.lenet5 import PartiallyConnectedConv, RBFOutput, Subsampling

MEASURES = ("parameters", "free_parameters", "connections", "units")
SUBSAMPLING_WINDOW = 4  # LeNet-5's S2/S4: a 2x2 block summed, times a coefficient, plus a bias: 5 links per unit


def _own_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False))


def _per_output_position(module: nn.Module, output: torch.Tensor) -> int:
    """A convolution: each of its (shared) weights and biases is used once per output position."""
    return output.shape[-1] * output.shape[-2] * _own_parameters(module)


# How many connections a layer with weights makes, from the layer and its output (batch of one).
CONNECTION_RULES: tuple[tuple[type, Callable[[nn.Module, torch.Tensor], int]], ...] = (
    (nn.Linear, lambda m, out: _own_parameters(m)),
    (RBFOutput, lambda m, out: _own_parameters(m)),
    (nn.Conv2d, _per_output_position),
    (PartiallyConnectedConv, _per_output_position),
    (Subsampling, lambda m, out: out[0].numel() * (SUBSAMPLING_WINDOW + 1)),
)


@dataclass(frozen=True)
class Counts:
    parameters: int
    free_parameters: int
    connections: int | None  # None: not measured, or a layer no rule covers
    units: int | None  # None: not measured

    def get(self, measure: str) -> int | None:
        return getattr(self, measure)


def _layer_connections(module: nn.Module, output: torch.Tensor) -> int | None:
    if hasattr(module, "connections"):
        return int(module.connections())
    for kind, rule in CONNECTION_RULES:
        if isinstance(module, kind):
            return rule(module, output)
    return None


def count(net: nn.Module, input_shape: tuple[int, int, int], measures: Sequence[str] = MEASURES) -> Counts:
    """Count ``net``'s parameters, and its connections and units on one input of ``input_shape`` (C, H, W) when
    ``measures`` asks for them (a forward pass: a second for a ResNet-110 on a busy CPU)."""
    parameters = sum(p.numel() for p in net.parameters())
    free = sum(p.numel() for p in net.parameters() if p.requires_grad)
    if not {"connections", "units"} & set(measures):
        return Counts(parameters, free, None, None)
    # Layers that hold weights themselves; a layer that counts its own connections stands for its children.
    counting = [m for m in net.modules() if hasattr(m, "connections") and m is not net]
    inside = {id(c) for m in counting for c in m.modules() if c is not m}
    weighted = counting + [m for m in net.modules() if _own_parameters(m) and m is not net and id(m) not in inside
                           and m not in counting]
    outputs: dict[int, torch.Tensor] = {}

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        outputs.setdefault(id(module), output)

    hooks = [m.register_forward_hook(keep) for m in weighted]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    ran = [m for m in weighted if id(m) in outputs]
    per_layer = [_layer_connections(m, outputs[id(m)]) for m in ran]
    if hasattr(net, "connections"):
        connections: int | None = int(net.connections())
    else:
        connections = None if any(c is None for c in per_layer) else sum(c for c in per_layer if c is not None)
    units = int(net.units()) if hasattr(net, "units") else \
        int(torch.Size(input_shape).numel()) + sum(outputs[id(m)][0].numel() for m in ran)
    return Counts(parameters, free, connections, units)


def count_recipe(overrides: Sequence[str], measures: Sequence[str] = MEASURES) -> Counts:
    """The counts of the network ``cnnlab train <overrides>`` would train (``experiment=<recipe>`` and more)."""
    from cnnlab.models.build import build_model
    from cnnlab.report.runs import composed

    cfg = composed(tuple(overrides))
    net = build_model(cfg)
    return count(net, (int(cfg.data.channels), int(cfg.data.image_size), int(cfg.data.image_size)), measures)


def matches_published(value: int | None, published: str) -> bool:
    """Whether ``value`` is ``published`` to the precision printed: "2,570" exactly, "0.27M" to 0.01 million."""
    if value is None:
        return False
    text = published.replace(",", "").strip()
    scale = {"K": 1e3, "M": 1e6}.get(text[-1:].upper(), 1.0)
    number = text[:-1] if scale != 1.0 else text
    decimals = len(number.split(".", 1)[1]) if "." in number else 0
    try:
        return round(value / scale, decimals) == round(float(number), decimals)
    except ValueError as err:
        raise CnnlabError(f"cannot read the published count {published!r}") from err
