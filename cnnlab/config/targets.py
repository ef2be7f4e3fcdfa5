"""Which classes a config may name in ``_target_``: the allowlist, checked before anything is instantiated.

A recipe is data a team shares; naming ``builtins.open`` or ``shutil.copyfile`` in it must not run that code.
Hydra 1.3 instantiates ``hydra.callbacks`` itself, before cnnlab's task function runs, and cnnlab instantiates
the callbacks and loggers; so every ``_target_`` of a composed config, ``hydra`` node included (and every
``()``/``class`` of Hydra's logging config, which Python's ``logging.config`` calls the same way), is checked here,
in the config check, with nothing imported but the standard library: no torch, no Lightning.

An allowlist entry is an exact name (``pkg.module.Class``) or a package (``pkg`` or ``pkg.*``): a target under a
package is allowed when it is a *class* that the package's own source defines (read with ``ast``, not imported):
``lightning.pytorch.callbacks.ModelCheckpoint`` is, ``lightning.pytorch.callbacks.model_checkpoint.os.makedirs``
(an attribute chain that Hydra's locator would follow into ``os``) is not.

Users extend the list from the command line (``--allow-target=NAME``, any verb that reads a config) or with
``CNNLAB_ALLOWED_TARGETS=NAME,NAME`` (comma or os.pathsep separated) — never from a config.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from cnnlab.errors import ConfigError

ENV_VAR = "CNNLAB_ALLOWED_TARGETS"
FLAG = "--allow-target"

# Packages whose classes a config may name by default.
DEFAULT_ALLOWED: tuple[str, ...] = (
    "cnnlab",                                   # cnnlab's own classes (callbacks, loggers, sweep callback)
    "lightning.pytorch.callbacks", "lightning.pytorch.loggers",
    "pytorch_lightning.callbacks", "pytorch_lightning.loggers",
    "torch.optim",                              # optimizers, and schedulers (torch.optim.lr_scheduler)
    "hydra._internal.core_plugins",             # Hydra's basic launcher and sweeper
    "hydra_plugins.hydra_submitit_launcher",    # launcher=slurm / submitit_local
    "hydra_plugins.cnnlab_sweeps",              # launcher=pool / ray, sweep=optuna
    "optuna.samplers", "optuna.pruners",        # what sweep=optuna's sampler/pruner may name
)
# What Python's logging.config may construct for hydra.job_logging / hydra.hydra_logging (handlers, formatters).
LOGGING_ALLOWED: tuple[str, ...] = ("logging", "hydra_plugins.hydra_colorlog", "colorlog")
LOGGING_NODES = ("hydra.job_logging", "hydra.hydra_logging")
LOGGING_KEYS = ("()", "class")

# Environment variables a config may not set for the job (hydra.job.env_set): they make Python or the dynamic
# loader run code from a path of the config's choosing in the processes the run starts.
UNSAFE_ENV = ("LD_", "DYLD_", "PYTHON")


class TargetNotAllowed(ConfigError):
    pass


def allowed_entries(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The allowlist: the defaults, ``CNNLAB_ALLOWED_TARGETS`` and ``extra``."""
    from_env = os.environ.get(ENV_VAR, "").replace(os.pathsep, ",").split(",")
    return (*DEFAULT_ALLOWED, *(e.strip() for e in (*from_env, *extra) if e.strip()))


def take_allow_flags(args: Sequence[str]) -> list[str]:
    """``args`` without ``--allow-target NAME`` / ``--allow-target=NAME``; each NAME is added to
    ``CNNLAB_ALLOWED_TARGETS`` in this process's environment, so that the processes a run starts (sweep workers,
    DDP ranks) allow it too."""
    rest: list[str] = []
    names: list[str] = []
    args = list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == FLAG:
            if i + 1 >= len(args):
                raise ConfigError(f"{FLAG} needs a name, e.g. {FLAG}=mypackage.callbacks.MyCallback.")
            names.append(args[i + 1])
            i += 2
            continue
        if arg.startswith(FLAG + "="):
            names.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    if names:
        current = [e for e in os.environ.get(ENV_VAR, "").split(",") if e]
        os.environ[ENV_VAR] = ",".join(dict.fromkeys([*current, *(n for name in names for n in name.split(","))]))
    return rest


def is_allowed(target: str, entries: Sequence[str] | None = None) -> bool:
    entries = allowed_entries() if entries is None else entries
    if not isinstance(target, str) or not all(part.isidentifier() for part in target.split(".")):
        return False
    for entry in entries:
        entry = entry.removesuffix(".*").rstrip(".")
        if target == entry and entry not in (*DEFAULT_ALLOWED, *LOGGING_ALLOWED):
            return True  # named exactly by the user: their own decision
        if target.startswith(entry + ".") and _class_of_package(entry, target):
            return True
    return False


