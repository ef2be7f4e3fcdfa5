"""Our team's cnnlab recipes: the YAML files under conf/, found by Hydra through hydra_plugins/team_recipes."""
