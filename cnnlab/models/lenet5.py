"""LeNet-5 — Y. LeCun, L. Bottou, Y. Bengio, P. Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 86(11), 1998.

No library ships LeNet-5, so it is written here, in two variants:

* ``classic`` — the paper's network: scaled tanh, trainable subsampling (S2, S4: one coefficient and one bias per
  map), C3 connected to S2 through the paper's Table I, C5, F6 and an RBF output layer (or a linear one).
  Parameters: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164; 60,840 in all with the RBF output,
  60,850 with a linear one.
* ``modern`` — the form most courses teach today: ReLU, max-pooling, a fully connected C3 and a linear output
  (61,706 parameters for 1 channel and 10 classes).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cnnlab.models.layers import ScaledTanh

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


# Table I of the paper: the S2 maps each C3 map reads.
C3_INPUTS = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


class Subsampling(nn.Module):
    """The paper's S2/S4: the sum of each 2x2 block, times a trainable coefficient, plus a trainable bias, per map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.coefficient = nn.Parameter(torch.full((channels, 1, 1), 0.25))
        self.bias = nn.Parameter(torch.zeros(channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2) * 4 * self.coefficient + self.bias


class PartiallyConnectedConv(nn.Module):
    """C3: each output map convolves only the input maps the connection table lists for it.

    Only the listed kernels are parameters (``weight`` holds them back to back); each forward pass places them in
    a full kernel tensor whose other entries are fixed zeros, so the whole layer is one convolution call.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], kernel_size: int) -> None:
        super().__init__()
        in_maps = 1 + max(max(inputs) for inputs in table)
        pairs = [(out, inp) for out, inputs in enumerate(table) for inp in inputs]
        self.full_shape = (len(table), in_maps, kernel_size, kernel_size)
        self.register_buffer("slots", torch.tensor([out * in_maps + inp for out, inp in pairs]), persistent=False)
        fan_in = torch.tensor([len(table[out]) * kernel_size**2 for out, _ in pairs], dtype=torch.float32)
        bound = (1 / fan_in.sqrt())[:, None, None]
        self.weight = nn.Parameter((torch.rand(len(pairs), kernel_size, kernel_size) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(len(table)) * 2 - 1) / torch.tensor([len(i) * kernel_size**2 for i in table]).sqrt())

    def forward(self, x: Tensor) -> Tensor:
        out_maps, in_maps, k, _ = self.full_shape
        kernels = self.weight.new_zeros(out_maps * in_maps, k, k).index_copy(0, self.slots, self.weight)
        return F.conv2d(x, kernels.view(self.full_shape), self.bias)


class RBFOutput(nn.Module):
    """Euclidean radial basis units: the score of class i is minus the squared distance of the input to its
    centre. The paper fixes the centres to stylised 7x12 bitmaps of the characters; here they are fixed random
    ±1 codes, which play the same role (parameters that are counted but not trained)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        codes = torch.randint(0, 2, (num_classes, in_features), generator=torch.Generator().manual_seed(0)) * 2 - 1
        self.centres = nn.Parameter(codes.float(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return -torch.cdist(x, self.centres).pow(2)


class ClassicLeNet5(nn.Module):
    """C1 → S2 → C3 (Table I) → S4 → C5 → F6 → RBF (or linear) output, with the scaled tanh throughout."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 32, output: str = "rbf"):
        super().__init__()
        if output not in ("rbf", "linear"):
            raise ValueError(f"output must be 'rbf' (the paper's) or 'linear', got {output!r}")
        self.retina = Retina(image_size)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), ScaledTanh(),  # C1
            Subsampling(6), ScaledTanh(),  # S2
            PartiallyConnectedConv(C3_INPUTS, 5), ScaledTanh(),  # C3
            Subsampling(16), ScaledTanh(),  # S4
            nn.Conv2d(16, 120, 5), ScaledTanh(),  # C5
        )
        self.f6 = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), ScaledTanh())
        self.output = RBFOutput(84, num_classes) if output == "rbf" else nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.f6(self.features(self.retina(x))))


def lenet5(
    *, in_channels: int, num_classes: int, image_size: int, variant: str = "modern", dropout: float = 0.0,
    batch_norm: bool = False, output: str = "rbf",
) -> nn.Module:
    """``variant``: ``modern`` (uses ``dropout``, ``batch_norm``) or ``classic`` (uses ``output``: rbf or linear);
    ``create_model`` has checked them against ``families.LENET5_VARIANTS`` and ``LENET5_OUTPUTS``."""
    if variant == "classic":
        return ClassicLeNet5(in_channels, num_classes, image_size, output)
    return ModernLeNet5(in_channels, num_classes, image_size, dropout, batch_norm)
