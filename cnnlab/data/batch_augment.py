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


def _flip_some(x: Tensor, chosen: Tensor, dim: int) -> Tensor:
    if x.device.type != "cpu":  # nonzero() would wait for the device; torch.where does not
        return torch.where(chosen.view(-1, *[1] * (x.dim() - 1)), x.flip(dim), x)
    # Copy, then overwrite the chosen images only: ~1.7x faster on a CPU than torch.where over a flipped copy
    # of the whole batch, whose CPU kernel is not vectorised.
    index = chosen.nonzero().squeeze(1)
    out = x.clone()
    out[index] = x.index_select(0, index).flip(dim)
    return out


def horizontal_flip(x: Tensor, p: float = 0.5) -> Tensor:
    return _flip_some(x, _chance(len(x), p, x), -1)


def vertical_flip(x: Tensor, p: float = 0.5) -> Tensor:
    return _flip_some(x, _chance(len(x), p, x), -2)


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


def _box_coordinates(start: Tensor, length: Tensor, size: int, out: int, flip: Tensor | None) -> Tensor:
    """Where ``out`` evenly spaced samples of each image's interval ``[start, start + length)`` (pixels, along
    an axis of ``size`` pixels) fall, in ``grid_sample``'s normalised coordinates (``align_corners=False``: -1
    and 1 are the axis's outer pixel edges). ``flip``: the images whose samples run backwards. ``(N, out)``."""
    centres = (torch.arange(out, device=start.device, dtype=torch.float32) + 0.5) / out  # fractions of the box
    if flip is not None:  # a mirrored image samples its box from the far edge: x -> 1 - x
        start = torch.where(flip, start + length, start)
        length = torch.where(flip, -length, length)
    return (start[:, None] + length[:, None] * centres) * (2.0 / size) - 1.0


def resized_crops(x: Tensor, boxes: tuple[Tensor, Tensor, Tensor, Tensor], size: int,
                  mirrored: Tensor | None = None, upside_down: Tensor | None = None) -> Tensor:
    """Each image's box ``(top, left, height, width)`` resized to ``size`` × ``size`` (bilinear), mirrored
    left-right where ``mirrored`` and top-bottom where ``upside_down`` (boolean ``(N,)`` masks).

    One ``grid_sample`` for the whole batch. A box is axis-aligned, so a sample's x depends only on its column
    and y only on its row: the grid is two ``(N, size)`` vectors broadcast into ``(N, size, size, 2)``, not
    ``affine_grid``'s matrix product over every pixel (which cost more than the sampling itself on 64-pixel
    crops). A flip folded in reverses a vector, so crop and flip take one pass over the pixels, not two.
    """
    top, left, h, w = boxes
    n, _, height, width = x.shape
    grid = torch.empty(n, size, size, 2, device=x.device, dtype=x.dtype)
    grid[..., 0] = _box_coordinates(left, w, width, size, mirrored)[:, None, :]
    grid[..., 1] = _box_coordinates(top, h, height, size, upside_down)[:, :, None]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(x: Tensor, scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                        size: int | None = None) -> Tensor:
    """Each image's own random box (torchvision's ``RandomResizedCrop`` parameters), resized to ``size``
    (default: the input's side) with bilinear interpolation (:func:`resized_crops`).

    Bilinear without antialiasing, unlike torchvision's per-image resize: a box is never larger than the
    input, and a folder cache stores its images at the output size / 0.875, so the most a box is shrunk is
    1.14×, where antialiasing changes next to nothing.
    """
    n, _, height, width = x.shape
    return resized_crops(x, _crop_boxes(n, height, width, scale, ratio, x), size or width)


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

    The work is arranged to touch each pixel as few times as possible, with the same random draws in the same
    order as running the configured augmentations one after another: flips that directly follow the crop are
    folded into its sampling grid, and when nothing else follows, ``/ 255`` and the normalisation are one
    in-place multiply and add on the crop's output rather than on the larger stored image (bilinear sampling
    with border padding is linear with weights summing to one, so it commutes with them). ``torch.addcmul``
    would be one pass, but its CPU kernel with per-channel broadcasting is 3x slower than the two.
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
        # uint8 → normalised float in one multiply and add: (x / 255 - mean) / std = x * scale + shift
        self.scale = 1.0 / (255.0 * self.std)
        self.shift = -self.mean / self.std
        for fn, options in self.on_images + self.on_normalised:  # reject unknown options now, not mid-epoch
            try:
                fn(torch.zeros(1, len(mean), 8, 8), **options)
            except TypeError as err:
                raise ConfigError(f"Invalid options for augmentation: {err}.") from None
        # The flips at the head of on_images: folded into the crop's grid (they commute with the scaling too).
        self.leading_flips: list[tuple[Callable[..., Tensor], float]] = []
        while self.on_images and self.on_images[0][0] in (horizontal_flip, vertical_flip):
            fn, options = self.on_images.pop(0)
            self.leading_flips.append((fn, float(options.get("p", 0.5))))

    def __call__(self, images: Tensor, train: bool) -> Tensor:
        if self.scale.device != images.device:
            self.mean, self.std, self.scale, self.shift = (t.to(images.device) for t in
                                                           (self.mean, self.std, self.scale, self.shift))
        if self.crop is not None and not train:
            images = centre_crop(images, self.crop)
        x = images.to(torch.float32, copy=True)  # ours from here on: the rest works in place
        if not train:
            return x.mul_(self.scale).add_(self.shift)
        if self.crop is not None:
            x = self._crop(x)
        else:
            for fn, p in self.leading_flips:
                x = fn(x, p=p)
        if self.on_images:  # augmentations that work in [0, 1]: normalise after them
            x = x.div_(255)
            for fn, options in self.on_images:
                x = fn(x, **options)
            x = x.sub_(self.mean).div_(self.std)
        else:
            x = x.mul_(self.scale).add_(self.shift)
        for fn, options in self.on_normalised:
            x = fn(x, **options)
        return x

    def _crop(self, x: Tensor) -> Tensor:
        """The random-resized crop to ``crop`` with the leading flips folded in (drawn after the boxes, in
        config order, as running them after the crop would draw them)."""
        n, _, height, width = x.shape
        boxes = _crop_boxes(n, height, width, (0.08, 1.0), (3 / 4, 4 / 3), x)
        masks: dict[Callable[..., Tensor], Tensor] = {}
        for fn, p in self.leading_flips:
            drawn = _chance(n, p, x)
            masks[fn] = masks[fn] ^ drawn if fn in masks else drawn
        return resized_crops(x, boxes, self.crop, masks.get(horizontal_flip), masks.get(vertical_flip))
