"""The per-sample path for image folders: decode and crop each file in DataLoader workers, augment whole batches.

For folders too large to decode once into memory. Per image, a worker does only what needs the image alone:
``torchvision.io`` decoding straight to a uint8 tensor (no PIL image), the random-resized crop (training) or the
resize and centre crop (evaluation), the augmentations that have no batched version, and the flips that come
first among those that do (a uint8 crop is cheap to mirror). The rest — crops, colour, affine, random erasing,
later flips, and the uint8 → normalised float conversion — runs once per batch with per-sample random
parameters (``batch_augment``) in the training process, on its device, so that batches travel from the workers
(and over the bus to a GPU) as uint8, a quarter of float32's bytes.

Per image, the crop and resize are torch's and torchvision's kernels called directly (``interpolate``,
``v2.functional.*_image``) rather than through ``v2.Compose`` of ``Transform`` objects: on 96×96 images the
objects' dispatch (input flattening, type checks, parameter dicts) costs about as much as the operations
(benchmarks/RESULTS.md).

On a CUDA device, JPEG training batches can be decoded on the GPU (``data.gpu_decode``): workers only read the
files' bytes and nvJPEG decodes the batch at once (:func:`cnnlab.data.decode.decode_jpeg_batch`).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor
from torch.nn.functional import interpolate
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

from cnnlab.data.batch_augment import BATCHED
from cnnlab.data.decode import decode_jpeg_batch, read_bytes, skipped_message
from cnnlab.data.transforms import _augmentations
from cnnlab.errors import CorruptImageError

log = logging.getLogger(__name__)

EVAL_RESIZE = 0.875  # evaluation: the centre crop of the image resized to size / 0.875, as ImageNet's recipes


FLIP_DIMS = {"horizontal_flip": -1, "vertical_flip": -2}


def split_augmentation(augmentation: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[int, float]],
                                                                 dict[str, Any]]:
    """``(per image, flips per image, per batch)``: the augmentations with a batched version run per batch,
    the rest per image in the workers — and so do the flips that come before every other batched augmentation,
    as ``(dim, p)``: flipping a uint8 crop in a worker costs less than flipping the float batch in the
    training process, which feeds the network and bounds the speed on a CPU."""
    per_sample = {k: v for k, v in augmentation.items() if k not in BATCHED}
    per_batch = {k: v for k, v in augmentation.items() if k in BATCHED}
    flips = []
    for name in list(per_batch):
        if name not in FLIP_DIMS:
            break
        flips.append((FLIP_DIMS[name], float((per_batch.pop(name) or {}).get("p", 0.5))))
    return per_sample, flips, per_batch


def random_box(height: int, width: int, scale: Sequence[float] = (0.08, 1.0),
               ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """``(top, left, height, width)``: torchvision's ``RandomResizedCrop.get_params``, drawn with Python's
    ``random`` rather than torch's generator.

    torchvision draws each number as a one-element tensor (``torch.empty(1).uniform_(...).item()``): 14 µs a box,
    as much as a tenth of a worker's time on a 96-pixel JPEG; Python floats take 1.4. The same rules and ranges
    (up to 10 tries of a uniform area fraction and a log-uniform aspect ratio, else the centre crop clamped to
    the ratio range). Reproducible like the rest: DataLoader workers seed ``random`` from torch's per-worker seed,
    and ``lightning.seed_everything`` seeds it in the main process.
    """
    area = height * width
    low, high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * random.uniform(scale[0], scale[1])
        aspect = math.exp(random.uniform(low, high))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    w, h = width, height
    if width / height < min(ratio):
        h = round(w / min(ratio))
    elif width / height > max(ratio):
        w = round(h * max(ratio))
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Tensor, box: tuple[int, int, int, int], size: int) -> Tensor:
    """The ``box`` of a uint8 ``(C, H, W)`` image resized to ``size`` × ``size`` (bilinear, antialiased): the
    pixels of torchvision's ``resized_crop_image``, in ``(size, size, C)`` memory order (channels last).

    torch's uint8 antialiased resize is vectorised for channels-last images; decoders return a channels-last
    image, but a crop of it is not one contiguous block, so torchvision's kernel (like ``interpolate`` given the
    view) takes a slower path: 31 against 22 µs for a 96-pixel JPEG cropped to 64 here. Packing the box first
    is the fast path. Antialiasing is kept: it costs under 1 µs here. Other devices (a GPU's uint8 bilinear
    resize is not native) go through torchvision.
    """
    top, left, height, width = box
    if image.device.type != "cpu":
        return F.resized_crop_image(image, top, left, height, width, [size, size], antialias=True)
    window = image[None, :, top:top + height, left:left + width].contiguous(memory_format=torch.channels_last)
    return interpolate(window, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


class TrainSample:
    """uint8 image of any size → uint8 ``(C, size, size)``: a random-resized crop, then the per-image
    augmentations (``v2`` transforms such as RandAugment, which have no batched version), then ``flips``
    (``(dim, p)``: mirrored along ``dim`` with probability ``p``, drawn with Python's ``random``)."""

    def __init__(self, size: int, per_sample: Mapping[str, Any], scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), flips: Sequence[tuple[int, float]] = ()) -> None:
        self.size = size
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        on_image, on_tensor = _augmentations(per_sample, size)
        assert not on_tensor, "every tensor-space augmentation has a batched version"
        self.augmentations = on_image
        self.flips = list(flips)

    def __call__(self, image: Tensor) -> Tensor:
        image = resized_crop(image, random_box(image.shape[-2], image.shape[-1], self.scale, self.ratio), self.size)
        for transform in self.augmentations:
            image = transform(image)
        for dim, p in self.flips:
            if random.random() < p:
                image = image.flip(dim)
        return image


