"""Adversarial examples (cnnlab/attacks.py, the ``adversarial`` and ``fooling`` analyses) and adversarial training
(``training.adversarial``), on LeNet-5 trained on real MNIST images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, SHARED_DATA, results_of, run_cli, run_dir_of

MNIST = (f"data.root={SHARED_DATA}", "data.download=false")
needs_mnist = pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="needs MNIST in ../shared/data")
EPSILONS = (0, 0.02, 0.05, 0.1, 0.2)
SUBSET = ("data.train_per_class=300", "data.test_per_class=40")  # 3,000 training and 400 test images


@pytest.fixture(scope="session")
def mnist_lenet5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LeNet-5 trained for 3 epochs on 3,000 MNIST images (about 97 % on its 400 test images), then analysed with
    ``adversarial`` and ``fooling`` by ``cnnlab analyze``; shared by the tests that read the run folder."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("needs MNIST in ../shared/data")
    cwd = tmp_path_factory.mktemp("mnist_lenet5")
    result = run_cli("train", "experiment=lenet5_mnist", *MNIST, *SUBSET, "trainer.max_epochs=3",
                     "trainer.enable_model_summary=false", cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = run_dir_of(result)
    analysed = run_cli("analyze", str(run_dir), "analysis=[adversarial,fooling]",
                       f"analysis.adversarial.epsilons=[{','.join(map(str, EPSILONS))}]",
                       "analysis.adversarial.pgd_steps=10", "analysis.adversarial.examples=3", cwd=cwd)
    assert analysed.returncode == 0, analysed.stderr[-3000:]
    return run_dir


def _key(attack: str, epsilon: float) -> str:
    return f"analysis/adversarial/{attack}_acc@{epsilon:g}"


@needs_mnist
def test_accuracy_under_attack_falls_with_epsilon_and_pgd_is_stronger(mnist_lenet5: Path) -> None:
    results = results_of(mnist_lenet5)
    fgsm = [results[_key("fgsm", e)] for e in EPSILONS]
    pgd = [results[_key("pgd", e)] for e in EPSILONS]
    # ε = 0 is the clean accuracy, exactly as the run's own test measured it on the same 400 images
    assert fgsm[0] == pgd[0] == results["analysis/adversarial/clean_acc"] == pytest.approx(results["test/acc"],
                                                                                              abs=1e-7)
    assert all(a >= b for a, b in zip(fgsm, fgsm[1:])), fgsm  # non-increasing in ε
    assert all(p <= f for p, f in zip(pgd, fgsm)), (pgd, fgsm)  # PGD at least as strong at every ε
    assert fgsm[-1] < fgsm[0] - 0.2 and pgd[-1] < 0.3  # ε = 0.2 hurts a standard network badly
    report = json.loads((mnist_lenet5 / "analysis" / "adversarial" / "adversarial.json").read_text())
    for attack in ("fgsm", "pgd"):
        for row in report["attacks"][attack]["curve"]:  # every adversarial image within ε, inside [0, 1]
            assert row["max_distance"] <= row["epsilon"] + 1e-6 and row["max_distance"] >= 0.99 * row["epsilon"]
            assert 0 <= row["min_pixel"] and row["max_pixel"] <= 1
    assert report["test_images"] == 400 and report["attacks"]["pgd"]["steps"] == 10
    for png in report["figures"]:
        assert (mnist_lenet5 / "analysis" / "adversarial" / png).stat().st_size > 10_000
    assert len(report["examples"]["indices"]) == 3


@needs_mnist
def test_fooling_images_reach_the_target_confidence_for_every_class(mnist_lenet5: Path) -> None:
    results = results_of(mnist_lenet5)
    assert results["analysis/fooling/fooled_fraction"] == 1.0
    assert results["analysis/fooling/min_confidence"] >= 0.99
    report = json.loads((mnist_lenet5 / "analysis" / "fooling" / "fooling.json").read_text())
    assert [c["index"] for c in report["classes"]] == list(range(10))
    assert all(c["reached"] and c["confidence"] >= 0.99 and 0 < c["steps"] <= 1000 for c in report["classes"])
    assert (mnist_lenet5 / "analysis" / "fooling" / "fooling_images.png").stat().st_size > 10_000


@pytest.fixture(scope="session")
def mnist_parts(mnist_lenet5: Path) -> tuple:
    """The fixture run's saved config (with the adversarial and fooling options), data module and checkpoint, as
    ``cnnlab analyze`` builds them, for calling the analyses and attacks directly."""
    from omegaconf import open_dict

    from cnnlab.analysis import run_checkpoint
    from cnnlab.config import compose_config
    from cnnlab.config.saved_run import load_saved_run
    from cnnlab.data import build_datamodule

    saved = load_saved_run(str(mnist_lenet5), verb="analyze")
    cfg = saved.config
    with open_dict(cfg):
        cfg.analysis = compose_config(["analysis=[adversarial,fooling]"]).analysis
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    return cfg, datamodule, run_checkpoint(mnist_lenet5, saved.results)


def _context(run_dir: Path, parts: tuple, name: str):
    """A fresh copy of the trained network in an ``AnalysisContext`` writing into ``run_dir/direct/<name>``."""
    from cnnlab.analysis.common import AnalysisContext, network_for_analysis

    cfg, datamodule, checkpoint = parts
    net = network_for_analysis(cfg, datamodule.num_classes, checkpoint)
    out = run_dir / "direct" / name
    out.mkdir(parents=True, exist_ok=True)
    return AnalysisContext(cfg, net, datamodule, torch.device("cpu"), run_dir, checkpoint, out_dir=out)


@needs_mnist
@pytest.mark.parametrize("name", ["adversarial", "fooling"])
def test_analysis_leaves_modes_gradient_flags_and_hooks_as_they_were(mnist_lenet5: Path, mnist_parts: tuple,
                                                                    name: str) -> None:
    import importlib

    from cnnlab.analysis.common import hook_count

    context = _context(mnist_lenet5, mnist_parts, name)
    cfg = context.cfg
    net = context.net
    net.train()
    modules = list(net.modules())
    modules[1].eval()  # a mixed state, as a partly frozen network has
    params = list(net.parameters())
    params[0].requires_grad_(False)
    modes = [m.training for m in modules]
    flags = [p.requires_grad for p in params]
    hooks = hook_count(net)
    options = dict(cfg.analysis[name])
    if name == "adversarial":
        options.update(max_test=50, epsilons=[0, 0.1], pgd_steps=3, examples=2)
    module = importlib.import_module(f"cnnlab.analysis.{name}")
    headline = module.run(context, options)
    assert headline
    assert [m.training for m in modules] == modes
    assert [p.requires_grad for p in params] == flags
    assert all(p.grad is None for p in params)
    assert hook_count(net) == hooks


@needs_mnist
def test_attacks_stay_in_the_ball_and_the_image_range_targeted_and_with_restarts(mnist_lenet5: Path,
                                                                                 mnist_parts: tuple) -> None:
    from cnnlab.analysis.adversarial import pixel_model
    from cnnlab.attacks import Attack

    context = _context(mnist_lenet5, mnist_parts, "adversarial")
    model = pixel_model(context)
    images, labels = next(iter(context.batches("test", 48)))
    pixels = model.pixels(images)
    targets = (labels + 1) % 10
    fooled = {}
    for attack in (Attack("fgsm", 0.2), Attack("fgsm", 0.2, targeted=True), Attack("pgd", 0.2, steps=10),
                   Attack("pgd", 0.2, steps=10, restarts=2), Attack("pgd", 0.2, steps=10, targeted=True)):
        goal = targets if attack.targeted else labels
        adversarial = attack(model, pixels, goal, torch.Generator().manual_seed(0))
        assert (adversarial - pixels).abs().max() <= 0.2 + 1e-6, attack
        assert adversarial.min() >= 0 and adversarial.max() <= 1, attack
        with torch.no_grad():
            predicted = model(adversarial).argmax(1)
        fooled[attack] = float(((predicted == targets) if attack.targeted else (predicted != labels)).float().mean())
    fgsm, targeted_fgsm, pgd, restarted, targeted_pgd = fooled.values()
    assert pgd >= fgsm > 0.3 and restarted >= pgd  # a restart keeps each image's worst example
    assert targeted_pgd >= targeted_fgsm and targeted_pgd > 0.3  # untouched, an image lands there in ~0 % of cases


def test_adversarial_training_attacks_the_fraction_in_eval_mode_and_restores_train_mode() -> None:
    """``training.adversarial``: the first ``fraction`` of the batch is replaced by images within ε (in pixel
    space), the rest is untouched, and batch norm is back in train mode with running statistics unchanged by
    the attack."""
    from cnnlab import build_datamodule, compose_config
    from cnnlab.run import build_classifier

    cfg = compose_config(["training.adversarial.attack=pgd", "training.adversarial.epsilon=0.1",
                          "training.adversarial.fraction=0.5", "training.adversarial.steps=3"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    classifier = build_classifier(cfg, datamodule)
    images, labels = next(iter(datamodule.train_dataloader()))
    images = datamodule.batch_pipeline(images, train=False)
    classifier.train()
    norms = [m for m in classifier.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms, "lenet5_bn has batch norm"
    before = [m.running_mean.clone() for m in norms]
    mixed = classifier.adversarial_batch(images, labels)
    assert all(m.training for m in classifier.model.modules())
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    half = round(0.5 * len(images))
    assert torch.equal(mixed[half:], images[half:])
    std, mean = cfg.data.std[0], cfg.data.mean[0]
    change = ((mixed[:half] - images[:half]) * std).abs()  # in pixel units
    assert 0.05 < change.max() <= 0.1 + 1e-5
    assert (mixed[:half] * std + mean).min() >= -1e-6 and (mixed[:half] * std + mean).max() <= 1 + 1e-6
    assert not any(p.grad is not None for p in classifier.parameters())


@pytest.mark.slow
@needs_mnist
def test_adversarial_training_raises_fgsm_accuracy_at_the_recipes_epsilon(tmp_path: Path) -> None:
    """``experiment=lenet5_mnist_adversarial`` against ``experiment=lenet5_mnist``, both on 5,000 MNIST images
    for 3 epochs: FGSM accuracy at the recipe's ε = 0.1 on 500 test images (measured: standard 0.642,
    adversarially trained 0.780; the full recipes: see README)."""
    accuracy = {}
    for recipe in ("lenet5_mnist", "lenet5_mnist_adversarial"):
        result = run_cli("train", f"experiment={recipe}", *MNIST, "data.train_per_class=500",
                         "data.test_per_class=50", "trainer.max_epochs=3", "trainer.enable_model_summary=false",
                         "analysis=[adversarial]", "analysis.adversarial.epsilons=[0,0.1]",
                         "analysis.adversarial.attacks=[fgsm]", "analysis.adversarial.examples=0", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        accuracy[recipe] = results_of(run_dir_of(result))
    standard = accuracy["lenet5_mnist"]["analysis/adversarial/fgsm_acc@0.1"]
    robust = accuracy["lenet5_mnist_adversarial"]["analysis/adversarial/fgsm_acc@0.1"]
    assert robust > standard + 0.08, (standard, robust)
    assert accuracy["lenet5_mnist_adversarial"]["test/acc"] > 0.9


# --- bad input: refused by the config check, before torch loads --------------------------------------------------

NO_TORCH = ("import sys; from cnnlab.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")


def _without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("override, says", [
    ("analysis.adversarial.epsilons=[0,0.1,1.5]", "analysis.adversarial.epsilons"),
    ("analysis.adversarial.epsilons=[-0.1]", "distinct numbers in [0, 1]"),
    ("analysis.adversarial.attacks=[fgsm,cw]", "attacks from: fgsm, pgd"),
    ("analysis.adversarial.example_epsilon=2", "analysis.adversarial.example_epsilon"),
])
def test_bad_adversarial_options_fail_before_torch(override: str, says: str) -> None:
    result = _without_torch("train", "analysis=[adversarial]", override)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("override, says", [
    ("training.adversarial.epsilon=1.5", "must be a number in (0, 1]"),
    ("training.adversarial.attack=cw", "one of null, 'fgsm', 'pgd'"),
    ("training.adversarial.fraction=0", "training.adversarial.fraction"),
])
def test_bad_adversarial_training_options_fail_before_torch(override: str, says: str) -> None:
    result = _without_torch("train", override)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
