"""Adapters that build torchvision's reference architectures for any input channels, size and class count.

At 3 channels and ImageNet-sized inputs the networks are torchvision's, unchanged, so their parameter counts are
the published ones. For small images (<= 64 px) the ImageNet stem (a large strided convolution, then
max-pooling) would shrink a 32x32 image to a few pixels before the first block, so it is swapped for a 3x3
stride-1 convolution — the usual choice for CIFAR-sized inputs. Networks whose pooling still cannot take
images below 32 px (AlexNet, VGG, Inception-v3 on 8x8 digits or 28x28 MNIST) see them bilinearly upsampled to
32x32 first. Other channel counts get a first convolution of the same geometry with the right number of inputs.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence, TypeVar, Union

from torch import nn
from torch.nn import functional as F
from torchvision import models as tvm
from torchvision.models.googlenet import BasicConv2d as GoogLeNetConv
from torchvision.models.inception import BasicConv2d as InceptionConv

from cnnlab.errors import ConfigError

NetT = TypeVar("NetT", bound=nn.Module)
SMALL_IMAGE = 64
SMALLEST_POOLABLE = 32


def _is_small(image_size: int) -> bool:
    return image_size <= SMALL_IMAGE


def _upsample_input(module: nn.Module, args: tuple, size: tuple[int, int]) -> tuple:
    return (F.interpolate(args[0], size=size, mode="bilinear", align_corners=False), *args[1:])


def _upsampled_if_tiny(net: NetT, image_size: int) -> NetT:
    """Resize inputs below 32 px to 32x32 in a forward pre-hook, which leaves parameter names (and so pretrained
    weights and ``model.freeze``) as torchvision has them."""
    if image_size < SMALLEST_POOLABLE:
        net.register_forward_pre_hook(partial(_upsample_input, size=(SMALLEST_POOLABLE, SMALLEST_POOLABLE)))
    return net


def _paper_lrn() -> nn.LocalResponseNorm:
    """Krizhevsky et al.'s local response normalisation: k=2, n=5, alpha=1e-4, beta=0.75."""
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


# --- AlexNet -------------------------------------------------------------------------------------------------

def alexnet(*, in_channels: int, num_classes: int, image_size: int, lrn: bool = False,
            dropout: float = 0.5) -> tvm.AlexNet:
    """Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural Networks", NIPS 2012
    (torchvision.models.alexnet, the single-GPU variant). ``lrn`` adds the paper's local response normalisation
    after the first and second convolutions (it has no parameters)."""
    net = tvm.AlexNet(num_classes=num_classes, dropout=dropout)
    if _is_small(image_size):
        net.features[0] = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
    elif in_channels != 3:
        net.features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
    if lrn:
        layers = list(net.features)
        # After the ReLUs of conv1 (index 1) and conv2 (index 4), before their max-pooling, as in the paper.
        net.features = nn.Sequential(*layers[:2], _paper_lrn(), *layers[2:5], _paper_lrn(), *layers[5:])
    return _upsampled_if_tiny(net, image_size)


# --- VGG -----------------------------------------------------------------------------------------------------

Layer = Union[int, str, tuple]
VGG_CONFIGS: dict[str, list[Layer]] = {
    # Simonyan & Zisserman, Table 1. Integers are 3x3 convolutions; ("1x1", n) a 1x1 convolution.
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, ("1x1", 256), "M", 512, 512, ("1x1", 512), "M",
          512, 512, ("1x1", 512), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}
VGG_DEPTHS = {11: "A", 13: "B", 16: "D", 19: "E"}
VGG_VARIANTS = {"standard": None, "lrn": (11, "A-LRN"), "conv1x1": (16, "C")}


