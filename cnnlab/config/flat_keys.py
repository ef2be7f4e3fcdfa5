"""A nested config as ``{"dotted.key": value}``: what comparing two configs key by key needs (``cnnlab recipes
show``, ``cnnlab diff``, resuming a run dir). Imports nothing."""

from __future__ import annotations

from typing import Any


def flat_keys(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of ``tree`` (nested dicts) under its dotted key; an empty dict is a leaf of its own."""
    if isinstance(tree, dict) and tree:
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flat_keys(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): tree}
