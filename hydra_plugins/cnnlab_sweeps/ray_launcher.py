"""``hydra/launcher=cnnlab_ray`` (``launcher=ray`` in cnnlab): trials placed by Ray on an existing cluster.

Each trial is a Ray task that asks for ``gpus_per_trial`` GPUs and ``cpus_per_trial`` CPUs; Ray runs it on a node
with those free and sets ``CUDA_VISIBLE_DEVICES`` to the GPUs it granted, and the task runs the trial as its own
``cnnlab train`` process there (run dirs must be on a filesystem the nodes share). ``address`` names the cluster
(``auto``, ``ray://head:10001``); null starts a local Ray instance with ``num_cpus`` CPUs. Completed trials are
skipped on rerun, failed ones recorded, as with ``launcher=pool``.
"""

# No `from __future__ import annotations`: see pool_launcher.py.
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.cnnlab_sweeps import trials

log = logging.getLogger(__name__)


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.cnnlab_sweeps.ray_launcher.RayLauncher"
    address: Optional[str] = None
    num_cpus: Optional[int] = None  # local instance only
    gpus_per_trial: float = 0
    cpus_per_trial: float = 1
    resume: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="cnnlab_ray", node=RayLauncherConf, provider="cnnlab")


def _run_on_ray_node(trial: trials.Trial, line: List[str], cpus: float) -> Dict[str, Any]:
    import ray

    gpus = [str(g) for g in ray.get_gpu_ids()]
    env = dict(os.environ)
    env.update({"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus else trials.cpu_share(
        max(1, int((os.cpu_count() or 1) / max(cpus, 1)))))
    return trials.run_process(trial, line, env, {"node": ray.util.get_node_ip_address(), "gpus": gpus})


class RayLauncher(Launcher):
    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None, gpus_per_trial: float = 0,
                 cpus_per_trial: float = 1, resume: bool = True) -> None:
        super().__init__()
        self.address, self.num_cpus = address, num_cpus
        self.gpus_per_trial, self.cpus_per_trial, self.resume = gpus_per_trial, cpus_per_trial, resume
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        assert self.config is not None and self.hydra_context is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            ray.init(address=self.address, num_cpus=None if self.address else self.num_cpus,
                     include_dashboard=False, log_to_driver=False)
        remote = ray.remote(num_gpus=self.gpus_per_trial, num_cpus=self.cpus_per_trial)(_run_on_ray_node)
        planned = [trials.plan(self.hydra_context, self.config, initial_job_idx + i, o)
                   for i, o in enumerate(job_overrides)]
        outcomes: Dict[int, Any] = {}
        pending = {}
        for trial in planned:
            done = trials.completed_outcome(trial) if self.resume else None
            if done is not None:
                log.info("#%d already completed, skipped", trial.num)
                outcomes[trial.num] = done
            else:
                log.info("#%d submitted to Ray: %s", trial.num, " ".join(filter_overrides(trial.overrides)))
                pending[trial.num] = remote.remote(trial, trials.command(trial, self.config), self.cpus_per_trial)
        for num, ref in pending.items():
            try:
                outcomes[num] = ray.get(ref)
            except Exception as err:  # the task itself died (node lost, worker killed)
                outcomes[num] = {"status": "failed", "error": f"Ray task failed: {err}"}
            log.info("#%d %s", num, outcomes[num]["status"])
        return [trials.job_return(trial, outcomes[trial.num]) for trial in planned]
