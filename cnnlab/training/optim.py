"""Optimizers and learning-rate schedules from their configs, in Lightning's ``configure_optimizers`` format."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch.optim import lr_scheduler

from cnnlab.errors import ConfigError
from cnnlab.training.sdlm import DiagonalLevenbergMarquardt

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
    "sdlm": DiagonalLevenbergMarquardt,  # LeCun's per-weight steps; its curvature is set by the classifier
}


def _fusable(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused optimizer kernels take these parameters (floating point, on the CPU or a CUDA GPU)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: Mapping[str, Any], fused_allowed: bool = True
) -> torch.optim.Optimizer:
    """The optimizer of ``config``.

    ``fused: null`` (the default) picks torch's fused kernel where the optimizer has one (SGD, Adam, AdamW) and
    the parameters suit it: one kernel per step instead of a dozen small operations per parameter tensor, the
    same update up to floating-point rounding. ``fused_allowed=False`` (gradient clipping under mixed precision,
    which fused kernels do not support in Lightning) keeps torch's default implementation.
    """
    options = dict(config)
    name = options.pop("name")
    if name not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer '{name}'. Valid optimizers: {', '.join(OPTIMIZERS)}.")
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    params = list(params)
    if "fused" in options and options["fused"] is None:
        options["fused"] = fused_allowed and _fusable(params)
    elif options.get("fused") and not fused_allowed:
        raise ConfigError("optimizer.fused=true cannot be combined with trainer.gradient_clip_val under mixed "
                          "precision: the fused kernel unscales gradients itself, so Lightning cannot clip them. Set "
                          "optimizer.fused=false, or drop the clipping.")
    return OPTIMIZERS[name](params, **options)


class _piecewise:
    """The rate multiplier of a piecewise-constant schedule: ``factors[i]`` from ``milestones[i]`` on (1 before
    the first). A class rather than a closure, so LambdaLR's state stays picklable in checkpoints."""

    def __init__(self, milestones: list[int], factors: list[float]) -> None:
        self.milestones, self.factors = milestones, factors

    def __call__(self, epoch: int) -> float:
        passed = sum(1 for m in self.milestones if epoch >= m)
        return 1.0 if passed == 0 else float(self.factors[passed - 1])


def _main_schedule(
    optimizer: torch.optim.Optimizer, config: Mapping[str, Any], total: int
) -> lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None:
    name = config["name"]
    if name == "none":
        return None
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=config["step_size"], gamma=config["gamma"])
    if name == "multistep":
        if config.get("factors"):
            if len(config["factors"]) != len(config["milestones"]):
                raise ConfigError(f"scheduler.factors has {len(config['factors'])} values for "
                                  f"{len(config['milestones'])} milestones: give one factor per milestone "
                                  f"(scheduler.milestones={list(config['milestones'])}).")
            return lr_scheduler.LambdaLR(optimizer, _piecewise(list(config["milestones"]), list(config["factors"])))
        return lr_scheduler.MultiStepLR(optimizer, milestones=list(config["milestones"]), gamma=config["gamma"])
    if name == "cosine":
        t_max = config["t_max"] or max(total - config["warmup"], 1)
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=config["eta_min"])
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr=config["max_lr"] or optimizer.param_groups[0]["lr"], total_steps=total,
            pct_start=config["pct_start"], anneal_strategy=config["anneal_strategy"],
            div_factor=config["div_factor"], final_div_factor=config["final_div_factor"],
        )
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=config["mode"], factor=config["factor"], patience=config["patience"],
            min_lr=config["min_lr"],
        )
    raise ConfigError(
        f"Unknown scheduler '{name}'. Valid schedulers: none, step, multistep, cosine, onecycle, plateau."
    )


def build_schedule(
    optimizer: torch.optim.Optimizer, config: Mapping[str, Any], total: int
) -> dict[str, Any] | None:
    """Lightning's lr-scheduler dict for ``config``; ``total`` is the run length in ``config['interval']`` units."""
    interval, warmup = config["interval"], config["warmup"]
    schedule = _main_schedule(optimizer, config, total)
    if warmup:
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=config["warmup_start_factor"], total_iters=warmup)
        schedule = ramp if schedule is None else lr_scheduler.SequentialLR(optimizer, [ramp, schedule], [warmup])
    if schedule is None:
        return None
    entry: dict[str, Any] = {"scheduler": schedule, "interval": interval}
    if config["name"] == "plateau":
        entry["monitor"] = config["monitor"]
    return entry
