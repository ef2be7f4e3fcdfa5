"""Image files → uint8 ``(C, H, W)`` tensors, decoded by torchvision.io (libjpeg-turbo, libpng, libwebp).

``torchvision.io.decode_image`` returns a tensor directly, without the PIL image and its conversion that
``ImageFolder``'s default loader goes through: on a 96×96 JPEG that is about half the per-image cost. Formats
torchvision.io does not decode (BMP, TIFF, PPM/PGM, which ``ImageFolder`` also lists) fall back to PIL, so any
folder ``ImageFolder`` reads still reads.

On a GPU, :func:`decode_jpeg_batch` decodes a whole batch of JPEG files' bytes at once with nvJPEG.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2.functional import rgb_to_grayscale_image

from cnnlab.errors import CorruptImageError

_MODES = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}
# The first bytes of the formats torchvision.io decodes itself (JPEG, PNG, GIF, WebP).
_JPEG = b"\xff\xd8\xff"
_NATIVE = (_JPEG, b"\x89PNG", b"GIF8")


def _undecodable(path: str, err: Exception) -> CorruptImageError:
    # torchvision's C++ errors start with "function, source.cpp:line, ": only the reason after them means anything
    # to a user. The error keeps the path and the reason apart (``path``, ``reason``) for the skip message.
    reason = re.sub(r"^[\w()]+, \S+:\d+, ", "", str(err))
    error = CorruptImageError(
        f"Cannot decode image {path} ({reason}). Delete or replace the file, or set data.skip_bad_images=true to "
        f"leave undecodable files out of the run."
    )
    error.path, error.reason = path, reason  # type: ignore[attr-defined]
    return error


def skipped_message(err: CorruptImageError) -> str:
    """What the log says when ``data.skip_bad_images=true`` leaves an undecodable file out (the run goes on)."""
    path, reason = getattr(err, "path", None), getattr(err, "reason", None)
    if path is None:
        return f"Left out an undecodable image (data.skip_bad_images=true): {err.user_message}"
    return f"Left out undecodable image {path} ({reason}): data.skip_bad_images=true"


def read_bytes(path: str) -> Tensor:
    """The encoded file as a 1-D uint8 tensor (what the decoders take).

    Read by Python rather than ``torchvision.io.read_file``, whose wrapper issues a deprecation warning on
    every call (torchvision 0.29 deprecates its image I/O for TorchCodec): 11.9 against 13.6 µs a 96-pixel JPEG.
    """
    try:
        with open(path, "rb", buffering=0) as f:
            data = f.readall()
    except OSError as err:
        raise _undecodable(str(path), err) from None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def is_jpeg(data: Tensor) -> bool:
    return bytes(data[:3].tolist()) == _JPEG


def _native(head: bytes) -> bool:
    return head.startswith(_NATIVE) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def decode_bytes(data: Tensor, channels: int, path: str) -> Tensor:
    """Decode one file's bytes into a uint8 ``(channels, H, W)`` tensor; ``path`` names it in errors."""
    if channels not in _MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        if _native(bytes(data[:12].tolist())):
            image = decode_image(data, mode=_MODES[channels])
        else:
            image = _decode_with_pil(data, channels)
    except (RuntimeError, OSError, ValueError) as err:
        raise _undecodable(path, err) from None
    if image.dtype != torch.uint8:  # 16-bit PNGs decode to uint16: keep the top 8 bits, as 8-bit images have
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return _with_channels(image[0] if image.ndim == 4 else image, channels)  # an animated GIF: its first frame


def _with_channels(image: Tensor, channels: int) -> Tensor:
    """WebP ignores a grey read mode and returns RGB; convert what a decoder left in another colour space."""
    if image.shape[0] == channels:
        return image
    if channels == 1:
        return rgb_to_grayscale_image(image[:3])
    return image[:1].expand(3, -1, -1).contiguous() if image.shape[0] < 3 else image[:3].contiguous()


def _decode_with_pil(data: Tensor, channels: int) -> Tensor:
    """BMP, TIFF, PPM/PGM and the rest of what PIL reads but torchvision.io does not."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
            array = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except UnidentifiedImageError:
        raise ValueError("not an image file PIL or torchvision can read") from None
    tensor = torch.from_numpy(array.copy())
    return tensor.unsqueeze(0) if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def read_image_file(path: str, channels: int) -> Tensor:
    """The image at ``path`` as a uint8 ``(channels, H, W)`` tensor (1: grey, 3: RGB).

    Raises :class:`~cnnlab.errors.CorruptImageError` naming the file when it cannot be read or decoded.
    """
    return decode_bytes(read_bytes(path), channels, str(path))


class FolderDecoder:
    """``ImageFolder``'s loader: a file path → uint8 ``(channels, H, W)`` (a class, so workers can pickle it)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, path: str) -> Tensor:
        return read_image_file(path, self.channels)


def decode_jpeg_batch(encoded: Sequence[Tensor], paths: Sequence[str], channels: int,
                      device: torch.device) -> list[Tensor]:
    """Decode a batch of files' bytes on ``device``: JPEGs together with nvJPEG, the rest one by one on the CPU.

    Untested on a GPU in this project's CI (it has none); on a CPU device every file goes through
    :func:`decode_bytes`.
    """
    images: list[Tensor | None] = [None] * len(encoded)
    if device.type == "cuda":
        jpegs = [i for i, data in enumerate(encoded) if is_jpeg(data)]
        if jpegs:
            try:
                decoded = decode_jpeg([encoded[i] for i in jpegs], mode=_MODES[channels], device=device)
            except RuntimeError:
                decoded = None  # one bad file fails the whole batch: decode one by one to name it
            if decoded is not None:
                for i, image in zip(jpegs, decoded):
                    images[i] = image
    for i, image in enumerate(images):
        if image is None:
            images[i] = decode_bytes(encoded[i], channels, paths[i]).to(device, non_blocking=True)
    return images  # type: ignore[return-value]
