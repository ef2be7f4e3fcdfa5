"""Starting from trained weights (torchvision's or a checkpoint's) and freezing layers, for fine-tuning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence
from urllib.error import URLError

import torch
from torch import nn
from torchvision import models as tvm

from cnnlab.checkpoint_file import read_checkpoint
from cnnlab.errors import ConfigError

log = logging.getLogger(__name__)


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    loaded = read_checkpoint(path, purpose="model.weights")
    if "state_dict" in loaded:  # a Lightning checkpoint of cnnlab's ImageClassifier
        return {k.removeprefix("model."): v for k, v in loaded["state_dict"].items() if k.startswith("model.")}
    return loaded


def _run_checkpoint(run_dir: Path) -> Path:
    """A cnnlab run folder given as model.weights: its best checkpoint (results.json), else checkpoints/last.ckpt."""
    import json

    from cnnlab.analysis import run_checkpoint

    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        results = None
    found = run_checkpoint(run_dir, results)
    if found is None:
        raise ConfigError(f"model.weights={run_dir} is a folder without a checkpoint: pass a cnnlab run folder (with "
                          f"checkpoints/, as cnnlab train printed it) or a checkpoint file.")
    log.info("model.weights: %s", found)
    return Path(found)


def _state_dict_from_torchvision(name: str) -> dict[str, torch.Tensor]:
    try:
        weights = tvm.get_weight(name)
    except (ValueError, KeyError, AttributeError):
        raise ConfigError(f"model.weights={name} is neither a file nor a torchvision weights name such as "
                          f"ResNet18_Weights.IMAGENET1K_V1 or VGG16_Weights.IMAGENET1K_V1.") from None
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except (URLError, OSError, RuntimeError) as err:
        raise ConfigError(
            f"The pretrained weights {name} must be downloaded from {weights.url} first, which failed ({err}). On a "
            f"machine with internet, run python -c \"import torchvision; torchvision.models.get_weight('{name}')"
            f".get_state_dict()\" and copy {Path(torch.hub.get_dir()) / 'checkpoints' / Path(weights.url).name} to "
            f"the same place here, or pass model.weights=/path/to/that/file."
        ) from None


def load_weights(net: nn.Module, source: str) -> None:
    """Copy every tensor of ``source`` whose name and shape match into ``net``; the rest keep their fresh values
    (typically the classifier, when the class count differs)."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = _run_checkpoint(path)
    state = _state_dict_from_file(path) if path.is_file() else _state_dict_from_torchvision(source)
    own = net.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise ConfigError(f"None of the tensors in model.weights={source} fit this model: is it for another "
                          f"architecture?")
    net.load_state_dict(matching, strict=False)
    fresh = sorted(set(own) - set(matching))
    log.info("Loaded %d tensors from %s; %d start fresh%s", len(matching), source, len(fresh),
             f" ({', '.join(fresh[:6])}{', …' if len(fresh) > 6 else ''})" if fresh else "")


# model.freeze presets (besides part names): the lectures' two fine-tuning cases.
FREEZE_PRESETS = ("conv", "lower_conv")


def _is_conv(module: nn.Module) -> bool:
    from cnnlab.models.layers import LocallyConnected2d

    return isinstance(module, (nn.modules.conv._ConvNd, LocallyConnected2d)) or \
        type(module).__name__ == "PartiallyConnectedConv"


def _joins_conv(module: nn.Module) -> bool:
    """Layers with parameters that belong to the conv layer before them: normalisation, LeNet-5's trainable
    subsampling."""
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) or \
        type(module).__name__ == "Subsampling"


