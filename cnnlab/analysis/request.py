"""``cnnlab analyze <run_dir> analysis=[name,...] [overrides]``, up to the point where torch is needed: the run
folder, its saved config, the analyses and their options composed from ``conf/analysis/`` and checked, and the
checkpoint to read. Imports Hydra and OmegaConf only, so every mistake here is reported in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from cnnlab.analysis import ANALYSES, run_checkpoint
from cnnlab.errors import ConfigError

USAGE = ("cnnlab analyze needs one run folder and the analyses to run, e.g. cnnlab analyze "
         "outputs/2026-01-01/12-00-00_123 analysis=[features,confusion] (analyses: " + ", ".join(ANALYSES) + ").")


@dataclass
class AnalysisRequest:
    run_dir: Path
    config: DictConfig  # the run's saved config, with the requested analyses' options and the overrides
    names: list[str]
    checkpoint: str | None


def _selected(value: str) -> list[str]:
    return [n.strip() for n in value.strip().strip("[]").split(",") if n.strip()]


def prepare(args: Sequence[str]) -> AnalysisRequest:
    """The request ``args`` describe, or ``ConfigError`` saying what is wrong with it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from cnnlab.config import compose_config
    from cnnlab.config.saved_run import load_saved_run
    from cnnlab.config.validate import validate

    folders = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    if len(folders) != 1:
        raise ConfigError(USAGE)
    selection = [o for o in overrides if o.split("=", 1)[0] in ("analysis", "+analysis")]
    if not selection:
        raise ConfigError(USAGE)
    names = _selected(selection[-1].split("=", 1)[1])
    if not names:
        raise ConfigError(USAGE)
    analysis_keys = [o for o in overrides if o.lstrip("+~").startswith("analysis.")]
    others = [o for o in overrides if o not in selection and o not in analysis_keys]
    # The analyses' options as `cnnlab train analysis=[...]` would compose them (a misspelt name or key is
    # reported there, with the valid ones).
    composed = compose_config([f"analysis=[{','.join(names)}]", *analysis_keys])
    saved = load_saved_run(folders[0], verb="analyze")
    config = saved.config
    OmegaConf.set_struct(config, True)
    with open_dict(config):
        config.analysis = composed.analysis
    for override in OverridesParser.create().parse_overrides(others):
        key = override.key_or_group
        if OmegaConf.select(config, key, default=KeyError) is KeyError:
            raise ConfigError(f"Unknown config key '{key}' for this run. Overrides for analyze change the run's saved "
                              f"config, e.g. data.root=/new/place or trainer.accelerator=gpu; analysis options are "
                              f"analysis.<name>.<option>.")
        OmegaConf.update(config, key, override.value(), merge=False)
    validate(config)
    pretrained_only = all(config.analysis[n].get("network") == "pretrained" for n in names)
    checkpoint = run_checkpoint(saved.run_dir, saved.results)
    if checkpoint is None and not pretrained_only:
        raise ConfigError(f"cnnlab analyze: {saved.run_dir} has no checkpoint to analyse (results.json names no best "
                          f"checkpoint that exists, and there is no checkpoints/last.ckpt): the run "
                          f"{saved.status} before its first epoch ended. Train it again, or pass another run folder.")
    return AnalysisRequest(saved.run_dir, config, names, checkpoint)
