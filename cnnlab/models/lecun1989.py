"""The five networks of Y. LeCun, "Generalization and Network Design Strategies", in *Connectionism in
Perspective*, 1989 — 16x16 input images, 10 output units.

No library has them, so they are written here with real locally connected layers (no sharing) and shared
convolutions with one bias per unit, reproducing the paper's table of links / free weights exactly:

======  ======================================================  ======  ============
net     hidden layers                                           links   free weights
======  ======================================================  ======  ============
net1    none (a single layer)                                   2,570   2,570
net2    12 fully connected units                                3,214   3,214
net3    H1 8x8 local 3x3 stride 2, H2 4x4 local 5x5 stride 2     1,226   1,226
net4    H1 two 8x8 maps of shared 3x3 kernels, H2 as net3 on     2,266   1,132
        both maps
net5    H1 as net4, H2 four 4x4 maps of shared 5x5x2 kernels     5,194   1,060
======  ======================================================  ======  ============
"""

from __future__ import annotations

from torch import Tensor, nn

from cnnlab.models.families import LECUN1989_INPUT_SIZE as INPUT_SIZE
from cnnlab.models.layers import LocallyConnected2d, ScaledTanh, SharedConv2d, linear_connections


class LeCun1989(nn.Module):
    """One of Net-1 … Net-5: ``hidden`` layers, each followed by the scaled tanh, then a fully connected output."""

    def __init__(self, hidden: list[nn.Module], out_features: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for layer in hidden:
            layers += [layer] if isinstance(layer, nn.Flatten) else [layer, ScaledTanh()]
        self.hidden = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.output = nn.Linear(out_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.flatten(self.hidden(x)))

    def connections(self) -> int:
        """Links as the paper counts them: every use of a weight, plus one per bias."""
        total = linear_connections(self.output)
        for layer in self.hidden:
            if isinstance(layer, nn.Linear):
                total += linear_connections(layer)
            elif hasattr(layer, "connections"):
                total += layer.connections()
        return total


def _net1(c: int) -> tuple[list[nn.Module], int]:
    return [], c * INPUT_SIZE * INPUT_SIZE


def _net2(c: int) -> tuple[list[nn.Module], int]:
    return [nn.Flatten(), nn.Linear(c * INPUT_SIZE * INPUT_SIZE, 12)], 12


def _net3(c: int) -> tuple[list[nn.Module], int]:
    return [LocallyConnected2d(c, 1, INPUT_SIZE, 3, stride=2, padding=1),
            LocallyConnected2d(1, 1, 8, 5, stride=2, padding=2)], 16


def _net4(c: int) -> tuple[list[nn.Module], int]:
    return [SharedConv2d(c, 2, INPUT_SIZE, 3, stride=2, padding=1),
            LocallyConnected2d(2, 1, 8, 5, stride=2, padding=2)], 16


def _net5(c: int) -> tuple[list[nn.Module], int]:
    return [SharedConv2d(c, 2, INPUT_SIZE, 3, stride=2, padding=1),
            SharedConv2d(2, 4, 8, 5, stride=2, padding=2)], 64


# The variants of families.LECUN1989_VARIANTS (which the config check and create_model read).
VARIANTS = {"net1": _net1, "net2": _net2, "net3": _net3, "net4": _net4, "net5": _net5}


def lecun1989(*, in_channels: int, num_classes: int, image_size: int, variant: str = "net5") -> LeCun1989:
    """Net-1 … Net-5 for 16x16 inputs; ``create_model`` has checked ``variant`` and ``image_size``."""
    hidden, out_features = VARIANTS[variant](in_channels)
    return LeCun1989(hidden, out_features, num_classes)
