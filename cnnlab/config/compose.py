"""Composing cnnlab's config tree, exactly as ``cnnlab train`` does, and explaining what goes wrong.

Everything here imports Hydra and OmegaConf only, so a bad command line is reported in well under a second,
before torch and Lightning are loaded.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import setup_globals
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError
from yaml import MarkedYAMLError, YAMLError

from cnnlab.config.schema import register_schemas
from cnnlab.config.targets import check_targets, recipe_file_of
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
    return _validated(_compose_with_hydra(overrides, config_dir, config_name))


def _compose_with_hydra(
    overrides: Sequence[str], config_dir: str | os.PathLike | None, config_name: str
) -> DictConfig:
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
        except YAMLError as err:
            raise ConfigError(_not_yaml(err)) from None
        # Every _target_ allowed before anything is instantiated (Hydra instantiates hydra.callbacks itself)
        check_targets(cfg, lambda key, target: recipe_file_of(composer, overrides, key, target))
        return cfg


def _validated(cfg: DictConfig) -> DictConfig:
    """``cfg`` without Hydra's own node, validated."""
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    return cfg


class _Composer:
    """Hydra set up exactly as ``cnnlab train`` sets it up: the built-in tree, with ``--config-dir`` in front."""

    def __init__(self, config_dir: str | os.PathLike | None, config_name: str, primary: str | None = None) -> None:
        # Hydra's CLI builds its search path with these helpers; using them keeps the API and the CLI identical.
        from hydra._internal.hydra import Hydra
        from hydra._internal.utils import create_config_search_path
        from hydra.core.config_search_path import SearchPathQuery

        # ``primary``: another primary config folder (--config-path), as Hydra's CLI then reads it
        search_path = create_config_search_path(str(builtin_config_dir()) if primary is None else primary)
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
        """The whole config, Hydra's own node (hydra.run.dir &co) included."""
        from hydra.types import RunMode

        return self.hydra.compose_config(self.config_name, overrides, run_mode=RunMode.RUN, from_shell=True,
                                         with_log_configuration=False)

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
    if ns.help or ns.hydra_help or ns.shell_completion or ns.info:
        return
    if ns.config_path:  # another primary config folder: not cnnlab's tree, but its _target_s are checked all the same
        _check_targets_only(ns)
        return
    config_name = ns.config_name or CONFIG_NAME
    if ns.multirun:  # a fixed key the sweep's own config lacks, beside a swept group: say how to write it
        _check_sweep_config(ns.overrides, ns.config_dir, config_name)
    if ns.multirun:  # Hydra's sweep-level config (its callbacks, launcher, sweeper): the command without the sweeps
        _compose_with_hydra([o.input_line or "" for o in _parse(ns.overrides) if not o.is_sweep_override()],
                            ns.config_dir, ns.config_name or CONFIG_NAME)
    for number, job in enumerate(representative_jobs(ns.overrides)):
        try:
            cfg = _compose_with_hydra(job, ns.config_dir, config_name)
        except ConfigError as err:
            if ns.multirun:
                _explain_fixed_key_in_sweep(err, ns.overrides, job, ns.config_dir, config_name)
            raise
        if number == 0 and not ns.cfg:  # --cfg only prints the config: it writes nothing
            _check_output_dir(cfg.hydra, ns.multirun)
        _validated(cfg)


def _check_output_dir(hydra_cfg: DictConfig, multirun: bool) -> None:
    """The folder Hydra will create for the run (the sweep under -m) can be created: Hydra's own failure, at
    launch, is a raw ``FileNotFoundError`` or ``PermissionError`` with a traceback."""
    from hydra.types import RunMode

    multirun = multirun or hydra_cfg.mode == RunMode.MULTIRUN
    key, what, default = (("hydra.sweep.dir", "sweep", "outputs/multirun/<date>/<time>_<pid>") if multirun
                          else ("hydra.run.dir", "run", "outputs/<date>/<time>_<pid>"))
    shown, folder = _resolved_dir(hydra_cfg.sweep if multirun else hydra_cfg.run)
    problem = _cannot_create(folder)
    if problem:
        raise ConfigError(
            f"{key}={shown}: the {what} folder cannot be created there: {problem}. Set {key} to a folder you can "
            f"write to, or leave it out for the default ({default}).")


def _resolved_dir(node: DictConfig) -> tuple[str, Path]:
    """``node.dir`` as Hydra will resolve it at launch, and the folder to check: that one or, when it needs what
    only a launched Hydra knows (``${hydra:...}``), the folder its literal start names."""
    setup_globals()  # Hydra's ${now:...}, as registered at launch
    try:
        return str(node.dir), Path(str(node.dir))
    except Exception:  # ${hydra:...} and the like: HydraConfig is not set before launch
        written = str(OmegaConf.to_container(node)["dir"])
        literal = written.split("${")[0]
        return written, Path(literal) if literal.endswith("/") else Path(literal).parent


