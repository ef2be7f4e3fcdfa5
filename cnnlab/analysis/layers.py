"""Finding and tapping a network's layers, for the analyses that look inside it (filters, feature maps, CAM).

Layers are named as ``cnnlab summary`` prints them (``net.named_modules()``). Which layers a forward pass runs, in
which order and with which output shapes is learnt by running one (``trace``), so that every network of the zoo —
sequential or residual, torchvision's or the 1989 ones — is handled the same way, without a table per family.
Activations are captured with forward hooks and gradients with tensor hooks (``LayerTaps``), every handle removed
on exit: written here rather than taken from pytorch-grad-cam, which pulls OpenCV, SciPy and scikit-learn, calls
``model.eval()`` itself and leaks its hooks without its context manager.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor, nn

from cnnlab.errors import ConfigError


def is_conv(module: nn.Module) -> bool:
    """A layer that slides kernels over a map: torch's convolutions, LeNet-5's partially connected C3 and the
    locally connected layers of LeCun's 1989 networks (kernels without sharing)."""
    from cnnlab.models.layers import LocallyConnected2d
    from cnnlab.models.lenet5 import PartiallyConnectedConv

    return isinstance(module, (nn.modules.conv._ConvNd, LocallyConnected2d, PartiallyConnectedConv))


def layer_names(net: nn.Module) -> list[str]:
    """The layer names ``cnnlab summary`` prints (the leaf modules)."""
    return [n for n, m in net.named_modules() if n and not any(m.children())]


def unknown_layers(net: nn.Module, key: str, requested: Iterable[str]) -> ConfigError | None:
    """The error for the names in ``requested`` that ``net`` lacks (listing the valid ones), or None."""
    modules = dict(net.named_modules())
    unknown = [name for name in requested if not name or name not in modules]
    if not unknown:
        return None
    names = layer_names(net)
    return ConfigError(f"{key}: this {type(net).__name__} has no layer {', '.join(unknown)}. Its layers (as cnnlab "
                       f"summary prints them): {', '.join(names)}; containers such as "
                       f"{', '.join(sorted({n.split('.')[0] for n in names}))} work too.")


def check_layers(net: nn.Module, key: str, requested: Iterable[str] | None) -> None:
    error = unknown_layers(net, key, requested or [])
    if error is not None:
        raise error


@dataclass
class Call:
    """One module's forward call in a traced pass: its name, and its output's shape when that is a tensor."""

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None

    @property
    def spatial(self) -> tuple[int, int] | None:
        """(height, width) of a 4-D map, else None."""
        return (self.shape[2], self.shape[3]) if self.shape is not None and len(self.shape) == 4 else None


def trace(net: nn.Module, example: Tensor) -> list[Call]:
    """Every named module's forward calls in the order they finish (a container after its children), for one pass
    of ``example`` without gradients. The caller sets the mode (analyses run in eval mode)."""
    calls: list[Call] = []
    names = {m: n for n, m in net.named_modules() if n}

    def record(module: nn.Module, args: tuple, output: Any) -> None:
        shape = tuple(output.shape) if isinstance(output, Tensor) else None
        calls.append(Call(names[module], module, shape))

    handles = [m.register_forward_hook(record) for m in names]
    try:
        with torch.no_grad():
            net(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def conv_stages(calls: Sequence[Call]) -> list[str]:
    """The conv stages of a traced pass: for each run of consecutive calls with maps of one size that contains a
    conv layer, the outermost module that finished last and only holds layers of that size (LeNet-5: the ReLU
    after C1 and the one after C3; a CIFAR ResNet: stacks.0-2; torchvision's ResNets at 224 px: relu, layer1-4).
    Maps of 1x1 are left out: they have nothing to show where. Modules called at several sizes are skipped."""
    sizes: dict[str, set] = {}
    for call in calls:
        sizes.setdefault(call.name, set()).add(call.spatial)
    stages: list[str] = []
    run: list[Call] = []

    def close() -> None:
        if not run or not any(is_conv(c.module) for c in run):
            return
        size = run[0].spatial
        if size is None or size[0] * size[1] <= 1:
            return
        inside = {c.name for c in run}
        for call in reversed(run):
            descendants = [n for n in sizes if n.startswith(call.name + ".")]
            if len(sizes[call.name]) == 1 and all(n in inside and sizes[n] == {size} for n in descendants):
                stages.append(call.name)
                return

    for call in calls:
        if run and call.spatial != run[0].spatial:
            close()
            run = []
        if call.spatial is not None:
            run.append(call)
    close()
    return list(dict.fromkeys(stages))


def example_input(channels: int, image_size: int, device: torch.device | str = "cpu", batch: int = 2) -> Tensor:
    """A fixed random batch in the network's input form (normalised images are roughly standard normal)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, channels, image_size, image_size, generator=generator).to(device)


def _first_tensor(output: Any) -> Tensor | None:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


class LayerTaps:
    """``with LayerTaps(net, names, gradients=True) as taps:`` forward and backward passes inside fill
    ``taps.activations[name]`` (the output of the module's last call in the latest pass, copied: a later in-place
    ReLU must not change it) and ``taps.gradients[name]`` (one tensor per backward pass through it, in order; the
    gradient of what was differentiated with respect to that output — taken before any in-place change, like the
    copy). Every forward hook and tensor hook is removed on exit, whatever happened inside."""

    def __init__(self, net: nn.Module, names: Sequence[str], gradients: bool = False) -> None:
        modules = dict(net.named_modules())
        self.modules = {name: modules[name] for name in names}
        self.gradients_wanted = gradients
        self.activations: dict[str, Tensor] = {}
        self.gradients: dict[str, list[Tensor]] = {name: [] for name in names}
        self._module_handles: list[Any] = []
        self._tensor_handles: dict[str, Any] = {}

    def _capture(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            value = _first_tensor(output)
            if value is None:
                return
            self.activations[name] = value.detach().clone()
            if self.gradients_wanted and value.requires_grad:
                previous = self._tensor_handles.pop(name, None)
                if previous is not None:  # a module called twice: the last call's gradient is the one kept
                    previous.remove()
                self._tensor_handles[name] = value.register_hook(
                    lambda grad: self.gradients[name].append(grad.detach().clone()))

        return hook

    def __enter__(self) -> "LayerTaps":
        self._module_handles = [module.register_forward_hook(self._capture(name))
                                for name, module in self.modules.items()]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in [*self._module_handles, *self._tensor_handles.values()]:
            handle.remove()
        self._module_handles, self._tensor_handles = [], {}


def logits_of(output: Any) -> Tensor:
    """The class scores of a forward pass (networks with auxiliary heads return a tuple, the main head first)."""
    value = _first_tensor(output)
    assert value is not None, "the network returned no tensor"
    return value
