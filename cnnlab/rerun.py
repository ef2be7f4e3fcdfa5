"""``cnnlab rerun <run_dir> [key=value ...]`` and ``cnnlab diff <run_a> <run_b>``.

``rerun`` starts a new run, in a new folder, from the config an old run saved in ``.hydra/`` (YAML, never a
pickle), with ``key=value`` changes; its provenance records the old run's (``provenance.rerun_of``). ``diff`` prints
what differs between two runs: config keys, versions, recipe and code hashes, data fingerprints.
Both read the run folders with Hydra and OmegaConf only; ``rerun`` loads torch when it trains.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from cnnlab.config.flat_keys import flat_keys
from cnnlab.errors import ConfigError

RERUN_USAGE = ("cnnlab rerun needs a run folder, then optional key=value changes, e.g. cnnlab rerun "
               "outputs/2026-01-01/12-00-00_123 seed=1 (the folder cnnlab train printed last).")


def _apply(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """``key=value`` (and ``+key=value``, ``~key``) changes to a saved, flat config."""
    from cnnlab.config.compose import _parse

    for override in _parse(overrides):
        key = override.key_or_group
        if override.is_sweep_override():
            raise ConfigError(f"cnnlab rerun starts one run: {override.input_line} is a sweep. Give one value.")
        exists = OmegaConf.select(cfg, key, default=KeyError) is not KeyError
        if override.is_delete():
            if exists:
                parent, _, leaf = key.rpartition(".")
                with open_dict(cfg):
                    del (OmegaConf.select(cfg, parent) if parent else cfg)[leaf]
            continue
        replaces_group = exists and isinstance(OmegaConf.select(cfg, key), DictConfig) and \
            not isinstance(override.value(), dict)
        if replaces_group or (not exists and not override.is_add()):
            group = key.split(".")[0]
            hint = (f" {key} names a config group: a saved run's config has no groups any more, only their keys. "
                    f"Change its keys (e.g. {group}.<key>=...), or start a new run with cnnlab train."
                    if "." not in key or replaces_group
                    else f" To add a new key on purpose, write +{override.input_line}.")
            if replaces_group:
                raise ConfigError(f"cnnlab rerun: {override.input_line}:{hint}")
            raise ConfigError(f"Unknown config key '{key}' in the saved run's config.{hint}")
        with open_dict(cfg):
            OmegaConf.update(cfg, key, override.value(), merge=False, force_add=override.is_add())


def _new_run_dir(hydra: DictConfig) -> Path:
    """A fresh folder named by the old run's ``hydra.run.dir`` pattern (``outputs/<date>/<time>_<pid>``)."""
    from hydra.core.utils import setup_globals

    setup_globals()
    pattern = OmegaConf.to_container(hydra.run, resolve=False)["dir"]  # type: ignore[index]
    try:
        folder = Path(str(OmegaConf.create({"dir": pattern}).dir))
    except Exception:  # a pattern with ${hydra:...}: the default one
        folder = Path(str(OmegaConf.create({"dir": "outputs/${now:%Y-%m-%d}/${now:%H-%M-%S}_${run_id:}"}).dir))
    folder = folder.absolute()
    if folder.exists():
        raise ConfigError(f"cnnlab rerun: {folder} exists already; run the command again in a second.")
    return folder


