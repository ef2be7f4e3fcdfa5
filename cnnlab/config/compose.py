"""Composing cnnlab's config tree, exactly as ``cnnlab train`` does, and explaining what goes wrong.

Everything here imports Hydra and OmegaConf only, so a bad command line is reported in well under a second,
before torch and Lightning are loaded.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from cnnlab.config.schema import register_schemas
from cnnlab.config.validate import validate
from cnnlab.errors import ConfigError

CONFIG_NAME = "config"
HYDRA_VERSION_BASE = "1.3"


def builtin_config_dir() -> Path:
    """``conf/``: inside the package when installed from a wheel, beside it in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return candidate
    raise ConfigError(f"cnnlab's config tree is missing (looked in {package / 'conf'} and {package.parent / 'conf'}). "
                      f"Reinstall cnnlab.")


def register() -> None:
    """Make the schemas and resolvers the YAMLs refer to known to Hydra; safe to call again."""
    register_schemas()
    if not OmegaConf.has_resolver("run_id"):
        # A process id makes run folders created in the same second distinct.
        OmegaConf.register_new_resolver("run_id", lambda: str(os.getpid()), use_cache=True)


def compose_config(
    overrides: Sequence[str] = (), config_dir: str | os.PathLike | None = None, config_name: str = CONFIG_NAME
) -> DictConfig:
    """The config ``cnnlab train <overrides>`` would run, validated.

    ``config_dir`` is a team's extra recipe folder, as ``--config-dir`` on the command line.
    Raises ``ConfigError`` with a message that says how to fix the overrides.
    """
    register()
    overrides = list(overrides)
    with _Composer(config_dir, config_name) as composer:
        _check_group_choices(composer, _parse(overrides))
        try:
            cfg = composer.compose(overrides)
        except OmegaConfBaseException as err:
            raise ConfigError(f"{err}".split("\n")[0] + ".") from None
        except HydraException as err:
            raise _explain(composer, err, overrides) from None
    validate(cfg)
    return cfg


class _Composer:
    """Hydra set up exactly as ``cnnlab train`` sets it up: the built-in tree, with ``--config-dir`` in front."""

    def __init__(self, config_dir: str | os.PathLike | None, config_name: str) -> None:
        # Hydra's CLI builds its search path with these helpers; using them keeps the API and the CLI identical.
        from hydra._internal.hydra import Hydra
        from hydra._internal.utils import create_config_search_path
        from hydra.core.config_search_path import SearchPathQuery

        search_path = create_config_search_path(str(builtin_config_dir()))
        if config_dir is not None:
            path = Path(config_dir).resolve()
            if not path.is_dir():
                raise ConfigError(f"--config-dir {config_dir}: no such folder ({path}). Point it at your recipe "
                                  f"folder, which holds group folders such as experiment/ or model/.")
            search_path.prepend(provider="command-line", path=f"file://{path}", anchor=SearchPathQuery(provider="schema"))
        GlobalHydra.instance().clear()
        self.hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
        self.loader = self.hydra.config_loader
        self.config_name = config_name

    def compose(self, overrides: list[str]) -> DictConfig:
        from hydra.types import RunMode

        cfg = self.hydra.compose_config(self.config_name, overrides, run_mode=RunMode.RUN, from_shell=True,
                                        with_log_configuration=False)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    def compose_or_none(self, overrides: list[str]) -> DictConfig | None:
        try:
            return self.compose(overrides)
        except HydraException:
            return None

    def __enter__(self) -> "_Composer":
        return self

    def __exit__(self, *exc: object) -> None:
        GlobalHydra.instance().clear()


def check_command_line(args: Sequence[str]) -> None:
    """Compose and validate every job of a ``cnnlab train`` command line (one per value of each swept key)."""
    from hydra._internal.utils import get_args_parser  # Hydra's own parser: the flags are read exactly as it will

    ns = get_args_parser().parse_args(list(args))
    if ns.help or ns.hydra_help or ns.shell_completion or ns.info or ns.config_path:
        return
    for job in representative_jobs(ns.overrides):
        compose_config(job, config_dir=ns.config_dir, config_name=ns.config_name or CONFIG_NAME)


