"""Gradient attacks on an image classifier, in pixel space [0, 1]: FGSM and L∞ PGD, untargeted and targeted.

FGSM (Goodfellow, Shlens & Szegedy, "Explaining and harnessing adversarial examples", 2015) moves every pixel by
ε in the direction of the sign of the loss gradient: x' = clip(x + ε · sign(∇ₓ L(f(x), y)), 0, 1). PGD (Madry et
al., "Towards deep learning models resistant to adversarial attacks", 2018) repeats smaller steps of size α from a
random point of the ε-ball, projecting back onto the ball and onto [0, 1] after each, and keeps, over several
restarts, the worst example per image. Targeted versions descend the loss of the target class instead.

Written here rather than taken from a library (issue 16): torchattacks pins an old ``requests`` and advertorch
breaks on current torch; both are a few dozen lines of torch. ε is in pixel units: every attack works on images in
[0, 1] and hands them to ``PixelModel``, which applies the dataset's normalisation, so that ε = 8/255 means eight
grey levels whatever the dataset's mean and standard deviation.

The attacks need the network in the mode it is evaluated in (``net.eval()``: batch norm's running statistics,
no dropout); the callers (the ``adversarial`` and ``fooling`` analyses, adversarial training) set it and restore it.
Gradients are taken with ``torch.autograd.grad`` with respect to the images only, so nothing accumulates in the
parameters' ``.grad``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

ATTACKS = ("fgsm", "pgd")


class PixelModel(nn.Module):
    """``net`` as a function of images in [0, 1]: normalise with the dataset's mean and std, run ``net``, return its
    logits (the first output of networks that also return auxiliary logits)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def normalise(self, pixels: Tensor) -> Tensor:
        return (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)

    def pixels(self, normalised: Tensor) -> Tensor:
        """The images in [0, 1] that a normalised batch came from (clamped: float rounding, and augmentations such
        as random erasing that write values outside the image range)."""
        return (normalised * self.std.to(normalised.device) + self.mean.to(normalised.device)).clamp(0, 1)

    def forward(self, pixels: Tensor) -> Tensor:
        output = self.net(self.normalise(pixels))
        return output[0] if isinstance(output, (tuple, list)) else output


@dataclass(frozen=True)
class Attack:
    """One attack's settings. ``step_size`` None: 2.5 ε / steps (Madry et al.'s rule, so that the steps can cross
    the ball); ``restarts``: PGD runs from that many random starts and keeps each image's worst example."""

    name: str = "fgsm"  # fgsm or pgd
    epsilon: float = 8 / 255
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    targeted: bool = False

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}; attacks: {', '.join(ATTACKS)}")

    def __call__(self, model: nn.Module, images: Tensor, labels: Tensor, generator: torch.Generator | None = None
                 ) -> Tensor:
        """Adversarial versions of ``images`` (pixels in [0, 1]) against ``model`` (pixels → logits). ``labels``
        are the true classes (untargeted) or the target classes (``targeted``)."""
        if self.name == "fgsm":
            return fgsm(model, images, labels, self.epsilon, targeted=self.targeted)
        return pgd(model, images, labels, self.epsilon, steps=self.steps, step_size=self.step_size,
                   random_start=self.random_start, restarts=self.restarts, targeted=self.targeted,
                   generator=generator)


def _loss_gradient(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image cross-entropy and its gradient with respect to ``images``."""
    with torch.enable_grad():
        images = images.detach().requires_grad_(True)
        losses = nn.functional.cross_entropy(model(images).float(), labels, reduction="none")
        (gradient,) = torch.autograd.grad(losses.sum(), images)
    return losses.detach(), gradient


def project(adversarial: Tensor, original: Tensor, epsilon: float) -> Tensor:
    """``adversarial`` moved back into the L∞ ball of radius ``epsilon`` around ``original`` and into [0, 1]."""
    return torch.min(torch.max(adversarial, original - epsilon), original + epsilon).clamp_(0, 1)


def fgsm(model: nn.Module, images: Tensor, labels: Tensor, epsilon: float, targeted: bool = False) -> Tensor:
    """Fast gradient sign method: one step of size ``epsilon`` along the sign of the loss gradient (against it for
    a targeted attack, towards ``labels``)."""
    if epsilon == 0:
        return images.detach().clone()
    _, gradient = _loss_gradient(model, images, labels)
    step = -epsilon if targeted else epsilon
    return project(images.detach() + step * gradient.sign(), images.detach(), epsilon)


def pgd(model: nn.Module, images: Tensor, labels: Tensor, epsilon: float, steps: int = 10,
        step_size: float | None = None, random_start: bool = True, restarts: int = 1, targeted: bool = False,
        generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient descent in the L∞ ball (Madry et al.): ``steps`` signed-gradient steps of
    ``step_size`` (default 2.5 ε / steps), each projected onto the ball and [0, 1], from a uniform random point of
    the ball (``random_start``) or the image itself. Over ``restarts`` runs, each image keeps the example that
    fools the network (untargeted: any wrong class; targeted: the target class), else the one of highest loss
    (targeted: lowest)."""
    original = images.detach()
    if epsilon == 0 or steps == 0:
        return original.clone()
    alpha = step_size if step_size is not None else 2.5 * epsilon / steps
    sign = -1.0 if targeted else 1.0
    best, best_score = original.clone(), None
    for _ in range(max(1, restarts)):
        adversarial = original.clone()
        if random_start:
            device = generator.device if generator is not None else original.device
            noise = torch.rand(original.shape, generator=generator, device=device).to(original.device)
            adversarial = project(original + (2 * noise - 1) * epsilon, original, epsilon)
        for _ in range(steps):
            _, gradient = _loss_gradient(model, adversarial, labels)
            adversarial = project(adversarial + sign * alpha * gradient.sign(), original, epsilon)
        if restarts <= 1:
            return adversarial
        with torch.no_grad():
            logits = model(adversarial).float()
            fooled = (logits.argmax(1) == labels) if targeted else (logits.argmax(1) != labels)
            # success first, then the loss the attack pushes (so the score is comparable across restarts)
            score = fooled.float() * 1e6 + sign * nn.functional.cross_entropy(logits, labels, reduction="none")
        if best_score is None:
            best, best_score = adversarial, score
        else:
            better = score > best_score
            best = torch.where(better.view(-1, 1, 1, 1), adversarial, best)
            best_score = torch.where(better, score, best_score)
    return best
