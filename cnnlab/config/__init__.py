"""Config composition, schemas and validation. Imports Hydra and OmegaConf only."""

from cnnlab.config.compose import builtin_config_dir, check_command_line, compose_config

__all__ = ["builtin_config_dir", "check_command_line", "compose_config"]