def representative_jobs(overrides: Sequence[str]) -> Iterator[list[str]]:
    """A set of jobs in which every value of every swept key appears once: the first value of each sweep,
    then each other value on its own. Sweeps that cannot be listed (a sweeper's ``interval(...)``) are left out."""
    parsed = _parse(overrides)
    fixed: list[str] = []
    sweeps: list[tuple[int, Override, list[str]]] = []
    for o in parsed:
        if not o.is_sweep_override():
            fixed.append(o.input_line or "")
            continue
        try:
            values = list(o.sweep_string_iterator())
        except Exception:  # a search space (interval, tagged choice) rather than a list of values
            continue
        sweeps.append((len(fixed), o, values))
        fixed.append(f"{o.get_key_element()}={values[0]}")
    yield list(fixed)
    for position, o, values in sweeps:
        for value in values[1:]:
            job = list(fixed)
            job[position] = f"{o.get_key_element()}={value}"
            yield job


def _parse(overrides: Iterable[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as err:
        raise ConfigError(
            f"Cannot read the override {err.override!r}: {err.message.splitlines()[0]} Overrides look like "
            f"key=value (optimizer.lr=0.01), group=option (model=mlp), +new_key=value or key=a,b for a sweep."
        ) from None


def _check_group_choices(composer: _Composer, overrides: list[Override]) -> None:
    loader = composer.loader
    for o in overrides:
        group = o.key_or_group
        parent, _, name = group.rpartition("/")
        if o.is_delete() or o.package or name not in loader.list_groups(parent):
            continue
        value = o.value()
        chosen = value if isinstance(value, list) else [value]
        options = loader.get_group_options(group)
        for option in chosen:
            if option is not None and not isinstance(option, (dict, list)) and str(option) not in options:
                raise ConfigError(_unknown_option(group, str(option), options))


def _unknown_option(group: str, option: str, options: list[str]) -> str:
    close = difflib.get_close_matches(option, options, n=1)
    hint = f" Did you mean {group}={close[0]}?" if close else ""
    return (f"Unknown {group} '{option}'.{hint} Valid options for {group}: {', '.join(options)}. Pick one of "
            f"them, or add {group}/{option}.yaml to a recipe folder and pass it with --config-dir.")


def _explain(composer: _Composer, err: HydraException, overrides: list[str]) -> ConfigError:
    cause = err.__cause__
    if isinstance(err, MissingConfigException):
        return ConfigError(" ".join(str(err).split("\nConfig search path")[0].split()))
    if not isinstance(cause, OmegaConfBaseException) or not getattr(cause, "full_key", None):
        return ConfigError(" ".join(str(err).split()))
    key = cause.full_key
    given = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), None)
    base = composer.compose_or_none([o for o in overrides if o is not given])
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)):
        return ConfigError(_unknown_key(key, given, base))
    if isinstance(cause, ValidationError):
        return ConfigError(_wrong_type(key, given, base, cause))
    return ConfigError(f"{key}: {str(cause).splitlines()[0]}")


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k in cfg.keys():
        node = cfg._get_node(k)
        path = f"{prefix}{k}"
        keys += _leaf_keys(node, path + ".") if isinstance(node, DictConfig) else [path]
    return keys


def _unknown_key(key: str, given: str | None, base: DictConfig | None) -> str:
    value = given.split("=", 1)[1] if given else "..."
    message = f"Unknown config key '{key}'."
    if base is not None:
        candidates = [k for k in _leaf_keys(base) if not k.startswith("hydra.")]
        close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.8)
        if close:
            message += f" Did you mean {close[0]}={value}?"
        parent = key.rpartition(".")[0]
        siblings = [k.rpartition(".")[2] for k in candidates if k.rpartition(".")[0] == parent]
        if siblings:
            message += f" Keys under {parent or 'the root'}: {', '.join(siblings)}."
    return message + f" To add a new key on purpose, write +{key}={value}."


_TYPE_NAMES = {"IntegerNode": "an integer", "FloatNode": "a number", "BooleanNode": "true or false",
               "StringNode": "a string"}


def _wrong_type(key: str, given: str | None, base: DictConfig | None, cause: ValidationError) -> str:
    value = given.split("=", 1)[1] if given else "?"
    expected, example = "a different type", None
    if base is not None:
        parent, _, leaf = key.rpartition(".")
        node = (OmegaConf.select(base, parent) if parent else base)._get_node(leaf)
        expected = _TYPE_NAMES.get(type(node).__name__, expected)
        example = node._value()
    if expected == "a different type":
        expected = str(cause).splitlines()[0]
    hint = f" For example: {key}={example}." if example is not None else ""
    return f"Wrong type for {key}: it must be {expected}, got '{value}'.{hint}"
