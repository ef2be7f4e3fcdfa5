"""The CIFAR-10 networks of He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, §4.2:
6n+2 layers — a 3x3 convolution, three stacks of n basic blocks with 16, 32 and 64 filters (the feature map
halving between stacks), global average pooling and a linear classifier — with identity shortcuts that
zero-pad the new channels when the width doubles (option A), or without shortcuts: the "plain" networks of the
degradation experiment. torchvision only has the ImageNet ResNets, so these are written here.
ResNet-20 has 269,722 parameters and ResNet-56 853,018 (10 classes).
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from cnnlab.models.families import cifar_blocks_per_stack

WIDTHS = (16, 32, 64)


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the extra channels, so the shortcut has no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; ReLU after the sum with the shortcut (or without one, in a plain network)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, residual: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module | None = None
        if residual:
            changes_shape = stride != 1 or in_channels != out_channels
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride) if changes_shape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out, inplace=True)


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stack: int, in_channels: int = 3, num_classes: int = 10,
                 residual: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, WIDTHS[0], 3, padding=1, bias=False),
                                  nn.BatchNorm2d(WIDTHS[0]), nn.ReLU(inplace=True))
        stacks, channels = [], WIDTHS[0]
        for i, width in enumerate(WIDTHS):
            blocks = []
            for j in range(blocks_per_stack):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, residual))
                channels = width
            stacks.append(nn.Sequential(*blocks))
        self.stacks = nn.Sequential(*stacks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stacks(self.stem(x))).flatten(1))


def resnet_cifar(*, in_channels: int, num_classes: int, image_size: int, depth: int = 20) -> CifarResNet:
    return CifarResNet(cifar_blocks_per_stack(depth), in_channels, num_classes, residual=True)


def plain_cifar(*, in_channels: int, num_classes: int, image_size: int, depth: int = 20) -> CifarResNet:
    return CifarResNet(cifar_blocks_per_stack(depth), in_channels, num_classes, residual=False)