def _cannot_create(folder: Path) -> str | None:
    """Why ``folder`` cannot be created (or written to, if it exists), or None. Tried for real, with a
    temporary folder in its nearest existing parent (access rights alone do not tell: root can "write" /proc)."""
    existing = folder.absolute()
    while True:
        try:
            if existing.exists():
                break
        except OSError:  # a parent we may not look into
            pass
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".cnnlab-check-", dir=existing))
    except OSError as err:
        return f"no folder can be created in {existing} ({err.strerror})"
    return None


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
        return ConfigError(_unknown_group(composer, key, overrides) or _unknown_key(key, given, base))
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


def _unknown_group(composer: _Composer, key: str, overrides: list[str]) -> str | None:
    """The message for a misspelt group name (``modle=mlp``, ``modle.depth=3``), or None when the unknown top-level
    ``key`` is not close to one."""
    given = next((o for o in overrides if o.split("=", 1)[0].split(".")[0] == key), None)
    if given is None or "." in key:
        return None
    loader = composer.loader
    groups = [g for g in loader.list_groups("") if g != "hydra"]
    close = difflib.get_close_matches(key, groups, n=1, cutoff=0.7)
    if not close:
        return None
    written, value = given.split("=", 1)
    group, options = close[0], loader.get_group_options(close[0])
    if written == key and value not in options and value.isidentifier():  # modle=mpl: both misspelt
        value = next(iter(difflib.get_close_matches(value, options, n=1)), value)
    return (f"Unknown config group or key '{key}'. Did you mean {group}{written[len(key):]}={value}? Config groups "
            f"(pick an option with group=option): {', '.join(groups)}. To add a new key on purpose, write +{given}.")


def _not_yaml(err: YAMLError) -> str:
    """A config file (a ``--config-dir`` recipe, most likely) that YAML cannot read: which file, where, why."""
    if not isinstance(err, MarkedYAMLError) or err.problem_mark is None:
        return f"A config file is not valid YAML: {' '.join(str(err).split())}"
    mark = err.problem_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    if err.context and err.context_mark is not None:
        where += f"; {err.context} at line {err.context_mark.line + 1}, column {err.context_mark.column + 1}"
    return (f"{mark.name} is not valid YAML: {err.problem} ({where}). Fix the YAML syntax in that file (a config "
            f"file holds key: value lines, lists as [a, b] or '- a' lines).")


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


# ------------------------------------------------------------------------------------ sweep command lines
# A fixed key next to a swept config group (`-m experiment=a,b model.depth=20`) applies to every trial, that is
# to every option of the group. Two things can go wrong, and Hydra's own advice for both ("To append to your
# config use +model.depth=20") is wrong: `+` fails in every trial whose option has the key already.


def _swept_groups(composer: _Composer, parsed: list[Override]) -> list[tuple[Override, list[str]]]:
    """The swept config groups of a command line (``experiment=a,b``) and their listed options."""
    swept = []
    for o in parsed:
        parent, _, name = o.key_or_group.rpartition("/")
        if not o.is_sweep_override() or o.package or name not in composer.loader.list_groups(parent):
            continue
        try:
            swept.append((o, [str(v) for v in o.sweep_string_iterator()]))
        except Exception:  # a search space (interval, tagged choice): nothing to list
            continue
    return swept


def _composes(job: list[str], config_dir: str | None, config_name: str) -> bool:
    try:
        _compose_with_hydra(job, config_dir, config_name)
        return True
    except ConfigError:
        return False


