"""``cam``: class activation maps — where in an image the evidence for a class lies.

For a few test images (``images``, ``indices``, ``per_class``) the maps of their top-5 predictions, drawn over
the image with the class names and probabilities, and one class's map over several test images of that class
(``one_class``), by one of three methods (``method``):

* ``gradcam`` — Grad-CAM (Selvaraju et al., 2017): the maps A_k of a conv layer weighted by the spatial mean of
  the gradient of the class score y_c (the logit, before the softmax) with respect to them,
  ReLU(sum_k mean(dy_c/dA_k) A_k). Any conv network, any layer with a spatial map; the default.
* ``gradcampp`` — Grad-CAM++ (Chattopadhay et al., 2018, eq. 19, with exp(y_c) as the score): the weights are a
  positively weighted sum of the gradients, which spreads the map over several instances of the class.
* ``cam`` — CAM (Zhou et al., 2016), for networks that end in global average pooling and one linear layer (the
  CIFAR ResNets, torchvision's ResNets, GoogLeNet): the averaged maps weighted by that layer's weights for the
  class, ReLU(sum_k w_ck A_k). At that layer it equals Grad-CAM times the map's area (the Grad-CAM paper's
  proof), which tests/test_analysis_visual.py checks.

The layer (``layer``) is by default the last conv stage with a map larger than 1x1 (``layers.conv_stages``).
Activations are captured with forward hooks and gradients with tensor hooks, all removed afterwards; the
network's mode and ``requires_grad`` flags are restored (``NetworkStateKept``).

Maps are coarser than the image (LeNet-5's last stage is 10x10 for a 32x32 input, of which an MNIST digit fills
the middle 28x28), so they are placed where their units look: the centre of each unit's receptive field in
input pixels is measured with autograd (``unit_centres``) and the map interpolated between those centres, over
the same pixel grid the image is drawn on. A plain resize to the image size would misplace LeNet-5's maps by
several pixels.

Headline numbers (over the images shown, for their top-1 class): the mean top-1 probability, and the Grad-CAM++
paper's faithfulness measures: the average drop in that class's probability when the image is multiplied by its
map (lower: the map keeps what the network needs), and the share of images whose probability rises.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from cnnlab.analysis.common import AnalysisContext, NetworkStateKept, pyplot, save_figure, write_json
from cnnlab.analysis.layers import LayerTaps, check_layers, conv_stages, example_input, logits_of, trace
from cnnlab.analysis.selection import chosen_indices, class_index, display_scale, show_image
from cnnlab.errors import ConfigError

METHODS = {"cam": "CAM", "gradcam": "Grad-CAM", "gradcampp": "Grad-CAM++"}


# --- the maps ----------------------------------------------------------------------------------------------------

def gradcam(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM from a layer's maps (N, K, h, w) and the gradients of the class score with respect to them."""
    weights = gradients.mean(dim=(2, 3))
    return torch.relu((weights[:, :, None, None] * activations).sum(dim=1))


def gradcampp(activations: Tensor, gradients: Tensor) -> Tensor:
    """Grad-CAM++ (eq. 19 of Chattopadhay et al. with the exponential of the class score, whose higher derivatives
    are powers of the first): alpha = g^2 / (2 g^2 + sum(A) g^3), weights = sum(alpha ReLU(g)) over the map."""
    squared = gradients.pow(2)
    cubed = squared * gradients
    total = activations.sum(dim=(2, 3), keepdim=True)
    alpha = squared / (2 * squared + total * cubed + 1e-7)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    weights = (alpha * torch.relu(gradients)).sum(dim=(2, 3))
    return torch.relu((weights[:, :, None, None] * activations).sum(dim=1))


def cam(activations: Tensor, class_weights: Tensor) -> Tensor:
    """CAM: the maps (N, K, h, w) weighted by the linear layer's weights of each image's class (N, K)."""
    return torch.relu(torch.einsum("nk,nkhw->nhw", class_weights, activations))


