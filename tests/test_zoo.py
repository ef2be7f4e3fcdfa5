"""The model zoo against the published numbers, and every model training on CPU."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from cnnlab import build_datamodule, build_model, compose_config
from cnnlab.errors import ConfigError
from cnnlab.run import build_classifier
from cnnlab.layer_table import summarize
from test_config import options

IMAGENET = ["data=imagenet", "data.root=unused"]
MNIST16 = ["data=mnist", "data.image_size=16"]

# (overrides at the paper's input size and class count, parameters) — each number from the paper or torchvision.
PARAMETER_COUNTS = [
    (["model=lenet5", "model.variant=classic", "model.output=rbf", "data=mnist"], 60_840),
    (["model=lenet5", "model.variant=classic", "model.output=linear", "data=mnist"], 60_850),
    (["model=lenet5", "model.variant=modern", "data=mnist"], 61_706),
    (["model=alexnet", *IMAGENET], 61_100_840),
    (["model=alexnet", "model.lrn=true", *IMAGENET], 61_100_840),
    (["model=vgg", "model.depth=11", *IMAGENET], 132_863_336),
    (["model=vgg", "model.depth=13", *IMAGENET], 133_047_848),
    (["model=vgg", "model.depth=16", *IMAGENET], 138_357_544),
    (["model=vgg", "model.depth=19", *IMAGENET], 143_667_240),
    (["model=vgg", "model.depth=11", "model.variant=lrn", *IMAGENET], 132_863_336),  # LRN has no parameters
    (["model=googlenet", *IMAGENET], 6_624_904),
    (["model=resnet", "model.depth=18", *IMAGENET], 11_689_512),
    (["model=resnet", "model.depth=34", *IMAGENET], 21_797_672),
    (["model=resnet", "model.depth=50", *IMAGENET], 25_557_032),
    (["model=resnet", "model.depth=101", *IMAGENET], 44_549_160),
    (["model=resnet", "model.depth=152", *IMAGENET], 60_192_808),
    (["model=resnet_cifar", "model.depth=20", "data=cifar10"], 269_722),
    (["model=resnet_cifar", "model.depth=56", "data=cifar10"], 853_018),
    (["model=plain_cifar", "model.depth=20", "data=cifar10"], 269_722),  # option-A shortcuts add no parameters
]

# LeCun (1989), table of results: links (connections) / free weights; zipcode: LeCun et al. (1989), the zip-code
# network's 64,660 connections and 9,760 free parameters (its 1,256 units: tests/test_papers.py).
LECUN_1989 = {"net1": (2570, 2570), "net2": (3214, 3214), "net3": (1226, 1226), "net4": (2266, 1132),
              "net5": (5194, 1060), "zipcode": (64_660, 9_760)}


def parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(("overrides", "expected"), PARAMETER_COUNTS, ids=lambda v: "-".join(v) if isinstance(v, list) else "")
def test_published_parameter_counts(overrides: list[str], expected: int) -> None:
    assert parameters(build_model(compose_config(overrides))) == expected


@pytest.mark.parametrize("variant", LECUN_1989)
def test_lecun_1989_links_and_free_weights(variant: str) -> None:
    net = build_model(compose_config(["model=lecun1989", f"model.variant={variant}", *MNIST16]))
    assert (net.connections(), parameters(net)) == LECUN_1989[variant]


def test_lecun_1989_layers_are_really_local_and_shared() -> None:
    from cnnlab.models.layers import LocallyConnected2d, SharedConv2d

    net3 = build_model(compose_config(["model=lecun1989", "model.variant=net3", *MNIST16]))
    local = [m for m in net3.modules() if isinstance(m, LocallyConnected2d)]
    assert len(local) == 2 and local[0].weight.shape == (64, 1, 9)  # 8x8 units, each its own 3x3 kernel
    net5 = build_model(compose_config(["model=lecun1989", "model.variant=net5", *MNIST16]))
    shared = [m for m in net5.modules() if isinstance(m, SharedConv2d)]
    assert [tuple(m.weight.shape) for m in shared] == [(2, 1, 3, 3), (4, 2, 5, 5)]
    assert [tuple(m.unit_bias.shape) for m in shared] == [(2, 8, 8), (4, 4, 4)]  # one bias per unit


def test_lenet5_classic_layers() -> None:
    net = build_model(compose_config(["model=lenet5", "model.variant=classic", "data=mnist"]))
    per_layer = [parameters(m) for m in net.features if parameters(m)] + [parameters(net.f6)]
    assert per_layer == [156, 12, 1_516, 32, 48_120, 10_164]  # C1, S2, C3, S4, C5, F6


def test_vgg_configuration_c_has_1x1_convolutions() -> None:
    net = build_model(compose_config(["model=vgg", "model.depth=16", "model.variant=conv1x1", *IMAGENET]))
    kernels = [m.kernel_size for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert len(kernels) == 13 and kernels.count((1, 1)) == 3


def test_summary_of_lecun_net_shows_links_and_weights() -> None:
    cfg = compose_config(["model=lecun1989", "model.variant=net4", *MNIST16])
    table = summarize(build_model(cfg), (1, 16, 16)).table()
    assert "links (connections) 2,266, free weights 1,132" in table
    assert "LocallyConnected2d" in table and "SharedConv2d" in table


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=vgg", "model.depth=17"], "Valid depths: 11, 13, 16, 19"),
        (["model=vgg", "model.variant=lrn"], "set model.depth=11"),
        (["model=resnet_cifar", "model.depth=21"], r"6n\+2 layers; 21 is not"),
        (["model=lecun1989", "model.variant=net6", *MNIST16], "Valid variants: net1, net2, net3, net4, net5"),
        (["model=lecun1989"], "data.image_size=16"),
        (["model=inception_v3", "model.aux_logits=true"], "17x17 grid"),
    ],
)
def test_unsupported_depths_and_variants_list_the_valid_ones(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        build_model(compose_config(overrides))


QUICK_SGD = ("data=digits", "data.batch_size=8", "optimizer=sgd", "optimizer.lr=0.01", "scheduler=none")


def _train_a_few_steps(overrides: list[str], steps: int = 3,
                       base: tuple[str, ...] = QUICK_SGD) -> tuple[torch.nn.Module, dict, list[float]]:
    cfg = compose_config([*base, *overrides])
    datamodule = build_datamodule(cfg)
    classifier = build_classifier(cfg, datamodule)
    before = {k: v.clone() for k, v in classifier.model.state_dict().items()}
    losses: list[float] = []

    class RecordLoss(pl.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[RecordLoss()])
    trainer.fit(classifier, datamodule=datamodule)
    return classifier.model, before, losses


@pytest.mark.parametrize("model", options("model"))
def test_every_model_trains_on_cpu(model: str) -> None:
    extra = ["data.image_size=16"] if model == "lecun1989" else []
    net, before, losses = _train_a_few_steps([f"model={model}", *extra])
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    changed = [k for k, v in net.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed, "no parameter moved"


def test_googlenet_trains_its_auxiliary_classifiers() -> None:
    net, before, _ = _train_a_few_steps(["model=googlenet", "model.aux_logits=true"], steps=2)
    assert net.aux_loss_weight == 0.3
    assert not torch.equal(net.aux1.fc2.weight, before["aux1.fc2.weight"])


def test_frozen_parts_do_not_move() -> None:
    net, before, _ = _train_a_few_steps(["model=vgg", "model.depth=11", "model.freeze=[features]"], steps=2)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items() if k.startswith("features"))
    assert not torch.equal(net.classifier[6].weight, before["classifier.6.weight"])


def test_weights_from_a_checkpoint_file(tmp_path) -> None:
    net = build_model(compose_config(["model=mlp"]))
    torch.save(net.state_dict(), tmp_path / "mlp.pth")
    again = build_model(compose_config(["model=mlp", f"model.weights={tmp_path / 'mlp.pth'}"]))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def test_pretrained_weights_offline_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the weights must be downloaded

    def no_network(self, *args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", no_network)
    with pytest.raises(ConfigError, match="must be downloaded from https://download.pytorch.org"):
        build_model(compose_config(["model=resnet", "model.weights=ResNet18_Weights.IMAGENET1K_V1"]))


def test_depth_is_a_sweep_axis(tmp_path) -> None:
    from cnnlab.config import check_command_line

    check_command_line(["-m", "model=resnet_cifar", "model.depth=20,56"])
    check_command_line(["-m", "model=mlp", "model.depth=1,2,4"])


@pytest.mark.parametrize("recipe", ["resnet20_cifar10", "plain20_cifar10"])
def test_he_et_al_recipes_train_on_cifar_files(recipe: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    import real_format

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    real_format.write_cifar10(tmp_path)
    cfg = compose_config([f"experiment={recipe}", f"data.root={tmp_path}", "data.download=false"])
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.1, 0.9, 1e-4)
    assert list(cfg.scheduler.milestones) == [32000, 48000] and cfg.trainer.max_steps == 64000
    net, before, losses = _train_a_few_steps([f"experiment={recipe}", f"data.root={tmp_path}",
                                              "data.download=false", "data.batch_size=8"], steps=2, base=())
    assert all(torch.isfinite(torch.tensor(losses)))
    has_shortcuts = any(type(m).__name__ == "ZeroPadShortcut" for m in net.modules())
    assert has_shortcuts == (recipe == "resnet20_cifar10")
