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
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

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


@dataclass
class Trial:
    num: int
    overrides: List[str]
    run_dir: Path


class PoolLauncher(Launcher):
    def __init__(self, slots: Optional[int] = None, gpus: Optional[Sequence[Any]] = None, gpus_per_trial: int = 1,
                 resume: bool = True) -> None:
        super().__init__()
        self.slots, self.gpus, self.gpus_per_trial, self.resume = slots, gpus, gpus_per_trial, resume
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    # --- placement ---------------------------------------------------------------------------------------------

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

    def _environment(self, gpus: Optional[List[str]], slots: int) -> Dict[str, str]:
        env = dict(os.environ)
        if gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        else:  # share the cores: torch would otherwise start one thread per core in every trial
            threads = str(max(1, (os.cpu_count() or 1) // slots))
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        return env

    # --- trials ------------------------------------------------------------------------------------------------

    def _trial(self, num: int, overrides: Sequence[str]) -> Trial:
        assert self.hydra_context is not None and self.config is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = sweep_config.hydra.job.num = num
        run_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        return Trial(num, list(overrides), run_dir)

    def _completed(self, trial: Trial) -> Optional[Dict[str, Any]]:
        marker, results = trial.run_dir / "trial.json", trial.run_dir / "results.json"
        if not (self.resume and marker.is_file() and results.is_file()):
            return None
        if json.loads(marker.read_text())["overrides"] != trial.overrides:
            return None
        outcome = json.loads(results.read_text())
        return outcome if outcome.get("status") == "completed" else None

    def _command(self, trial: Trial) -> List[str]:
        assert self.config is not None
        command = [sys.executable, "-m", "cnnlab", "train", *trial.overrides, f"hydra.run.dir={trial.run_dir}"]
        for source in self.config.hydra.runtime.config_sources:
            if source.provider == "command-line":
                command += ["--config-dir", source.path.removeprefix("file://")]
        if not any(o.startswith("group=") for o in trial.overrides):  # one W&B group per sweep
            command.append(f"group={Path(str(self.config.hydra.sweep.dir)).name}")
        return command

    def _run(self, trial: Trial, slots: "queue.Queue[Optional[List[str]]]", n_slots: int) -> JobReturn:
        done = self._completed(trial)
        if done is not None:
            log.info("#%d already completed, skipped: %s", trial.num, " ".join(filter_overrides(trial.overrides)))
            return self._job_return(trial, done)
        gpus = slots.get()
        try:
            trial.run_dir.mkdir(parents=True, exist_ok=True)
            (trial.run_dir / "results.json").unlink(missing_ok=True)
            (trial.run_dir / "trial.json").write_text(json.dumps({"overrides": trial.overrides, "gpus": gpus}))
            where = f"GPUs {','.join(gpus)}" if gpus is not None else "CPU"
            log.info("#%d started on %s: %s", trial.num, where, " ".join(filter_overrides(trial.overrides)))
            with open(trial.run_dir / "console.log", "w") as console:
                code = subprocess.run(self._command(trial), env=self._environment(gpus, n_slots), stdout=console,
                                      stderr=subprocess.STDOUT).returncode
        finally:
            slots.put(gpus)
        results_file = trial.run_dir / "results.json"
        outcome = json.loads(results_file.read_text()) if results_file.is_file() else {
            "status": "failed", "error": f"the trial process exited with code {code} before writing results "
                                         f"(see {trial.run_dir / 'console.log'})"}
        log.info("#%d %s%s", trial.num, outcome["status"],
                 f": {outcome.get('error')}" if outcome["status"] != "completed" else "")
        return self._job_return(trial, outcome)

    def _job_return(self, trial: Trial, outcome: Dict[str, Any]) -> JobReturn:
        # Completed from Hydra's point of view either way: a failed trial must not stop the sweep.
        return JobReturn(overrides=trial.overrides, working_dir=str(trial.run_dir), task_name="train",
                         status=JobStatus.COMPLETED, _return_value=outcome)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        trials = [self._trial(initial_job_idx + i, o) for i, o in enumerate(job_overrides)]
        groups = self._device_groups()
        slots: "queue.Queue[Optional[List[str]]]" = queue.Queue()
        for group in groups:
            slots.put(group)
        log.info("Launching %d trials, %d at a time (%s)", len(trials), len(groups),
                 ", ".join("GPUs " + ",".join(g) if g is not None else "CPU" for g in groups))
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            futures = [pool.submit(self._run, trial, slots, len(groups)) for trial in trials]
            return [future.result() for future in futures]