def averaged_map(net: nn.Module, layer: str, example: Tensor) -> nn.Linear | None:
    """The linear layer when ``net`` ends in global average pooling of ``layer``'s map followed by one linear layer
    (its input equals the spatial mean of the map, on a random batch), else None."""
    from cnnlab.analysis.features import final_classifier

    modules = dict(net.named_modules())
    head = modules[final_classifier(net, example)]
    if not isinstance(head, nn.Linear):
        return None
    seen: dict[str, Tensor] = {}
    handle = head.register_forward_pre_hook(lambda m, args: seen.__setitem__("input", args[0].detach().clone()))
    try:
        with LayerTaps(net, [layer]) as taps, torch.no_grad():
            net(example)
    finally:
        handle.remove()
    averaged = taps.activations.get(layer)
    if averaged is None or averaged.ndim != 4 or averaged.shape[2] * averaged.shape[3] <= 1:
        return None
    pooled = averaged.mean(dim=(2, 3))
    given = seen["input"].flatten(1)
    if given.shape != pooled.shape or not torch.allclose(given, pooled, rtol=1e-4, atol=1e-5):
        return None
    return head


def class_maps(net: nn.Module, images: Tensor, layer: str, classes: Tensor, method: str,
               head: nn.Linear | None = None) -> tuple[Tensor, Tensor]:
    """The maps (N, T, h, w) of ``layer`` for the classes (N, T) of each image, and the softmax probabilities
    (N, num_classes). ``net`` in eval mode; the caller keeps its state (``NetworkStateKept``)."""
    gradients_needed = method != "cam"
    inputs = images.detach().clone().requires_grad_(gradients_needed)
    with LayerTaps(net, [layer], gradients=gradients_needed) as taps:
        with torch.set_grad_enabled(gradients_needed):
            logits = logits_of(net(inputs)).float()
            activations = taps.activations[layer].float()
            if activations.ndim != 4:
                raise ConfigError(f"analysis.cam.layer={layer} gives a {tuple(activations.shape[1:])} output, not a "
                                  f"map: class activation maps need a conv layer's output (channels x height x "
                                  f"width).")
            for t in range(classes.shape[1]):
                if gradients_needed:  # gradients of each image's own class score: images are independent in eval
                    score = logits.gather(1, classes[:, t:t + 1]).sum()
                    torch.autograd.grad(score, inputs, retain_graph=t < classes.shape[1] - 1)
    probabilities = logits.detach().softmax(dim=1)
    maps = []
    for t in range(classes.shape[1]):
        if method == "cam":
            assert head is not None
            maps.append(cam(activations, head.weight.detach().float()[classes[:, t]]))
        else:
            gradients = taps.gradients[layer][t].float()
            maps.append((gradcam if method == "gradcam" else gradcampp)(activations, gradients))
    return torch.stack(maps, dim=1).detach(), probabilities


# --- where a map's units look ------------------------------------------------------------------------------------

def unit_centres(net: nn.Module, layer: str, example: Tensor) -> dict[str, tuple[float, float]]:
    """Where the units of ``layer``'s map look, in input pixels: per axis an affine map index -> pixel
    (``{"y": (slope, offset), "x": ...}``). A unit's receptive field is measured as the input pixels its row (or
    column) of the map has a gradient on, over the random inputs ``example`` (B, C, H, W); its centre is the middle
    of that span (not a weighted centroid: that would follow the kernels' weights). Conv and pooling layers place
    units on an affine grid, fitted to the units whose field the image border does not cut; when fewer than two
    are left (networks whose fields cover the whole image, with padded convolutions), a plain resize's grid."""
    module = dict(net.named_modules())[layer]
    holder: dict[str, Tensor] = {}
    handle = module.register_forward_hook(lambda m, args, out: holder.__setitem__("out", logits_of(out)))
    batch, _, height, width = example.shape
    try:
        with torch.no_grad():
            net(example[:1])
        h, w = holder["out"].shape[2:]
        inputs = example.repeat_interleave(h + w, dim=0).requires_grad_(True)
        net(inputs)
        out = holder["out"].reshape(batch, h + w, *holder["out"].shape[1:])
        rows = torch.stack([out[:, i, :, i, :].sum() for i in range(h)])
        columns = torch.stack([out[:, h + j, :, :, j].sum() for j in range(w)])
        (gradient,) = torch.autograd.grad(rows.sum() + columns.sum(), inputs)
    finally:
        handle.remove()
    sensitivity = gradient.abs().reshape(batch, h + w, -1, height, width).sum(dim=(0, 2))  # (h + w, H, W)
    return {"y": _fit_axis(sensitivity[:h].sum(dim=2).double().cpu().numpy(), h, height),
            "x": _fit_axis(sensitivity[h:].sum(dim=1).double().cpu().numpy(), w, width)}


