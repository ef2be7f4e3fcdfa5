"""The lectures' papers as recipes: LeCun (1989) Net-1 … Net-5, the zip-code network, LeNet-5 classic.

Checks that every paper recipe composes with the protocol its header promises, that the zip-code network has the
paper's exact counts, that the options the recipes need (±1 targets, val_split=0, fixed random subsets, the full
test set beside a subset, piecewise schedules, LeCun's squeezing) do what they say, and a short real run of the
Net-1 recipe on MNIST reporting test_full/acc.
"""

from __future__ import annotations

import pytest
import torch

from cnnlab import build_datamodule, build_model, compose_config
from cnnlab.data.batch_augment import random_affine
from cnnlab.training.losses import build_loss
from conftest import SHARED_DATA, results_of, run_cli, run_dir_of

MNIST = (f"data.root={SHARED_DATA}", "data.download=false")
needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="needs MNIST in ../shared/data")

NETS = [f"lecun1989_net{n}" for n in range(1, 6)]
FAITHFUL = [*NETS, "lecun1989_zipcode"]
MODERN = [f"{name}_modern" for name in FAITHFUL]


@pytest.mark.parametrize("recipe", FAITHFUL)
def test_faithful_lecun_recipes_follow_the_papers_protocol(recipe: str) -> None:
    cfg = compose_config([f"experiment={recipe}"])
    assert cfg.data.image_size == 16 and list(cfg.data.mean) == [0.5] and list(cfg.data.std) == [0.5]  # -1..1
    assert cfg.data.batch_size == 1 and cfg.data.val_split == 0  # per-pattern updates on every training image
    assert cfg.loss.name == "mse" and list(cfg.loss.targets) == [-1.0, 1.0]
    assert cfg.optimizer.weight_decay == 0 and cfg.optimizer.get("momentum", 0) == 0
    assert cfg.callbacks.model_checkpoint.monitor is None  # the final network is tested
    if recipe in NETS:
        assert (cfg.data.train_per_class, cfg.data.test_per_class, cfg.data.full_test) == (32, 16, True)
        assert cfg.optimizer.name == "sdlm" and cfg.model.init == "lecun"  # the paper's diagonal Newton, ±2.4/F_i
        assert cfg.model.activation == "scaled_tanh" and cfg.model.output == "scaled_tanh"
    else:  # the zip-code recipe follows Karpathy's reproduction: plain per-pattern SGD, tanh units, his init
        assert cfg.optimizer.name == "sgd" and cfg.model.init == "karpathy"
        assert cfg.model.activation == "tanh" and cfg.model.output == "tanh"
        assert (cfg.data.train_size, cfg.data.test_size, cfg.trainer.max_epochs) == (7291, 2007, 23)


@pytest.mark.parametrize("recipe", MODERN)
def test_modern_lecun_recipes_keep_the_network_and_data(recipe: str) -> None:
    faithful, modern = compose_config([f"experiment={recipe.removesuffix('_modern')}"]), compose_config(
        [f"experiment={recipe}"])
    assert modern.loss.name == "cross_entropy" and modern.model.output == "linear"
    assert modern.model.variant == faithful.model.variant
    for key in ("image_size", "train_per_class", "test_per_class", "train_size", "test_size", "full_test"):
        assert modern.data[key] == faithful.data[key], key
    same_size = [sum(p.numel() for p in build_model(c).parameters()) for c in (faithful, modern)]
    assert same_size[0] == same_size[1]


def test_lenet5_classic_recipes_use_the_papers_20_pass_schedule() -> None:
    plain, distorted = (compose_config([f"experiment={r}"]) for r in
                        ("lenet5_classic_mnist", "lenet5_classic_mnist_distortions"))
    for cfg in (plain, distorted):
        assert (cfg.model.variant, cfg.model.output, cfg.trainer.max_epochs) == ("classic", "rbf", 20)
        assert list(cfg.scheduler.milestones) == [2, 5, 8, 12]
        assert list(cfg.scheduler.factors) == [0.4, 0.2, 0.1, 0.02]  # 5e-4, 2e-4, 1e-4, 5e-5, 1e-5 in the paper
        assert cfg.loss.name == "map"  # the paper's criterion for its RBF penalties
    assert not plain.augmentation and "squeeze" in distorted.augmentation.random_affine


