"""``hydra/launcher=pool`` (``launcher=pool`` in cnnlab): concurrent trials on this machine, each slot pinned to its
own GPUs (or its share of the CPU threads), for any Hydra application.

Each slot has one long-lived worker process, started with the slot's environment — ``CUDA_VISIBLE_DEVICES`` set to
the slot's GPU group (k GPUs per trial: a trial's ``trainer=ddp`` trains over exactly those k) or, without GPUs,
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to its share of the cores — that runs Hydra's job for its trials one
after another (``trials.execute``: the task function with the trial's full sweep config, through ``run_job``), so an
application's start-up is paid once per slot. The next trial starts as soon as a slot frees (no batch barrier).
A trial that raises is a failed ``JobReturn`` and the other trials go on; a trial that kills its worker (a crash,
``os._exit``, out of memory) is a failed ``JobReturn`` naming its folder, and the slot gets a fresh worker. Each
trial's folder has ``trial.json`` (overrides, placement, start and end, status). Rerunning the same sweep on the
same ``hydra.sweep.dir`` returns the stored result of every trial that completed instead of running it again.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module without registering it in
# sys.modules, where @dataclass would have to look string annotations up.
import logging
import os
import queue
import shutil
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.cnnlab_sweeps import _worker, trials

log = logging.getLogger(__name__)


@dataclass
class PoolLauncherConf:
    _target_: str = "hydra_plugins.cnnlab_sweeps.pool_launcher.PoolLauncher"
    # Concurrent trials. null: one per GPU group, or (without GPUs) one per two CPU cores.
    slots: Optional[int] = None
    # GPU ids to place trials on. null: the visible ones (CUDA_VISIBLE_DEVICES or nvidia-smi); []: CPU only.
    gpus: Optional[List[str]] = None
    gpus_per_trial: int = 1
    # Return the stored result of trials that completed in this sweep dir instead of running them again (off by
    # default, as in Hydra's launchers: every job runs; cnnlab's launcher=pool turns it on).
    resume: bool = False
    # Items a trial's return value (a mapping) must hold, besides Hydra's COMPLETED status, to count as
    # completed on resume: for a task function that returns its failures, e.g. {status: completed}.
    completed_if: Dict[str, Any] = field(default_factory=dict)


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
                 resume: bool = False, completed_if: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.slots, self.gpus, self.gpus_per_trial, self.resume = slots, gpus, gpus_per_trial, resume
        self.completed_if = dict(_resolved(completed_if) or {})
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None
        # one per slot, kept across launch() calls (a sweeper's batches); they end with this launcher or the process
        self._workers: List[_worker.Worker] = []
        weakref.finalize(self, _worker.stop_all, self._workers)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

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

    def _slot_workers(self, groups: List[Optional[List[str]]]) -> List[Dict[str, Any]]:
        """Each slot's placement, and its worker (reused while its environment stays the same)."""
        slots = []
        for i, gpus in enumerate(groups):
            env = dict(os.environ)
            if gpus is not None:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
                placement = {"gpus": gpus, "threads": None}
            else:
                share = trials.cpu_share(len(groups))
                env.update(share)
                placement = {"gpus": [], "threads": int(share["OMP_NUM_THREADS"])}
            if i == len(self._workers):
                self._workers.append(_worker.Worker(env))
            elif self._workers[i].env != env:
                self._workers[i].stop()
                self._workers[i] = _worker.Worker(env)
            slots.append({"worker": self._workers[i], "placement": placement,
                          "where": f"GPUs {','.join(gpus)}" if gpus is not None else "CPU"})
        for extra in self._workers[len(groups):]:
            extra.stop()
        del self._workers[len(groups):]
        for worker in self._workers:  # their start-up overlaps the composition of the first trials
            if not worker.alive():
                worker.start()
        return slots

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        slots = self._slot_workers(self._device_groups())
        log.info("Launching %d trials, %d at a time (%s), sweep output dir: %s", len(job_overrides), len(slots),
                 ", ".join(s["where"] for s in slots), sweep_dir)
        results: List[Optional[JobReturn]] = [None] * len(job_overrides)
        singleton_state = Singleton.get_state()
        stopping = threading.Event()
        # Trials composed ahead of the slots (Hydra's config loading is not for concurrent use: one thread does it)
        # while the running ones train, so that a freed slot starts its next trial at once.
        ready: "queue.Queue[Optional[Tuple[int, trials.Trial]]]" = queue.Queue(maxsize=len(slots))
        stops: List[_worker.TrialStopped] = []

        def hand_over(item: Optional[Tuple[int, trials.Trial]]) -> bool:
            while True:
                try:
                    ready.put(item, timeout=0.2)
                    return True
                except queue.Full:
                    if stopping.is_set():
                        return False

        def compose() -> None:
            try:
                for i, overrides in enumerate(job_overrides):
                    if stopping.is_set():
                        return
                    trial = trials.plan(self.hydra_context, self.config, initial_job_idx + i,  # type: ignore[arg-type]
                                        list(overrides))
                    done = trials.completed_return(trial, self.completed_if) if self.resume else None
                    if done is not None:
                        log.info("#%d already completed, skipped: %s", trial.num,
                                 " ".join(filter_overrides(trial.overrides)))
                        results[i] = done
                    elif not hand_over((i, trial)):
                        return
            except BaseException as err:  # a trial whose config cannot be composed: the sweep stops, as Hydra's
                composing_error.append(err)
            finally:
                for _ in slots:
                    if not hand_over(None):
                        return

        composing_error: List[BaseException] = []

        def run_slot(slot: Dict[str, Any]) -> None:
            while not stopping.is_set():
                upcoming = ready.get()
                if upcoming is None:
                    return
                i, trial = upcoming
                log.info("#%d started on %s: %s", trial.num, slot["where"], " ".join(filter_overrides(trial.overrides)))
                job = trials.job(trial, self.hydra_context, self.config, self.task_function,  # type: ignore[arg-type]
                                 singleton_state, slot["placement"])
                try:
                    ret = slot["worker"].run(job)
                except _worker.TrialStopped as stopped:  # no new trials; the sweep stops once the others have
                    ret = stopped.ret
                    stops.append(stopped)
                    stopping.set()
                except BaseException as err:  # the job could not be handed over (it does not pickle, say)
                    ret = trials.failed_return(trial, err)
                if isinstance(ret._return_value, trials.TrialProcessDied):
                    trials.update_record(trial.run_dir, ended_at=time.time(), status="FAILED",
                                         error=str(ret._return_value))
                results[i] = ret
                log.info("#%d %s%s", trial.num, ret.status.name.lower(),
                         f": {ret._return_value}" if ret.status != JobStatus.COMPLETED else "")

        threads = [threading.Thread(target=run_slot, args=(slot,), name=f"pool-slot-{n}", daemon=True)
                   for n, slot in enumerate(slots)]
        threads.append(threading.Thread(target=compose, name="pool-compose", daemon=True))
        for thread in threads:
            thread.start()
        try:
            deadline: Optional[float] = None
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.5)
                    if stops and deadline is None:
                        deadline = time.time() + _worker.STOP_GRACE_S
                    elif deadline is not None and time.time() > deadline:  # the other trials did not stop
                        for slot in slots:
                            slot["worker"].interrupt()
                        deadline = float("inf")
        except BaseException:  # Ctrl-C: no new trials, running ones stop, no worker outlives the sweep
            stopping.set()
            for slot in slots:
                slot["worker"].interrupt()
            raise
        if stops:
            code = stops[0].exit_code
            log.error("Sweep stopped: %s", stops[0].ret._return_value)
            raise KeyboardInterrupt() if code is None else SystemExit(code)
        if composing_error:
            raise composing_error[0]
        return results  # type: ignore[return-value]


def _resolved(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
