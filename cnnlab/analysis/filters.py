"""``filters``: what the conv layers learnt, drawn as images of their kernels.

The first conv layer's kernels as one grid (in colour for RGB inputs, each kernel scaled to its own largest
weight, grey = 0, as in Krizhevsky et al.'s and Zeiler & Fergus' figures; for one input channel on one shared
diverging scale, so that kernels compare). Deeper layers (``layers``; by default the next conv layers with kernels
larger than 1x1) as per-channel grids: a row per output channel, a column per input channel, one colour scale per
layer. LeNet-5's partially connected C3 shows its connection table (the kernels it lacks are blank), and the
locally connected layers of LeCun's 1989 networks, which have a kernel of their own at every position, show them
laid out as a map of those positions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cnnlab.analysis.common import AnalysisContext, NetworkStateKept, pyplot, save_figure, write_json
from cnnlab.analysis.layers import Call, check_layers, example_input, is_conv, trace
from cnnlab.errors import ConfigError
from cnnlab.models.layers import LocallyConnected2d
from cnnlab.models.lenet5 import PartiallyConnectedConv

KEY = "analysis.filters.layers"
GAP_COLOUR = "0.6"  # grey between kernels: white is a weight of 0 on the diverging scale


def kernels(module: nn.Module) -> np.ndarray:
    """A shared-kernel layer's kernels as (out, in, k, k); connections a layer lacks (LeNet-5's C3) are NaN."""
    if isinstance(module, PartiallyConnectedConv):
        out_maps, in_maps, k, _ = module.full_shape
        full = torch.full((out_maps * in_maps, k, k), float("nan"))
        full[module.slots.cpu()] = module.weight.detach().float().cpu()
        return full.view(module.full_shape).numpy()
    return module.weight.detach().float().cpu().numpy()


def local_kernels(module: LocallyConnected2d) -> np.ndarray:
    """A locally connected layer's kernels as (rows, columns, out, in, k, k): one set per output position."""
    positions, out, fan_in = module.weight.shape
    k = module.kernel_size
    size = module.out_size
    return module.weight.detach().float().cpu().numpy().reshape(size, size, out, fan_in // (k * k), k, k)


def mosaic(cells: np.ndarray, gap: int = 1) -> np.ndarray:
    """Cells (R, C, h, w[, 3]) as one image with ``gap`` pixels of NaN (drawn blank) between them."""
    rows, columns, h, w = cells.shape[:4]
    shape = (rows * (h + gap) - gap, columns * (w + gap) - gap, *cells.shape[4:])
    image = np.full(shape, np.nan, dtype=np.float32)
    for r in range(rows):
        for c in range(columns):
            image[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = cells[r, c]
    return image


def _symmetric_limit(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def _figure(plt: Any, image: np.ndarray, scale: float = 0.16) -> tuple[Any, Any]:
    """A figure sized to the mosaic (each kernel pixel readable), with room for the title and the colour bar."""
    height, width = image.shape[:2]
    inches = min(12.0, max(3.2, width * scale + 2.2)), min(12.0, max(3.0, height * scale + 1.6))
    return plt.subplots(figsize=inches)


def _ticks(ax: Any, count: int, cell: int, axis: str, label: str, gap: int = 1) -> None:
    step = 1 if count <= 16 else math.ceil(count / 16)
    positions = [i * (cell + gap) + (cell - 1) / 2 for i in range(0, count, step)]
    labels = [str(i) for i in range(0, count, step)]
    if axis == "x":
        ax.set_xticks(positions, labels, fontsize=7)
        ax.set_xlabel(label)
    else:
        ax.set_yticks(positions, labels, fontsize=7)
        ax.set_ylabel(label)


def plot_grid(path: Path, weights: np.ndarray, title: str, max_out: int, max_in: int) -> dict[str, Any]:
    """Kernels (out, in, k, k): a row per output channel, a column per input channel, one diverging scale."""
    plt = pyplot()
    shown = weights[:max_out, :max_in]
    image = mosaic(shown)
    limit = _symmetric_limit(shown)
    fig, ax = _figure(plt, image)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad=GAP_COLOUR)
    drawn = ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    _ticks(ax, shown.shape[1], shown.shape[3], "x", "input channel")
    _ticks(ax, shown.shape[0], shown.shape[2], "y", "output channel")
    cut = [f"{n} of {total} {what}" for n, total, what in ((shown.shape[0], weights.shape[0], "output"),
                                                           (shown.shape[1], weights.shape[1], "input"))
           if n < total]
    ax.set_title(title + (f"\n(the first {' and '.join(cut)} channels)" if cut else ""), fontsize=9)
    fig.colorbar(drawn, ax=ax, fraction=0.046, pad=0.03, label="weight")
    save_figure(fig, path)
    return {"figure": path.name, "shown": list(shown.shape[:2]), "abs_max": limit}


def plot_first_layer(path: Path, weights: np.ndarray, title: str, max_out: int) -> dict[str, Any]:
    """The first layer's kernels as a grid of images: RGB kernels in colour (each scaled to its own largest
    weight, grey = 0), single-channel ones on one shared diverging scale."""
    count = min(len(weights), max_out)
    shown = weights[:count]
    columns = min(count, 8 if count > 16 else max(1, math.ceil(math.sqrt(count))))
    rows = math.ceil(count / columns)
    k = shown.shape[-1]
    rgb = shown.shape[1] == 3
    if rgb:
        scaled = shown / (2 * np.abs(shown).reshape(count, -1).max(axis=1).clip(1e-12)[:, None, None, None]) + 0.5
        cells = np.full((rows * columns, k, k, 3), np.nan, dtype=np.float32)
        cells[:count] = scaled.transpose(0, 2, 3, 1)
        cells = cells.reshape(rows, columns, k, k, 3)
    else:
        cells = np.full((rows * columns, k, k), np.nan, dtype=np.float32)
        cells[:count] = shown[:, 0]
        cells = cells.reshape(rows, columns, k, k)
    image = mosaic(cells)
    plt = pyplot()
    fig, ax = _figure(plt, image, scale=0.3 if k <= 7 else 0.12)
    limit = _symmetric_limit(shown)
    if rgb:
        ax.imshow(np.nan_to_num(image, nan=1.0).clip(0, 1), interpolation="nearest")
    else:
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad=GAP_COLOUR)
        drawn = ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
        fig.colorbar(drawn, ax=ax, fraction=0.046, pad=0.03, label="weight")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{count} kernels of {k}x{k}, left to right, top to bottom"
                  + ("; each scaled to its own largest |weight|, grey = 0" if rgb else ""), fontsize=8)
    ax.set_title(title + (f"\n(the first {count} of {len(weights)})" if count < len(weights) else ""), fontsize=9)
    save_figure(fig, path)
    return {"figure": path.name, "shown": [count, int(shown.shape[1])], "abs_max": limit}


