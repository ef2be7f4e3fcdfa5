"""``features``: a trained network as a feature extractor, evaluated with external classifiers.

The lectures' guideline (b) for new data: forward the images, take the activations of higher conv and/or FC
layers, reduce them (PCA) and classify them with an external classifier (SVM, k-NN). For each chosen layer
(``layers``: module names as ``cnnlab summary`` prints them; by default the input of the final classifier, the
penultimate representation) the activations of the training and test splits are taken in batches with forward
hooks, conv maps global-average-pooled to one value per channel, and cached in ``features.npz``. On them, with
scikit-learn: optional standardisation and PCA, then a linear SVM, an RBF SVM, k-NN and logistic regression fitted
on the training features; and DINO's weighted cosine k-NN (``facebookresearch/dino``, ``eval_knn.py``), in torch.
Each reports test top-1 (top-5 with six or more classes, where the classifier ranks classes) beside the network's
own head, and its fit time.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from cnnlab.analysis.common import AnalysisContext, pyplot, save_figure, write_json
from cnnlab.analysis.layers import check_layers
from cnnlab.errors import ConfigError

CACHE_FILE = "features.npz"
DEFAULT_LAYER = "penultimate"
MAX_POINTS = 3000  # test images drawn in the 2-D projection


# --- layers ------------------------------------------------------------------------------------------------------

def final_classifier(net: nn.Module, example: Tensor) -> str:
    """The name of the last module with parameters that runs in a forward pass of ``example``: the final
    classifier, whose input is the penultimate representation."""
    order: list[str] = []
    names = {m: n for n, m in net.named_modules()}
    handles = [m.register_forward_hook(lambda m, i, o: order.append(names[m]))
               for n, m in net.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    try:
        with torch.inference_mode():
            net(example)
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise ConfigError("analysis.features: this network has no layer with parameters to take features before.")
    return order[-1]


def resolve_layers(net: nn.Module, requested: list[str] | None, example: Tensor) -> dict[str, tuple[str, str]]:
    """``{key: (module name, "input" | "output")}`` for the requested layers; the default is the input of the
    final classifier. An unknown name is a ``ConfigError`` listing the valid ones."""
    if not requested:
        return {DEFAULT_LAYER: (final_classifier(net, example), "input")}
    check_layers(net, "analysis.features.layers", requested)
    return {name: (name, "output") for name in requested}


def check(net: nn.Module, options: Mapping[str, Any]) -> None:
    """What can be checked before training: the layer names exist in ``net``."""
    check_layers(net, "analysis.features.layers", options.get("layers"))


def _pooled(value: Any) -> Tensor:
    """A layer's activation as one row per image: conv maps global-average-pooled, anything else flattened.
    Always a copy (a later in-place ReLU must not change it)."""
    if isinstance(value, (tuple, list)):
        value = value[0]
    value = value.detach()
    if value.ndim == 4:
        return value.float().mean(dim=(2, 3))
    return value.float().flatten(1).clone()


@torch.inference_mode()
def extract(context: AnalysisContext, layers: Mapping[str, tuple[str, str]], split: str, indices: Tensor | None,
            batch_size: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The features of ``layers`` for ``split`` (``indices`` of it), its labels and the network's logits."""
    modules = dict(context.net.named_modules())
    captured: dict[str, list[Tensor]] = {key: [] for key in layers}
    handles = []
    for key, (name, where) in layers.items():
        store = captured[key]
        if where == "input":
            handles.append(modules[name].register_forward_pre_hook(lambda m, args, store=store:
                                                                    store.append(_pooled(args[0]).cpu())))
        else:
            handles.append(modules[name].register_forward_hook(lambda m, args, out, store=store:
                                                               store.append(_pooled(out).cpu())))
    logits, labels = [], []
    try:
        for images, targets in context.batches(split, batch_size, indices, desc=f"features: {split}"):
            output = context.net(images)
            logits.append((output[0] if isinstance(output, (tuple, list)) else output).float().cpu())
            labels.append(targets.cpu())
    finally:
        for handle in handles:
            handle.remove()
    features = {key: torch.cat(rows).numpy() for key, rows in captured.items()}
    return features, torch.cat(labels).numpy(), torch.cat(logits).numpy()


