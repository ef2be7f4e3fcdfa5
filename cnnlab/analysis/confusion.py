"""``confusion``: where the network errs on the test split.

The confusion matrix (counts and row-normalised) with the class names, per-class precision, recall and F1
(torchmetrics), the most confused (true, predicted) pairs, and a gallery of the most confidently misclassified test
images with their true and predicted labels. One batched pass over the test split.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from cnnlab.analysis.common import AnalysisContext, pyplot, save_figure, write_json


@torch.inference_mode()
def predict(context: AnalysisContext, batch_size: int) -> tuple[Tensor, Tensor]:
    """Softmax probabilities (N, classes) and labels of the whole test split, in order, on the CPU."""
    probabilities, labels = [], []
    for images, targets in context.batches("test", batch_size, desc="confusion: test"):
        output = context.net(images)
        output = output[0] if isinstance(output, (tuple, list)) else output
        probabilities.append(output.float().softmax(dim=1).cpu())
        labels.append(targets.cpu())
    return torch.cat(probabilities), torch.cat(labels)


def per_class(predicted: Tensor, labels: Tensor, num_classes: int) -> dict[str, Tensor]:
    from torchmetrics.functional.classification import (multiclass_confusion_matrix, multiclass_f1_score,
                                                        multiclass_precision, multiclass_recall)

    options = {"num_classes": num_classes, "average": "none"}
    return {"matrix": multiclass_confusion_matrix(predicted, labels, num_classes=num_classes),
            "precision": multiclass_precision(predicted, labels, **options),
            "recall": multiclass_recall(predicted, labels, **options),
            "f1": multiclass_f1_score(predicted, labels, **options)}


def confused_pairs(matrix: Tensor, classes: list[str], top: int) -> list[dict[str, Any]]:
    """The ``top`` largest off-diagonal counts: (true, predicted, count, fraction of the true class)."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    counts, index = off.flatten().sort(descending=True)
    rows = matrix.sum(dim=1)
    pairs = []
    for count, flat in zip(counts.tolist(), index.tolist()):
        if count == 0 or len(pairs) >= top:
            break
        true, predicted = divmod(flat, matrix.shape[1])
        pairs.append({"true": classes[true], "predicted": classes[predicted], "count": int(count),
                      "fraction_of_true": float(count / max(1, int(rows[true])))})
    return pairs