def _fit_axis(profiles: np.ndarray, units: int, size: int) -> tuple[float, float]:
    """An affine unit -> pixel map from each unit's sensitivity profile along one axis (units, size)."""
    resize = (size / units, size / units / 2 - 0.5)
    index, centres = [], []
    for unit, profile in enumerate(profiles):
        reached = np.flatnonzero(profile > 1e-6 * profile.max()) if profile.max() > 0 else []
        if len(reached) and reached[0] > 0 and reached[-1] < size - 1:  # the border cuts no field
            index.append(unit)
            centres.append((reached[0] + reached[-1]) / 2)
    if len(set(index)) < 2:
        return resize
    slope, offset = np.polyfit(index, centres, 1)
    if not np.isfinite(slope) or slope <= 0:
        return resize
    return float(slope), float(offset)


def _axis_samples(coordinates: np.ndarray, slope: float, offset: float, units: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    position = np.clip((coordinates - offset) / slope, 0, units - 1)  # beyond the outer units: their value
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, units - 1)
    return low, high, position - low


def place(maps: Tensor, geometry: Mapping[str, tuple[float, float]], height: int, width: int, scale: int
          ) -> np.ndarray:
    """Maps (..., h, w) sampled at ``scale`` points per input pixel over the image's pixel grid (bilinear between
    the unit centres): (..., height * scale, width * scale), aligned with ``show_image``'s drawing of the image."""
    values = maps.detach().float().cpu().numpy()
    h, w = values.shape[-2:]
    ys = (np.arange(height * scale) + 0.5) / scale - 0.5
    xs = (np.arange(width * scale) + 0.5) / scale - 0.5
    y0, y1, ty = _axis_samples(ys, *geometry["y"], h)
    x0, x1, tx = _axis_samples(xs, *geometry["x"], w)
    top = values[..., y0, :][..., x0] * (1 - tx) + values[..., y0, :][..., x1] * tx
    bottom = values[..., y1, :][..., x0] * (1 - tx) + values[..., y1, :][..., x1] * tx
    return top * (1 - ty)[:, None] + bottom * ty[:, None]


def relative(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its own maximum (the papers' display: where, not how much); all-zero maps stay 0."""
    peak = maps.reshape(*maps.shape[:-2], -1).max(axis=-1)[..., None, None]
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


# --- figures -----------------------------------------------------------------------------------------------------

def _overlay(ax: Any, image: Tensor, heat: np.ndarray, alpha: float, plt: Any) -> Any:
    """The image, then the map on the same pixel grid, more opaque where the map is higher."""
    show_image(ax, image)
    height, width = image.shape[-2:]
    colours = plt.get_cmap("jet")(heat)
    colours[..., 3] = alpha * (0.25 + 0.75 * heat)
    ax.imshow(colours, extent=(-0.5, width - 0.5, height - 0.5, -0.5), interpolation="bilinear")
    return plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(0, 1))


def _colour_bar(fig: Any, mappable: Any, axes: Any) -> None:
    """The maps' scale, in the strip ``tight_layout`` left free on the right of the panels."""
    bar = fig.colorbar(mappable, ax=list(axes.flat), fraction=0.02, pad=0.01)
    bar.set_label("map / its maximum")


def plot_top(path: Path, images: Tensor, heat: np.ndarray, indices: list[int], true: list[str],
             top: list[list[tuple[str, float]]], title: str, alpha: float) -> Path:
    plt = pyplot()
    n, t = heat.shape[:2]
    fig, axes = plt.subplots(n, t + 1, figsize=(1.55 * (t + 1) + 0.9, 1.7 * n + 0.9), squeeze=False)
    mappable = None
    for i in range(n):
        show_image(axes[i, 0], images[i])
        axes[i, 0].set_title(f"test #{indices[i]}\ntrue: {true[i]}", fontsize=7)
        for k in range(t):
            ax = axes[i, k + 1]
            mappable = _overlay(ax, images[i], heat[i, k], alpha, plt)
            name, probability = top[i][k]
            correct = name == true[i]
            ax.set_title(f"{k + 1}. {name}\n{100 * probability:.1f} %", fontsize=7,
                         color="darkgreen" if correct else "black", fontweight="bold" if correct else "normal")
    return save_figure(fig, path, title, 9, rect=(0, 0, 0.93, 1), after_layout=lambda: _colour_bar(fig, mappable, axes))


def plot_one_class(path: Path, images: Tensor, heat: np.ndarray, indices: list[int], probabilities: list[float],
                   title: str, alpha: float) -> Path:
    plt = pyplot()
    n = len(images)
    columns = min(8, n)
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.55 * columns + 0.9, 1.75 * rows + 0.8), squeeze=False)
    mappable = None
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        mappable = _overlay(ax, images[k], heat[k], alpha, plt)
        ax.set_title(f"test #{indices[k]}\np = {100 * probabilities[k]:.1f} %", fontsize=7)
    return save_figure(fig, path, title, 9, rect=(0, 0, 0.92, 1), after_layout=lambda: _colour_bar(fig, mappable, axes))


