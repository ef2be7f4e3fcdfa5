"""cnnlab: CNN image-classification experiments from Hydra configs, trained with Lightning.

The notebook API is imported lazily so that ``import cnnlab`` (and the CLI) stays fast::

    from cnnlab import compose_config, build_model, build_datamodule
    cfg = compose_config(["experiment=lenet5_mnist", "optimizer.lr=0.1"])
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "compose_config": "cnnlab.config",
    "build_model": "cnnlab.models",
    "build_datamodule": "cnnlab.data",
}

__all__ = [*_API, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
