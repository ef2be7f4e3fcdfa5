"""The per-sample baseline as Lightning/Hydra project templates ship it.

A ``cnnlab train`` run on the DataLoader path (``data.pipeline=loader``) whose per-sample transforms are the
templates' ``transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])`` (torchvision's v1
API, as in lightning-hydra-template's MNIST datamodule and Lightning's examples) instead of cnnlab's v2
``ToImage → ToDtype → Normalize``. The v1 pair costs ~50 µs an image here, the v2 chain ~90 µs: this is the
faster, fairer baseline. Everything else (model, kernels, loop, callbacks, split) is the cnnlab run's, so the
two differ in the data pipeline alone. For torchvision's datasets that hand out PIL images (the MNIST family,
CIFAR, SVHN), as templates use them.

    python benchmarks/template_pipeline.py train experiment=lenet5_mnist data.root=../shared/data data.pipeline=loader
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, Callable, Mapping

import cnnlab.cli as cli


def template_transform(spec: Mapping[str, Any], source: Any, augmentation: Mapping[str, Any] | None) -> Any:
    """Stands in for ``cnnlab.data.transforms.build_transform`` (same arguments)."""
    from torchvision import transforms

    if augmentation:
        raise SystemExit("The template baseline has no augmentation: run it with augmentation=none.")
    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize(spec["mean"], spec["std"])])
    print("template per-sample transforms:", " ".join(repr(pipeline).split()), file=sys.stderr)
    return pipeline


def _with_template_transforms(load: Callable[[str], ModuleType]) -> Callable[[str], ModuleType]:
    def import_heavy(module: str) -> ModuleType:
        loaded = load(module)
        import cnnlab.data.datamodule

        cnnlab.data.datamodule.build_transform = template_transform
        return loaded

    return import_heavy


if __name__ == "__main__":
    # cnnlab imports torch lazily, once the config is valid: swap the transforms in right after that import
    cli._import_heavy = _with_template_transforms(cli._import_heavy)
    sys.argv = ["cnnlab", *sys.argv[1:]]
    cli.entry_point()