def test_zipcode_network_has_the_papers_units_connections_and_free_parameters() -> None:
    net = build_model(compose_config(["model=lecun1989", "model.variant=zipcode", "data=mnist",
                                      "data.image_size=16"]))
    assert (net.units(), net.connections(), sum(p.numel() for p in net.parameters())) == (1_256, 64_660, 9_760)
    h2 = net.hidden[4]
    kernels = h2.weight.new_zeros(h2.full_shape).flatten(0, 1).index_copy(0, h2.slots, h2.weight.flatten(0, 1))
    reads = (kernels.view(h2.full_shape).abs().sum((2, 3)) > 0).sum(1)
    assert reads.tolist() == [8] * 12  # each H2 map reads 8 of H1's 12 maps
    assert net(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_lecun_initialisation_is_uniform_within_2_4_over_fan_in() -> None:
    net = build_model(compose_config(["model=lecun1989", "model.variant=net2", "model.init=lecun", "data=mnist",
                                      "data.image_size=16"]))
    hidden, output = net.hidden[1], net.output
    assert hidden.weight.abs().max() <= 2.4 / 256 and hidden.weight.abs().max() > 0.9 * 2.4 / 256
    assert output.weight.abs().max() <= 2.4 / 12 and output.weight.abs().max() > 0.8 * 2.4 / 12


def test_karpathy_initialisation_zeroes_the_biases_and_starts_the_outputs_at_minus_one() -> None:
    net = build_model(compose_config(["model=lecun1989", "model.variant=zipcode", "model.init=karpathy",
                                      "model.activation=tanh", "model.output=tanh", "data=mnist",
                                      "data.image_size=16"]))
    h1 = net.hidden[1]
    assert h1.weight.abs().max() <= 2.4 / 5 and h1.weight.abs().max() > 0.9 * 2.4 / 5  # ±2.4/sqrt(25)
    assert h1.unit_bias.abs().max() == 0 and net.hidden[7].bias.abs().max() == 0
    assert net.output.bias.tolist() == [-1.0] * 10
    assert isinstance(net.squash, torch.nn.Tanh)
    assert net(torch.zeros(1, 1, 16, 16)).abs().max() < 1  # plain tanh outputs


def test_mse_with_targets_compares_the_outputs_to_minus_and_plus_one() -> None:
    loss = build_loss("mse", 3, targets=[-1.0, 1.0])
    outputs = torch.tensor([[1.0, -1.0, -1.0], [0.0, 0.0, 0.0]])
    assert loss(outputs[:1], torch.tensor([0])).item() == 0.0
    assert loss(outputs[1:], torch.tensor([2])).item() == pytest.approx(1.0)  # every output one away
    assert loss(outputs[:1], torch.tensor([1])).item() == pytest.approx(8 / 3)


def test_map_criterion_is_the_papers_formula_and_keeps_pulling_while_every_penalty_is_large() -> None:
    """LeCun et al. (1998) eq. 9: E = y_D + log(exp(-j) + sum_i exp(-y_i)), the scores being -y (RBF outputs)."""
    j = 0.1
    loss = build_loss("map", 3, rubbish_penalty=j)
    penalties = torch.tensor([[30.0, 45.0, 60.0]], requires_grad=True)
    value = loss(-penalties, torch.tensor([0]))
    expected = 30.0 + torch.log(torch.exp(torch.tensor(-j)) + torch.exp(-penalties.detach()).sum())
    assert value.item() == pytest.approx(expected.item())
    # Already classified right, by a margin of 15: cross-entropy has stopped pulling F6 onto the correct code,
    # the MAP criterion has not (every penalty is still far above j).
    value.backward()
    assert penalties.grad[0, 0].item() == pytest.approx(1.0, abs=1e-6)
    scores = (-penalties.detach()).requires_grad_()
    build_loss("cross_entropy", 3)(scores, torch.tensor([0])).backward()
    assert abs(scores.grad[0, 0].item()) < 1e-6
    with pytest.raises(Exception, match="rubbish_penalty"):
        compose_config(["loss=map", "loss.rubbish_penalty=-1"])


def test_piecewise_schedule_follows_the_factors() -> None:
    from cnnlab.training.optim import build_schedule

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = compose_config(["experiment=lenet5_classic_mnist"])
    from omegaconf import OmegaConf

    schedule = build_schedule(optimizer, OmegaConf.to_container(cfg.scheduler), 20)["scheduler"]
    rates = []
    for _ in range(14):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([1, 1, .4, .4, .4, .2, .2, .2, .1, .1, .1, .1, .02, .02])


def test_squeeze_makes_digits_narrower_and_taller() -> None:
    x = torch.zeros(1, 1, 28, 28)
    x[..., 10:18, 10:18] = 1
    squeezed = random_affine(x, squeeze=[0.25, 0.25])[0, 0] > 0.5
    rows, cols = squeezed.any(1).sum().item(), squeezed.any(0).sum().item()
    assert rows > 8 > cols


@needs_mnist
def test_fixed_subsets_are_the_same_for_every_seed_and_val_split_zero_keeps_all() -> None:
    sizes = ["data=mnist", *MNIST, "data.train_size=100", "data.test_size=30", "data.val_split=0",
             "data.image_size=16"]
    modules = [build_datamodule(compose_config([*sizes, f"seed={seed}"])) for seed in (1, 2)]
    for module in modules:
        module.setup()
    first, second = modules
    assert len(first.train_set) == 100 and len(first.val_set) == 0 and len(first.test_set) == 30
    assert torch.equal(first.test_set.labels, second.test_set.labels)
    assert torch.equal(first.train_set.labels.sort().values, second.train_set.labels.sort().values)


@needs_mnist
def test_net1_recipe_reports_the_subset_and_the_full_test_set(tmp_path) -> None:
    result = run_cli("train", "experiment=lecun1989_net1", *MNIST, "trainer.max_epochs=2",
                     "trainer.enable_model_summary=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = results_of(run_dir_of(result))
    assert results["status"] == "completed" and results["epochs"] == 2
    # 160 test images (16 per class) and the 10,000 of MNIST's test split, both at 16x16
    assert results["test/acc"] * 160 == pytest.approx(round(results["test/acc"] * 160), abs=1e-3)
    assert results["test_full/acc"] * 10_000 == pytest.approx(round(results["test_full/acc"] * 10_000), abs=1e-2)
    assert results["test_full/acc"] > 0.5  # two passes over 320 digits already beat chance by far


def test_sdlm_curvature_is_the_gauss_newton_diagonal_and_scales_each_step() -> None:
    from cnnlab.training.sdlm import DiagonalLevenbergMarquardt, output_curvature

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    x = torch.randn(50, 4)
    optimizer = DiagonalLevenbergMarquardt(net.parameters(), lr=0.1, mu=0.5)
    optimizer.estimate_curvature(net, x, output_curvature("mse", 3, targets=[-1, 1]), chunk=20)
    # For y = W x + b under the mean squared error over 3 outputs: d2E/dy_o2 = 2/3, dy_o/dW_oi = x_i
    expected = (2 / 3) * x.square().mean(0).expand(3, 4)
    assert torch.allclose(optimizer.state[net.weight]["curvature"], expected, atol=1e-6)
    assert torch.allclose(optimizer.state[net.bias]["curvature"], torch.full((3,), 2 / 3))
    before = net.weight.detach().clone()
    net.weight.grad, net.bias.grad = torch.ones(3, 4), torch.zeros(3)
    optimizer.step()
    assert torch.allclose(before - net.weight.detach(), 0.1 / (0.5 + expected))


def test_sdlm_gives_shared_kernels_the_curvature_of_all_their_uses() -> None:
    from cnnlab.models.layers import SharedConv2d
    from cnnlab.training.sdlm import DiagonalLevenbergMarquardt, output_curvature

    conv = torch.nn.Sequential(SharedConv2d(1, 1, 6, 3, stride=1, padding=1), torch.nn.Flatten())
    optimizer = DiagonalLevenbergMarquardt(conv.parameters())
    optimizer.estimate_curvature(conv, torch.ones(4, 1, 6, 6), output_curvature("mse", 36, targets=[-1, 1]))
    kernel, unit_bias = (optimizer.state[p]["curvature"] for p in conv.parameters())
    # the centre tap is used at all 36 positions, a corner tap at the 25 whose neighbour is inside the image
    assert kernel[0, 0, 1, 1].item() == pytest.approx(36 * 2 / 36)
    assert kernel[0, 0, 0, 0].item() == pytest.approx(25 * 2 / 36)
    assert torch.allclose(unit_bias, torch.full_like(unit_bias, 2 / 36))  # each unit's own bias: one use
