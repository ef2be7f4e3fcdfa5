"""Every model option builds from its config and maps a batch of the data's shape to class scores."""

from __future__ import annotations

import pytest
import torch

from cnnlab import build_model, compose_config
from test_config import options


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("data", ["digits", "mnist", "cifar100"])
def test_forward_pass_on_the_data_shape(model: str, data: str) -> None:
    extra = ["data.image_size=16"] if model == "lecun1989" else []  # LeCun's 1989 nets read 16x16 images
    cfg = compose_config([f"model={model}", f"data={data}", *extra])
    net = build_model(cfg).eval()
    x = torch.randn(2, cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
    assert net(x).shape == (2, cfg.data.num_classes)


@pytest.mark.parametrize(
    ("overrides", "params"),
    [
        # Published / reference counts, at the paper's input size and class count.
        (["model=lenet5", "data=mnist"], 61_706),
        (["model=resnet", "model.depth=18", "data=imagenet", "data.root=x"], 11_689_512),
        (["model=resnet", "model.depth=50", "data=imagenet", "data.root=x"], 25_557_032),
        (["model=linear", "data=mnist"], 28 * 28 * 10 + 10),
        (["model=mlp", "model.depth=1", "model.width=100", "data=mnist"], 784 * 100 + 100 + 100 * 10 + 10),
    ],
)
def test_parameter_counts(overrides: list[str], params: int) -> None:
    net = build_model(compose_config(overrides))
    assert sum(p.numel() for p in net.parameters()) == params


def test_mlp_depth_is_the_number_of_hidden_layers() -> None:
    for depth in (0, 1, 4):
        net = build_model(compose_config(["model=mlp", f"model.depth={depth}"]))
        assert sum(isinstance(m, torch.nn.Linear) for m in net.modules()) == depth + 1


def test_leaky_relu_slope_is_the_lectures() -> None:
    net = build_model(compose_config(["model=mlp", "model.activation=leaky_relu"]))
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.1}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=resnet", "model.depth=20"], "Valid depths: 18, 34, 50, 101, 152"),
        (["model=mlp", "model.activation=swishy"], "Valid activations: sigmoid, tanh, relu, leaky_relu"),
        (["model=lenet5", "model.variant=classic2"], "Valid variants: modern, classic"),
        (["model=mlp", "+model.widht=3"], "has no option model.widht"),
    ],
)
def test_invalid_model_options_are_explained(overrides: list[str], expected: str) -> None:
    from cnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
        build_model(compose_config(overrides))
