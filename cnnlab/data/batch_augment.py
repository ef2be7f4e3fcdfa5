"""Augmentation of whole batches on the device they live on, with random parameters drawn per sample.

torchvision's v2 transforms applied to a batch tensor draw one set of random parameters for the whole batch
(every image gets the same crop), so the in-memory pipeline uses these instead. Each function takes the same
options as the torchvision transform of the same config name, so one augmentation config drives both
pipelines. Images are float batches ``(N, C, H, W)`` in [0, 1], except ``random_erasing``, which runs after
normalisation, as in the per-sample pipeline.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from cnnlab.errors import ConfigError


def _uniform(n: int, low: float, high: float, like: Tensor) -> Tensor:
    return torch.empty(n, device=like.device, dtype=torch.float32).uniform_(low, high)


def _chance(n: int, p: float, like: Tensor) -> Tensor:
    return torch.rand(n, device=like.device) < p


def horizontal_flip(x: Tensor, p: float = 0.5) -> Tensor:
    return torch.where(_chance(len(x), p, x)[:, None, None, None], x.flip(-1), x)


def vertical_flip(x: Tensor, p: float = 0.5) -> Tensor:
    return torch.where(_chance(len(x), p, x)[:, None, None, None], x.flip(-2), x)


def random_crop(x: Tensor, padding: int = 4, fill: float = 0.0, padding_mode: str = "constant") -> Tensor:
    """Pad by ``padding`` pixels, then cut each image's own random window of the original size."""
    n, c, h, w = x.shape
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}[padding_mode]
    padded = F.pad(x, (padding,) * 4, mode=mode, value=fill) if mode == "constant" else F.pad(x, (padding,) * 4, mode=mode)
    top = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), device=x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (N, H, 1)
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def _crop_boxes(n: int, height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                like: Tensor, tries: int = 10) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per image, torchvision's ``RandomResizedCrop.get_params``: up to ``tries`` draws of an area fraction in
    ``scale`` and a log-uniform aspect ratio in ``ratio`` until the box fits, else the centre crop of the
    image clamped to ``ratio``. Returns (top, left, height, width) as float tensors of ``n``."""
    area = height * width
    target = _uniform(n * tries, float(scale[0]), float(scale[1]), like).view(n, tries) * area
    aspect = torch.exp(_uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), like)).view(n, tries)
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.full((n,), -1, device=like.device))
    pick = first.clamp(min=0)[:, None]
    w, h = w.gather(1, pick)[:, 0], h.gather(1, pick)[:, 0]
    # No draw fitted: the centre of the whole image, clamped to the ratio range (torchvision's fallback).
    fallback_w, fallback_h = width, height
    if width / height < min(ratio):
        fallback_h = round(width / min(ratio))
    elif width / height > max(ratio):
        fallback_w = round(height * max(ratio))
    missed = first < 0
    w = torch.where(missed, torch.full_like(w, fallback_w), w)
    h = torch.where(missed, torch.full_like(h, fallback_h), h)
    top = torch.floor(torch.rand(n, device=like.device) * (height - h + 1))
    left = torch.floor(torch.rand(n, device=like.device) * (width - w + 1))
    top = torch.where(missed, torch.floor((height - h) / 2), top)
    left = torch.where(missed, torch.floor((width - w) / 2), left)
    return top, left, h, w


def random_resized_crop(x: Tensor, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                        size: int | None = None) -> Tensor:
    """Each image's own random box (torchvision's ``RandomResizedCrop`` parameters), resized to ``size``
    (default: the input's side) with bilinear interpolation.

    One ``grid_sample`` for the whole batch: an affine grid per image maps the output's pixel centres onto its
    box. Bilinear without antialiasing, unlike torchvision's per-image resize: a box is never larger than the
    input, and a folder cache stores its images at the output size / 0.875, so the most a box is shrunk is
    1.14×, where antialiasing changes next to nothing.
    """
    n, c, height, width = x.shape
    out = size or width
    top, left, h, w = _crop_boxes(n, height, width, scale, ratio, x)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = w / width
    theta[:, 1, 1] = h / height
    theta[:, 0, 2] = (2 * left + w) / width - 1  # the box's centre, in [-1, 1] coordinates
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [n, c, out, out], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def centre_crop(x: Tensor, size: int) -> Tensor:
    """The central ``size`` × ``size`` window of each image (a view: no copy), placed as torchvision's
    ``center_crop`` places it (offsets rounded half to even), so both paths evaluate on the same pixels."""
    top, left = round((x.shape[-2] - size) / 2), round((x.shape[-1] - size) / 2)
    return x[..., top:top + size, left:left + size]


def _grayscale(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _factor_range(value: float | Sequence[float], centre: float = 1.0) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return max(0.0, centre - value), centre + value
    return float(value[0]), float(value[1])


def colour_jitter(x: Tensor, brightness: Any = 0, contrast: Any = 0, saturation: Any = 0, hue: Any = 0) -> Tensor:
    """Per-image brightness, contrast, saturation and hue, with torchvision's ranges (applied in that order)."""
    n = len(x)
    if brightness:
        x = x * _uniform(n, *_factor_range(brightness), x)[:, None, None, None]
    if contrast:
        mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
        x = mean + (x - mean) * _uniform(n, *_factor_range(contrast), x)[:, None, None, None]
    if saturation and x.shape[1] == 3:
        grey = _grayscale(x)
        x = grey + (x - grey) * _uniform(n, *_factor_range(saturation), x)[:, None, None, None]
    if hue and x.shape[1] == 3:
        x = _rotate_hue(x.clamp(0, 1), _uniform(n, *_factor_range(hue, centre=0.0), x) * 2 * math.pi)
    return x.clamp(0, 1)


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _rotate_hue(x: Tensor, angle: Tensor) -> Tensor:
    """Hue shift as a rotation of the chroma plane of YIQ space (a close, batched stand-in for HSV's hue)."""
    to_yiq = _RGB_TO_YIQ.to(x)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(len(x), 3, 3, device=x.device, dtype=x.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # (N, 3, 3)
    return torch.einsum("nij,njhw->nihw", matrix, x)


def _range(value: Any, symmetric: bool = True) -> tuple[float, float]:
    if value is None:
        return (0.0, 0.0) if symmetric else (1.0, 1.0)
    if isinstance(value, (int, float)):
        return (-float(value), float(value))
    return float(value[0]), float(value[1])


def random_affine(x: Tensor, degrees: Any = 0, translate: Sequence[float] | None = None,
                  scale: Sequence[float] | None = None, shear: Any = None, fill: float = 0.0,
                  squeeze: Any = None) -> Tensor:
    """Per-image rotation, translation (fractions of the size), scaling and x-shear, like v2.RandomAffine.

    ``squeeze`` (batched pipeline only; torchvision has no such option) adds LeCun et al.'s (1998) squeezing: a
    simultaneous horizontal compression and vertical elongation, or the reverse — width times 1 - s and height
    times 1 + s, s drawn from [-squeeze, squeeze] (or a [min, max] pair)."""
    n = len(x)
    angle = torch.deg2rad(_uniform(n, *_range(degrees), x))
    shear_x = torch.deg2rad(_uniform(n, *_range(shear), x))
    zoom = _uniform(n, *_range(scale, symmetric=False), x)
    tx = _uniform(n, *_range(translate[0] if translate else 0), x) * 2  # normalised coordinates span 2
    ty = _uniform(n, *_range(translate[1] if translate else 0), x) * 2
    squash = _uniform(n, *_range(squeeze), x)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # forward map: rotation @ shear @ squeeze, scaled; affine_grid wants its inverse (output → input coordinates)
    forward = torch.stack([torch.stack([cos, -sin + cos * torch.tan(shear_x)], -1),
                           torch.stack([sin, cos + sin * torch.tan(shear_x)], -1)], 1) * zoom[:, None, None]
    forward = forward * torch.stack([1 - squash, 1 + squash], -1)[:, None, :]  # columns: x and y axes
    inverse = torch.linalg.inv(forward)
    shift = -(inverse @ torch.stack([tx, ty], -1)[:, :, None])
    grid = F.affine_grid(torch.cat([inverse, shift], dim=2), list(x.shape), align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def random_rotation(x: Tensor, degrees: Any = 0, fill: float = 0.0) -> Tensor:
    return random_affine(x, degrees=degrees, fill=fill)


def random_erasing(x: Tensor, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                   ratio: Sequence[float] = (0.3, 3.3), value: float = 0.0) -> Tensor:
    """Blank one random rectangle per selected image (Zhong et al., 2020), after normalisation."""
    n, _, h, w = x.shape
    area = _uniform(n, *scale, x) * h * w
    log_ratio = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), x)
    eh = torch.sqrt(area * torch.exp(log_ratio)).round().clamp(1, h)
    ew = torch.sqrt(area / torch.exp(log_ratio)).round().clamp(1, w)
    top = (torch.rand(n, device=x.device) * (h - eh + 1)).floor()
    left = (torch.rand(n, device=x.device) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    inside = (((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + ew)[:, None]))[:, None, :])
    erase = inside & _chance(n, p, x)[:, None, None]
    return torch.where(erase[:, None], torch.full_like(x, value), x)


ON_IMAGES: dict[str, Callable[..., Tensor]] = {
    "horizontal_flip": horizontal_flip,
    "vertical_flip": vertical_flip,
    "random_crop": random_crop,
    "random_resized_crop": random_resized_crop,
    "colour_jitter": colour_jitter,
    "random_affine": random_affine,
    "random_rotation": random_rotation,
}
ON_NORMALISED = {"random_erasing": random_erasing}
BATCHED = {**ON_IMAGES, **ON_NORMALISED}


def unbatchable(augmentation: Mapping[str, Any]) -> list[str]:
    """The configured augmentations that have no batched, per-sample version here."""
    return [name for name in augmentation if name not in BATCHED]


class BatchPipeline:
    """uint8 batch → augmented (when training), normalised float batch, all on the batch's device.

    With ``crop`` (a folder cache, whose images are stored larger than the model's input), training batches
    start with a random-resized crop of side ``crop`` per image — what the per-sample folder path does to each
    image — and evaluation batches take the centre ``crop`` × ``crop``.
    """

    def __init__(self, augmentation: Mapping[str, Any], mean: Sequence[float], std: Sequence[float],
                 crop: int | None = None) -> None:
        self.crop = crop
        missing = unbatchable(augmentation)
        if missing:
            raise ConfigError(f"{', '.join(missing)} has no batched version for data.pipeline=tensor. Use "
                              f"data.pipeline=loader (per-sample torchvision transforms) for it.")
        self.on_images = [(ON_IMAGES[k], dict(v or {})) for k, v in augmentation.items() if k in ON_IMAGES]
        self.on_normalised = [(ON_NORMALISED[k], dict(v or {})) for k, v in augmentation.items() if k in ON_NORMALISED]
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        # uint8 → normalised float in one in-place multiply and add: (x / 255 - mean) / std
        self.scale = 1.0 / (255.0 * self.std)
        self.shift = -self.mean / self.std
        for fn, options in self.on_images + self.on_normalised:  # reject unknown options now, not mid-epoch
            try:
                fn(torch.zeros(1, len(mean), 8, 8), **options)
            except TypeError as err:
                raise ConfigError(f"Invalid options for augmentation: {err}.") from None

    def __call__(self, images: Tensor, train: bool) -> Tensor:
        if self.scale.device != images.device:
            self.mean, self.std, self.scale, self.shift = (t.to(images.device) for t in
                                                           (self.mean, self.std, self.scale, self.shift))
        if self.crop is not None and not train:
            images = centre_crop(images, self.crop)
        augmenting = train and (self.on_images or self.crop is not None)
        if augmenting:
            x = images.float().div_(255)
            if self.crop is not None:
                x = random_resized_crop(x, size=self.crop)
            for fn, options in self.on_images:
                x = fn(x, **options)
            x = x.sub_(self.mean).div_(self.std)
        else:
            x = images.to(torch.float32, copy=True).mul_(self.scale).add_(self.shift)
        if train:
            for fn, options in self.on_normalised:
                x = fn(x, **options)
        return x
