"""A finished or unfinished run, read back from its folder: the config Hydra saved in ``.hydra/`` and its
``results.json``. Imports Hydra and OmegaConf only, so a wrong folder is reported before torch is loaded."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from cnnlab.config.compose import register
from cnnlab.config.targets import check_targets
from cnnlab.config.validate import validate
from cnnlab.errors import ConfigError

RESUMABLE = ("running", "interrupted", "failed")


@dataclass
class SavedRun:
    run_dir: Path
    config: DictConfig  # the job's config as Hydra saved it (interpolations unresolved)
    hydra: DictConfig  # the ``hydra`` node of the same job
    overrides: list[str]
    results: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.results.get("status"))

    def activate(self) -> None:
        """Put Hydra back in the state it was in while the job ran in this folder: ``${hydra:...}`` resolves as
        it did then (with the folder where it is now), and logging appends to the run's ``train.log``."""
        from hydra.conf import HydraConf
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.utils import configure_log, setup_globals

        with open_dict(self.hydra):
            self.hydra.runtime.output_dir = str(self.run_dir)
        known = {f.name for f in dataclasses.fields(HydraConf)}  # hydra.yaml also holds keys outside the schema
        saved = {k: v for k, v in self.hydra.items() if k in known}
        root = OmegaConf.merge({"hydra": OmegaConf.structured(HydraConf)}, {"hydra": saved})
        setup_globals()  # the ${hydra:...} and ${now:...} resolvers
        HydraConfig.instance().set_config(root)
        configure_log(root.hydra.job_logging, root.hydra.verbose)


def load_saved_run(run_dir: str | Path, verb: str) -> SavedRun:
    """The run in ``run_dir``, its config validated; ``ConfigError`` saying what is wrong with the folder."""
    register()
    path = Path(run_dir).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(f"cnnlab {verb}: {run_dir} is not a folder. Pass the run folder that cnnlab train printed "
                          f"last, e.g. outputs/2026-01-01/12-00-00_123.")
    saved = path / ".hydra"
    missing = [name for name in ("config.yaml", "hydra.yaml") if not (saved / name).is_file()]
    results_file = path / "results.json"
    if missing or not results_file.is_file():
        absent = [f".hydra/{m}" for m in missing] + ([] if results_file.is_file() else ["results.json"])
        raise ConfigError(f"cnnlab {verb}: {path} is not a cnnlab run folder (it has no {', '.join(absent)}). Pass "
                          f"the folder that cnnlab train printed last.")
    try:
        results = json.loads(results_file.read_text())
        config = OmegaConf.load(saved / "config.yaml")
        hydra = OmegaConf.load(saved / "hydra.yaml").hydra
        overrides_file = saved / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    except Exception as err:  # JSON or YAML damaged by hand or by a full disk
        raise ConfigError(f"cnnlab {verb}: the run files in {path} cannot be read ({' '.join(str(err).split())}).") \
            from None
    assert isinstance(config, DictConfig)
    run = SavedRun(path, config, hydra, [str(o) for o in overrides], results)
    # Nothing a saved config names is instantiated (or logging configured from it) before it passes the allowlist
    check_targets(config, lambda key, target: str(saved / "config.yaml"))
    check_targets(OmegaConf.create({"hydra": hydra}), lambda key, target: str(saved / "hydra.yaml"))
    run.activate()
    validate(config)
    return run
