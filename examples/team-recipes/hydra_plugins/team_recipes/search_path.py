"""Puts this package's recipes on Hydra's config search path: Hydra discovers every plugin under hydra_plugins."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class TeamRecipesSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append(provider="our-team-recipes", path="pkg://team_recipes.conf")