def conv_stages(net: nn.Module, example: torch.Tensor) -> list[tuple[int, list[str]]]:
    """The conv layers of ``net`` in the order a forward pass of ``example`` runs them, each with the
    normalisation (and subsampling) layers that follow it, as ``(stage, [module names])``.

    A stage is a feature-map resolution: the conv layers whose outputs have the same size form one stage,
    numbered from the input (largest maps) down. Layers a forward pass in eval mode does not run (GoogLeNet's and
    Inception-v3's auxiliary classifiers) belong to no stage.
    """
    names = {m: n for n, m in net.named_modules()}
    order: list[tuple[nn.Module, int | None]] = []

    def record(module: nn.Module, args: tuple, output: object) -> None:
        size = output.shape[-1] if isinstance(output, torch.Tensor) and output.ndim == 4 else None
        order.append((module, size))

    handles = [m.register_forward_hook(record) for m in net.modules()
               if any(True for _ in m.parameters(recurse=False))]
    training = net.training
    try:
        with torch.no_grad():
            net.eval()(example)
    finally:
        net.train(training)
        for handle in handles:
            handle.remove()
    groups: list[tuple[int, list[str]]] = []  # (resolution, names)
    current: list[str] | None = None
    seen: set[nn.Module] = set()
    for module, size in order:
        if module in seen:
            continue
        seen.add(module)
        if _is_conv(module):
            current = [names[module]]
            groups.append((size or 0, current))
        elif _joins_conv(module) and current is not None:
            current.append(names[module])
        else:
            current = None
    resolutions = sorted({size for size, _ in groups}, reverse=True)
    return [(resolutions.index(size), group) for size, group in groups]


def preset_parts(net: nn.Module, preset: str, example: torch.Tensor) -> list[str]:
    """The module names ``model.freeze=<preset>`` freezes: ``conv``, every conv layer with its normalisation;
    ``lower_conv``, those of the lower half of the conv stages (the first ``max(1, S // 2)`` of ``S`` feature-map
    resolutions, from the input)."""
    stages = conv_stages(net, example)
    if not stages:
        raise ConfigError(f"model.freeze={preset}: this {type(net).__name__} has no convolutional layers. Name the "
                          f"parts to freeze instead (e.g. model.freeze=[{next(iter(dict(net.named_children())), 'x')}])"
                          f", or pick a conv model.")
    count = len({stage for stage, _ in stages})
    keep = count if preset == "conv" else max(1, count // 2)
    return [name for stage, group in stages if stage < keep for name in group]


def _keep_eval(module: nn.Module, args: tuple) -> None:
    module.training = False  # a frozen batch norm normalises with its running statistics and never updates them


def freeze(net: nn.Module, prefixes: Sequence[str], example: torch.Tensor | None = None) -> list[str]:
    """Stop training the parameters whose names start with any of ``prefixes`` (e.g. ``features`` of VGG), or
    those of a preset (``conv``, ``lower_conv``: ``preset_parts``; needs an ``example`` input). Batch-norm layers
    of the frozen parts stay in eval mode, so their running statistics do not drift either. Returns the frozen
    module names (presets) and prefixes."""
    names = [name for name, _ in net.named_parameters()]
    resolved: list[str] = []
    for prefix in prefixes:
        if prefix in FREEZE_PRESETS:
            if example is None:
                raise ValueError(f"model.freeze={prefix} needs an example input to find the conv stages")
            parts = preset_parts(net, prefix, example)
            log.info("model.freeze=%s: %s", prefix, ", ".join(parts))
            resolved += [f"{part}." for part in parts]
            continue
        if not any(name.startswith(prefix) for name in names):
            tops = sorted({name.split(".")[0] for name in names})
            raise ConfigError(f"model.freeze: this model has no parameters under '{prefix}'. Its top-level parts "
                              f"are: {', '.join(tops)}; or freeze a preset: model.freeze=conv (every conv layer) or "
                              f"model.freeze=lower_conv (the lower half of the conv stages).")
        resolved.append(prefix)
    for name, parameter in net.named_parameters():
        if any(name.startswith(prefix) for prefix in resolved):
            parameter.requires_grad_(False)
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and any(
                f"{name}.".startswith(prefix) or name.startswith(prefix) for prefix in resolved):
            module.register_forward_pre_hook(_keep_eval)
    return resolved
