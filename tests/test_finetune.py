"""Fine-tuning presets (model.freeze=conv / lower_conv), frozen batch norms, and model.weights=<run folder>."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab import build_model, compose_config
from cnnlab.checkpoint_file import read_checkpoint
from cnnlab.errors import ConfigError
from test_zoo import _train_a_few_steps


def _frozen_modules(net: torch.nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[0] for name, p in net.named_parameters() if not p.requires_grad}


def test_freeze_conv_keeps_every_conv_parameter_and_running_stat_bit_identical() -> None:
    net, before, losses = _train_a_few_steps(["model=lenet5_bn", "model.freeze=conv"], steps=5)
    conv_parts = ("features.0.", "features.1.", "features.4.", "features.5.", "features.8.", "features.9.")
    state = net.state_dict()
    conv_keys = [k for k in state if k.startswith(conv_parts)]
    assert any(k.endswith("running_mean") for k in conv_keys) and any(k.endswith("running_var") for k in conv_keys)
    assert all(torch.equal(state[k], before[k]) for k in conv_keys), "a frozen conv or batch-norm tensor moved"
    assert all(not torch.equal(state[k], before[k]) for k in ("classifier.1.weight", "classifier.4.weight"))


def test_freeze_lower_conv_freezes_exactly_the_first_stage_of_lenet5() -> None:
    net, before, _ = _train_a_few_steps(["model=lenet5_bn", "model.freeze=lower_conv"], steps=3)
    assert _frozen_modules(net) == {"features.0", "features.1"}  # C1 and its batch norm: 1 of 3 stages
    state = net.state_dict()
    assert all(torch.equal(state[k], before[k]) for k in state if k.startswith(("features.0.", "features.1.")))
    assert not torch.equal(state["features.4.weight"], before["features.4.weight"])
    assert not torch.equal(state["features.5.running_mean"], before["features.5.running_mean"])


@pytest.mark.parametrize(("overrides", "expected"), [
    (["model=resnet_cifar", "data=cifar10", "data.root=unused"], ("stem.", "stacks.0.")),  # 32, 16, 8 px: 1 of 3
    (["model=vgg", "model.depth=11", "data=cifar10", "data.root=unused"], ("features.0", "features.3")),  # 2 of 5
    (["model=resnet", "model.depth=18", "data=imagenet", "data.root=unused"], ("conv1", "bn1", "layer1.")),  # 2 of 5
    (["model=lecun1989", "model.variant=net5", "data.image_size=16"], ("hidden.0",)),  # H1 of H1, H2
])
def test_lower_conv_is_the_lower_half_of_the_resolution_stages(overrides: list[str], expected: tuple) -> None:
    net = build_model(compose_config([*overrides, "model.freeze=lower_conv"]))
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(expected) for n in frozen)
    conv_like = {n for n, p in net.named_parameters() if n.startswith(expected)}
    assert conv_like <= frozen
    modules = dict(net.named_modules())
    assert any(p.requires_grad and not isinstance(modules[n.rsplit(".", 1)[0]], torch.nn.Linear)
               for n, p in net.named_parameters()), "the upper conv stages must still train"


def test_freeze_conv_trains_only_the_fully_connected_layers_of_every_conv_family() -> None:
    for overrides in (["model=alexnet"], ["model=googlenet"], ["model=resnet_cifar"], ["model=lenet5"]):
        net = build_model(compose_config([*overrides, "model.freeze=conv"]))
        trained = {n.rsplit(".", 1)[0] for n, p in net.named_parameters() if p.requires_grad}
        modules = dict(net.named_modules())
        assert trained and all(isinstance(modules[m], torch.nn.Linear) or m.startswith("aux") for m in trained), \
            (overrides, trained)


def test_freeze_presets_need_conv_layers() -> None:
    with pytest.raises(ConfigError, match="freezes conv layers, and mlp has none"):
        compose_config(["model=mlp", "model.freeze=conv"])
    with pytest.raises(ConfigError, match="a list of names of parts, e.g. .* or a preset: conv"):
        compose_config(["model.freeze=upper_conv"])


def test_weights_from_a_run_folder_take_its_best_checkpoint(trained_digits_run: Path) -> None:
    net = build_model(compose_config([f"model.weights={trained_digits_run}"]))
    best = next((trained_digits_run / "checkpoints").glob("epoch*.ckpt"))
    stored = read_checkpoint(best, purpose="test")["state_dict"]
    assert all(torch.equal(v, stored[f"model.{k}"]) for k, v in net.state_dict().items())
    with pytest.raises(ConfigError, match="folder without a checkpoint"):
        build_model(compose_config([f"model.weights={trained_digits_run / '.hydra'}"]))


def test_transfer_table_and_plot_from_a_sweep(tmp_path: Path) -> None:
    """benchmarks/transfer.py reads the trials' results.json only: one line per strategy, one column per budget."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import transfer

    trials = [("RUN", "[]", 5, 0.9), ("RUN", "conv", 5, 0.8), ("RUN", "lower_conv", 5, 0.85), ("null", "[]", 5, 0.6),
              ("RUN", "[]", 10, 0.95), ("null", "[]", 10, 0.7)]
    for n, (weights, freeze, budget, acc) in enumerate(trials):
        (tmp_path / str(n)).mkdir()
        results = {"status": "completed", "test/acc": acc, "analysis/features/linear_svm_acc": acc - 0.05,
                   "overrides": ["experiment=transfer_finetune", f"model.weights={weights}", f"model.freeze={freeze}",
                                 f"data.train_per_class={budget}"]}
        (tmp_path / str(n) / "results.json").write_text(json.dumps(results))
    assert transfer.main([str(tmp_path)]) == 0
    table = (tmp_path / "transfer.md").read_text()
    assert "| from scratch | 0.6000 | 0.7000 |" in table
    assert "| full fine-tuning | 0.9000 | 0.9500 |" in table
    assert "| pre-trained features + linear SVM | 0.8500 | 0.9000 |" in table
    assert (tmp_path / "transfer.png").stat().st_size > 10_000
