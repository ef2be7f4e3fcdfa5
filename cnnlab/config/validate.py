"""Checks on a composed config that types alone cannot express. Imports neither torch nor Lightning.

Every value that can be judged without torch is judged here, so ``cnnlab train <bad value>`` fails in a fraction
of a second with one paragraph naming the key, what is allowed and the value given: the ranges of each group's
keys (``rules``), the model's options (the model families' own table, ``cnnlab.models.families``, which the
builders read too), and the combinations torch or Lightning would refuse after their import.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnlab.config import rules
from cnnlab.errors import ConfigError
from cnnlab.models.families import check_model
from cnnlab.ranges import Rule, Whole, check_section, shown

LOSSES = ("cross_entropy", "mse", "map")
PIPELINES = ("auto", "tensor", "loader")
SCHEDULE_INTERVALS = ("epoch", "step")
PROFILERS = ("simple", "advanced", "pytorch", "xla")  # the names Lightning's Trainer(profiler=...) knows


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` naming the first impossible value in ``cfg``."""
    data = cfg.data
    if OmegaConf.is_missing(data, "root"):
        raise ConfigError(
            f"data.root must be set for the {data.name} dataset: add data.root=/path/to/{data.name} to the command."
        )
    check_section("", _known_now(cfg, ["seed"]), rules.ROOT)
    _check_data(_plain(cfg, "data"))
    _check_augmentation(_plain(cfg, "augmentation"))
    _check_model(_plain(cfg, "model"), image_size=data.image_size)
    _check_optimizer(_plain(cfg, "optimizer"))
    _check_scheduler(_plain(cfg, "scheduler"))
    _check_loss(_plain(cfg, "loss"))
    _check_trainer(_plain(cfg, "trainer"))
    check_section("training", _plain(cfg, "training"), rules.TRAINING)
    check_section("training.adversarial", _plain(cfg, "training").get("adversarial") or {},
                  rules.ADVERSARIAL_TRAINING)
    _check_selection(cfg.get("selection"))
    _check_analysis(cfg)


def _plain(cfg: DictConfig, section: str) -> dict[str, Any]:
    """``cfg.<section>`` as plain Python values, interpolations resolved."""
    try:
        node = cfg.get(section)
        return {} if node is None else OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        if not _known_at_launch_only(err):
            raise ConfigError(f"{section}: {str(err).splitlines()[0]}") from None
    return _known_now(cfg.get(section), list(cfg.get(section).keys()))


def _known_at_launch_only(err: Exception) -> bool:
    """Whether resolving failed only because the value comes from the job Hydra has not started yet
    (``seed=${hydra:job.num}``): such a value is checked by the run itself, not here."""
    return "HydraConfig was not set" in str(err)


def _known_now(node: DictConfig, keys: list[Any]) -> dict[str, Any]:
    """The values of ``keys`` that can be resolved before Hydra starts the job (others are left out)."""
    values: dict[str, Any] = {}
    for key in keys:
        try:
            value = node.get(key)
            values[str(key)] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        except OmegaConfBaseException as err:
            if not _known_at_launch_only(err):
                raise ConfigError(f"{key}: {str(err).splitlines()[0]}") from None
    return values


def _check_data(data: dict[str, Any]) -> None:
    check_section("data", data, rules.DATA)
    mean, std, channels = data["mean"], data["std"], data["channels"]
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"data.mean and data.std need one value per channel ({channels}), got "
                          f"{len(mean)} and {len(std)}.")
    if not all(rules.POSITIVE.accepts(s) for s in std):
        raise ConfigError(f"data.std holds the standard deviation of each channel, by which the images are divided: "
                          f"each must be a number greater than 0, got {std}.")
    if data["pipeline"] not in PIPELINES:
        raise ConfigError(f"data.pipeline must be one of {', '.join(PIPELINES)}, got '{data['pipeline']}'.")
    if data.get("cache_size") is not None and data["cache_size"] < data["image_size"]:
        raise ConfigError(f"data.cache_size ({data['cache_size']}) is the side of the images a folder cache stores, "
                          f"from which the model's {data['image_size']}-pixel crops are cut: it must be at least "
                          f"data.image_size. Leave it null for image_size / 0.875 "
                          f"({round(data['image_size'] / 0.875)}).")


def _check_augmentation(augmentation: dict[str, Any]) -> None:
    for name, options in augmentation.items():
        if options is None:
            continue
        if not isinstance(options, dict):
            raise ConfigError(f"augmentation.{name} holds the options of the {name} augmentation: a mapping such as "
                              f"{{p: 0.5}} (or {{}} for its defaults), got {shown(options)}.")
        table = dict(rules.AUGMENTATION.get(name, {}))
        if name == "randaugment" and "num_magnitude_bins" in options:
            bins = options["num_magnitude_bins"]
            Rule(Whole(2), meaning="the number of magnitude levels").check(f"augmentation.{name}.num_magnitude_bins",
                                                                         bins)
            table["magnitude"] = Rule(Whole(0, bins - 1), meaning="the strength of each operation")
        check_section(f"augmentation.{name}", options, table)


