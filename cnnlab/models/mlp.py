"""Fully connected classifiers of the lectures: the softmax linear classifier and the multilayer perceptron.

Written here rather than reusing ``torchvision.ops.MLP`` because that block also applies dropout to its output
layer, which would drop logits.
"""

from __future__ import annotations

from torch import Tensor, nn

from cnnlab.models.activations import activation


class MLP(nn.Module):
    """Flatten the image, then ``depth`` hidden layers of ``width`` units, then a linear layer of class scores.

    ``depth=0`` is the linear classifier ``Wx + b`` whose softmax the loss applies.
    Each hidden layer is Linear → [BatchNorm1d] → activation → [Dropout].
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int = 2,
        width: int = 256,
        activation_name: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        features = in_features
        for _ in range(depth):
            layers.append(nn.Linear(features, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(activation(activation_name))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            features = width
        layers.append(nn.Linear(features, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def mlp(
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    depth: int = 2,
    width: int = 256,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> MLP:
    return MLP(in_channels * image_size * image_size, num_classes, depth, width, activation, dropout, batch_norm)


def linear(*, in_channels: int, num_classes: int, image_size: int) -> MLP:
    """The lectures' linear classifier: class scores ``Wx + b`` of the flattened image."""
    return MLP(in_channels * image_size * image_size, num_classes, depth=0)