class EvalSample:
    """uint8 image of any size → normalised float ``(C, size, size)``: the centre crop of the
    ``size / 0.875`` resize. Float per sample, so that evaluation batches need no batch hook (analyses read
    them with a plain DataLoader)."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size, self.resize = size, round(size / EVAL_RESIZE)
        std_ = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std_)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_

    def __call__(self, image: Tensor) -> Tensor:
        image = F.resize_image(image, [self.resize], antialias=True)
        image = F.center_crop_image(image, [self.size, self.size])
        return image.to(torch.float32).mul_(self.scale).add_(self.shift)


@dataclass
class EncodedBatch:
    """A training batch of undecoded files, for decoding on the GPU."""

    files: list[Tensor]
    paths: list[str]
    labels: Tensor


class EncodedFiles(Dataset):
    """The samples ``indices`` of an ``ImageFolder`` as ``(file bytes, path, label)``: workers only read."""

    def __init__(self, folder: Any, indices: Sequence[int]) -> None:
        self.samples = [folder.samples[i] for i in indices]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, str, int]:
        path, label = self.samples[i]
        return read_bytes(path), path, label


def collate_encoded(samples: list[tuple[Tensor, str, int]]) -> EncodedBatch:
    return EncodedBatch([s[0] for s in samples], [s[1] for s in samples], torch.tensor([s[2] for s in samples]))


def decode_on_device(batch: EncodedBatch, channels: int, crop: Callable[[Tensor], Tensor], device: torch.device,
                     skip_bad: bool = False) -> tuple[Tensor, Tensor]:
    """Decode a batch on ``device`` (nvJPEG for JPEGs) and crop each image there: ``(uint8 images, labels)``.
    With ``skip_bad`` (``data.skip_bad_images``), undecodable files are logged and left out of the batch.

    Untested on a GPU: the project's CI has none.
    """
    try:
        images, labels = decode_jpeg_batch(batch.files, batch.paths, channels, device), batch.labels
    except CorruptImageError:
        if not skip_bad:
            raise
        images, kept = [], []
        for i, (data, path) in enumerate(zip(batch.files, batch.paths)):
            try:
                images += decode_jpeg_batch([data], [path], channels, device)
                kept.append(i)
            except CorruptImageError as err:
                log.warning("%s", skipped_message(err))
        labels = batch.labels[kept]
    return torch.stack([crop(image) for image in images]), labels
