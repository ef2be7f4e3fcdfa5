"""LeNet-5 — Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 86(11), 1998.

No library ships LeNet-5, so it is written here. ``modern`` is the form most courses teach today: ReLU,
max-pooling, a fully connected C3 and a linear output layer (61,706 parameters for 1 channel and 10 classes).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from cnnlab.errors import ConfigError

RETINA = 32  # LeNet-5's input plane; the paper pads 28x28 MNIST digits to it.


class Retina(nn.Module):
    """Brings an image to LeNet-5's 32x32 input: zero padding for 28-31 px images (as the paper does for MNIST),
    bilinear resizing for any other size (e.g. 8x8 digits)."""

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.pad = (RETINA - image_size) if 28 <= image_size <= RETINA else None

    def forward(self, x: Tensor) -> Tensor:
        if self.image_size == RETINA:
            return x
        if self.pad is not None:
            before = self.pad // 2
            return F.pad(x, (before, self.pad - before, before, self.pad - before))
        return F.interpolate(x, size=(RETINA, RETINA), mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"{self.image_size} -> {RETINA}"


def _conv_block(in_channels: int, out_channels: int, batch_norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=5, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


class ModernLeNet5(nn.Module):
    """C1 (6@5x5) → pool → C3 (16@5x5) → pool → C5 (120@5x5) → F6 (84) → linear output."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 32, dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        self.retina = Retina(image_size)
        self.features = nn.Sequential(
            *_conv_block(in_channels, 6, batch_norm),
            nn.MaxPool2d(2),
            *_conv_block(6, 16, batch_norm),
            nn.MaxPool2d(2),
            *_conv_block(16, 120, batch_norm),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(self.retina(x)))


VARIANTS = {"modern": ModernLeNet5}


def lenet5(
    *, in_channels: int, num_classes: int, image_size: int, variant: str = "modern", dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Module:
    if variant not in VARIANTS:
        raise ConfigError(
            f"Unknown LeNet-5 variant '{variant}'. Valid variants: {', '.join(VARIANTS)}. Set model.variant."
        )
    return VARIANTS[variant](in_channels, num_classes, image_size, dropout, batch_norm)