def plot_local(path: Path, weights: np.ndarray, title: str) -> dict[str, Any]:
    """A locally connected layer (rows, columns, out, in, k, k): for each output map, the kernel of every position
    at that position (the input channels of one position side by side)."""
    plt = pyplot()
    rows, columns, out, inputs, k, _ = weights.shape
    limit = _symmetric_limit(weights)
    fig, axes = plt.subplots(1, out, figsize=(min(12, 1.2 + out * (columns * (inputs * (k + 1) + 1)) * 0.09),
                                              min(10, 1.8 + rows * (k + 1) * 0.09)), squeeze=False)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad=GAP_COLOUR)
    drawn = None
    for o, ax in enumerate(axes.flat):
        # a position's input channels side by side, one blank column between them
        width = inputs * (k + 1) - 1
        cells = np.full((rows, columns, k, width), np.nan, dtype=np.float32)
        for i in range(inputs):
            cells[:, :, :, i * (k + 1):i * (k + 1) + k] = weights[:, :, o, i]
        gap = 1 if inputs == 1 else 3  # wider between positions than between a position's input maps
        image = mosaic(cells, gap=gap)
        drawn = ax.imshow(image, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
        _ticks(ax, columns, width, "x", "output position (column)" + (
            f"\neach: its kernels on the {inputs} input maps, side by side" if inputs > 1 else ""), gap=gap)
        _ticks(ax, rows, k, "y", "output position (row)", gap=gap)
        if out > 1:
            ax.set_title(f"output map {o}", fontsize=8)
    assert drawn is not None
    save_figure(fig, path, title, 9, tight=False, bbox_inches="tight",
                after_layout=lambda: fig.colorbar(drawn, ax=list(axes.flat), fraction=0.046, pad=0.03, label="weight"))
    return {"figure": path.name, "positions": [rows, columns], "kernel": [inputs, k, k], "abs_max": limit}


def conv_layers(calls: Sequence[Call]) -> list[str]:
    """The conv layers in the order a forward pass runs them (each once)."""
    return list(dict.fromkeys(c.name for c in calls if is_conv(c.module)))


def default_layers(net: nn.Module, convs: Sequence[str], count: int) -> list[str]:
    """The first conv layer, then the next ones with kernels larger than 1x1: ``count`` in all."""
    modules = dict(net.named_modules())
    chosen = convs[:1]
    for name in convs[1:]:
        module = modules[name]
        size = module.kernel_size if isinstance(module.kernel_size, int) else max(module.kernel_size)
        if size > 1 and len(chosen) < count:
            chosen.append(name)
    return chosen


def _slug(name: str) -> str:
    return name.replace(".", "_")


def check(net: nn.Module, options: Mapping[str, Any]) -> None:
    check_layers(net, KEY, options.get("layers"))


def run(context: AnalysisContext, options: Mapping[str, Any]) -> dict[str, float]:
    net = context.net
    check(net, options)
    spec = context.datamodule.spec
    with NetworkStateKept(net):
        net.eval()
        calls = trace(net, example_input(spec["channels"], spec["image_size"], context.device))
    convs = conv_layers(calls)
    if not convs:
        raise ConfigError(f"analysis.filters: this {type(net).__name__} has no convolutional or locally connected "
                          f"layer, so it has no kernels to draw (its first layer's weights are a matrix). Pick a conv "
                          f"model, e.g. model=lenet5.")
    modules = dict(net.named_modules())
    requested = options.get("layers")
    names = list(requested) if requested else default_layers(net, convs, options.get("max_layers", 3))
    not_conv = [n for n in names if not is_conv(modules[n])]
    if not_conv:
        raise ConfigError(f"{KEY}: {', '.join(not_conv)} {'is' if len(not_conv) == 1 else 'are'} not a conv layer, "
                          f"so {'it has' if len(not_conv) == 1 else 'they have'} no kernels to draw. This "
                          f"{type(net).__name__}'s conv layers: {', '.join(convs)}.")
    report: dict[str, Any] = {"checkpoint": context.checkpoint, "layers": {}, "figures": []}
    for name in names:
        module = modules[name]
        described = f"{context.title}: {name} ({type(module).__name__})"
        if isinstance(module, LocallyConnected2d):
            entry = plot_local(context.out_dir / f"local_{_slug(name)}.png", local_kernels(module),
                               f"{described}: a kernel for every output position")
        elif name == convs[0] and module.weight.shape[1] in (1, 3) and not isinstance(module, PartiallyConnectedConv):
            entry = plot_first_layer(context.out_dir / f"first_layer_{_slug(name)}.png", kernels(module),
                                     f"{described}: the first layer's kernels", options.get("max_out", 64))
        else:
            weights = kernels(module)
            entry = plot_grid(context.out_dir / f"layer_{_slug(name)}.png", weights,
                              f"{described}: kernels {weights.shape[2]}x{weights.shape[3]}",
                              options.get("max_out", 64), options.get("max_in", 16))
        entry["type"] = type(module).__name__
        report["layers"][name] = entry
        report["figures"].append(entry["figure"])
    write_json(context.out_dir / "filters.json", report)
    return {"layers": float(len(names))}

