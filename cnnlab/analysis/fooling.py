"""``fooling``: images the network is sure about that show nothing (Nguyen, Yosinski & Clune, "Deep neural
networks are easily fooled: high confidence predictions for unrecognizable images", CVPR 2015).

One image per class (``classes``; by default every class): it starts as uniform noise in [0, 1] and climbs the
gradient of the class's log-probability (the log-softmax of its score), a signed step of ``step_size`` per
pixel at a time, kept in [0, 1] (the dataset's normalisation runs inside ``cnnlab.attacks.PixelModel``), until
the network gives the class at least ``target_confidence`` or ``max_steps`` have passed. Nguyen et al. mostly
evolved their images, and also made them by gradient ascent, the direct method used here (on MNIST's LeNet-5 it
reaches 99 % in a few dozen steps). The classes climb in batches; an image stops once it is there.

Writes ``fooling.json`` (per class: the confidence reached, the steps needed, whether it got there) and
``fooling_images.png``. Headline numbers: ``fooled_fraction`` (of the classes tried), ``mean_steps`` (over those
that got there) and ``min_confidence``. The network is in eval mode meanwhile; its modes, ``requires_grad``
flags and hooks are as before afterwards.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from cnnlab.analysis.common import AnalysisContext, NetworkStateKept, pyplot, save_figure, write_json
from cnnlab.attacks import PixelModel
from cnnlab.errors import ConfigError


def climb(model: PixelModel, start: Tensor, classes: Tensor, target_confidence: float, max_steps: int,
          step_size: float, progress: Any = None) -> tuple[Tensor, Tensor, Tensor]:
    """Gradient ascent on log p(class | image) from ``start`` (pixels in [0, 1]), one class per image. Returns the
    images, the confidence each reached and the steps each took (``max_steps`` + 1 where it never got there)."""
    images = start.detach().clone()
    confidence = torch.zeros(len(images), device=images.device)
    steps = torch.full((len(images),), max_steps + 1, dtype=torch.long, device=images.device)
    active = torch.ones(len(images), dtype=torch.bool, device=images.device)
    rows = torch.arange(len(images), device=images.device)
    for step in range(max_steps + 1):
        with torch.enable_grad():
            x = images.detach().requires_grad_(True)
            log_probabilities = model(x).float().log_softmax(dim=1)[rows, classes]
            (gradient,) = torch.autograd.grad(log_probabilities.sum(), x)
        now = log_probabilities.detach().exp()
        confidence = torch.where(active, now, confidence)  # an image that got there keeps its confidence then
        reached = active & (now >= target_confidence)
        steps[reached] = step
        active &= ~reached
        if progress is not None:
            progress.set_postfix_str(f"{int((~active).sum())}/{len(images)} there")
            progress.update(1)
        if not active.any() or step == max_steps:
            break
        update = step_size * gradient.sign() * active.view(-1, 1, 1, 1)  # finished images stay as they are
        images = (images + update).clamp_(0, 1)
    return images, confidence, steps


# --- figure ------------------------------------------------------------------------------------------------------

def plot_grid(path: Path, images: Tensor, names: Sequence[str], confidences: Sequence[float],
              steps: Sequence[int], max_steps: int, title: str) -> Path:
    """The fooling images in a grid, each titled with its class, the confidence reached and the steps needed."""
    plt = pyplot()
    n = len(images)
    columns = max(1, min(5 if n <= 10 else 10, n))
    rows = max(1, math.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.55 * columns + 0.3, 1.85 * rows + 0.8), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        image = images[k]
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(image[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
        done = steps[k] <= max_steps
        ax.set_title(f"{names[k]}\n{100 * confidences[k]:.2f} %\n"
                     + (f"{steps[k]} steps" if done else f"not there in {max_steps}"),
                     fontsize=7, color="black" if done else "tab:red")
    return save_figure(fig, path, title, 10)


# --- the analysis ------------------------------------------------------------------------------------------------

def run(context: AnalysisContext, options: Mapping[str, Any]) -> dict[str, float]:
    from tqdm.auto import tqdm

    num_classes = context.num_classes
    chosen = list(options.get("classes") or range(num_classes))
    wrong = [c for c in chosen if c >= num_classes]
    if wrong:
        raise ConfigError(f"analysis.fooling.classes: this network has {num_classes} classes (0 to "
                          f"{num_classes - 1}), not {', '.join(map(str, wrong))}. Leave it null for all of them.")
    target, max_steps = float(options.get("target_confidence", 0.99)), int(options.get("max_steps", 1000))
    step_size, batch_size = float(options.get("step_size", 0.005)), int(options.get("batch_size", 256))
    spec = context.datamodule.spec
    shape = (spec["channels"], spec["image_size"], spec["image_size"])
    generator = torch.Generator().manual_seed(int(options.get("seed", 0)))
    start = torch.rand((len(chosen), *shape), generator=generator)
    net = context.net
    results: list[tuple[Tensor, Tensor, Tensor]] = []
    with NetworkStateKept(net):
        net.eval()
        for param in net.parameters():  # gradients with respect to the images only
            param.requires_grad_(False)
        model = PixelModel(net, spec["mean"], spec["std"]).to(context.device)
        for first in range(0, len(chosen), batch_size):
            classes = torch.tensor(chosen[first:first + batch_size], device=context.device)
            with tqdm(total=max_steps + 1, desc="fooling: gradient ascent", leave=False, unit="step") as bar:
                images, confidence, steps = climb(model, start[first:first + batch_size].to(context.device),
                                                  classes, target, max_steps, step_size, bar)
            results.append((images.cpu(), confidence.cpu(), steps.cpu()))
    images = torch.cat([r[0] for r in results])
    confidence = torch.cat([r[1] for r in results])
    steps = torch.cat([r[2] for r in results])
    reached = steps <= max_steps
    names = [context.classes[c] for c in chosen]
    figure = plot_grid(context.out_dir / "fooling_images.png", images, names, confidence.tolist(), steps.tolist(),
                       max_steps,
                       f"{context.title}: images from noise the network is ≥ {100 * target:g} % sure of "
                       f"({int(reached.sum())} of {len(chosen)} classes)")
    report = {"checkpoint": context.checkpoint, "target_confidence": target, "max_steps": max_steps,
              "step_size": step_size, "seed": int(options.get("seed", 0)),
              "classes": [{"class": names[k], "index": int(c), "confidence": float(confidence[k]),
                           "steps": int(steps[k]) if reached[k] else None, "reached": bool(reached[k])}
                          for k, c in enumerate(chosen)],
              "figures": [figure.name]}
    write_json(context.out_dir / "fooling.json", report)
    return {"fooled_fraction": float(reached.float().mean()),
            "mean_steps": float(steps[reached].float().mean()) if reached.any() else float("nan"),
            "min_confidence": float(confidence.min())}
