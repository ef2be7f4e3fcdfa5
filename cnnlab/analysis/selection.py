"""Which test images an analysis that shows single images looks at (feature maps, CAM): the options ``images``,
``indices`` and ``per_class`` of its ``conf/analysis/<name>.yaml``, and the images themselves for display."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from cnnlab.analysis.common import AnalysisContext
from cnnlab.errors import ConfigError


def chosen_indices(context: AnalysisContext, options: Mapping[str, Any], key: str) -> Tensor:
    """Test-split indices: ``indices`` when given; else with ``per_class`` the first test image of each class (of
    the first ``images`` classes); else the first ``images`` test images. ``key`` (``analysis.<name>``) names the
    options in errors."""
    size = context.size("test")
    if options.get("indices"):
        indices = [int(i) for i in options["indices"]]
        outside = [i for i in indices if not 0 <= i < size]
        if outside:
            raise ConfigError(f"{key}.indices: the test split has {size:,} images (indices 0 to {size - 1}); "
                              f"{', '.join(map(str, outside))} is outside it.")
        return torch.tensor(indices, dtype=torch.long)
    count = int(options.get("images", 8))
    if options.get("per_class"):
        return first_of_each_class(context.labels("test"), context.num_classes)[:count]
    return torch.arange(min(count, size))


def first_of_each_class(labels: Tensor, num_classes: int) -> Tensor:
    """The index of the first image of each class that has one, in class order."""
    found = [int((labels == c).nonzero()[0]) for c in range(num_classes) if bool((labels == c).any())]
    return torch.tensor(found, dtype=torch.long)


def class_index(context: AnalysisContext, value: Any, key: str) -> int:
    """A class given by name (as the data set names it) or by index."""
    classes = context.classes
    if isinstance(value, str) and value in classes:
        return classes.index(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(classes):
        return value
    if isinstance(value, str) and value.isdigit() and 0 <= int(value) < len(classes):
        return int(value)
    raise ConfigError(f"{key}: {value!r} is not a class of {context.cfg.data.name}. Give a class name or an index "
                      f"from 0 to {len(classes) - 1}; the classes: {', '.join(classes[:40])}"
                      f"{', ...' if len(classes) > 40 else ''}.")


def display_scale(size: int, target: int = 112) -> int:
    """How many display pixels per image pixel, so that small images (8x8 digits, 28x28 MNIST) are drawn about
    ``target`` pixels across and every image pixel stays a whole block of them."""
    return max(1, -(-target // size))


def show_image(ax: Any, image: Tensor) -> None:
    """An image in [0, 1] (C, H, W), each pixel a square block (nearest: what the network sees, not a smoothed
    version), drawn over the pixel grid (-0.5, W - 0.5) x (H - 0.5, -0.5), which overlays share."""
    height, width = image.shape[-2:]
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest", extent=extent)
    else:
        ax.imshow(image[:3].permute(1, 2, 0).numpy(), interpolation="nearest", extent=extent)
    ax.set_xticks([])
    ax.set_yticks([])