def rerun(args: Sequence[str], run: Callable[..., Any]) -> int:
    """``run(cfg, run_dir, overrides)`` is cli._run: it trains and reports, run folder last."""
    if not args or args[0].startswith("-"):
        raise ConfigError(RERUN_USAGE)
    from cnnlab.config.saved_run import load_saved_run
    from cnnlab.config.targets import check_targets
    from cnnlab.config.validate import validate
    from cnnlab.tracking.provenance import RERUN_ENV

    saved = load_saved_run(args[0], verb="rerun")
    changes = list(args[1:])
    cfg = saved.config
    _apply(cfg, changes)
    check_targets(cfg)
    validate(cfg)
    new_dir = _new_run_dir(saved.hydra)
    (new_dir / ".hydra").mkdir(parents=True)
    overrides = [*saved.overrides, *changes]
    hydra = saved.hydra
    with read_write(hydra), open_dict(hydra):
        hydra.overrides.task = overrides
        hydra.mode = "RUN"
        hydra.job.num = 0
    OmegaConf.save(cfg, new_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra}), new_dir / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(overrides), new_dir / ".hydra" / "overrides.yaml")
    saved.run_dir = new_dir
    saved.activate()  # ${hydra:runtime.output_dir} is the new folder; the log goes to its train.log
    os.environ[RERUN_ENV] = str(Path(args[0]).expanduser().resolve())
    try:
        run(cfg, new_dir, overrides)
    finally:
        os.environ.pop(RERUN_ENV, None)
    return 0


# ------------------------------------------------------------------------------------------------------- diff


def _read_run(run_dir: str) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    path = Path(run_dir).expanduser().resolve()
    config_file = path / ".hydra" / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"cnnlab diff: {run_dir} is not a cnnlab run folder (it has no .hydra/config.yaml).")
    config = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    try:
        results = json.loads((path / "results.json").read_text())
    except (OSError, ValueError):
        results = {}
    return path, config, results  # type: ignore[return-value]


def _provenance_view(results: dict[str, Any]) -> dict[str, Any]:
    p = results.get("provenance") or {}
    recipe = p.get("recipe") or {}
    view = {f"versions.{k}": v for k, v in (p.get("versions") or {}).items()}
    view.update({
        "recipe.name": recipe.get("name"), "recipe.file": recipe.get("file"), "recipe.sha256": recipe.get("sha256"),
        "recipe.git.commit": (recipe.get("git") or {}).get("commit"),
        "recipe.git.dirty": (recipe.get("git") or {}).get("dirty"),
        "cnnlab.commit": (p.get("cnnlab") or results.get("git") or {}).get("commit"),
        "cnnlab.dirty": (p.get("cnnlab") or results.get("git") or {}).get("dirty"),
        "data.fingerprint": (p.get("data") or {}).get("fingerprint"),
        "host": p.get("host"), "devices.cpu": (p.get("devices") or {}).get("cpu"),
        "devices.gpus": (p.get("devices") or {}).get("gpus"),
    })
    return view


def _rows(a: dict[str, Any], b: dict[str, Any], skip: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    rows = []
    for key in sorted(set(a) | set(b)):
        if key.startswith(skip):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            rows.append((key, json.dumps(a.get(key, "<absent>"), default=str),
                         json.dumps(b.get(key, "<absent>"), default=str)))
    return rows


def diff(args: Sequence[str]) -> int:
    if len(args) != 2:
        raise ConfigError("cnnlab diff needs two run folders: cnnlab diff <run_a> <run_b>.")
    (a_dir, a_cfg, a_res), (b_dir, b_cfg, b_res) = _read_run(args[0]), _read_run(args[1])
    sections = [
        ("config", _rows(flat_keys(a_cfg), flat_keys(b_cfg))),
        ("provenance (recipe, code, versions, data, machine)", _rows(_provenance_view(a_res),
                                                                    _provenance_view(b_res))),
        ("results", _rows({k: v for k, v in a_res.items() if k.startswith(("test/", "val/")) or k == "status"},
                          {k: v for k, v in b_res.items() if k.startswith(("test/", "val/")) or k == "status"})),
    ]
    print(f"a: {a_dir}\nb: {b_dir}")
    for title, rows in sections:
        print(f"\n{title}: {'no difference' if not rows else f'{len(rows)} differ'}")
        if rows:
            width = max(len(r[0]) for r in rows)
            value_width = min(max(len(r[1]) for r in rows), 60)
            for key, left, right in rows:
                print(f"  {key:<{width}}  {left:<{value_width}}  {right}")
    return 0