def _explain_fixed_key_in_sweep(err: ConfigError, overrides: Sequence[str], job: list[str], config_dir: str | None,
                                config_name: str) -> None:
    """Raise a sweep-aware message when ``job`` failed because a fixed key of the command line does not exist in
    one option of a swept group (``-m model=mlp,linear model.width=32``: linear has no width)."""
    parsed = _parse(overrides)
    with _Composer(config_dir, config_name) as composer:
        swept = _swept_groups(composer, parsed)
        groups = {o.key_or_group for o, _ in swept}
    if not swept:
        return
    fixed = [o.input_line or "" for o in parsed if not o.is_sweep_override() and o.key_or_group not in groups
             and "." in o.key_or_group and not o.key_or_group.startswith("hydra.")]
    culprit = next((f for f in fixed if f in job and _composes([j for j in job if j != f], config_dir,
                                                                config_name)), None)
    if culprit is None:
        return
    key = culprit.split("=", 1)[0].lstrip("+~")
    first = next(representative_jobs(overrides))
    lines = []
    for o, values in swept:
        position = next(i for i, j in enumerate(first) if j.split("=", 1)[0] == o.get_key_element())
        having, lacking = [], []
        for value in values:
            trial = list(first)
            trial[position] = f"{o.get_key_element()}={value}"
            (having if _composes(trial, config_dir, config_name) else lacking).append(value)
        if lacking and having:  # no option has it: a misspelt key, which the job's own message explains
            lines.append((o.get_key_element(), values, having, lacking))
    if not lines:
        return
    group, values, having, lacking = lines[0]
    rest = " ".join(o for o in overrides if o != culprit and o.split("=", 1)[0] != group)
    run_having = (f" For example: cnnlab train -m {group}={','.join(having)} {culprit} {rest}".rstrip() + ", then "
                  f"cnnlab train -m {group}={','.join(lacking)} {rest}".rstrip() + ".")
    raise ConfigError(
        f"{culprit} is fixed on a sweep's command line, so it applies to every trial: to every option of the "
        f"swept {group}={','.join(values)}. But {group}={','.join(lacking)} has no {key}, so those trials cannot "
        f"take it; {group}={','.join(having)} can. Sweep the options that take {key} separately from the others, "
        f"or leave {key} out.{run_having}"
    ) from None


def _check_sweep_config(overrides: Sequence[str], config_dir: str | None, config_name: str) -> None:
    """Compose the sweep's own config as ``-m`` does before any trial: Hydra leaves every swept value out of it, so
    a swept group is at its default there (``experiment`` none, ``model`` lenet5_bn), and a fixed key that only
    the swept options have (``model.depth``) cannot be set."""
    from hydra.types import RunMode

    register()
    with _Composer(config_dir, config_name) as composer:
        try:
            composer.hydra.compose_config(config_name, list(overrides), run_mode=RunMode.MULTIRUN, from_shell=True,
                                          with_log_configuration=False)
            return
        except HydraException as err:
            cause = err.__cause__
            if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or not getattr(cause, "full_key", None):
                raise _explain(composer, err, list(overrides)) from None
            parsed = _parse(overrides)
            swept = _swept_groups(composer, parsed)
            key = cause.full_key
            given = next((o.input_line or "" for o in parsed if not o.is_sweep_override()
                          and o.key_or_group.lstrip("+~") == key), None)
            if given is None or not swept:
                raise _explain(composer, err, list(overrides)) from None
            fixed = [o.input_line or "" for o in parsed if not o.is_sweep_override() and o.input_line != given]
            base = composer.compose_or_none(fixed)
        except (OmegaConfBaseException, YAMLError):
            return  # the jobs' own check reports these
    for job in representative_jobs(overrides):  # the key must be right in every trial for ++ to be the answer
        try:
            _compose_with_hydra(job, config_dir, config_name)
        except ConfigError as err:  # misspelt, or missing from some options: what the trials' check says
            _explain_fixed_key_in_sweep(err, overrides, job, config_dir, config_name)
            raise
    top, _, leaf = key.partition(".")
    chosen = base.hydra.runtime.choices.get(top) if base is not None else None
    value = given.split("=", 1)[1]
    where = (f"there {top} is {chosen} (its default), which has no {leaf}" if chosen else
             f"there the config has no {key}")
    swept_text = " and ".join(f"{o.get_key_element()}={','.join(values)}" for o, values in swept)
    raise ConfigError(
        f"{given} stands beside the swept {swept_text}. A fixed key applies to every trial, that is to every "
        f"option of {' and '.join(o.get_key_element() for o, _ in swept)}; but Hydra first composes the sweep as a "
        f"whole, with every swept value left out, and {where}. Write it ++{key}={value}: ++ sets {key} in every "
        f"trial, and adds it to the sweep's own config where it is missing (+{key} would fail in every trial "
        f"that has it already). To give the trials different values, sweep it too: ++{key}={value},<another>."
    )


def _check_targets_only(ns: object) -> None:
    """``cnnlab train --config-path DIR ...``: compose each job from DIR as Hydra will, and check its targets."""
    from hydra._internal.utils import compute_search_path_dir

    primary = compute_search_path_dir(None, None, ns.config_path) or ns.config_path  # type: ignore[attr-defined]
    register()
    for job in representative_jobs(ns.overrides):  # type: ignore[attr-defined]
        with _Composer(ns.config_dir, ns.config_name or CONFIG_NAME, primary=primary) as composer:  # type: ignore
            try:
                cfg = composer.compose(job)
            except Exception:  # Hydra reports what it cannot compose itself
                return
            check_targets(cfg, lambda key, target: recipe_file_of(composer, job, key, target))
