"""Adapters that build torchvision's reference architectures for any input channels, size and class count.

Built unchanged (so parameter counts match torchvision's) at 3 channels and ImageNet-sized inputs; for small
images (<= 64 px) the ImageNet stem (7x7 stride-2 conv + max-pool) would shrink a 32x32 image to 8x8 before the
first block, so it is swapped for a 3x3 stride-1 conv, the usual choice for CIFAR-sized inputs.
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from cnnlab.errors import ConfigError

SMALL_IMAGE = 64

RESNETS = {18: tvm.resnet18, 34: tvm.resnet34, 50: tvm.resnet50, 101: tvm.resnet101, 152: tvm.resnet152}


def resnet(*, in_channels: int, num_classes: int, image_size: int, depth: int = 18) -> tvm.ResNet:
    """He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (torchvision.models.resnet)."""
    if depth not in RESNETS:
        raise ConfigError(
            f"ResNet has no depth {depth}. Valid depths: {', '.join(map(str, RESNETS))}. Set model.depth to one "
            f"of them (for CIFAR-style 6n+2 depths use model=resnet_cifar)."
        )
    net = RESNETS[depth](weights=None, num_classes=num_classes)
    if image_size <= SMALL_IMAGE:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net
