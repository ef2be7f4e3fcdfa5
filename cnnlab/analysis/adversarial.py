"""``adversarial``: how much accuracy the network keeps under gradient attacks.

For each attack (FGSM, L∞ PGD; ``cnnlab.attacks``) and each ε of ``epsilons`` (pixel units: the images are in
[0, 1], the dataset's normalisation runs inside ``PixelModel``), the test images are attacked and classified
again. ε = 0 is no attack: its accuracy is the clean accuracy of the same images. Untargeted attacks push each
image away from its true class; targeted ones (``targeted: true``) towards a target class (``target``: the next
class, a random one, or a fixed one), and also report how often the image lands there.

Writes ``adversarial.json`` (accuracies, the largest L∞ distance and the pixel range of the adversarial images at
each ε, times), ``accuracy_vs_epsilon.png`` (one line per attack) and ``examples.png``: the lecture's "+ .05 ×"
figure, original (class, confidence) + ε × sign of the gradient = adversarial (class, confidence). Headline
numbers: ``clean_acc`` and ``<attack>_acc@<ε>`` (``fgsm_acc@0.0314``), ε written by
``cnnlab.config.rules.epsilon_key``. The network is attacked in eval mode; its modes, ``requires_grad`` flags and
hooks are as before afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from cnnlab.analysis.common import AnalysisContext, NetworkStateKept, pyplot, save_figure, write_json
from cnnlab.attacks import Attack, PixelModel
from cnnlab.config.rules import epsilon_key
from cnnlab.errors import ConfigError

ATTACK_NAMES = {"fgsm": "FGSM", "pgd": "PGD"}
EXAMPLE_POOL = 500  # the lecture's figure picks its images among the first this many attacked


def attack_for(name: str, epsilon: float, options: Mapping[str, Any]) -> Attack:
    return Attack(name, float(epsilon), steps=options.get("pgd_steps", 10), step_size=options.get("pgd_step_size"),
                  random_start=options.get("pgd_random_start", True), restarts=options.get("pgd_restarts", 1),
                  targeted=bool(options.get("targeted", False)))


def targets_for(labels: Tensor, num_classes: int, target: Any, generator: torch.Generator) -> Tensor:
    """The classes a targeted attack pushes each image towards: never the true class."""
    if target == "next":
        return (labels + 1) % num_classes
    if target == "random":  # uniform over the other classes
        shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
        return (labels + shift) % num_classes
    if int(target) >= num_classes:
        raise ConfigError(f"analysis.adversarial.target={target}: this network has {num_classes} classes "
                          f"(0 to {num_classes - 1}). Pick one of them, or target=next or target=random.")
    return torch.full_like(labels, int(target))


def pixel_model(context: AnalysisContext) -> PixelModel:
    spec = context.datamodule.spec
    return PixelModel(context.net, spec["mean"], spec["std"]).to(context.device)


def logits_of(net: nn.Module, images: Tensor) -> Tensor:
    output = net(images)
    return (output[0] if isinstance(output, (tuple, list)) else output).float()


def measure(context: AnalysisContext, options: Mapping[str, Any], indices: Tensor | None) -> dict[str, Any]:
    """Attack the test images ``indices`` (all when None) with every attack at every ε. Returns, per attack and
    ε: the number of images still classified correctly (and, targeted, classified as the target), the largest
    L∞ distance to the original and the range of the adversarial pixels, and the seconds it took."""
    epsilons = [float(e) for e in options["epsilons"]]
    attacks = list(options.get("attacks", ["fgsm", "pgd"]))
    targeted = bool(options.get("targeted", False))
    model = pixel_model(context)
    generator = torch.Generator().manual_seed(int(context.cfg.seed))
    attack_generator = torch.Generator(device=context.device).manual_seed(int(context.cfg.seed))
    stats = {name: {eps: {"correct": 0, "hit": 0, "max_distance": 0.0, "min_pixel": 1.0, "max_pixel": 0.0,
                          "seconds": 0.0} for eps in epsilons} for name in attacks}
    clean_correct = total = 0
    for images, labels in context.batches("test", options.get("batch_size", 500), indices, desc="adversarial: test"):
        with torch.no_grad():
            clean = logits_of(context.net, images).argmax(1)  # the network on its usual input: ε = 0 exactly
        clean_correct += int((clean == labels).sum())
        total += len(labels)
        pixels = model.pixels(images)
        goal = targets_for(labels, context.num_classes, options.get("target", "next"), generator) if targeted \
            else labels
        for name in attacks:
            for eps in epsilons:
                entry = stats[name][eps]
                started = time.perf_counter()
                if eps == 0:  # no perturbation: the clean predictions themselves
                    predicted, adversarial = clean, pixels
                else:
                    adversarial = attack_for(name, eps, options)(model, pixels, goal, attack_generator)
                    with torch.no_grad():
                        predicted = model(adversarial).argmax(1)
                entry["seconds"] += time.perf_counter() - started
                entry["correct"] += int((predicted == labels).sum())
                entry["hit"] += int((predicted == goal).sum()) if targeted else 0
                entry["max_distance"] = max(entry["max_distance"], float((adversarial - pixels).abs().max()))
                entry["min_pixel"] = min(entry["min_pixel"], float(adversarial.min()))
                entry["max_pixel"] = max(entry["max_pixel"], float(adversarial.max()))
    return {"images": total, "clean_correct": clean_correct, "stats": stats}


# --- figures -----------------------------------------------------------------------------------------------------

def plot_curves(path: Path, curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
                title: str, ylabel: str = "test accuracy") -> Path:
    """Accuracy against ε: ``curves[network][attack] = (epsilons, accuracies)``, a colour per attack and a line
    style per network (one network: solid lines)."""
    plt = pyplot()
    colours = {"fgsm": "tab:blue", "pgd": "tab:red"}
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    largest = 0.0
    for n, (network, by_attack) in enumerate(curves.items()):
        for attack, (epsilons, accuracies) in by_attack.items():
            label = ATTACK_NAMES.get(attack, attack) + (f", {network}" if len(curves) > 1 else "")
            ax.plot(epsilons, accuracies, styles[n % len(styles)], marker="o", markersize=4,
                    color=colours.get(attack), label=label)
            largest = max(largest, max(epsilons))
    ax.set_xlabel("ε: largest change of any pixel (L∞, images in [0, 1])")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(-0.02 * largest, 1.02 * largest)
    top = ax.secondary_xaxis("top", functions=(lambda x: x * 255, lambda x: x / 255))
    top.set_xlabel("ε in grey levels (× 255)")
    ax.grid(alpha=0.3)
    if len(curves) > 1:  # long labels: below the axes, clear of the curves
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=len(curves), frameon=False)
        fig.set_figheight(fig.get_figheight() + 0.25 * sum(len(c) for c in curves.values()) / len(curves))
    else:
        ax.legend(fontsize=9, loc="lower left")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def _show(ax: Any, image: Tensor, signed: bool = False) -> Any:
    """An image in [0, 1] (or, ``signed``, a perturbation in [-1, 1]: red up, blue down, white unchanged)."""
    ax.set_xticks([])
    ax.set_yticks([])
    if signed:
        shown = image[0] if image.shape[0] == 1 else image.mean(0)
        return ax.imshow(shown.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    if image.shape[0] == 1:
        return ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    return ax.imshow(image[:3].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")


def plot_examples(path: Path, originals: Tensor, perturbations: Tensor, adversarials: Tensor,
                  before: Sequence[tuple[str, float]], after: Sequence[tuple[str, float]], true: Sequence[str],
                  epsilon: float, attack: str, title: str) -> Path:
    """The lecture's figure, one row per image: original + ε × perturbation = adversarial, each with the class
    the network gives it and its confidence. ``perturbations`` are (adversarial − original) / ε, in [-1, 1]:
    FGSM's sign of the gradient as applied (a pixel already at 0 or 1 cannot move further out)."""
    plt = pyplot()
    rows = len(originals)
    # image, "+ ε ×", image, "=", image: the signs get narrow columns of their own
    fig, axes = plt.subplots(rows, 5, figsize=(8.4, 2.25 * rows + 1.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 0.42, 1, 0.25, 1], "wspace": 0.05, "hspace": 0.55})
    fig.subplots_adjust(top=1 - 1.0 / fig.get_figheight(), bottom=0.95 / fig.get_figheight(), left=0.02,
                        right=0.98)
    shown = None
    middle = "sign of the gradient" if attack == "fgsm" else "perturbation / ε"
    for row in range(rows):
        left, plus, centre, equals, right = axes[row]
        for ax, text in ((plus, f"+ {epsilon:g} ×"), (equals, "=")):
            ax.axis("off")
            ax.text(0.5, 0.5, text, fontsize=12, ha="center", va="center", transform=ax.transAxes)
        _show(left, originals[row])
        left.set_title(f"true {true[row]}\npredicted {before[row][0]} ({100 * before[row][1]:.1f} %)", fontsize=8)
        shown = _show(centre, perturbations[row], signed=True)
        centre.set_title(f"{middle} ({ATTACK_NAMES.get(attack, attack)}),\nas applied (pixels stay in [0, 1])",
                         fontsize=8)
        _show(right, adversarials[row])
        fooled = after[row][0] != true[row]
        right.set_title(f"adversarial\npredicted {after[row][0]} ({100 * after[row][1]:.1f} %)", fontsize=8,
                        color="tab:red" if fooled else "black")
    if shown is not None:
        box = axes[-1, 2].get_position()
        bar_axes = fig.add_axes((box.x0, 0.5 / fig.get_figheight(), box.width, 0.12 / fig.get_figheight()))
        bar = fig.colorbar(shown, cax=bar_axes, orientation="horizontal", ticks=[-1, 0, 1])
        bar.set_label("change / ε (blue: darker, red: lighter)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return save_figure(fig, path, title, 10, tight=False)  # laid out by hand above: room for the colour bar


def lecture_examples(context: AnalysisContext, options: Mapping[str, Any], indices: Tensor | None) -> dict | None:
    """The images of the lecture's figure: among the first ``EXAMPLE_POOL`` attacked test images, the correctly
    classified ones the attack fools at ``example_epsilon`` first, then others; None with ``examples: 0``."""
    count = options.get("examples", 4)
    if not count:
        return None
    epsilon = float(options.get("example_epsilon", 0.05))
    attack = options.get("example_attack", "fgsm")
    pool = indices[:EXAMPLE_POOL] if indices is not None else torch.arange(min(EXAMPLE_POOL, context.size("test")))
    model = pixel_model(context)
    images, labels = next(iter(context.batches("test", len(pool), pool, desc="adversarial: examples")))
    pixels = model.pixels(images)
    generator = torch.Generator(device=context.device).manual_seed(int(context.cfg.seed))
    goal = (targets_for(labels, context.num_classes, options.get("target", "next"),
                        torch.Generator().manual_seed(int(context.cfg.seed)))
            if options.get("targeted") else labels)
    adversarial = attack_for(attack, epsilon, options)(model, pixels, goal, generator)
    with torch.no_grad():
        before = logits_of(context.net, images).softmax(1)
        after = model(adversarial).float().softmax(1)
    correct = before.argmax(1) == labels
    fooled = correct & (after.argmax(1) != labels)
    order = torch.cat([fooled.nonzero().flatten(), (correct & ~fooled).nonzero().flatten(),
                       (~correct).nonzero().flatten()])[:count]
    classes = context.classes
    pick = order.cpu()
    name = (lambda p: [(classes[int(c)], float(v)) for v, c in zip(*p.max(1))])
    return {"indices": [int(pool[i]) for i in pick], "epsilon": epsilon, "attack": attack,
            "originals": pixels[order].cpu(), "adversarials": adversarial[order].cpu(),
            "perturbations": ((adversarial[order] - pixels[order]) / epsilon).cpu(),
            "before": name(before[order].cpu()), "after": name(after[order].cpu()),
            "true": [classes[int(c)] for c in labels[order].cpu()], "fooled_in_pool": int(fooled.sum()),
            "correct_in_pool": int(correct.sum())}


# --- the analysis ------------------------------------------------------------------------------------------------

def run(context: AnalysisContext, options: Mapping[str, Any]) -> dict[str, float]:
    net = context.net
    indices = context.subset("test", options.get("max_test"))
    with NetworkStateKept(net):
        net.eval()
        for param in net.parameters():  # gradients with respect to the images only
            param.requires_grad_(False)
        measured = measure(context, options, indices)
        examples = lecture_examples(context, options, indices)
    total, targeted = measured["images"], bool(options.get("targeted", False))
    clean = measured["clean_correct"] / max(1, total)
    kind = "targeted_" if targeted else ""
    headline: dict[str, float] = {"clean_acc": clean}
    report: dict[str, Any] = {"checkpoint": context.checkpoint, "test_images": total, "clean_acc": clean,
                              "targeted": targeted, "attacks": {}, "figures": []}
    if targeted:
        report["target"] = options.get("target", "next")
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for name, by_epsilon in measured["stats"].items():
        rows = []
        for eps, entry in sorted(by_epsilon.items()):
            row = {"epsilon": eps, "acc": entry["correct"] / max(1, total), "max_distance": entry["max_distance"],
                   "min_pixel": entry["min_pixel"], "max_pixel": entry["max_pixel"],
                   "seconds": round(entry["seconds"], 3)}
            if targeted:
                row["target_rate"] = entry["hit"] / max(1, total)
                headline[f"{name}_target_rate@{epsilon_key(eps)}"] = row["target_rate"]
            headline[f"{name}_{kind}acc@{epsilon_key(eps)}"] = row["acc"]
            rows.append(row)
        settings = {"steps": options.get("pgd_steps", 10), "step_size": options.get("pgd_step_size"),
                    "random_start": options.get("pgd_random_start", True),
                    "restarts": options.get("pgd_restarts", 1)} if name == "pgd" else {}
        report["attacks"][name] = {**settings, "curve": rows}
        curves[name] = ([r["epsilon"] for r in rows], [r["acc"] for r in rows])
    what = "targeted attacks" if targeted else "attack"
    figures = [plot_curves(context.out_dir / "accuracy_vs_epsilon.png", {context.title: curves},
                           f"{context.title}: test accuracy under {what} ({total:,} images, clean {clean:.4f})")]
    if examples is not None:
        figures.append(plot_examples(
            context.out_dir / "examples.png", examples["originals"], examples["perturbations"],
            examples["adversarials"], examples["before"], examples["after"], examples["true"], examples["epsilon"],
            examples["attack"],
            f"{context.title}: {ATTACK_NAMES.get(examples['attack'], examples['attack'])} at ε = "
            f"{examples['epsilon']:g}\n(fools {examples['fooled_in_pool']} of the {examples['correct_in_pool']} "
            f"correctly classified images it was tried on)"))
        report["examples"] = {k: examples[k] for k in ("indices", "epsilon", "attack", "before", "after", "true",
                                                       "fooled_in_pool", "correct_in_pool")}
    report["figures"] = [p.name for p in figures]
    write_json(context.out_dir / "adversarial.json", report)
    return headline