# --- the analysis ------------------------------------------------------------------------------------------------

def resolve_layer(net: nn.Module, options: Mapping[str, Any], example: Tensor) -> tuple[str, nn.Linear | None]:
    """The layer the maps are taken at, and for CAM the linear layer whose weights weight them."""
    method = options.get("method", "gradcam")
    stages = conv_stages(trace(net, example))
    layer = options.get("layer") or (stages[-1] if stages else None)
    if layer is None:
        raise ConfigError(f"analysis.cam: this {type(net).__name__} has no conv layer with a map larger than 1x1, so "
                          f"it has no class activation map. Pick a conv model (e.g. model=lenet5), or name a layer "
                          f"with analysis.cam.layer.")
    if method != "cam":
        return layer, None
    # CAM is defined at the map the network averages: the last stage's
    averaged = stages[-1] if stages else None
    head = averaged_map(net, averaged, example) if averaged else None
    if head is None:
        raise ConfigError(f"analysis.cam.method=cam needs a network that ends in global average pooling and one "
                          f"linear layer (CAM weights the averaged maps by that layer's weights: Zhou et al., 2016), "
                          f"as the CIFAR ResNets, torchvision's ResNets and GoogLeNet do; this {type(net).__name__} "
                          f"does not. Grad-CAM works for it: analysis.cam.method=gradcam (the default), or "
                          f"gradcampp for Grad-CAM++.")
    if layer != averaged:
        raise ConfigError(f"analysis.cam.method=cam is defined at the map the network averages ({averaged}), not at "
                          f"{layer}. Leave analysis.cam.layer null, or use Grad-CAM at {layer}: "
                          f"analysis.cam.method=gradcam.")
    return layer, head


def check(net: nn.Module, options: Mapping[str, Any], example: Tensor | None = None) -> None:
    """Before training: the layer exists; with an example input, that the method suits the network."""
    if options.get("layer"):
        check_layers(net, "analysis.cam.layer", [options["layer"]])
    if example is not None:
        with NetworkStateKept(net):
            resolve_layer(net.eval(), options, example)


