"""``hydra/launcher=pool`` (``launcher=pool`` in cnnlab): concurrent trials, each in its own process, pinned to
its own GPUs.

Every trial is a ``cnnlab train`` process of its own, started as soon as a slot frees (no batch barrier), with
``CUDA_VISIBLE_DEVICES`` set to the GPU group the slot owns — k GPUs per trial make that trial's ``trainer=ddp``
run over exactly those k — or, without GPUs, with the machine's CPU threads split between the slots. Slots are
a thread pool (``concurrent.futures``) handing out GPU groups from a queue; the trials themselves are ordinary
runs, so a trial that raises, runs out of memory or diverges is recorded as failed in its own results.json and
the sweep goes on. Rerunning the same command on the same ``hydra.sweep.dir`` skips the trials that completed.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module without registering it in
# sys.modules, where @dataclass would have to look string annotations up.
import logging
import os
import queue
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.cnnlab_sweeps import trials

log = logging.getLogger(__name__)


@dataclass
class PoolLauncherConf:
    _target_: str = "hydra_plugins.cnnlab_sweeps.pool_launcher.PoolLauncher"
    # Concurrent trials. null: one per GPU group, or (without GPUs) one per two CPU cores.
    slots: Optional[int] = None
    # GPU ids to place trials on. null: the visible ones (CUDA_VISIBLE_DEVICES or nvidia-smi); []: CPU only.
    gpus: Optional[List[str]] = None
    gpus_per_trial: int = 1
    # Skip trials whose run dir already holds a completed result for the same overrides.
    resume: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="pool", node=PoolLauncherConf, provider="cnnlab")


def visible_gpus() -> List[str]:
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
    return [str(i) for i, line in enumerate(listed.splitlines()) if line.startswith("GPU ")]


class PoolLauncher(Launcher):
    def __init__(self, slots: Optional[int] = None, gpus: Optional[Sequence[Any]] = None, gpus_per_trial: int = 1,
                 resume: bool = True) -> None:
        super().__init__()
        self.slots, self.gpus, self.gpus_per_trial, self.resume = slots, gpus, gpus_per_trial, resume
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def _device_groups(self) -> List[Optional[List[str]]]:
        """One entry per slot: the GPU ids it owns, or None for a CPU slot."""
        gpus = [str(g) for g in (visible_gpus() if self.gpus is None else self.gpus)]
        if gpus:
            k = self.gpus_per_trial
            if k > len(gpus):
                raise ValueError(f"hydra.launcher.gpus_per_trial={k} but only {len(gpus)} GPUs: {gpus}.")
            groups: List[Optional[List[str]]] = [gpus[i:i + k] for i in range(0, len(gpus) - k + 1, k)]
            return groups[: self.slots] if self.slots else groups
        return [None] * (self.slots or max(1, (os.cpu_count() or 2) // 2))

    def _run(self, trial: trials.Trial, slots: "queue.Queue[Optional[List[str]]]", n_slots: int) -> JobReturn:
        assert self.config is not None
        done = trials.completed_outcome(trial) if self.resume else None
        if done is not None:
            log.info("#%d already completed, skipped: %s", trial.num, " ".join(filter_overrides(trial.overrides)))
            return trials.job_return(trial, done)
        gpus = slots.get()
        try:
            env = dict(os.environ)
            env.update({"CUDA_VISIBLE_DEVICES": ",".join(gpus)} if gpus is not None else trials.cpu_share(n_slots))
            where = f"GPUs {','.join(gpus)}" if gpus is not None else "CPU"
            log.info("#%d started on %s: %s", trial.num, where, " ".join(filter_overrides(trial.overrides)))
            outcome = trials.run_process(trial, trials.command(trial, self.config), env, gpus)
        finally:
            slots.put(gpus)
        log.info("#%d %s%s", trial.num, outcome["status"],
                 f": {outcome.get('error')}" if outcome["status"] != "completed" else "")
        return trials.job_return(trial, outcome)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        planned = [trials.plan(self.hydra_context, self.config, initial_job_idx + i, o)
                   for i, o in enumerate(job_overrides)]
        groups = self._device_groups()
        slots: "queue.Queue[Optional[List[str]]]" = queue.Queue()
        for group in groups:
            slots.put(group)
        log.info("Launching %d trials, %d at a time (%s)", len(planned), len(groups),
                 ", ".join("GPUs " + ",".join(g) if g is not None else "CPU" for g in groups))
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            futures = [pool.submit(self._run, trial, slots, len(groups)) for trial in planned]
            return [future.result() for future in futures]