# ------------------------------------------------------------------------------------------------ the walk
def find_targets(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """``(key, target, kind)`` for every ``_target_`` in ``cfg`` (kind "target"), and every ``()``/``class`` in
    Hydra's logging config (kind "logging"). Interpolated targets are resolved where they can be; one that cannot
    is yielded as its written text (and refused)."""
    if isinstance(cfg, DictConfig):
        logging_node = any(prefix.rstrip(".") == n or prefix.startswith(n + ".") for n in LOGGING_NODES)
        for key in list(cfg.keys()):
            key = str(key)
            path = f"{prefix}{key}"
            if key == "_target_" or (logging_node and key in LOGGING_KEYS):
                yield path, _value(cfg, key), "logging" if key in LOGGING_KEYS else "target"
                continue
            node = cfg._get_node(key)
            if isinstance(node, (DictConfig, ListConfig)):
                yield from find_targets(node, path + ".")
    elif isinstance(cfg, ListConfig):
        for index in range(len(cfg)):
            node = cfg._get_node(index)
            if isinstance(node, (DictConfig, ListConfig)):
                yield from find_targets(node, f"{prefix.rstrip('.')}[{index}].")


def _value(cfg: DictConfig, key: str) -> Any:
    try:
        return cfg[key]
    except Exception:  # ${hydra:...} before launch, a missing env var: judged as written
        return OmegaConf.to_container(cfg, resolve=False).get(key)  # type: ignore[union-attr]


def check_targets(cfg: DictConfig, source_of: Callable[[str, str], str | None] | None = None) -> None:
    """Raise ``TargetNotAllowed`` for the first ``_target_`` of ``cfg`` that is not allowed (or an unsafe
    ``hydra.job.env_set``). ``source_of(key, target)`` names where the value came from (a recipe file)."""
    entries = allowed_entries()
    for key, target, kind in find_targets(cfg):
        if target is None:
            continue
        allowed = is_allowed(target, (*LOGGING_ALLOWED, *entries)) if kind == "logging" else is_allowed(target,
                                                                                                     entries)
        if not allowed:
            where = source_of(key, str(target)) if source_of else None
            raise TargetNotAllowed(refusal(key, target, where))
    env_set = OmegaConf.select(cfg, "hydra.job.env_set", default=None)
    for name in (env_set.keys() if isinstance(env_set, DictConfig) else ()):
        if str(name).upper().startswith(UNSAFE_ENV):
            where = source_of(f"hydra.job.env_set.{name}", str(name)) if source_of else None
            raise TargetNotAllowed(
                f"hydra.job.env_set.{name}{_set_in(where)}: a config may not set {name} for the job: it would make "
                f"the processes a run starts load code from a path of the config's choosing. Nothing has run. Set "
                f"it in your shell if you mean it.")


def _set_in(where: str | None) -> str:
    return f" (set in {where})" if where else ""


def refusal(key: str, target: Any, where: str | None) -> str:
    shown = target if isinstance(target, str) else repr(target)
    return (f"{key}: {shown}{_set_in(where)} is not on cnnlab's allowlist of classes a config may instantiate, so "
            f"nothing has run. A recipe cannot name code to run; by default it may name cnnlab's classes, "
            f"Lightning's callbacks and loggers, torch's optimizers and schedulers, and Hydra's and cnnlab's "
            f"launchers and sweepers. If you trust this class, allow it yourself: add {FLAG}={shown} to the "
            f"command (e.g. cnnlab train {FLAG}={shown} ...), or set {ENV_VAR}={shown} (comma-separated names or "
            f"packages).")


# --------------------------------------------------------------------------- classes a package's source defines
@functools.lru_cache(maxsize=None)
def _package_dirs(top: str) -> tuple[Path, ...]:
    """The folders (or the file's folder) of top-level package ``top``, found without importing it."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return ()
    if spec is None:
        return ()
    if spec.submodule_search_locations:
        return tuple(Path(p) for p in spec.submodule_search_locations)
    return (Path(spec.origin).parent,) if spec.origin else ()


def _module_files(module: str) -> list[Path]:
    """The source files of ``module`` (a package's ``__init__.py`` or a ``.py``), one per portion of a namespace
    package; empty when it is not a module made of Python source."""
    top, *rest = module.split(".")
    dirs = _package_dirs(top)
    if not rest:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return []
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            return [Path(spec.origin)]
        return [d / "__init__.py" for d in dirs if (d / "__init__.py").is_file()]
    files = []
    for d in dirs:
        path = d.joinpath(*rest)
        if (path / "__init__.py").is_file():
            files.append(path / "__init__.py")
        elif path.with_suffix(".py").is_file():
            files.append(path.with_suffix(".py"))
    return files


def _is_module(module: str) -> bool:
    top, *rest = module.split(".")
    return bool(_module_files(module)) or (not rest and bool(_package_dirs(top)))


@functools.lru_cache(maxsize=None)
def _top_level(path: Path) -> tuple[frozenset[str], dict[str, tuple[str, str]]]:
    """The classes ``path`` defines at module level and the names it imports: ``{name: (module, original)}``."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return frozenset(), {}
    package = _module_name_parts(path)
    classes: set[str] = set()
    imports: dict[str, tuple[str, str]] = {}

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                classes.add(node.name)
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level and package is not None:
                    base = package if path.name == "__init__.py" else package[:-1]
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    source = ".".join([*base, *([source] if source else [])])
                for alias in node.names:
                    imports[alias.asname or alias.name] = (source, alias.name)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                for extra in ("orelse", "finalbody"):
                    visit(getattr(node, extra, []) or [])
                for handler in getattr(node, "handlers", []) or []:
                    visit(handler.body)

    visit(tree.body)
    return frozenset(classes), imports


def _module_name_parts(path: Path) -> list[str] | None:
    """``path``'s dotted module name as parts (``.../cnnlab/config/x.py`` → cnnlab, config, x), from the folders
    that hold ``__init__.py`` files above it; None when unknown."""
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    # a namespace package (hydra_plugins) has no __init__.py: take one more folder when it looks like one
    if folder.name.isidentifier() and folder.name in ("hydra_plugins",):
        parts.insert(0, folder.name)
    return parts or None


def _class_of_package(package: str, target: str, depth: int = 0) -> bool:
    """``target`` (``package.sub.module.Class``) is a class that ``package``'s source defines: every part between
    is a real module of the package, and the last module defines the class or imports it from inside the package."""
    if depth > 6:
        return False
    module, _, name = target.rpartition(".")
    if not name[:1].isupper() or not (module == package or module.startswith(package + ".")):
        return False
    parts = module.split(".")
    for end in range(len(package.split(".")), len(parts) + 1):
        if not _is_module(".".join(parts[:end])):
            return False
    for file in _module_files(module):
        classes, imports = _top_level(file)
        if name in classes:
            return True
        if name in imports:
            source, original = imports[name]
            if source == module + "." + original and _is_module(source):  # `from . import submodule`
                return False
            if source and _class_of_package(package, f"{source}.{original}", depth + 1):
                return True
    return False


# ------------------------------------------------------------------------------ which file set a key
def config_file(result_path: str, config_path: str) -> str:
    """The file behind a config of Hydra's search path: ``file://DIR`` + ``experiment/x`` → ``DIR/experiment/x.yaml``;
    a package's (``pkg://team_recipes.conf``) as the file inside the installed package where it can be found."""
    if result_path.startswith("file://"):
        return str(Path(result_path[len("file://"):]) / f"{config_path}.yaml")
    if result_path.startswith("pkg://"):
        module = result_path[len("pkg://"):].strip("/").replace("/", ".")
        try:
            from importlib.resources import files

            found = files(module)
            for part in f"{config_path}.yaml".split("/"):
                found = found.joinpath(part)
            return str(found)
        except Exception:
            return f"{result_path}/{config_path}.yaml"
    return f"{config_path} ({result_path})"


def recipe_file_of(composer: Any, overrides: Sequence[str], key: str, target: str) -> str | None:
    """The config file (or the command-line override) that set ``key`` to ``target`` in ``composer``'s
    composition: the last one in Hydra's defaults list that holds the key, or else one that holds the value."""
    for override in reversed(list(overrides)):
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key or (value and target in value and "_target_" in override):
            return f"the command line: {override}"
    try:
        from hydra.types import RunMode

        loader = composer.loader
        with warnings.catch_warnings():  # Hydra's deprecation notes were shown (or not) by the composition itself
            warnings.simplefilter("ignore")
            defaults = loader.compute_defaults_list(composer.config_name, list(overrides), RunMode.RUN).defaults
    except Exception:
        return None
    exact, holding = None, None
    leaf = key.rpartition(".")[2]
    for default in defaults:
        if default.config_path is None:
            continue
        try:
            result = loader.repository.load_config(default.config_path)
        except Exception:
            continue
        if result is None or result.config is None:
            continue
        try:
            config = OmegaConf.to_container(result.config, resolve=False)
        except Exception:
            continue
        if isinstance(config, dict):
            config.pop("defaults", None)
        package = default.package or ""
        for found_key, value, _ in _written_targets(config, leaf):
            full = f"{package}.{found_key}" if package else found_key
            if full == key:
                exact = config_file(result.path, default.config_path)
            if str(value) == target:
                holding = config_file(result.path, default.config_path)
    return exact or holding


def _written_targets(cfg: Any, leaf: str, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """Like ``find_targets``, for the keys named ``leaf`` of one config file as written (plain containers)."""
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            path = f"{prefix}{key}"
            if isinstance(value, (dict, list)):
                yield from _written_targets(value, leaf, path + ".")
            elif str(key) == leaf:
                yield path, value, "target"
    elif isinstance(cfg, list):
        for index, value in enumerate(cfg):
            if isinstance(value, (dict, list)):
                yield from _written_targets(value, leaf, f"{prefix.rstrip('.')}[{index}].")
