"""LeCun's two networks of 1989, for 16x16 digit images and 10 output units.

No library has them, so they are written here with real locally connected layers (no sharing), shared
convolutions with one bias per unit and a partially connected shared layer, reproducing the papers' counts exactly.

Y. LeCun, "Generalization and Network Design Strategies", in *Connectionism in Perspective*, 1989 — its table of
results (links / free weights):

========  ======================================================  ======  ============
variant   hidden layers                                           links   free weights
========  ======================================================  ======  ============
net1      none (a single layer)                                   2,570   2,570
net2      12 fully connected units                                3,214   3,214
net3      H1 8x8 local 3x3 stride 2, H2 4x4 local 5x5 stride 2     1,226   1,226
net4      H1 two 8x8 maps of shared 3x3 kernels, H2 as net3 on     2,266   1,132
          both maps
net5      H1 as net4, H2 four 4x4 maps of shared 5x5x2 kernels     5,194   1,060
========  ======================================================  ======  ============

Y. LeCun, B. Boser, J. S. Denker, D. Henderson, R. E. Howard, W. Hubbard, L. D. Jackel, "Backpropagation Applied
to Handwritten Zip Code Recognition", *Neural Computation* 1(4), 1989 — variant ``zipcode``: H1 twelve 8x8 maps of
shared 5x5 kernels at stride 2, H2 twelve 4x4 maps of shared 5x5 kernels each reading 8 of H1's 12 maps, H3 30
units, 10 outputs; 1,256 units, 64,660 connections, 9,760 free parameters. The paper does not say which 8 maps each
H2 map reads; the pattern here is Karpathy's (lecun1989-repro): maps 0-3 read H1 maps 0-7, maps 4-7 read 4-11,
maps 8-11 read 0-3 and 8-11. Inputs are padded with -1 (the background of images scaled to -1..1), as there.

Options beyond the papers' (for the recipes' modern variants and for studying why a method works):
``activation`` (the papers' scaled tanh, plain tanh as in Karpathy's reproduction, or ReLU), ``output`` (a linear
layer giving class scores for a cross-entropy loss, or scaled-tanh or tanh output units trained towards ±1 targets), ``init`` (torch's
default, or the papers' uniform ±2.4/F_i, F_i the unit's fan-in, or Karpathy's reading ±2.4/sqrt(F_i)) and
``dropout`` (before the last fully connected layer).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from cnnlab.models.families import LECUN1989_INPUT_SIZE as INPUT_SIZE
from cnnlab.models.layers import (ConstantPad, LocallyConnected2d, PartialSharedConv2d, ScaledTanh, SharedConv2d,
                                  linear_connections)


def _activation(name: str) -> nn.Module:
    return {"scaled_tanh": ScaledTanh, "tanh": nn.Tanh, "relu": nn.ReLU}[name]()


class LeCun1989(nn.Module):
    """``hidden`` layers, each followed by the activation, then a fully connected output layer (with a squashing
    function after it when ``output`` is ``scaled_tanh`` or ``tanh``). ``nn.Flatten``, ``nn.Dropout`` and ``ConstantPad`` entries
    of ``hidden`` are shape and regularisation steps: no activation follows them."""

    def __init__(self, hidden: list[nn.Module], out_features: int, num_classes: int, activation: str = "scaled_tanh",
                 output: str = "linear", dropout: float = 0.0, in_units: int = INPUT_SIZE * INPUT_SIZE) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for layer in hidden:
            plain = isinstance(layer, (nn.Flatten, nn.Dropout, ConstantPad))
            layers += [layer] if plain else [layer, _activation(activation)]
        self.hidden = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.output = nn.Linear(out_features, num_classes)
        self.squash = nn.Identity() if output == "linear" else _activation(output)
        self.in_units = in_units

    def forward(self, x: Tensor) -> Tensor:
        return self.squash(self.output(self.dropout(self.flatten(self.hidden(x)))))

    def _weighted(self) -> list[nn.Module]:
        return [m for m in self.hidden if any(True for _ in m.parameters(recurse=False))] + [self.output]

    def connections(self) -> int:
        """Links as the papers count them: every use of a weight, plus one per bias."""
        return sum(linear_connections(m) if isinstance(m, nn.Linear) else m.connections() for m in self._weighted())

    def units(self) -> int:
        """Units as the zip-code paper counts them: the input pixels, every hidden unit and the outputs."""
        total = self.in_units
        for m in self._weighted():
            total += m.out_features if isinstance(m, nn.Linear) else _unit_count(m)
        return total


def _unit_count(layer: nn.Module) -> int:
    if isinstance(layer, LocallyConnected2d):
        return layer.bias.numel()
    return layer.unit_bias.numel()  # SharedConv2d, PartialSharedConv2d: one bias per unit


def _fan_in(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if isinstance(layer, LocallyConnected2d):
        return layer.weight.shape[-1]
    return layer.weight[0].numel()  # SharedConv2d, PartialSharedConv2d: one output map's kernel


def init_lecun(net: LeCun1989, sqrt: bool = False, karpathy: bool = False) -> None:
    """The papers' initialisation: every weight and bias of a unit uniform in ±2.4/F_i, F_i the unit's fan-in
    (``sqrt``: ±2.4/sqrt(F_i), the reading of Karpathy's reproduction, whose text finds ±2.4/F_i too small).
    ``karpathy``: his reproduction's whole initialisation — weights in ±2.4/sqrt(F_i), biases zero, and the
    output units' biases -1, the target of nine outputs in ten."""
    for layer in net._weighted():
        fan_in = _fan_in(layer)
        bound = 2.4 / (math.sqrt(fan_in) if sqrt or karpathy else fan_in)
        for name, parameter in layer.named_parameters(recurse=False):
            if karpathy and name != "weight":
                nn.init.constant_(parameter, -1.0 if layer is net.output else 0.0)
            else:
                nn.init.uniform_(parameter, -bound, bound)


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


# The zip-code network's H2: which of H1's 12 maps each of its 12 maps reads (see the module docstring).
ZIPCODE_H2_INPUTS = (*[tuple(range(0, 8))] * 4, *[tuple(range(4, 12))] * 4, *[(0, 1, 2, 3, 8, 9, 10, 11)] * 4)
BACKGROUND = -1.0  # the padding value: the background of images scaled to -1..1


def _zipcode(c: int) -> tuple[list[nn.Module], int]:
    return [ConstantPad(2, BACKGROUND), SharedConv2d(c, 12, INPUT_SIZE + 4, 5, stride=2),  # H1: 12@8x8
            ConstantPad(2, BACKGROUND), PartialSharedConv2d(ZIPCODE_H2_INPUTS, 8 + 4, 5, stride=2),  # H2: 12@4x4
            nn.Flatten(), nn.Linear(12 * 4 * 4, 30)], 30  # H3


# The variants of families.LECUN1989_VARIANTS (which the config check and create_model read).
VARIANTS = {"net1": _net1, "net2": _net2, "net3": _net3, "net4": _net4, "net5": _net5, "zipcode": _zipcode}


def lecun1989(*, in_channels: int, num_classes: int, image_size: int, variant: str = "net5",
              activation: str = "scaled_tanh", output: str = "linear", init: str = "torch",
              dropout: float = 0.0) -> LeCun1989:
    """Net-1 … Net-5 or the zip-code network for 16x16 inputs; ``create_model`` has checked the options
    (``families.LECUN1989_*``) and ``image_size``."""
    hidden, out_features = VARIANTS[variant](in_channels)
    if variant == "zipcode" and dropout:  # Karpathy's modern.py drops H2's units, before the largest layer (H3)
        hidden.insert(hidden.index(next(m for m in hidden if isinstance(m, nn.Flatten))) + 1, nn.Dropout(dropout))
        dropout = 0.0
    net = LeCun1989(hidden, out_features, num_classes, activation, output, dropout,
                    in_units=in_channels * INPUT_SIZE * INPUT_SIZE)
    if init != "torch":
        init_lecun(net, sqrt=init == "lecun_sqrt", karpathy=init == "karpathy")
    return net
