"""``feature_maps``: what the conv stages see, image by image.

For a few test images (``images``, ``indices``, ``per_class``), the activation maps of chosen layers (``layers``;
by default every conv stage: the last map of each resolution that has a conv layer, ``layers.conv_stages``), one
panel per layer with its channels in a grid, the input beside them — the lectures' "activation maps" and Zeiler
& Fergus' view of what each layer responds to. One figure per image. Over more test images (``stats_images``),
the share of each layer's units that are active (> 0) and the channels that never are ("dead" ReLUs), which
land in ``results.json``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from cnnlab.analysis.common import AnalysisContext, NetworkStateKept, pyplot, save_figure, write_json
from cnnlab.analysis.filters import mosaic
from cnnlab.analysis.layers import LayerTaps, check_layers, conv_stages, example_input, logits_of, trace
from cnnlab.analysis.selection import chosen_indices, show_image
from cnnlab.errors import ConfigError

KEY = "analysis.feature_maps.layers"


def channel_grid(maps: np.ndarray) -> np.ndarray:
    """Maps (C, h, w) as one image, in a near-square grid of channels separated by NaN (drawn blank)."""
    count = len(maps)
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    cells = np.full((rows * columns, *maps.shape[1:]), np.nan, dtype=np.float32)
    cells[:count] = maps
    return mosaic(cells.reshape(rows, columns, *maps.shape[1:]))


def plot_image(path: Path, image: Tensor, maps: Mapping[str, np.ndarray], kinds: Mapping[str, str],
               max_channels: int, title: str, caption: str) -> Path:
    """The input, then one panel per layer: its first ``max_channels`` maps, on the layer's colour scale
    (non-negative maps from 0 to their maximum; maps with negative values on a diverging scale around 0)."""
    plt = pyplot()
    names = list(maps)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(2.4 + 3.1 * len(names), 3.9), squeeze=False,
                             gridspec_kw={"width_ratios": [0.75] + [1] * len(names)})
    show_image(axes[0, 0], image)
    axes[0, 0].set_title(caption, fontsize=8)
    axes[0, 0].set_xlabel(f"input {image.shape[-1]}x{image.shape[-2]}", fontsize=8)
    for ax, name in zip(axes[0, 1:], names):
        values = maps[name]
        shown = values[:max_channels]
        grid = channel_grid(shown)
        low, high = float(np.nanmin(shown)), float(np.nanmax(shown))
        if low >= 0:
            cmap, limits = plt.get_cmap("viridis").with_extremes(bad="white"), (0.0, high if high > 0 else 1.0)
        else:
            limit = max(abs(low), abs(high))
            cmap, limits = plt.get_cmap("RdBu_r").with_extremes(bad="0.6"), (-limit, limit)
        drawn = ax.imshow(grid, cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        count = f"{len(shown)} of {len(values)}" if len(shown) < len(values) else f"{len(values)}"
        ax.set_title(f"{name} ({kinds[name]})\n{count} maps of {values.shape[1]}x{values.shape[2]}", fontsize=8)
        bar = fig.colorbar(drawn, ax=ax, orientation="horizontal", fraction=0.05, pad=0.04)
        bar.set_label("activation", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    return save_figure(fig, path, title, 9)


def resolve_layers(net: nn.Module, requested: Sequence[str] | None, example: Tensor) -> list[str]:
    """The requested layers, or every conv stage; a layer without a spatial map is a ``ConfigError``."""
    calls = trace(net, example)
    stages = conv_stages(calls)
    if requested:
        check_layers(net, KEY, requested)
        shapes = {c.name: c.shape for c in calls}
        flat = [n for n in requested if shapes.get(n) is None or len(shapes[n]) != 4]
        if flat:
            raise ConfigError(f"{KEY}: {', '.join(flat)} gives no map (channels x height x width) for this "
                              f"{type(net).__name__}; feature maps need conv layers' outputs, e.g. its conv stages: "
                              f"{', '.join(stages) or 'none'}.")
        return list(requested)
    if not stages:
        raise ConfigError(f"analysis.feature_maps: this {type(net).__name__} has no conv layer with a map larger "
                          f"than 1x1, so it has no feature maps to draw. Pick a conv model (e.g. model=lenet5), or "
                          f"name layers with {KEY}.")
    return stages


def check(net: nn.Module, options: Mapping[str, Any], example: Tensor | None = None) -> None:
    check_layers(net, KEY, options.get("layers"))
    if example is not None:
        with NetworkStateKept(net):
            resolve_layers(net.eval(), options.get("layers"), example)


@torch.no_grad()
def activity(context: AnalysisContext, layers: Sequence[str], count: int, batch_size: int
             ) -> dict[str, dict[str, float]]:
    """Per layer, over ``count`` test images (a fixed, seeded subset): the share of units > 0 and the number of
    channels that are > 0 nowhere on any of them."""
    active = {name: 0.0 for name in layers}
    units = {name: 0 for name in layers}
    alive: dict[str, Tensor] = {}
    with LayerTaps(context.net, layers) as taps:
        for images, _ in context.batches("test", batch_size, context.subset("test", count),
                                         desc="feature_maps: activity"):
            context.net(images)
            for name in layers:
                positive = taps.activations[name] > 0
                active[name] += float(positive.sum())
                units[name] += positive.numel()
                seen = positive.flatten(2).any(dim=2).any(dim=0).cpu()
                alive[name] = seen if name not in alive else alive[name] | seen
    return {name: {"active_fraction": active[name] / max(1, units[name]),
                   "dead_channels": float((~alive[name]).sum()) if name in alive else 0.0,
                   "channels": float(len(alive.get(name, [])))} for name in layers}


def run(context: AnalysisContext, options: Mapping[str, Any]) -> dict[str, float]:
    net = context.net
    spec = context.datamodule.spec
    classes = context.classes
    with NetworkStateKept(net):
        net.eval()
        layers = resolve_layers(net, options.get("layers"),
                                example_input(spec["channels"], spec["image_size"], context.device))
        indices = chosen_indices(context, options, "analysis.feature_maps")
        modules = dict(net.named_modules())
        kinds = {name: type(modules[name]).__name__ for name in layers}
        captured: dict[str, list[Tensor]] = {name: [] for name in layers}
        probabilities = []
        with LayerTaps(net, layers) as taps, torch.no_grad():
            for images, _ in context.batches("test", options.get("batch_size", 256), indices, desc="feature_maps"):
                probabilities.append(logits_of(net(images)).float().softmax(dim=1).cpu())
                for name in layers:
                    captured[name].append(taps.activations[name].float().cpu())
        stats = activity(context, layers, options.get("stats_images", 1000), options.get("batch_size", 256))
    maps = {name: torch.cat(parts).numpy() for name, parts in captured.items()}
    p = torch.cat(probabilities)
    raw = context.raw_images("test", indices)
    labels = context.labels("test", indices)
    figures = []
    for k, index in enumerate(indices.tolist()):
        confidence, predicted = p[k].max(dim=0)
        caption = (f"test #{index}\ntrue {classes[int(labels[k])]}\npredicted {classes[int(predicted)]} "
                   f"({100 * float(confidence):.1f} %)")
        figures.append(plot_image(context.out_dir / f"feature_maps_{index}.png", raw[k],
                                  {name: maps[name][k] for name in layers}, kinds, options.get("max_channels", 64),
                                  f"{context.title}: feature maps of test image #{index}", caption))
    write_json(context.out_dir / "feature_maps.json", {
        "checkpoint": context.checkpoint, "layers": {name: {"type": kinds[name], "shape": list(maps[name].shape[1:]),
                                                            **stats[name]} for name in layers},
        "indices": indices.tolist(), "figures": [f.name for f in figures]})
    headline: dict[str, float] = {}
    for name in layers:
        headline[f"{name}/active_fraction"] = stats[name]["active_fraction"]
        headline[f"{name}/dead_channels"] = stats[name]["dead_channels"]
    return headline