def _cache_key(context: AnalysisContext, layers: Mapping[str, tuple[str, str]], options: Mapping[str, Any]) -> str:
    """What the cached features depend on: the weights, the layers, the data and the subsets."""
    checkpoint = Path(context.checkpoint) if context.checkpoint else None
    stamp = (str(checkpoint.resolve()), checkpoint.stat().st_mtime_ns, checkpoint.stat().st_size) \
        if checkpoint is not None and checkpoint.is_file() else None
    if options.get("network") == "pretrained":
        stamp = ("pretrained", str(context.cfg.model.weights))
    described = {"weights": stamp, "layers": {k: list(v) for k, v in layers.items()},
                 "data": {k: v for k, v in context.datamodule.spec.items() if k not in ("root", "num_workers",
                                                                                       "download", "cache_dir")},
                 "seed": context.cfg.seed, "max_train": options.get("max_train"), "max_test": options.get("max_test")}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


def features_of(context: AnalysisContext, layers: Mapping[str, tuple[str, str]], options: Mapping[str, Any]
                ) -> tuple[dict[str, dict[str, np.ndarray]], bool]:
    """``{split: {"<layer>": features, "labels": ..., "logits": ...}}`` from the cache when it matches, else
    extracted and cached; and whether the cache was used."""
    path = context.out_dir / CACHE_FILE
    key = _cache_key(context, layers, options)
    if path.is_file():
        try:
            with np.load(path) as cached:
                if "key" in cached.files and str(cached["key"]) == key:
                    return {split: {name.split("/", 1)[1]: cached[name] for name in cached.files
                                    if name.startswith(split + "/")} for split in ("train", "test")}, True
        except (OSError, ValueError, EOFError):  # a damaged cache is extracted again
            pass
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for split, limit in (("train", options.get("max_train")), ("test", options.get("max_test"))):
        indices = context.subset(split, limit)
        features, labels, logits = extract(context, layers, split, indices, options.get("batch_size", 512))
        arrays[split] = {**features, "labels": labels, "logits": logits}
    flat = {f"{split}/{name}": value for split, named in arrays.items() for name, value in named.items()}
    partial = path.with_name(f".{path.stem}.partial.npz")
    np.savez(partial, key=np.array(key), **flat)
    partial.replace(path)
    return arrays, False


# --- classifiers -------------------------------------------------------------------------------------------------

def topk_accuracy(scores: np.ndarray | Tensor, labels: np.ndarray | Tensor, k: int) -> float:
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels)
    k = min(k, scores.shape[1])
    return float((scores.topk(k, dim=1).indices == labels.view(-1, 1)).any(dim=1).float().mean())


