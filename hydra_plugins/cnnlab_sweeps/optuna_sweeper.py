"""``hydra/sweeper=cnnlab_optuna`` (``sweep=optuna`` in cnnlab): Bayesian search with current Optuna.

hydra-optuna-sweeper 1.3 pins optuna<3; this sweeper talks to Optuna's own ask/tell API instead, so any current
Optuna works. The study is stored in ``<sweep_dir>/optuna.db`` (SQLite), so rerunning the same command on the
same ``hydra.sweep.dir`` continues the search: finished trials count, and trials a killed search left running are
asked again first, in their own job number and folder (where cnnlab continues them from their checkpoint). Each
batch of ``n_jobs`` trials goes to the configured launcher (``launcher=pool`` runs them concurrently); a trial
that fails is told to Optuna as failed and the search goes on.

A trial's value is its task function's return value when that is a number; from a mapping (cnnlab's
``results.json``), the best value of ``metric`` over the run's epochs (``<metric>_best``, ``<metric>`` or the
best of the rows of its ``history``, by ``direction``), and only when its ``status``, if it has one, is
``completed``. ``direction`` is ``minimize``/``maximize`` or ``min``/``max`` (cnnlab's ``selection.mode``).

Search space: ``hydra.sweeper.params`` and sweep overrides on the command line, in Hydra's sweep syntax —
``interval(a, b)`` (float), ``tag(int, interval(a, b))`` (integer), ``tag(log, interval(a, b))`` (log scale),
``choice(...)`` and ``range(...)`` (categorical).
"""

# No `from __future__ import annotations`: see pool_launcher.py.
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.cnnlab_sweeps.optuna_sweeper.OptunaSweeper"
    # A key of the trials' return values (results.json), never a test metric, and minimize/maximize (or min/max).
    # null: the app's root `selection: {metric, mode}` node (cnnlab's one setting for what "best" means).
    metric: Optional[str] = None
    direction: Optional[str] = None
    n_trials: int = 20
    n_jobs: int = 2  # trials asked for at once and handed to the launcher together
    seed: Optional[int] = None
    study_name: str = "cnnlab"
    storage: Optional[str] = None  # null: sqlite:///<sweep_dir>/optuna.db
    params: Dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="cnnlab_optuna", node=OptunaSweeperConf, provider="cnnlab")

INTERRUPTED = "interrupted"
# The Hydra job number (so the trial folder) a study trial runs as: its own number, or, for the trial asked again
# after a killed search, the number of the killed one, whose folder it continues rather than leaving it stale.
JOB_NUM = "job_num"
DIRECTIONS = {"min": "minimize", "minimize": "minimize", "max": "maximize", "maximize": "maximize"}


def trial_value(return_value: Any, metric: str, direction: str) -> Optional[float]:
    """A finished job's objective value, or None when it has none (the trial then counts as failed)."""
    import math
    from collections.abc import Mapping

    def finite(value: Any) -> Optional[float]:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None

    if isinstance(return_value, (int, float)) and not isinstance(return_value, bool):
        return finite(return_value)
    if not isinstance(return_value, Mapping) or return_value.get("status", "completed") != "completed":
        return None
    per_epoch = metric[:-len("_best")] if metric.endswith("_best") else metric
    for key in (f"{per_epoch}_best", metric):
        value = finite(return_value.get(key))
        if value is not None:
            return value
    rows = [finite(r.get(per_epoch)) for r in return_value.get("history") or [] if isinstance(r, Mapping)]
    values = [v for v in rows if v is not None]
    if not values:
        return None
    return min(values) if DIRECTIONS.get(direction, direction) == "minimize" else max(values)


