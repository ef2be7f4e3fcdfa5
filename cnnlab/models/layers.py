"""Layers of the early convolutional networks that neither torch nor torchvision provides.

Each layer can report its *connections* (links, as LeCun counts them: one per weight use, biases included),
which differ from its free parameters when weights are shared.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class LocallyConnected2d(nn.Module):
    """A convolution-shaped layer with no weight sharing: every output unit has its own kernel and bias.

    Implemented with ``unfold``: each output location multiplies its own receptive field by its own weights.
    """

    def __init__(self, in_channels: int, out_channels: int, in_size: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.out_size = _output_size(in_size, kernel_size, stride, padding)
        fan_in = in_channels * kernel_size * kernel_size
        locations = self.out_size * self.out_size
        self.weight = nn.Parameter(torch.empty(locations, out_channels, fan_in))
        self.bias = nn.Parameter(torch.empty(out_channels, self.out_size, self.out_size))
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        patches = F.unfold(x, self.kernel_size, stride=self.stride, padding=self.padding)  # (N, fan_in, L)
        out = torch.einsum("nfl,lof->nol", patches, self.weight)
        return out.reshape(x.shape[0], -1, self.out_size, self.out_size) + self.bias

    def connections(self) -> int:
        return self.weight.numel() + self.bias.numel()


class SharedConv2d(nn.Conv2d):
    """A convolution (one kernel shared by every unit of a feature map) with a separate bias for every unit,
    as in LeCun's 1989 networks."""

    def __init__(self, in_channels: int, out_channels: int, in_size: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.out_size = _output_size(in_size, kernel_size, stride, padding)
        fan_in = in_channels * kernel_size * kernel_size
        self.unit_bias = nn.Parameter(torch.empty(out_channels, self.out_size, self.out_size).uniform_(
            -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in)))

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) + self.unit_bias

    def connections(self) -> int:
        units = self.unit_bias.numel()
        return units * (self.weight[0].numel() + 1)


class PartialSharedConv2d(nn.Module):
    """A shared convolution in which each output map reads only the input maps ``table`` lists for it, with a
    separate bias for every unit (the zip-code network's H2: 12 maps, each reading 8 of H1's 12).

    Only the listed kernels are parameters (``weight`` holds them back to back, every map reading as many input
    maps); each forward pass places them in a full kernel tensor whose other entries are fixed zeros, so the
    layer stays one convolution call. ``torch`` has grouped convolutions, but groups cannot overlap as the
    paper's connection pattern does.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], in_size: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        reads = {len(inputs) for inputs in table}
        if len(reads) != 1:
            raise ValueError("every output map must read the same number of input maps")
        self.reads = reads.pop()
        in_maps = 1 + max(max(inputs) for inputs in table)
        self.full_shape = (len(table), in_maps, kernel_size, kernel_size)
        self.stride, self.padding = stride, padding
        self.out_size = _output_size(in_size, kernel_size, stride, padding)
        slots = [out * in_maps + inp for out, inputs in enumerate(table) for inp in inputs]
        self.register_buffer("slots", torch.tensor(slots), persistent=False)
        fan_in = self.reads * kernel_size * kernel_size
        bound = 1 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(len(table), self.reads, kernel_size, kernel_size).uniform_(-bound, bound))
        self.unit_bias = nn.Parameter(torch.empty(len(table), self.out_size, self.out_size).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        out_maps, in_maps, k, _ = self.full_shape
        flat = self.weight.reshape(-1, k, k)
        kernels = flat.new_zeros(out_maps * in_maps, k, k).index_copy(0, self.slots, flat)
        return F.conv2d(x, kernels.view(self.full_shape), stride=self.stride, padding=self.padding) + self.unit_bias

    def connections(self) -> int:
        return self.unit_bias.numel() * (self.weight[0].numel() + 1)

    def extra_repr(self) -> str:
        out_maps, in_maps, k, _ = self.full_shape
        return (f"{in_maps} -> {out_maps} maps, each reading {self.reads}, kernel_size=({k}, {k}), "
                f"stride={self.stride}, padding={self.padding}")


class ConstantPad(nn.Module):
    """Pads the feature maps with a constant: -1, the background of images scaled to -1..1, in the zip-code
    network (Karpathy's reproduction pads so)."""

    def __init__(self, padding: int, value: float) -> None:
        super().__init__()
        self.padding, self.value = padding, value

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, (self.padding,) * 4, value=self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


def linear_connections(layer: nn.Linear) -> int:
    return layer.weight.numel() + (layer.bias.numel() if layer.bias is not None else 0)


class ScaledTanh(nn.Module):
    """LeCun's squashing function ``A tanh(S x)`` with A = 1.7159 and S = 2/3, so that f(±1) = ±1."""

    def forward(self, x: Tensor) -> Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))
