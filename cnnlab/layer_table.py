"""``cnnlab summary``: a per-layer table of a model — output shape, parameters, multiply-accumulates (counted by
``torch.utils.flop_counter``) and, for networks that count them (LeCun 1989), connections and free weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    links: int | None = None


@dataclass
class ModelSummary:
    input_shape: tuple[int, ...]
    rows: list[LayerRow]
    params: int
    trainable: int
    macs: int
    links: int | None  # connections, for models that define them
    units: int | None = None  # units (input pixels included), for models that count them (LeCun 1989)

    def table(self) -> str:
        show_links = self.links is not None
        header = ["layer", "type", "output shape", "params", "MACs"] + (["links"] if show_links else [])
        body = [[r.name, r.kind, "x".join(map(str, r.output_shape)), f"{r.params:,}", f"{r.macs:,}"]
                + ([f"{r.links:,}" if r.links is not None else ""] if show_links else []) for r in self.rows]
        widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                 for line in [header, *body]]
        rule = "-" * len(lines[0])
        totals = [f"input {'x'.join(map(str, self.input_shape))}",
                  f"parameters {self.params:,} ({self.trainable:,} trainable)",
                  f"MACs per image {self.macs:,}"]
        if show_links:
            units = f"units {self.units:,}, " if self.units is not None else ""
            totals.append(f"{units}links (connections) {self.links:,}, free weights {self.params:,}")
        return "\n".join([lines[0], rule, *lines[1:], rule, *totals])


def _links(module: nn.Module) -> int | None:
    if hasattr(module, "connections"):
        return module.connections()
    if isinstance(module, nn.Linear):
        return module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
    return None


def summarize(net: nn.Module, input_shape: Sequence[int]) -> ModelSummary:
    """Run one image of ``input_shape`` (C, H, W) through ``net`` in eval mode and tabulate its leaf layers."""
    leaves = {name: m for name, m in net.named_modules() if name and (not any(m.children()) or
                                                                    hasattr(m, "connections"))}
    shapes: dict[str, tuple[int, ...]] = {}

    def record_shape(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            shapes.setdefault(name, tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ())
        return hook

    hooks = [m.register_forward_hook(record_shape(name)) for name, m in leaves.items()]
    was_training = net.training
    net.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            net(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        net.train(was_training)
    flops = counter.get_flop_counts()
    root = type(net).__name__
    rows = [
        LayerRow(name, type(m).__name__, shapes[name], sum(p.numel() for p in m.parameters()),
                 sum(flops.get(f"{root}.{name}", {}).values()) // 2, _links(m))
        for name, m in leaves.items() if name in shapes and not any(name.startswith(o + ".") for o in leaves if o != name)
    ]
    links = net.connections() if hasattr(net, "connections") else None
    return ModelSummary(
        input_shape=tuple(input_shape), rows=rows, params=sum(p.numel() for p in net.parameters()),
        trainable=sum(p.numel() for p in net.parameters() if p.requires_grad),
        macs=counter.get_total_flops() // 2, links=links, units=net.units() if hasattr(net, "units") else None,
    )