def distribution(override: Override) -> Any:
    """The Optuna distribution for one sweep override."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        log_scale = "log" in sweep.tags
        if "int" in sweep.tags:  # Hydra stores interval bounds as floats, so integers are asked for by tag
            return IntDistribution(int(sweep.start), int(sweep.end), log=log_scale)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log_scale)
    if isinstance(sweep, (ChoiceSweep, RangeSweep)):
        return CategoricalDistribution(list(override.sweep_iterator()))
    raise ValueError(f"{override.input_line}: use interval(...), tag(int, interval(...)), tag(log, interval(...)), "
                     f"choice(...) or range(...).")


class OptunaSweeper(Sweeper):
    def __init__(self, metric: Optional[str], direction: Optional[str], n_trials: int, n_jobs: int,
                 seed: Optional[int], study_name: str, storage: Optional[str], params: Dict[str, str]) -> None:
        if direction is not None and str(direction) not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction={direction}: use minimize or maximize (or min, max).")
        self.metric, self.direction = metric, None if direction is None else DIRECTIONS[str(direction)]
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.seed, self.study_name, self.storage, self.params = seed, study_name, storage, dict(params or {})
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        selection = config.get("selection") or {}
        if self.metric is None:
            self.metric = selection.get("metric")
        if self.direction is None and selection.get("mode") is not None:
            self.direction = DIRECTIONS.get(str(selection.get("mode")))
        if self.metric is None or self.direction is None:
            raise ValueError("The Optuna sweeper needs what to optimise: set hydra.sweeper.metric and "
                             "hydra.sweeper.direction, or a root `selection: {metric: ..., mode: min|max}`.")
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _space(self, arguments: List[str]) -> tuple:
        parser = OverridesParser.create()
        fixed, space = [], {}
        for override in parser.parse_overrides(arguments):
            if override.is_sweep_override():
                space[override.get_key_element()] = distribution(override)
            else:
                fixed.append(override.input_line)
        for key, value in self.params.items():
            if key not in space:
                space[key] = distribution(parser.parse_override(f"{key}={value}"))
        if not space:
            raise ValueError("sweep=optuna needs a search space: hydra.sweeper.params or overrides such as "
                             "optimizer.lr=tag(log,interval(1e-4,0.1)) data.batch_size=choice(32,64,128).")
        return fixed, space

    def sweep(self, arguments: List[str]) -> Any:
        import optuna
        from optuna.trial import TrialState

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        fixed, space = self._space(arguments)
        study = optuna.create_study(
            study_name=self.study_name, storage=self.storage or f"sqlite:///{sweep_dir / 'optuna.db'}",
            sampler=optuna.samplers.TPESampler(seed=self.seed), direction=self.direction, load_if_exists=True)
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # left running by a search that was killed: ask for the same parameters again, first
            study.enqueue_trial(stale.params, user_attrs={JOB_NUM: stale.user_attrs.get(JOB_NUM, stale.number)})
            study.tell(stale.number, state=TrialState.FAIL)
            study.set_user_attr(f"{INTERRUPTED}_{stale.number}", True)

        def finished() -> int:
            return sum(1 for t in study.get_trials(deepcopy=False)
                       if t.state == TrialState.COMPLETE
                       or (t.state == TrialState.FAIL and not study.user_attrs.get(f"{INTERRUPTED}_{t.number}")))

        if finished():
            log.info("Continuing study %s: %d of %d trials already finished", self.study_name, finished(),
                     self.n_trials)
        while finished() < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - finished()))]
            jobs = [fixed + [f"{key}={trial.params[key]}" for key in space] for trial in trials]
            numbers = [trial.user_attrs.get(JOB_NUM, trial.number) for trial in trials]
            returns: List[Any] = []
            start = 0
            for end in range(1, len(jobs) + 1):  # one launch per run of consecutive job numbers
                if end == len(jobs) or numbers[end] != numbers[end - 1] + 1:
                    returns += list(self.launcher.launch(jobs[start:end], initial_job_idx=numbers[start]))
                    start = end
            for trial, ret in zip(trials, returns):
                outcome = ret.return_value if ret.status == JobStatus.COMPLETED else None
                value = trial_value(outcome, self.metric, self.direction)
                if value is None:
                    study.tell(trial, state=TrialState.FAIL)
                else:
                    study.tell(trial, float(value))
        done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if done:
            best = study.best_trial
            best_file = sweep_dir / "optuna_best.yaml"
            OmegaConf.save(OmegaConf.create({"trial": best.number, "job_num": best.user_attrs.get(JOB_NUM, best.number),
                                             self.metric: best.value, "params": best.params}), best_file)
            log.info("Best trial #%d: %s = %.4f with %s (%s)", best.number, self.metric, best.value, best.params,
                     best_file)
        return None