def plot_matrices(path: Path, matrix: Tensor, classes: list[str], title: str) -> Path:
    """Counts and row-normalised (recall per true class) side by side."""
    plt = pyplot()
    counts = matrix.numpy()
    normalised = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    side = max(4.5, 0.42 * n + 1.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1.2, side + 0.6))
    annotate = n <= 20
    for ax, values, label, fmt in ((axes[0], counts, "images", "d"), (axes[1], normalised, "% of the true class", "%")):
        shown = np.log1p(values) if fmt == "d" else values  # counts: a log scale keeps the few errors visible
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=shown.max() if fmt == "d" else 1)
        ax.set_xticks(range(n), classes, rotation=90 if max(len(c) for c in classes) > 3 else 0, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title("counts" if fmt == "d" else "row-normalised: % of the true class", fontsize=10)
        if annotate:
            threshold = shown.max() * 0.6
            for i in range(n):
                for j in range(n):
                    if values[i, j] == 0:
                        continue
                    # row-normalised as a percentage: 0.2 % of a class is not "0.00"
                    digits = 0 if values[i, j] > 0.995 else 1
                    text = f"{values[i, j]:d}" if fmt == "d" else f"{100 * values[i, j]:.{digits}f}"
                    ax.text(j, i, text, ha="center", va="center", fontsize=7 if n <= 12 else 5,
                            color="white" if shown[i, j] > threshold else "black")
        bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        if fmt == "d":
            ticks = [t for t in (0, 1, 10, 100, 1000, 10000) if t <= counts.max()] or [0]
            bar.set_ticks(np.log1p(ticks), labels=[str(t) for t in ticks])
        bar.set_label(label)
        if fmt != "d":
            bar.set_ticks([0, 0.25, 0.5, 0.75, 1], labels=["0", "25", "50", "75", "100"])
    return save_figure(fig, path, title, 11)


def plot_metrics(path: Path, metrics: Mapping[str, Tensor], classes: list[str], title: str) -> Path:
    """Per-class precision, recall and F1 as grouped bars."""
    plt = pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * n + 2), 4))
    x = np.arange(n)
    for offset, (name, colour) in zip((-0.27, 0, 0.27), (("precision", "tab:blue"), ("recall", "tab:orange"),
                                                        ("f1", "tab:green"))):
        ax.bar(x + offset, metrics[name].numpy(), width=0.27, label="F1" if name == "f1" else name, color=colour)
    low = float(min(m.min() for k, m in metrics.items() if k != "matrix"))
    ax.set_ylim(max(0.0, math.floor(10 * low - 0.5) / 10), 1.0)
    ax.set_xticks(x, classes, rotation=90 if max(len(c) for c in classes) > 3 else 0, fontsize=8)
    ax.set_xlabel("class")
    ax.set_ylabel("score on the test split")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncols=3, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_gallery(path: Path, images: Tensor, true: list[str], predicted: list[str], confidence: list[float],
                 title: str) -> Path:
    """The given images in a grid, each titled with its true and predicted class and the confidence."""
    plt = pyplot()
    n = len(images)
    columns = min(8, max(1, n))
    rows = max(1, math.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.9 * rows + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= n:
            continue
        image = images[k]
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(image[:3].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_title(f"true {true[k]}\npredicted {predicted[k]}\n({100 * confidence[k]:.1f} %)", fontsize=7)
    if n == 0:
        axes.flat[0].text(0.5, 0.5, "no misclassified test image", ha="center", va="center")
    return save_figure(fig, path, title, 10)


def run(context: AnalysisContext, options: Mapping[str, Any]) -> dict[str, float]:
    probabilities, labels = predict(context, options.get("batch_size", 512))
    classes = context.classes
    confidence, predicted = probabilities.max(dim=1)
    metrics = per_class(predicted, labels, len(classes))
    matrix = metrics["matrix"]
    wrong = (predicted != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)][: options.get("gallery", 24)]
    accuracy = float((predicted == labels).float().mean())
    figures = [plot_matrices(context.out_dir / "confusion_matrix.png", matrix, classes,
                             f"{context.title}: test confusion matrix ({len(labels):,} images, top-1 "
                             f"{accuracy:.4f})"),
               plot_metrics(context.out_dir / "per_class.png", metrics, classes,
                            f"{context.title}: per-class precision, recall and F1 on the test split")]
    if options.get("gallery", 24) > 0:
        images = context.raw_images("test", worst) if len(worst) else torch.empty(0)
        figures.append(plot_gallery(
            context.out_dir / "misclassified.png", images, [classes[i] for i in labels[worst].tolist()],
            [classes[i] for i in predicted[worst].tolist()], confidence[worst].tolist(),
            f"{context.title}: the {len(worst)} most confidently misclassified test images "
            f"(of {len(wrong)} errors)"))
    report = {
        "checkpoint": context.checkpoint, "test_images": len(labels), "errors": len(wrong), "acc": accuracy,
        "classes": classes, "matrix": matrix.tolist(),
        "per_class": {c: {"precision": float(metrics["precision"][i]), "recall": float(metrics["recall"][i]),
                          "f1": float(metrics["f1"][i]), "support": int(matrix[i].sum())}
                      for i, c in enumerate(classes)},
        "most_confused": confused_pairs(matrix, classes, options.get("top_pairs", 10)),
        "misclassified": [{"index": int(i), "true": classes[int(labels[i])], "predicted": classes[int(predicted[i])],
                           "confidence": float(confidence[i])} for i in worst],
        "figures": [p.name for p in figures],
    }
    write_json(context.out_dir / "confusion.json", report)
    recall = metrics["recall"]
    return {"acc": accuracy, "errors": float(len(wrong)), "macro_f1": float(metrics["f1"].mean()),
            "worst_class_recall": float(recall.min())}
