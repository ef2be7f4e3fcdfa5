"""``hydra/launcher=cnnlab_ray`` (``launcher=ray`` in cnnlab): trials placed by Ray on a cluster, for any Hydra
application.

Each trial is a Ray task that asks for ``gpus_per_trial`` GPUs and ``cpus_per_trial`` CPUs; Ray runs it in one of
its reusable worker processes on a node with those free, with ``CUDA_VISIBLE_DEVICES`` set to the GPUs it granted,
and the task runs Hydra's job there (``trials.execute``, as ``launcher=pool`` does; its CPU threads limited to
``cpus_per_trial``) and returns the ``JobReturn``. Run dirs must be on a filesystem the nodes share. ``address``
names the cluster (``auto``, ``ray://head:10001``); null starts a local Ray instance with ``num_cpus`` CPUs (no
dashboard), which stays up for the process's later sweeps and stops when it exits. As with ``launcher=pool``:
``trial.json`` in each trial's folder, failures isolated, completed trials returned from their record on rerun.
"""

# No `from __future__ import annotations`: see pool_launcher.py.
import logging
import os
import pickle
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.cnnlab_sweeps import trials

log = logging.getLogger(__name__)


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.cnnlab_sweeps.ray_launcher.RayLauncher"
    address: Optional[str] = None
    num_cpus: Optional[int] = None  # local instance only
    gpus_per_trial: float = 0
    cpus_per_trial: float = 1
    resume: bool = False  # see pool_launcher.PoolLauncherConf
    completed_if: Dict[str, Any] = field(default_factory=dict)  # see pool_launcher.PoolLauncherConf


ConfigStore.instance().store(group="hydra/launcher", name="cnnlab_ray", node=RayLauncherConf, provider="cnnlab")


def run_on_ray_node(payload: bytes, cpus: float) -> JobReturn:
    """The Ray task: Hydra's job for one trial, in this Ray worker, on its granted GPUs and ``cpus`` threads."""
    import ray

    job: trials.Job = pickle.loads(payload)
    gpus = [str(g) for g in ray.get_gpu_ids()]
    job.placement = {"node": ray.util.get_node_ip_address(), "gpus": gpus, "threads": max(1, int(cpus))}
    saved = {name: os.environ.get(name) for name in trials.THREAD_VARIABLES}
    os.environ.update(trials.cpu_share(1, cores=max(1, int(cpus))))
    scratch = Path(tempfile.mkdtemp(prefix="hydra-ray-trial-"))
    job_file = scratch / f"job-{job.num}.pkl"
    job_file.write_bytes(payload)
    try:
        return trials.execute(job, job_file=str(job_file))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class RayLauncher(Launcher):
    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None, gpus_per_trial: float = 0,
                 cpus_per_trial: float = 1, resume: bool = False,
                 completed_if: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.address, self.num_cpus = address, num_cpus
        self.gpus_per_trial, self.cpus_per_trial, self.resume = gpus_per_trial, cpus_per_trial, resume
        self.completed_if = dict(OmegaConf.to_container(completed_if, resolve=True) if OmegaConf.is_config(completed_if)
                                 else completed_if or {})
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _start_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import cloudpickle
        import ray

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        planned = [trials.plan(self.hydra_context, self.config, initial_job_idx + i, list(o))
                   for i, o in enumerate(job_overrides)]
        results: List[Optional[JobReturn]] = [None] * len(planned)
        pending: Dict[Any, int] = {}
        remote = None
        singleton_state = Singleton.get_state()
        log.info("Ray launcher: %d trials, sweep output dir: %s", len(planned), sweep_dir)
        for i, trial in enumerate(planned):
            done = trials.completed_return(trial, self.completed_if) if self.resume else None
            if done is not None:
                log.info("#%d already completed, skipped: %s", trial.num, " ".join(filter_overrides(trial.overrides)))
                results[i] = done
                continue
            if remote is None:  # Ray starts only when there is a trial to run
                self._start_ray()
                remote = ray.remote(num_gpus=self.gpus_per_trial, num_cpus=self.cpus_per_trial)(run_on_ray_node)
            job = trials.job(trial, self.hydra_context, self.config, self.task_function, singleton_state)
            log.info("#%d submitted to Ray: %s", trial.num, " ".join(filter_overrides(trial.overrides)))
            pending[remote.remote(cloudpickle.dumps(job), self.cpus_per_trial)] = i
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ready[0])
                trial = planned[i]
                try:
                    ret = ray.get(ready[0])
                except Exception as err:  # the task's worker died (a crash, out of memory, a lost node)
                    error = trials.TrialProcessDied(f"trial #{trial.num} in {trial.run_dir}: its Ray task failed "
                                                    f"before the trial returned: {' '.join(str(err).split())[:1000]}")
                    trials.update_record(trial.run_dir, ended_at=time.time(), status="FAILED", error=str(error))
                    ret = trials.failed_return(trial, error)
                results[i] = ret
                log.info("#%d %s%s", trial.num, ret.status.name.lower(),
                         f": {ret._return_value}" if ret.status != JobStatus.COMPLETED else "")
        except BaseException:  # Ctrl-C: the remaining trials are cancelled, running ones stopped
            for ref in pending:
                ray.cancel(ref)
            raise
        return results  # type: ignore[return-value]