@torch.inference_mode()
def weighted_knn(train: Tensor, train_labels: Tensor, test: Tensor, num_classes: int, k: int = 20,
                 temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """DINO's weighted k-NN (``eval_knn.py``, ``knn_classifier``): features L2-normalised, the ``k`` most
    cosine-similar training features vote for their class with weight exp(similarity / temperature). Returns the
    class scores (N_test, num_classes); batched over chunks of test features."""
    train = nn.functional.normalize(train.float(), dim=1)
    test = nn.functional.normalize(test.float(), dim=1)
    train_labels = train_labels.long()
    k = min(k, len(train))
    scores = []
    for start in range(0, len(test), chunk):
        similarity = test[start:start + chunk] @ train.T
        top, index = similarity.topk(k, dim=1, largest=True, sorted=True)
        votes = torch.zeros(len(top), num_classes, dtype=top.dtype, device=top.device)
        votes.scatter_add_(1, train_labels[index], (top / temperature).exp())
        scores.append(votes)
    return torch.cat(scores) if scores else torch.empty(0, num_classes)


def _sklearn_classifier(name: str, options: Mapping[str, Any], seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC, LinearSVC

    if name == "linear_svm":
        return LinearSVC(C=options.get("svm_c", 1.0), dual="auto", max_iter=5000, random_state=seed)
    if name == "rbf_svm":
        return SVC(C=options.get("svm_c", 1.0), kernel="rbf", gamma="scale", decision_function_shape="ovr",
                   random_state=seed)
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=options.get("knn_k", 5), metric=options.get("knn_metric",
                                                                                          "euclidean"))
    if name == "logistic":
        return LogisticRegression(max_iter=2000)
    raise ValueError(name)


def _scores(classifier: Any, x: np.ndarray, num_classes: int) -> np.ndarray | None:
    """Per-class scores for top-k, in the order of the class indices, or None (k-NN's votes rank poorly)."""
    if hasattr(classifier, "decision_function") and not hasattr(classifier, "kneighbors"):
        raw = classifier.decision_function(x)
    else:
        return None
    scores = np.full((len(x), num_classes), -np.inf)
    scores[:, classifier.classes_] = raw if raw.ndim == 2 else np.stack([-raw, raw], 1)
    return scores


def evaluate_layer(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, test_labels: np.ndarray,
                   options: Mapping[str, Any], num_classes: int, seed: int, device: torch.device
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit the reduction and the classifiers on ``train``, score them on ``test``. Returns the per-classifier
    results and the reduction's description (with the fitted PCA for the plots)."""
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    top5 = num_classes > 5
    x_train, x_test = train.astype(np.float32), test.astype(np.float32)
    reduction: dict[str, Any] = {"dim": int(train.shape[1])}
    if options.get("standardize", True):
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    reduction["full_pca"] = PCA(svd_solver="full", random_state=seed).fit(x_train)
    n_components = options.get("pca")
    if n_components is not None:
        n_components = min(n_components, *x_train.shape) if isinstance(n_components, int) else n_components
        pca = PCA(n_components=n_components, svd_solver="full", random_state=seed).fit(x_train)
        x_train, x_test = pca.transform(x_train), pca.transform(x_test)
        reduction.update(pca_components=int(pca.n_components_),
                         variance_kept=float(pca.explained_variance_ratio_.sum()))
    fit_rows = np.arange(len(x_train))
    limit = options.get("fit_max_train")
    if limit is not None and limit < len(x_train):
        fit_rows = np.sort(np.random.default_rng(seed).permutation(len(x_train))[:limit])
    from tqdm.auto import tqdm

    results: dict[str, Any] = {}
    bar = tqdm(options.get("classifiers", []), desc="features: classifiers", leave=False, unit="classifier")
    for name in bar:
        bar.set_postfix_str(name)
        started = time.perf_counter()
        if name == "dino_knn":  # on the features themselves, all of the training split, as DINO evaluates them
            scores_t = weighted_knn(torch.as_tensor(train).to(device), torch.as_tensor(train_labels).to(device),
                                    torch.as_tensor(test).to(device), num_classes, options.get("dino_k", 20),
                                    options.get("dino_temperature", 0.07)).cpu()
            fit_s = time.perf_counter() - started
            result = {"acc": topk_accuracy(scores_t, test_labels, 1), "fit_s": fit_s, "fit_images": len(train)}
            if top5:
                result["acc_top5"] = topk_accuracy(scores_t, test_labels, 5)
        else:
            classifier = _sklearn_classifier(name, options, seed)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                classifier.fit(x_train[fit_rows], train_labels[fit_rows])
            fit_s = time.perf_counter() - started
            predicted = classifier.predict(x_test)
            result = {"acc": float((predicted == test_labels).mean()), "fit_s": fit_s, "fit_images": len(fit_rows)}
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                result["converged"] = False
            scores = _scores(classifier, x_test, num_classes)
            if top5 and scores is not None:
                result["acc_top5"] = topk_accuracy(scores, test_labels, 5)
        result["fit_s"] = round(result["fit_s"], 3)
        results[name] = result
    return results, reduction


# --- figures -----------------------------------------------------------------------------------------------------

def _slug(layer: str) -> str:
    return layer.replace("/", "_").replace(":", "_")


def plot_projection(path: Path, projected: np.ndarray, labels: np.ndarray, classes: list[str], title: str,
                    variance: np.ndarray) -> Path:
    """The test features on their first two principal components, a colour per class."""
    plt = pyplot()
    if len(labels) > MAX_POINTS:  # a readable cloud (and a small file): a fixed random sample of the points
        keep = np.sort(np.random.default_rng(0).permutation(len(labels))[:MAX_POINTS])
        title += f" ({MAX_POINTS:,} of {len(labels):,} images shown)"
        projected, labels = projected[keep], labels[keep]
    fig, ax = plt.subplots(figsize=(7.5, 6))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for c, name in enumerate(classes):
        chosen = labels == c
        if chosen.any():
            ax.scatter(projected[chosen, 0], projected[chosen, 1], s=10, alpha=0.7, color=cmap(c % cmap.N),
                       label=name, linewidths=0)
    ax.set_xlabel(f"principal component 1 ({100 * variance[0]:.1f} % of the variance)")
    ax.set_ylabel(f"principal component 2 ({100 * variance[1]:.1f} % of the variance)")
    ax.set_title(title, fontsize=10)
    if len(classes) <= 20:
        ax.legend(title="class", markerscale=3, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
                  frameon=False)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.1, right=0.82, bottom=0.1, top=0.92)
    return save_figure(fig, path, tight=False)


def plot_variance(path: Path, ratios: np.ndarray, title: str, kept: int | None, fraction: float | None) -> Path:
    """The cumulative explained variance against the number of principal components."""
    plt = pyplot()
    cumulative = np.cumsum(ratios)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    components = np.arange(1, len(cumulative) + 1)
    ax.plot(components, cumulative, "-", marker="o" if len(cumulative) <= 40 else None, markersize=3,
            label="cumulative")
    ax.bar(components, ratios, color="tab:grey", alpha=0.4, label="per component")
    if kept is not None:
        ax.axvline(kept, color="tab:red", linestyle=":",
                   label=f"kept: {kept} components, {100 * cumulative[kept - 1]:.1f} % of the variance")
    if fraction is not None:
        ax.axhline(fraction, color="tab:red", linestyle="--", linewidth=0.8, label=f"target {100 * fraction:g} %")
    ax.set_xlabel("number of principal components")
    ax.set_ylabel("fraction of the variance explained")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0.5, len(cumulative) + 0.5)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.9)
    return save_figure(fig, path, tight=False)


