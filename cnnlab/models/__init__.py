"""The model zoo: plain ``nn.Module``s built by name from a config.

``build_model``, ``create_model`` and ``MODELS`` (``cnnlab.models.build``) load torch on first use; the families'
valid options (``cnnlab.models.families``) do not, so the config check reads them before torch is imported.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_BUILD = ("MODELS", "build_model", "create_model")


def __getattr__(name: str) -> Any:
    if name in _BUILD:
        value = getattr(import_module("cnnlab.models.build"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab.models' has no attribute {name!r}")


__all__ = list(_BUILD)