def _check_model(model: dict[str, Any], image_size: int) -> None:
    if "name" not in model:
        raise ConfigError("model.name is missing: pick a model with model=<name> (cnnlab train --help lists them).")
    options = dict(model)
    check_model(options.pop("name"), options, image_size)


def _check_optimizer(optimizer: dict[str, Any]) -> None:
    check_section("optimizer", optimizer, rules.OPTIMIZER)
    if "betas" in optimizer:
        rules.ADAM_BETAS.check("optimizer.betas", optimizer["betas"])
    if optimizer.get("nesterov"):
        momentum, dampening = optimizer.get("momentum", 0), optimizer.get("dampening", 0)
        if momentum <= 0:
            raise ConfigError(f"optimizer.nesterov=true needs momentum (torch's SGD refuses Nesterov without it), got "
                              f"optimizer.momentum={momentum}. Set optimizer.momentum=0.9 (typical), or "
                              f"optimizer.nesterov=false.")
        if dampening != 0:
            raise ConfigError(f"optimizer.nesterov=true needs optimizer.dampening=0 (torch's SGD refuses Nesterov "
                              f"with dampening), got optimizer.dampening={dampening}. Set optimizer.dampening=0, or "
                              f"optimizer.nesterov=false.")


def _check_scheduler(scheduler: dict[str, Any]) -> None:
    if scheduler["interval"] not in SCHEDULE_INTERVALS:
        raise ConfigError(f"scheduler.interval must be 'epoch' or 'step', got '{scheduler['interval']}'.")
    check_section("scheduler", scheduler, rules.SCHEDULER)
    name = scheduler["name"]
    if name == "onecycle" and scheduler["interval"] != "step":
        raise ConfigError("The one-cycle schedule changes the rate every batch: set scheduler.interval=step.")
    if name in ("onecycle", "plateau") and scheduler["warmup"]:
        raise ConfigError(f"scheduler.warmup cannot be combined with the {name} schedule: set "
                          f"scheduler.warmup=0, or pick scheduler=cosine, which can warm up.")


def _check_loss(loss: dict[str, Any]) -> None:
    if loss["name"] not in LOSSES:
        raise ConfigError(f"Unknown loss '{loss['name']}'. Valid losses: {', '.join(LOSSES)}. Set loss=<name>.")
    check_section("loss", loss, rules.LOSS)


def _check_trainer(trainer: dict[str, Any]) -> None:
    check_section("trainer", trainer, rules.TRAINER)
    if trainer["profiler"] is not None and trainer["profiler"] not in PROFILERS:
        raise ConfigError(f"Unknown trainer.profiler '{trainer['profiler']}'. Lightning's profilers: "
                          f"{', '.join(PROFILERS)}; leave it null (the default) to profile nothing.")
    if trainer["max_epochs"] < 1 and trainer["max_steps"] < 1:
        raise ConfigError("Set trainer.max_epochs (or trainer.max_steps) to at least 1.")


def _check_selection(selection: Any) -> None:
    """``selection``: a validation metric every run logs per epoch, and the end of it that is best. Absent in the
    saved configs of runs from before the setting (they monitored val/loss, lowest)."""
    if selection is None:
        return
    metric, mode = selection.get("metric"), selection.get("mode")
    allowed = ", ".join(f"{m} (mode {d})" for m, d in rules.SELECTION_METRICS.items())
    if metric not in rules.SELECTION_METRICS:
        why = (" The test split is measured and reported, never used to choose a checkpoint or a trial."
               if str(metric).startswith("test/") else "")
        raise ConfigError(f"selection.metric picks the best checkpoint of a run, the best trial of a sweep and what "
                          f"sweep=optuna optimises: it must be a validation metric logged every epoch, one of "
                          f"{allowed}; got '{metric}'.{why} For example: selection.metric=val/acc "
                          f"selection.mode=max.")
    if mode != rules.SELECTION_METRICS[metric]:
        best = rules.SELECTION_METRICS[metric]
        raise ConfigError(f"selection.mode={mode} does not suit selection.metric={metric}: {metric} is best when "
                          f"{'lowest' if best == 'min' else 'highest'}. Set selection.mode={best}.")


def _check_analysis(cfg: DictConfig) -> None:
    """``analysis.<name>``: each analysis's options (conf/analysis/<name>.yaml). Which names exist is checked while
    composing (a typo lists the analyses); a saved config from before analyses existed has no ``analysis``."""
    if cfg.get("analysis") is None:
        return
    for name, options in _plain(cfg, "analysis").items():
        if name not in rules.ANALYSIS:
            raise ConfigError(f"Unknown analysis '{name}'. Analyses: {', '.join(rules.ANALYSIS)}. Pick them with "
                              f"analysis=[{','.join(rules.ANALYSIS)}].")
        if not isinstance(options, dict):
            raise ConfigError(f"analysis.{name} holds the options of the {name} analysis (conf/analysis/{name}.yaml), "
                              f"a mapping; got {shown(options)}. Select analyses with analysis=[{name}].")
        check_section(f"analysis.{name}", options, rules.ANALYSIS[name])