def _label(name: str, options: Mapping[str, Any]) -> str:
    return {"linear_svm": "linear SVM", "rbf_svm": "RBF SVM",
            "knn": f"k-NN (k={options.get('knn_k', 5)}, {options.get('knn_metric', 'euclidean')})",
            "logistic": "logistic regression",
            "dino_knn": f"weighted cosine k-NN\n(DINO: k={options.get('dino_k', 20)}, "
                        f"T={options.get('dino_temperature', 0.07):g})"}.get(name, name)


def plot_accuracies(path: Path, head: float, results: Mapping[str, Mapping[str, Any]], title: str,
                    options: Mapping[str, Any]) -> Path:
    """Test top-1 of each classifier beside the network's head."""
    plt = pyplot()
    names = ["network's own head", *(_label(n, options) for n in results)]
    values = [head, *(r["acc"] for r in results.values())]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bars = ax.barh(names[::-1], values[::-1], color=["tab:blue"] * len(results) + ["tab:orange"])
    for bar, value in zip(bars, values[::-1]):
        ax.text(min(value, 1) - 0.01, bar.get_y() + bar.get_height() / 2, f"{value:.4f}", ha="right", va="center",
                color="white", fontsize=9)
    low = max(0.0, np.floor(10 * min(values) - 0.5) / 10)  # zoomed in: the differences are what matters
    ax.set_xlim(low, 1)
    ax.set_xlabel("test top-1 accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.subplots_adjust(left=0.27, right=0.97, bottom=0.14, top=0.88)
    return save_figure(fig, path, tight=False)


# --- the analysis ------------------------------------------------------------------------------------------------

def run(context: AnalysisContext, options: Mapping[str, Any]) -> dict[str, float]:
    spec = context.datamodule.spec
    example = torch.zeros(1, spec["channels"], spec["image_size"], spec["image_size"], device=context.device)
    layers = resolve_layers(context.net, options.get("layers"), example)
    arrays, cached = features_of(context, layers, options)
    train, test = arrays["train"], arrays["test"]
    num_classes = context.num_classes
    top5 = num_classes > 5
    head = {"acc": topk_accuracy(test["logits"], test["labels"], 1)}
    if top5:
        head["acc_top5"] = topk_accuracy(test["logits"], test["labels"], 5)
    report: dict[str, Any] = {"checkpoint": context.checkpoint, "network": options.get("network", "trained"),
                              "train_images": int(len(train["labels"])), "test_images": int(len(test["labels"])),
                              "cached": cached, "head": head, "layers": {}, "figures": []}
    headline: dict[str, float] = {"head_acc": head["acc"], **({"head_acc_top5": head["acc_top5"]} if top5 else {})}
    for position, (key, (module, where)) in enumerate(layers.items()):
        results, reduction = evaluate_layer(train[key], train["labels"], test[key], test["labels"], options,
                                            num_classes, context.cfg.seed, context.device)
        full = reduction.pop("full_pca")
        described = f"{'input of ' if where == 'input' else ''}{module}"
        slug = _slug(key)
        figures = []
        if train[key].shape[1] >= 2:
            scaled = test[key].astype(np.float32)
            if options.get("standardize", True):
                mean, std = train[key].mean(0), train[key].std(0)
                scaled = (scaled - mean) / np.where(std > 0, std, 1)
            projected = full.transform(scaled)[:, :2]
            figures.append(plot_projection(
                context.out_dir / f"pca_2d_{slug}.png", projected, test["labels"], context.classes,
                f"{context.title}: test features ({described}, {train[key].shape[1]}-d)\non the first two principal "
                f"components of the training features",
                full.explained_variance_ratio_))
        fraction = options.get("pca") if isinstance(options.get("pca"), float) else None
        figures.append(plot_variance(
            context.out_dir / f"explained_variance_{slug}.png", full.explained_variance_ratio_,
            f"{context.title}: PCA of the training features ({described})", reduction.get("pca_components"),
            fraction))
        figures.append(plot_accuracies(
            context.out_dir / f"accuracy_{slug}.png", head["acc"], results,
            f"{context.title}: classifiers on {described}"
            + (f" (PCA {reduction['pca_components']})" if "pca_components" in reduction else ""), options))
        report["layers"][key] = {"module": module, "taken": where, **reduction, "classifiers": results,
                                 "figures": [p.name for p in figures]}
        report["figures"] += [p.name for p in figures]
        prefixes = [""] if position == 0 else []
        if len(layers) > 1:
            prefixes.append(f"{key}/")
        for prefix in prefixes:
            for name, result in results.items():
                headline[f"{prefix}{name}_acc"] = result["acc"]
                if "acc_top5" in result:
                    headline[f"{prefix}{name}_acc_top5"] = result["acc_top5"]
            if "variance_kept" in reduction:
                headline[f"{prefix}pca_variance"] = reduction["variance_kept"]
                headline[f"{prefix}pca_components"] = float(reduction["pca_components"])
    write_json(context.out_dir / "features.json", report)
    return headline