def _vgg_features(layers: Sequence[Layer], batch_norm: bool, in_channels: int) -> nn.Sequential:
    """torchvision's ``vgg.make_layers``, extended with 1x1 convolutions, LRN and any number of input channels."""
    modules: list[nn.Module] = []
    channels = in_channels
    for layer in layers:
        if layer == "M":
            modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        if layer == "LRN":
            modules.append(_paper_lrn())
            continue
        kernel, out = (1, layer[1]) if isinstance(layer, tuple) else (3, layer)
        modules.append(nn.Conv2d(channels, out, kernel_size=kernel, padding=kernel // 2))
        if batch_norm:
            modules.append(nn.BatchNorm2d(out))
        modules.append(nn.ReLU(inplace=True))
        channels = out
    return nn.Sequential(*modules)


def vgg(*, in_channels: int, num_classes: int, image_size: int, depth: int = 16, variant: str = "standard",
        batch_norm: bool = False, dropout: float = 0.5) -> tvm.VGG:
    """Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.

    ``depth`` 11, 13, 16, 19 are configurations A, B, D, E (torchvision.models.vgg*); ``variant=lrn`` is A-LRN
    (depth 11) and ``variant=conv1x1`` is C (depth 16, a 1x1 convolution closing each of the last three stacks).
    """
    if depth not in VGG_DEPTHS:
        raise ConfigError(f"VGG has no depth {depth}. Valid depths: 11, 13, 16, 19 (configurations A, B, D, E). "
                          f"Set model.depth.")
    if variant not in VGG_VARIANTS:
        raise ConfigError(f"Unknown VGG variant '{variant}'. Valid variants: {', '.join(VGG_VARIANTS)}.")
    config = VGG_DEPTHS[depth]
    if VGG_VARIANTS[variant] is not None:
        needed_depth, config = VGG_VARIANTS[variant]
        if depth != needed_depth:
            raise ConfigError(f"VGG variant '{variant}' is configuration {config}, which has {needed_depth} layers: "
                              f"set model.depth={needed_depth}.")
    net = tvm.VGG(_vgg_features(VGG_CONFIGS[config], batch_norm, in_channels), num_classes=num_classes,
                  init_weights=True, dropout=dropout)
    return _upsampled_if_tiny(net, image_size)


# --- GoogLeNet and Inception-v3 ------------------------------------------------------------------------------

class GoogLeNet(tvm.GoogLeNet):
    """torchvision's GoogLeNet; while training with ``aux_logits`` it returns the two auxiliary classifiers'
    scores too, which the training loss adds with the paper's weight of 0.3."""

    aux_loss_weight = 0.3


class Inception3(tvm.Inception3):
    """torchvision's Inception-v3 (factorised 7x7 / 3x3 modules); its auxiliary classifier's loss is added with
    weight 0.4, as in torchvision's reference training recipe."""

    aux_loss_weight = 0.4


def googlenet(*, in_channels: int, num_classes: int, image_size: int, aux_logits: bool = False,
              aux_weight: float = 0.3, dropout: float = 0.2) -> GoogLeNet:
    """Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (torchvision.models.googlenet)."""
    net = GoogLeNet(num_classes=num_classes, aux_logits=aux_logits, init_weights=True, dropout=dropout)
    net.aux_loss_weight = aux_weight
    if _is_small(image_size):
        net.conv1 = GoogLeNetConv(in_channels, 64, kernel_size=3, stride=1, padding=1)
        net.maxpool1, net.maxpool2 = nn.Identity(), nn.Identity()
    elif in_channels != 3:
        net.conv1 = GoogLeNetConv(in_channels, 64, kernel_size=7, stride=2, padding=3)
    return net


def _inception_grid_size(image_size: int, small_stem: bool) -> int:
    """The side of the 17x17 grid (at 299 px) that Inception-v3's auxiliary classifier reads."""
    size = image_size - 2 if small_stem else (image_size - 3) // 2 + 1  # Conv2d_1a
    size -= 2  # Conv2d_2a
    if not small_stem:
        size = (size - 3) // 2 + 1  # maxpool1
    size -= 2  # Conv2d_4a
    if not small_stem:
        size = (size - 3) // 2 + 1  # maxpool2
    return (size - 3) // 2 + 1  # Mixed_6a


def inception_v3(*, in_channels: int, num_classes: int, image_size: int, aux_logits: bool = False,
                 aux_weight: float = 0.4, dropout: float = 0.5) -> Inception3:
    """Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016
    (torchvision.models.inception_v3; 299x299 inputs, at least 75x75, or any size with the small-image stem)."""
    small = image_size < 75
    if aux_logits and _inception_grid_size(max(image_size, SMALLEST_POOLABLE), small) < 17:
        raise ConfigError(f"Inception-v3's auxiliary classifier needs a 17x17 grid, which {image_size}x{image_size} "
                          f"inputs do not reach (299 px do). Set model.aux_logits=false or data.image_size=299.")
    net = Inception3(num_classes=num_classes, aux_logits=aux_logits, init_weights=True, dropout=dropout)
    net.aux_loss_weight = aux_weight
    if small:
        net.Conv2d_1a_3x3 = InceptionConv(in_channels, 32, kernel_size=3, stride=1)
        net.maxpool1, net.maxpool2 = nn.Identity(), nn.Identity()
    elif in_channels != 3:
        net.Conv2d_1a_3x3 = InceptionConv(in_channels, 32, kernel_size=3, stride=2)
    return _upsampled_if_tiny(net, image_size)


# --- ResNet --------------------------------------------------------------------------------------------------

RESNETS = {18: tvm.resnet18, 34: tvm.resnet34, 50: tvm.resnet50, 101: tvm.resnet101, 152: tvm.resnet152}


def resnet(*, in_channels: int, num_classes: int, image_size: int, depth: int = 18) -> tvm.ResNet:
    """He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (torchvision.models.resnet)."""
    if depth not in RESNETS:
        raise ConfigError(
            f"ResNet has no depth {depth}. Valid depths: {', '.join(map(str, RESNETS))}. Set model.depth to one "
            f"of them (for CIFAR-style 6n+2 depths use model=resnet_cifar)."
        )
    net = RESNETS[depth](weights=None, num_classes=num_classes)
    if _is_small(image_size):
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net
