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

from cnnlab.models.families import (
    INCEPTION_SMALL_STEM_BELOW, RESNET_DEPTHS, SMALLEST_POOLABLE, VGG_DEPTHS, VGG_VARIANTS,
)

NetT = TypeVar("NetT", bound=nn.Module)
SMALL_IMAGE = 64


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
    config = VGG_DEPTHS[depth]
    variant_of = VGG_VARIANTS[variant]  # create_model has checked that the variant's depth is ``depth``
    if variant_of is not None:
        config = variant_of[1]
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


def inception_v3(*, in_channels: int, num_classes: int, image_size: int, aux_logits: bool = False,
                 aux_weight: float = 0.4, dropout: float = 0.5) -> Inception3:
    """Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016
    (torchvision.models.inception_v3; 299x299 inputs, at least 75x75, or any size with the small-image stem)."""
    small = image_size < INCEPTION_SMALL_STEM_BELOW  # the auxiliary classifier's grid: families.inception_grid_size
    net = Inception3(num_classes=num_classes, aux_logits=aux_logits, init_weights=True, dropout=dropout)
    net.aux_loss_weight = aux_weight
    if small:
        net.Conv2d_1a_3x3 = InceptionConv(in_channels, 32, kernel_size=3, stride=1)
        net.maxpool1, net.maxpool2 = nn.Identity(), nn.Identity()
    elif in_channels != 3:
        net.Conv2d_1a_3x3 = InceptionConv(in_channels, 32, kernel_size=3, stride=2)
    return _upsampled_if_tiny(net, image_size)


# --- ResNet --------------------------------------------------------------------------------------------------

RESNETS = {depth: getattr(tvm, f"resnet{depth}") for depth in RESNET_DEPTHS}


def resnet(*, in_channels: int, num_classes: int, image_size: int, depth: int = 18) -> tvm.ResNet:
    """He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (torchvision.models.resnet)."""
    net = RESNETS[depth](weights=None, num_classes=num_classes)
    if _is_small(image_size):
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net