def _maps_in_batches(context: AnalysisContext, indices: Tensor, classes_of: Any, layer: str, method: str,
                     head: nn.Linear | None, batch_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Maps, probabilities and chosen classes for the test images ``indices``; ``classes_of(probabilities)`` picks
    each image's classes (N, T)."""
    maps, probabilities, chosen = [], [], []
    for images, _ in context.batches("test", batch_size, indices, desc=f"cam: {method}"):
        with torch.no_grad():
            p = logits_of(context.net(images)).float().softmax(dim=1)
        classes = classes_of(p)
        m, _ = class_maps(context.net, images, layer, classes, method, head)
        maps.append(m.cpu())
        probabilities.append(p.cpu())
        chosen.append(classes.cpu())
    return torch.cat(maps), torch.cat(probabilities), torch.cat(chosen)


def faithfulness(context: AnalysisContext, raw: Tensor, masks: np.ndarray, classes: Tensor, before: Tensor
                 ) -> tuple[float, float]:
    """The Grad-CAM++ paper's average drop (%) and increase in confidence (%): the class probability for the image
    multiplied by its map (each scaled to [0, 1], at the image's resolution) against the original's."""
    mean = torch.tensor(context.datamodule.spec["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(context.datamodule.spec["std"]).view(1, -1, 1, 1)
    masked = (raw * torch.as_tensor(relative(masks), dtype=raw.dtype)[:, None] - mean) / std
    with torch.no_grad():
        after = logits_of(context.net(masked.to(context.device))).float().softmax(dim=1).cpu()
    p = before.gather(1, classes[:, None])[:, 0]
    o = after.gather(1, classes[:, None])[:, 0]
    drop = float(((p - o).clamp(min=0) / p.clamp(min=1e-12)).mean() * 100)
    increase = float((o > p).float().mean() * 100)
    return drop, increase


def run(context: AnalysisContext, options: Mapping[str, Any]) -> dict[str, float]:
    net = context.net
    spec = context.datamodule.spec
    method = options.get("method", "gradcam")
    alpha = float(options.get("alpha", 0.5))
    batch_size = options.get("batch_size", 64)
    classes = context.classes
    size = spec["image_size"]
    example = example_input(spec["channels"], size, context.device)
    scale = display_scale(size)
    with NetworkStateKept(net):
        net.eval()
        for parameter in net.parameters():  # gradients reach the maps only; no parameter needs its own
            parameter.requires_grad_(False)
        if options.get("layer"):
            check_layers(net, "analysis.cam.layer", [options["layer"]])
        layer, head = resolve_layer(net, options, example)
        geometry = unit_centres(net, layer, example)
        indices = chosen_indices(context, options, "analysis.cam")
        top = min(options.get("top", 5), len(classes))
        maps, probabilities, chosen = _maps_in_batches(context, indices, lambda p: p.topk(top, dim=1).indices,
                                                       layer, method, head, batch_size)
        raw = context.raw_images("test", indices)
        labels = context.labels("test", indices)
        drop, increase = faithfulness(context, raw, place(maps[:, 0], geometry, size, size, 1), chosen[:, 0],
                                      probabilities)
        one_class = None
        if options.get("one_class_images", 8) > 0:
            wanted = options.get("one_class")
            target = class_index(context, wanted, "analysis.cam.one_class") if wanted is not None \
                else int(labels[0])
            of_class = (context.labels("test") == target).nonzero().flatten()[:options.get("one_class_images", 8)]
            if len(of_class):
                class_maps_, class_probabilities, _ = _maps_in_batches(
                    context, of_class, lambda p: torch.full((len(p), 1), target, device=p.device), layer, method,
                    head, batch_size)
                one_class = (target, of_class, class_maps_[:, 0], class_probabilities[:, target])
    map_size = f"{maps.shape[-2]}x{maps.shape[-1]}"
    described = f"{context.title}: {METHODS[method]} at {layer} ({map_size} map)"
    heat = relative(place(maps, geometry, size, size, scale))
    top_classes = [[(classes[int(c)], float(probabilities[i, c])) for c in chosen[i]] for i in range(len(indices))]
    true = [classes[int(c)] for c in labels]
    figures = [plot_top(context.out_dir / "top_predictions.png", raw, heat, indices.tolist(), true, top_classes,
                        f"{described}: the top-{top} predictions of {len(indices)} test images", alpha)]
    report: dict[str, Any] = {
        "checkpoint": context.checkpoint, "method": method, "layer": layer, "map_size": list(maps.shape[-2:]),
        "unit_centres": geometry,
        "images": [{"index": int(i), "true": true[k], "top": [{"class": c, "probability": p} for c, p in
                                                               top_classes[k]]}
                   for k, i in enumerate(indices.tolist())],
        "average_drop": drop, "increase_in_confidence": increase}
    arrays = {"indices": indices.numpy(), "classes": chosen.numpy(), "maps": maps.numpy()}
    if one_class is not None:
        target, of_class, class_maps_, class_probabilities = one_class
        figures.append(plot_one_class(
            context.out_dir / "one_class.png", context.raw_images("test", of_class),
            relative(place(class_maps_, geometry, size, size, scale)), of_class.tolist(),
            class_probabilities.tolist(),
            f"{described}: class {classes[target]} over {len(of_class)} of its test images", alpha))
        report["one_class"] = {"class": classes[target], "indices": of_class.tolist(),
                               "probabilities": class_probabilities.tolist()}
        arrays.update(one_class_indices=of_class.numpy(), one_class_maps=class_maps_.numpy())
    report["figures"] = [p.name for p in figures]
    np.savez(context.out_dir / "cam.npz", **arrays)
    write_json(context.out_dir / "cam.json", report)
    return {"top1_prob_mean": float(probabilities.max(dim=1).values.mean()), "average_drop": drop,
            "increase_in_confidence": increase}
