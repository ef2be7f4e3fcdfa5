"""Adds the recipe folders listed in ``CNNLAB_RECIPES`` (``os.pathsep``-separated, earlier ones first) to Hydra's
config search path, after the built-in tree and ``--config-dir``: a recipe name found in an earlier folder hides
the same name in a later one. A team's recipe *package* adds its own ``pkg://`` entry with its own plugin of this
kind (see examples/team-recipes)."""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENV_VAR = "CNNLAB_RECIPES"
PROVIDER = "CNNLAB_RECIPES"


def recipe_folders() -> list[Path]:
    return [Path(p).expanduser().resolve() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]


class CnnlabRecipesSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for folder in recipe_folders():
            search_path.append(provider=PROVIDER, path=f"file://{folder}")
