"""The per-sample transform pipelines built from the data and augmentation configs (torchvision v2).

An augmentation config maps transform names to their options; selecting several options
(``augmentation=[standard,colour]``) merges their entries. Image-space transforms run first, in config order,
on uint8 images; then the image becomes a normalised float tensor; then tensor-space ones (random erasing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torchvision.transforms import v2

from cnnlab.data.sources import Source
from cnnlab.errors import ConfigError


@dataclass(frozen=True)
class Augmentation:
    build: Callable[..., v2.Transform]  # called with image_size= and the config's options
    on_tensor: bool = False  # needs a float tensor (after normalisation) rather than an image


def _sized(transform: type) -> Callable[..., v2.Transform]:
    return lambda image_size, **options: transform(image_size, **options)


def _unsized(transform: type) -> Callable[..., v2.Transform]:
    return lambda image_size, **options: transform(**options)


AUGMENTATIONS: dict[str, Augmentation] = {
    "horizontal_flip": Augmentation(_unsized(v2.RandomHorizontalFlip)),
    "vertical_flip": Augmentation(_unsized(v2.RandomVerticalFlip)),
    "random_crop": Augmentation(_sized(v2.RandomCrop)),  # padding: N pads by N px, then crops back
    "random_resized_crop": Augmentation(_sized(v2.RandomResizedCrop)),
    "colour_jitter": Augmentation(_unsized(v2.ColorJitter)),  # the lectures' colour casting
    "random_affine": Augmentation(_unsized(v2.RandomAffine)),
    "random_rotation": Augmentation(_unsized(v2.RandomRotation)),
    "random_perspective": Augmentation(_unsized(v2.RandomPerspective)),
    "randaugment": Augmentation(_unsized(v2.RandAugment)),
    "trivial_augment": Augmentation(_unsized(v2.TrivialAugmentWide)),
    "random_erasing": Augmentation(_unsized(v2.RandomErasing), on_tensor=True),
}


def _augmentations(augmentation: Mapping[str, Any], image_size: int) -> tuple[list, list]:
    on_image, on_tensor = [], []
    for name, options in augmentation.items():
        if name not in AUGMENTATIONS:
            raise ConfigError(
                f"Unknown augmentation '{name}'. Valid augmentations: {', '.join(AUGMENTATIONS)}. "
                f"Fix the key in your augmentation config."
            )
        entry = AUGMENTATIONS[name]
        if name == "random_affine" and (options or {}).get("squeeze") is not None:
            raise ConfigError("augmentation.random_affine.squeeze (LeCun's squeezing) has a batched version only, "
                              "which torchvision lacks: use data.pipeline=tensor (or auto) for it.")
        try:
            transform = entry.build(image_size, **(options or {}))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"Invalid options for augmentation.{name}: {err}.") from None
        (on_tensor if entry.on_tensor else on_image).append(transform)
    return on_image, on_tensor


def build_transform(
    spec: Mapping[str, Any], src: Source, augmentation: Mapping[str, Any] | None
) -> v2.Compose:
    """The pipeline for one split of a fixed-size dataset: ``augmentation`` for training, ``None`` for evaluation.

    Image folders take their own per-sample path (``sample_path``: functional crops, batched augmentation)."""
    size = spec["image_size"]
    steps: list[v2.Transform] = [v2.ToImage()]
    if size != src.native_size:
        steps.append(v2.Resize(size, antialias=True))
    on_image, on_tensor = _augmentations(augmentation or {}, size)
    steps += on_image
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec["mean"], spec["std"])]
    steps += on_tensor
    return v2.Compose(steps)
